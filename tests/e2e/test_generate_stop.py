"""Stopping a run in a real browser: right after Stop, nothing on the page or in the sidebar still
says the run is running (the issue: the run picker said "running" above "Run 1 was stopped" until
a reload)."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import go_to, open_app, wait_idle
from tests.e2e.test_faults import main


def test_after_stop_nothing_says_running(app_factory, page, shots, tmp_path):
    app = app_factory(tmp_path / "pool.duckdb")
    open_app(page, app)
    go_to(page, "Seed")
    page.get_by_role("button", name="Load starter seeds").click()
    wait_idle(page)
    go_to(page, "Generate")
    page.get_by_text("Offline demo", exact=True).click()
    wait_idle(page)
    rounds = page.get_by_label("Rounds", exact=True)
    rounds.fill("0")                 # no limit: the run goes on until stopped
    rounds.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Start run").click()
    expect(main(page).get_by_role("button", name="Stop")).to_be_visible(timeout=30_000)
    expect(main(page).get_by_text(re.compile(r"Run 1 running: round \d+"))).to_be_visible(timeout=30_000)
    shots("running", page)
    main(page).get_by_role("button", name="Stop").click()
    expect(main(page).get_by_text("Run 1 was stopped")).to_be_visible(timeout=60_000)
    wait_idle(page)
    shots("stopped", page)
    picker = main(page).get_by_role("combobox", name="Run")
    expect(picker).to_have_value(re.compile(r"^Run 1 · selfinstruct-demo"))
    expect(picker).not_to_have_value(re.compile("running", re.I))
    assert "running" not in main(page).inner_text().lower()
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text(re.compile("Run 1 was stopped"))).to_be_visible(timeout=10_000)
