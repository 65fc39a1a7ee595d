"""Team mode in a real browser against a real OpenID Connect provider (oidc-provider-mock, started
here on loopback): a logged-out visitor sees only the login; an owner and an annotator log in at
once in two browser contexts; the annotator cannot reach Generate or Export, not even by URL; both
label the same study concurrently and every label arrives. Also: the README's command listens on
127.0.0.1 only, read from the kernel's socket table."""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
from playwright.sync_api import expect

from selfinstruct.store import Pool
from tests.e2e.conftest import free_port, sidebar_links_seen, wait_idle
from tests.e2e.test_faults import main

OWNER, ANNOTATOR, STRANGER = "ada@example.com", "Grace@Example.com", "mallory@example.com"
OWNER_PAGES = ["Home", "Seed", "Generate", "Rejects", "Pool", "Topics", "Label", "Judge", "Evaluate", "Export"]
ANNOTATOR_PAGES = ["Rejects", "Pool", "Topics", "Label", "Evaluate"]   # Evaluate: the blind rating only


@pytest.fixture
def provider(tmp_path):
    """oidc-provider-mock on 127.0.0.1: any client id is accepted, and its login form takes the
    subject to log in as, which becomes the email claim."""
    port = free_port()
    log = tmp_path / "oidc-provider.log"
    proc = subprocess.Popen([sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/.well-known/openid-configuration", timeout=2) as resp:
                assert json.loads(resp.read())["authorization_endpoint"]
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"the OIDC provider did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def team_app(app_factory, provider, demo_db_path, tmp_path):
    """The app in team mode, from a secrets file outside the repo (`--secrets.files`), on a copy
    of the demo pool. Identity providers redirect to plain http only on localhost, hence the
    redirect URI (and the address the browser opens)."""
    with Pool.open(demo_db_path) as pool:   # an item for the Pool page, before the app holds the file
        accepted_id = int(pool.explore.pool_browse(limit=1).iloc[0]["id"])
    secrets_file = tmp_path / "secrets.toml"
    secrets_file.write_text(f'''
[auth]
redirect_uri = "http://localhost:{{port}}/oauth2callback"
cookie_secret = "{secrets.token_hex(32)}"
client_id = "selfinstruct-e2e"
client_secret = "{secrets.token_hex(16)}"
server_metadata_url = "{provider}/.well-known/openid-configuration"

[team]
owners = ["{OWNER.upper()}"]
annotators = ["{ANNOTATOR.lower()}"]
''')
    app = app_factory(demo_db_path, env={"SELFINSTRUCT_DATA_DIR": str(demo_db_path.parent)},
                      secrets=secrets_file)   # Streamlit fills in {port}
    app.url = f"http://localhost:{app.port}"
    app.accepted_id = accepted_id
    return app


def log_in(page, app, email: str) -> None:
    page.goto(app.url + "/")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"127\.0\.0\.1:\d+/oauth2/authorize"))   # the provider's own form
    page.locator('input[name="sub"]').fill(email)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(re.compile(rf"^{re.escape(app.url)}/"))
    wait_idle(page)


def type_url(page, url: str, *, missing: bool | None) -> None:
    """Open `url` as typed in the address bar; `missing`: Streamlit must answer "Page not found"
    (this session has no such page), which is then closed; None: either way."""
    page.goto(url)
    wait_idle(page)
    notice = page.get_by_role("dialog").filter(has_text="Page not found")
    if missing or (missing is None and notice.count()):
        expect(notice).to_be_visible()
        page.keyboard.press("Escape")
        expect(notice).to_have_count(0)
    else:
        expect(notice).to_have_count(0)


def holds_file(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (its file descriptors, from /proc)."""
    fds = Path(f"/proc/{pid}/fd")
    return any(Path(os.readlink(fd)) == path.resolve() for fd in fds.iterdir() if fd.is_symlink())


def nav_titles(page) -> list[str]:
    nav = page.get_by_test_id("stSidebarNav")
    # Each link's text is its icon's name (a font ligature), then its title.
    return [t.strip().splitlines()[-1] for t in nav.get_by_test_id("stSidebarNavLink").all_inner_texts()]


def save_all_yes(page) -> None:
    page.get_by_role("button", name="All yes, save and next").click()


def test_login_roles_and_concurrent_labels(browser, team_app, shots, demo_db_path):
    app = team_app
    visitor = browser.new_context(viewport={"width": 1400, "height": 1000})
    owner_ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    annotator_ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        # 1. A logged-out visitor, as the very first session of a fresh server, types page URLs:
        #    only the login, no page list, no pool.
        v = visitor.new_page()
        # From the first moment the page answers, the sidebar lists nothing (no pages/ modules).
        v.goto(app.url + "/", wait_until="commit")
        assert sidebar_links_seen(v, 4.0) == []
        # (The very first run of a server still sees pages/ as pages: that run goes through
        # app.py before anything opens, and lands on "/".)
        for i, path in enumerate(("/export", "/generate", "/", "/label")):
            type_url(v, app.url + path, missing=None if i == 0 else path != "/")
            expect(v.get_by_role("button", name="Log in")).to_be_visible()
            expect(v.get_by_test_id("stSidebarNav")).to_have_count(0)
            for title in ("Export", "Generate", "Quality study", "Pool file"):
                expect(v.get_by_text(title, exact=True)).to_have_count(0)
        shots("visitor-login-only", v)
        assert not holds_file(app.proc.pid, demo_db_path), "a logged-out visitor made the app open the pool"

        # A real login whose email is on neither list gets only a plain message.
        log_in(v, app, STRANGER)
        expect(main(v).get_by_text(re.compile("not on this studio's team. Ask the owner to add you"))).to_be_visible()
        expect(v.get_by_test_id("stSidebarNav")).to_have_count(0)
        type_url(v, app.url + "/pool", missing=True)
        expect(main(v).get_by_text(re.compile("Ask the owner to add you"))).to_be_visible()
        expect(v.get_by_text("Pool", exact=True)).to_have_count(0)
        shots("stranger-no-role", v)
        assert not holds_file(app.proc.pid, demo_db_path)

        # 2. Owner and annotator log in, each in a context of their own, both sessions open.
        o = owner_ctx.new_page()
        a = annotator_ctx.new_page()
        for p in (o, a):
            p.set_default_timeout(30_000)
        log_in(o, app, OWNER.title())        # the provider sends back the case it was given
        log_in(a, app, ANNOTATOR)
        expect(o.get_by_test_id("stSidebar").get_by_text(f"{OWNER} · owner")).to_be_visible()
        expect(a.get_by_test_id("stSidebar").get_by_text(f"{ANNOTATOR.lower()} · annotator")).to_be_visible()
        assert nav_titles(o) == OWNER_PAGES
        assert holds_file(app.proc.pid, demo_db_path)   # the check above can see an open pool
        assert nav_titles(a) == ANNOTATOR_PAGES
        expect(o.get_by_text("Pool file")).to_be_visible()
        expect(a.get_by_text("Pool file")).to_have_count(0)
        expect(a.get_by_label("Your name", exact=True)).to_have_count(0)
        expect(main(a).get_by_role("heading", name="Quality study")).to_be_visible()   # the landing
        shots("owner-home", o)
        shots("annotator-landing", a)

        # 3. The annotator types the owner's pages: Streamlit has no such page for this session.
        for path in ("/generate", "/export", "/seed"):
            type_url(a, app.url + path, missing=True)
            expect(main(a).get_by_role("heading", name="Quality study")).to_be_visible()
            for title in ("Generate", "Export", "Seed tasks"):
                expect(main(a).get_by_role("heading", name=title, exact=True)).to_have_count(0)
            expect(a.get_by_role("button", name="Start run")).to_have_count(0)
            assert nav_titles(a) == ANNOTATOR_PAGES
        shots("annotator-typed-export", a)

        # Pool and Rejects are readable, without edit, rescue or undo.
        a.get_by_test_id("stSidebarNav").get_by_text("Pool", exact=True).click()
        wait_idle(a)
        expect(main(a).get_by_role("heading", name="Pool")).to_be_visible()
        a.get_by_label("Open item #", exact=True).fill(str(app.accepted_id))
        a.get_by_label("Open item #", exact=True).press("Enter")
        wait_idle(a)
        expect(main(a).get_by_text(re.compile(r"kept instance\(s\)"))).to_be_visible()
        for button in ("Save instruction", "Approve", "Remove from the pool", "Drop", "Undo"):
            expect(main(a).get_by_role("button", name=button)).to_have_count(0)
        shots("annotator-pool-read-only", a)
        a.get_by_test_id("stSidebarNav").get_by_text("Rejects", exact=True).click()
        wait_idle(a)
        expect(main(a).get_by_role("heading", name="Evidence")).to_be_visible()
        for button in ("Rescue", "Confirm rejection", "Keep this instance"):
            expect(main(a).get_by_role("button", name=button, exact=True)).to_have_count(0)
        expect(main(a).get_by_role("button", name=re.compile(r"^(Rescue|Confirm) \d+ selected"))).to_have_count(0)
        shots("annotator-rejects-read-only", a)

        # 4. The owner draws a study; the annotator cannot.
        o.get_by_test_id("stSidebarNav").get_by_text("Label", exact=True).click()
        wait_idle(o)
        o.get_by_label("Instructions to sample", exact=True).fill("12")
        # Two annotators per item: both label the same items at the same time.
        o.get_by_label("Annotators per item", exact=True).fill("2")
        o.get_by_role("button", name="Draw the sample").click()
        wait_idle(o)
        expect(main(o).get_by_text("Item 1 of 12")).to_be_visible()
        a.get_by_test_id("stSidebarNav").get_by_text("Label", exact=True).click()
        wait_idle(a)
        expect(a.get_by_role("button", name="Draw the sample")).to_have_count(0)
        expect(main(a).get_by_text(re.compile(r"Item \d+ of 12"))).to_be_visible()

        # 5. Both label at once: each click is sent before either run has finished.
        submitted = {OWNER: 0, ANNOTATOR.lower(): 0}
        for _ in range(4):
            save_all_yes(o)
            save_all_yes(a)
            wait_idle(o)
            wait_idle(a)
            submitted[OWNER] += 1
            submitted[ANNOTATOR.lower()] += 1
        for p in (o, a):
            expect(main(p).get_by_role("alert").filter(has_text=re.compile("error|Error"))).to_have_count(0)
            expect(p.get_by_test_id("stException")).to_have_count(0)
        shots("owner-labeled", o)
        shots("annotator-labeled", a)

        # 6. A restarted server's very first run still treats pages/ as pages of their own
        #    (Streamlit's multipage v1) until some session has run app.py: the annotator, still
        #    logged in, types /export as that first run and must land on their own page.
        app.stop()
        app.start()
        a.goto(app.url + "/export")
        wait_idle(a)
        expect(main(a).get_by_role("heading", name="Quality study")).to_be_visible()
        expect(main(a).get_by_role("heading", name="Export", exact=True)).to_have_count(0)
        expect(main(a).get_by_text("Format", exact=True)).to_have_count(0)
        assert nav_titles(a) == ANNOTATOR_PAGES
        shots("annotator-export-on-fresh-server", a)

        # 7. Logging out ends the session: back to the login.
        a.get_by_test_id("stSidebar").get_by_role("button", name="Log out").click()
        a.wait_for_url(re.compile(r"127\.0\.0\.1:\d+/oauth2/end_session"))   # the provider's logout
        type_url(a, app.url + "/label", missing=True)
        expect(a.get_by_role("button", name="Log in")).to_be_visible()
        expect(a.get_by_test_id("stSidebarNav")).to_have_count(0)
        shots("annotator-logged-out", a)
    finally:
        for context in (visitor, owner_ctx, annotator_ctx):
            context.close()

    # 8. Every label arrived, each under its annotator's email, and none was overwritten. Read
    #    the pool file once the app has let go of it.
    app.stop()
    with duckdb.connect(str(demo_db_path), read_only=True) as con:
        rows = con.execute("SELECT annotator, item_id, valid_task, input_ok, output_ok FROM labels").fetchall()
        audit = con.execute("SELECT actor, count(*) FROM audit_log WHERE action = 'label' GROUP BY actor").fetchall()
        study_actor = con.execute("SELECT actor FROM audit_log WHERE action = 'create_study'").fetchall()
    stored = {}
    for annotator, item_id, *answers in rows:
        stored.setdefault(annotator, []).append(item_id)
        assert answers == ["yes", "yes", "yes"]
    assert {k: len(v) for k, v in stored.items()} == submitted
    for items in stored.values():
        assert len(items) == len(set(items))          # one label per item and annotator
    assert set(stored[OWNER]) == set(stored[ANNOTATOR.lower()])   # the same items, at the same time
    assert dict(audit) == submitted
    assert study_actor == [(OWNER,)]


# ---------------------------------------------------------------------------- listening address
def _listening(port: int) -> list[str]:
    """The local addresses the kernel holds in LISTEN state for `port`, from /proc/net/tcp{,6}."""
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:   # a kernel without IPv6
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, local_port = local.split(":")
            if state != "0A" or int(local_port, 16) != port:   # 0A: TCP_LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            found.append(socket.inet_ntop(socket.AF_INET if width == 4 else socket.AF_INET6, raw))
    return found


def test_the_readme_command_listens_on_loopback_only(app_factory, tmp_path):
    # address=None: no --server.address on the command line, as in the README; the repo's
    # .streamlit/config.toml decides.
    app = app_factory(tmp_path / "pool.duckdb", env={"SELFINSTRUCT_DATA_DIR": str(tmp_path)}, address=None)
    addresses = _listening(app.port)
    assert addresses == ["127.0.0.1"], addresses
    assert _listening(free_port()) == []   # the reader finds nothing where nothing listens
