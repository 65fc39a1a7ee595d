import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

# The package is imported as installed (`pip install -e .`, as the README's commands do), not
# from a path added here. `from tests.conftest import ROOT` in the test modules resolves because
# `python -m pytest` runs from the repository root, which puts it first on sys.path.
from selfinstruct.store import Pool

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(items):
    """Browser tests last: they are the slowest, and Playwright's sync API keeps an event
    loop on the main thread while its browser is open."""
    items.sort(key=lambda item: "/e2e/" in str(item.path))


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "pool.duckdb"


@pytest.fixture
def pool(db_path):
    pool = Pool.open(db_path)
    yield pool
    pool.close()


@pytest.fixture
def seeded(pool):
    """An empty pool with the starter seeds."""
    from selfinstruct import seeds

    seeds.load_starter_seeds(pool)
    return pool


@pytest.fixture
def server():
    """The offline demo server on 127.0.0.1 (modules that need another one override this)."""
    from selfinstruct.offline import OfflineServer

    with OfflineServer(seed=7) as srv:
        yield srv


def shared_file(name: str) -> Path:
    """A file from ../shared/data; the test is skipped when shared/ is not beside the repo."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path


def _app_on(path: Path, monkeypatch):
    """The app (AppTest) works on `path`, with no pool or data cached by another test."""
    import streamlit as st

    monkeypatch.setenv("SELFINSTRUCT_DB", str(path))
    monkeypatch.setenv("SELFINSTRUCT_DATA_DIR", str(path.parent))   # where the app may write files
    st.cache_resource.clear()
    st.cache_data.clear()
    yield path
    st.cache_resource.clear()


@pytest.fixture
def app_env(db_path, monkeypatch):
    """AppTest on an empty pool file of its own."""
    yield from _app_on(db_path, monkeypatch)


@contextmanager
def served_offline(*options: str):
    """`python -m selfinstruct offline-server --port 0 OPTIONS` in a process of its own (it
    outlives the CLI processes a test kills); yields its base URL."""
    import re
    import subprocess

    server = subprocess.Popen([sys.executable, "-m", "selfinstruct", "offline-server", "--port", "0", *options],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield re.search(r"http://\S+/v1", server.stdout.readline()).group(0)
    finally:
        server.terminate()
        server.wait()
        server.stdout.close()


def served_completions(base_url: str) -> int:
    """How many completion requests an offline server (any process) has received."""
    import json
    import urllib.request

    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/_control/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    return sum(n for endpoint, n in stats["by_endpoint"].items() if "completions" in endpoint)


def kill_cli_after(args: list[str], base_url: str, served: int, timeout: float = 60) -> None:
    """Run `python -m selfinstruct ARGS` and SIGKILL it once the server has answered `served`
    more completion requests; fails the test if the command ended first."""
    import signal
    import subprocess
    import time

    start = served_completions(base_url)
    victim = subprocess.Popen([sys.executable, "-m", "selfinstruct", *args], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while served_completions(base_url) - start < served and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()


def run_cli(*args: str, env: dict | None = None, timeout: float = 120):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def _demo_pool_template(tmp_path_factory) -> Path:
    """A pool grown by three offline-demo rounds, made once per test session."""
    from selfinstruct import seeds
    from selfinstruct.offline import OfflineServer
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import Runner, start_run

    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    with Pool.open(path) as pool, OfflineServer(seed=1) as server:
        seeds.load_starter_seeds(pool)
        run_id = start_run(pool, RunConfig(base_url=server.base_url, rounds=3, seed=1))
        outcome = Runner(pool, run_id).run()
        assert outcome.status == "finished"
    return path


@pytest.fixture
def demo_db_path(_demo_pool_template, tmp_path) -> Path:
    """A private copy of the demo pool (seeds + 3 generated rounds) for one test."""
    import shutil

    path = tmp_path / "pool.duckdb"
    shutil.copy(_demo_pool_template, path)
    return path


@pytest.fixture
def demo_pool(demo_db_path):
    pool = Pool.open(demo_db_path)
    yield pool
    pool.close()


@pytest.fixture
def demo_app_env(demo_db_path, monkeypatch):
    """AppTest on its own copy of the demo pool."""
    yield from _app_on(demo_db_path, monkeypatch)


def open_page(page_file: str | None = None):
    """AppTest of the whole app (through app.py's navigation), switched to `page_file`
    (e.g. "pages/pool.py"); fails on any exception the app raised."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception
    if page_file:
        at.switch_page(page_file).run()
        assert not at.exception
    return at


def app_pool(path):
    """The pool the app process opened (it holds the file; a second handle cannot)."""
    from pages.common import _open_pool

    return _open_pool(str(path))
