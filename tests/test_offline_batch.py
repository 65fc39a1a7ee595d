"""Files and Batch API of the offline server, spoken to by the real openai client over HTTP."""
from __future__ import annotations

import http.client
import json
import time

import openai
import pytest

from selfinstruct.offline import OfflineServer

MODEL = "selfinstruct-demo"
CHAT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def echo(text: str, request_seed: int) -> str:
    return f"[{request_seed}] {text}"


@pytest.fixture
def server():
    with OfflineServer(responder=echo, batch_delay_s=0.05) as srv:
        yield srv


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=5) as c:
        yield c


def chat_line(i: int, **body_extra) -> dict:
    return {"custom_id": f"req-{i}", "method": "POST", "url": CHAT,
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"question {i}"}],
                     **body_extra}}


def jsonl(items) -> bytes:
    return "".join((json.dumps(x) if not isinstance(x, str) else x) + "\n"
                   for x in items).encode("utf-8")


def upload(client, data: bytes, name: str = "input.jsonl"):
    return client.files.create(file=(name, data, "application/jsonl"), purpose="batch")


def start_batch(client, lines, endpoint: str = CHAT, **kw):
    f = upload(client, jsonl(lines))
    return client.batches.create(input_file_id=f.id, endpoint=endpoint,
                                 completion_window="24h", **kw)


def wait_done(client, batch_id: str, timeout: float = 3.0):
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in TERMINAL:
            return batch, seen
        assert time.monotonic() < deadline, f"batch stuck: {seen}"
        time.sleep(0.01)


def read_jsonl(client, file_id: str) -> list[dict]:
    text = client.files.content(file_id).text
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- files


def test_file_upload_retrieve_content_list_delete(server, client):
    data = b'{"a": "\xc3\xa9"}\r\n{"b": 2}\n\n'
    f = upload(client, data, "odd name.jsonl")
    assert f.id.startswith("file-") and f.object == "file"
    assert f.bytes == len(data) and f.filename == "odd name.jsonl" and f.purpose == "batch"
    assert isinstance(f.created_at, int)
    assert client.files.retrieve(f.id) == f
    content = client.files.content(f.id)
    assert content.content == data                       # byte for byte
    assert content.response.headers["content-type"] == "application/octet-stream"
    other = client.files.create(file=("u.txt", b"hello", "text/plain"), purpose="user_data")
    assert [x.id for x in client.files.list()] == [other.id, f.id]      # newest first
    assert [x.id for x in client.files.list(purpose="batch")] == [f.id]
    deleted = client.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(f.id)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}", "application/jsonl"), purpose="nonsense")
    assert server.stats["files_uploaded"] == 2
    assert server.stats["by_endpoint"]["files"] >= 9


def test_upload_must_be_multipart(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/v1/files", body=b'{"purpose": "batch"}',
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400 and "multipart" in json.loads(resp.read())["error"]["message"]
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}--\r\n").encode()
    conn.request("POST", "/v1/files", body=body,
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    resp = conn.getresponse()
    assert resp.status == 400 and json.loads(resp.read())["error"]["param"] == "file"
    conn.close()


# --------------------------------------------------------------------------- batches


def test_batch_happy_path_matches_synchronous_answers(server, client):
    server.batch_faults(delay_s=0.2)             # long enough to see each phase while polling
    lines = [chat_line(i) for i in range(5)]
    lines[3]["body"]["n"] = 2
    lines[4]["body"]["max_tokens"] = 2
    batch = start_batch(client, lines, metadata={"run": "r1"})
    assert batch.id.startswith("batch_") and batch.object == "batch"
    assert batch.status == "validating" and batch.endpoint == CHAT
    assert batch.completion_window == "24h" and batch.metadata == {"run": "r1"}
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert batch.output_file_id is None and batch.errors is None
    done, seen = wait_done(client, batch.id)
    assert seen[0] == "validating" and seen[-1] == "completed"
    assert "in_progress" in seen
    assert seen == [s for s in ("validating", "in_progress", "finalizing", "completed")
                    if s in seen]
    assert done.request_counts.total == 5 and done.request_counts.completed == 5
    assert done.request_counts.failed == 0
    assert done.error_file_id is None and done.output_file_id
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert isinstance(getattr(done, stamp), int)
    assert done.failed_at is None and done.cancelled_at is None and done.model == MODEL
    out_meta = client.files.retrieve(done.output_file_id)
    assert out_meta.purpose == "batch_output"
    records = read_jsonl(client, done.output_file_id)
    assert [r["custom_id"] for r in records] == [f"req-{i}" for i in range(5)]
    for record, line in zip(records, lines):
        assert record["id"].startswith("batch_req_") and record["error"] is None
        response = record["response"]
        assert response["status_code"] == 200 and response["request_id"]
        assert response["body"]["object"] == "chat.completion"
        sync = client.chat.completions.with_raw_response.create(**line["body"])
        sync_choices = json.loads(sync.http_response.text)["choices"]
        assert json.dumps(response["body"]["choices"]) == json.dumps(sync_choices)
    # batch lines bypass latency and per-request faults
    assert server.faults.pending() == 0
    listed = client.batches.list()
    assert [b.id for b in listed] == [batch.id] and listed.data[0].status == "completed"
    assert server.stats["batches_created"] == 1 and server.stats["files_uploaded"] == 1


def test_batch_ignores_latency_and_per_request_faults(server, client):
    server.latency_s = 5
    server.faults.push("500", count=3)
    batch = start_batch(client, [chat_line(i) for i in range(3)])
    t0 = time.perf_counter()
    done, _ = wait_done(client, batch.id)
    assert time.perf_counter() - t0 < 1
    assert done.status == "completed" and done.request_counts.completed == 3
    assert server.faults.pending() == 3


def test_completions_endpoint_batch(server, client):
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": f"p{i}"}} for i in range(3)]
    batch = start_batch(client, lines, endpoint="/v1/completions")
    done, _ = wait_done(client, batch.id)
    assert done.status == "completed"
    records = read_jsonl(client, done.output_file_id)
    sync = client.completions.create(model=MODEL, prompt="p1")
    assert records[1]["response"]["body"]["object"] == "text_completion"
    assert records[1]["response"]["body"]["choices"][0]["text"] == sync.choices[0].text


def test_partial_failure_with_fail_lines(server, client):
    server.batch_faults(fail_lines=2)
    lines = [chat_line(i) for i in range(5)]
    lines.append({**chat_line(5), "body": {"model": "no-such-model", "messages": [
        {"role": "user", "content": "x"}]}})
    done, _ = wait_done(client, start_batch(client, lines).id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (6, 3, 3)
    failures = read_jsonl(client, done.error_file_id)
    assert [r["custom_id"] for r in failures] == ["req-0", "req-1", "req-5"]
    for r in failures[:2]:
        assert r["error"] is None and r["response"]["status_code"] == 500
        assert r["response"]["body"]["error"]["type"] == "server_error"
    assert failures[2]["response"]["status_code"] == 404
    assert failures[2]["response"]["body"]["error"]["code"] == "model_not_found"
    assert [r["custom_id"] for r in read_jsonl(client, done.output_file_id)] == [
        "req-2", "req-3", "req-4"]
    # fail_lines was used up by that batch
    assert server.batch_control()["fail_lines"] == 0
    again, _ = wait_done(client, start_batch(client, lines[:2]).id)
    assert again.request_counts.failed == 0 and again.error_file_id is None


def test_fail_rate_is_seeded_by_custom_id(server, client):
    server.batch_faults(fail_rate=0.5, seed=3)
    lines = [chat_line(i) for i in range(20)]

    def failed_ids():
        done, _ = wait_done(client, start_batch(client, lines).id)
        assert done.request_counts.failed + done.request_counts.completed == 20
        return [r["custom_id"] for r in read_jsonl(client, done.error_file_id)]

    first = failed_ids()
    assert 3 <= len(first) <= 17
    assert failed_ids() == first                          # persistent and reproducible
    done, _ = wait_done(client, start_batch(client, lines[::-1]).id)
    assert sorted(r["custom_id"] for r in read_jsonl(client, done.error_file_id)) == sorted(first)
    server.batch_faults(seed=4)
    assert failed_ids() != first
    server.batch_faults(clear=True)
    done, _ = wait_done(client, start_batch(client, lines).id)
    assert done.request_counts.failed == 0


def test_expiry(server, client):
    server.batch_faults(expire_next=3)
    done, _ = wait_done(client, start_batch(client, [chat_line(i) for i in range(5)]).id)
    assert done.status == "expired" and isinstance(done.expired_at, int)
    assert done.completed_at is None
    assert done.request_counts.total == 5 and done.request_counts.completed == 3
    assert [r["custom_id"] for r in read_jsonl(client, done.output_file_id)] == [
        "req-0", "req-1", "req-2"]
    expired = read_jsonl(client, done.error_file_id)
    assert [r["custom_id"] for r in expired] == ["req-3", "req-4"]
    for r in expired:
        assert r["response"] is None and r["error"]["code"] == "batch_expired"
        assert r["error"]["message"] and r["id"].startswith("batch_req_")
    assert server.batch_control()["expire_next"] is None


def test_fail_next(server, client):
    server.batch_faults(fail_next=True, delay_s=0.2)
    done, seen = wait_done(client, start_batch(client, [chat_line(0)]).id)
    assert done.status == "failed" and isinstance(done.failed_at, int)
    assert "in_progress" in seen
    assert done.errors.object == "list" and done.errors.data[0].code
    assert done.errors.data[0].message
    assert done.output_file_id is None and done.error_file_id is None
    assert done.finalizing_at is None
    done, _ = wait_done(client, start_batch(client, [chat_line(0)]).id)
    assert done.status == "completed"


def test_phases_follow_the_clock(server, client):
    server.batch_faults(delay_s=1.0)
    t0 = time.monotonic()
    batch = start_batch(client, [chat_line(i) for i in range(3)])

    def status_at(offset):
        time.sleep(max(0.0, t0 + offset - time.monotonic()))
        return client.batches.retrieve(batch.id)

    assert batch.status == "validating" and batch.in_progress_at is None
    mid = status_at(0.5)
    assert mid.status == "in_progress" and isinstance(mid.in_progress_at, int)
    assert mid.request_counts.total == 3 and mid.request_counts.completed == 0
    late = status_at(0.9)
    assert late.status == "finalizing" and isinstance(late.finalizing_at, int)
    assert late.output_file_id is None and late.completed_at is None
    done = status_at(1.1)
    assert done.status == "completed" and done.output_file_id
    assert done.request_counts.completed == 3
    assert batch.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at


def test_malformed_input_file_fails_the_batch(server, client):
    good = chat_line(0)
    text = jsonl([
        good,
        "{not json",
        chat_line(0),                                            # duplicate custom_id
        {**chat_line(3), "url": "/v1/completions"},              # wrong url
        {**chat_line(4), "method": "GET"},
        {"method": "POST", "url": CHAT, "body": {}},             # no custom_id
        {"custom_id": "nobody", "method": "POST", "url": CHAT},
        "",                                                      # blank lines are fine
        chat_line(8),
    ])
    f = upload(client, text)
    batch = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    assert batch.status == "validating"                 # an accepted request, not an HTTP error
    done, _ = wait_done(client, batch.id)
    assert done.status == "failed" and isinstance(done.failed_at, int)
    assert done.in_progress_at is None and done.output_file_id is None
    errors = done.errors.data
    assert done.errors.object == "list"
    assert [e.line for e in errors] == [2, 3, 4, 5, 6, 7]
    codes = {e.line: e.code for e in errors}
    assert codes[2] == "invalid_json_line" and codes[3] == "duplicate_custom_id"
    assert codes[4] == "invalid_url" and codes[5] == "invalid_method"
    assert all(e.message for e in errors)
    empty = upload(client, b"\n\n")
    done, _ = wait_done(client, client.batches.create(
        input_file_id=empty.id, endpoint=CHAT, completion_window="24h").id)
    assert done.status == "failed" and done.errors.data[0].code == "empty_file"


def test_bad_create_requests_are_http_errors(server, client):
    f = upload(client, jsonl([chat_line(0)]))
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-missing", endpoint=CHAT,
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings",
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="1h")
    other = client.files.create(file=("u.jsonl", jsonl([chat_line(0)]), "application/jsonl"),
                                purpose="user_data")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=other.id, endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    assert server.stats["batches_created"] == 0


def test_cancel(server, client):
    server.batch_faults(delay_s=1.0)
    batch = start_batch(client, [chat_line(i) for i in range(4)])
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and isinstance(cancelling.cancelling_at, int)
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and isinstance(done.cancelled_at, int)
    assert done.completed_at is None and done.output_file_id is None
    assert done.request_counts.total == 4 and done.request_counts.completed == 0
    leftovers = read_jsonl(client, done.error_file_id)
    assert [r["error"]["code"] for r in leftovers] == ["batch_cancelled"] * 4
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    # cancelling half-way keeps the lines done so far
    server.batch_faults(delay_s=0.5)
    batch = start_batch(client, [chat_line(i) for i in range(10)])
    time.sleep(0.25)                  # validating to 0.1 s, in progress to 0.4 s: ~half done
    client.batches.cancel(batch.id)
    done, _ = wait_done(client, batch.id)
    assert done.status == "cancelled"
    assert 1 <= done.request_counts.completed <= 9
    assert len(read_jsonl(client, done.output_file_id)) == done.request_counts.completed
    # a finished batch cannot be cancelled
    server.batch_faults(delay_s=0)
    finished, _ = wait_done(client, start_batch(client, [chat_line(0)]).id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(finished.id)


def test_batch_control_endpoint(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    def call(method, body=None):
        conn.request(method, "/_control/batches", body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    status, ctl = call("GET")
    assert status == 200 and ctl == {"delay_s": 0.05, "fail_lines": 0, "fail_rate": 0.0,
                                     "seed": 0, "expire_next": None, "fail_next": False,
                                     "fail_status": 500, "leak_auth": False}
    status, ctl = call("POST", {"delay_s": 0.3, "fail_lines": 2, "fail_rate": 0.1, "seed": 5,
                                "expire_next": 4, "fail_next": True})
    assert status == 200 and ctl == {"delay_s": 0.3, "fail_lines": 2, "fail_rate": 0.1,
                                     "seed": 5, "expire_next": 4, "fail_next": True,
                                     "fail_status": 500, "leak_auth": False}
    assert server.batch_control() == ctl
    status, ctl = call("POST", {"clear": True, "fail_lines": 1})
    assert ctl["fail_lines"] == 1 and ctl["delay_s"] == 0.05 and ctl["fail_next"] is False
    for bad in ({"fail_rate": 2}, {"fail_lines": -1}, {"bogus": 1}, {"fail_next": "yes"},
                {"delay_s": "x"}, [1]):
        status, out = call("POST", bad)
        assert status == 400, bad
    conn.close()
    with pytest.raises(ValueError):
        server.batch_faults(expire_next=1.5)
    assert server.batch_faults(expire_next=None)["expire_next"] is None


def test_auth_is_checked_on_files_and_batches():
    with OfflineServer(responder=echo, api_key="sk-right-key-1234", batch_delay_s=0) as srv:
        wrong = openai.OpenAI(base_url=srv.base_url, api_key="sk-wrong", max_retries=0)
        right = openai.OpenAI(base_url=srv.base_url, api_key="sk-right-key-1234", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            upload(wrong, jsonl([chat_line(0)]))
        assert info.value.status_code == 401
        f = upload(right, jsonl([chat_line(0)]))
        for call in (lambda c: c.files.retrieve(f.id), lambda c: c.files.content(f.id),
                     lambda c: c.files.list(), lambda c: c.files.delete(f.id),
                     lambda c: c.batches.list(), lambda c: c.batches.retrieve("batch_x"),
                     lambda c: c.batches.create(input_file_id=f.id, endpoint=CHAT,
                                                completion_window="24h")):
            with pytest.raises(openai.AuthenticationError):
                call(wrong)
        done, _ = wait_done(right, start_batch(right, [chat_line(0)]).id)
        assert done.status == "completed"
        with pytest.raises(openai.AuthenticationError):
            wrong.batches.cancel(done.id)
        assert srv.stats["files_uploaded"] == 2 and srv.stats["batches_created"] == 1
        wrong.close()
        right.close()


def test_stop_is_prompt_with_a_running_batch():
    srv = OfflineServer(responder=echo, batch_delay_s=60).start()
    client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
    batch = start_batch(client, [chat_line(0)])
    assert client.batches.retrieve(batch.id).status in ("validating", "in_progress")
    t0 = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - t0 < 2
    client.close()


def test_async_client_batch_round_trip(server):
    import asyncio

    async def go():
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x",
                                      max_retries=0) as c:
            f = await c.files.create(file=("a.jsonl", jsonl([chat_line(0), chat_line(1)]),
                                           "application/jsonl"), purpose="batch")
            b = await c.batches.create(input_file_id=f.id, endpoint=CHAT,
                                       completion_window="24h")
            while b.status not in TERMINAL:
                await asyncio.sleep(0.01)
                b = await c.batches.retrieve(b.id)
            return b, (await c.files.content(b.output_file_id)).text

    batch, text = asyncio.run(go())
    assert batch.status == "completed" and len(text.splitlines()) == 2
