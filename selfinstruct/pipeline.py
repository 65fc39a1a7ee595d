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
import statistics
from dataclasses import asdict, dataclass
from typing import Callable

import duckdb

from . import parsing, prompts
from . import local
from .backend import LOCAL, Backend
from .control import Event, Interrupted, RunControl, RunFailed, exclusive_job, run_coroutine
from .embed import EmbedderUnavailable
from .decisions import decide_round, stored_parser_version
from .llm import LLMError, PriceTable, Sampling
from .model import (ACCEPTED, FAILED, FINISHED, PAUSED, REJECTED, RUNNING, STOPPED)
from .novelty import NoveltyIndex
from .settings import (RESUMABLE_SETTINGS, RunConfig)
from .store import Pool, PoolError


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

                    reason = run_coroutine(batch.run_batches(state, self.backend, self.control, self.prices))
                else:
                    reason = run_coroutine(engine.stream(state, self.backend, self.control, self.prices))
                return self._end(FINISHED, reason)
            except Interrupted:
                reason = self.control.reason or STOPPED
                return self._end(reason, reason, next_step=f"Resume with: {resume_command(self.run_id)}"
                                 if reason == PAUSED else "")
            except EmbedderUnavailable as exc:     # the run's gate needs WordLlama, which cannot load here
                return self._end(FAILED, "embedder", error=str(exc),
                                 next_step=f"Install wordllama==0.4.0.post1, then resume with: {resume_command(self.run_id)}")
            except local.LocalModelError as exc:   # the GGUF file went missing, or llama.cpp failed
                return self._end(FAILED, "local_model", error=str(exc),
                                 next_step=f"{NEXT_STEPS['local_model']} Resume with: {resume_command(self.run_id)}")
            except (LLMError, RunFailed) as exc:
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
    failing request (control.RunFailed), with nothing stored, so a resume probes again. Generation,
    the judge and the evaluation's pre-rating use it."""

    misses = 0
    while True:
        supported, note, kind = run_coroutine(_unless_stopped(probe_structured(backend, config), control))
        if supported is not None:
            return supported, note
        misses += 1
        if misses >= config.failure_streak:
            raise RunFailed(kind or "server", f"The structured-output probe got no answer {misses} times in a "
                            f"row, so nothing was decided (a resume probes again); the last: {note}.")
        if say is not None:
            say(f"structured output: not decided yet, {note}; probing again in {PROBE_AGAIN_S:g} s")
        run_coroutine(_unless_stopped(asyncio.sleep(PROBE_AGAIN_S), control))


async def _unless_stopped(coro, control: "RunControl | None"):
    """Await `coro`, giving up (control.Interrupted) as soon as a pause or stop is asked for:
    a probe to a hung server must not hold a stop for its whole deadline."""

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


