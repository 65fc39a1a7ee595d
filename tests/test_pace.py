"""What a run going on says about itself: the stage its requests in flight are for, its own pace
(tokens per second, time left), plain words when a local model is slow, and what it does before
its first round. Real runs against the loopback server, real pool files."""
from __future__ import annotations

import time

import pytest

from selfinstruct import monitor
from selfinstruct.jobs import JobManager, JobStatus
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, apply_overrides, start_run
from selfinstruct.prompts import STAGE_CLASSIFY, STAGE_INSTANCES


def demo_config(server: OfflineServer, **settings) -> RunConfig:
    return RunConfig(base_url=server.base_url, backend="openai-compatible", seed=3, timeout_s=10,
                     **{"rounds": 1, "requests_per_round": 4, "concurrency": 2, **settings})


def test_the_status_line_names_the_stage_being_answered(seeded):
    """A round's step stays "classify" while its instances are written: the line says what the
    requests in flight are for ("instances (2)"), never "classify" then."""
    with OfflineServer(seed=7, latency_s=0.05) as server:
        manager = JobManager(seeded)
        manager.start(demo_config(server, rounds=2))
        seen: list[JobStatus] = []
        deadline = time.monotonic() + 120
        while manager.status().busy and time.monotonic() < deadline:
            seen.append(manager.status())
            time.sleep(0.01)
        manager.shutdown()
    during_instances = [s for s in seen if s.step == STAGE_CLASSIFY and set(s.in_flight_stages) == {STAGE_INSTANCES}]
    assert during_instances, "no moment with only instance requests in flight was seen"
    for status in during_instances:
        n = status.in_flight_stages[STAGE_INSTANCES]
        assert f"(instances ({n}))" in status.line() and "(classify)" not in status.line(), status.line()


def test_pace_and_time_left_come_from_the_runs_own_answers(seeded):
    with OfflineServer(seed=7, latency_s=0.05) as server:
        run_id = start_run(seeded, demo_config(server))
        assert Runner(seeded, run_id).run().status == "finished"
    rows = seeded.cursor().execute(
        "SELECT completion_tokens, latency_s FROM requests WHERE run_id = ? AND response IS NOT NULL "
        "ORDER BY completed_at DESC LIMIT ?", [run_id, monitor.PACE_LAST]).fetchall()
    answered = seeded.cursor().execute("SELECT count(*) FROM requests WHERE run_id = ?", [run_id]).fetchone()[0]
    pace = monitor.run_pace(seeded, run_id, elapsed_s=60.0, busy=False)
    assert pace.tokens_per_s == pytest.approx(sum(r[0] for r in rows) / sum(r[1] for r in rows))
    assert pace.answered == answered and pace.remaining == 0
    assert pace.seconds_per_request == pytest.approx(60.0 / answered)
    # asked for three rounds: two more rounds like the one done, at this run's pace
    apply_overrides(seeded, run_id, {"rounds": 3})
    pace = monitor.run_pace(seeded, run_id, elapsed_s=60.0, busy=False)
    assert pace.remaining == 2 * answered
    assert pace.eta_s == pytest.approx(120.0)
    assert pace.words().endswith("· about 2 min left") and not pace.local and pace.note() is None


def test_a_slow_local_model_is_said_plainly():
    busy = monitor.Pace(tokens_per_s=1.0, seconds_per_request=28.0, answered=58, remaining=86, eta_s=2400.0,
                        busy=True, local=True)
    assert busy.words() == "1 token/s · about 40 min left"
    assert busy.note().startswith("The CPU is shared with other work: 1 token/s; expect about 40 min.")
    quiet = monitor.Pace(tokens_per_s=2.5, seconds_per_request=10.0, answered=3, remaining=6, eta_s=60.0,
                         busy=False, local=True)
    assert quiet.note().startswith("The local model writes 2.5 tokens/s on this machine; expect about 60 s.")
    fast = monitor.Pace(tokens_per_s=98.0, seconds_per_request=1.0, answered=3, remaining=6, eta_s=6.0,
                        busy=True, local=True)
    assert fast.note() is None and fast.words() == "98 tokens/s · about 6 s left"
    assert monitor.Pace(None, None, 0, 10, None).words() == "measuring the pace"


def test_before_its_first_round_a_run_says_what_it_does():
    status = JobStatus(state="running", run_id=3, preparing="loading the local model SmolLM2 (llama.cpp)")
    assert status.line() == "Run 3 starting: loading the local model SmolLM2 (llama.cpp)"
    assert JobStatus(state="running", run_id=3).line() == "Run 3 starting"
