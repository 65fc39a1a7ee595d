"""One client over the `openai` package (AsyncOpenAI) for any OpenAI-compatible endpoint.

* Two modes: ``"chat"`` sends ``prompt.as_messages()`` to ``/chat/completions``;
  ``"completion"`` sends ``prompt.text`` to ``/completions`` with
  ``stop = prompt.stop or sampling.stop``. (Chat mode sends ``sampling.stop`` only:
  `Prompt.stop` is documented as completion-mode stop sequences.)
* Our retries are the only ones: the openai client is built with ``max_retries=0``, so every
  429 is seen here (and reported to a `pacer`, which adapts the concurrency).
* ``timeout_s`` is a deadline for a whole attempt (connect, wait, and every byte of the
  answer), not per read: a server that trickles a byte at a time cannot hold a request longer.
* Answers are read at most ``max_answer_bytes``: a larger one is cut there and returned as a
  `Completion` with ``oversize=True`` and the cut raw bytes as ``text`` (memory stays bounded).
* Errors fall in two groups (`LLMError.kind`):

  fatal, raised from `complete()` at once
      ``auth`` (401/403, or 429 ``insufficient_quota``: the account, not the moment, is the
      problem), ``model_not_found`` (404 for the model), ``context_length`` (400
      ``context_length_exceeded``), ``bad_request`` (other 4xx, e.g. a parameter the server
      refuses or a chat-only model in completion mode).
  rate limit (429, `is_rate_limit`), waited out and asked again, never counted as a retry: the
      server's ``Retry-After`` when present, else a back-off growing with the request's 429s.
      Only ``rate_limit_patience_s`` of nothing but 429s (run-wide through the `pacer`: any
      answer resets the clock) raises ``LLMError("rate_limit")`` ("rate limited for 10 minutes").
  transient, retried up to ``max_retries`` times with exponential backoff and full jitter
      (``uniform(0, min(backoff_max_s, backoff_base_s * 2**retry))``), or exactly the
      server's ``Retry-After`` / ``retry-after-ms`` when present (capped at
      ``backoff_max_s``): ``server`` (5xx, 408, 409, a dropped
      connection), ``timeout`` (no answer within ``timeout_s``), ``bad_response`` (200 with an
      empty body, invalid JSON, or no choices). When every attempt failed, `complete()`
      *returns* a `Completion` with ``text=""``, ``error`` (plain words) and ``error_kind``.
      A request waiting out its backoff keeps its concurrency slot, so a rate-limited
      endpoint sees fewer requests, not more. A 200 answer with junk text is not an error
      here: judging text is the parser's job.

  ``unreachable`` (connection refused, unknown host, connect timeout) is retried like a
  transient error, so a brief blip costs nothing; if the last attempt still could not
  connect, it is raised as fatal -- nothing else will work either. `list_models()` and
  `check()` do not retry, so "Test connection" answers at once.
* The API key never leaves the client: `LLMConfig.public_dict()` omits it, ``repr`` masks it,
  and error messages never quote it, not even when the endpoint quotes it back (every `LLMError`
  and attempt failure goes through `redact.redact`). ``api_key=None`` sends the placeholder ``"not-needed"``
  (local servers such as vLLM, Ollama, llama.cpp or the offline demo ignore the key, but the
  openai package insists on one). Which key an endpoint may get, and whether the environment's
  key may go to it, is decided in one place: `backend.Backend.resolved_api_key`.
* Event loops: an AsyncOpenAI (and its connection pool) belongs to the event loop it was made
  in. The client is built lazily inside the running loop and rebuilt when called from a new
  loop (the pipeline runs ``asyncio.run`` per step). Close it in the same loop with
  ``await client.aclose()`` or ``async with LLMClient(...) as client:``; under
  ``asyncio.run`` it is also closed automatically when the loop ends. Use one client from
  one event loop at a time; the ``*_sync`` wrappers use a private client of their own.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import httpx2
import openai

from . import redact as _redact
from .prompts import Prompt

log = logging.getLogger(__name__)

__all__ = [
    "MODES",
    "ERROR_KINDS",
    "FATAL_KINDS",
    "TRANSIENT_KINDS",
    "PLACEHOLDER_API_KEY",
    "LLMConfig",
    "Sampling",
    "Completion",
    "EmbeddingBatch",
    "LLMError",
    "PriceTable",
    "LLMClient",
    "AdaptiveLimit",
    "AnswerTooLarge",
    "http_client",
    "request_body",
    "endpoint_path",
]

MODES = ("chat", "completion")
PLACEHOLDER_API_KEY = "not-needed"
# How long nothing but 429s may go on before a run gives up (the one home of this default: run,
# judge and evaluation settings, the CLI's --rate-limit-patience and the pages read it).
RATE_LIMIT_PATIENCE_S = 600.0


def duration_words(seconds: float) -> str:
    """"10 minutes", "90 seconds", "1.5 hours": a setting's length in words."""
    seconds = float(seconds)
    for unit, size in (("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size and (seconds / size).is_integer() or seconds >= 2 * size:
            value = round(seconds / size, 1)
            return f"{value:g} {unit}{'' if value == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


def is_rate_limit(status: int | None, code: str | None = None) -> bool:
    """What a 429 means, decided once: the provider asks us to slow down (wait, never give up on
    the request for it), unless the account has no quota left (``insufficient_quota``: fatal)."""
    return status == 429 and (code or "").lower() != "insufficient_quota"


def rate_limit_patience_error(url: str, patience_s: float) -> "LLMError":
    """The run-ending error once nothing but 429s came back for `patience_s` seconds."""
    return LLMError("rate_limit", f"The endpoint at {url} answered nothing but 429 (rate limited for "
                    f"{duration_words(patience_s)}, the rate-limit patience).", status=429)
FATAL_KINDS = frozenset({"auth", "model_not_found", "unreachable", "context_length", "bad_request"})
TRANSIENT_KINDS = frozenset({"rate_limit", "server", "timeout", "bad_response"})
ERROR_KINDS = FATAL_KINDS | TRANSIENT_KINDS


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, repr=False)
class LLMConfig:
    """Where and how to call the model. ``public_dict()`` is what gets stored with a run."""

    base_url: str
    model: str
    api_key: str | None = None
    mode: str = "chat"
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_answer_bytes: int = 1_000_000
    rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S   # nothing but 429s this long: give up

    def __post_init__(self) -> None:
        mode = (self.mode or "chat").strip().lower()
        if mode == "completions":
            mode = "completion"
        if mode not in MODES:
            raise ValueError(f"mode must be 'chat' or 'completion', not {self.mode!r}")
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "base_url", str(self.base_url).strip().rstrip("/"))
        object.__setattr__(self, "model", str(self.model).strip())
        if not self.base_url:
            raise ValueError("base_url is empty")
        if not self.model:
            raise ValueError("model is empty")
        if int(self.concurrency) < 1:
            raise ValueError("concurrency must be at least 1")
        if float(self.timeout_s) <= 0:
            raise ValueError("timeout_s must be positive")
        if int(self.max_retries) < 0:
            raise ValueError("max_retries must be >= 0")
        if float(self.backoff_base_s) < 0 or float(self.backoff_max_s) < 0:
            raise ValueError("backoff times must be >= 0")
        object.__setattr__(self, "concurrency", int(self.concurrency))
        object.__setattr__(self, "max_retries", int(self.max_retries))
        object.__setattr__(self, "timeout_s", float(self.timeout_s))
        object.__setattr__(self, "backoff_base_s", float(self.backoff_base_s))
        object.__setattr__(self, "backoff_max_s", float(self.backoff_max_s))
        if int(self.max_answer_bytes) < 1024:
            raise ValueError("max_answer_bytes must be at least 1024")
        object.__setattr__(self, "max_answer_bytes", int(self.max_answer_bytes))
        if not float(self.rate_limit_patience_s) > 0:
            raise ValueError("rate_limit_patience_s must be positive")
        object.__setattr__(self, "rate_limit_patience_s", float(self.rate_limit_patience_s))
        # Every key the project sends goes through an LLMConfig: from here on, no error text
        # an endpoint sends back may carry it (redact.py).
        _redact.remember(self.api_key)

    def resolved_api_key(self) -> str:
        """The key actually sent: the one given (by `Backend`), else the placeholder."""
        return self.api_key or PLACEHOLDER_API_KEY

    def api_key_source(self) -> str:
        """'explicit' or 'placeholder' -- safe to show, never the key itself."""
        return "explicit" if self.api_key else "placeholder"

    def public_dict(self) -> dict:
        """Every field except the API key; ``LLMConfig(**d, api_key=...)`` rebuilds it."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}

    @classmethod
    def from_public_dict(cls, data: dict, api_key: str | None = None) -> "LLMConfig":
        known = {f.name for f in fields(cls)} - {"api_key"}
        return cls(**{k: v for k, v in data.items() if k in known}, api_key=api_key)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.public_dict().items())
        key = "'***'" if self.api_key else "None"
        return f"LLMConfig({shown}, api_key={key})"

    __str__ = __repr__


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; the defaults are the Self-Instruct paper's."""

    temperature: float = 0.7
    top_p: float = 0.5
    max_tokens: int = 1024
    presence_penalty: float = 2.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        elif stop is not None:
            stop = tuple(stop) or None
        object.__setattr__(self, "stop", stop)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop) if self.stop else None
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "Sampling":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Completion:
    """One answer (or one failure that survived every retry: ``error`` set, ``text`` "")."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0        # wall time of complete(), retries and waits included
    attempts: int = 1             # HTTP attempts made
    cost_usd: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    model: str = ""               # as reported by the server (else the configured model)
    oversize: bool = False        # the answer was over max_answer_bytes: `text` holds its cut raw bytes

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EmbeddingBatch:
    """The answer to one `/embeddings` request: one vector (a list of floats) per text, in order."""

    vectors: list
    prompt_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""
    latency_s: float = 0.0
    attempts: int = 0


class LLMError(Exception):
    """A failure with a ``kind`` (see ERROR_KINDS) and a plain-words ``message``."""

    def __init__(self, kind: str, message: str, *, status: int | None = None) -> None:
        message = _redact.redact(message)   # it may quote the endpoint, which may quote our key
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL_KINDS

    def __repr__(self) -> str:
        return f"LLMError(kind={self.kind!r}, message={self.message!r})"

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- prices

# Editable defaults, NOT authoritative: list prices in USD per 1M tokens as we last knew them.
# Check your provider's price page and override with PriceTable.from_json / with_price.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
    "davinci-002": (2.00, 2.00),
    "babbage-002": (0.40, 0.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
}

_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


class PriceTable:
    """USD per 1M input and output tokens per model name.

    Lookup is by exact name, then by the name without a date suffix
    (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``). Unknown models (including the offline
    demo) cost 0.0.
    """

    def __init__(self, prices: dict[str, tuple[float, float]] | None = None) -> None:
        self._prices: dict[str, tuple[float, float]] = {}
        for model, value in (prices or {}).items():
            self._prices[str(model)] = self._pair(model, value)

    @staticmethod
    def _pair(model: str, value: Any) -> tuple[float, float]:
        if isinstance(value, dict):
            pair = (value.get("input_per_m"), value.get("output_per_m"))
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            pair = tuple(value)
        else:
            raise ValueError(f"price for {model!r} must be [input_per_m, output_per_m] or "
                             f"{{'input_per_m': .., 'output_per_m': ..}}, got {value!r}")
        try:
            inp, out = float(pair[0]), float(pair[1])
        except (TypeError, ValueError):
            raise ValueError(f"price for {model!r} is not numeric: {value!r}") from None
        if inp < 0 or out < 0 or math.isnan(inp) or math.isnan(out):
            raise ValueError(f"price for {model!r} must be >= 0")
        return inp, out

    @classmethod
    def default(cls) -> "PriceTable":
        return cls(DEFAULT_PRICES)

    @classmethod
    def from_json(cls, source: str | os.PathLike | dict) -> "PriceTable":
        """From a dict or a JSON file: {"model": {"input_per_m": x, "output_per_m": y}} or
        {"model": [x, y]} (optionally wrapped as {"prices": {...}})."""
        data = source if isinstance(source, dict) else json.loads(Path(source).read_text("utf-8"))
        if isinstance(data, dict) and isinstance(data.get("prices"), dict):
            data = data["prices"]
        if not isinstance(data, dict):
            raise ValueError("a price table must be a JSON object keyed by model name")
        return cls(data)

    def to_dict(self) -> dict:
        return {m: {"input_per_m": i, "output_per_m": o} for m, (i, o) in sorted(self._prices.items())}

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def for_model(cls, model: str, price_per_m: Sequence[float] | None) -> "PriceTable":
        """The built-in prices, with `price_per_m` ([input, output] USD per 1M tokens) for `model`
        when given: what a stored run's configuration asks for."""
        table = cls.default()
        return table.with_price(model, *price_per_m) if price_per_m else table

    def with_price(self, model: str, input_per_m: float, output_per_m: float) -> "PriceTable":
        new = PriceTable()
        new._prices = dict(self._prices)
        new._prices[str(model)] = self._pair(model, (input_per_m, output_per_m))
        return new

    def get(self, model: str) -> tuple[float, float] | None:
        if model in self._prices:
            return self._prices[model]
        base = _DATE_SUFFIX.sub("", model or "")
        return self._prices.get(base)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.get(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000

    def models(self) -> list[str]:
        return sorted(self._prices)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.get(model) is not None

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models)"


# --------------------------------------------------------------------------- errors


class _Failure(Exception):
    """One failed attempt, classified."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None, detail: str = "") -> None:
        # Both texts may quote the endpoint's answer: keys out before they go anywhere.
        message, detail = _redact.redact(message), _redact.redact(detail)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.detail = detail


def _cause_chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__


def _connect_reason(exc: BaseException) -> str | None:
    """Plain words for a failure to connect, or None when the connection was made."""
    chain = list(_cause_chain(exc))
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "host name not found"
    for e in chain:
        if isinstance(e, httpx2.ConnectTimeout):
            return "connecting timed out"
        if isinstance(e, httpx2.ConnectError):
            text = str(e) or "could not connect"
            return text[0].lower() + text[1:]
    return None


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _server_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        msg = body.get("message")
        if isinstance(msg, str) and msg:
            return msg.strip()
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return ""


def _token_estimate(prompt: Prompt) -> int:
    return math.ceil(len(prompt.full_text()) / 4)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- requests


def request_body(config: LLMConfig, prompt: Prompt, sampling: Sampling) -> dict:
    """The JSON body of one request, as sent to /chat/completions or /completions (and as
    written into batch files)."""
    body: dict[str, Any] = dict(
        model=config.model, temperature=sampling.temperature, top_p=sampling.top_p,
        max_tokens=sampling.max_tokens, presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty)
    if config.mode == "chat":
        body["messages"] = prompt.as_messages()
        stop = sampling.stop
        # Structured output is a chat feature (servers' completion endpoints differ or lack it);
        # a structured prompt sent in completion mode is sent as its plain text.
        response_format = prompt.response_format()
        if response_format is not None:
            body["response_format"] = response_format
    else:
        body["prompt"] = prompt.text
        stop = prompt.stop or sampling.stop
    if stop:
        body["stop"] = list(stop)
    return body


def endpoint_path(config: LLMConfig) -> str:
    return "/v1/chat/completions" if config.mode == "chat" else "/v1/completions"


# --------------------------------------------------------------------------- answer size cap


class AnswerTooLarge(Exception):
    """Raised while reading a body past the cap; carries the bytes read up to it. Not an
    httpx error on purpose: the openai client lets it through unwrapped."""

    def __init__(self, partial: bytes, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.partial = partial


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def __aiter__(self):
        seen: list[bytes] = []
        size = 0
        async for chunk in self._inner:
            if size + len(chunk) > self._limit:
                seen.append(chunk[: self._limit - size])
                raise AnswerTooLarge(b"".join(seen), self._limit)
            size += len(chunk)
            seen.append(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    """Reads no more than `limit` bytes of any answer body (two 50 MB answers once took
    1.4 GB of memory)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        response.stream = _CappedStream(response.stream, self._limit)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def http_client(config: LLMConfig) -> httpx2.AsyncClient:
    """The httpx client every AsyncOpenAI of the project uses: pooled connections sized for
    the concurrency, and answers capped at `config.max_answer_bytes`."""
    limits = httpx2.Limits(max_connections=max(100, 2 * config.concurrency),
                           max_keepalive_connections=max(20, config.concurrency))
    transport = _CappedTransport(httpx2.AsyncHTTPTransport(limits=limits), config.max_answer_bytes)
    return openai.DefaultAsyncHttpxClient(timeout=config.timeout_s, limits=limits, transport=transport)


# --------------------------------------------------------------------------- pacing


class AdaptiveLimit:
    """How many requests may be in flight now: additive increase, multiplicative decrease, with a
    check that backing off helps.

    Starts at ``maximum``. A 429 halves the limit at most once per window (the smoothed time a
    successful attempt takes), and only if it was sent after the last cut: a burst of 429s from
    requests already in flight counts once, as in TCP. Every success adds ``1/limit`` (one slot
    per window of successes). A window after a cut, the share of 429s is compared with the share
    that led to the cut: if it did not fall by a quarter, the endpoint is refusing at random rather
    than because of our load (an overloaded provider), so the cut is undone and no cut is made
    for ten windows; retries with Retry-After absorb those 429s. A real rate limit answers a cut
    with fewer 429s, and the cut stays. The limit stays between ``floor`` and ``maximum``.
    Optional ``rpm`` / ``tpm`` caps are token buckets refilled continuously; a request
    reserves its prompt estimate plus ``max_tokens``, as providers count it.
    Used from one event loop (not thread-safe); `snapshot()` may be read from any thread.
    """

    MIN_SAMPLE = 8          # attempts needed to judge a window's share of 429s
    MIN_LIMITED = 3         # ...and 429s (besides the one that triggers a cut)

    def __init__(self, maximum: int, *, rpm: float | None = None, tpm: float | None = None,
                 floor: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = max(1, int(maximum))
        self.floor = max(1, min(self.maximum, int(floor) if floor else 1))
        self.value = float(self.maximum)
        self.window_s = 1.0            # smoothed duration of a successful attempt
        self.rpm, self.tpm = rpm or None, tpm or None
        self.rate_limited = 0          # 429 answers seen
        self.cuts = 0
        self.undone = 0                # cuts undone because they did not help
        self._clock = clock
        self._last_cut = -math.inf
        self._quiet_until = -math.inf  # no cuts before this time
        self._pending: tuple[float, float, int] | None = None  # (limit before the cut, share, sample)
        self._seen = [0, 0]            # attempts, 429s since the last cut or judgement
        self._storm_since: float | None = None   # first 429 after the last answer
        self._wait_until = -math.inf             # when the longest 429 wait now going on ends
        now = clock()
        self._buckets = {k: [cap, now] for k, cap in (("rpm", self._cap("rpm", 0)),
                                                      ("tpm", self._cap("tpm", 0))) if cap}

    @property
    def limit(self) -> int:
        return max(1, int(self.value))

    def _cap(self, name: str, need: float) -> float:
        per_min = getattr(self, name)
        return max(per_min / 60.0 * 5.0, need) if per_min else 0.0

    async def before_attempt(self, tokens: int) -> None:
        """Wait until the rpm / tpm buckets allow one more request of `tokens` tokens."""
        for name, need in (("rpm", 1.0), ("tpm", float(tokens))):
            bucket = self._buckets.get(name)
            if bucket is None:
                continue
            rate = getattr(self, name) / 60.0
            need = min(need, self._cap(name, need))
            while True:
                now = self._clock()
                bucket[0] = min(self._cap(name, need), bucket[0] + (now - bucket[1]) * rate)
                bucket[1] = now
                if bucket[0] >= need:
                    bucket[0] -= need
                    break
                await asyncio.sleep((need - bucket[0]) / rate)

    def after_attempt(self, kind: str | None, started: float) -> None:
        """Report one HTTP attempt: ``None`` for an answer, else its failure kind."""
        now = self._clock()
        self._seen[0] += 1
        if kind == "rate_limit":
            self.rate_limited += 1
            self._seen[1] += 1
            if self._storm_since is None:
                self._storm_since = now
        elif kind is None:
            self._storm_since = None
            self.window_s = 0.8 * self.window_s + 0.2 * max(0.0, now - started)
            self.value = min(float(self.maximum), self.value + 1.0 / self.value)
        attempts, limited = self._seen
        share = limited / attempts
        if self._pending is not None:
            before, before_share, needed = self._pending
            if now - self._last_cut >= self.window_s and attempts >= needed:
                self._pending = None
                self._seen = [0, 0]
                if share > 0.75 * before_share:      # backing off did not help: undo it
                    self.value = max(self.value, before)
                    self._quiet_until = now + 10 * self.window_s
                    self.undone += 1
            return
        if (kind == "rate_limit" and started >= self._last_cut and now >= self._quiet_until
                and now - self._last_cut >= self.window_s and attempts > self.MIN_SAMPLE
                and limited > self.MIN_LIMITED):
            # The 429 that triggers the cut is left out of the share: counting it would make
            # any share look higher before the cut than after. The judgement waits for as many
            # attempts as the cut was based on.
            self._pending = (self.value, (limited - 1) / (attempts - 1), attempts - 1)
            self.value = max(float(self.floor), self.value / 2.0)
            self._last_cut = now
            self._seen = [0, 0]
            self.cuts += 1
        elif attempts >= 4 * self.MIN_SAMPLE:       # keep the share recent
            self._seen = [attempts // 2, limited // 2]

    def rate_limited_for(self) -> float:
        """Seconds of nothing but 429s (since the first 429 after the last answer); 0 when none."""
        since = self._storm_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def note_wait(self, seconds: float) -> None:
        """A request waits `seconds` because of a 429 (what pages and the CLI show)."""
        self._wait_until = max(self._wait_until, self._clock() + max(0.0, seconds))

    def wait_s(self) -> float:
        """Seconds left of the longest 429 wait going on (0 when none)."""
        return max(0.0, self._wait_until - self._clock())

    def snapshot(self) -> dict:
        return {"limit": self.limit, "maximum": self.maximum, "rate_limited": self.rate_limited,
                "cuts": self.cuts, "undone": self.undone, "rate_limit_wait_s": self.wait_s()}


# --------------------------------------------------------------------------- client


class LLMClient:
    """Calls one OpenAI-compatible endpoint; see the module docstring for the rules."""

    def __init__(self, config: LLMConfig, prices: PriceTable | None = None, *,
                 rng: random.Random | None = None, pacer: AdaptiveLimit | None = None) -> None:
        self.config = config
        self.prices = prices if prices is not None else PriceTable.default()
        self.pacer = pacer
        self._rng = rng or random.Random()
        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._keeper: Any = None

    def __repr__(self) -> str:
        return f"LLMClient({self.config!r})"

    # -- lifecycle
    async def _ensure(self) -> openai.AsyncOpenAI:
        """The AsyncOpenAI for the running loop, built on first use in that loop."""
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            self._abandon()
        if self._client is None:
            cfg = self.config
            client = openai.AsyncOpenAI(
                base_url=cfg.base_url,
                api_key=cfg.resolved_api_key(),
                max_retries=0,              # our retries are the only ones
                timeout=cfg.timeout_s,
                http_client=http_client(cfg),
            )
            self._client, self._loop = client, loop
            self._slots = asyncio.Semaphore(cfg.concurrency)
            self._keeper = self._close_with_loop(client)
            await self._keeper.__anext__()
        return self._client

    async def _close_with_loop(self, client: openai.AsyncOpenAI):
        """An async generator started in the client's loop. asyncio.run() closes open async
        generators before it closes the loop (loop.shutdown_asyncgens), so the client is
        closed in its own loop even when nobody called aclose()."""
        try:
            yield
        finally:
            if self._client is client:
                self._client = self._loop = self._slots = self._keeper = None
            await client.close()

    def _abandon(self) -> None:
        """Forget a client whose event loop is gone (it cannot be closed from another loop)."""
        if self._client is not None:
            log.debug("dropping an AsyncOpenAI client from a previous event loop")
        self._client = self._loop = self._slots = self._keeper = None

    async def aclose(self) -> None:
        """Close the connection pool (call it in the loop that used the client)."""
        if self._client is None:
            return
        if self._loop is asyncio.get_running_loop() and self._keeper is not None:
            await self._keeper.aclose()
        else:
            self._abandon()

    def close(self) -> None:
        """Sync close: from inside the client's loop schedule `aclose()`; otherwise drop it."""
        if self._client is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is self._loop:
            running.create_task(self.aclose())
        else:
            self._abandon()

    async def __aenter__(self) -> "LLMClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- one request
    async def complete(self, prompt: Prompt, sampling: Sampling | None = None) -> Completion:
        """One completion with retries. Raises LLMError only for fatal kinds."""
        client = await self._ensure()
        assert self._slots is not None
        async with self._slots:
            return await self._complete(client, prompt, sampling or Sampling())

    async def _complete(self, client: openai.AsyncOpenAI, prompt: Prompt,
                        sampling: Sampling) -> Completion:
        cfg = self.config
        start = time.perf_counter()
        result, failure, attempts = await self._retrying(
            lambda: self._attempt(client, prompt, sampling), _token_estimate(prompt) + sampling.max_tokens)
        if result is not None:
            result.latency_s = time.perf_counter() - start
            result.attempts = attempts
            return result
        assert failure is not None
        if failure.kind == "unreachable":
            raise LLMError("unreachable", failure.message)
        message = self._final_message(failure, attempts)
        return Completion(text="", finish_reason=None, latency_s=time.perf_counter() - start,
                          attempts=attempts, error=message, error_kind=failure.kind,
                          model=cfg.model)

    async def _retrying(self, attempt: Callable[[], Any], tokens: int) -> tuple[Any, "_Failure | None", int]:
        """The one retry loop (completions and embeddings): (result, None, attempts) on success,
        (None, last failure, attempts) when every attempt failed transiently; a fatal failure
        other than `unreachable` is raised as LLMError at once."""
        cfg = self.config
        failure: _Failure | None = None
        attempts = retry = limited = 0
        first_429: float | None = None     # this request's own storm clock, when there is no pacer
        while True:
            attempts += 1
            if self.pacer is not None:
                await self.pacer.before_attempt(tokens)
            started = time.monotonic()
            try:
                async with asyncio.timeout(cfg.timeout_s):
                    result = await attempt()
            except _Failure as f:
                failure = f
            except TimeoutError:
                failure = _Failure("timeout", "", detail=f"no whole answer within {cfg.timeout_s:g} s")
            else:
                if self.pacer is not None:
                    self.pacer.after_attempt(None, started)
                return result, None, attempts
            if self.pacer is not None:
                self.pacer.after_attempt(failure.kind, started)
            if failure.kind in FATAL_KINDS and failure.kind != "unreachable":
                raise LLMError(failure.kind, failure.message, status=failure.status)
            if failure.kind == "rate_limit":
                # The provider asks us to slow down: wait (its Retry-After, else a growing
                # back-off) and ask again, never counting it as a retry; give up only after the
                # patience of nothing but 429s (run-wide through the pacer).
                now = time.monotonic()
                first_429 = now if first_429 is None else first_429
                storm = self.pacer.rate_limited_for() if self.pacer is not None else now - first_429
                if storm >= cfg.rate_limit_patience_s:
                    raise rate_limit_patience_error(cfg.base_url, cfg.rate_limit_patience_s)
                delay = self._delay(limited, failure.retry_after)
                limited += 1
                if self.pacer is not None:
                    self.pacer.note_wait(delay)
            else:
                if retry >= cfg.max_retries:
                    break
                delay = self._delay(retry, failure.retry_after)
                retry += 1
            log.debug("attempt %d failed (%s: %s); retrying in %.2fs", attempts, failure.kind,
                      failure.detail or failure.message, delay)
            await asyncio.sleep(delay)
        return None, failure, attempts

    async def api_call(self, call: Callable[[], Any]) -> Any:
        """Another call of the same endpoint (the Batch API's files and batches) under the same
        rule for a 429 as completions: wait and ask again, never counted, until the rate-limit
        patience. Any other error is raised as the `openai` package raised it."""
        async def attempt() -> Any:
            try:
                return await call()
            except openai.APIStatusError as exc:
                if is_rate_limit(exc.status_code, exc.code):
                    raise await self._status_failure(None, exc) from None
                raise

        result, failure, attempts = await self._retrying(attempt, 0)
        if failure is not None:
            raise LLMError(failure.kind, self._final_message(failure, attempts), status=failure.status)
        return result

    # -- embeddings
    async def embed(self, texts: Sequence[str]) -> "EmbeddingBatch":
        """Vectors for `texts` from `/embeddings` (one request), with the same slots, pacing,
        retries and cost as a completion. Raises LLMError when it fails for good (fatal kinds
        at once; transient ones after the retries)."""
        client = await self._ensure()
        assert self._slots is not None
        texts = list(texts)
        async with self._slots:
            start = time.perf_counter()
            tokens = sum(math.ceil(len(t) / 4) for t in texts)
            result, failure, attempts = await self._retrying(
                lambda: self._embed_attempt(client, texts, tokens), tokens)
        if result is None:
            assert failure is not None
            message = failure.message if failure.kind == "unreachable" else self._final_message(failure, attempts)
            raise LLMError(failure.kind, message, status=failure.status)
        result.latency_s = time.perf_counter() - start
        result.attempts = attempts
        return result

    async def _embed_attempt(self, client: openai.AsyncOpenAI, texts: list[str], tokens: int) -> "EmbeddingBatch":
        cfg = self.config
        try:
            resp = await client.embeddings.create(model=cfg.model, input=texts)
        except AnswerTooLarge as e:
            raise _Failure("bad_request", f"The embeddings from {cfg.base_url} were larger than "
                           f"{e.limit} bytes for {len(texts)} texts; embed fewer at a time.") from None
        except openai.APIStatusError as e:
            raise await self._status_failure(client, e) from None
        except openai.APIConnectionError as e:
            raise self._connection_failure(e) from None
        except openai.APIResponseValidationError as e:
            raise _Failure("bad_response", "", detail=f"response did not validate: {e}") from None
        except ValueError as e:
            raise _Failure("bad_response", "", detail=f"invalid JSON ({_short(str(e), 80)})") from None
        data = getattr(resp, "data", None)
        if not isinstance(data, list) or len(data) != len(texts):
            got = len(data) if isinstance(data, list) else "no"
            raise _Failure("bad_response", "", detail=f"{got} embeddings for {len(texts)} texts")
        rows: list[Any] = [None] * len(texts)
        for position, item in enumerate(data):
            index = getattr(item, "index", position)
            vector = getattr(item, "embedding", None)
            if not isinstance(index, int) or not 0 <= index < len(texts) or not isinstance(vector, list) or not vector:
                raise _Failure("bad_response", "", detail="an embedding without a valid index or vector")
            rows[index] = vector
        if any(r is None for r in rows) or len({len(r) for r in rows}) != 1:
            raise _Failure("bad_response", "", detail="embeddings missing or of different lengths")
        usage = getattr(resp, "usage", None)
        p_tok = getattr(usage, "prompt_tokens", None) if usage is not None else None
        if not isinstance(p_tok, int):
            p_tok = tokens
        model = getattr(resp, "model", None) or cfg.model
        return EmbeddingBatch(vectors=rows, prompt_tokens=p_tok, cost_usd=self._cost(model, p_tok, 0), model=model)

    def _delay(self, retry: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:
            return min(retry_after, cfg.backoff_max_s)
        ceiling = min(cfg.backoff_max_s, cfg.backoff_base_s * (2 ** min(retry, 30)))
        return self._rng.uniform(0.0, ceiling)

    async def _attempt(self, client: openai.AsyncOpenAI, prompt: Prompt,
                       sampling: Sampling) -> Completion:
        cfg = self.config
        body = request_body(cfg, prompt, sampling)
        try:
            if cfg.mode == "chat":
                resp = await client.chat.completions.create(**body)
            else:
                resp = await client.completions.create(**body)
        except AnswerTooLarge as e:
            return Completion(text=e.partial.decode("utf-8", errors="replace"), finish_reason="oversize",
                              completion_tokens=math.ceil(len(e.partial) / 4),
                              prompt_tokens=_token_estimate(prompt), model=cfg.model, oversize=True)
        except openai.APIStatusError as e:
            raise await self._status_failure(client, e) from None
        except openai.APIConnectionError as e:       # includes APITimeoutError
            raise self._connection_failure(e) from None
        except openai.APIResponseValidationError as e:
            raise _Failure("bad_response", "", detail=f"response did not validate: {e}") from None
        except ValueError as e:                      # JSONDecodeError: empty or invalid JSON body
            raise _Failure("bad_response", "", detail=f"invalid JSON ({_short(str(e), 80)})") from None
        return self._to_completion(resp, prompt)

    def _to_completion(self, resp: Any, prompt: Prompt) -> Completion:
        cfg = self.config
        choices = getattr(resp, "choices", None)
        if isinstance(resp, str) or not isinstance(choices, list) or not choices:
            raise _Failure("bad_response", "", detail="no choices in the response")
        choice = choices[0]
        if cfg.mode == "chat":
            message = getattr(choice, "message", None)
            if message is None:
                raise _Failure("bad_response", "", detail="a choice without a message")
            text = getattr(message, "content", None)
        else:
            text = getattr(choice, "text", None)
        if text is not None and not isinstance(text, str):
            raise _Failure("bad_response", "", detail="the answer text is not a string")
        text = text or ""
        finish = getattr(choice, "finish_reason", None)
        usage = getattr(resp, "usage", None)
        p_tok = getattr(usage, "prompt_tokens", None) if usage is not None else None
        c_tok = getattr(usage, "completion_tokens", None) if usage is not None else None
        # Servers that report no usage get the same rough estimate the offline server uses.
        if not isinstance(p_tok, int):
            sent = prompt.full_text() if cfg.mode == "chat" else prompt.text
            p_tok = math.ceil(len(sent) / 4)
        if not isinstance(c_tok, int):
            c_tok = math.ceil(len(text) / 4)
        model = getattr(resp, "model", None) or cfg.model
        return Completion(text=text, finish_reason=finish, prompt_tokens=p_tok,
                          completion_tokens=c_tok, cost_usd=self._cost(model, p_tok, c_tok),
                          model=model)

    def completion_from_body(self, body: Any, prompt: Prompt) -> Completion:
        """A Completion from an answer body delivered another way (a batch output line).
        Raises LLMError("bad_response") when it is not a readable completion."""
        try:
            if self.config.mode == "chat":
                from openai.types.chat import ChatCompletion as shape
            else:
                from openai.types import Completion as shape
            return self._to_completion(shape.model_validate(body), prompt)
        except _Failure as f:
            raise LLMError("bad_response", f"An answer could not be read ({f.detail}).") from None
        except Exception as exc:  # pydantic's ValidationError and friends
            raise LLMError("bad_response", f"An answer could not be read ({_short(str(exc), 120)}).") from None

    def _cost(self, model: str, p_tok: int, c_tok: int) -> float:
        if self.config.model in self.prices:
            return self.prices.cost(self.config.model, p_tok, c_tok)
        return self.prices.cost(model, p_tok, c_tok)

    # -- classification
    async def _status_failure(self, client: openai.AsyncOpenAI | None,
                              err: openai.APIStatusError) -> _Failure:
        cfg = self.config
        url, status = cfg.base_url, err.status_code
        code = (err.code or "").lower()
        said = _server_message(err)
        detail = f"{status} {code}".strip() + (f": {said}" if said else "")
        if status == 401:
            extra = ""
            if cfg.api_key_source() == "placeholder":
                extra = (f" No key was given, so the placeholder '{PLACEHOLDER_API_KEY}' was "
                         f"sent.")
            return _Failure("auth", f"The endpoint at {url} rejected the API key (401).{extra} "
                            f"Check OPENAI_API_KEY or the key field.", status=401, detail=detail)
        if status == 403:
            return _Failure("auth", f"The endpoint at {url} refused this API key access "
                            f"(403 permission denied). Check that the key may use model "
                            f"'{cfg.model}'.", status=403, detail=detail)
        if status == 429 and not is_rate_limit(status, code):
            return _Failure("auth", f"The account behind this API key at {url} has no quota "
                            f"left (429 insufficient_quota). Check billing or the plan, then "
                            f"resume.", status=429, detail=detail)
        if status == 429:
            return _Failure("rate_limit", "", status=429,
                            retry_after=_retry_after(err.response.headers), detail=detail)
        if status >= 500 or status in (408, 409):
            return _Failure("server", "", status=status,
                            retry_after=_retry_after(err.response.headers), detail=detail)
        if status == 404 and client is not None:
            return await self._not_found_failure(client, said, code, detail)
        if code == "context_length_exceeded" or (
                status in (400, 413) and re.search(r"context (length|window)|too long|maximum "
                                                   r"context", said, re.I)):
            return _Failure("context_length",
                            f"The prompt is too long for model '{cfg.model}' at {url} ({status} "
                            f"context_length_exceeded): {_short(said)} Use fewer in-context "
                            f"examples, a smaller max_tokens, or a model with a longer context.",
                            status=status, detail=detail)
        return _Failure("bad_request",
                        f"The endpoint at {url} refused the request ({status}"
                        f"{' ' + code if code else ''}): {_short(said) or 'no reason given'}. "
                        f"Check the sampling settings and the mode ('{cfg.mode}') for this "
                        f"server.", status=status, detail=detail)

    async def _not_found_failure(self, client: openai.AsyncOpenAI, said: str, code: str,
                                 detail: str) -> _Failure:
        cfg = self.config
        url = cfg.base_url
        try:
            models = await self._list_models(client)
        except (LLMError, _Failure):
            models = None
        if models is not None and cfg.model in models:
            other = "chat" if cfg.mode == "completion" else "completion"
            return _Failure("bad_request",
                            f"The endpoint at {url} lists model '{cfg.model}' but answered 404 "
                            f"for a {cfg.mode} request: {_short(said) or 'not found'}. Try mode "
                            f"'{other}', or check the base URL.", status=404, detail=detail)
        if models is not None or code == "model_not_found" or "model" in said.lower():
            return _Failure("model_not_found", self._no_such_model(models), status=404,
                            detail=detail)
        return _Failure("bad_request",
                        f"The endpoint at {url} answered 404 Not Found: "
                        f"{_short(said) or 'no such path'}. Check the base URL (it usually ends "
                        f"in /v1).", status=404, detail=detail)

    def _no_such_model(self, models: list[str] | None) -> str:
        cfg = self.config
        if models is None:
            listing = "the list of models there could not be read"
        elif not models:
            listing = "it lists no models"
        else:
            shown = ", ".join(models[:20]) + (f" (and {len(models) - 20} more)" if len(models) > 20 else "")
            listing = f"models there: {shown}"
        return f"No model named '{cfg.model}' at {cfg.base_url}; {listing}."

    def _connection_failure(self, err: openai.APIConnectionError) -> _Failure:
        cfg = self.config
        reason = _connect_reason(err)
        if reason is not None:
            return _Failure("unreachable", f"Could not reach {cfg.base_url}: {reason}. Is the "
                            f"server running, and is the base URL right?", detail=reason)
        if isinstance(err, openai.APITimeoutError):
            return _Failure("timeout", "", detail=f"no answer within {cfg.timeout_s:g} s")
        cause = err.__cause__
        return _Failure("server", "", detail=f"the connection dropped "
                        f"({type(cause).__name__ if cause else 'connection error'})")

    def _final_message(self, f: _Failure, attempts: int) -> str:
        cfg = self.config
        url = cfg.base_url
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if f.kind == "rate_limit":
            return (f"Still rate-limited by {url} (429) after {tries}. Lower the concurrency "
                    f"or wait a while and resume.")
        if f.kind == "timeout":
            return (f"No answer from {url} within {cfg.timeout_s:g} s ({tries}). Raise the "
                    f"timeout, lower max_tokens or the concurrency, or check the server's load.")
        if f.kind == "bad_response":
            return (f"The endpoint at {url} did not return a readable completion ({f.detail}; "
                    f"{tries}). Check that it is an OpenAI-compatible server and the mode "
                    f"('{cfg.mode}') is right.")
        return (f"The endpoint at {url} kept failing ({_short(f.detail, 200)}) after {tries}. "
                f"Try again later.")

    # -- many requests
    async def complete_many(
        self,
        prompts: Iterable[Prompt],
        sampling: Sampling | None = None,
        on_result: Callable[[int, Completion], Any] | None = None,
    ) -> list[Completion]:
        """Complete every prompt with at most ``config.concurrency`` requests in flight.

        Results come back in input order; ``on_result(index, completion)`` (sync or async) is
        called as each finishes. A fatal LLMError (or an exception from on_result) cancels the
        rest and is raised.
        """
        items = list(prompts)
        sampling = sampling or Sampling()
        results: list[Completion | None] = [None] * len(items)
        if not items:
            return []
        await self._ensure()
        next_index = iter(range(len(items)))

        async def worker() -> None:
            for i in next_index:
                completion = await self.complete(items[i], sampling)
                results[i] = completion
                if on_result is not None:
                    out = on_result(i, completion)
                    if inspect.isawaitable(out):
                        await out

        workers = [asyncio.create_task(worker()) for _ in range(min(self.config.concurrency, len(items)))]
        try:
            done, pending = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in workers:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return results  # type: ignore[return-value]

    # -- models and connection test
    async def _list_models(self, client: openai.AsyncOpenAI) -> list[str]:
        try:
            page = await client.models.list()
        except openai.APIStatusError as e:
            raise await self._models_status_error(e) from None
        except openai.APIConnectionError as e:
            f = self._connection_failure(e)
            if f.kind == "unreachable":
                raise LLMError("unreachable", f.message) from None
            raise LLMError(f.kind, f"Listing the models at {self.config.base_url} failed: "
                           f"{f.detail}.") from None
        except ValueError as e:
            raise LLMError("bad_response", f"The endpoint at {self.config.base_url} answered the "
                           f"model list with something that is not JSON ({_short(str(e), 80)}). "
                           f"Is it an OpenAI-compatible server?") from None
        data = getattr(page, "data", None)
        if not isinstance(data, list):
            raise LLMError("bad_response", f"The endpoint at {self.config.base_url} answered the "
                           f"model list in an unexpected shape. Is the base URL right (usually "
                           f"ending in /v1)?")
        return [str(getattr(m, "id", m)) for m in data]

    async def _models_status_error(self, err: openai.APIStatusError) -> LLMError:
        cfg = self.config
        status = err.status_code
        if status in (401, 403):
            f = await self._status_failure(None, err)
            return LLMError("auth", f.message, status=status)
        if status == 404:
            return LLMError("bad_request", f"The endpoint at {cfg.base_url} has no model list "
                            f"(404 for /models). Check the base URL (it usually ends in /v1).",
                            status=404)
        if status == 429:
            return LLMError("rate_limit", f"The endpoint at {cfg.base_url} is rate-limiting "
                            f"(429). Wait a moment and try again.", status=429)
        if status >= 500:
            return LLMError("server", f"The endpoint at {cfg.base_url} failed to list its models "
                            f"({status}). Try again later.", status=status)
        return LLMError("bad_request", f"The endpoint at {cfg.base_url} refused to list its "
                        f"models ({status}): {_short(_server_message(err)) or 'no reason given'}.",
                        status=status)

    async def list_models(self) -> list[str]:
        """Model ids the endpoint offers (no retries). Raises LLMError in plain words."""
        return await self._list_models(await self._ensure())

    async def check(self) -> str:
        """Test the connection: the endpoint answers, the key works and the model is there.

        Returns a one-line success message; raises LLMError otherwise. When the server has
        no model list (404), a one-token completion is tried instead.
        """
        cfg = self.config
        try:
            models = await self.list_models()
        except LLMError as e:
            if not (e.kind == "bad_request" and e.status == 404):
                raise
            probe = Prompt(stage="check", version="check-v1", text="Reply with OK.")
            result = await self.complete(probe, Sampling(temperature=0.0, top_p=1.0, max_tokens=1,
                                                         presence_penalty=0.0))
            if result.error:
                raise LLMError(result.error_kind or "server", result.error) from None
            return (f"Connected to {cfg.base_url}: model '{cfg.model}' answered "
                    f"(the server has no model list).")
        if cfg.model not in models:
            raise LLMError("model_not_found", self._no_such_model(models), status=404)
        return (f"Connected to {cfg.base_url}: model '{cfg.model}' is available "
                f"({len(models)} model{'s' if len(models) != 1 else ''} listed).")

    # -- sync wrappers (UI, CLI)
    def _run_sync(self, method: str) -> Any:
        """Run one async method to completion on a private client and event loop.

        A separate LLMClient is used so that a job running this client in another loop or
        thread is never disturbed. Works from inside a running loop too (via a helper thread).
        """
        helper = LLMClient(self.config, self.prices, rng=self._rng)

        async def scoped() -> Any:
            try:
                return await getattr(helper, method)()
            finally:
                await helper.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(scoped())
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = asyncio.run(scoped())
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = e

        t = threading.Thread(target=run, name="llm-sync", daemon=True)
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def list_models_sync(self) -> list[str]:
        """`list_models()` for synchronous callers (UI, CLI)."""
        return self._run_sync("list_models")

    def check_sync(self) -> str:
        """`check()` for synchronous callers (UI, CLI)."""
        return self._run_sync("check")
