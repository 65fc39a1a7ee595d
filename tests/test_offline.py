"""The loopback OpenAI-compatible server, spoken to over real HTTP (http.client + openai)."""
from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from selfinstruct.offline import FAULT_KINDS, FaultPlan, OfflineServer, estimate_tokens

ROOT = Path(__file__).resolve().parent.parent
MODEL = "selfinstruct-demo"


def echo(text: str, request_seed: int) -> str:
    return f"[{request_seed}] {text}"


@pytest.fixture
def server():
    with OfflineServer(responder=echo) as srv:
        yield srv


class Raw:
    """A single keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, srv: OfflineServer, timeout: float = 5.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        self.conn.request(method, path, body=data, headers=hdrs)
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp, raw

    def json(self, method: str, path: str, body=None, headers=None):
        resp, raw = self.request(method, path, body, headers)
        return resp.status, json.loads(raw), resp

    def close(self) -> None:
        self.conn.close()


def chat_body(content="hello", **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


# --------------------------------------------------------------------------- shapes


def test_models_list_shape(server):
    raw = Raw(server)
    status, body, _ = raw.json("GET", "/v1/models")
    assert status == 200
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL]
    assert body["data"][0]["object"] == "model"
    status, body, _ = raw.json("GET", f"/v1/models/{MODEL}")
    assert status == 200 and body["id"] == MODEL
    status, body, _ = raw.json("GET", "/v1/models/nope")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    raw.close()


def test_chat_completion_shape_and_usage(server):
    raw = Raw(server)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me"},
                                         {"role": "system", "content": "Be brief."}]}
    status, out, resp = raw.json("POST", "/v1/chat/completions", body)
    assert status == 200
    assert resp.getheader("Content-Length") is not None
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == MODEL and isinstance(out["created"], int)
    (choice,) = out["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    text = choice["message"]["content"]
    # system first, joined with a blank line
    assert text.endswith("] Be brief.\n\nTell me")
    usage = out["usage"]
    assert usage["prompt_tokens"] == estimate_tokens("Be brief.\n\nTell me")
    assert usage["completion_tokens"] == estimate_tokens(text)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    raw.close()


def test_text_completion_shape(server):
    raw = Raw(server)
    status, out, _ = raw.json("POST", "/v1/completions", {"model": MODEL, "prompt": "1. Go"})
    assert status == 200
    assert out["object"] == "text_completion"
    assert out["choices"][0]["text"].endswith("] 1. Go")
    assert out["choices"][0]["finish_reason"] == "stop"
    raw.close()


def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


def test_deterministic_and_seeded(server):
    raw = Raw(server)
    a = raw.json("POST", "/v1/chat/completions", chat_body())[1]
    b = raw.json("POST", "/v1/chat/completions", chat_body())[1]
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    c = raw.json("POST", "/v1/chat/completions", chat_body(temperature=0.3))[1]
    assert c["choices"][0]["message"]["content"] != a["choices"][0]["message"]["content"]
    s1 = raw.json("POST", "/v1/chat/completions", chat_body(seed=5))[1]
    s2 = raw.json("POST", "/v1/chat/completions", chat_body(seed=5, temperature=1.0))[1]
    assert s1["choices"][0]["message"]["content"] == s2["choices"][0]["message"]["content"]
    raw.close()
    # a different server seed changes the request seed
    with OfflineServer(responder=echo, seed=1) as other:
        r = Raw(other)
        d = r.json("POST", "/v1/chat/completions", chat_body())[1]
        r.close()
    assert d["choices"][0]["message"]["content"] != a["choices"][0]["message"]["content"]


def test_n_choices_use_different_seeds(server):
    raw = Raw(server)
    out = raw.json("POST", "/v1/chat/completions", chat_body(n=3))[1]
    texts = [c["message"]["content"] for c in out["choices"]]
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    seeds = [int(re.match(r"\[(\d+)\]", t).group(1)) for t in texts]
    assert seeds[1] == seeds[0] + 1 and seeds[2] == seeds[0] + 2
    raw.close()


def test_max_tokens_and_stop(server):
    raw = Raw(server)
    out = raw.json("POST", "/v1/chat/completions", chat_body("x" * 100, max_tokens=3))[1]
    assert out["choices"][0]["finish_reason"] == "length"
    assert len(out["choices"][0]["message"]["content"]) == 12
    assert out["usage"]["completion_tokens"] == 3
    out = raw.json("POST", "/v1/completions",
                   {"model": MODEL, "prompt": "one\n\ntwo STOP three", "stop": ["STOP", "\n\n"]})[1]
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["choices"][0]["text"].endswith("] one")
    # stop beyond the token budget: length wins
    out = raw.json("POST", "/v1/completions",
                   {"model": MODEL, "prompt": "a" * 50 + "STOP", "stop": "STOP", "max_tokens": 2})[1]
    assert out["choices"][0]["finish_reason"] == "length"
    raw.close()


def test_list_content_parts(server):
    raw = Raw(server)
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}]}]}
    out = raw.json("POST", "/v1/chat/completions", body)[1]
    assert out["choices"][0]["message"]["content"].endswith("part one, part two")
    raw.close()


# --------------------------------------------------------------------------- errors


def test_unknown_model_404(server):
    raw = Raw(server)
    status, out, _ = raw.json("POST", "/v1/chat/completions", {**chat_body(), "model": "gpt-x"})
    assert status == 404
    err = out["error"]
    assert err["code"] == "model_not_found" and err["type"] and "gpt-x" in err["message"]
    raw.close()


def test_api_key_checked():
    with OfflineServer(responder=echo, api_key="sk-secret-123456") as srv:
        raw = Raw(srv)
        status, out, _ = raw.json("POST", "/v1/chat/completions", chat_body())
        assert status == 401 and out["error"]["code"] == "invalid_api_key"
        status, out, _ = raw.json("POST", "/v1/chat/completions", chat_body(),
                                  headers={"Authorization": "Bearer sk-wrong-key-000"})
        assert status == 401 and "sk-wrong-key-000" not in out["error"]["message"]
        status, out, _ = raw.json("GET", "/v1/models", headers={"Authorization": "Bearer nope"})
        assert status == 401
        status, out, _ = raw.json("POST", "/v1/chat/completions", chat_body(),
                                  headers={"Authorization": "Bearer sk-secret-123456"})
        assert status == 200
        raw.close()


def test_any_key_accepted_without_api_key(server):
    raw = Raw(server)
    status, _, _ = raw.json("POST", "/v1/chat/completions", chat_body(),
                            headers={"Authorization": "Bearer whatever"})
    assert status == 200
    raw.close()


def test_context_length_exceeded():
    with OfflineServer(responder=echo, context_window=50) as srv:
        raw = Raw(srv)
        status, out, _ = raw.json("POST", "/v1/completions", {"model": MODEL, "prompt": "y" * 400})
        assert status == 400 and out["error"]["code"] == "context_length_exceeded"
        status, _, _ = raw.json("POST", "/v1/completions", {"model": MODEL, "prompt": "y" * 100})
        assert status == 200
        raw.close()


def test_bad_requests(server):
    raw = Raw(server)
    resp, _ = raw.request("POST", "/v1/chat/completions", b"{not json")
    assert resp.status == 400
    status, out, _ = raw.json("POST", "/v1/chat/completions", {"messages": []})
    assert status == 400
    status, out, _ = raw.json("GET", "/v1/nothing-here")
    assert status == 404
    # the connection is still usable afterwards
    status, _, _ = raw.json("POST", "/v1/chat/completions", chat_body())
    assert status == 200
    raw.close()


def test_streaming_is_refused_plainly(server):
    raw = Raw(server)
    status, out, _ = raw.json("POST", "/v1/chat/completions", chat_body(stream=True))
    assert status == 400 and "Streaming" in out["error"]["message"]
    raw.close()


def test_responder_failure_is_a_500():
    def broken(text, request_seed):
        raise RuntimeError("boom")

    with OfflineServer(responder=broken) as srv:
        raw = Raw(srv)
        status, out, _ = raw.json("POST", "/v1/chat/completions", chat_body())
        assert status == 500 and "boom" in out["error"]["message"]
        assert srv.stats["errors"] == {"RuntimeError": 1}
        raw.close()


def test_keyword_only_responder_is_supported():
    class Model:
        def respond(self, text: str, *, request_seed: int = 0) -> str:
            return f"kw {request_seed}"

    with OfflineServer(responder=Model().respond) as srv:
        raw = Raw(srv)
        out = raw.json("POST", "/v1/completions", {"model": MODEL, "prompt": "p", "seed": 1})[1]
        assert out["choices"][0]["text"].startswith("kw ")
        raw.close()


# --------------------------------------------------------------------------- faults


def test_fault_plan_queue_and_counts():
    plan = FaultPlan()
    plan.push("429", count=2, retry_after=3).push("500")
    assert plan.pending() == 3
    kinds = [plan.next_fault() for _ in range(4)]
    assert [f.kind if f else None for f in kinds] == ["429", "429", "500", None]
    assert kinds[0].params == {"retry_after": 3}
    with pytest.raises(ValueError):
        plan.push("418")
    with pytest.raises(ValueError):
        plan.set_rates({"500": 0.7, "503": 0.6})
    assert set(FAULT_KINDS) >= {"429", "500", "503", "timeout", "slow", "length", "garbage",
                                "empty", "malformed_json", "401"}


def test_fault_plan_rates_are_seeded():
    def draw(seed):
        plan = FaultPlan().set_rates({"429": 0.2, "500": 0.1}, seed=seed)
        return [(f.kind if f else None) for f in (plan.next_fault() for _ in range(2000))]

    a, b = draw(3), draw(3)
    assert a == b
    assert 300 < a.count("429") < 500 and 120 < a.count("500") < 280
    assert draw(4) != a


def test_rate_params_shape_drawn_faults():
    plan = FaultPlan().set_rates({"slow": 1.0}, seed=1, params={"slow": {"seconds": 0.01}})
    fault = plan.next_fault()
    assert fault.kind == "slow" and fault.params == {"seconds": 0.01}
    snap = plan.apply({"rates": {"429": 0.5}, "rate_params": {"429": {"retry_after": 0}}})
    assert snap["rates"] == {"429": 0.5} and snap["rate_params"] == {"429": {"retry_after": 0}}
    with pytest.raises(ValueError):
        plan.set_rates({"429": 0.1}, params={"nope": {}})


def test_fault_plan_is_thread_safe():
    plan = FaultPlan().push("500", count=5000)
    got = []
    lock = threading.Lock()

    def take():
        mine = 0
        for _ in range(1000):
            if plan.next_fault() is not None:
                mine += 1
        with lock:
            got.append(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 5000 and plan.pending() == 0


def test_status_faults(server):
    raw = Raw(server)
    server.faults.push("429", retry_after=2).push("500").push("503").push("401")
    resp, body = raw.request("POST", "/v1/chat/completions", chat_body())
    assert resp.status == 429 and resp.getheader("Retry-After") == "2"
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    assert raw.json("POST", "/v1/chat/completions", chat_body())[0] == 500
    assert raw.json("POST", "/v1/chat/completions", chat_body())[0] == 503
    assert raw.json("POST", "/v1/chat/completions", chat_body())[0] == 401
    assert raw.json("POST", "/v1/chat/completions", chat_body())[0] == 200
    assert server.stats["by_fault"] == {"429": 1, "500": 1, "503": 1, "401": 1}
    raw.close()


def test_faults_do_not_touch_model_list_or_validation_errors(server):
    raw = Raw(server)
    server.faults.push("500")
    assert raw.json("GET", "/v1/models")[0] == 200
    assert raw.json("POST", "/v1/chat/completions", {**chat_body(), "model": "nope"})[0] == 404
    assert server.faults.pending() == 1
    assert raw.json("POST", "/v1/chat/completions", chat_body())[0] == 500
    raw.close()


def test_body_faults(server):
    raw = Raw(server)
    server.faults.push("empty").push("malformed_json").push("garbage").push("length")
    resp, body = raw.request("POST", "/v1/chat/completions", chat_body())
    assert resp.status == 200 and body == b"" and resp.getheader("Content-Length") == "0"
    resp, body = raw.request("POST", "/v1/chat/completions", chat_body())
    assert resp.status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    out = raw.json("POST", "/v1/chat/completions", chat_body("a fairly long question here"))[1]
    garbage = out["choices"][0]["message"]["content"]
    assert "a fairly long question here" not in garbage and garbage
    out = raw.json("POST", "/v1/chat/completions", chat_body("a fairly long question here"))[1]
    full = raw.json("POST", "/v1/chat/completions", chat_body("a fairly long question here"))[1]
    cut = out["choices"][0]["message"]["content"]
    assert out["choices"][0]["finish_reason"] == "length"
    assert full["choices"][0]["message"]["content"].startswith(cut) and len(cut) < len(
        full["choices"][0]["message"]["content"])
    raw.close()


def test_slow_fault_and_latency(server):
    raw = Raw(server)
    server.faults.push("slow", seconds=0.3)
    t0 = time.perf_counter()
    assert raw.json("POST", "/v1/chat/completions", chat_body())[0] == 200
    assert time.perf_counter() - t0 >= 0.28
    server.latency_s = 0.15
    t0 = time.perf_counter()
    assert raw.json("POST", "/v1/completions", {"model": MODEL, "prompt": "p"})[0] == 200
    assert time.perf_counter() - t0 >= 0.14
    t0 = time.perf_counter()
    assert raw.json("GET", "/v1/models")[0] == 200          # latency only on completions
    assert time.perf_counter() - t0 < 0.1
    raw.close()


def test_timeout_fault_with_openai_client(server):
    import asyncio

    server.faults.push("timeout", seconds=2)

    async def go():
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0,
                                      timeout=0.3) as client:
            with pytest.raises(openai.APITimeoutError):
                await client.chat.completions.create(model=MODEL, messages=[{"role": "user",
                                                                             "content": "hi"}])
            ok = await client.chat.completions.create(model=MODEL, messages=[{"role": "user",
                                                                              "content": "hi"}])
            return ok

    ok = asyncio.run(go())
    assert ok.choices[0].message.content.endswith("hi")


# --------------------------------------------------------------------------- control


def test_control_endpoint(server):
    raw = Raw(server)
    status, snap, _ = raw.json("POST", "/_control/faults", {
        "clear": True, "push": [{"kind": "429", "count": 2, "retry_after": 1}],
        "rates": {"500": 0.25}, "seed": 9, "latency_s": 0.01})
    assert status == 200
    assert snap["queue"] == [{"kind": "429", "retry_after": 1, "count": 2}]
    assert snap["rates"] == {"500": 0.25} and snap["latency_s"] == 0.01
    assert server.faults.pending() == 2 and server.latency_s == 0.01
    assert raw.json("GET", "/_control/faults")[1]["queue"][0]["count"] == 2
    assert raw.json("POST", "/v1/chat/completions", chat_body())[0] == 429
    status, stats, _ = raw.json("GET", "/_control/stats")
    assert stats["by_fault"]["429"] == 1 and stats["by_endpoint"]["chat/completions"] == 1
    status, out, _ = raw.json("POST", "/_control/faults", {"push": [{"kind": "teapot"}]})
    assert status == 400 and "teapot" in out["error"]["message"]
    raw.json("POST", "/_control/faults", {"clear": True, "latency_s": 0})
    assert server.faults.pending() == 0 and server.latency_s == 0
    raw.json("POST", "/_control/reset_stats")
    assert server.stats["by_fault"] == {}
    raw.close()


# --------------------------------------------------------------------------- HTTP behaviour


def test_keep_alive_reuses_one_connection(server):
    raw = Raw(server)
    for _ in range(20):
        resp, body = raw.request("POST", "/v1/chat/completions", chat_body())
        assert resp.status == 200 and int(resp.getheader("Content-Length")) == len(body)
        assert resp.version == 11
    assert server.stats["connections"] == 1
    raw.close()


def test_many_concurrent_requests():
    with OfflineServer(responder=echo, latency_s=0.2) as srv:
        def one(i):
            raw = Raw(srv)
            try:
                return raw.json("POST", "/v1/chat/completions", chat_body(f"q{i}"))[0]
            finally:
                raw.close()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(64) as pool:
            statuses = list(pool.map(one, range(64)))
        elapsed = time.perf_counter() - t0
        assert statuses == [200] * 64
        assert elapsed < 1.5, elapsed                  # 64 x 0.2 s serially would be 12.8 s
        assert srv.stats["max_in_flight"] > 32


def test_stop_is_prompt_with_idle_and_sleeping_connections():
    srv = OfflineServer(responder=echo).start()
    idle = Raw(srv)
    assert idle.json("GET", "/v1/models")[0] == 200      # leaves an idle keep-alive connection
    srv.faults.push("slow", seconds=30)
    slow = Raw(srv, timeout=10)

    def wait_for_answer():
        try:
            slow.request("POST", "/v1/chat/completions", chat_body())
        except (OSError, http.client.HTTPException):
            pass
        finally:
            slow.close()

    sleeper = threading.Thread(target=wait_for_answer, daemon=True)
    sleeper.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - t0 < 3
    assert not srv.running
    sleeper.join(timeout=5)
    idle.close()


def test_base_url_and_context_manager():
    srv = OfflineServer(responder=echo)
    with srv:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", srv.base_url)
        assert srv.port > 0 and srv.running
    assert not srv.running


def test_default_responder_is_demo_model():
    pytest.importorskip("selfinstruct.demo")
    with OfflineServer() as srv:
        raw = Raw(srv)
        status, out, _ = raw.json("POST", "/v1/completions", {"model": MODEL, "prompt": "hello"})
        assert status == 200 and isinstance(out["choices"][0]["text"], str)
        raw.close()


def test_serve_forever_in_a_subprocess():
    code = "import sys; from selfinstruct.offline import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--responder", "echo", "--api-key", "k1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert url, line + proc.stderr.read()
        conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=5)
        conn.request("GET", "/v1/models", headers={"Authorization": "Bearer k1"})
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# --------------------------------------------------------------------------- latency distribution


def oa_client(srv: OfflineServer, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, **kw)


def ask(client: openai.OpenAI, content: str = "hi"):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user",
                                                                  "content": content}])


def test_latency_distribution_depends_on_body_and_seed_only():
    plan = FaultPlan().set_latency_distribution(0.5, sigma=0.8, seed=1)
    bodies = [chat_body(f"question {i}") for i in range(2001)]
    first = [plan.latency_for(b) for b in bodies]
    assert [plan.latency_for(b) for b in reversed(bodies)] == first[::-1]   # order-free
    # key order of the body does not matter, the content does
    assert plan.latency_for({"messages": bodies[0]["messages"], "model": MODEL}) == first[0]
    srt = sorted(first)
    assert 0.45 < srt[1000] < 0.55                                   # median ~ median_s
    logs = [math.log(x) for x in first]
    mean = sum(logs) / len(logs)
    std = math.sqrt(sum((v - mean) ** 2 for v in logs) / len(logs))
    assert 0.72 < std < 0.88                                         # sigma of the log
    other = FaultPlan().set_latency_distribution(0.5, sigma=0.8, seed=2)
    assert [other.latency_for(b) for b in bodies[:50]] != first[:50]
    same = FaultPlan().set_latency_distribution(0.5, sigma=0.8, seed=1)
    assert [same.latency_for(b) for b in bodies[:50]] == first[:50]
    # the constant latency adds on top; max_s caps the draw; None turns it off
    plan.latency_s = 0.25
    assert plan.latency_for(bodies[0]) == pytest.approx(first[0] + 0.25)
    plan.set_latency_distribution(0.5, sigma=3.0, seed=1, max_s=0.6)
    assert max(plan.latency_for(b) for b in bodies[:200]) <= 0.25 + 0.6 + 1e-12
    plan.set_latency_distribution(None)
    assert plan.latency_for(bodies[0]) == 0.25
    with pytest.raises(ValueError):
        plan.set_latency_distribution(0, sigma=1)
    with pytest.raises(ValueError):
        plan.set_latency_distribution(1, sigma=-1)


def test_latency_distribution_over_http():
    with OfflineServer(responder=echo, latency_median_s=0.02, latency_sigma=0.5,
                       latency_seed=4) as srv:
        client = oa_client(srv)
        ask(client, "warm-up")
        srv.faults.set_latency_distribution(0.02, sigma=0.5, seed=4)
        elapsed, expected = [], []
        for i in range(15):
            content = f"timed {i}"
            expected.append(srv.faults.latency_for(chat_body(content)))
            t0 = time.perf_counter()
            ask(client, content)
            elapsed.append(time.perf_counter() - t0)
        for got, want in zip(elapsed, expected):
            assert got >= want - 0.002
        assert 0.012 < sorted(expected)[7] < 0.035
        assert 0.012 < sorted(elapsed)[7] < 0.07
        srv.faults.set_latency_distribution(None)
        t0 = time.perf_counter()
        ask(client, "fast again")
        assert time.perf_counter() - t0 < 0.05
        client.close()


def _pick_bodies(seed_a: int, seed_b: int, k: int = 4, gap: float = 0.05):
    """Bodies whose latencies are well apart under both seeds and ordered differently."""
    plans = [FaultPlan().set_latency_distribution(0.1, sigma=1.0, seed=seed, max_s=0.45)
             for seed in (seed_a, seed_b)]
    chosen: list[tuple[str, float, float]] = []
    for i in range(2000):
        content = f"race {i}"
        lat = tuple(p.latency_for(chat_body(content)) for p in plans)
        if max(lat) >= 0.44 or any(abs(lat[j] - c[1 + j]) < gap for c in chosen for j in (0, 1)):
            continue
        chosen.append((content, *lat))
        if len(chosen) == k:
            order_a = [c[0] for c in sorted(chosen, key=lambda c: c[1])]
            order_b = [c[0] for c in sorted(chosen, key=lambda c: c[2])]
            if order_a != order_b:
                return [c[0] for c in chosen], order_a, order_b
            chosen.pop()
    raise AssertionError("no suitable bodies")


def _race(latency_seed: int, contents: list[str]):
    with OfflineServer(responder=echo) as srv:
        client = oa_client(srv)
        ask(client, "warm-up")           # a connection pool that is already open
        srv.faults.set_latency_distribution(0.1, sigma=1.0, seed=latency_seed, max_s=0.45)
        finished, answers = [], {}
        lock = threading.Lock()

        def one(content):
            text = ask(client, content).choices[0].message.content
            with lock:
                finished.append(content)
                answers[content] = text

        threads = [threading.Thread(target=one, args=(c,)) for c in contents]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=5)
        client.close()
        return finished, answers


def test_latency_seed_changes_the_order_not_the_answers():
    contents, order_a, order_b = _pick_bodies(11, 12)
    fin_a, ans_a = _race(11, contents)
    fin_b, ans_b = _race(12, contents)
    assert fin_a == order_a and fin_b == order_b and fin_a != fin_b
    assert ans_a == ans_b


def test_latency_distribution_control_and_snapshot(server):
    raw = Raw(server)
    assert raw.json("GET", "/_control/faults")[1]["latency_dist"] is None
    status, snap, _ = raw.json("POST", "/_control/faults",
                               {"latency_dist": {"median_s": 1.5, "sigma": 0.8, "seed": 1}})
    assert status == 200
    assert snap["latency_dist"] == {"median_s": 1.5, "sigma": 0.8, "seed": 1, "max_s": None}
    assert server.faults.latency_distribution["median_s"] == 1.5
    # clearing faults keeps latency settings
    snap = raw.json("POST", "/_control/faults", {"clear": True})[1]
    assert snap["latency_dist"]["seed"] == 1
    snap = raw.json("POST", "/_control/faults", {"latency_dist": None})[1]
    assert snap["latency_dist"] is None and server.faults.latency_distribution is None
    for bad in ({"sigma": 1}, {"median_s": -1}, {"median_s": 1, "sigma": "x"},
                {"median_s": 1, "seed": 1.5}, {"median_s": 1, "bogus": 2}, 3):
        status, out, _ = raw.json("POST", "/_control/faults", {"latency_dist": bad})
        assert status == 400, bad
    raw.close()
    with OfflineServer(responder=echo, latency_median_s=0.3, latency_sigma=0.2,
                       latency_seed=9) as srv:
        assert srv.faults.snapshot()["latency_dist"] == {"median_s": 0.3, "sigma": 0.2,
                                                         "seed": 9, "max_s": None}


def test_latency_flags_on_the_command_line():
    from selfinstruct.offline import build_arg_parser

    args = build_arg_parser().parse_args(["--latency-median", "0.5", "--latency-sigma", "0.7",
                                          "--latency-seed", "3"])
    assert (args.latency_median, args.latency_sigma, args.latency_seed) == (0.5, 0.7, 3)
    args = build_arg_parser().parse_args([])
    assert args.latency_median is None
    code = "import sys; from selfinstruct.offline import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--responder", "echo",
         "--latency-median", "0.01", "--latency-sigma", "0.3", "--latency-seed", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert url, line + proc.stderr.read()
        conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=5)
        conn.request("GET", "/_control/faults")
        snap = json.loads(conn.getresponse().read())
        conn.close()
        assert snap["latency_dist"] == {"median_s": 0.01, "sigma": 0.3, "seed": 5, "max_s": None}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# ------------------------------------------------------------------ connection-level faults


def test_new_fault_kinds_are_known():
    assert {"hang", "trickle", "huge", "reset", "html"} <= set(FAULT_KINDS)
    plan = FaultPlan().set_rates({"html": 0.5, "reset": 0.5}, seed=1,
                                 params={"html": {}, "reset": {}})
    assert {plan.next_fault().kind for _ in range(50)} == {"html", "reset"}


def test_hang_times_out_and_stop_is_prompt():
    srv = OfflineServer(responder=echo).start()
    try:
        client = oa_client(srv, timeout=0.3)
        srv.faults.push("hang")
        t0 = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            ask(client)
        assert 0.25 < time.perf_counter() - t0 < 1.5
        # a bounded hang ends by closing the connection with no answer at all
        srv.faults.push("hang", seconds=0.1)
        with pytest.raises(openai.APIConnectionError) as info:
            ask(client.with_options(timeout=2))
        assert not isinstance(info.value, openai.APITimeoutError)
        assert ask(client).choices[0].message.content.endswith("hi")
        client.close()
        # the first hang (3600 s) still holds a handler thread; stop() must not wait for it
        srv.faults.push("hang")
        patient = oa_client(srv, timeout=30)
        errors = []

        def wait_forever():
            try:
                ask(patient)
            except openai.APIError as e:
                errors.append(e)

        thread = threading.Thread(target=wait_forever, daemon=True)
        thread.start()
        time.sleep(0.2)
        assert srv.stats["in_flight"] >= 1
    finally:
        t0 = time.perf_counter()
        srv.stop()
        stop_s = time.perf_counter() - t0
    assert stop_s < 2, stop_s
    thread.join(timeout=3)
    assert not thread.is_alive() and isinstance(errors[0], openai.APIConnectionError)
    patient.close()
    assert srv.stats["by_fault"]["hang"] == 3


def test_trickle_defeats_a_per_read_timeout_and_stop_is_prompt():
    import httpx2

    srv = OfflineServer(responder=echo).start()
    received: list[tuple[float, int]] = []
    errors: list[BaseException] = []
    try:
        srv.faults.push("trickle", interval=0.2)

        def read_slowly():
            try:
                with httpx2.Client(timeout=httpx2.Timeout(5.0, read=0.5)) as http:
                    with http.stream("POST", srv.base_url + "/chat/completions",
                                     json=chat_body(), headers={"Authorization": "Bearer x"}) as r:
                        received.append((time.perf_counter(), int(r.headers["Content-Length"])))
                        for chunk in r.iter_raw():
                            received.append((time.perf_counter(), len(chunk)))
            except BaseException as e:  # noqa: BLE001 - recorded for the assertions
                errors.append(e)

        reader = threading.Thread(target=read_slowly, daemon=True)
        t0 = time.perf_counter()
        reader.start()
        time.sleep(1.5)
        assert reader.is_alive() and not errors          # far beyond the 0.5 s read timeout
        assert received[0][1] >= 1_000_000               # a large Content-Length up front
        body_bytes = sum(n for _, n in received[1:])
        assert 4 <= body_bytes <= 9
        assert received[-1][0] - t0 > 1.0                # still receiving
    finally:
        t0 = time.perf_counter()
        srv.stop()
        stop_s = time.perf_counter() - t0
    assert stop_s < 2, stop_s
    reader.join(timeout=3)
    assert not reader.is_alive()
    assert errors and isinstance(errors[0], httpx2.HTTPError)   # an incomplete body


def test_trickle_with_openai_client_per_request_deadline():
    import asyncio

    with OfflineServer(responder=echo) as srv:
        srv.faults.push("trickle", interval=0.1)

        async def go():
            async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0,
                                          timeout=0.3) as client:
                t0 = time.perf_counter()
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.8):         # the only thing that fires
                        await client.chat.completions.create(
                            model=MODEL, messages=[{"role": "user", "content": "hi"}])
                return time.perf_counter() - t0

        assert asyncio.run(go()) >= 0.75


def test_trickle_that_finishes_is_a_valid_answer_and_one_cut_short_is_an_error(server):
    client = oa_client(server, timeout=5)
    server.faults.push("trickle", interval=0, size=0)
    assert ask(client).choices[0].message.content.endswith("] hi")
    server.faults.push("trickle", interval=0.05, seconds=0.2)
    with pytest.raises(openai.APIConnectionError):
        ask(client)
    assert ask(client).choices[0].message.content.endswith("] hi")
    client.close()


def test_huge_answer_has_the_requested_size(server):
    client = oa_client(server, timeout=10)
    server.faults.push("huge", size=123_457)
    out = ask(client, 'quote " backslash \\ newline \n accent é')
    text = out.choices[0].message.content
    assert len(text.encode("utf-8")) == 123_457
    assert text.startswith(ask(client, 'quote " backslash \\ newline \n accent é')
                           .choices[0].message.content)
    assert out.usage.completion_tokens == estimate_tokens(text)
    server.faults.push("huge")
    resp = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "big"}])
    assert int(resp.headers["Content-Length"]) > 5_000_000
    text = resp.parse().choices[0].message.content
    assert len(text.encode("utf-8")) == 5_000_000 and text.startswith("[")
    # completions endpoint and n > 1
    server.faults.push("huge", size=1000)
    out = client.completions.create(model=MODEL, prompt="p", n=2)
    assert [len(c.text.encode()) for c in out.choices] == [1000, 1000]
    client.close()


def test_reset_is_a_connection_error(server):
    import socket as _socket

    client = oa_client(server)
    server.faults.push("reset")
    with pytest.raises(openai.APIConnectionError):
        ask(client)
    assert ask(client).choices[0].message.content.endswith("hi")     # server still fine
    client.close()
    # on the wire it is a reset (RST), not an orderly close (FIN)
    server.faults.push("reset")
    payload = json.dumps(chat_body()).encode()
    with _socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        with pytest.raises(ConnectionResetError):
            while sock.recv(4096):
                pass
    assert server.stats["by_fault"]["reset"] == 2


def test_html_error_page_is_a_502(server):
    client = oa_client(server)
    server.faults.push("html")
    with pytest.raises(openai.APIStatusError) as info:
        ask(client)
    assert info.value.status_code == 502
    assert info.value.response.headers["content-type"].startswith("text/html")
    assert "<html>" in info.value.response.text and "502 Bad Gateway" in info.value.response.text
    # through the control endpoint and the rates too
    raw = Raw(server)
    raw.json("POST", "/_control/faults", {"rates": {"html": 1.0}, "seed": 1})
    resp, body = raw.request("POST", "/v1/chat/completions", chat_body())
    assert resp.status == 502 and body.startswith(b"<html>")
    raw.json("POST", "/_control/faults", {"clear": True})
    assert ask(client).choices[0].message.content.endswith("hi")
    raw.close()
    client.close()
