"""The Rejects page in a real browser (issue 16): a reason typed for one rescue is gone when the
next item comes up, "all N that match" rescues exactly those N after a confirmation, and at
1024 px nothing of the filter row is cut off."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from selfinstruct.store import Pool
from tests.e2e.conftest import open_app, wait_idle
from tests.e2e.test_faults import fill, main


def pending_ids(path) -> list[int]:
    with Pool.open(path) as pool:
        return [r[0] for r in pool.cursor().execute(
            "SELECT id FROM candidates WHERE status = 'rejected' AND review IS NULL ORDER BY id").fetchall()]


def fully_visible(page, locator) -> None:
    """The element's box lies inside the viewport and nothing (no clipping parent) hides its
    corners: the element itself is what the browser finds there."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    view = page.viewport_size
    assert box and box["x"] >= 0 and box["y"] >= 0, box
    assert box["x"] + box["width"] <= view["width"] and box["y"] + box["height"] <= view["height"], (box, view)
    for x, y in ((box["x"] + 2, box["y"] + box["height"] / 2),
                 (box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)):
        assert locator.evaluate("(el, [x, y]) => el.contains(document.elementFromPoint(x, y))", [x, y]), (x, y)


def show_control(page, option: str):
    return main(page).get_by_test_id("stButtonGroup").filter(has_text="Show").get_by_role(
        "radio", name=option, exact=True)


def test_rejects_reason_bulk_all_and_layout(app_factory, browser, shots, demo_db_path):
    before = pending_ids(demo_db_path)
    app = app_factory(demo_db_path)

    # The filter row at 1024 px (and at 1440 px): the Instances toggle is whole.
    for width in (1024, 1440):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        open_app(page, app, "Rejects")
        fully_visible(page, show_control(page, "Instances"))
        fully_visible(page, show_control(page, "Instructions"))
        main(page).get_by_test_id("stDataFrame").first.scroll_into_view_if_needed()
        shots(f"rejects-{width}", page)
        if width == 1440:
            break
        context.close()

    # 1. A reason for one rescue, then the next item: the box is empty and the click logs none.
    fill(page, "Why (optional)", "fine for a text model")
    first = int(re.search(r"#(\d+)", main(page).get_by_text(re.compile(r"^Candidate #\d+")).inner_text())[1])
    rescue = page.get_by_role("button", name="Rescue", exact=True)
    rescue.click()
    wait_idle(page)
    message = main(page).get_by_test_id("stAlertContentSuccess").filter(has_text="Rescued 1 item")
    expect(message).to_be_visible()
    # beside the button: the message starts within a few lines below it
    gap = message.bounding_box()["y"] - rescue.bounding_box()["y"]
    assert 0 < gap < 200, gap
    shots("rescued-one", page)
    expect(page.get_by_label("Why (optional)", exact=True)).to_have_value("")

    inspect = main(page).get_by_test_id("stSelectbox").filter(has_text="Inspect")
    inspect.click()
    page.get_by_role("option").nth(2).click()
    wait_idle(page)
    second = int(re.search(r"#(\d+)", main(page).get_by_text(re.compile(r"^Candidate #\d+")).inner_text())[1])
    assert second != first
    expect(page.get_by_label("Why (optional)", exact=True)).to_have_value("")
    page.get_by_role("button", name="Rescue", exact=True).click()
    wait_idle(page)
    expect(main(page).get_by_test_id("stAlertContentSuccess").filter(has_text="Rescued 1 item")).to_be_visible()

    # 2. All that match: the count, a confirmation, then exactly those.
    n = len(before) - 2
    main(page).get_by_role("radio", name=f"All {n:,} that match these filters", exact=True).click()
    wait_idle(page)
    bulk = page.get_by_role("button", name=f"Rescue all {n:,}", exact=True)
    expect(bulk).to_be_disabled()
    main(page).get_by_text(re.compile(rf"^Yes, act on all {n:,} instructions")).click()
    wait_idle(page)
    expect(bulk).to_be_enabled()
    shots("bulk-all-confirmed", page)
    bulk.click()
    wait_idle(page)
    expect(main(page).get_by_test_id("stAlertContentSuccess").filter(
        has_text=f"Rescued {n:,} item")).to_be_visible()
    shots("bulk-all-done", page)
    context.close()
    app.stop()

    with Pool.open(demo_db_path) as pool:
        entries = pool.audit.entries(limit=10_000, action="rescue")
    reasons = {e["target_id"]: e["reason"] for e in entries}
    assert reasons[first] == "fine for a text model" and reasons[second] is None
    assert sorted(reasons) == sorted(before)
    batches = {}
    for e in entries:
        batches.setdefault(e["after"]["batch"], []).append(e["target_id"])
    assert sorted(len(b) for b in batches.values()) == [1, 1, n]
    assert pending_ids(demo_db_path) == []
