"""A loopback OpenAI-compatible HTTP server: the offline demo backend and the test double.

Standard library only. `OfflineServer` runs a `ThreadingHTTPServer` (HTTP/1.1, keep-alive,
one thread per connection) in a daemon thread and answers

    GET  /v1/models                  OpenAI list shape
    GET  /v1/models/{id}             one model
    POST /v1/chat/completions        chat.completion objects
    POST /v1/completions             text_completion objects
    POST /_control/faults            test control: {"clear", "push", "rates", "rate_params",
                                     "seed", "latency_s"}
    GET  /_control/faults            the current fault plan
    GET  /_control/stats             request counters (see `OfflineServer.stats`)
    POST /_control/reset_stats       zero the counters

Answers come from a *responder*: any callable ``(text, request_seed) -> str``. With no
responder the server loads ``selfinstruct.demo.DemoModel(seed=seed)`` lazily. Chat requests
hand the responder the message contents joined with a blank line (system first); completion
requests hand it the prompt. Responder calls are serialised by a lock (so a responder need not
be thread-safe); ``latency_s`` -- a constant extra delay before every completion answer,
settable at runtime -- and slow faults wait outside that lock, so requests still overlap.
The ``/_control`` endpoints need no key: they are a loopback test hook.

Determinism: the request seed is the request's own ``seed`` field when given, otherwise a hash
of the canonical request body; either is mixed with the server seed. With ``n > 1`` choice ``i``
uses ``request_seed + i``. The same body therefore always gets the same answer.

Token counts are estimates: ``ceil(characters / 4)`` (0 for empty text). ``max_tokens`` (or
``max_completion_tokens``) cuts the answer at ``4 * max_tokens`` characters with
``finish_reason="length"``; ``stop`` cuts at the earliest occurrence of any stop string with
``finish_reason="stop"``. A prompt whose estimate exceeds ``context_window`` (16,384 by
default) gets a 400 ``context_length_exceeded``.

Faults (`FaultPlan`) apply to the two completion endpoints only, after authentication and
request validation (so a 404/400 never consumes a queued fault). Kinds:
``429`` (Retry-After: ``retry_after`` s, default 1), ``500``, ``503``, ``401``,
``timeout`` / ``slow`` (sleep ``seconds`` before answering; defaults 10 s / 1 s),
``length`` (the answer cut to ``fraction`` of its length, default 0.5, finish_reason
"length"), ``garbage`` (random junk instead of the answer), ``empty`` (200, empty body),
``malformed_json`` (200, invalid JSON).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import random
import signal
import socket
import string
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

__all__ = [
    "FAULT_KINDS",
    "DEFAULT_CONTEXT_WINDOW",
    "Fault",
    "FaultPlan",
    "OfflineServer",
    "estimate_tokens",
    "serve_forever",
    "main",
]

FAULT_KINDS = (
    "429", "500", "503", "401",
    "timeout", "slow",
    "length", "garbage", "empty", "malformed_json",
)
DEFAULT_CONTEXT_WINDOW = 16_384
DEFAULT_MODEL = "selfinstruct-demo"
_DEFAULT_SLEEP = {"timeout": 10.0, "slow": 1.0}

Responder = Callable[[str, int], str]


def estimate_tokens(text: str) -> int:
    """Rough token count used for usage and the context check: ceil(chars / 4)."""
    return math.ceil(len(text) / 4) if text else 0


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    kind: str
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.params}


def _check_kind(kind: str) -> str:
    kind = str(kind)
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    return kind


class FaultPlan:
    """What goes wrong next. Thread-safe.

    * a queue of one-shot faults, served to the next completion requests in order
      (``push("429", count=2, retry_after=1)``), and
    * probabilistic rates drawn from a seeded generator when the queue is empty
      (``set_rates({"429": 0.1, "500": 0.05}, seed=7)``; rates sum to at most 1).

    Also carries the constant extra latency (``latency_s``) added before every completion.
    """

    def __init__(self, rates: dict[str, float] | None = None, seed: int = 0,
                 latency_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._queue: deque[list] = deque()      # entries: [Fault, remaining_count]
        self._rates: dict[str, float] = {}
        self._rate_params: dict[str, dict] = {}
        self._rates_seed = seed
        self._rng = random.Random(seed)
        self._latency_s = 0.0
        self.latency_s = latency_s
        if rates:
            self.set_rates(rates, seed=seed)

    # -- queue
    def push(self, kind: str, count: int = 1, **params: Any) -> "FaultPlan":
        kind = _check_kind(kind)
        count = int(count)
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queue.append([Fault(kind, dict(params)), count])
        return self

    def pending(self) -> int:
        """How many one-shot faults are still queued."""
        with self._lock:
            return sum(n for _, n in self._queue)

    # -- rates
    def set_rates(self, rates: dict[str, float] | None, seed: int | None = None,
                  params: dict[str, dict] | None = None) -> "FaultPlan":
        """Replace the rates. ``params`` gives per-kind parameters for drawn faults, e.g.
        ``{"timeout": {"seconds": 2}, "429": {"retry_after": 0.1}}``."""
        clean: dict[str, float] = {}
        for kind, rate in (rates or {}).items():
            kind = _check_kind(kind)
            rate = float(rate)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {kind!r} must be within [0, 1], got {rate}")
            if rate > 0:
                clean[kind] = rate
        if sum(clean.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        clean_params = {}
        for kind, p in (params or {}).items():
            if not isinstance(p, dict):
                raise ValueError(f"params for {kind!r} must be an object")
            clean_params[_check_kind(kind)] = dict(p)
        with self._lock:
            self._rates = clean
            self._rate_params = clean_params
            if seed is not None:
                self._rates_seed = int(seed)
                self._rng = random.Random(int(seed))
        return self

    # -- latency
    @property
    def latency_s(self) -> float:
        return self._latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        value = float(value)
        if value < 0:
            raise ValueError("latency_s must be >= 0")
        self._latency_s = value

    def clear(self) -> "FaultPlan":
        """Drop queued faults and rates (latency stays)."""
        with self._lock:
            self._queue.clear()
            self._rates = {}
            self._rate_params = {}
        return self

    def next_fault(self) -> Fault | None:
        """The fault for the next request, or None for a normal answer."""
        with self._lock:
            if self._queue:
                entry = self._queue[0]
                entry[1] -= 1
                if entry[1] <= 0:
                    self._queue.popleft()
                return entry[0]
            if self._rates:
                draw = self._rng.random()
                acc = 0.0
                for kind, rate in self._rates.items():
                    acc += rate
                    if draw < acc:
                        return Fault(kind, dict(self._rate_params.get(kind, {})))
            return None

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "queue": [{**f.to_dict(), "count": n} for f, n in self._queue],
                "rates": dict(self._rates),
                "rate_params": {k: dict(v) for k, v in self._rate_params.items()},
                "seed": self._rates_seed,
                "latency_s": self._latency_s,
            }

    def apply(self, spec: dict) -> dict:
        """Apply a control document: {"clear", "push", "rates", "rate_params", "seed",
        "latency_s"}; clear first, then push, then rates, then latency."""
        if not isinstance(spec, dict):
            raise ValueError("control body must be a JSON object")
        if spec.get("clear"):
            self.clear()
        for item in spec.get("push") or []:
            if not isinstance(item, dict) or "kind" not in item:
                raise ValueError('each "push" entry needs a "kind"')
            item = dict(item)
            kind = item.pop("kind")
            count = item.pop("count", 1)
            self.push(kind, count, **item)
        if "rates" in spec:
            self.set_rates(spec.get("rates") or {}, seed=spec.get("seed"),
                           params=spec.get("rate_params"))
        if spec.get("latency_s") is not None:
            self.latency_s = spec["latency_s"]
        return self.snapshot()

    def __repr__(self) -> str:
        snap = self.snapshot()
        return f"FaultPlan(queue={snap['queue']}, rates={snap['rates']}, latency_s={snap['latency_s']})"


# --------------------------------------------------------------------------- helpers


class _HTTPError(Exception):
    """An OpenAI-style error answer."""

    def __init__(self, status: int, message: str, type_: str, code: str | None,
                 param: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = headers or {}


def _adapt_responder(responder: Callable) -> Responder:
    """Call `responder(text, request_seed)` whether request_seed is positional or keyword-only."""
    try:
        params = inspect.signature(responder).parameters
    except (TypeError, ValueError):
        return responder
    p = params.get("request_seed")
    if p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY:
        return lambda text, request_seed: responder(text, request_seed=request_seed)
    return responder


def _mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}***{key[-2:]}"


def _content_text(content: Any) -> str:
    """A message's content as text (plain string or a list of typed parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def _apply_limits(text: str, stop: list[str], max_tokens: int | None) -> tuple[str, str]:
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    limit = None if max_tokens is None else max(0, int(max_tokens)) * 4
    if limit is not None and limit < cut:
        return text[:limit], "length"
    return text[:cut], "stop"


def _junk(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + string.punctuation + "   \n"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 200)))


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write with TCP_NODELAY: otherwise Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server_version = "selfinstruct-offline/1"
    sys_version = ""
    server: "_HTTPServer"

    # -- plumbing
    def setup(self) -> None:
        super().setup()
        self.server.owner._conn_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._conn_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        self.server.owner._count("status", str(status))

    def _send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), headers=headers)

    def _dispatch(self, method: str) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            body = self._read_body() if method == "POST" else b""
        except (ValueError, OSError):
            self.close_connection = True
            self._send_json(400, _HTTPError(400, "Could not read the request body.",
                                            "invalid_request_error", None).body)
            return
        try:
            if path.startswith("/_control/"):
                owner._count("endpoint", "control")
                self._send_json(200, owner._control(method, path, body))
                return
            if path == "/v1/models" and method == "GET":
                owner._count("endpoint", "models")
                owner._check_auth(self.headers)
                self._send_json(200, owner._models_list())
                return
            if path.startswith("/v1/models/") and method == "GET":
                owner._count("endpoint", "models")
                owner._check_auth(self.headers)
                self._send_json(200, owner._model_object(path[len("/v1/models/"):]))
                return
            if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
                self._completion(path == "/v1/chat/completions", body)
                return
            owner._count("endpoint", "unknown")
            raise _HTTPError(404, f"Unknown request URL: {method} {path}.",
                             "invalid_request_error", "unknown_url")
        except _HTTPError as e:
            self._send_json(e.status, e.body, headers=e.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug or a failing responder: answer 500, keep serving
            owner._count("errors", type(e).__name__)
            try:
                self._send_json(500, _HTTPError(500, f"The offline server failed: {e}",
                                                "server_error", None).body)
            except OSError:
                self.close_connection = True

    def _completion(self, chat: bool, body: bytes) -> None:
        owner = self.server.owner
        owner._count("endpoint", "chat/completions" if chat else "completions")
        owner._enter()
        try:
            owner._check_auth(self.headers)
            try:
                req = json.loads(body or b"null")
            except ValueError:
                raise _HTTPError(400, "We could not parse the JSON body of your request.",
                                 "invalid_request_error", None) from None
            if not isinstance(req, dict):
                raise _HTTPError(400, "The request body must be a JSON object.",
                                 "invalid_request_error", None)
            plan = owner.faults
            status, payload, ctype, headers = owner._answer(chat, req, plan, self._wait)
            if ctype is None:
                self._send_json(status, payload, headers=headers)
            else:
                self._send(status, payload, content_type=ctype, headers=headers)
        finally:
            owner._leave()

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.server.owner._stopping.wait(seconds)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    owner: "OfflineServer"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (timeouts, shutdown) are normal here.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------- server


class OfflineServer:
    """Loopback OpenAI-compatible server. See the module docstring for the protocol.

    >>> with OfflineServer(responder=lambda text, seed: "hello") as srv:
    ...     srv.base_url   # "http://127.0.0.1:<port>/v1"
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        responder: Callable | None = None,
        api_key: str | None = None,
        faults: FaultPlan | None = None,
        seed: int = 0,
        model_names: Iterable[str] = (DEFAULT_MODEL,),
        latency_s: float = 0.0,
        context_window: int = DEFAULT_CONTEXT_WINDOW,
    ) -> None:
        self.host = host
        self._requested_port = int(port)
        self._responder_arg = responder
        self._responder: Responder | None = _adapt_responder(responder) if responder else None
        self._responder_lock = threading.Lock()
        self.api_key = api_key
        self.faults = faults if faults is not None else FaultPlan(seed=seed)
        if latency_s:
            self.faults.latency_s = latency_s
        self.seed = int(seed)
        self.model_names = tuple(model_names)
        if not self.model_names:
            raise ValueError("model_names must name at least one model")
        self.context_window = int(context_window)
        self.created = int(time.time())

        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stats_lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._in_flight = 0
        self._max_in_flight = 0
        self._connections_total = 0
        self._open_conns: set[socket.socket] = set()

    # -- lifecycle
    def start(self) -> "OfflineServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self._requested_port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"offline-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()          # wakes handlers sleeping on latency / slow faults
        httpd.shutdown()
        httpd.server_close()
        with self._stats_lock:
            conns = list(self._open_conns)
        for conn in conns:            # end idle keep-alive connections so their threads exit
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "OfflineServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            return self._requested_port
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        return f"http://{host}:{self.port}/v1"

    @property
    def latency_s(self) -> float:
        return self.faults.latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        self.faults.latency_s = value

    # -- stats
    @property
    def stats(self) -> dict:
        """A snapshot: {"requests", "by_endpoint", "by_status", "by_fault", "errors",
        "in_flight", "max_in_flight", "connections" (opened so far), "open_connections"}.

        ``by_endpoint`` keys: "chat/completions", "completions", "models", "control",
        "unknown"; counted when a request arrives. ``in_flight`` counts completion requests.
        """
        with self._stats_lock:
            by_endpoint = dict(self._counters.get("endpoint", {}))
            return {
                "requests": sum(by_endpoint.values()),
                "by_endpoint": by_endpoint,
                "by_status": dict(self._counters.get("status", {})),
                "by_fault": dict(self._counters.get("fault", {})),
                "errors": dict(self._counters.get("errors", {})),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "connections": self._connections_total,
                "open_connections": len(self._open_conns),
            }

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._counters.clear()
            self._max_in_flight = self._in_flight
            self._connections_total = len(self._open_conns)

    def _count(self, group: str, key: str) -> None:
        with self._stats_lock:
            self._counters.setdefault(group, Counter())[key] += 1

    def _enter(self) -> None:
        with self._stats_lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._stats_lock:
            self._in_flight -= 1

    def _conn_opened(self, conn: socket.socket) -> None:
        with self._stats_lock:
            self._connections_total += 1
            self._open_conns.add(conn)

    def _conn_closed(self, conn: socket.socket) -> None:
        with self._stats_lock:
            self._open_conns.discard(conn)

    # -- requests
    def _check_auth(self, headers: Any) -> None:
        if self.api_key is None:
            return
        auth = headers.get("Authorization") or ""
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if given != self.api_key:
            shown = _mask_key(given) if given else "(none)"
            raise _HTTPError(401, f"Incorrect API key provided: {shown}.",
                             "invalid_request_error", "invalid_api_key")

    def _models_list(self) -> dict:
        return {"object": "list", "data": [self._model_object(m) for m in self.model_names]}

    def _model_object(self, name: str) -> dict:
        if name not in self.model_names:
            raise _HTTPError(404, f"The model '{name}' does not exist.",
                             "invalid_request_error", "model_not_found", param="model")
        return {"id": name, "object": "model", "created": self.created, "owned_by": "selfinstruct"}

    def _get_responder(self) -> Responder:
        if self._responder is None:
            with self._responder_lock:
                if self._responder is None:
                    from .demo import DemoModel  # lazy: demo is optional for tests

                    model = DemoModel(seed=self.seed)
                    self._responder = _adapt_responder(model.respond)
        return self._responder

    def _request_seed(self, req: dict) -> int:
        if isinstance(req.get("seed"), int) and not isinstance(req.get("seed"), bool):
            material = f"{self.seed}|seed|{req['seed']}"
        else:
            material = f"{self.seed}|body|{json.dumps(req, sort_keys=True, ensure_ascii=False)}"
        return int.from_bytes(hashlib.sha256(material.encode("utf-8")).digest()[:6], "big")

    def _answer(self, chat: bool, req: dict, plan: FaultPlan,
                wait: Callable[[float], None]) -> tuple[int, Any, str | None, dict]:
        """(status, payload, content_type-or-None-for-json, headers)."""
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "You must provide a model parameter.",
                             "invalid_request_error", None, param="model")
        if model not in self.model_names:
            raise _HTTPError(404, f"The model '{model}' does not exist or you do not have access "
                             f"to it. Models here: {', '.join(self.model_names)}.",
                             "invalid_request_error", "model_not_found", param="model")
        if chat:
            messages = req.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _HTTPError(400, "'messages' must be a non-empty array.",
                                 "invalid_request_error", None, param="messages")
            ordered = sorted(messages, key=lambda m: 0 if isinstance(m, dict)
                             and m.get("role") in ("system", "developer") else 1)
            text = "\n\n".join(_content_text(m.get("content") if isinstance(m, dict) else m)
                               for m in ordered)
        else:
            prompt = req.get("prompt")
            if isinstance(prompt, list):
                prompt = "".join(p for p in prompt if isinstance(p, str))
            if not isinstance(prompt, str):
                raise _HTTPError(400, "'prompt' must be a string.", "invalid_request_error",
                                 None, param="prompt")
            text = prompt
        prompt_tokens = estimate_tokens(text)
        if prompt_tokens > self.context_window:
            raise _HTTPError(
                400,
                f"This model's maximum context length is {self.context_window} tokens. However, "
                f"your messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                f"the messages.",
                "invalid_request_error", "context_length_exceeded", param="messages")
        if req.get("stream"):
            raise _HTTPError(400, "Streaming is not supported by the offline server.",
                             "invalid_request_error", "unsupported_value", param="stream")
        n = req.get("n") or 1
        if not isinstance(n, int) or n < 1 or n > 128:
            raise _HTTPError(400, "'n' must be an integer between 1 and 128.",
                             "invalid_request_error", None, param="n")
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 0):
            raise _HTTPError(400, "'max_tokens' must be a non-negative integer.",
                             "invalid_request_error", None, param="max_tokens")
        stop = req.get("stop")
        stop_list = [stop] if isinstance(stop, str) else [s for s in (stop or []) if isinstance(s, str)]

        wait(plan.latency_s)
        fault = plan.next_fault()
        if fault is not None:
            self._count("fault", fault.kind)
            early = self._fault_response(fault, wait)
            if early is not None:
                return early

        base_seed = self._request_seed(req)
        responder = self._get_responder()
        choices = []
        completion_tokens = 0
        for i in range(n):
            rseed = base_seed + i
            if fault is not None and fault.kind == "garbage":
                raw = _junk(random.Random(rseed))
            else:
                with self._responder_lock:
                    raw = responder(text, rseed)
                raw = "" if raw is None else str(raw)
            out, finish = _apply_limits(raw, stop_list, max_tokens)
            if fault is not None and fault.kind == "length":
                frac = float(fault.params.get("fraction", 0.5))
                out, finish = out[: int(len(out) * frac)], "length"
            completion_tokens += estimate_tokens(out)
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": out,
                                                        "refusal": None},
                                "logprobs": None, "finish_reason": finish})
            else:
                choices.append({"index": i, "text": out, "logprobs": None, "finish_reason": finish})
        payload = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_selfinstruct_offline",
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        return 200, payload, None, {}

    def _fault_response(self, fault: Fault, wait: Callable[[float], None]):
        kind, p = fault.kind, fault.params
        if kind == "429":
            ra = p.get("retry_after", 1)
            ra_text = str(int(ra)) if float(ra).is_integer() else f"{float(ra):g}"
            err = _HTTPError(429, f"Rate limit reached for requests. Please try again in {ra_text}s.",
                             "requests", "rate_limit_exceeded", headers={"Retry-After": ra_text})
            return 429, err.body, None, err.headers
        if kind == "500":
            return 500, _HTTPError(500, "The server had an error while processing your request.",
                                   "server_error", None).body, None, {}
        if kind == "503":
            return 503, _HTTPError(503, "The engine is currently overloaded, please try again later.",
                                   "server_error", None).body, None, {}
        if kind == "401":
            return 401, _HTTPError(401, "Incorrect API key provided.", "invalid_request_error",
                                   "invalid_api_key").body, None, {}
        if kind in ("timeout", "slow"):
            wait(float(p.get("seconds", _DEFAULT_SLEEP[kind])))
            return None                                    # then answer normally
        if kind == "empty":
            return 200, b"", "application/json", {}
        if kind == "malformed_json":
            return 200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind',\
                "application/json", {}
        return None                                        # length, garbage: shape the answer

    def _control(self, method: str, path: str, body: bytes) -> dict:
        if path == "/_control/stats" and method == "GET":
            return self.stats
        if path == "/_control/reset_stats" and method == "POST":
            self.reset_stats()
            return self.stats
        if path == "/_control/faults":
            if method == "GET":
                return self.faults.snapshot()
            if method == "POST":
                try:
                    spec = json.loads(body or b"{}")
                    return self.faults.apply(spec)
                except ValueError as e:
                    raise _HTTPError(400, f"Bad fault control request: {e}",
                                     "invalid_request_error", None) from None
        raise _HTTPError(404, f"Unknown control URL: {method} {path}.",
                         "invalid_request_error", "unknown_url")

    def __repr__(self) -> str:
        state = self.base_url if self.running else "stopped"
        return f"OfflineServer({state}, models={list(self.model_names)})"


# --------------------------------------------------------------------------- CLI entry


def _echo_responder(text: str, request_seed: int) -> str:
    return f"echo {request_seed % 1000}: {text[-200:]}"


def serve_forever(port: int = 8000, host: str = "127.0.0.1", api_key: str | None = None,
                  latency_s: float = 0.0, seed: int = 0, *, responder: Callable | None = None,
                  model_names: Iterable[str] = (DEFAULT_MODEL,), out=None) -> None:
    """Run an OfflineServer in the foreground until Ctrl+C (or SIGTERM), then stop cleanly.

    Prints one line with the base URL first (flushed), so a parent process can read it.
    """
    out = out or sys.stdout
    server = OfflineServer(host=host, port=port, responder=responder, api_key=api_key,
                           seed=seed, model_names=model_names, latency_s=latency_s)
    server.start()
    restore = None
    if threading.current_thread() is threading.main_thread():
        def _on_term(signum, frame):  # turn SIGTERM into the same clean exit as Ctrl+C
            raise KeyboardInterrupt
        restore = signal.signal(signal.SIGTERM, _on_term)
    try:
        print(f"Offline OpenAI-compatible server at {server.base_url} "
              f"(models: {', '.join(server.model_names)}; Ctrl+C to stop)", file=out, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m selfinstruct.offline",
        description="Run the loopback OpenAI-compatible demo server.")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default=None, help="require this bearer key (default: any)")
    parser.add_argument("--latency", type=float, default=0.0, help="extra seconds per completion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--responder", choices=("demo", "echo"), default="demo",
                        help="demo: DemoModel answers; echo: a trivial answer (benchmarks)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    serve_forever(port=args.port, host=args.host, api_key=args.api_key, latency_s=args.latency,
                  seed=args.seed, responder=_echo_responder if args.responder == "echo" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
