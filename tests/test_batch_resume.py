"""Batch mode resumes to the end from a failed run or a process killed while it applied a batch,
and no answer is paid for twice: a batch's files are read again when its collect was cut short
(issue 22, item 2). Real DuckDB files, the real openai client against the offline server's
Files and Batches API; billing is the server's count of batch lines it answered."""
import threading

import pytest
from selfinstruct.settings import RunConfig
from selfinstruct.control import RunControl
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.store import Pool
from tests.conftest import run_cli


class Killed(BaseException):
    """The process dies here: nothing after this point reaches the pool."""


def _counts(pool: Pool, run_id: int = 1) -> dict:
    cur = pool.cursor()
    answered, unapplied, stranded = cur.execute(
        "SELECT count(*) FILTER (WHERE response IS NOT NULL), count(*) FILTER (WHERE applied_at IS NULL), "
        "count(*) FILTER (WHERE response IS NULL AND batch_id IN (SELECT id FROM batches WHERE finished_at "
        "IS NOT NULL)) FROM requests WHERE run_id = ?", [run_id]).fetchone()
    return {"answered": answered, "unapplied": unapplied, "stranded": stranded}


def test_failed_in_three_batches_then_resumed_sends_what_is_missing_and_pays_once(tmp_path, server):
    db = str(tmp_path / "pool.duckdb")
    server.batch_faults(fail_lines=3, fail_rate=0.2, seed=4)    # some requests fail in every batch
    args = ["--batch-poll", "0.1", "--db", db]
    failed = run_cli("generate", "--batch", "--base-url", server.base_url, "--model", "selfinstruct-demo",
                     "--rounds", "4", "--requests-per-round", "4", "--structured", "off", *args, timeout=180)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "failed in 3 batches" in failed.stderr and "Resume with: selfinstruct generate --resume 1" in failed.stderr
    with Pool.open(db) as pool:
        assert pool.runs.get(1)["status"] == "failed"
        assert _counts(pool)["stranded"] == 0        # nothing left tied to a batch that has ended
    server.batch_faults(clear=True)
    resumed = run_cli("generate", "--resume", "1", *args, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    billed = server.stats["batch_lines_answered"]
    with Pool.open(db) as pool:
        assert pool.runs.get(1)["status"] == "finished" and pool.runs.rounds_done(1) == 4
        counts = _counts(pool)
        assert counts["unapplied"] == 0 and counts["stranded"] == 0
        assert counts["answered"] == billed                  # every answer stored, none paid for twice


@pytest.mark.parametrize("kill_at", (2, 5))
def test_killed_while_applying_a_batch_reads_it_again_and_pays_once(seeded, server, kill_at):
    config = RunConfig(base_url=server.base_url, batch=True, batch_poll_s=0.1, rounds=2, requests_per_round=3,
                       timeout_s=5.0, max_retries=3, seed=3, model="selfinstruct-demo")
    run_id = start_run(seeded, config)
    store_apply, calls = seeded.requests.apply_answer, []

    def apply_answer(request_id, **kwargs):
        calls.append(request_id)
        if len(calls) == kill_at:
            raise Killed()
        return store_apply(request_id, **kwargs)

    seeded.requests.apply_answer = apply_answer
    with pytest.raises(Killed):
        Runner(seeded, run_id).run()
    del seeded.requests.apply_answer
    seeded.runs.mark_interrupted()
    control = RunControl()
    watchdog = threading.Timer(60, control.request, args=("stopped",))
    watchdog.start()
    try:
        outcome = Runner(seeded, run_id, control=control).run()
    finally:
        watchdog.cancel()
    assert outcome.status == "finished", outcome
    counts = _counts(seeded, run_id)
    assert counts["unapplied"] == 0 and counts["stranded"] == 0
    assert counts["answered"] == server.stats["batch_lines_answered"]
