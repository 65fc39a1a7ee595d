"""The sidebar of a freshly started server: it must never list the `pages/` folder's raw module
names (app, common, endpoint, keyqueue, ...). Streamlit builds that list on a server's first
script run, before app.py has called st.navigation; our config hides it and app.py shows the
real navigation once it has it. Watched from the first moment the page answers."""
from __future__ import annotations

from tests.e2e.conftest import sidebar_links_seen, wait_idle

RAW_MODULES = {"app", "common", "endpoint", "keyqueue", "__init__"}


def test_a_fresh_server_never_lists_raw_module_names(browser, app_factory, shots):
    app = app_factory()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(app.url + "/", wait_until="commit")
        seen = sidebar_links_seen(page, 6.0)
        wait_idle(page)
        shots("first-run", page)
        raw = [links for links in seen if RAW_MODULES & {link.lower() for link in links}]
        assert not raw, f"the sidebar listed module names: {raw}"
        # ...and the real navigation is there, in the sidebar
        final = page.get_by_test_id("stSidebarNav").inner_text()
        for title in ("Home", "Seed", "Generate", "Export"):
            assert title in final, final
        # a second visitor of the same server sees the same
        page.reload(wait_until="commit")
        seen_again = sidebar_links_seen(page, 3.0)
        assert not [links for links in seen_again if RAW_MODULES & {link.lower() for link in links}]
        wait_idle(page)
        assert "Generate" in page.get_by_test_id("stSidebarNav").inner_text()
    finally:
        page.close()
