"""LLMClient: the real openai client over real HTTP to the loopback OfflineServer."""
from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
import urllib.request
from dataclasses import fields

import pytest

from selfinstruct.llm import (
    Completion,
    LLMClient,
    LLMConfig,
    LLMError,
    PLACEHOLDER_API_KEY,
    PriceTable,
    Sampling,
)
from selfinstruct.offline import OfflineServer, estimate_tokens
from selfinstruct.prompts import Prompt

MODEL = "selfinstruct-demo"
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05)


class Recorder:
    """A responder that remembers what it was asked."""

    def __init__(self, answer: str | None = None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, text: str, request_seed: int) -> str:
        with self.lock:
            self.calls.append((text, request_seed))
        return self.answer if self.answer is not None else f"answer to: {text}"


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def server(rec):
    with OfflineServer(responder=rec) as srv:
        yield srv


def config(srv_or_url, **kw) -> LLMConfig:
    url = srv_or_url if isinstance(srv_or_url, str) else srv_or_url.base_url
    return LLMConfig(**{"base_url": url, "model": MODEL, "api_key": "local", **FAST, **kw})


def prompt(text="Name three colours.", **kw) -> Prompt:
    return Prompt(stage="instructions", version="test-v1", text=text, **kw)


def run(coro):
    return asyncio.run(coro)


async def one(cfg: LLMConfig, p: Prompt | None = None, sampling: Sampling | None = None,
              prices: PriceTable | None = None) -> Completion:
    async with LLMClient(cfg, prices) as client:
        return await client.complete(p or prompt(), sampling or Sampling())


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------- modes


def test_chat_mode(server, rec):
    p = prompt("List tasks.", system="You write tasks.")
    c = run(one(config(server), p))
    assert c.ok and c.error is None and c.error_kind is None
    assert rec.calls[0][0] == "You write tasks.\n\nList tasks." == p.full_text()
    assert c.text == "answer to: " + p.full_text()
    assert c.finish_reason == "stop" and c.attempts == 1 and c.model == MODEL
    assert c.prompt_tokens == estimate_tokens(p.full_text())
    assert c.completion_tokens == estimate_tokens(c.text)
    assert c.latency_s > 0


def test_completion_mode_uses_prompt_stop(server, rec):
    rec.answer = "1. first\n2. second\n\n3. third"
    p = prompt("Continue:", stop=("\n\n",))
    c = run(one(config(server, mode="completion"), p, Sampling(stop=("second",))))
    assert rec.calls[0][0] == "Continue:"
    assert c.text == "1. first\n2. second" and c.finish_reason == "stop"
    # without a prompt stop the sampling stop is used
    c = run(one(config(server, mode="completions"), prompt("Continue:"), Sampling(stop=("second",))))
    assert c.text == "1. first\n2. " and c.finish_reason == "stop"


def test_chat_mode_stop_and_max_tokens(server, rec):
    rec.answer = "alpha beta STOP gamma"
    c = run(one(config(server), sampling=Sampling(stop=["STOP"])))
    assert c.text == "alpha beta " and c.finish_reason == "stop"
    rec.answer = "x" * 400
    c = run(one(config(server), sampling=Sampling(max_tokens=5)))
    assert c.finish_reason == "length" and c.completion_tokens == 5 and len(c.text) == 20


def test_usage_and_cost(server):
    prices = PriceTable().with_price(MODEL, 1.0, 2.0)
    c = run(one(config(server), prices=prices))
    assert c.cost_usd == pytest.approx((c.prompt_tokens * 1.0 + c.completion_tokens * 2.0) / 1e6)
    assert c.cost_usd > 0
    c = run(one(config(server)))            # default table: the demo model is free
    assert c.cost_usd == 0.0


# --------------------------------------------------------------------------- transient faults


def test_429_then_success_honours_retry_after(server):
    server.faults.push("429", count=1, retry_after=0.6)
    t0 = time.perf_counter()
    c = run(one(config(server, backoff_base_s=0.0, backoff_max_s=5)))
    elapsed = time.perf_counter() - t0
    assert c.ok and c.attempts == 2
    assert 0.55 <= elapsed < 2.0, elapsed
    assert server.stats["by_status"]["429"] == 1


def test_retry_after_is_capped_by_backoff_max(server):
    server.faults.push("429", count=1, retry_after=30)
    t0 = time.perf_counter()
    c = run(one(config(server, backoff_max_s=0.1)))
    assert c.ok and c.attempts == 2 and time.perf_counter() - t0 < 2


def test_500s_retried_then_success(server):
    server.faults.push("500", count=2).push("503")
    c = run(one(config(server, max_retries=5)))
    assert c.ok and c.attempts == 4


def test_500s_forever_return_an_error(server):
    server.faults.push("500", count=100)
    c = run(one(config(server, max_retries=3)))
    assert not c.ok and c.text == "" and c.finish_reason is None
    assert c.error_kind == "server" and c.attempts == 4
    assert server.base_url in c.error and "500" in c.error


def test_429s_are_not_retries_and_only_the_patience_ends_them(server):
    # More 429s than retries, then an answer: a 429 is the provider asking to wait, not a failure.
    server.faults.push("429", count=6, retry_after=0)
    c = run(one(config(server, max_retries=2)))
    assert c.ok and c.attempts == 7
    # Nothing but 429s for longer than the patience: a fatal rate_limit error that says so.
    server.faults.push("429", count=10_000, retry_after=0.05)
    with pytest.raises(LLMError) as err:
        run(one(config(server, max_retries=2, rate_limit_patience_s=0.5)))
    assert err.value.kind == "rate_limit" and "rate limited for 0.5 seconds" in err.value.message


def test_timeouts_retried_then_success(server):
    server.faults.push("slow", seconds=1.0)
    c = run(one(config(server, timeout_s=0.3)))
    assert c.ok and c.attempts == 2


def test_timeouts_forever_reported(server):
    server.faults.push("timeout", count=10, seconds=1.0)
    t0 = time.perf_counter()
    c = run(one(config(server, timeout_s=0.25, max_retries=1)))
    assert c.error_kind == "timeout" and c.attempts == 2
    assert "0.25 s" in c.error
    assert time.perf_counter() - t0 < 1.5


def test_empty_and_malformed_are_retried(server):
    server.faults.push("empty").push("malformed_json")
    c = run(one(config(server)))
    assert c.ok and c.attempts == 3
    server.faults.clear().push("malformed_json", count=10)
    c = run(one(config(server, max_retries=2)))
    assert c.error_kind == "bad_response" and c.attempts == 3
    server.faults.clear().push("empty", count=10)
    c = run(one(config(server, max_retries=1)))
    assert c.error_kind == "bad_response" and "readable completion" in c.error


def test_garbage_comes_back_as_text(server, rec):
    server.faults.push("garbage")
    c = run(one(config(server)))
    assert c.ok and c.attempts == 1 and c.text and not c.text.startswith("answer to:")


def test_length_fault(server):
    server.faults.push("length")
    c = run(one(config(server)))
    assert c.ok and c.finish_reason == "length"


# --------------------------------------------------------------------------- fatal errors


def test_wrong_key_is_auth_error():
    with OfflineServer(responder=Recorder(), api_key="sk-good-key-42") as srv:
        with pytest.raises(LLMError) as ei:
            run(one(config(srv, api_key="sk-bad-key-99")))
        err = ei.value
        assert err.kind == "auth" and err.fatal
        assert "rejected the API key (401)" in err.message and srv.base_url in err.message
        assert "sk-bad-key-99" not in err.message and "sk-good-key-42" not in err.message
        assert srv.stats["by_endpoint"]["chat/completions"] == 1          # not retried
        c = run(one(config(srv, api_key="sk-good-key-42")))
        assert c.ok


def test_no_key_sends_the_placeholder_never_the_environments(monkeypatch):
    # The environment's key is Backend's decision (tests/test_keys.py), never the client's own.
    with OfflineServer(responder=Recorder(), api_key="sk-env-key-77") as srv:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key-77")
        assert run(one(config(srv, api_key="sk-env-key-77"))).ok
        cfg = config(srv, api_key=None)
        assert cfg.api_key_source() == "placeholder"
        assert cfg.resolved_api_key() == PLACEHOLDER_API_KEY
        with pytest.raises(LLMError) as ei:
            run(one(cfg))
        assert ei.value.kind == "auth" and PLACEHOLDER_API_KEY in ei.value.message


def test_unknown_model(server):
    with pytest.raises(LLMError) as ei:
        run(one(config(server, model="gpt-nope")))
    assert ei.value.kind == "model_not_found"
    assert ei.value.message == (f"No model named 'gpt-nope' at {server.base_url}; "
                                f"models there: {MODEL}.")
    with pytest.raises(LLMError) as ei:
        LLMClient(config(server, model="gpt-nope")).check_sync()
    assert ei.value.kind == "model_not_found"


def test_unreachable():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.perf_counter()
    with pytest.raises(LLMError) as ei:
        run(one(config(url, max_retries=2)))
    assert ei.value.kind == "unreachable"
    assert ei.value.message.startswith(f"Could not reach {url}: connection refused.")
    assert time.perf_counter() - t0 < 3
    with pytest.raises(LLMError) as ei:
        LLMClient(config(url)).check_sync()
    assert ei.value.kind == "unreachable"


def test_unreachable_blip_is_retried():
    port = free_port()
    box = {}

    def start_later():
        time.sleep(0.3)
        box["srv"] = OfflineServer(port=port, responder=Recorder()).start()

    t = threading.Thread(target=start_later)
    t.start()
    try:
        cfg = config(f"http://127.0.0.1:{port}/v1", max_retries=10, backoff_base_s=0.1,
                     backoff_max_s=0.4)

        async def go():
            async with LLMClient(cfg, rng=random.Random(7)) as client:
                return await client.complete(prompt())

        c = run(go())
        assert c.ok and c.attempts > 1
    finally:
        t.join()
        box["srv"].stop()


def test_context_too_long():
    with OfflineServer(responder=Recorder(), context_window=100) as srv:
        with pytest.raises(LLMError) as ei:
            run(one(config(srv), prompt("word " * 200)))
        assert ei.value.kind == "context_length"
        assert "too long" in ei.value.message and srv.stats["by_endpoint"]["chat/completions"] == 1


def test_wrong_base_url_path(server):
    url = server.base_url[: -len("/v1")]
    with pytest.raises(LLMError) as ei:
        LLMClient(config(url)).check_sync()
    assert ei.value.kind == "bad_request" and "/v1" in ei.value.message


# --------------------------------------------------------------------------- concurrency


def test_complete_many_is_bounded_ordered_and_reports_each():
    with OfflineServer(responder=Recorder(), latency_s=0.1) as srv:
        seen = []
        prompts = [prompt(f"task {i}") for i in range(30)]
        cfg = config(srv, concurrency=5)

        async def go():
            async with LLMClient(cfg) as client:
                return await client.complete_many(prompts, Sampling(),
                                                  on_result=lambda i, c: seen.append(i))

        results = run(go())
        assert [r.text for r in results] == [f"answer to: task {i}" for i in range(30)]
        assert sorted(seen) == list(range(30))
        assert srv.stats["max_in_flight"] <= 5
        assert srv.stats["max_in_flight"] == 5


def test_complete_many_is_actually_concurrent():
    with OfflineServer(responder=Recorder(), latency_s=0.2) as srv:
        cfg = config(srv, concurrency=10)

        async def go():
            async with LLMClient(cfg) as client:
                await client.list_models()           # warm-up outside the timing
                t0 = time.perf_counter()
                out = await client.complete_many([prompt(f"p{i}") for i in range(20)])
                return out, time.perf_counter() - t0

        results, elapsed = run(go())
        assert all(r.ok for r in results)
        assert 0.39 <= elapsed < 1.0, elapsed           # ~0.4 s, not 4 s


def test_complete_many_async_callback_and_transient_errors(server):
    server.faults.push("500", count=3)
    got = {}

    async def on_result(i, c):
        await asyncio.sleep(0)
        got[i] = c

    async def go():
        async with LLMClient(config(server, concurrency=3, max_retries=0)) as client:
            return await client.complete_many([prompt(f"p{i}") for i in range(8)],
                                              on_result=on_result)

    results = run(go())
    assert len(results) == 8 and len(got) == 8
    assert sum(1 for r in results if r.error_kind == "server") == 3
    assert sum(1 for r in results if r.ok) == 5


def test_complete_many_survives_random_faults(server):
    server.faults.set_rates({"429": 0.15, "500": 0.1, "503": 0.05, "empty": 0.05,
                             "malformed_json": 0.05}, seed=11,
                            params={"429": {"retry_after": 0.01}})

    async def go():
        async with LLMClient(config(server, concurrency=8, max_retries=8)) as client:
            return await client.complete_many([prompt(f"p{i}") for i in range(60)])

    results = run(go())
    assert all(r.ok for r in results)
    assert [r.text for r in results] == [f"answer to: p{i}" for i in range(60)]
    assert sum(r.attempts for r in results) > 60
    assert sum(server.stats["by_fault"].values()) == sum(r.attempts for r in results) - 60


def test_complete_many_fatal_error_cancels_the_rest():
    with OfflineServer(responder=Recorder(), api_key="right", latency_s=0.05) as srv:
        async def go():
            async with LLMClient(config(srv, api_key="wrong", concurrency=2)) as client:
                return await client.complete_many([prompt(f"p{i}") for i in range(40)])

        with pytest.raises(LLMError) as ei:
            run(go())
        assert ei.value.kind == "auth"
        time.sleep(0.1)
        assert srv.stats["by_endpoint"]["chat/completions"] <= 4


def test_complete_many_empty():
    client = LLMClient(config("http://127.0.0.1:9/v1"))
    assert run(client.complete_many([])) == []


# --------------------------------------------------------------------------- models, check, loops


def test_list_models_and_check(server):
    client = LLMClient(config(server))
    assert client.list_models_sync() == [MODEL]
    msg = client.check_sync()
    assert msg.startswith(f"Connected to {server.base_url}") and MODEL in msg


def test_sync_wrappers_work_inside_a_running_loop(server):
    async def go():
        return LLMClient(config(server)).check_sync()

    assert "Connected" in run(go())


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_one_client_across_event_loops(server):
    client = LLMClient(config(server))
    for i in range(3):                      # the pipeline calls asyncio.run per step
        c = run(client.complete(prompt()))
        assert c.ok
        # asyncio.run closed the pool when its loop ended, though nobody called aclose()
        assert wait_for(lambda: server.stats["open_connections"] == 0)
        assert server.stats["connections"] == i + 1
    run(client.aclose())
    client.close()


def test_explicit_aclose_and_reuse(server):
    async def go():
        client = LLMClient(config(server))
        assert (await client.complete(prompt())).ok
        await client.aclose()
        assert wait_for(lambda: server.stats["open_connections"] == 0)
        assert (await client.complete(prompt())).ok     # rebuilt on demand
        await client.aclose()

    run(go())


def test_control_endpoint_from_another_process_view(server):
    body = json.dumps({"push": [{"kind": "429", "count": 2, "retry_after": 0.05}]}).encode()
    root = server.base_url[: -len("/v1")]
    req = urllib.request.Request(root + "/_control/faults", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read())["queue"][0]["count"] == 2
    c = run(one(config(server)))
    assert c.ok and c.attempts == 3
    with urllib.request.urlopen(root + "/_control/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    assert stats["by_fault"] == {"429": 2} and stats["by_status"]["429"] == 2


# --------------------------------------------------------------------------- config and prices


def test_api_key_never_in_public_dict_or_repr():
    cfg = LLMConfig(base_url="http://h/v1/", model="m", api_key="sk-top-secret-xyz")
    d = cfg.public_dict()
    assert "api_key" not in d and "sk-top-secret-xyz" not in json.dumps(d)
    assert set(d) == {f.name for f in fields(LLMConfig)} - {"api_key"}
    assert "sk-top-secret-xyz" not in repr(cfg) and "sk-top-secret-xyz" not in str(cfg)
    assert "sk-top-secret-xyz" not in repr(LLMClient(cfg))
    assert d["base_url"] == "http://h/v1"
    again = LLMConfig(**d, api_key="other")
    assert again.public_dict() == d
    assert LLMConfig.from_public_dict({**d, "extra": 1}).public_dict() == d


def test_config_validation():
    with pytest.raises(ValueError):
        LLMConfig(base_url="http://h/v1", model="m", mode="edit")
    with pytest.raises(ValueError):
        LLMConfig(base_url="http://h/v1", model="m", concurrency=0)
    assert LLMConfig(base_url="http://h/v1", model="m", mode="completions").mode == "completion"


def test_sampling_defaults_and_dict():
    s = Sampling()
    assert s.to_dict() == {"temperature": 0.7, "top_p": 0.5, "max_tokens": 1024,
                           "presence_penalty": 2.0, "frequency_penalty": 0.0, "stop": None}
    s = Sampling(stop=["\n\n", "16."])
    assert s.stop == ("\n\n", "16.") and s.to_dict()["stop"] == ["\n\n", "16."]
    assert Sampling.from_dict(s.to_dict()) == s


def test_price_table(tmp_path):
    table = PriceTable.default()
    assert table.cost("selfinstruct-demo", 1000, 1000) == 0.0
    assert table.cost("no-such-model", 10, 10) == 0.0
    inp, out = table.get("gpt-4o-mini")
    assert table.cost("gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000) == pytest.approx(inp + out)
    t2 = table.with_price("local-llama", 0.1, 0.2)
    assert "local-llama" in t2 and "local-llama" not in table
    assert t2.cost("local-llama", 2_000_000, 1_000_000) == pytest.approx(0.4)
    path = tmp_path / "prices.json"
    t2.to_json(path)
    again = PriceTable.from_json(path)
    assert again.to_dict() == t2.to_dict()
    assert PriceTable.from_json({"m": [1, 2]}).get("m") == (1.0, 2.0)
    assert PriceTable.from_json({"prices": {"m": {"input_per_m": 3, "output_per_m": 4}}}).get("m") == (3.0, 4.0)
    with pytest.raises(ValueError):
        PriceTable.from_json({"m": "cheap"})
    with pytest.raises(ValueError):
        PriceTable.from_json({"m": [-1, 2]})
