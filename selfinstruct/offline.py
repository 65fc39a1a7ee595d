"""A loopback OpenAI-compatible HTTP server: the offline demo backend and the test double.

Standard library only. `OfflineServer` runs a `ThreadingHTTPServer` (HTTP/1.1, keep-alive,
one thread per connection) in a daemon thread and answers

    GET  /v1/models                  OpenAI list shape
    GET  /v1/models/{id}             one model
    POST /v1/chat/completions        chat.completion objects
    POST /v1/completions             text_completion objects
    POST /v1/embeddings              deterministic word-hash vectors (see `offline_embedding`)
    POST /v1/files                   upload (multipart/form-data: ``file``, ``purpose``)
    GET  /v1/files                   list;  GET /v1/files/{id}  one file object
    GET  /v1/files/{id}/content      the raw bytes;  DELETE /v1/files/{id}
    POST /v1/batches                 create a batch (Batch API, see below)
    GET  /v1/batches                 list;  GET /v1/batches/{id}  one batch
    POST /v1/batches/{id}/cancel     cancel a batch
    POST /_control/faults            test control: {"clear", "push", "rates", "rate_params",
                                     "seed", "latency_s", "latency_dist"}
    GET  /_control/faults            the current fault plan
    POST /_control/batches           batch test control (see below); GET shows it
    GET  /_control/stats             request counters (see `OfflineServer.stats`)
    POST /_control/reset_stats       zero the counters

Answers come from a *responder*: any callable ``(text, request_seed) -> str``. With no
responder the server loads ``selfinstruct.demo.DemoModel(seed=seed)`` lazily. Chat requests
hand the responder the message contents joined with a blank line (system first); completion
requests hand it the prompt. Responder calls are serialised by a lock (so a responder need not
be thread-safe); latency and slow faults wait outside that lock, so requests still overlap.
The ``/_control`` endpoints need no key: they are a loopback test hook. Every ``/v1`` endpoint
checks the key when the server has one.

Latency (completion endpoints only, settable at runtime): a constant ``latency_s`` plus, when
a distribution is set (``FaultPlan.set_latency_distribution(median_s, sigma, seed)``), a
lognormal delay ``median_s * exp(sigma * z)``. ``z`` is a standard normal obtained from a hash
of the canonical request body mixed with the distribution's seed -- not from arrival order --
so a given body always waits the same time for a given seed, and changing the seed reorders
concurrent answers without changing them. An optional ``max_s`` caps the drawn part.

Determinism: the request seed is the request's own ``seed`` field when given, otherwise a hash
of the canonical request body; either is mixed with the server seed. With ``n > 1`` choice ``i``
uses ``request_seed + i``. The same body therefore always gets the same answer.

Token counts are estimates: ``ceil(characters / 4)`` (0 for empty text). ``max_tokens`` (or
``max_completion_tokens``) cuts the answer at ``4 * max_tokens`` characters with
``finish_reason="length"``; ``stop`` cuts at the earliest occurrence of any stop string with
``finish_reason="stop"``. A prompt whose estimate exceeds ``context_window`` (16,384 by
default) gets a 400 ``context_length_exceeded``.

Structured output: a chat request with ``response_format`` ``{"type": "json_schema",
"json_schema": {"schema": ...}}`` is answered with JSON that matches the schema, as a
grammar-bound server (llama.cpp, vLLM) would: the responder's text answer is read with the
project's own parsers and written in the schema's shape (`json_answer`); ``json_object`` gets
the same for the stage's own schema when the prompt is one of ours. ``structured_output=False``
makes the server refuse both with a 400, like a server that does not know the parameter;
``"ignore"`` makes it accept the parameter and answer plain text anyway, as some do.

Judge prompts (`prompts.build_judge_prompt`) are answered by the offline judge, whatever the
responder: `judge_truth` is each item's true answer to the quality questions (a hash of its texts,
"yes" at about the paper's rates), and the answer flips each truth with probability
``judge_error`` (``OfflineServer(judge_error=0.1, judge_seed=...)``, ``--judge-error`` on the
command line); `judge_answer` is exactly what is said, in the text layout, as a continuation of
the open label in completion mode, or as JSON when a schema is asked for.

Faults (`FaultPlan`) apply to the two completion endpoints only, after authentication and
request validation (so a 404/400 never consumes a queued fault). Queued faults and drawn rates
accept the same kinds and parameters:

* ``429`` (Retry-After: ``retry_after`` s, default 1; ``code`` "insufficient_quota" for an account
  with no quota left), ``500``, ``503``, ``401``;
* ``timeout`` / ``slow``: sleep ``seconds`` before answering (defaults 10 s / 1 s);
* ``length``: the answer cut to ``fraction`` of its length (default 0.5), finish "length";
* ``garbage``: random junk instead of the answer; ``empty``: 200 with an empty body;
  ``malformed_json``: 200 with invalid JSON;
* ``hang``: never answers -- waits ``seconds`` (default 3600) or until the server stops, then
  closes the connection without a word;
* ``trickle``: status line and headers at once with ``Content-Length`` =
  max(answer size, ``size``) (default 1,000,000; the real answer padded with trailing
  spaces), then one body byte every ``interval`` s (default 1.0) for at most ``seconds``
  (default 3600), then the connection is closed. A client whose timeout is per read never
  times out. A trickle that does deliver every byte is a valid answer;
* ``huge``: a normal 200 completion whose answer text is ``size`` UTF-8 bytes long (default
  5,000,000): the real answer plus a space, repeated, then padded with spaces. It is streamed
  out piecewise, never held in memory whole;
* ``reset``: the TCP connection is reset (SO_LINGER 0) without any answer;
* ``html``: a 502 whose body is an HTML error page (Content-Type text/html), like a proxy's;
* ``leak_auth``: a 500 whose message quotes the request's ``Authorization`` header, the bare key
  and its last 10 characters, as some gateways do (for tests that no key is ever stored or shown).

Batch API (in memory). ``POST /v1/files`` stores a file; ``POST /v1/batches`` with
``{"input_file_id", "endpoint", "completion_window": "24h", "metadata"?}`` creates a batch. A
missing input file, an endpoint other than ``/v1/chat/completions`` / ``/v1/completions`` or
another window than "24h" is a 400; problems inside the file (a line that is not JSON, lacks a
unique ``custom_id``, has ``method`` other than "POST", a ``url`` other than the endpoint, or
no ``body`` object) make the *batch* ``failed`` with ``errors.data`` naming the lines (1-based).
Batches progress lazily, evaluated whenever they are read (no threads, nothing to stop), on a
clock of ``delay_s`` seconds from creation (default ``batch_delay_s`` = 0.2 s): the create call
always answers ``validating``; from 20 % of the delay the batch is ``in_progress``; at 80 %
every line is answered -- exactly as the synchronous endpoint answers that body (same
determinism, same responder lock), but without latency or per-request faults -- and the batch
is ``finalizing``; at 100 % it is ``completed`` (each ``*_at`` stamp set). Successful lines go
to the output file, failed ones (a 4xx/5xx answer) to the error file, each as
``{"id": "batch_req_...", "custom_id", "response": {"status_code", "request_id", "body"},
"error": null}``; a file that would be empty is not created (its id stays null). Both files
have purpose "batch_output". Cancelling a validating or in-progress batch makes it
``cancelling`` and, on the next read, ``cancelled``: the lines done by then (in proportion to
the time spent in progress) are answered, the rest go to the error file with
``"response": null, "error": {"code": "batch_cancelled", ...}``. Cancelling any other batch is
a 409. ``request_counts.failed`` counts answered lines that failed, not expired or cancelled
ones.

Batch test control (``POST /_control/batches`` or ``OfflineServer.batch_faults``):
``delay_s`` (persistent), ``fail_lines`` N (the next batch's first N lines fail with 500),
``fail_rate`` + ``seed`` (persistent; a line fails when a hash of seed and ``custom_id`` falls
below the rate), ``expire_next`` K (the next batch ends ``expired``: lines 0..K-1 are answered,
the rest go to the error file with code ``batch_expired``), ``fail_next`` (the next batch ends
``failed`` with an error instead of finalizing), ``fail_status`` (persistent; the status failed
lines answer with, 500 by default, 429 for a provider that rate-limits lines), ``leak_auth`` (persistent; failed lines and
failed batches quote the ``Authorization`` header the batch was created with), ``clear`` (back to
the defaults; applied first).
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
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from email import policy as _email_policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import NormalDist
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs

__all__ = [
    "FAULT_KINDS",
    "json_answer",
    "example_for_schema",
    "DEFAULT_CONTEXT_WINDOW",
    "DEFAULT_BATCH_DELAY",
    "BATCH_ENDPOINTS",
    "Fault",
    "FaultPlan",
    "OfflineServer",
    "estimate_tokens",
    "offline_embedding",
    "EMBEDDING_MODEL",
    "EMBEDDING_DIM",
    "serve_forever",
    "main",
    "judge_truth",
    "judge_answer",
    "judge_mistakes",
    "judge_reply",
    "eval_skill",
    "eval_truth",
    "eval_answer_text",
    "eval_answer_level",
    "eval_rating_answer",
    "eval_reply",
]

FAULT_KINDS = (
    "429", "500", "503", "401",
    "timeout", "slow",
    "length", "garbage", "empty", "malformed_json",
    "hang", "trickle", "huge", "reset", "html", "leak_auth",
)
DEFAULT_CONTEXT_WINDOW = 16_384
DEFAULT_MODEL = "selfinstruct-demo"
_DEFAULT_SLEEP = {"timeout": 10.0, "slow": 1.0, "hang": 3600.0, "trickle": 3600.0}
_DEFAULT_TRICKLE_INTERVAL = 1.0
_DEFAULT_TRICKLE_SIZE = 1_000_000
_DEFAULT_HUGE_SIZE = 5_000_000
DEFAULT_BATCH_DELAY = 0.2
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
_BATCH_WINDOW_S = 24 * 3600
_STD_NORMAL = NormalDist()

Responder = Callable[[str, int], str]


EMBEDDING_MODEL = "offline-embedding"   # the name `/v1/embeddings` answers besides the server's models
EMBEDDING_DIM = 64


def offline_embedding(text: str) -> list[float]:
    """The offline server's vector for `text`: the sum of a fixed pseudo-random vector per
    lower-cased word (from its BLAKE2b digest), scaled to length 1. Deterministic in every
    process, and texts sharing most words come out close, so a semantic gate can be tested."""
    total = [0.0] * EMBEDDING_DIM
    for word in "".join(ch.lower() if ch.isalnum() else " " for ch in text).split():
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=EMBEDDING_DIM).digest()
        for k, byte in enumerate(digest):
            total[k] += byte - 127.5
    norm = math.sqrt(sum(v * v for v in total)) or 1.0
    return [v / norm for v in total]


def estimate_tokens(text: str) -> int:
    """Rough token count used for usage and the context check: ceil(chars / 4)."""
    return math.ceil(len(text) / 4) if text else 0


def _canonical(body: Any) -> str:
    """A stable text form of a request body (dicts with sorted keys)."""
    if isinstance(body, bytes):
        return body.decode("utf-8", "surrogateescape")
    if isinstance(body, str):
        return body
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def _unit_hash(material: str) -> float:
    """A uniform number strictly inside (0, 1) derived from `material` (53 bits of sha256)."""
    k = int.from_bytes(hashlib.sha256(material.encode("utf-8", "surrogateescape")).digest()[:7],
                       "big") >> 3
    return (k + 0.5) / float(1 << 53)


# --------------------------------------------------------------------------- the offline judge
# Judge prompts (prompts.build_judge_prompt) are answered by a judge whose truth and mistakes are
# known, so tests can measure a judge run against the right answers: `judge_truth` gives each item's
# true answer to each question (a stable hash of its texts, "yes" at about the paper's rates: 92 /
# 79 / 58 %), and the server's answer flips each truth with probability `judge_error` (again by a
# hash, mixed with `judge_seed`): `judge_answer` is exactly what the server says.

JUDGE_REASON = "The offline judge's fixed answer for this item (a test double, not a language model)."


def _judge_texts(instruction: str, input_text: str, output: str) -> tuple[str, str, str]:
    from .prompts import NO_INPUT

    texts = [" ".join(str(t or "").split()) for t in (instruction, input_text, output)]
    if texts[1] == NO_INPUT:
        texts[1] = ""          # how the judge prompt writes an empty input
    return texts[0], texts[1], texts[2]


def judge_truth(instruction: str, input_text: str, output: str) -> dict[str, str]:
    """The true answer ("yes" or "no") to each quality question (model.QUESTIONS) for one item:
    "valid task" from the instruction alone, the other two from the whole item. Whitespace does
    not matter; an input of "(none)" counts as empty."""
    from .model import NO, PAPER_RATES, QUESTIONS, YES

    texts = _judge_texts(instruction, input_text, output)
    answers = {}
    for question in QUESTIONS:
        material = texts[0] if question == "valid_task" else "\x1f".join(texts)
        answers[question] = YES if _unit_hash(f"judge-truth|{question}|{material}") < PAPER_RATES[question] else NO
    return answers


def judge_mistakes(instruction: str, input_text: str, output: str, *, error: float,
                   seed: int = 0) -> dict[str, bool]:
    """Which questions the offline judge gets wrong for this item at error rate `error`."""
    from .model import QUESTIONS

    key = "\x1f".join(_judge_texts(instruction, input_text, output))
    return {q: _unit_hash(f"judge-error|{seed}|{q}|{key}") < error for q in QUESTIONS}


def judge_answer(instruction: str, input_text: str, output: str, *, error: float = 0.0,
                 seed: int = 0) -> dict[str, str]:
    """What the offline judge answers: the truth, with the mistakes of `judge_mistakes` flipped."""
    from .model import NO, YES

    truth = judge_truth(instruction, input_text, output)
    wrong = judge_mistakes(instruction, input_text, output, error=error, seed=seed)
    return {q: ({YES: NO, NO: YES}[a] if wrong[q] else a) for q, a in truth.items()}


def judge_reply(text: str, *, error: float = 0.0, seed: int = 0, completion: bool = False) -> str | None:
    """The offline judge's text answer to a rendered judge prompt (None: not a judge prompt, or
    its item cannot be read). `completion`: continue the prompt's open label instead."""
    from .prompts import JUDGE_HEAD, render_judge_answer

    if JUDGE_HEAD not in text:
        return None
    from .parsing import read_prompt

    payload = read_prompt(text)
    if payload is None or payload.stage != "judge" or payload.item is None:
        return None
    item = payload.item
    answer = render_judge_answer(judge_answer(item["instruction"], item["input"], item["output"],
                                              error=error, seed=seed), JUDGE_REASON)
    if completion and not payload.structured:
        return answer.split(":", 1)[1]      # " yes\nInput appropriate: ..." after "Valid task:"
    return answer


# --------------------------------------------------------------------------- the offline evaluation
# The paper's evaluation of models (selfinstruct/evaluate.py) against known answers. Each model name
# has a skill (`eval_skill`, a hash of the name in (0, 1); higher writes better answers); the true
# level of its answer to a request (`eval_truth`, A-D) is drawn by a hash of (model, request) from
# level odds that grow with the skill, and the answer's text (`eval_answer_text`) says it in one of
# four fixed shapes that `eval_answer_level` reads back, so a rater (the offline judge, or a test)
# knows the truth from the answer alone, without the model's name. The offline judge rates an
# answer with its true level, moved to another level with probability `judge_error`
# (`eval_rating_answer`), like the quality judge.

EVAL_REASON = "The offline rater's fixed grade for this answer (a test double, not a language model)."
_EVAL_SHAPES = {
    "A": "Here is a complete answer to \"{topic}\": every part of the request is covered, step by step, "
         "and the result is checked at the end.",
    "B": "Here is an answer to \"{topic}\": the main points are covered, though one small detail is "
         "left out.",
    "C": "About \"{topic}\": this reply starts on the request but gets several important facts wrong.",
    "D": "Sorry, I would rather talk about the weather than about \"{topic}\".",
}


def eval_skill(model: str) -> float:
    """How well the offline model `model` answers, in (0, 1): a hash of its name."""
    return _unit_hash(f"eval-skill|{model}")


def eval_truth(model: str, instruction: str, input_text: str = "") -> str:
    """The true level (A-D) of the offline model's answer to one request."""
    from .prompts import eval_request_text

    return _eval_level(model, eval_request_text(instruction, input_text))


def _eval_level(model: str, request: str) -> str:
    skill = eval_skill(model)
    u = _unit_hash(f"eval-truth|{model}|{' '.join(request.split())}")
    bounds = (0.10 + 0.60 * skill, 0.40 + 0.40 * skill, 0.70 + 0.25 * skill)
    return next((level for level, bound in zip("ABC", bounds) if u < bound), "D")


def eval_answer_text(level: str, request: str) -> str:
    """The offline model's answer of `level` to `request` (its first words name the topic)."""
    words = " ".join(request.split()).replace('"', "'").split()
    topic = " ".join(words[:6]) + (" ..." if len(words) > 6 else "")
    return _EVAL_SHAPES[level].format(topic=topic)


def eval_answer_level(answer: str) -> str | None:
    """The level an offline answer was written at (None: not one of the offline shapes)."""
    text = " ".join((answer or "").split())
    for level, shape in _EVAL_SHAPES.items():
        head, tail = shape.split("{topic}")
        if text.startswith(head) and text.endswith(tail):
            return level
    return None


def eval_rating_answer(instruction: str, input_text: str, answer: str, *, error: float = 0.0,
                       seed: int = 0) -> str:
    """What the offline judge rates an answer: its true level (from the answer's shape; for any
    other text, a hash of it), moved to another level with probability `error`."""
    key = "\x1f".join(" ".join(str(t or "").split()) for t in (instruction, input_text, answer))
    truth = eval_answer_level(answer) or "ABCD"[min(3, int(_unit_hash(f"eval-other|{key}") * 4))]
    if _unit_hash(f"eval-error|{seed}|{key}") >= error:
        return truth
    others = [level for level in "ABCD" if level != truth]
    return others[min(2, int(_unit_hash(f"eval-wrong|{seed}|{key}") * 3))]


def eval_reply(text: str, model: str, *, structured: bool = False, error: float = 0.0,
               seed: int = 0) -> str | None:
    """The offline server's answer to an evaluation prompt (None: not one): an answer prompt gets
    `model`'s answer; a rating prompt gets the offline judge's rating (JSON when `structured`)."""
    from .parsing import read_eval_answer_prompt, read_eval_rate_prompt
    from .prompts import EVAL_RATING_LABEL, JUDGE_REASON_LABEL

    request = read_eval_answer_prompt(text)
    if request is not None:
        return eval_answer_text(_eval_level(model, request), request)
    item = read_eval_rate_prompt(text)
    if item is None:
        return None
    rating = eval_rating_answer(item["instruction"], item["input"], item["answer"], error=error, seed=seed)
    if structured:
        return json.dumps({"rating": rating, "reason": EVAL_REASON})
    if item["open"]:
        return f" {rating}\n{JUDGE_REASON_LABEL}: {EVAL_REASON}"
    return f"{EVAL_RATING_LABEL}: {rating}\n{JUDGE_REASON_LABEL}: {EVAL_REASON}"


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

    Also carries the extra latency added before every completion: the constant
    ``latency_s`` plus, optionally, a per-body lognormal draw
    (``set_latency_distribution(median_s, sigma, seed)``); see `latency_for`.
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
        self._latency_dist: dict | None = None
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

    def set_latency_distribution(self, median_s: float | None, sigma: float = 0.5,
                                 seed: int = 0, max_s: float | None = None) -> "FaultPlan":
        """Add a lognormal delay to every completion: ``median_s * exp(sigma * z)`` where ``z``
        is a standard normal derived from a hash of (``seed``, request body). ``max_s`` caps
        the draw. ``median_s=None`` turns the distribution off."""
        if median_s is None:
            with self._lock:
                self._latency_dist = None
            return self
        median_s, sigma = float(median_s), float(sigma)
        if not (median_s > 0 and math.isfinite(median_s)):
            raise ValueError("latency median_s must be a positive number")
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError("latency sigma must be >= 0")
        if isinstance(seed, bool) or not isinstance(seed, int):
            if isinstance(seed, float) and seed.is_integer():
                seed = int(seed)
            else:
                raise ValueError("latency seed must be an integer")
        if max_s is not None:
            max_s = float(max_s)
            if not max_s >= 0:
                raise ValueError("latency max_s must be >= 0")
        dist = {"median_s": median_s, "sigma": sigma, "seed": int(seed), "max_s": max_s}
        with self._lock:
            self._latency_dist = dist
        return self

    @property
    def latency_distribution(self) -> dict | None:
        """The lognormal settings ({"median_s", "sigma", "seed", "max_s"}) or None."""
        with self._lock:
            return dict(self._latency_dist) if self._latency_dist else None

    def latency_for(self, body: Any) -> float:
        """Seconds to wait before answering `body` (a request dict, or its text): the constant
        ``latency_s`` plus the distribution's draw for this body. Independent of call order."""
        with self._lock:
            dist = self._latency_dist
        extra = 0.0
        if dist is not None:
            u = _unit_hash(f"latency|{dist['seed']}|{_canonical(body)}")
            extra = dist["median_s"] * math.exp(dist["sigma"] * _STD_NORMAL.inv_cdf(u))
            if dist["max_s"] is not None:
                extra = min(extra, dist["max_s"])
        return self._latency_s + extra

    def clear(self) -> "FaultPlan":
        """Drop queued faults and rates (latency and its distribution stay)."""
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
                "latency_dist": dict(self._latency_dist) if self._latency_dist else None,
            }

    def apply(self, spec: dict) -> dict:
        """Apply a control document: {"clear", "push", "rates", "rate_params", "seed",
        "latency_s", "latency_dist"}; clear first, then push, then rates, then latency.
        ``latency_dist`` is {"median_s", "sigma"?, "seed"?, "max_s"?} or null (off)."""
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
        if "latency_dist" in spec:
            dist = spec["latency_dist"]
            if dist is None:
                self.set_latency_distribution(None)
            elif isinstance(dist, dict) and "median_s" in dist:
                unknown = set(dist) - {"median_s", "sigma", "seed", "max_s"}
                if unknown:
                    raise ValueError(f"unknown latency_dist keys: {', '.join(sorted(unknown))}")
                if dist["median_s"] is None:
                    raise ValueError('"latency_dist" needs a number "median_s"')
                try:
                    self.set_latency_distribution(dist["median_s"], dist.get("sigma", 0.5),
                                                  dist.get("seed", 0), dist.get("max_s"))
                except TypeError as e:
                    raise ValueError(str(e)) from None
            else:
                raise ValueError('"latency_dist" must be null or an object with "median_s"')
        return self.snapshot()

    def __repr__(self) -> str:
        snap = self.snapshot()
        return (f"FaultPlan(queue={snap['queue']}, rates={snap['rates']}, "
                f"latency_s={snap['latency_s']}, latency_dist={snap['latency_dist']})")


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


def _json_object(body: bytes) -> dict:
    """A request body that must be a JSON object, or the 400 OpenAI answers otherwise."""
    try:
        req = json.loads(body or b"null")
    except ValueError:
        raise _HTTPError(400, "We could not parse the JSON body of your request.",
                         "invalid_request_error", None) from None
    if not isinstance(req, dict):
        raise _HTTPError(400, "The request body must be a JSON object.", "invalid_request_error", None)
    return req


def _stage_schema(text: str) -> dict | None:
    from .parsing import read_prompt
    from .prompts import response_schema

    payload = read_prompt(text)
    if payload is None:
        return None
    return response_schema(payload.stage, num_to_generate=payload.num_to_generate,
                           is_classification=bool(payload.is_classification))


def example_for_schema(schema: dict) -> Any:
    """The plainest value that matches a (simple) JSON schema: what a grammar-bound model
    writes when the prompt gives it nothing to go on."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: example_for_schema(v) for k, v in props.items()}
    if kind == "array":
        return [example_for_schema(schema.get("items") or {})] * int(schema.get("minItems") or 0)
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return 0
    if kind == "null":
        return None
    return ""


def json_answer(schema: dict, prompt_text: str, answer: str) -> str:
    """The responder's text-layout `answer` to one of our prompts, as JSON in `schema`'s shape
    (read with the project's forgiving parsers); any other prompt gets `example_for_schema`."""
    from . import parsing
    from .prompts import STAGE_BATCH, STAGE_CLASSIFY, STAGE_INSTANCES, STAGE_INSTRUCTIONS, Prompt

    payload = parsing.read_prompt(prompt_text)
    props = schema.get("properties") or {}
    key = next(iter(props), None)

    def fit(items: list, fallback: Any) -> list:
        spec = props.get(key) or {}
        items = items or ([fallback] if spec.get("minItems") else [])
        return items[: spec["maxItems"]] if spec.get("maxItems") else items

    def ordered(item: dict) -> dict:   # the schema's property order, as a grammar writes it
        fields = ((props.get(key) or {}).get("items") or {}).get("properties") or item
        return {f: item.get(f, "") for f in fields}

    one_line = " ".join(answer.split())
    if payload is not None and key is not None:
        if payload.stage == STAGE_INSTRUCTIONS and key == "instructions":
            prompt = Prompt(payload.stage, "", prompt_text,
                            meta={"start_index": payload.start_index, "num_to_generate": payload.num_to_generate})
            items = parsing.parse_instructions(answer, prompt).items
            return json.dumps({key: fit(items, one_line)}, ensure_ascii=False)
        if payload.stage == STAGE_CLASSIFY and key == "labeling_task":
            return json.dumps({key: "yes" if parsing.parse_classification(answer) else "no"})
        if payload.stage == STAGE_INSTANCES and key == "examples":
            items = parsing.parse_instances(answer, bool(payload.is_classification)).instances
            items = fit([ordered(i) for i in items], ordered({"input": "", "output": one_line}))
            return json.dumps({key: items}, ensure_ascii=False)
        if payload.stage == "judge" and key == "valid_task":
            verdict = parsing.parse_judge(answer)
            if verdict.ok:
                return json.dumps({**verdict.answers, "reason": verdict.reason}, ensure_ascii=False)
        if payload.stage == STAGE_BATCH and key == "tasks":
            tasks = fit([ordered(t) for t in parsing.parse_batch(answer).tasks],
                        ordered({"instruction": one_line, "input": "", "output": one_line}))
            return json.dumps({key: tasks}, ensure_ascii=False)
    return json.dumps(example_for_schema(schema), ensure_ascii=False)


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


_PROXY_ERROR_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n"
    "<hr><center>selfinstruct-offline proxy</center>\r\n</body>\r\n</html>\r\n"
).encode("ascii")


class _Drop:
    """Answer nothing: close the connection (``reset``: with a TCP RST)."""

    def __init__(self, reset: bool) -> None:
        self.reset = reset


class _Trickle:
    """Headers at once, then ``body`` (padded with spaces to ``length``) one byte at a time."""

    def __init__(self, body: bytes, length: int, interval: float, seconds: float) -> None:
        self.body = body
        self.length = length
        self.interval = interval
        self.seconds = seconds


class _Stream:
    """A body of known ``length`` written piece by piece: each part is bytes or a
    zero-argument callable returning an iterator of bytes."""

    def __init__(self, parts: list, length: int) -> None:
        self.parts = parts
        self.length = length


def _json_escaped(text: str) -> bytes:
    """`text` as it appears between the quotes of a JSON string (UTF-8)."""
    return json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")


def _huge_text(answer: str, size: int) -> tuple[int, int, Callable[[], Iterator[bytes]]]:
    """A text of exactly `size` UTF-8 bytes: ``answer + " "`` repeated, the last copy cut at a
    character boundary, then spaces. Returns (characters, escaped byte length, a function
    yielding the escaped text in pieces) without ever building the text."""
    unit = (answer or "x") + " "
    unit_b = unit.encode("utf-8")
    reps, rest = divmod(size, len(unit_b))
    partial = unit_b[:rest].decode("utf-8", "ignore")
    pad = rest - len(partial.encode("utf-8"))
    unit_e, partial_e = _json_escaped(unit), _json_escaped(partial)
    per_chunk = max(1, (64 * 1024) // len(unit_e))
    chars = reps * len(unit) + len(partial) + pad
    escaped_len = reps * len(unit_e) + len(partial_e) + pad

    def pieces() -> Iterator[bytes]:
        full, left = divmod(reps, per_chunk)
        if full:
            block = unit_e * per_chunk
            for _ in range(full):
                yield block
        if left:
            yield unit_e * left
        tail = partial_e + b" " * pad
        if tail:
            yield tail

    return chars, escaped_len, pieces


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
        path, _, query = self.path.partition("?")
        path = path.rstrip("/") or "/"
        try:
            body = self._read_body() if method in ("POST", "DELETE") else b""
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
            if path == "/v1/embeddings" and method == "POST":
                owner._count("endpoint", "embeddings")
                owner._enter()
                try:
                    owner._check_auth(self.headers)
                    status, payload, ctype, headers = owner._embeddings(
                        _json_object(body), owner.faults, self._wait, auth=self.headers.get("Authorization") or "")
                finally:
                    owner._leave()
                if isinstance(payload, _Drop):
                    self._drop(payload.reset)
                elif isinstance(payload, bytes):
                    self._send(status, payload, content_type=ctype or "application/json", headers=headers)
                else:
                    self._send_json(status, payload, headers=headers)
                return
            for prefix, group, api in (("/v1/files", "files", owner._files_api),
                                       ("/v1/batches", "batches", owner._batches_api)):
                if path == prefix or path.startswith(prefix + "/"):
                    owner._count("endpoint", group)
                    owner._check_auth(self.headers)
                    payload, ctype = api(method, path[len(prefix):].strip("/"),
                                         parse_qs(query), self.headers, body)
                    if ctype is None:
                        self._send_json(200, payload)
                    else:
                        self._send(200, payload, content_type=ctype)
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
            req = _json_object(body)
            plan = owner.faults
            status, payload, ctype, headers = owner._answer(chat, req, plan, self._wait,
                                                            auth=self.headers.get("Authorization") or "")
            if isinstance(payload, _Drop):
                self._drop(payload.reset)
            elif isinstance(payload, _Trickle):
                self._send_trickle(payload)
            elif isinstance(payload, _Stream):
                self._send_stream(status, payload, ctype or "application/json", headers)
            elif ctype is None:
                self._send_json(status, payload, headers=headers)
            else:
                self._send(status, payload, content_type=ctype, headers=headers)
        finally:
            owner._leave()

    def _start_response(self, status: int, content_type: str, length: int,
                        headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()

    def _send_stream(self, status: int, stream: _Stream, content_type: str,
                     headers: dict | None) -> None:
        self._start_response(status, content_type, stream.length, headers)
        for part in stream.parts:
            if isinstance(part, bytes):
                self.wfile.write(part)
            else:
                for piece in part():
                    self.wfile.write(piece)
        self.wfile.flush()
        self.server.owner._count("status", str(status))

    def _send_trickle(self, t: _Trickle) -> None:
        """Headers now, then one byte per interval until done, `seconds` pass or we stop."""
        owner = self.server.owner
        self._start_response(200, "application/json", t.length)
        self.wfile.flush()
        owner._count("status", "200")
        deadline = time.monotonic() + t.seconds
        sent = 0
        while sent < t.length:
            self._wait(min(t.interval, max(0.0, deadline - time.monotonic())))
            if owner._stopping.is_set() or time.monotonic() >= deadline:
                break
            self.wfile.write(t.body[sent:sent + 1] if sent < len(t.body) else b" ")
            self.wfile.flush()
            sent += 1
        if sent < t.length:
            self.close_connection = True

    def _drop(self, reset: bool) -> None:
        """Close the connection without answering; with `reset`, abortively (RST)."""
        self.close_connection = True
        if reset:
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                # The socket really closes (and resets) once rfile/wfile close in finish().
                self.connection.close()
            except OSError:
                pass

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.server.owner._stopping.wait(seconds)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


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


# --------------------------------------------------------------------------- batch store


_BATCH_CONTROL_KEYS = ("delay_s", "fail_lines", "fail_rate", "seed", "expire_next",
                       "fail_next", "fail_status", "leak_auth", "clear")
_FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


class _BatchJob:
    """One batch: its public object plus what it needs to finish itself lazily."""

    def __init__(self, obj: dict, lines: list, errors: list, delay: float, ctl: dict) -> None:
        self.obj = obj
        self.lines = lines                       # [(custom_id, body)]
        self.errors = errors                     # validation errors (the batch will fail)
        self.delay = delay
        self.fail_lines = ctl["fail_lines"]
        self.fail_rate = ctl["fail_rate"]
        self.fail_seed = ctl["seed"]
        self.expire_at = ctl["expire_next"]
        self.fail_next = ctl["fail_next"]
        self.leak_auth = ctl.get("leak_auth", False)
        self.fail_status = ctl.get("fail_status", 500)
        self.auth = ""                           # the Authorization header it was created with
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.cancel_done: int | None = None      # lines finished when cancel arrived
        self.final_status = "completed"          # what "finalizing" turns into
        self.results: dict = {}                  # file ids and counts, shown when done
        self.lock = threading.Lock()

    @property
    def id(self) -> str:
        return self.obj["id"]

    @property
    def chat(self) -> bool:
        return self.obj["endpoint"] == "/v1/chat/completions"

    @property
    def validate_s(self) -> float:
        """End of the validating phase (seconds after creation)."""
        return self.delay * 0.2

    @property
    def finalize_s(self) -> float:
        """Start of the finalizing phase; the batch is done at `delay`."""
        return self.delay * 0.8

    def at(self, offset: float) -> int:
        """Wall-clock seconds of `offset` seconds after creation."""
        return int(self.wall0 + offset)

    def planned_failure(self, index: int, custom_id: str) -> bool:
        if index < self.fail_lines:
            return True
        if self.fail_rate <= 0:
            return False
        return _unit_hash(f"batchfail|{self.fail_seed}|{custom_id}") < self.fail_rate


def _leaky_message(auth: str) -> str:
    """A careless gateway's error: the caller's Authorization header, the bare key and its tail."""
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else auth
    return (f"Upstream refused the request (headers: {{'Authorization': '{auth or '(none)'}'}}); "
            f"key {key or '(none)'} ending in ...{key[-10:]}")


def _batch_error(code: str, message: str, line: int | None = None,
                 param: str | None = None) -> dict:
    return {"code": code, "message": message, "param": param, "line": line}


def _parse_batch_file(data: bytes, endpoint: str) -> tuple[list, list]:
    """([(custom_id, body)], [errors]) for a batch input file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [_batch_error("invalid_encoding", "The input file is not valid UTF-8.")]
    lines: list = []
    errors: list = []
    seen: set[str] = set()
    for number, raw in enumerate(text.split("\n"), 1):
        if len(errors) >= 100:
            break
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            errors.append(_batch_error("invalid_json_line",
                                       "This line is not a valid JSON object.", number))
            continue
        problem = None
        cid = item.get("custom_id")
        if not isinstance(cid, str) or not cid:
            problem = _batch_error("missing_required_parameter",
                                   "The line needs a non-empty string custom_id.", number,
                                   "custom_id")
        elif cid in seen:
            problem = _batch_error("duplicate_custom_id",
                                   f"The custom_id {cid!r} appears on more than one line; "
                                   "custom_id values must be unique within a batch.",
                                   number, "custom_id")
        elif item.get("method") != "POST":
            problem = _batch_error("invalid_method",
                                   f"Only POST is supported, got {item.get('method')!r}.",
                                   number, "method")
        elif item.get("url") != endpoint:
            problem = _batch_error("invalid_url",
                                   f"The url {item.get('url')!r} does not match the batch "
                                   f"endpoint {endpoint!r}.", number, "url")
        elif not isinstance(item.get("body"), dict):
            problem = _batch_error("missing_required_parameter",
                                   "The line needs a JSON object body.", number, "body")
        if isinstance(cid, str) and cid:
            seen.add(cid)
        if problem is not None:
            errors.append(problem)
        else:
            lines.append((cid, item["body"]))
    if not lines and not errors:
        errors.append(_batch_error("empty_file", "The input file contains no requests."))
    return lines, errors


def _page(items: list[dict], query: dict, default_limit: int) -> dict:
    """An OpenAI cursor page over `items` (oldest first): ?limit, ?after, ?order (desc)."""
    order = (query.get("order") or ["desc"])[0]
    items = list(items) if order == "asc" else list(reversed(items))
    after = (query.get("after") or [None])[0]
    if after:
        ids = [it["id"] for it in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    try:
        limit = int((query.get("limit") or [default_limit])[0])
    except ValueError:
        raise _HTTPError(400, "'limit' must be an integer.", "invalid_request_error", None,
                         param="limit") from None
    limit = max(1, limit)
    data = items[:limit]
    return {"object": "list", "data": data, "has_more": len(items) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


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
        *,
        latency_median_s: float | None = None,
        latency_sigma: float = 0.5,
        latency_seed: int = 0,
        batch_delay_s: float = DEFAULT_BATCH_DELAY,
        structured_output: bool | str = True,
        judge_error: float = 0.0,
        judge_seed: int = 0,
        judge_answers: bool = True,
    ) -> None:
        self.host = host
        if not 0.0 <= float(judge_error) <= 1.0:
            raise ValueError("judge_error must be between 0 and 1")
        # Judge prompts get the offline judge's answer (see judge_reply), whatever the responder,
        # unless judge_answers is False (then the responder answers them too).
        self.judge_error, self.judge_seed, self.judge_answers = float(judge_error), int(judge_seed), judge_answers
        if structured_output not in (True, False, "ignore"):
            raise ValueError("structured_output must be True, False or 'ignore'")
        self.structured_output = structured_output   # False: response_format gets a 400
        self._requested_port = int(port)
        self._responder_arg = responder
        self._responder: Responder | None = _adapt_responder(responder) if responder else None
        self._responder_lock = threading.Lock()
        self.api_key = api_key
        self.faults = faults if faults is not None else FaultPlan(seed=seed)
        if latency_s:
            self.faults.latency_s = latency_s
        if latency_median_s is not None:
            self.faults.set_latency_distribution(latency_median_s, latency_sigma, latency_seed)
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

        self.batch_delay_s = float(batch_delay_s)
        if self.batch_delay_s < 0:
            raise ValueError("batch_delay_s must be >= 0")
        self._store_lock = threading.Lock()
        self._files: dict[str, tuple[dict, bytes]] = {}
        self._batches: dict[str, _BatchJob] = {}
        self._batch_ctl = self._default_batch_control()

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

        ``by_endpoint`` keys: "chat/completions", "completions", "models", "files", "batches",
        "control", "unknown"; counted when a request arrives. ``in_flight`` counts completion
        requests. Also "files_uploaded" and "batches_created" (successful uploads / creations), and
        "batch_lines_answered" (batch lines answered 200: what a provider would bill).
        """
        with self._stats_lock:
            by_endpoint = dict(self._counters.get("endpoint", {}))
            store = self._counters.get("store", {})
            return {
                "files_uploaded": store.get("files_uploaded", 0),
                "batches_created": store.get("batches_created", 0),
                "batch_lines_answered": store.get("batch_lines_answered", 0),
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

    def _requested_schema(self, req: dict, text: str) -> dict | None:
        """The JSON schema a chat request's response_format asks for (None: plain text)."""
        rf = req.get("response_format")
        if rf is None:
            return None
        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind == "text":
            return None
        if kind not in ("json_schema", "json_object"):
            raise _HTTPError(400, "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                             "invalid_request_error", "invalid_value", param="response_format")
        if self.structured_output == "ignore":
            return None
        if not self.structured_output:
            raise _HTTPError(400, f"response_format of type '{kind}' is not supported by this server.",
                             "invalid_request_error", "unsupported_parameter", param="response_format")
        if kind == "json_object":
            return _stage_schema(text) or {"type": "object"}
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _HTTPError(400, "'response_format.json_schema.schema' must be an object.",
                             "invalid_request_error", "invalid_value", param="response_format")
        return schema

    def _request_seed(self, req: dict) -> int:
        if isinstance(req.get("seed"), int) and not isinstance(req.get("seed"), bool):
            material = f"{self.seed}|seed|{req['seed']}"
        else:
            material = f"{self.seed}|body|{json.dumps(req, sort_keys=True, ensure_ascii=False)}"
        return int.from_bytes(hashlib.sha256(material.encode("utf-8")).digest()[:6], "big")

    def _answer(self, chat: bool, req: dict, plan: FaultPlan | None,
                wait: Callable[[float], None], auth: str = "") -> tuple[int, Any, str | None, dict]:
        """(status, payload, content_type-or-None-for-json, headers). The payload may also be
        a `_Drop`, `_Trickle` or `_Stream` for the socket-level faults. ``plan=None`` (batch
        lines) means no latency and no faults."""
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
        schema = self._requested_schema(req, text) if chat else None

        fault, early = self._draw_fault(plan, req, wait, auth)
        if early is not None:
            return early
        huge: list[tuple[str, int, Callable[[], Iterator[bytes]]]] = []

        base_seed = self._request_seed(req)
        responder = self._get_responder()
        choices = []
        completion_tokens = 0
        for i in range(n):
            rseed = base_seed + i
            if fault is not None and fault.kind == "garbage":
                raw = _junk(random.Random(rseed))
            else:
                raw = eval_reply(text, model, structured=schema is not None, error=self.judge_error,
                                 seed=self.judge_seed) if self.judge_answers else None
                evaluated = raw is not None
                if raw is None:
                    raw = judge_reply(text, error=self.judge_error, seed=self.judge_seed,
                                      completion=not chat) if self.judge_answers else None
                if raw is None:
                    with self._responder_lock:
                        raw = responder(text, rseed)
                raw = "" if raw is None else str(raw)
                if schema is not None and not evaluated:
                    raw = json_answer(schema, text, raw)
            out, finish = _apply_limits(raw, stop_list, max_tokens)
            if fault is not None and fault.kind == "length":
                frac = float(fault.params.get("fraction", 0.5))
                out, finish = out[: int(len(out) * frac)], "length"
            if fault is not None and fault.kind == "huge":
                size = int(fault.params.get("size", _DEFAULT_HUGE_SIZE))
                if size < 0:
                    raise ValueError("huge fault size must be >= 0")
                chars, escaped_len, pieces = _huge_text(out, size)
                marker = f"@@offline-huge-{uuid.uuid4().hex}-{i}@@"
                huge.append((marker, escaped_len, pieces))
                completion_tokens += math.ceil(chars / 4) if chars else 0
                out, finish = marker, "stop"
            else:
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
        if huge:
            return 200, self._huge_stream(payload, huge), "application/json", {}
        if fault is not None and fault.kind == "trickle":
            p = fault.params
            body = json.dumps(payload).encode("utf-8")
            length = max(len(body), int(p.get("size", _DEFAULT_TRICKLE_SIZE)))
            interval = max(0.0, float(p.get("interval", _DEFAULT_TRICKLE_INTERVAL)))
            seconds = max(0.0, float(p.get("seconds", _DEFAULT_SLEEP["trickle"])))
            return 200, _Trickle(body, length, interval, seconds), "application/json", {}
        return 200, payload, None, {}

    @staticmethod
    def _huge_stream(payload: dict, huge: list) -> _Stream:
        """The JSON of `payload` with each marker string replaced by its streamed text."""
        rest = json.dumps(payload)
        parts: list = []
        length = 0
        for marker, escaped_len, pieces in huge:
            before, rest = rest.split(f'"{marker}"', 1)
            head = (before + '"').encode("utf-8")
            parts += [head, pieces]
            length += len(head) + escaped_len
            rest = '"' + rest
        tail = rest.encode("utf-8")
        parts.append(tail)
        return _Stream(parts, length + len(tail))

    def _draw_fault(self, plan, req: dict, wait: Callable[[float], None], auth: str):
        """Wait the plan's latency for one request and draw its fault: (fault, the response to
        send at once instead of an answer, or None). No plan: (None, None)."""
        if plan is None:
            return None, None
        wait(plan.latency_for(req))
        fault = plan.next_fault()
        if fault is None:
            return None, None
        self._count("fault", fault.kind)
        return fault, self._fault_response(fault, wait, auth)

    def _fault_response(self, fault: Fault, wait: Callable[[float], None], auth: str = ""):
        kind, p = fault.kind, fault.params
        if kind == "leak_auth":
            return 500, _HTTPError(500, _leaky_message(auth), "server_error", None).body, None, {}
        if kind == "429":
            ra = p.get("retry_after", 1)
            ra_text = str(int(ra)) if float(ra).is_integer() else f"{float(ra):g}"
            code = p.get("code", "rate_limit_exceeded")    # "insufficient_quota": the account is empty
            said = ("You exceeded your current quota, please check your plan and billing details."
                    if code == "insufficient_quota" else
                    f"Rate limit reached for requests. Please try again in {ra_text}s.")
            err = _HTTPError(429, said, "requests", code, headers={"Retry-After": ra_text})
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
        if kind == "hang":
            wait(float(p.get("seconds", _DEFAULT_SLEEP["hang"])))
            return 0, _Drop(reset=False), None, {}
        if kind == "reset":
            return 0, _Drop(reset=True), None, {}
        if kind == "html":
            return 502, _PROXY_ERROR_PAGE, "text/html; charset=utf-8", {}
        if kind == "empty":
            return 200, b"", "application/json", {}
        if kind == "malformed_json":
            return 200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind',\
                "application/json", {}
        return None                      # length, garbage, huge, trickle: shape the answer

    def _embeddings(self, req: dict, plan: FaultPlan | None, wait: Callable[[float], None],
                    auth: str = "") -> tuple[int, Any, str | None, dict]:
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "You must provide a model parameter.", "invalid_request_error", None, param="model")
        if model not in self.model_names and model != EMBEDDING_MODEL:
            raise _HTTPError(404, f"The model '{model}' does not exist or you do not have access to it. "
                             f"Models here: {', '.join(self.model_names + (EMBEDDING_MODEL,))}.",
                             "invalid_request_error", "model_not_found", param="model")
        texts = req.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise _HTTPError(400, "'input' must be a non-empty string or a non-empty array of non-empty strings.",
                             "invalid_request_error", None, param="input")
        if len(texts) > 2048:
            raise _HTTPError(400, "'input' may hold at most 2048 texts.", "invalid_request_error", None,
                             param="input")
        encoding = req.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _HTTPError(400, "'encoding_format' must be 'float' or 'base64'.", "invalid_request_error",
                             None, param="encoding_format")
        _, early = self._draw_fault(plan, req, wait, auth)
        if early is not None:
            return early
        data = []
        for i, text in enumerate(texts):
            vector = offline_embedding(text)
            if encoding == "base64":
                import base64

                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(estimate_tokens(t) for t in texts)
        return 200, {"object": "list", "data": data, "model": model,
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, None, {}

    # -- batch test control
    def _default_batch_control(self) -> dict:
        return {"delay_s": self.batch_delay_s, "fail_lines": 0, "fail_rate": 0.0, "seed": 0,
                "expire_next": None, "fail_next": False, "fail_status": 500, "leak_auth": False}

    def batch_control(self) -> dict:
        """The current batch test settings (what ``GET /_control/batches`` shows)."""
        with self._store_lock:
            return dict(self._batch_ctl)

    def batch_faults(self, **spec: Any) -> dict:
        """Shape the next batches; keys as ``POST /_control/batches``: ``delay_s``,
        ``fail_lines``, ``fail_rate``, ``seed``, ``expire_next``, ``fail_next``, ``clear``.
        ``clear`` is applied first; a key given as None goes back to its default.
        ``fail_lines``, ``expire_next`` and ``fail_next`` are used up by the next batch;
        the others persist. Returns the new settings."""
        unknown = set(spec) - set(_BATCH_CONTROL_KEYS)
        if unknown:
            raise ValueError(f"unknown batch control keys: {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(_BATCH_CONTROL_KEYS)}")
        defaults = self._default_batch_control()
        clean: dict[str, Any] = {}

        def number(key: str, value: Any, cast: type, low: float, high: float | None = None):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key} must be a number")
            if cast is int and not float(value).is_integer():
                raise ValueError(f"{key} must be an integer")
            value = cast(value)
            if value < low or (high is not None and value > high) or not math.isfinite(value):
                raise ValueError(f"{key} is out of range: {value}")
            return value

        for key, value in spec.items():
            if key == "clear":
                continue
            if value is None:
                clean[key] = defaults[key]
            elif key == "delay_s":
                clean[key] = number(key, value, float, 0.0)
            elif key == "fail_rate":
                clean[key] = number(key, value, float, 0.0, 1.0)
            elif key == "seed":
                clean[key] = number(key, value, int, -math.inf)
            elif key in ("fail_lines", "expire_next"):
                clean[key] = number(key, value, int, 0)
            elif key == "fail_status":
                clean[key] = number(key, value, int, 400, 599)
            elif key in ("fail_next", "leak_auth"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                clean[key] = value
        with self._store_lock:
            if spec.get("clear"):
                self._batch_ctl = defaults
            self._batch_ctl.update(clean)
            return dict(self._batch_ctl)

    # -- files
    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict:
        meta = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(data),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                "status": "processed", "expires_at": None, "status_details": None}
        with self._store_lock:
            self._files[meta["id"]] = (meta, data)
        return dict(meta)

    def _get_file(self, file_id: str) -> tuple[dict, bytes]:
        with self._store_lock:
            found = self._files.get(file_id)
        if found is None:
            raise _HTTPError(404, f"No such File object: {file_id}", "invalid_request_error",
                             None, param="id")
        return found

    @staticmethod
    def _parse_multipart(headers: Any, body: bytes) -> dict[str, tuple[str | None, bytes]]:
        """{field name: (filename or None, bytes)} from a multipart/form-data body."""
        ctype = headers.get("Content-Type") or ""
        if not ctype.lower().startswith("multipart/form-data") or "boundary=" not in ctype:
            raise _HTTPError(400, "Uploads must be multipart/form-data with a boundary.",
                             "invalid_request_error", None)
        head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        message = BytesParser(policy=_email_policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            raise _HTTPError(400, "Could not parse the multipart body.",
                             "invalid_request_error", None)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            data = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), data if isinstance(data, bytes) else b"")
        return fields

    def _files_api(self, method: str, rest: str, query: dict, headers: Any,
                   body: bytes) -> tuple[Any, str | None]:
        parts = rest.split("/") if rest else []
        if not parts and method == "POST":
            fields = self._parse_multipart(headers, body)
            if "file" not in fields:
                raise _HTTPError(400, "Missing required parameter: 'file'.",
                                 "invalid_request_error", None, param="file")
            purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
            if purpose not in _FILE_PURPOSES:
                raise _HTTPError(400, f"Invalid value for 'purpose': {purpose!r}. Supported: "
                                 f"{', '.join(_FILE_PURPOSES)}.", "invalid_request_error",
                                 "invalid_value", param="purpose")
            filename, data = fields["file"]
            meta = self._store_file(data, filename or "upload", purpose)
            self._count("store", "files_uploaded")
            return meta, None
        if not parts and method == "GET":
            wanted = (query.get("purpose") or [None])[0]
            with self._store_lock:
                metas = [dict(m) for m, _ in self._files.values()
                         if wanted is None or m["purpose"] == wanted]
            return _page(metas, query, 10_000), None
        if len(parts) == 1 and method == "GET":
            return dict(self._get_file(parts[0])[0]), None
        if len(parts) == 1 and method == "DELETE":
            self._get_file(parts[0])
            with self._store_lock:
                self._files.pop(parts[0], None)
            return {"id": parts[0], "object": "file", "deleted": True}, None
        if len(parts) == 2 and parts[1] == "content" and method == "GET":
            return self._get_file(parts[0])[1], "application/octet-stream"
        raise _HTTPError(404, f"Unknown request URL: {method} /v1/files/{rest}.",
                         "invalid_request_error", "unknown_url")

    # -- batches
    def _batches_api(self, method: str, rest: str, query: dict, headers: Any,
                     body: bytes) -> tuple[Any, str | None]:
        parts = rest.split("/") if rest else []
        if not parts and method == "POST":
            created = self._create_batch(body)
            with self._store_lock:      # the leak_auth control quotes the header it was created with
                self._batches[created["id"]].auth = headers.get("Authorization") or ""
            return created, None
        if not parts and method == "GET":
            with self._store_lock:
                jobs = list(self._batches.values())
            objs = [self._advance(job) for job in jobs]
            return _page(objs, query, 20), None
        if len(parts) == 1 and method == "GET":
            return self._advance(self._get_batch(parts[0])), None
        if len(parts) == 2 and parts[1] == "cancel" and method == "POST":
            return self._cancel_batch(self._get_batch(parts[0])), None
        raise _HTTPError(404, f"Unknown request URL: {method} /v1/batches/{rest}.",
                         "invalid_request_error", "unknown_url")

    def _get_batch(self, batch_id: str) -> _BatchJob:
        with self._store_lock:
            job = self._batches.get(batch_id)
        if job is None:
            raise _HTTPError(404, f"No such Batch object: {batch_id}", "invalid_request_error",
                             None, param="batch_id")
        return job

    def _create_batch(self, body: bytes) -> dict:
        req = _json_object(body)
        endpoint = req.get("endpoint")
        if endpoint not in BATCH_ENDPOINTS:
            raise _HTTPError(400, f"Invalid value for 'endpoint': {endpoint!r}. The offline "
                             f"server supports {' and '.join(BATCH_ENDPOINTS)}.",
                             "invalid_request_error", "invalid_value", param="endpoint")
        if req.get("completion_window") != "24h":
            raise _HTTPError(400, "Invalid value for 'completion_window': only '24h' is "
                             "supported.", "invalid_request_error", "invalid_value",
                             param="completion_window")
        metadata = req.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and
                                         all(isinstance(v, str) for v in metadata.values())):
            raise _HTTPError(400, "'metadata' must be an object of at most 16 string values.",
                             "invalid_request_error", "invalid_value", param="metadata")
        file_id = req.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise _HTTPError(400, "Missing required parameter: 'input_file_id'.",
                             "invalid_request_error", None, param="input_file_id")
        with self._store_lock:
            found = self._files.get(file_id)
        if found is None:
            raise _HTTPError(400, f"Invalid 'input_file_id': no file {file_id!r} exists.",
                             "invalid_request_error", "invalid_value", param="input_file_id")
        meta, data = found
        if meta["purpose"] != "batch":
            raise _HTTPError(400, f"The input file must be uploaded with purpose 'batch', not "
                             f"{meta['purpose']!r}.", "invalid_request_error", "invalid_value",
                             param="input_file_id")
        lines, errors = _parse_batch_file(data, endpoint)
        with self._store_lock:                   # take this batch's one-shot settings
            ctl = dict(self._batch_ctl)
            self._batch_ctl.update(fail_lines=0, expire_next=None, fail_next=False)
        now = int(time.time())
        obj = {
            "id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": endpoint,
            "model": None, "errors": None, "input_file_id": file_id,
            "completion_window": "24h", "status": "validating", "output_file_id": None,
            "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + _BATCH_WINDOW_S, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
        }
        models = {b["model"] for _, b in lines if isinstance(b.get("model"), str)}
        if len(models) == 1:
            obj["model"] = models.pop()
        job = _BatchJob(obj, lines, errors, float(ctl["delay_s"]), ctl)
        with self._store_lock:
            self._batches[job.id] = job
        self._count("store", "batches_created")
        with job.lock:
            return json.loads(json.dumps(job.obj))   # always "validating" when created

    def _advance(self, job: _BatchJob) -> dict:
        """Bring `job` up to date with the clock; returns a copy of its public object."""
        with job.lock:
            obj = job.obj
            elapsed = time.monotonic() - job.t0
            if obj["status"] == "validating" and elapsed >= job.validate_s:
                if job.errors:
                    obj.update(status="failed", failed_at=job.at(job.validate_s),
                               errors={"object": "list", "data": [dict(e) for e in job.errors]})
                else:
                    obj.update(status="in_progress", in_progress_at=job.at(job.validate_s))
                    obj["request_counts"]["total"] = len(job.lines)
            if obj["status"] == "in_progress" and elapsed >= job.finalize_s:
                if job.fail_next:
                    obj.update(status="failed", failed_at=job.at(job.finalize_s), errors={
                        "object": "list", "data": [_batch_error(
                            "batch_failed", "The batch failed (injected by the offline "
                            "server's fail_next control)." + (" " + _leaky_message(job.auth)
                                                              if job.leak_auth else ""))]})
                else:
                    if job.expire_at is not None:
                        job.final_status = "expired"
                        job.results = self._finish_lines(
                            job, job.expire_at, "batch_expired",
                            "This request could not be executed before the completion window "
                            "expired.")
                    else:
                        job.results = self._finish_lines(job, len(job.lines), "", "")
                    obj.update(status="finalizing", finalizing_at=job.at(job.finalize_s))
            if obj["status"] == "finalizing" and elapsed >= job.delay:
                obj.update(job.results)
                obj["status"] = job.final_status
                obj[f"{job.final_status}_at"] = job.at(job.delay)
            if obj["status"] == "cancelling":
                obj.update(self._finish_lines(job, job.cancel_done or 0, "batch_cancelled",
                                              "This request was not executed because the "
                                              "batch was cancelled."))
                obj.update(status="cancelled", cancelled_at=int(time.time()))
            return json.loads(json.dumps(obj))

    def _cancel_batch(self, job: _BatchJob) -> dict:
        self._advance(job)
        with job.lock:
            obj = job.obj
            if obj["status"] in ("validating", "in_progress"):
                elapsed = time.monotonic() - job.t0
                span = job.finalize_s - job.validate_s
                done = 0
                if obj["status"] == "in_progress" and span > 0:
                    done = int(len(job.lines) * min(1.0, (elapsed - job.validate_s) / span))
                job.cancel_done = done
                obj["request_counts"]["total"] = len(job.lines)
                obj.update(status="cancelling", cancelling_at=int(time.time()))
            elif obj["status"] != "cancelling":
                raise _HTTPError(409, f"Cannot cancel a batch with status {obj['status']!r}.",
                                 "invalid_request_error", None)
            return json.loads(json.dumps(obj))

    def _answer_line(self, job: _BatchJob, index: int, custom_id: str,
                     body: dict) -> tuple[int, Any]:
        """(status, body) for one batch line, as the synchronous endpoint would answer it."""
        if job.planned_failure(index, custom_id):
            if job.fail_status == 429:
                return 429, _HTTPError(429, "Rate limit reached for requests.", "requests",
                                       "rate_limit_exceeded").body
            return job.fail_status, _HTTPError(job.fail_status, _leaky_message(job.auth) if job.leak_auth
                                               else "The server had an error while processing your request.",
                                               "server_error", None).body
        try:
            status, payload, _, _ = self._answer(job.chat, body, None, lambda seconds: None)
            return status, payload
        except _HTTPError as e:
            return e.status, e.body
        except Exception as e:  # a failing responder: that line fails, the batch goes on
            self._count("errors", type(e).__name__)
            return 500, _HTTPError(500, f"The offline server failed: {e}", "server_error",
                                   None).body

    def _finish_lines(self, job: _BatchJob, n_done: int, left_code: str,
                      left_message: str) -> dict:
        """Answer lines [0, n_done); the rest get `left_code`. Writes the output and error
        files; returns the batch fields to set when it is done (file ids, request_counts)."""
        output, failures = [], []
        completed = failed = 0
        for index, (custom_id, body) in enumerate(job.lines):
            if index >= n_done:
                failures.append({"id": f"batch_req_{uuid.uuid4().hex[:24]}",
                                 "custom_id": custom_id, "response": None,
                                 "error": {"code": left_code, "message": left_message}})
                continue
            status, payload = self._answer_line(job, index, custom_id, body)
            if status == 200:
                self._count("store", "batch_lines_answered")   # what a provider bills
            record = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id,
                      "response": {"status_code": status,
                                   "request_id": f"req_{uuid.uuid4().hex[:24]}",
                                   "body": payload},
                      "error": None}
            if status == 200:
                output.append(record)
                completed += 1
            else:
                failures.append(record)
                failed += 1

        def write(records: list, kind: str) -> str | None:
            if not records:
                return None
            data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
            return self._store_file(data, f"{job.id}_{kind}.jsonl", "batch_output")["id"]

        return {"output_file_id": write(output, "output"),
                "error_file_id": write(failures, "error"),
                "request_counts": {"total": len(job.lines), "completed": completed,
                                   "failed": failed}}

    def _control(self, method: str, path: str, body: bytes) -> dict:
        if path == "/_control/stats" and method == "GET":
            return self.stats
        if path == "/_control/reset_stats" and method == "POST":
            self.reset_stats()
            return self.stats
        if path == "/_control/batches":
            if method == "GET":
                return self.batch_control()
            if method == "POST":
                try:
                    spec = json.loads(body or b"{}")
                    if not isinstance(spec, dict):
                        raise ValueError("control body must be a JSON object")
                    return self.batch_faults(**spec)
                except (ValueError, TypeError) as e:
                    raise _HTTPError(400, f"Bad batch control request: {e}",
                                     "invalid_request_error", None) from None
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
                  model_names: Iterable[str] = (DEFAULT_MODEL,), out=None,
                  latency_median_s: float | None = None, latency_sigma: float = 0.5,
                  latency_seed: int = 0, structured_output: bool | str = True, judge_error: float = 0.0,
                  judge_seed: int = 0) -> None:
    """Run an OfflineServer in the foreground until Ctrl+C (or SIGTERM), then stop cleanly.

    Prints one line with the base URL first (flushed), so a parent process can read it.
    """
    out = out or sys.stdout
    server = OfflineServer(host=host, port=port, responder=responder, api_key=api_key,
                           seed=seed, model_names=model_names, latency_s=latency_s,
                           latency_median_s=latency_median_s, latency_sigma=latency_sigma,
                           latency_seed=latency_seed, structured_output=structured_output,
                           judge_error=judge_error, judge_seed=judge_seed)
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
    parser.add_argument("--latency-median", type=float, default=None, metavar="S",
                        help="add a lognormal per-request delay with this median (seconds)")
    parser.add_argument("--latency-sigma", type=float, default=0.5, metavar="X",
                        help="spread (sigma of the log) of that delay (default 0.5)")
    parser.add_argument("--latency-seed", type=int, default=0, metavar="N",
                        help="seed mixed into the per-body delay draw (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--responder", choices=("demo", "synthetic", "echo"), default="demo",
                        help="demo: DemoModel answers; synthetic: endless new tasks (load tests); "
                             "echo: a trivial answer (benchmarks)")
    add_structured_output_argument(parser)
    add_judge_arguments(parser)
    return parser


STRUCTURED_OUTPUT_CHOICES = {"yes": True, "no": False, "ignore": "ignore"}


def add_structured_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--structured-output", choices=tuple(STRUCTURED_OUTPUT_CHOICES), default="yes",
                        help="answer response_format JSON schemas with matching JSON (yes, the default), refuse "
                             "them with a 400 (no), or accept them and answer plain text (ignore), to try how a "
                             "run falls back")


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge-error", type=float, default=0.0, metavar="RATE",
                        help="judge prompts: the share of answers the offline judge gets wrong, per question "
                             "(default 0: always the true answer of selfinstruct.offline.judge_truth)")
    parser.add_argument("--judge-seed", type=int, default=0, metavar="N",
                        help="judge prompts: seed of which answers are wrong (default 0)")


def _responder(name: str, seed: int):
    if name == "echo":
        return _echo_responder
    if name == "synthetic":
        from .demo import SyntheticModel

        return SyntheticModel(seed=seed)
    return None            # the default: DemoModel, loaded on first use


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    serve_forever(port=args.port, host=args.host, api_key=args.api_key, latency_s=args.latency,
                  seed=args.seed, responder=_responder(args.responder, args.seed),
                  latency_median_s=args.latency_median, latency_sigma=args.latency_sigma,
                  latency_seed=args.latency_seed,
                  structured_output=STRUCTURED_OUTPUT_CHOICES[args.structured_output],
                  judge_error=args.judge_error, judge_seed=args.judge_seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
