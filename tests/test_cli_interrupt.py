"""Ctrl+C during `generate` ends cleanly wherever it lands: exit 130, "Interrupted. Resume with
...", no traceback, and the run is left interrupted so it can be resumed."""
import os
import signal
import subprocess
import sys
import time

import pytest

from selfinstruct import model
from selfinstruct.offline import OfflineServer
from selfinstruct.store import Pool
from tests.conftest import ROOT, run_cli

# From just after the run starts to well into it (requests in flight, rounds being applied).
DELAYS_S = (0.0, 0.15, 0.4, 0.9, 1.6)


@pytest.fixture(scope="module")
def slow_server():
    with OfflineServer(latency_median_s=0.05, latency_sigma=0.6, latency_seed=3) as srv:
        yield srv


@pytest.mark.parametrize("delay_s", DELAYS_S)
def test_ctrl_c_anywhere_in_generate_is_a_clean_interrupt(tmp_path, slow_server, delay_s):
    db = tmp_path / "pool.duckdb"
    assert run_cli("seeds", "import", "starter", "--db", str(db)).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct", "generate", "--base-url", slow_server.base_url,
         "--model", "selfinstruct-demo", "--rounds", "30", "--db", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        for line in proc.stdout:            # wait until the run has started
            if line.startswith("Run "):
                break
        time.sleep(delay_s)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err
    if proc.returncode == 0:                # the run ended before the signal: nothing to check
        pytest.fail(f"the run finished before Ctrl+C at {delay_s} s; make it longer:\n{out}")
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Interrupted. Resume with" in err
    with Pool.open(db) as pool:
        assert [run["status"] for run in pool.runs()] == [model.INTERRUPTED]
