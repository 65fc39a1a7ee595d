"""The Pool page's Duplicates view in a real browser (issue 24): groups drawn side by side with
their cosine and ROUGE-L, one click removes all but one of each, one Undo brings them back."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from selfinstruct import embed, semantic
from selfinstruct.store import Pool
from tests.e2e.conftest import open_app, wait_idle
from tests.e2e.test_faults import main


def accepted(path) -> int:
    with Pool.open(path) as pool:
        return pool.counts().accepted


def test_duplicates_view_removes_and_undoes_in_one_step(app_factory, page, shots, demo_db_path):
    with Pool.open(demo_db_path) as pool:
        expected = semantic.find_duplicates(pool, embed.bundled(), 0.6)
    removed, _ = expected.removal()
    assert expected.groups and removed
    before = accepted(demo_db_path)
    app = app_factory(demo_db_path)
    open_app(page, app, "Pool")
    main(page).get_by_role("radio", name="Duplicates", exact=True).click()
    wait_idle(page)
    thumb = main(page).get_by_role("slider")
    thumb.focus()
    for _ in range(17):                       # 0.77 -> 0.60 in steps of 0.01
        thumb.press("ArrowLeft")
    wait_idle(page)
    expect(main(page).get_by_text(re.compile(rf"^{len(expected.groups)} groups"))).to_be_visible()
    expect(main(page).get_by_text("Group 1", exact=False).first).to_be_visible()
    shots("groups", page)
    page.get_by_role("button", name="Remove the near-duplicates").click()
    wait_idle(page)
    expect(main(page).get_by_test_id("stAlertContentSuccess").filter(
        has_text=f"Removed {len(removed)} near-duplicates as one change")).to_be_visible()
    shots("removed", page)
    app.stop()
    assert accepted(demo_db_path) == before - len(removed)

    app = app_factory(demo_db_path)
    open_app(page, app, "Pool")
    main(page).get_by_role("radio", name="Duplicates", exact=True).click()
    wait_idle(page)
    main(page).get_by_text("Recent changes on this page").click()
    undo = page.get_by_role("button", name="Undo").first
    expect(undo).to_be_visible()
    undo.click()
    wait_idle(page)
    shots("undone", page)
    app.stop()
    assert accepted(demo_db_path) == before
