"""A damaged pool file (cut short, or a block that fails its checksum) gives one plain line and
exit 2 on `info` and `export`, never a traceback."""
import os
import shutil

import pytest

from tests.conftest import run_cli


def _damage(src, dst, how):
    shutil.copy(src, dst)
    size = os.path.getsize(dst)
    with open(dst, "r+b") as f:
        if how == "truncated":
            f.truncate(size // 2)
        else:                           # a few bytes in every 64 KiB past the headers
            for offset in range(256 * 1024, size, 64 * 1024):
                f.seek(offset + 100)
                f.write(b"\xa5" * 64)


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_damaged_pool_file_is_one_plain_error(demo_db_path, tmp_path, how):
    damaged = tmp_path / f"{how}.duckdb"
    _damage(demo_db_path, damaged, how)
    for args in (["info"], ["export", "--format", "alpaca", "--out", str(tmp_path / "out.json")]):
        done = run_cli(*args, "--db", str(damaged))
        output = done.stdout + done.stderr
        if done.returncode == 0:        # this command read only what is intact
            assert "Traceback" not in output
            continue
        assert done.returncode == 2, output
        assert "Traceback" not in output
        assert f"The pool file {damaged} is damaged and cannot be read" in done.stderr
        assert "Restore it from a copy" in done.stderr
    # at least the export reads every block: it must have hit the damage
    assert run_cli("export", "--format", "alpaca", "--out", str(tmp_path / "again.json"),
                   "--db", str(damaged)).returncode == 2
