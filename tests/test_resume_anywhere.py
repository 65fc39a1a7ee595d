"""From any state a run can be left in, `generate --resume` reaches the end with the same
decisions as a run never interrupted (issue 22, item 1).

Two ways of leaving a run: the process dies right before it decides its n-th instruction
answer (the answer stored, its decision not: the state that used to resume into an idle wait
forever), for every n of a small run; and a live CLI run frozen by SIGSTOP at seeded random
moments, its pool and WAL copied as they are on disk, each copy resumed by the CLI
(`bench/resume_sweep.py` runs the same sweep at 100+ moments). Real DuckDB files, the real
openai client over HTTP to the offline server."""
import random
import threading

import pytest

from bench.resume_sweep import decisions, sweep
from selfinstruct import seeds
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.control import RunControl
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.store import Pool

ROUNDS, PER_ROUND = 2, 3


class Killed(BaseException):
    """The process dies here: nothing after this point reaches the pool (no status, no cleanup)."""


def _config(server) -> RunConfig:
    return RunConfig(base_url=server.base_url, backend="openai-compatible", seed=5, rounds=ROUNDS,
                     requests_per_round=PER_ROUND, concurrency=8, timeout_s=10.0, max_retries=2)


def _resume(path, watchdog_s: float = 20.0):
    """Resume the pool's run; a run that has not finished after `watchdog_s` is stopped."""
    with Pool.open(path) as pool:
        pool.runs.mark_interrupted()
        control = RunControl()
        timer = threading.Timer(watchdog_s, control.request, args=("stopped",))
        timer.start()
        try:
            outcome = Runner(pool, 1, control=control).run()
        finally:
            timer.cancel()
        return outcome, decisions(pool)


def test_killed_before_deciding_any_instruction_answer_resumes_to_the_same_end(tmp_path):
    with OfflineServer(seed=7) as server:
        reference = tmp_path / "straight.duckdb"
        with Pool.open(reference) as pool:
            seeds.load_starter_seeds(pool)
            assert Runner(pool, start_run(pool, _config(server))).run().status == "finished"
            expected = decisions(pool)
        assert expected["candidates"] and expected["instances"]
        for n in range(1, ROUNDS * PER_ROUND + 1):
            path = tmp_path / f"killed{n}.duckdb"
            pool = Pool.open(path)
            seeds.load_starter_seeds(pool)
            run_id = start_run(pool, _config(server))
            store_apply, seen = pool.requests.apply_answer, []

            def apply_answer(request_id, **kwargs):
                if kwargs.get("answer") is None:     # an instruction answer, stored before, decided here
                    seen.append(request_id)
                    if len(seen) == n:
                        raise Killed()
                return store_apply(request_id, **kwargs)

            pool.requests.apply_answer = apply_answer
            with pytest.raises(Killed):
                Runner(pool, run_id).run()
            pool.close()
            outcome, got = _resume(path)
            assert outcome.status == "finished", (n, outcome)
            assert got == expected, n


def test_cli_run_frozen_at_random_moments_resumes_to_the_same_end(tmp_path):
    result = sweep(tmp_path, moments=6, rng=random.Random(22), rounds=2, per_run=6, resume_timeout_s=60)
    assert result["tries"] == 6
    assert result["held"] == result["tries"], result["failures"]
