"""Ctrl+C during `generate` ends cleanly wherever it lands: exit 130, "Interrupted. Resume with
...", no traceback, and the run is left interrupted so it can be resumed."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from selfinstruct import model
from selfinstruct.offline import OfflineServer
from selfinstruct.store import Pool
from tests.conftest import ROOT, run_cli, served_completions, served_offline

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
        assert [run["status"] for run in pool.runs.all()] == [model.INTERRUPTED]


# -- answers that came back are kept; SIGTERM is an interrupt too (issue 22, item 6) -----------
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _answered(db) -> tuple[int, str, int]:
    with Pool.open(db) as pool:
        answered = pool.cursor().execute("SELECT count(*) FROM requests WHERE response IS NOT NULL").fetchone()[0]
        return answered, pool.runs.get(1)["status"], max(r["number"] for r in pool.runs.rounds(1))


def test_answers_that_came_back_before_an_interrupt_are_stored_and_never_sent_again(tmp_path):
    """A delay-free server answers every request it gets at once, so each request it got had its
    answer on the way back when the signal came: every one must be stored, and a resume that
    finishes the open rounds must send only what was never answered (each request paid once).
    Seeded random moments, Ctrl+C and SIGTERM in turn."""
    rng = random.Random(622)
    with served_offline() as base_url:
        for k in range(4):
            signum = (signal.SIGINT, signal.SIGTERM)[k % 2]
            db = tmp_path / f"pool{k}.duckdb"
            start = served_completions(base_url)
            proc = subprocess.Popen(
                [sys.executable, "-m", "selfinstruct", "generate", "--base-url", base_url, "--model",
                 "selfinstruct-demo", "--rounds", "60", "--structured", "off", "--seed", str(k), "--db", str(db)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                for line in proc.stdout:
                    if line.startswith("Run "):
                        break
                time.sleep(rng.uniform(0.2, 2.5))
                proc.send_signal(signum)
                _, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == EXIT_CODES[signum], (k, proc.returncode, err)
            assert "Interrupted. Resume with: selfinstruct generate --resume 1" in err and "Traceback" not in err
            answered, status, rounds = _answered(db)
            assert status == model.INTERRUPTED
            assert answered == served_completions(base_url) - start, (k, signum, "answers thrown away")
            resumed = run_cli("generate", "--resume", "1", "--rounds", str(rounds), "--db", str(db))
            assert resumed.returncode == 0, resumed.stderr
            answered, status, _ = _answered(db)
            assert status == model.FINISHED
            assert answered == served_completions(base_url) - start, (k, signum, "answers paid for twice")


@pytest.mark.parametrize("delay_s", (0.0,))   # later moments: the test above
def test_sigterm_in_generate_is_handled_like_ctrl_c(tmp_path, slow_server, delay_s):
    db = tmp_path / "pool.duckdb"
    assert run_cli("seeds", "import", "starter", "--db", str(db)).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct", "generate", "--base-url", slow_server.base_url,
         "--model", "selfinstruct-demo", "--rounds", "30", "--db", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("Run "):
                break
        time.sleep(delay_s)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Interrupted. Resume with: selfinstruct generate --resume 1" in err and "Traceback" not in err
    with Pool.open(db) as pool:
        assert [run["status"] for run in pool.runs.all()] == [model.INTERRUPTED]


def test_sigterm_in_evaluate_collect_keeps_what_came_back(db_path):
    from selfinstruct import evaluate
    from tests.test_evaluate import http_models

    instructions = [{"instruction": f"Explain idea number {k} in one line.", "input": ""} for k in range(60)]
    with OfflineServer(latency_s=0.05, model_names=("base", "tuned")) as srv:
        with Pool.open(db_path) as pool:
            evaluation_id = evaluate.create_evaluation(pool, http_models(srv), instructions)
        proc = subprocess.Popen([sys.executable, "-m", "selfinstruct", "evaluate", "collect", str(evaluation_id),
                                 "--db", str(db_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.time() + 60
        while served_completions(srv.base_url) < 10 and time.time() < deadline:
            time.sleep(0.02)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        served = served_completions(srv.base_url)
    assert proc.returncode == 143, err
    assert f"Resume with: selfinstruct evaluate collect {evaluation_id}" in err
    with Pool.open(db_path) as pool:
        assert pool.evaluations.get(evaluation_id)["status"] == model.INTERRUPTED
        assert pool.evaluations.progress(evaluation_id)["answered"] == served
