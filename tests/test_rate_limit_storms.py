"""Issue 22, item 4: a 429 storm slows a run down instead of ending it.

The offline server answers 429 (all of them, or 90 %) for a few seconds, then recovers. Runs are
set up so that the old rule (a 429 counts as a retry, a request that ran out of retries counts
toward the failure streak) fails them within the storm: two retries, a streak of three. Now the
generation run (live and in batch mode), the judge and an evaluation go on and finish; only a storm
longer than the rate-limit patience ends a run failed, with the message and the resume command.
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from selfinstruct import evaluate
from selfinstruct.evaluate import EvalModel, EvalRunner
from selfinstruct.jobs import JobManager
from selfinstruct.judge import JudgeConfig, JudgeRunner, start_judge
from selfinstruct.llm import LLMClient, LLMConfig, LLMError, RATE_LIMIT_PATIENCE_S, Sampling, duration_words
from selfinstruct.monitor import rate_limit_words
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RESUMABLE_SETTINGS, RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.prompts import Prompt
from selfinstruct.store import Pool
from tests.conftest import run_cli

STRICT = {"max_retries": 2, "failure_streak": 3}   # the old rule fails these runs within a storm


def storm(server: OfflineServer, seconds: float, *, share: float = 1.0, retry_after: float = 1.0, seed: int = 5):
    """429 on `share` of the completion requests for `seconds`, then none."""
    server.faults.set_rates({"429": share}, seed=seed, params={"429": {"retry_after": retry_after}})
    timer = threading.Timer(seconds, lambda: server.faults.set_rates({}))
    timer.daemon = True
    timer.start()
    return timer


def endpoint_config(server: OfflineServer, **settings) -> RunConfig:
    return RunConfig(**{"backend": "openai-compatible", "base_url": server.base_url, "model": "selfinstruct-demo",
                        "structured": "off", "generation": "alpaca", "requests_per_round": 4, "concurrency": 4,
                        "rounds": 1, **STRICT, **settings})


def test_one_home_for_the_patience_default():
    assert RunConfig().rate_limit_patience_s == JudgeConfig().rate_limit_patience_s == \
        EvalModel().rate_limit_patience_s == LLMConfig("http://x/v1", "m").rate_limit_patience_s == RATE_LIMIT_PATIENCE_S
    assert duration_words(RATE_LIMIT_PATIENCE_S) == "10 minutes" and duration_words(3) == "3 seconds"
    assert rate_limit_words(23.2) == "rate limited: waiting 24 s" and rate_limit_words(0) == ""


def test_a_storm_with_retry_after_2_slows_the_run_and_the_page_shows_the_wait(seeded):
    with OfflineServer(seed=3) as server:
        manager = JobManager(seeded)
        storm(server, 7.0, retry_after=2)
        run_id = manager.start(endpoint_config(server))
        waits, deadline = [], time.time() + 90
        while manager.status().busy and time.time() < deadline:
            waits.append(manager.status().rate_limit_wait_s)
            time.sleep(0.1)
        outcome = manager.status().outcome
    assert outcome is not None and outcome.status == "finished", outcome
    assert max(waits) > 0, "the page never saw the wait"
    run = seeded.runs.get(run_id)
    assert run["status"] == "finished" and run["error"] is None
    failed = seeded.cursor().execute("SELECT count(*) FROM requests WHERE run_id = ? AND error IS NOT NULL",
                                     [run_id]).fetchone()[0]
    assert failed == 0 and seeded.runs.accepted_count(run_id) > 0


def test_ninety_percent_429_with_retry_after_1_finishes(seeded):
    with OfflineServer(seed=3) as server:
        storm(server, 10.0, share=0.9, retry_after=1)
        run_id = start_run(seeded, endpoint_config(server, requests_per_round=8, concurrency=8))
        outcome = Runner(seeded, run_id).run()
    assert outcome.status == "finished", outcome.error
    assert seeded.runs.accepted_count(run_id) > 0


def test_a_storm_longer_than_the_patience_fails_with_the_message_and_the_resume_command(db_path):
    with OfflineServer(seed=3) as server:
        server.faults.set_rates({"429": 1.0}, params={"429": {"retry_after": 1}})
        started = time.monotonic()
        done = run_cli("generate", "--base-url", server.base_url, "--model", "selfinstruct-demo", "--structured", "off",
                       "--generation", "alpaca", "--requests-per-round", "2", "--rounds", "1",
                       "--rate-limit-patience", "3s", "--db", str(db_path))
        took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert "rate limited for 3 seconds" in done.stderr
    assert "Resume with: selfinstruct generate --resume 1" in done.stderr
    assert "rate limited: waiting 1 s" in done.stderr
    assert took < 60
    with Pool.open(db_path) as pool:
        run = pool.runs.get(1)
        assert run["status"] == "failed" and run["stop_reason"] == "rate_limit"
        assert run["config"]["rate_limit_patience_s"] == 3.0
    # a resume may give the provider more time
    assert "rate_limit_patience_s" in RESUMABLE_SETTINGS


def test_insufficient_quota_stays_fatal():
    with OfflineServer(seed=3) as server:
        server.faults.push("429", count=1, code="insufficient_quota")
        client = LLMClient(LLMConfig(server.base_url, "selfinstruct-demo", max_retries=5))
        with pytest.raises(LLMError) as err:
            asyncio.run(client.complete(Prompt(stage="check", version="v", text="Say hi."), Sampling()))
    assert err.value.kind == "auth" and "insufficient_quota" in err.value.message


def test_batch_lines_answered_429_are_sent_again_later(seeded):
    with OfflineServer(seed=3) as server:
        server.batch_faults(fail_rate=1.0, fail_status=429, delay_s=0.1)
        timer = threading.Timer(5.0, lambda: server.batch_faults(fail_rate=0.0))
        timer.start()
        run_id = start_run(seeded, endpoint_config(server, batch=True, batch_poll_s=0.1))
        outcome = Runner(seeded, run_id).run()
        timer.cancel()
    assert outcome.status == "finished", outcome.error
    assert seeded.runs.accepted_count(run_id) > 0
    assert len(seeded.requests.batches(run_id)) > 3     # the old rule failed the run at the third


def test_the_judge_rides_out_a_storm(demo_pool):
    with OfflineServer(seed=3) as server:
        config = JudgeConfig(backend="openai-compatible", base_url=server.base_url, model="selfinstruct-demo",
                             structured="off", concurrency=4, **STRICT)
        judge_run_id = start_judge(demo_pool, config, "pool", limit=8)
        storm(server, 5.0, retry_after=1)
        outcome = JudgeRunner(demo_pool, judge_run_id).run()
    assert outcome.status == "finished", outcome.error
    assert outcome.done == outcome.total == 8


def test_an_evaluation_rides_out_a_storm(db_path):
    instructions = [{"instruction": f"Explain idea number {k} in one line.", "input": ""} for k in range(6)]
    with OfflineServer(seed=3, model_names=("base", "tuned")) as server, Pool.open(db_path) as pool:
        models = [EvalModel(backend="openai-compatible", base_url=server.base_url, model=name, concurrency=2,
                            **STRICT) for name in ("base", "tuned")]
        evaluation_id = evaluate.create_evaluation(pool, models, instructions)
        storm(server, 5.0, retry_after=1)
        outcome = EvalRunner(pool, evaluation_id).run()
    assert outcome.status == "finished", outcome.error
    assert outcome.done == outcome.total == 12



def test_batch_api_calls_answered_429_are_waited_out(seeded):
    from selfinstruct.offline import _HTTPError

    with OfflineServer(seed=3) as server:
        api = server._batches_api
        refused = {"n": 0}

        def rate_limited_api(method, rest, query, headers, body):
            # the provider's Batch API rate-limits polling for a while (more 429s than the openai
            # client's own two retries)
            if method == "GET" and rest and refused["n"] < 8:
                refused["n"] += 1
                raise _HTTPError(429, "Rate limit reached for batch requests.", "requests", "rate_limit_exceeded",
                                 headers={"Retry-After": "0.2"})
            return api(method, rest, query, headers, body)

        server._batches_api = rate_limited_api
        run_id = start_run(seeded, endpoint_config(server, batch=True, batch_poll_s=0.1))
        outcome = Runner(seeded, run_id).run()
    assert outcome.status == "finished", outcome.error
    assert refused["n"] == 8 and seeded.runs.accepted_count(run_id) > 0
