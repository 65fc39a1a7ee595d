"""A real app (`streamlit run app.py` on 127.0.0.1) driven by a real headless Chromium.

Needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it). Playwright
drives the system browser through `executable_path`; it never downloads one.
Screenshots of every step land in test-output/e2e/<test>/.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
OUTPUT = ROOT / "test-output" / "e2e"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """One `streamlit run app.py` process on its own port and pool file. `address=None` leaves
    the listening address to .streamlit/config.toml (the README's command); `args` are more
    `streamlit run` options; `secrets` is the only secrets file it reads (default: an empty one,
    so a developer's own .streamlit/secrets.toml, say with a team login, stays out of the tests)."""

    def __init__(self, db_path: Path, env: dict | None = None, *, address: str | None = "127.0.0.1",
                 args: tuple[str, ...] = (), secrets: Path | None = None):
        self.db_path = db_path
        self.env = env or {}
        self.address = address
        self.args = tuple(args)
        if secrets is None:
            secrets = db_path.parent / "no-secrets.toml"
            secrets.touch()
        self.secrets = secrets
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = db_path.parent / f"streamlit-{self.port}.log"

    def start(self) -> "App":
        # The developer's own key stays out; a test may give the app one (a canary) in `env`.
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        env.update({"SELFINSTRUCT_DB": str(self.db_path), **self.env})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(self.port), *(("--server.address", self.address) if self.address else ()),
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
             "--secrets.files", str(self.secrets), *self.args],
            cwd=ROOT, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: {self.log.read_text()[-2000:]}")
        raise RuntimeError("streamlit did not become healthy in 60 s")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"No chromium at {CHROMIUM}: install Debian's package "
                           "(apt-get install -y chromium) or set CHROMIUM.")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def shots(request):
    """shots("name", page) saves a numbered full screenshot for this test."""
    folder = OUTPUT / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    counter = {"n": 0}

    def take(name: str, page) -> Path:
        counter["n"] += 1
        path = folder / f"{counter['n']:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def app_factory(tmp_path):
    apps: list[App] = []

    def make(db_path: Path | None = None, env: dict | None = None, **options) -> App:
        app = App(db_path or tmp_path / "pool.duckdb", env, **options).start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def open_app(page, app: App, path: str = "") -> None:
    """Open the app's home first (so st.navigation owns the routes), then the page titled `path`."""
    page.goto(app.url + "/")
    wait_idle(page)
    if path:
        go_to(page, path)


def go_to(page, title: str) -> None:
    """Click a page in the sidebar and wait until that page has rendered."""
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    slug = "" if title == "Home" else title.lower()
    page.wait_for_url(re.compile(rf"/{slug}(\?.*)?$"))
    wait_idle(page)


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait for the script run a click started (if it has not finished already) to end."""
    try:
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="running"]', timeout=1500)
    except Exception:  # a short run may be over before we look
        pass
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
    page.wait_for_timeout(300)


def sidebar_links_seen(page, seconds: float) -> list[list[str]]:
    """Every distinct list of sidebar navigation links seen while polling for `seconds`."""
    seen: list[list[str]] = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        links = page.evaluate("""() => Array.from(
            document.querySelectorAll('[data-testid="stSidebarNav"] a, [data-testid="stSidebarNavLink"]'))
            .map(a => a.innerText.trim()).filter(t => t)""")
        if links and (not seen or seen[-1] != links):
            seen.append(links)
        page.wait_for_timeout(40)
    return seen
