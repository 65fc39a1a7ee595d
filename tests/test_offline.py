"""The loopback OpenAI-compatible server, spoken to over real HTTP (http.client + openai)."""
from __future__ import annotations

import http.client
import json
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
