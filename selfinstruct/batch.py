"""Batch mode: a run's requests go to a batch engine instead of C live slots.

* `run_batches` sends every ready request to the provider's Batch API (OpenAI's format: a JSONL
  of ``{custom_id, method, url, body}`` uploaded to ``/v1/files``, then ``/v1/batches`` with
  ``completion_window`` 24h) through the `openai` client, polls the open batches, and applies
  each answer with the same engine as live runs. A round's three stages depend on each other
  (instructions, then classification, then instances), so every batch carries whatever is
  ready across rounds, and a round can take up to three batch windows.
* Every batch is stored (a row in ``batches``, its requests marked) before it is created at
  the provider, and tagged with that row's id in its metadata: a killed process resumes
  polling the same batches, and never pays twice for a batch whose id it did not get to store.
* Lines that fail or expire are sent again in a later batch; a request that fails three
  times, or three failed batches in a row, fail the run with the provider's reason.
* `write_batch_file` / `read_batch_file` do the same with files, for `vllm run-batch`.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import openai
from .decisions import stored_prompt
from .engine import MAX_FAILURES_PER_REQUEST, RunState
from .control import Interrupted, RunFailed
from .llm import (AdaptiveLimit, LLMClient, LLMConfig, LLMError, PriceTable, _server_message, endpoint_path,
                  is_rate_limit, rate_limit_patience_error, request_body)
from .model import CREATED, FAILED, FINISHED, PAUSED
from .redact import redact
from .store import Pool

CUSTOM_ID_PREFIX = "selfinstruct-"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
MAX_BATCH_REQUESTS = 50_000          # the OpenAI Batch API's limit per batch
FAILED_BATCHES_LIMIT = 3
ADOPT_SEARCH_LIMIT = 2_000          # batches looked through for one whose id was not stored


def custom_id(request_id: int) -> str:
    return f"{CUSTOM_ID_PREFIX}{request_id}"


def request_id_of(custom: str) -> int | None:
    if isinstance(custom, str) and custom.startswith(CUSTOM_ID_PREFIX):
        tail = custom[len(CUSTOM_ID_PREFIX):]
        if tail.isdigit():
            return int(tail)
    return None


def batch_lines(state: RunState, rows: list[dict], config: LLMConfig) -> bytes:
    url = endpoint_path(config)
    return b"".join(
        json.dumps({"custom_id": custom_id(row["id"]), "method": "POST", "url": url,
                    "body": request_body(config, stored_prompt(row), state.row_sampling(row))},
                   ensure_ascii=False).encode("utf-8") + b"\n"
        for row in rows)


def _llm_config(state: RunState, backend) -> LLMConfig:
    cfg = state.cfg
    return backend.llm_config(model=cfg.model, mode=cfg.mode, concurrency=cfg.concurrency,
                              timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                              max_answer_bytes=cfg.max_answer_bytes, rate_limit_patience_s=cfg.rate_limit_patience_s)


class _Lines:
    """Applies a batch's result lines to the run."""

    def __init__(self, state: RunState, reader: LLMClient) -> None:
        self.state, self.reader = state, reader
        self.answered = self.failed = self.ignored = self.limited = 0
        self.fatal: RunFailed | None = None   # raised by `check` once every line is applied

    def apply(self, line: dict) -> None:
        request_id = request_id_of(line.get("custom_id"))
        row = self.state.open.get(request_id) if request_id is not None else None
        if row is None or row.get("response") is not None:
            self.ignored += 1          # not ours, or already answered (a duplicate line)
            return
        response = line.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")
        if line.get("error") or status != 200:
            error = line.get("error") or (body.get("error") if isinstance(body, dict) else body) or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            if is_rate_limit(status, code):
                self.rate_limited(row)
                return
            self.fail(row, f"The batch line failed ({status or code or 'no answer'}): {message or 'no reason given'}",
                      "rate_limit" if status == 429 else "server")
            return
        try:
            completion = self.reader.completion_from_body(body, stored_prompt(row))
        except LLMError as exc:
            self.fail(row, exc.message, "bad_response")
            return
        completion.latency_s = 0.0
        if self.state.pacer is not None:
            self.state.pacer.after_attempt(None, time.monotonic())
        self.state.on_completion(row, completion)
        self.answered += 1

    def rate_limited(self, row: dict) -> None:
        """A line the provider answered 429: the provider asks us to slow down, so the request
        goes into a later batch after a growing back-off and is not counted as a failure; only
        the rate-limit patience of nothing but 429s ends the run (`llm.is_rate_limit`)."""
        state, config = self.state, self.reader.config
        pacer = state.pacer
        row["batch_id"] = None
        self.limited += 1
        if pacer is not None:
            pacer.after_attempt("rate_limit", time.monotonic())
            if pacer.rate_limited_for() >= config.rate_limit_patience_s:
                raise rate_limit_patience_error(config.base_url, config.rate_limit_patience_s)
        streak = row["rate_limited"] = row.get("rate_limited", 0) + 1
        delay = min(config.backoff_max_s, config.backoff_base_s * 2 ** min(streak, 30))
        if pacer is not None:
            pacer.note_wait(delay)
        state._cooling[row["id"]] = time.monotonic() + delay

    def fail(self, row: dict, message: str, kind: str) -> None:
        state = self.state
        message = redact(message)     # a batch line's error is the endpoint's text
        state.pool.requests.record_failure(row["id"], error=message, error_kind=kind, attempts=1)
        row["failures"] = row.get("failures", 0) + 1
        row["batch_id"] = None
        state.failures += 1
        state.last_error = (kind, message)
        self.failed += 1
        if row["failures"] >= MAX_FAILURES_PER_REQUEST:
            # Not raised here: the lines after this one are answers already paid for, to be applied.
            self.fatal = self.fatal or RunFailed(kind, f"A request failed in {row['failures']} batches: {message}")
            return
        state._push_ready(row)

    def check(self) -> None:
        """The run fails here if a request failed too often (after the whole file is applied)."""
        if self.fatal is not None:
            raise self.fatal


async def run_batches(state: RunState, backend, control, prices: PriceTable) -> str:
    """Drive the run through the provider's Batch API until it is over; returns the stop
    reason. Pause and stop only stop the polling: submitted batches go on at the provider
    and are collected when the run resumes."""
    cfg, pool = state.cfg, state.pool
    config = _llm_config(state, backend)
    client = backend.openai_client(config, max_answer_bytes=None)
    # The pacer here only keeps the clock of 429s (lines and calls) for the rate-limit patience.
    state.pacer = AdaptiveLimit(cfg.concurrency)
    reader = LLMClient(config, prices=prices, pacer=state.pacer)
    failed_batches = 0
    try:
        await _adopt_unconfirmed(state, client)
        await _recollect_stranded(state, client, reader)
        next_poll = 0.0
        while True:
            if control.requested:
                raise Interrupted()
            state.plan()
            rows = [] if state.budget_spent() else state.ready_rows()
            for start in range(0, len(rows), MAX_BATCH_REQUESTS):
                await _submit(state, client, config, rows[start:start + MAX_BATCH_REQUESTS], reader)
            open_batches = [b for b in pool.requests.batches(state.run_id, open_only=True) if b["kind"] == "api"]
            if not open_batches:
                if state.budget_spent() or state.finished():
                    return state.stop_reason() or state.planning_stopped or "finished"
                wait = state.cooling_wait()
                await asyncio.sleep(min(0.2, wait) if wait is not None else 0.2)
                continue
            if time.monotonic() >= next_poll:
                for local in open_batches:
                    remote = await reader.api_call(lambda: client.batches.retrieve(local["remote_id"]))
                    # An ended batch is marked so by `_collect` once its answers are applied: a
                    # collect cut short (a crash, a failed run) leaves it open, to be read again.
                    if remote.status != local["status"] and remote.status not in TERMINAL:
                        pool.requests.update_batch(local["id"], status=remote.status)
                    if remote.status in TERMINAL:
                        ok = await _collect(state, client, reader, local, remote)
                        failed_batches = 0 if ok else failed_batches + 1
                        if failed_batches >= FAILED_BATCHES_LIMIT:
                            raise RunFailed("batch", f"{failed_batches} batches in a row failed at the "
                                                     f"provider; the last said: {_batch_errors(remote)}")
                next_poll = time.monotonic() + cfg.batch_poll_s
            await asyncio.sleep(0.2)
    except openai.APIStatusError as exc:      # the openai client's own retries ran out
        raise _batch_api_error(config, exc) from None
    except openai.APIConnectionError as exc:
        failure = reader._connection_failure(exc)
        raise LLMError(failure.kind, failure.message or f"The Batch API at {config.base_url} could not be "
                       f"reached ({failure.detail}).") from None
    finally:
        await client.close()
        await reader.aclose()


def _batch_api_error(config: LLMConfig, exc: openai.APIStatusError) -> LLMError:
    status = exc.status_code
    said = _server_message(exc) or "no reason given"
    if status in (401, 403):
        return LLMError("auth", f"The Batch API at {config.base_url} rejected the API key ({status}): {said}",
                        status=status)
    if status == 429:
        return LLMError("rate_limit", f"The Batch API at {config.base_url} is rate-limiting (429): {said}",
                        status=status)
    if status in (400, 404, 405, 422):
        return LLMError("bad_request", f"The Batch API at {config.base_url} refused a call ({status}): {said}. "
                        f"Does this endpoint offer /v1/files and /v1/batches?", status=status)
    return LLMError("server", f"The Batch API at {config.base_url} kept failing ({status}): {said}",
                    status=status)


async def _submit(state: RunState, client, config: LLMConfig, rows: list[dict], reader: LLMClient) -> None:
    pool = state.pool
    endpoint = endpoint_path(config)
    ids = [row["id"] for row in rows]
    local_id = pool.requests.add_batch(state.run_id, "api", ids, endpoint=endpoint, status="uploading")
    for row in rows:
        row["batch_id"] = local_id
    data = batch_lines(state, rows, config)
    name = f"selfinstruct-run{state.run_id}-batch{local_id}.jsonl"
    upload = await reader.api_call(lambda: client.files.create(file=(name, data, "application/jsonl"),
                                                               purpose="batch"))
    pool.requests.update_batch(local_id, input_file_id=upload.id)
    remote = await reader.api_call(lambda: client.batches.create(
        input_file_id=upload.id, endpoint=endpoint, completion_window=state.cfg.batch_window,
        metadata={"selfinstruct_batch": str(local_id), "selfinstruct_run": str(state.run_id)}))
    pool.requests.update_batch(local_id, remote_id=remote.id, status=remote.status)
    state.emit("batch", message=f"Batch {local_id}: {len(rows)} request(s) submitted as {remote.id}.")


async def _adopt_unconfirmed(state: RunState, client) -> None:
    """A batch stored but whose provider id was not: find it by its metadata, or send its
    requests again (it was never created)."""
    pool = state.pool
    for local in pool.requests.batches(state.run_id, open_only=True):
        if local["kind"] != "api" or local["remote_id"]:
            continue
        found = None
        if local["input_file_id"]:       # without it, the create call was never made
            # The local id alone is not unique across pools sharing an account: the uploaded
            # file's id (stored before the batch was created) is.
            seen = 0
            async for remote in client.batches.list(limit=100):   # newest first, every page
                if ((remote.metadata or {}).get("selfinstruct_batch") == str(local["id"])
                        and remote.input_file_id == local["input_file_id"]):
                    found = remote
                    break
                seen += 1
                if seen >= ADOPT_SEARCH_LIMIT:
                    break
        if found is not None:
            pool.requests.update_batch(local["id"], remote_id=found.id, status=found.status)
        else:
            pool.requests.update_batch(local["id"], status="cancelled", error="never created at the provider")
            _release(state, local["id"])


async def _recollect_stranded(state: RunState, client, reader: LLMClient) -> None:
    """Requests still marked with a batch that has ended (a collect cut short by an older version,
    which marked the batch ended before applying its answers) would never be sent again: read the
    batch's files again (those answers were paid for), then send the rest again."""
    open_ids = {b["id"] for b in state.pool.requests.batches(state.run_id, open_only=True)}
    stranded = {row["batch_id"] for row in state.open.values()
                if row.get("batch_id") is not None and row.get("response") is None} - open_ids
    for local in state.pool.requests.batches(state.run_id):
        if local["id"] not in stranded:
            continue
        if local["kind"] == "api" and local["remote_id"]:
            remote = await reader.api_call(lambda: client.batches.retrieve(local["remote_id"]))
            if remote.status in TERMINAL:
                await _collect(state, client, reader, local, remote)
                continue
        _release(state, local["id"])


def _release(state: RunState, batch_id: int) -> int:
    released = state.pool.requests.release_batch_requests(batch_id)
    for row in state.open.values():
        if row.get("batch_id") == batch_id and row.get("response") is None:
            row["batch_id"] = None
            state._push_ready(row)
    return released


async def _collect(state: RunState, client, reader: LLMClient, local: dict, remote) -> bool:
    """Apply a finished batch's answers; send its unanswered requests again. True when the
    batch itself did not fail."""
    lines = _Lines(state, reader)
    for file_id in (remote.output_file_id, remote.error_file_id):
        if not file_id:
            continue
        async with client.files.with_streaming_response.content(file_id) as response:
            async for text in response.iter_lines():
                if text.strip():
                    try:
                        line = json.loads(text)
                    except ValueError:
                        lines.ignored += 1
                        continue
                    lines.apply(line)
    released = _release(state, local["id"])
    state.pool.requests.update_batch(local["id"], status=remote.status, output_file_id=remote.output_file_id,
                            error_file_id=remote.error_file_id,
                            error=_batch_errors(remote) if remote.status == "failed" else None)
    state.emit("batch", message=(f"Batch {local['id']} {remote.status}: {lines.answered} answered, "
                                 f"{lines.failed + released} to send again."))
    lines.check()
    return remote.status != "failed"


def _batch_errors(remote) -> str:
    errors = getattr(remote, "errors", None)
    data = getattr(errors, "data", None) or []
    return redact("; ".join(f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}" for e in data[:3])
                  or remote.status)


# -- files for offline batch engines (vllm run-batch) ------------------------------------------------
def write_batch_file(pool: Pool, run_id: int, path: str | Path) -> int:
    """Write the run's ready requests as an OpenAI batch input file; returns how many.
    Requests written to an earlier file and never read back are written again."""
    from .backend import Backend
    from .settings import RunConfig

    run = pool.runs.get(run_id)
    if run is None:
        raise ValueError(f"There is no run {run_id}.")
    cfg = RunConfig.from_dict(run["config"])
    state = RunState(pool, run_id, cfg)
    for local in pool.requests.batches(run_id, open_only=True):
        if local["kind"] == "file":
            pool.requests.update_batch(local["id"], status="cancelled", error="superseded by a newer file")
            _release(state, local["id"])
    state.plan()
    rows = state.ready_rows()
    if not rows:
        return 0
    config = Backend(kind="openai-compatible", base_url="http://vllm.invalid/v1").llm_config(
        model=cfg.model, mode=cfg.mode, max_answer_bytes=cfg.max_answer_bytes)
    Path(path).write_bytes(batch_lines(state, rows, config))
    pool.requests.add_batch(run_id, "file", [row["id"] for row in rows], input_file_id=str(path),
                   endpoint=endpoint_path(config), status="written")
    if pool.runs.get(run_id)["status"] in {CREATED, FINISHED}:
        pool.runs.set_status(run_id, PAUSED, stop_reason="batch file written")
    return len(rows)


@dataclass
class ReadReport:
    run_id: int
    answered: int
    failed: int
    ignored: int
    ready: int
    status: str


def read_batch_file(pool: Pool, path: str | Path, *, run_id: int | None = None) -> ReadReport:
    """Apply a batch output file (from `vllm run-batch` or a provider) to its run."""
    from .settings import RunConfig

    parsed = []
    for number, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            raise ValueError(f"{path}: line {number} is not JSON.") from None
        if not isinstance(line, dict) or request_id_of(line.get("custom_id")) is None:
            raise ValueError(f"{path}: line {number} has no selfinstruct custom_id "
                             f"(expected \"{CUSTOM_ID_PREFIX}<number>\").")
        parsed.append(line)
    if run_id is None:
        ids = [request_id_of(line["custom_id"]) for line in parsed]
        found = pool.cursor().execute(
            "SELECT DISTINCT run_id FROM requests WHERE id IN (SELECT unnest(?))", [ids]).fetchall()
        if len(found) != 1:
            raise ValueError(f"{path}: its lines belong to {len(found)} runs; name one with --run.")
        run_id = found[0][0]
    run = pool.runs.get(run_id)
    if run is None:
        raise ValueError(f"There is no run {run_id}.")
    cfg = RunConfig.from_dict(run["config"])
    state = RunState(pool, run_id, cfg)
    config = LLMConfig(base_url="http://vllm.invalid/v1", model=cfg.model, mode=cfg.mode)
    lines = _Lines(state, LLMClient(config, prices=cfg.price_table()))
    try:
        for line in parsed:
            lines.apply(line)
        lines.check()
    except RunFailed as exc:
        pool.runs.set_status(run_id, FAILED, stop_reason=exc.kind, error=exc.message)
        raise
    for local in pool.requests.batches(run_id, open_only=True):
        if local["kind"] == "file":
            remaining = pool.cursor().execute(
                "SELECT count(*) FROM requests WHERE batch_id = ? AND response IS NULL", [local["id"]]).fetchone()[0]
            if remaining == 0:
                pool.requests.update_batch(local["id"], status="imported")
    state.plan()
    status = ""
    if state.finished():
        pool.runs.set_status(run_id, FINISHED, stop_reason=state.planning_stopped)
        status = FINISHED
    ready = len([r for r in state.open.values() if r.get("response") is None and r.get("batch_id") is None])
    return ReadReport(run_id, lines.answered, lines.failed, lines.ignored, ready, status)
