"""The Self-Instruct loop: a run grows the pool round by round. A round is a numbered
batch of instruction requests; each answer is

    parsed and filtered  heuristic filters, then exact ROUGE-L novelty against the pool
    classified           is each accepted instruction a classification task?
    given instances      input/output examples (input-first, or label-first for classification)

There are no barriers between these steps (see `engine`): C request slots stay busy, novelty
is decided in a fixed order whatever the order answers arrive in, and every request is
stored before it is sent, so a run stopped or killed anywhere resumes where it stopped.
This module holds the run's settings, the decisions (pure functions, also used by
re-filter), the `Runner` that drives a run to its end, and estimates.
"""
from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import duckdb

from . import parsing, prompts
from . import local
from .backend import BACKEND_KINDS, LOCAL, Backend
from .embed import EmbedderUnavailable
from .engine import stored_parser_version, stored_prompt
from .filters import InstructionFilter, filter_instances, find_echoes
from .llm import RATE_LIMIT_PATIENCE_S, LLMError, PriceTable, Sampling
from .model import (ACCEPTED, COSINE_THRESHOLD, FAILED, FINISHED, KEPT, MAX_WORDS, MIN_WORDS, PAPER_KEYWORDS,
                    PAUSED, REJECTED, ROUGE_THRESHOLD, RUNNING, STOPPED)
from .novelty import NoveltyIndex, rouge_l, tokenize
from .store import Pool, PoolError

GENERATION_MODES = ("selfinstruct", "alpaca")
STRUCTURED_SETTINGS = ("auto", "on", "off")
TOP_K_EVIDENCE = 10
EXAMPLE_LAG = 2    # round N's generated examples come from rounds up to N - 2 (RunConfig.example_lag)


class StoredSettings:
    """Settings stored as JSON with a run (generation, judge, evaluation): `to_dict`, and
    `from_dict`, which ignores keys this version does not know (a file from another version)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RunConfig(StoredSettings):
    """Everything that decides what a run does; stored with the run (no API key)."""
    model: str = "selfinstruct-demo"
    base_url: str = ""
    backend: str = "offline"            # offline | local | openai-compatible (backend.BACKEND_KINDS)
    gguf: str = ""                      # local: the GGUF file ("" = the bundled model)
    threads: int | None = None          # local: CPU threads (None: all cores)
    ctx_size: int | None = None         # local: tokens of context per request (None: local.DEFAULT_CTX_SIZE)
    mode: str = "chat"                  # chat | completion
    structured: str = "auto"            # chat mode: JSON answers with a schema: auto (probe once) | on | off
    generation: str = "selfinstruct"    # selfinstruct (numbered list) | alpaca (batch of full tasks)
    requests_per_round: int = 8
    human_examples: int = 6             # in-context seeds per prompt
    machine_examples: int = 2           # in-context generated instructions, once there are some
    new_per_request: int = 8            # the paper stops at item 16 after 8 examples
    batch_examples: int = 3             # Alpaca mode: example tasks per prompt
    batch_size: int = 20                # Alpaca mode: tasks asked for per request
    max_instances: int = 5
    rouge_threshold: float = ROUGE_THRESHOLD
    # The semantic gate (semantic.py): the embedder's spec (embed.EmbedderSpec; None: no vectors,
    # no gate) and the cosine above which a candidate is the same task reworded (None: gate off,
    # vectors still stored). Neither may change on resume: the same answers give the same pool.
    embedder: dict | None = field(default_factory=lambda: {"kind": "bundled"})
    cosine_threshold: float | None = COSINE_THRESHOLD
    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS
    keywords: list[str] = field(default_factory=lambda: list(PAPER_KEYWORDS))
    sampling: dict = field(default_factory=lambda: Sampling().to_dict())
    classify_sampling: dict = field(default_factory=lambda: Sampling(
        temperature=0.0, top_p=1.0, max_tokens=8, presence_penalty=0.0).to_dict())
    instance_sampling: dict = field(default_factory=lambda: Sampling(
        temperature=0.0, top_p=1.0, max_tokens=600, presence_penalty=1.5).to_dict())
    concurrency: int = 8
    timeout_s: float = 60.0             # a deadline for each whole attempt, not per read
    max_retries: int = 5
    max_answer_bytes: int = 1_000_000   # larger answers are cut and rejected as "oversize"
    rpm: float | None = None            # the provider's requests-per-minute cap, if any
    tpm: float | None = None            # ... and tokens per minute
    example_lag: int = EXAMPLE_LAG      # round N takes generated examples from rounds <= N - lag; stored
                                        # with the run, never derived from concurrency (same seed, same pool)
    failure_streak: int = 3             # the run fails after this many requests in a row ran out of retries
    rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S   # nothing but 429s this long ends the run failed
    key_env: str = "OPENAI_API_KEY"     # the variable holding the API key (the key itself is never stored)
    batch: bool = False                 # send requests through the provider's Batch API
    batch_discount: float = 0.5         # batch price as a fraction of the list price
    batch_poll_s: float = 30.0
    batch_window: str = "24h"
    seed: int = 0
    steer: str = "off"                  # "coverage": in-context examples favour thin topics (topics.steer_examples)
    rounds: int | None = None           # stop after this many rounds (of this run)
    target: int | None = None           # stop when the pool holds this many generated instructions
    budget_usd: float | None = None
    budget_tokens: int | None = None
    price_per_m: list[float] | None = None   # [input, output] USD per 1M tokens; None: built-in table
    prompt_versions: dict = field(default_factory=prompts.version_table)

    @classmethod
    def from_dict(cls, data: dict):
        # A run stored before the semantic gate existed ran without one: resuming or re-filtering
        # it must not add one.
        if "cosine_threshold" not in data:
            data = {**data, "embedder": None, "cosine_threshold": None}
        return super().from_dict(data)

    def instruction_filter(self) -> InstructionFilter:
        return InstructionFilter(min_words=self.min_words, max_words=self.max_words,
                                 keywords=tuple(self.keywords))

    def price_table(self) -> PriceTable:
        """The built-in prices (editable defaults), with this run's own price for its model;
        in batch mode every price times `batch_discount`."""
        table = PriceTable.default()
        if self.price_per_m:
            table = table.with_price(self.model, *self.price_per_m)
        if self.batch:
            table = PriceTable({m: (p["input_per_m"] * self.batch_discount, p["output_per_m"] * self.batch_discount)
                                for m, p in table.to_dict().items()})
        return table

    def lag(self) -> int:
        """The example lag. The default, 2, is the README's rule and keeps a run's prompts, and so its
        pool, the same whatever the concurrency; a larger lag lets more rounds be in flight at once
        (busier slots at a high concurrency) but changes which examples later rounds see (measured:
        bench/README.md, engine). A run stored without one (before the lag was stored) gets 2."""
        return int(self.example_lag) if self.example_lag else EXAMPLE_LAG

    def validate(self) -> None:
        """Plain-words errors for settings that cannot work."""
        check_endpoint_settings(self)
        checks = [
            (self.example_lag is None or int(self.example_lag) >= 1, "The example lag must be at least 1 round."),
            (self.cosine_threshold is None or -1.0 <= self.cosine_threshold <= 1.0,
             "The cosine threshold must be between -1 and 1 (or off)."),
            (self.cosine_threshold is None or self.embedder is not None,
             "A cosine threshold needs an embedder."),
            (0 < self.batch_discount <= 1, "The batch discount must be in (0, 1]."),
            (self.batch_poll_s > 0, "The batch polling interval must be more than 0 seconds."),
            (self.requests_per_round >= 1, "Requests per round must be at least 1."),
            (self.steer in ("off", "coverage"), f"Steering must be off or coverage, not {self.steer!r}."),
            (not (self.batch and self.backend == LOCAL),
             "The local model has no Batch API: run it without batch mode."),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def check_endpoint_settings(cfg) -> None:
    """Plain-words errors for the settings every run that sends requests has (generation, judge,
    evaluation): where requests go, how many at once, how long to wait, how often to retry.
    Settings a kind of run does not have (structured output, rate caps) are not checked."""
    checks = [
        (cfg.backend in BACKEND_KINDS, f"The backend must be one of {', '.join(BACKEND_KINDS)}."),
        (cfg.backend != "openai-compatible" or bool((cfg.base_url or "").strip()),
         "An OpenAI-compatible endpoint needs a base URL."),
        (cfg.backend == "offline" or bool((cfg.model or "").strip()), "Name the model to use."),
        (cfg.mode in ("chat", "completion"), "The mode must be chat or completion."),
        (getattr(cfg, "structured", "auto") in STRUCTURED_SETTINGS,
         f"Structured output must be one of {', '.join(STRUCTURED_SETTINGS)}."),
        (cfg.concurrency >= 1, "Concurrency must be at least 1."),
        (cfg.timeout_s > 0, "The timeout must be more than 0 seconds."),
        (cfg.max_retries >= 0, "Retries must be 0 or more."),
        (getattr(cfg, "max_answer_bytes", 1024) >= 1024, "The answer size limit must be at least 1024 bytes."),
        (cfg.failure_streak >= 1, "The failure streak must be at least 1."),
        (getattr(cfg, "rate_limit_patience_s", 1) > 0, "The rate-limit patience must be more than 0 seconds."),
        (getattr(cfg, "rpm", None) is None or cfg.rpm > 0, "Requests per minute must be more than 0."),
        (getattr(cfg, "tpm", None) is None or cfg.tpm > 0, "Tokens per minute must be more than 0."),
        (cfg.threads is None or cfg.threads >= 1, "Threads must be at least 1."),
        (cfg.ctx_size is None or cfg.ctx_size >= local.MIN_CTX_SIZE,
         f"The context size must be at least {local.MIN_CTX_SIZE} tokens."),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if cfg.backend == LOCAL:
        try:
            local.resolve_gguf(cfg.gguf)
        except local.LocalModelError as exc:
            raise ValueError(str(exc)) from None


# Settings a resumed run may change: where and how requests go, and when the run stops.
RESUMABLE_SETTINGS = ("backend", "base_url", "model", "key_env", "timeout_s", "max_retries", "concurrency",
                      "rpm", "tpm", "max_answer_bytes", "rounds", "target", "budget_usd", "budget_tokens",
                      "failure_streak", "rate_limit_patience_s", "batch_poll_s", "gguf", "threads", "ctx_size", "structured")


@dataclass
class Event:
    """A progress report for the UI and the CLI."""
    kind: str            # run_started | round_started | step | request | round_done | run_ended
    run_id: int
    round: int = 0
    step: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    data: dict = field(default_factory=dict)


class RunControl:
    """Asks a running run to pause or stop (from another thread)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:   # "paused" or "stopped"
        self.reason = reason
        self._stop.set()

    @property
    def requested(self) -> bool:
        return self._stop.is_set()


@dataclass
class RunOutcome:
    run_id: int
    status: str           # finished | paused | stopped | failed
    stop_reason: str
    rounds_done: int
    accepted: int
    error: str | None = None
    next_step: str = ""   # what to do now, in plain words (failed and paused runs)


def start_run(pool: Pool, config: RunConfig, *, name: str | None = None, actor: str = "user") -> int:
    if pool.counts().seeds == 0:
        raise ValueError("The pool has no seed tasks; import some first.")
    config.validate()
    config.example_lag = config.lag()   # stored: a resume keeps the lag its run started with
    return pool.runs.create(config.to_dict(), name=name, actor=actor)


def apply_overrides(pool: Pool, run_id: int, overrides: dict, *, actor: str = "user") -> RunConfig:
    """Change a stored run's resumable settings (a corrected model, URL, timeout...), audited."""
    run = pool.runs.get(run_id)
    if run is None:
        raise ValueError(f"There is no run {run_id} in {pool.path}.")
    stored = run["config"]
    unknown = set(overrides) - set(RESUMABLE_SETTINGS)
    if unknown:
        raise ValueError(f"These settings cannot change when a run resumes: {', '.join(sorted(unknown))}.")
    changes = {k: (stored.get(k), v) for k, v in overrides.items() if stored.get(k) != v}
    config = RunConfig.from_dict({**stored, **overrides})
    config.validate()
    if changes:
        pool.runs.update_config(run_id, config.to_dict(), changes, actor=actor)
    return config


# One job per pool file per process, whatever its kind (a generation run, a judge run, an
# evaluation) and whatever the number of Pool objects, managers or browser sessions; DuckDB keeps
# other processes out. Resolved pool path -> (kind, id).
_ACTIVE: dict[str, tuple[str, int]] = {}
_ACTIVE_LOCK = threading.Lock()
JOB_NOUNS = {"run": "Run", "judge": "Judge run", "evaluate": "Evaluation", "prerate": "Evaluation"}


def active_job(pool: Pool) -> tuple[str, int] | None:
    """(kind, id) of the job going on in this process for this pool file, if any."""
    with _ACTIVE_LOCK:
        return _ACTIVE.get(str(os.path.realpath(pool.path)))


def active_of(pool: Pool, kind: str) -> int | None:
    """The id of the job of `kind` going on for this pool file, if that is the one going on."""
    job = active_job(pool)
    return job[1] if job is not None and job[0] == kind else None


def active_run(pool: Pool) -> int | None:
    """The generation run going on in this process for this pool file, if any."""
    return active_of(pool, "run")


@contextmanager
def exclusive_job(pool: Pool, kind: str, job_id: int):
    """Hold the pool's one job slot for the block; RuntimeError (plain words) when it is taken."""
    key = str(os.path.realpath(pool.path))
    with _ACTIVE_LOCK:
        other = _ACTIVE.get(key)
        if other is not None:
            raise RuntimeError(f"{JOB_NOUNS[other[0]]} {other[1]} is already going on for {pool.path}; "
                               "pause or stop it first.")
        _ACTIVE[key] = (kind, job_id)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.pop(key, None)


def resume_command(run_id: int) -> str:
    return f"selfinstruct generate --resume {run_id}"


NEXT_STEPS = {
    "auth": "Check the API key (OPENAI_API_KEY or the key field), then resume.",
    "model_not_found": "Resume with the right model name (--model on the command line, Model in the app).",
    "unreachable": "Check that the server is running and the base URL is right, then resume "
                   "(--base-url to change it).",
    "bad_request": "Check the base URL, the mode and the sampling settings, then resume.",
    "context_length": "Use a model with a longer context or fewer examples per prompt in a new run.",
    "rate_limit": "Wait a while, lower the concurrency (--concurrency) or set --rpm/--tpm, then resume.",
    "timeout": "Raise the timeout (--timeout) or lower max_tokens or the concurrency, then resume.",
    "server": "The endpoint keeps failing: try again later and resume.",
    "bad_response": "Check that the endpoint is OpenAI-compatible and the mode is right, then resume.",
    "storage": "Free disk space (or fix the pool file's folder), then resume.",
    "batch": "Look at the batch on the provider's side, then resume.",
    "local_model": "Install or choose the model file (--gguf on the command line), then resume.",
}


class Runner:
    """Runs (or resumes) one run of a pool until a stop condition, a pause/stop request,
    or a failure that needs a person (then the run ends *failed* with the next step)."""

    def __init__(self, pool: Pool, run_id: int, *, api_key: str | None = None,
                 prices: PriceTable | None = None, on_event: Callable[[Event], None] | None = None,
                 control: RunControl | None = None, backend: Backend | None = None,
                 overrides: dict | None = None, actor: str = "user", env_key_any_url: bool = False):
        if pool.runs.get(run_id) is None:
            raise ValueError(f"There is no run {run_id} in {pool.path}.")
        self.pool = pool
        self.run_id = run_id
        self.config = apply_overrides(pool, run_id, overrides or {}, actor=actor)
        # env_key_any_url: see backend.py (the app leaves it False; the CLI's user owns the key)
        self.backend = backend or Backend.for_run(self.config.to_dict(), api_key=api_key,
                                                  env_key_any_url=env_key_any_url)
        self.prices = prices or self.config.price_table()
        self.on_event = on_event or (lambda event: None)
        self.control = control or RunControl()

    def run(self) -> RunOutcome:
        from . import engine

        with exclusive_job(self.pool, "run", self.run_id):
            self.pool.runs.set_status(self.run_id, RUNNING)
            self.on_event(Event("run_started", self.run_id, message=f"run {self.run_id} started"))
            started_backend = self.backend._server is None
            try:
                if started_backend and self.backend.kind == LOCAL:
                    # loading a GGUF file takes seconds, minutes on a busy machine: say so
                    self.on_event(Event("preparing", self.run_id, message=f"loading the local model "
                                        f"{self.config.model} (llama.cpp)"))
                self.backend.start()
                decide_structured(self.pool, self.run_id, self.config, self.backend, on_event=self.on_event,
                                  control=self.control)
                state = engine.RunState(self.pool, self.run_id, self.config, on_event=self.on_event,
                                        backend=self.backend)
                if self.config.batch:
                    from . import batch

                    reason = _run_coroutine(batch.run_batches(state, self.backend, self.control, self.prices))
                else:
                    reason = _run_coroutine(engine.stream(state, self.backend, self.control, self.prices))
                return self._end(FINISHED, reason)
            except engine.Interrupted:
                reason = self.control.reason or STOPPED
                return self._end(reason, reason, next_step=f"Resume with: {resume_command(self.run_id)}"
                                 if reason == PAUSED else "")
            except EmbedderUnavailable as exc:     # the run's gate needs WordLlama, which cannot load here
                return self._end(FAILED, "embedder", error=str(exc),
                                 next_step=f"Install wordllama==0.4.0.post1, then resume with: {resume_command(self.run_id)}")
            except local.LocalModelError as exc:   # the GGUF file went missing, or llama.cpp failed
                return self._end(FAILED, "local_model", error=str(exc),
                                 next_step=f"{NEXT_STEPS['local_model']} Resume with: {resume_command(self.run_id)}")
            except (LLMError, engine.RunFailed) as exc:
                return self._end(FAILED, exc.kind, error=exc.message,
                                 next_step=f"{NEXT_STEPS.get(exc.kind, 'Fix the cause, then resume.')} "
                                           f"Resume with: {resume_command(self.run_id)}")
            except (duckdb.Error, OSError) as exc:
                message = (f"Could not write to the pool {self.pool.path}: {exc.__class__.__name__}: {exc}. "
                           "Nothing already written is lost.")
                return self._end(FAILED, "storage", error=message,
                                 next_step=f"{NEXT_STEPS['storage']} Resume with: {resume_command(self.run_id)}")
            finally:
                if started_backend:
                    self.backend.stop()

    def _end(self, status: str, reason: str, error: str | None = None, next_step: str = "") -> RunOutcome:
        try:
            self.pool.runs.set_status(self.run_id, status, stop_reason=reason, error=error)
            outcome = RunOutcome(self.run_id, status, reason, self.pool.runs.rounds_done(self.run_id),
                                 self.pool.runs.accepted_count(self.run_id), error, next_step)
        except (duckdb.Error, OSError) as exc:
            # The pool cannot be written at all (a full disk): say so; the run is marked
            # interrupted the next time the file is opened, and resumes from what was written.
            raise PoolError(f"{error or reason} The run's status could not be saved either ({exc}). "
                            f"{NEXT_STEPS['storage']} Resume with: {resume_command(self.run_id)}") from None
        self.on_event(Event("run_ended", self.run_id, message=error or reason, data=asdict(outcome)))
        return outcome


# -- structured output ----------------------------------------------------------------------
PROBE_AGAIN_S = 5.0     # a probe that got no answer is sent again after this long


async def probe_structured(backend: Backend, config: RunConfig) -> tuple[bool | None, str, str | None]:
    """One tiny structured chat request: (supported, what happened in plain words, error kind).
    Supported when the answer is JSON matching the probe's schema; a refusal (400, 422: the server
    does not know response_format) or any other answer means the text layout. No answer at all (a
    timeout, a 5xx, a dropped connection, after the retries) is not an answer: supported is None and
    nothing may be decided from it. Errors that would stop any request (wrong key, unknown model,
    unreachable) are raised as LLMError."""
    prompt = prompts.build_probe_prompt()
    client = backend.client(backend.llm_config(
        model=config.model, mode="chat", concurrency=1, timeout_s=config.timeout_s,
        max_retries=min(config.max_retries, 2), max_answer_bytes=config.max_answer_bytes,
        rate_limit_patience_s=config.rate_limit_patience_s))
    try:
        completion = await client.complete(prompt, Sampling(temperature=0.0, top_p=1.0, max_tokens=48,
                                                            presence_penalty=0.0))
    except LLMError as exc:
        if exc.kind != "bad_request":
            raise
        return False, f"the server refused a JSON-schema request (HTTP {exc.status or 'error'})", None
    finally:
        await client.aclose()
    if completion.error:
        return None, f"the probe request got no answer ({completion.error})", completion.error_kind
    _, problem = parsing.read_json(completion.text, prompts.PROBE_SCHEMA, finish_reason=completion.finish_reason)
    if problem:
        return False, f"the server ignored the JSON schema ({problem})", None
    return True, "the server answered a probe request with JSON matching its schema", None


def probe_until_answered(backend: Backend, config, *, control: "RunControl | None" = None,
                         say: Callable[[str], None] | None = None) -> tuple[bool, str]:
    """`probe_structured` until the endpoint answers it, before anything is planned, so the run's
    layout (and so its dataset) never depends on a transport failure: a probe that got no answer
    goes again after PROBE_AGAIN_S; `failure_streak` of them in a row fail the run like any
    failing request (engine.RunFailed), with nothing stored, so a resume probes again. Generation,
    the judge and the evaluation's pre-rating use it."""
    from .engine import RunFailed

    misses = 0
    while True:
        supported, note, kind = _run_coroutine(_unless_stopped(probe_structured(backend, config), control))
        if supported is not None:
            return supported, note
        misses += 1
        if misses >= config.failure_streak:
            raise RunFailed(kind or "server", f"The structured-output probe got no answer {misses} times in a "
                            f"row, so nothing was decided (a resume probes again); the last: {note}.")
        if say is not None:
            say(f"structured output: not decided yet, {note}; probing again in {PROBE_AGAIN_S:g} s")
        _run_coroutine(_unless_stopped(asyncio.sleep(PROBE_AGAIN_S), control))


async def _unless_stopped(coro, control: "RunControl | None"):
    """Await `coro`, giving up (engine.Interrupted) as soon as a pause or stop is asked for:
    a probe to a hung server must not hold a stop for its whole deadline."""
    from .engine import Interrupted

    task = asyncio.ensure_future(coro)
    try:
        while not task.done():
            if control is not None and control.requested:
                raise Interrupted()
            await asyncio.wait({task}, timeout=0.2)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def decide_structured(pool: Pool, run_id: int, config: RunConfig, backend: Backend,
                      on_event: Callable[[Event], None] | None = None,
                      control: "RunControl | None" = None) -> bool:
    """Whether the run's new requests ask for JSON: decided once per run and stored with it
    (`runs.structured`, `runs.structured_note`); `auto` sends one probe request the first time."""
    run = pool.runs.get(run_id) or {}
    if config.mode != "chat":
        structured, note = False, "completion mode: the paper's text layout (structured output is for chat)"
    elif config.structured == "on":
        structured, note = True, "on (set for the run)"
    elif config.structured == "off":
        structured, note = False, "off (set for the run)"
    elif run.get("structured") is not None:
        return bool(run["structured"])
    elif config.backend == "offline":
        # The demo replays text answers: JSON would only re-dress them (`on` still tries it).
        structured, note = False, "auto: off, the offline demo replays text answers (no probe sent)"
    else:
        say = (lambda text: on_event(Event("step", run_id, message=text))) if on_event is not None else None
        structured, note = probe_until_answered(backend, config, control=control, say=say)
        note = f"auto: {'on' if structured else 'off'}, {note}"
    if run.get("structured") != structured or run.get("structured_note") != note:
        pool.runs.set_structured(run_id, structured, note)
        if on_event is not None:
            on_event(Event("step", run_id, message=f"structured output: {note}"))
    return structured


def plan_generation(cfg: RunConfig, run_id: int, number: int, seeds: list[dict],
                    machine: list[str], *, structured: bool = False, weights: tuple | None = None) -> list[dict]:
    """Round `number`'s instruction requests: deterministic for the run's seed, the seeds and
    the generated instructions it may use as examples. `structured`: ask for JSON. `weights`
    (seed weights, generated weights; steered runs, topics.steer_examples): examples are drawn
    with those weights instead of uniformly, never one of weight 0."""
    from .topics import weighted_sample

    rng = random.Random(f"{cfg.seed}:{run_id}:{number}")

    def draw(items, k, which):
        if weights is None:
            return rng.sample(items, k)
        return weighted_sample(rng, items, weights[which], k)

    planned = []
    for position in range(cfg.requests_per_round):
        if cfg.generation == "alpaca":
            examples = [_task_example(t, rng) for t in draw(seeds, min(cfg.batch_examples, len(seeds)), 0)]
            prompt = prompts.build_batch_prompt(examples, num_to_generate=cfg.batch_size, structured=structured)
        else:
            n_machine = min(cfg.machine_examples, len(machine))
            n_human = min(cfg.human_examples + cfg.machine_examples - n_machine, len(seeds))
            examples = [t["instruction"] for t in draw(seeds, n_human, 0)]
            examples += draw(machine, n_machine, 1)
            rng.shuffle(examples)
            prompt = prompts.build_instruction_prompt(examples, num_to_generate=cfg.new_per_request,
                                                      structured=structured)
        planned.append(planned_request(position, prompt, cfg))
    return planned


# -- decisions (pure: also used by re-filter) ----------------------------------------------
def decide_round(requests: list[dict], instruction_filter: InstructionFilter, index: NoveltyIndex,
                 threshold: float, *, batch: bool, semantic=None) -> list[dict]:
    """Parse a round's answered requests and decide every candidate, in order, adding
    the accepted ones to `index` as it goes (so a round cannot accept two copies).
    `semantic` (a semantic.SemanticIndex): the second gate, after ROUGE; every item of an
    answer is embedded (and its vector stored) whatever its fate."""
    rows: list[dict] = []
    for request in requests:
        if request["response"] is None:
            continue
        text = request["response"]
        prompt = stored_prompt(request)
        parsed = parsing.parse_answer(prompt.stage, text, prompt, finish_reason=request.get("finish_reason"),
                                      version=stored_parser_version(request))
        if batch:
            items = [(t["instruction"], t) for t in parsed.tasks]
        else:
            items = [(item, None) for item in parsed.items]
        # Echoes are judged before the filters: an example with words added can pass them all.
        echoes = find_echoes([i for i, _ in items], parsing.prompt_examples(prompt),
                             restarted=getattr(parsed, "restarted", False),
                             start_index=(prompt.meta or {}).get("start_index"))
        gate = semantic.answer([i for i, _ in items]) if semantic is not None and items else None
        for k, (instruction, task) in enumerate(items):
            if k in echoes:
                why = echoes[k]
                row = {"instruction": instruction, "status": REJECTED, "reason": why.reason,
                       "details": {"message": why.message, **why.evidence}}
            else:
                row = decide_instruction(instruction, instruction_filter, index, threshold,
                                         gate=gate, slot=k)
            row["request_id"] = request["id"]
            row["position"] = len(rows)
            if task is not None:
                row["is_classification"] = False
                if row["status"] == ACCEPTED:
                    row["instances"] = decide_instances_list([{"input": task.get("input", ""),
                                                               "output": task.get("output", "")}])
            rows.append(row)
        fragments = list(parsed.unparseable)
        if not items and not fragments and text.strip():
            fragments = [text]
        for fragment in fragments:
            rows.append({
                "request_id": request["id"], "position": len(rows), "instruction": fragment,
                "status": REJECTED, "reason": "unparseable",
                "details": {"message": "The model's answer could not be read as a task.",
                            "finish_reason": request.get("finish_reason")},
            })
    return rows


def decide_instruction(instruction: str, instruction_filter: InstructionFilter, index: NoveltyIndex,
                       threshold: float, *, gate=None, slot: int = 0) -> dict:
    rejection = instruction_filter.check(instruction)
    if rejection is not None:
        return {"instruction": instruction, "status": REJECTED, "reason": rejection.reason,
                "details": {"message": rejection.message, **rejection.evidence}}
    # The best score decides; only a reject pays for the top-10 evidence (4x dearer).
    best_score, best_id = index.max_similarity(instruction)
    row = {"instruction": instruction, "max_rouge": best_score,
           "nearest_text": index.text(best_id) if best_id is not None else None}
    if best_score > threshold:
        evidence = [{"text": index.text(i), "score": score}
                    for i, score in index.most_similar(instruction, k=TOP_K_EVIDENCE)]
        row.update(status=REJECTED, reason="rouge", details={
            "message": f"ROUGE-L {best_score:.3f} with a pool instruction is above the threshold {threshold}.",
            "threshold": threshold, "nearest": evidence})
    else:
        nearest = [{"text": row["nearest_text"], "score": best_score}] if best_id is not None else []
        row.update(status=ACCEPTED, reason=None, details={"threshold": threshold, "nearest": nearest})
        if gate is not None:
            cosine, near = gate.nearest(slot)
            limit = gate.index.threshold
            if cosine is not None:
                row["details"].update(cosine=cosine, cosine_nearest=near, cosine_threshold=limit,
                                      embedder=gate.index.embedder.name)
            if cosine is not None and limit is not None and cosine > limit:
                pair_rouge = rouge_l(tokenize(near), tokenize(instruction))
                row.update(status=REJECTED, reason="semantic_dup", nearest_text=near, details={
                    "message": f"Cosine {cosine:.3f} with a pool instruction is above the threshold {limit} "
                               f"({gate.index.embedder.name}); ROUGE-L between them is {pair_rouge:.3f}.",
                    "cosine": cosine, "cosine_threshold": limit, "embedder": gate.index.embedder.name,
                    "rouge_l": pair_rouge, "threshold": threshold,
                    "nearest": [{"text": near, "score": pair_rouge, "cosine": cosine}]})
                return row
            gate.accept(slot)
        index.add(instruction)
    return row


def decide_instances_list(instances: list[dict]) -> list[dict]:
    kept, rejected = filter_instances(instances)
    rows = [{**inst, "status": KEPT} for inst in kept]
    rows += [{**inst, "status": REJECTED, "reason": why.reason,
              "details": {"message": why.message, **why.evidence}} for inst, why in rejected]
    return rows


def decide_instances(text: str, is_classification: bool, max_instances: int,
                     finish_reason: str | None = None, prompt: prompts.Prompt | None = None,
                     parser_version: str | None = None) -> list[dict]:
    """`prompt`: the stored request's prompt (a structured one is parsed as JSON);
    `parser_version`: the instances parser to read it with (None: the current one)."""
    parsed = parsing.parse_answer(prompts.STAGE_INSTANCES, text, prompt, finish_reason=finish_reason,
                                  is_classification=is_classification, version=parser_version)
    rows = decide_instances_list(parsed.instances[:max_instances])
    if not parsed.instances and text.strip():
        details = {"message": "The model's answer could not be read as input/output examples."}
        if parsed.unparseable:
            details["why"] = parsed.unparseable[0]
        rows.append({"input": "", "output": text, "status": REJECTED, "reason": "unparseable",
                     "details": details})
    return rows


# -- re-filter ---------------------------------------------------------------------------
@dataclass
class RefilterReport:
    run_id: int
    candidates: int
    changed: list[dict]          # {id, instruction, before, after}
    before: dict[str, int]       # counts by outcome ("accepted" or the reject reason)
    after: dict[str, int]
    applied: int = 0


def check_parser_versions(run_id: int, stage: str, requests: list[dict]) -> None:
    """Refuse (`parsing.UnknownParserVersion`, in one plain sentence) when some of a run's stored
    answers were read with a parser version this code does not have."""
    missing = sorted({v for v in map(stored_parser_version, requests) if not parsing.has_parser(stage, v)})
    if missing:
        have = ", ".join(parsing.known_parser_versions(stage)) or "none"
        raise parsing.UnknownParserVersion(missing[0], stage, (
            f"Run {run_id} cannot be re-filtered by this version of selfinstruct: its answers were read with "
            f"parser {' and '.join(missing)}, and this version has only {have}. Re-filter it with a selfinstruct "
            f"version that has {' and '.join(missing)}, or leave its decisions as they are; nothing was changed."))


def refilter(pool: Pool, run_id: int, *, threshold: float | None = None, keywords: list[str] | None = None,
             min_words: int | None = None, max_words: int | None = None, cosine: float | str | None = None,
             apply: bool = False, actor: str = "user") -> RefilterReport:
    """Decide a run's candidates again from the stored raw responses with other
    settings, without calling the model. With `apply`, candidates whose decision
    changes are updated (human decisions are left alone) and audited.

    Each answer is read again with the parser version it was applied with
    (`requests.parser_version`; NULL: before versions, see `parsing.PRE_VERSION_PARSERS`). When
    one of them is not in this code, the run is refused before anything is decided or changed:
    `parsing.UnknownParserVersion` says which version it needs.

    `cosine`: the semantic gate's threshold to try ("off": none; None: the run's), from the
    stored vectors (a run without an embedder is tried with the bundled one; an endpoint's
    vectors are never fetched again: texts without one are an error naming `selfinstruct embed`)."""
    run = pool.runs.get(run_id)
    if run is None:
        raise ValueError(f"There is no run {run_id}.")
    cfg = RunConfig.from_dict(run["config"])
    for name, value in (("rouge_threshold", threshold), ("keywords", keywords),
                        ("min_words", min_words), ("max_words", max_words)):
        if value is not None:
            setattr(cfg, name, value)
    if cosine is not None:
        cfg.cosine_threshold = None if cosine == "off" else float(cosine)
        if cfg.cosine_threshold is not None and cfg.embedder is None:
            cfg.embedder = {"kind": "bundled"}
    index = NoveltyIndex(pool.runs.pool_instructions_before_run(run_id))
    semantic = stored_semantic_index(pool, cfg, pool.runs.pool_instructions_before_run(run_id))
    stage = prompts.STAGE_BATCH if cfg.generation == "alpaca" else prompts.STAGE_INSTRUCTIONS
    stored = pool.runs.candidates(run_id)
    by_round: dict[int, list[dict]] = {}
    for cand in stored:
        by_round.setdefault(cand["round_id"], []).append(cand)
    requests = {round_id: pool.requests.requests_for(round_id, stage) for round_id in by_round}
    check_parser_versions(run_id, stage, [r for rows in requests.values() for r in rows if r["response"] is not None])
    changed, before, after, decisions = [], {}, {}, {}
    for round_id, old_rows in by_round.items():
        new_rows = decide_round(requests[round_id], cfg.instruction_filter(), index,
                                cfg.rouge_threshold, batch=stage == prompts.STAGE_BATCH, semantic=semantic)
        for old, new in zip(old_rows, new_rows):
            if old["instruction"] != new["instruction"]:
                raise RuntimeError("The stored candidates no longer match the stored responses "
                                   f"(round id {round_id}); re-filter cannot line them up.")
            old_key = old["reason"] if old["status"] == REJECTED else ACCEPTED
            new_key = new["reason"] if new["status"] == REJECTED else ACCEPTED
            before[old_key] = before.get(old_key, 0) + 1
            after[new_key] = after.get(new_key, 0) + 1
            if old_key != new_key:
                changed.append({"id": old["id"], "instruction": old["instruction"],
                                "before": old_key, "after": new_key})
                decisions[old["id"]] = {**new, "why": "re-filter with other settings"}
    report = RefilterReport(run_id, len(stored), changed, before, after)
    if apply and decisions:
        report.applied = pool.runs.redecide_candidates(run_id, decisions, actor=actor)
    return report


def stored_semantic_index(pool: Pool, cfg: RunConfig, texts: list[str]):
    """The semantic gate of a run decided again (re-filter): the bundled embedder as is (it is
    offline and gives the same vectors), an endpoint's only through its stored vectors."""
    from . import embed, semantic

    if cfg.embedder is None:
        return None
    spec = embed.EmbedderSpec.from_dict(cfg.embedder)
    if spec.kind == embed.BUNDLED:
        embedder = embed.bundled()
    else:
        name = embed.endpoint_name(spec.model or "", cfg.base_url or cfg.backend)
        dim = pool.embeddings.dim(name)
        if dim is None:
            raise ValueError(f"The pool holds no vectors from {name}; embed the pool first (selfinstruct embed).")
        embedder = semantic.StoredOnly(name, dim)
    return semantic.SemanticIndex(pool, embedder, texts, cfg.cosine_threshold)


# -- estimates ------------------------------------------------------------------------------
@dataclass
class Estimate:
    rounds: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float
    basis: str
    low_seconds: float | None = None    # the range the pool's earlier runs give (None: a guess)
    high_seconds: float | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @staticmethod
    def _duration(seconds: float) -> str:
        if seconds < 90:
            return f"{seconds:.0f} s"
        if seconds < 5400:
            return f"{seconds / 60:.0f} min"
        return f"{seconds / 3600:.1f} h"

    @property
    def time_text(self) -> str:
        text = self._duration(self.seconds)
        if self.low_seconds is not None and self.high_seconds is not None:
            low, high = self._duration(self.low_seconds), self._duration(self.high_seconds)
            if low != high:
                text += f" ({low} to {high})"
        return text


# With no run of this model in the pool yet: wall seconds per request, a guess. Offline answers at
# once; the bundled local model took 1.4-1.8 s a request over a default round on 2 cores (README);
# a hosted model, a few seconds at concurrency 8.
GUESS_S_PER_REQUEST = {"offline": 0.05, LOCAL: 1.6}
GUESS_S_PER_REQUEST_HOSTED = 1.0


def estimate_run(pool: Pool, config: RunConfig, prices: PriceTable | None = None) -> Estimate:
    """Tokens, cost and time before a run. Time comes from what this pool's earlier runs of the
    same model and backend took (wall clock per request answered, follow-ups included), with the
    range they span; with none, from a guess that says so."""
    prices = prices or config.price_table()
    history = pool.requests.request_history(prompts.STAGE_INSTRUCTIONS, config.model)
    seeds = [t["instruction"] for t in pool.seeds.seed_tasks()[:8]] or ["An example task."]
    sample = prompts.build_instruction_prompt(seeds, num_to_generate=config.new_per_request)
    gen_prompt = history["prompt_tokens"] or math.ceil(len(sample.full_text()) / 4)
    gen_completion = history["completion_tokens"] or config.sampling.get("max_tokens", 1024) / 2
    accepted_per_request = config.new_per_request * 0.5
    if config.generation == "alpaca":
        accepted_per_request = config.batch_size * 0.5
    per_round_accepted = config.requests_per_round * accepted_per_request
    if config.rounds:
        rounds = config.rounds
    elif config.target:
        rounds = max(1, math.ceil(max(0, config.target - pool.runs.accepted_count()) / per_round_accepted))
    else:
        rounds = 1
    follow_ups = 0 if config.generation == "alpaca" else int(2 * per_round_accepted)
    paces = [p for p in pool.runs.run_pace(config.model, config.backend) if p["requests"]]
    same = [p for p in paces if p["concurrency"] == config.concurrency]
    paces = same or paces
    if paces:
        # requests per round per planned instruction request, as these runs had them
        per_planned = statistics.median(p["requests"] / p["rounds"] / max(1, p["requests_per_round"] or 1)
                                        for p in paces)
        requests = max(1, round(rounds * config.requests_per_round * per_planned))
        follow_ups = max(0, round(requests / rounds) - config.requests_per_round)
    else:
        requests = rounds * (config.requests_per_round + follow_ups)
    prompt_tokens = int(rounds * (config.requests_per_round * gen_prompt + follow_ups * 250))
    completion_tokens = int(rounds * (config.requests_per_round * gen_completion + follow_ups * 80))
    cost = prices.cost(config.model, prompt_tokens, completion_tokens)
    if paces:
        per_request = [p["seconds"] / p["requests"] for p in paces]
        seconds = requests * statistics.median(per_request)
        low, high = requests * min(per_request), requests * max(per_request)
        runs = ", ".join(f"run {p['run_id']}" for p in paces)
        how_sure = ("one run only: treat it as a rough figure" if len(paces) == 1
                    else f"the range is what {len(paces)} runs took")
        basis = (f"from what {runs} of {config.model} in this pool took per request"
                 + ("" if same else f" (at another concurrency than {config.concurrency})")
                 + f"; {how_sure}")
    else:
        seconds = requests * GUESS_S_PER_REQUEST.get(config.backend, GUESS_S_PER_REQUEST_HOSTED)
        low = high = None
        basis = (f"as a guess (no run of {config.model} in this pool yet; the first round's pace "
                 "makes the next estimate real)")
    tokens_from = (f"tokens from {history['n']} earlier request(s)" if history["n"]
                   else "tokens from prompt sizes and half of max_tokens")
    return Estimate(rounds, requests, prompt_tokens, completion_tokens, cost, seconds,
                    f"time {basis}; {tokens_from}", low, high)


# -- helpers ------------------------------------------------------------------------------
def _run_coroutine(coro):
    """asyncio.run, also from a thread that already runs an event loop (a notebook,
    Playwright's sync API): then the coroutine gets a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="selfinstruct-requests")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def planned_request(position: int, prompt: prompts.Prompt, cfg: RunConfig, extra: dict | None = None) -> dict:
    return {
        "position": position, "prompt_version": prompt.version, "model": cfg.model, "mode": cfg.mode,
        "prompt": prompt.text,
        "meta": {"stage": prompt.stage, "system": prompt.system,
                 "stop": list(prompt.stop) if prompt.stop else None, "prompt_meta": prompt.meta,
                 # the schema as sent, so a resumed run rebuilds the very same request
                 **({"schema": prompt.schema} if prompt.schema else {}),
                 **(extra or {})},
        "structured": True if prompt.schema else None,
    }


def _task_example(task: dict, rng: random.Random) -> dict:
    instance = rng.choice(task["instances"]) if task["instances"] else {"input": "", "output": ""}
    return {"instruction": task["instruction"], "input": instance["input"], "output": instance["output"]}
