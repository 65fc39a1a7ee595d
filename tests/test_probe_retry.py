"""Issue 22, item 5: a structured-output probe that got no answer decides nothing.

The probe's first requests time out or get 5xx; the run probes again a little later and ends up
structured `on` with the same accepted set as a run whose probe was answered at once. When the
probe never gets through, the run fails with nothing stored and a resume probes again. The judge's
and the evaluation's pre-rating probes follow the same rule.
"""
from __future__ import annotations

import pytest

from selfinstruct import evaluate, seeds
from selfinstruct.evaluate import EvalModel, EvalRunner
from selfinstruct.judge import JudgeConfig, JudgeRunner, start_judge
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.store import Pool

TIMEOUT_S = 1.0


def run_config(server: OfflineServer, **settings) -> RunConfig:
    return RunConfig(**{"backend": "openai-compatible", "base_url": server.base_url, "model": "selfinstruct-demo",
                        "structured": "auto", "requests_per_round": 4, "rounds": 2, "seed": 11,
                        "timeout_s": TIMEOUT_S, **settings})


def accepted(pool: Pool, run_id: int) -> list[str]:
    return sorted(r[0] for r in pool.cursor().execute(
        "SELECT instruction FROM candidates WHERE run_id = ? AND status = 'accepted'", [run_id]).fetchall())


def a_run(path, fault: str | None = None, count: int = 0, *, resume: bool = False) -> tuple[dict, list[str], list]:
    with Pool.open(path) as pool, OfflineServer(seed=3, structured_output=True) as server:
        seeds.load_starter_seeds(pool)
        if fault:
            server.faults.push(fault, count=count, seconds=TIMEOUT_S + 1)
        run_id = start_run(pool, run_config(server))
        outcomes = [Runner(pool, run_id).run()]
        if resume:
            outcomes.append(Runner(pool, run_id).run())
        return pool.runs.get(run_id), accepted(pool, run_id), outcomes


@pytest.fixture(scope="module")
def answered_at_once(tmp_path_factory):
    run, kept, outcomes = a_run(tmp_path_factory.mktemp("once") / "pool.duckdb")
    assert outcomes[-1].status == "finished" and run["structured"] is True
    return kept


@pytest.mark.parametrize("fault", ["500", "503", "timeout"])
def test_a_probe_without_an_answer_is_sent_again_and_the_dataset_is_the_same(tmp_path, fault, answered_at_once):
    # the probe's three attempts (two retries) get no answer; its next try gets through
    run, kept, outcomes = a_run(tmp_path / "pool.duckdb", fault, 3)
    assert outcomes[-1].status == "finished", outcomes[-1].error
    assert run["structured"] is True and run["structured_note"].startswith("auto: on")
    assert kept == answered_at_once and kept


def test_a_probe_that_never_gets_through_fails_the_run_and_a_resume_probes_again(tmp_path, answered_at_once):
    # three probes of three attempts each: the failure streak ends the run, and nothing is stored
    path = tmp_path / "pool.duckdb"
    with Pool.open(path) as pool, OfflineServer(seed=3, structured_output=True) as server:
        seeds.load_starter_seeds(pool)
        server.faults.push("500", count=9)
        run_id = start_run(pool, run_config(server))
        first = Runner(pool, run_id).run()
        assert first.status == "failed" and "probe" in first.error and f"--resume {run_id}" in first.next_step
        assert pool.runs.get(run_id)["structured"] is None
        assert pool.cursor().execute("SELECT count(*) FROM requests WHERE run_id = ?", [run_id]).fetchone()[0] == 0
        resumed = Runner(pool, run_id).run()
        assert resumed.status == "finished", resumed.error
        assert pool.runs.get(run_id)["structured"] is True
        assert accepted(pool, run_id) == answered_at_once


def test_the_judge_probes_again(demo_pool):
    with OfflineServer(seed=3, structured_output=True) as server:
        config = JudgeConfig(backend="openai-compatible", base_url=server.base_url, model="selfinstruct-demo",
                             structured="auto", timeout_s=TIMEOUT_S)
        judge_run_id = start_judge(demo_pool, config, "pool", limit=4)
        server.faults.push("503", count=3)
        outcome = JudgeRunner(demo_pool, judge_run_id).run()
    assert outcome.status == "finished", outcome.error
    assert demo_pool.judge.run(judge_run_id)["structured"] is True


def test_the_evaluations_pre_rating_probes_again(db_path):
    instructions = [{"instruction": f"Explain idea number {k} in one line.", "input": ""} for k in range(3)]
    with OfflineServer(seed=3, structured_output=True, model_names=("base", "tuned", "selfinstruct-demo")) as server, \
            Pool.open(db_path) as pool:
        models = [EvalModel(backend="openai-compatible", base_url=server.base_url, model=name) for name in ("base", "tuned")]
        evaluation_id = evaluate.create_evaluation(pool, models, instructions)
        assert EvalRunner(pool, evaluation_id).run().status == "finished"
        judge = JudgeConfig(backend="openai-compatible", base_url=server.base_url, model="selfinstruct-demo",
                            structured="auto", timeout_s=TIMEOUT_S)
        evaluate.plan_prerating(pool, evaluation_id, judge)
        server.faults.push("timeout", count=3, seconds=TIMEOUT_S + 1)
        outcome = EvalRunner(pool, evaluation_id, task=evaluate.PRERATE).run()
        assert outcome.status == "finished", outcome.error
        assert pool.evaluations.get(evaluation_id)["judge_structured"] is True
