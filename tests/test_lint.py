"""The repository passes `ruff check` with the rules in pyproject.toml ([tool.ruff])."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def ruff_command() -> list[str]:
    """The venv's ruff: the binary beside this Python, else `python -m ruff`."""
    beside = Path(sys.executable).with_name("ruff")
    if beside.exists():
        return [str(beside)]
    try:
        import ruff  # noqa: F401
    except ImportError:
        found = shutil.which("ruff")
        if found is None:
            pytest.fail("ruff is not installed: .venv/bin/pip install -r requirements.txt")
        return [found]
    return [sys.executable, "-m", "ruff"]


def test_ruff_finds_nothing():
    proc = subprocess.run([*ruff_command(), "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        violations = [line for line in proc.stdout.splitlines() if line and ":" in line
                      and not line.startswith(("Found ", "["))]
        pytest.fail(f"ruff check found {len(violations)} violation(s) (rules: [tool.ruff] in pyproject.toml):\n"
                    + "\n".join(violations or [proc.stdout, proc.stderr]), pytrace=False)
