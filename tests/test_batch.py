"""Batch mode end to end: the OpenAI Batch API against the offline server's /v1/files and
/v1/batches, and the file route for `vllm run-batch`. Real DuckDB files, real openai client,
real HTTP on 127.0.0.1."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from selfinstruct import seeds
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.store import Pool
from tests.conftest import ROOT, run_cli

FAST = dict(timeout_s=5.0, max_retries=3, seed=3, model="selfinstruct-demo")


def batch_config(server, **overrides) -> RunConfig:
    return RunConfig(**{"base_url": server.base_url, "batch": True, "batch_poll_s": 0.1,
                        "rounds": 1, "requests_per_round": 3, **FAST, **overrides})


def run_batch(pool, server, **overrides):
    run_id = start_run(pool, batch_config(server, **overrides))
    events = []
    outcome = Runner(pool, run_id, on_event=events.append).run()
    return run_id, outcome, events


def candidates(pool, run_id):
    return pool.cursor().execute(
        "SELECT instruction, status, reason, is_classification FROM candidates WHERE run_id = ? "
        "ORDER BY round_id, request_id, position", [run_id]).fetchall()


def assert_complete(pool, run_id):
    """Every accepted candidate was classified and has instances; no request was planned twice;
    every request is answered."""
    cur = pool.cursor()
    accepted = cur.execute("SELECT count(*) FROM candidates WHERE run_id = ? AND status = 'accepted'",
                           [run_id]).fetchone()[0]
    assert accepted > 0
    assert cur.execute("SELECT count(*) FROM candidates WHERE run_id = ? AND status = 'accepted' "
                       "AND is_classification IS NULL", [run_id]).fetchone()[0] == 0
    assert cur.execute(
        "SELECT count(*) FROM candidates c WHERE run_id = ? AND status = 'accepted' AND NOT EXISTS "
        "(SELECT 1 FROM instances i WHERE i.candidate_id = c.id)", [run_id]).fetchone()[0] == 0
    assert cur.execute("SELECT count(*) FROM (SELECT round_id, stage, position FROM requests WHERE run_id = ? "
                       "GROUP BY ALL HAVING count(*) > 1)", [run_id]).fetchone()[0] == 0
    assert cur.execute("SELECT count(*) FROM requests WHERE run_id = ? AND response IS NULL",
                       [run_id]).fetchone()[0] == 0
    texts = pool.seeds.pool_instructions()
    assert len(texts) == len(set(texts))


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _post(url: str, body) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


# -- 1 ------------------------------------------------------------------------------------------
def test_batch_run_end_to_end_costs_half_and_matches_live(seeded, server, tmp_path):
    run_id, outcome, events = run_batch(seeded, server, rounds=2, price_per_m=[2.0, 4.0])
    assert outcome.status == "finished" and outcome.stop_reason == "rounds" and outcome.rounds_done == 2
    batches = seeded.requests.batches(run_id)
    assert len(batches) >= 3 and {b["kind"] for b in batches} == {"api"}
    assert {b["status"] for b in batches} == {"completed"}
    assert all(b["remote_id"] and b["finished_at"] for b in batches)
    assert seeded.requests.batches(run_id, open_only=True) == []
    assert server.stats["batches_created"] == len(batches)
    assert any(e.kind == "batch" for e in events)
    # no request went to the live endpoint
    assert server.stats["by_endpoint"].get("chat/completions", 0) == 0
    assert_complete(seeded, run_id)
    # every request went in a batch and was answered once
    cur = seeded.cursor()
    assert cur.execute("SELECT count(*) FROM requests WHERE run_id = ? AND (failures > 0 OR error IS NOT NULL)",
                       [run_id]).fetchone()[0] == 0
    assert sum(b["requests"] for b in batches) == cur.execute(
        "SELECT count(*) FROM requests WHERE run_id = ?", [run_id]).fetchone()[0]
    # batch price: half the list price
    prompt, completion = cur.execute("SELECT sum(prompt_tokens), sum(completion_tokens) FROM requests "
                                     "WHERE run_id = ?", [run_id]).fetchone()
    assert prompt > 0 and completion > 0
    usage = seeded.runs.usage(run_id)
    assert usage["cost_usd"] == pytest.approx((prompt * 2.0 + completion * 4.0) / 1e6 * 0.5)
    per_request = cur.execute("SELECT prompt_tokens, completion_tokens, cost_usd FROM requests WHERE run_id = ?",
                              [run_id]).fetchall()
    for p, c, cost in per_request:
        assert cost == pytest.approx((p * 2.0 + c * 4.0) / 1e6 * 0.5)
    # the same run, live, on a fresh pool: the same candidates
    with Pool.open(tmp_path / "live.duckdb") as live:
        seeds.load_starter_seeds(live)
        live_id = start_run(live, batch_config(server, rounds=2, price_per_m=[2.0, 4.0], batch=False))
        live_outcome = Runner(live, live_id).run()
        assert live_outcome.status == "finished"
        assert candidates(live, live_id) == candidates(seeded, run_id)
        assert live.runs.usage(live_id)["cost_usd"] == pytest.approx(2 * usage["cost_usd"])


# -- 2 ------------------------------------------------------------------------------------------
def test_failed_lines_are_sent_again_in_a_later_batch(seeded, server, tmp_path):
    server.batch_faults(fail_lines=2)
    run_id, outcome, _ = run_batch(seeded, server)
    assert outcome.status == "finished", outcome.error
    cur = seeded.cursor()
    failed = cur.execute("SELECT id, failures, response IS NOT NULL, batch_id FROM requests "
                         "WHERE run_id = ? AND failures > 0 ORDER BY id", [run_id]).fetchall()
    assert len(failed) == 2
    first = seeded.requests.batches(run_id)[0]
    for _, failures, answered, batch_id in failed:
        assert failures == 1 and answered
        assert batch_id is not None and batch_id > first["id"]   # answered by a later batch
    assert first["status"] == "completed" and first["error_file_id"]
    assert_complete(seeded, run_id)
    # the same candidates as a run without the fault
    with Pool.open(tmp_path / "clean.duckdb") as clean:
        seeds.load_starter_seeds(clean)
        clean_id = start_run(clean, batch_config(server))
        assert Runner(clean, clean_id).run().status == "finished"
        assert candidates(clean, clean_id) == candidates(seeded, run_id)


# -- 3 ------------------------------------------------------------------------------------------
def test_expired_lines_are_sent_again(seeded, server):
    server.batch_faults(expire_next=1)
    run_id, outcome, _ = run_batch(seeded, server)
    assert outcome.status == "finished", outcome.error
    batches = seeded.requests.batches(run_id)
    assert batches[0]["status"] == "expired" and batches[0]["requests"] == 3
    assert {b["status"] for b in batches[1:]} == {"completed"}
    cur = seeded.cursor()
    resent = cur.execute("SELECT count(*) FROM requests WHERE run_id = ? AND failures = 1 AND response IS NOT NULL "
                         "AND batch_id <> ?", [run_id, batches[0]["id"]]).fetchone()[0]
    assert resent == 2
    assert_complete(seeded, run_id)


# -- 4 ------------------------------------------------------------------------------------------
def test_killed_while_a_batch_is_open_resumes_polling_it(tmp_path):
    db = tmp_path / "pool.duckdb"
    with OfflineServer(seed=7, batch_delay_s=2.0) as srv:
        args = ["generate", "--batch", "--base-url", srv.base_url, "--model", "selfinstruct-demo",
                "--rounds", "1", "--requests-per-round", "3", "--batch-poll", "0.2", "--db", str(db)]
        victim = subprocess.Popen([sys.executable, "-m", "selfinstruct", *args], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            while srv.stats["batches_created"] < 1 and victim.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            assert srv.stats["batches_created"] == 1, "no batch was created"
            time.sleep(0.3)      # let the CLI store the batch's id (a resume adopts it either way)
            assert victim.poll() is None, "the run ended before it could be killed"
            first = _get(srv.base_url + "/batches")["data"]
            assert len(first) == 1 and first[0]["status"] in {"validating", "in_progress"}
            first_id = first[0]["id"]
            os.kill(victim.pid, signal.SIGKILL)
        finally:
            if victim.poll() is None:
                victim.kill()
            victim.wait()
        srv.batch_faults(delay_s=0.2)     # the later stages' batches go fast
        resumed = run_cli("generate", "--resume", "--base-url", srv.base_url, "--model", "selfinstruct-demo",
                          "--db", str(db), timeout=60)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        created = srv.stats["batches_created"]
        remote = {b["id"] for b in _get(srv.base_url + "/batches?limit=100")["data"]}
    with Pool.open(db) as pool:
        assert pool.runs.get(1)["status"] == "finished"
        batches = pool.requests.batches(1)
        assert batches[0]["remote_id"] == first_id and batches[0]["status"] == "completed"
        assert batches[0]["requests"] == 3
        # one new batch per later stage, none for the requests already submitted
        assert created == len(batches) == 3
        assert {b["remote_id"] for b in batches} == remote
        assert {b["status"] for b in batches} == {"completed"}
        cur = pool.cursor()
        assert cur.execute("SELECT count(*) FROM requests WHERE batch_id = ?", [batches[0]["id"]]).fetchone()[0] == 3
        assert_complete(pool, 1)


# -- 5 ------------------------------------------------------------------------------------------
def test_three_failed_batches_fail_the_run(tmp_path):
    db = tmp_path / "pool.duckdb"
    with OfflineServer(seed=7) as srv:
        create = srv._create_batch
        armed = {"n": 3}

        def failing_create(body):       # the next three batches fail at the provider
            if armed["n"] > 0:
                armed["n"] -= 1
                srv.batch_faults(fail_next=True)
            return create(body)

        srv._create_batch = failing_create
        done = run_cli("generate", "--batch", "--base-url", srv.base_url, "--model", "selfinstruct-demo",
                       "--rounds", "1", "--requests-per-round", "2", "--batch-poll", "0.1", "--db", str(db),
                       timeout=60)
        assert srv.stats["batches_created"] == 3
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "3 batches in a row failed" in done.stderr and "batch_failed" in done.stderr
    with Pool.open(db) as pool:
        run = pool.runs.get(1)
        assert run["status"] == "failed" and run["stop_reason"] == "batch"
        assert "failed" in run["error"]
        batches = pool.requests.batches(1)
        assert len(batches) == 3 and {b["status"] for b in batches} == {"failed"}
        assert all(b["error"] for b in batches)
        # nothing is left marked as in a batch: a resume sends the requests again
        assert pool.cursor().execute("SELECT count(*) FROM requests WHERE batch_id IS NOT NULL "
                                     "AND response IS NULL").fetchone()[0] == 0


def test_three_failed_batches_fail_the_run_in_process(seeded, server):
    create = server._create_batch
    armed = {"n": 3}

    def failing_create(body):
        if armed["n"] > 0:
            armed["n"] -= 1
            server.batch_faults(fail_next=True)
        return create(body)

    server._create_batch = failing_create
    run_id, outcome, _ = run_batch(seeded, server, requests_per_round=2)
    assert outcome.status == "failed" and outcome.stop_reason == "batch"
    assert outcome.error and "batch" in outcome.error and f"--resume {run_id}" in outcome.next_step
    # once the provider recovers, a resume finishes the run
    outcome = Runner(seeded, run_id).run()
    assert outcome.status == "finished", outcome.error
    assert_complete(seeded, run_id)


# -- 6 ------------------------------------------------------------------------------------------
def _vllm_run_batch(srv: OfflineServer, src, dst) -> int:
    """What `vllm run-batch -i src -o dst` does, against the offline server."""
    out = []
    for number, text in enumerate(src.read_text().splitlines()):
        line = json.loads(text)
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert isinstance(line["body"], dict) and line["body"]["messages"]
        answer = _post(srv.base_url + "/chat/completions", line["body"])
        out.append({"id": f"vllm-{number}", "custom_id": line["custom_id"],
                    "response": {"status_code": 200, "request_id": f"vllm-batch-{number}", "body": answer},
                    "error": None})
    dst.write_text("".join(json.dumps(o) + "\n" for o in out))
    return len(out)


def test_vllm_file_route(seeded, tmp_path, db_path):
    run_id = start_run(seeded, RunConfig(batch=True, rounds=1, requests_per_round=3, seed=3,
                                         model="selfinstruct-demo"))
    seeded.close()
    with OfflineServer(seed=7) as srv:
        steps = []
        for step in range(6):
            src, dst = tmp_path / f"in{step}.jsonl", tmp_path / f"out{step}.jsonl"
            wrote = run_cli("batch", "write", str(run_id), "--out", str(src), "--db", str(db_path))
            assert wrote.returncode == 0, wrote.stderr
            n = len(src.read_text().splitlines()) if src.exists() else 0
            if step == 0:
                assert n == 3
            assert n > 0 and f"Wrote {n} request(s)" in wrote.stdout
            ids = [json.loads(t)["custom_id"] for t in src.read_text().splitlines()]
            assert all(i.startswith("selfinstruct-") for i in ids) and len(set(ids)) == n
            assert _vllm_run_batch(srv, src, dst) == n
            read = run_cli("batch", "read", str(dst), "--db", str(db_path))
            assert read.returncode == 0, read.stderr
            assert f"{n} answer(s) applied" in read.stdout
            steps.append(n)
            if "the run is finished" in read.stdout:
                break
        else:
            pytest.fail(f"the run did not finish after {steps} batches")
        assert len(steps) == 3           # generate, classify, instances
        nothing = run_cli("batch", "write", str(run_id), "--out", str(tmp_path / "none.jsonl"),
                          "--db", str(db_path))
        assert nothing.returncode == 0 and "nothing written" in nothing.stdout
        # a line that is not ours: exit 2, naming the line
        bad = tmp_path / "bad.jsonl"
        good = json.loads((tmp_path / "out0.jsonl").read_text().splitlines()[0])
        bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "custom_id": "request-7"}) + "\n")
        done = run_cli("batch", "read", str(bad), "--db", str(db_path))
        assert done.returncode == 2 and "line 2" in done.stderr and "Traceback" not in done.stderr
    with Pool.open(db_path) as pool:
        run = pool.runs.get(run_id)
        assert run["status"] == "finished"
        assert_complete(pool, run_id)
        assert {b["kind"] for b in pool.requests.batches(run_id)} == {"file"}
        assert {b["status"] for b in pool.requests.batches(run_id)} == {"imported"}
        assert pool.cursor().execute(
            "SELECT count(*) FROM instances i JOIN candidates c ON i.candidate_id = c.id "
            "WHERE c.run_id = ? AND i.status = 'kept'", [run_id]).fetchone()[0] > 0


# -- errors from the Batch API itself, and a batch whose provider id was never stored ----------
def test_batch_api_auth_error_fails_the_run_and_a_resume_finishes(seeded):
    with OfflineServer(seed=7, api_key="sk-right") as srv:
        run_id = start_run(seeded, batch_config(srv))
        outcome = Runner(seeded, run_id, api_key="sk-wrong").run()
        assert outcome.status == "failed" and outcome.stop_reason == "auth"
        assert "401" in outcome.error and seeded.runs.get(run_id)["status"] == "failed"
        assert srv.stats["batches_created"] == 0
        outcome = Runner(seeded, run_id, api_key="sk-right").run()
        assert outcome.status == "finished", outcome.error
        first = seeded.requests.batches(run_id)[0]
        assert first["status"] == "cancelled" and first["remote_id"] is None   # never created
        assert_complete(seeded, run_id)


def test_unconfirmed_batch_is_adopted_by_its_input_file(seeded, tmp_path):
    import openai
    from selfinstruct.control import RunControl

    with OfflineServer(seed=7, batch_delay_s=1.0) as srv:
        control = RunControl()
        run_id = start_run(seeded, batch_config(srv))

        def pause_on_submit(event):
            if event.kind == "batch" and "submitted" in (event.message or ""):
                control.request("paused")

        outcome = Runner(seeded, run_id, on_event=pause_on_submit, control=control).run()
        assert outcome.status == "paused"
        first = seeded.requests.batches(run_id)[0]
        real_id = first["remote_id"]
        # as if killed between the create call and storing its answer
        seeded.cursor().execute("UPDATE batches SET remote_id = NULL WHERE id = ?", [first["id"]])
        # another pool's batch on the same account, with the same local ids in its metadata
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        body = {"model": "selfinstruct-demo", "messages": [{"role": "user", "content": "something else"}]}
        data = "".join(json.dumps({"custom_id": f"selfinstruct-{i}", "method": "POST",
                                   "url": "/v1/chat/completions", "body": body}) + "\n" for i in range(1, 200))
        upload = client.files.create(file=("other.jsonl", data.encode()), purpose="batch")
        client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                              completion_window="24h",
                              metadata={"selfinstruct_batch": str(first["id"]), "selfinstruct_run": str(run_id)})
        client.close()
        before = srv.stats["batches_created"]
        outcome = Runner(seeded, run_id).run()
        assert outcome.status == "finished", outcome.error
        batches = seeded.requests.batches(run_id)
        assert batches[0]["remote_id"] == real_id and batches[0]["status"] == "completed"
        assert srv.stats["batches_created"] == before + len(batches) - 1
    with Pool.open(tmp_path / "straight.duckdb") as straight, OfflineServer(seed=7) as srv:
        seeds.load_starter_seeds(straight)
        other_id = start_run(straight, batch_config(srv))
        assert Runner(straight, other_id).run().status == "finished"
        assert candidates(straight, other_id) == candidates(seeded, run_id)
    assert_complete(seeded, run_id)
