"""The Topics page in a real browser: topics computed on a hand-made pool of four known topics,
the map drawn and recoloured, every item reachable by search, a topic opened from the table,
approved as a whole and the approval undone."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from selfinstruct.model import BULK_APPROVED
from selfinstruct.store import Pool
from tests.e2e.conftest import open_app, wait_idle
from tests.e2e.test_faults import fill, main
from tests.topic_pool import SIZES, build

pytest.importorskip("wordllama")


def test_topics_walk(app_factory, page, shots, tmp_path):
    path = tmp_path / "topics.duckdb"
    with Pool.open(path) as pool:
        families = build(pool)
    app = app_factory(path)
    open_app(page, app, "Topics")
    expect(main(page).get_by_text("No topics yet")).to_be_visible()
    page.get_by_role("button", name="Compute topics").click()
    wait_idle(page, timeout=120_000)
    expect(main(page).get_by_test_id("stVegaLiteChart").first).to_be_visible()
    expect(main(page).get_by_text("4 topics over 34 seed tasks", exact=False)).to_be_visible()
    shots("topics-map", page)

    main(page).get_by_test_id("stButtonGroup").get_by_role("radio", name="Status", exact=True).click()
    wait_idle(page)
    expect(main(page).get_by_test_id("stVegaLiteChart").first).to_be_visible()
    shots("topics-by-status", page)

    fill(page, "Search items", "linked list")
    expect(main(page).get_by_text("1 item(s)", exact=False)).to_be_visible()
    fill(page, "Search items", "")

    # Open topic 1 (the largest, the cooking family) by selecting its row in the table.
    table = main(page).get_by_test_id("stDataFrame").first
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + 35 + 18)
    wait_idle(page)
    expect(main(page).get_by_role("heading", name="Topic 1:", exact=False)).to_be_visible()
    n_seed, n_acc, n_rej = SIZES["cooking"]
    expect(main(page).get_by_text(f"{n_seed + n_acc + n_rej} item(s)", exact=False)).to_be_visible()
    shots("topics-open", page)

    page.get_by_role("button", name="Approve all").click()
    wait_idle(page)
    expect(main(page).get_by_text(f"Approved {n_acc} item(s) in bulk.")).to_be_visible()
    page.get_by_role("button", name="Undo").first.click()
    wait_idle(page)
    expect(main(page).get_by_text("Undone.")).to_be_visible()
    shots("topics-undone", page)
    app.stop()
    with Pool.open(path) as pool:
        states = [pool.audit.read_state("candidate", c) for c in families["cooking"]["accepted"]]
        assert all(s["review"] != BULK_APPROVED for s in states)
        assert [e["action"] for e in pool.audit.entries(limit=n_acc * 2)].count("approve_topic") == n_acc
