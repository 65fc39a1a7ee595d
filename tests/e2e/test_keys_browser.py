"""The server's key in a real browser (issue 14): with OPENAI_API_KEY set in the app's
environment, the Generate page's DOM never holds it, and a run to a URL typed on the page
reaches a loopback server that records Authorization headers without it."""
from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.conftest import open_app, wait_idle
from tests.e2e.test_faults import configure_endpoint, main, open_settings, seeded_pool
from tests.test_keys import CANARY, RecordingServer


def test_the_servers_key_is_not_in_the_page_and_never_goes_to_a_typed_url(app_factory, page, shots, tmp_path):
    db = tmp_path / "pool.duckdb"
    seeded_pool(db)
    with RecordingServer(latency_s=0.0) as server:
        app = app_factory(db, env={"OPENAI_API_KEY": CANARY})
        open_app(page, app, "Generate")
        open_settings(page)
        page.get_by_text("OpenAI", exact=True).click()     # the endpoint the key is meant for
        key_box = page.get_by_label("API key", exact=True)
        expect(key_box).to_have_value("")
        expect(main(page).get_by_text("this endpoint gets the server's key ($OPENAI_API_KEY)")).to_be_visible()
        shots("openai-chosen-key-not-shown", page)
        assert CANARY not in page.content()

        page.get_by_text("OpenAI-compatible endpoint").click()
        wait_idle(page)
        expect(page.get_by_label("Base URL", exact=True)).to_be_enabled()
        configure_endpoint(page, server.base_url, rounds=1)
        expect(main(page).get_by_text("no key is sent")).to_be_visible()
        for box in page.locator("input[type=password]").all():
            assert box.input_value() == ""
        assert CANARY not in page.content()
        page.get_by_role("button", name="Start run").click()
        expect(main(page).get_by_text("Run 1 finished")).to_be_visible(timeout=120_000)
        shots("typed-url-run-finished", page)
        assert len(server.seen) > 3
        assert not any(CANARY in header for header in server.seen), sorted(set(server.seen))
        assert CANARY not in page.content()
