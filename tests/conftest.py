import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from selfinstruct.store import Pool  # noqa: E402


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "pool.duckdb"


@pytest.fixture
def pool(db_path):
    pool = Pool.open(db_path)
    yield pool
    pool.close()


def shared_file(name: str) -> Path:
    """A file from ../shared/data; the test is skipped when shared/ is not beside the repo."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture
def app_env(db_path, monkeypatch):
    """Run AppTest against its own pool file, with no cached pool from another test."""
    import streamlit as st

    monkeypatch.setenv("SELFINSTRUCT_DB", str(db_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield db_path
    st.cache_resource.clear()


def run_cli(*args: str, env: dict | None = None, timeout: float = 120):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )
