"""The Self-Instruct loop: a run is a sequence of rounds, a round is

    generate  ask for new instructions (numbered-list prompts, or Alpaca-style batches)
    filter    parse; heuristic filters; ROUGE-L novelty against the growing pool
    classify  is each accepted instruction a classification task?
    instances input/output examples (input-first, or label-first for classification)
    done

Every planned request is stored before it is sent and every answer as it
arrives; each step's results are written together with the round's next step in
one transaction. A run stopped or killed anywhere therefore resumes where it
stopped: answered requests are never re-sent and no candidate is written twice.
"""
from __future__ import annotations

import asyncio
import math
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable

from . import parsing, prompts
from .filters import InstructionFilter, filter_instances
from .llm import LLMClient, LLMConfig, LLMError, PriceTable, Sampling
from .novelty import NoveltyIndex
from .store import Pool

STEP_GENERATE, STEP_FILTER, STEP_CLASSIFY, STEP_INSTANCES, STEP_DONE = (
    "generate", "filter", "classify", "instances", "done")
GENERATION_MODES = ("selfinstruct", "alpaca")
TOP_K_EVIDENCE = 10


@dataclass
class RunConfig:
    """Everything that decides what a run does; stored with the run (no API key)."""
    model: str = "selfinstruct-demo"
    base_url: str = ""
    backend: str = "offline"            # offline | openai-compatible
    mode: str = "chat"                  # chat | completion
    generation: str = "selfinstruct"    # selfinstruct (numbered list) | alpaca (batch of full tasks)
    requests_per_round: int = 8
    human_examples: int = 6             # in-context seeds per prompt
    machine_examples: int = 2           # in-context generated instructions, once there are some
    new_per_request: int = 8            # the paper stops at item 16 after 8 examples
    batch_examples: int = 3             # Alpaca mode: example tasks per prompt
    batch_size: int = 20                # Alpaca mode: tasks asked for per request
    max_instances: int = 5
    rouge_threshold: float = 0.7
    min_words: int = 4
    max_words: int = 150
    keywords: list[str] = field(default_factory=lambda: list(InstructionFilter().config()["keywords"]))
    sampling: dict = field(default_factory=lambda: Sampling().to_dict())
    classify_sampling: dict = field(default_factory=lambda: Sampling(
        temperature=0.0, top_p=1.0, max_tokens=8, presence_penalty=0.0).to_dict())
    instance_sampling: dict = field(default_factory=lambda: Sampling(
        temperature=0.0, top_p=1.0, max_tokens=600, presence_penalty=1.5).to_dict())
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 5
    seed: int = 0
    rounds: int | None = None           # stop after this many rounds (of this run)
    target: int | None = None           # stop when the pool holds this many generated instructions
    budget_usd: float | None = None
    budget_tokens: int | None = None
    price_per_m: list[float] | None = None   # [input, output] USD per 1M tokens; None: built-in table
    prompt_versions: dict = field(default_factory=lambda: dict(prompts.PROMPT_VERSIONS))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def instruction_filter(self) -> InstructionFilter:
        return InstructionFilter(min_words=self.min_words, max_words=self.max_words,
                                 keywords=tuple(self.keywords))

    def price_table(self) -> PriceTable:
        """The built-in prices (editable defaults), with this run's own price for its model."""
        table = PriceTable.default()
        return table.with_price(self.model, *self.price_per_m) if self.price_per_m else table

    def llm_config(self, api_key: str | None) -> LLMConfig:
        return LLMConfig(base_url=self.base_url, model=self.model, api_key=api_key, mode=self.mode,
                         concurrency=self.concurrency, timeout_s=self.timeout_s,
                         max_retries=self.max_retries)


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


class _Interrupted(Exception):
    pass


def start_run(pool: Pool, config: RunConfig, *, name: str | None = None, actor: str = "user") -> int:
    if pool.counts().seeds == 0:
        raise ValueError("The pool has no seed tasks; import some first.")
    return pool.create_run(config.to_dict(), name=name, actor=actor)


class Runner:
    """Runs (or resumes) one run of a pool until a stop condition, a pause/stop
    request, or a fatal endpoint error."""

    def __init__(self, pool: Pool, run_id: int, *, api_key: str | None = None,
                 prices: PriceTable | None = None, on_event: Callable[[Event], None] | None = None,
                 control: RunControl | None = None, base_url: str | None = None):
        run = pool.run(run_id)
        if run is None:
            raise ValueError(f"There is no run {run_id} in {pool.path}.")
        self.pool = pool
        self.run_id = run_id
        self.config = RunConfig.from_dict(run["config"])
        if base_url:   # the offline server's port changes from one start to the next
            self.config.base_url = base_url
        self.api_key = api_key
        self.prices = prices or self.config.price_table()
        self.on_event = on_event or (lambda event: None)
        self.control = control or RunControl()
        self.filter = self.config.instruction_filter()
        self.index: NoveltyIndex | None = None

    # -- the loop ----------------------------------------------------------------
    def run(self) -> RunOutcome:
        self.pool.set_run_status(self.run_id, "running")
        self.on_event(Event("run_started", self.run_id, message=f"run {self.run_id} started"))
        try:
            self.index = NoveltyIndex(self.pool.pool_instructions())
            while True:
                reason = self._stop_reason()
                if reason:
                    return self._end("finished", reason)
                open_round = self.pool.open_round(self.run_id)
                if open_round is None:
                    number = self.pool.last_round_number(self.run_id) + 1
                    round_id = self.pool.create_round(self.run_id, number, STEP_GENERATE)
                    open_round = {"id": round_id, "number": number, "step": STEP_GENERATE}
                self._run_round(open_round)
        except _Interrupted:
            return self._end(self.control.reason or "stopped", self.control.reason or "stopped")
        except LLMError as exc:
            return self._end("failed", exc.kind, error=exc.message)

    def _end(self, status: str, reason: str, error: str | None = None) -> RunOutcome:
        self.pool.set_run_status(self.run_id, status, stop_reason=reason, error=error)
        outcome = RunOutcome(self.run_id, status, reason, self.pool.rounds_done(self.run_id),
                             self.pool.accepted_count(self.run_id), error)
        self.on_event(Event("run_ended", self.run_id, message=error or reason, data=asdict(outcome)))
        return outcome

    def _stop_reason(self) -> str | None:
        if self.control.requested:
            raise _Interrupted()
        cfg = self.config
        if cfg.rounds is not None and self.pool.rounds_done(self.run_id) >= cfg.rounds:
            return "rounds"
        if cfg.target is not None and self.pool.accepted_count() >= cfg.target:
            return "target"
        if cfg.budget_usd is not None or cfg.budget_tokens is not None:
            usage = self.pool.run_usage(self.run_id)
            if cfg.budget_usd is not None and usage["cost_usd"] >= cfg.budget_usd:
                return "budget_usd"
            if cfg.budget_tokens is not None and usage["tokens"] >= cfg.budget_tokens:
                return "budget_tokens"
        return None

    def _run_round(self, rnd: dict) -> None:
        number, round_id = rnd["number"], rnd["id"]
        step = rnd["step"]
        self.on_event(Event("round_started", self.run_id, number, step,
                            message=f"round {number}" + (f" (resuming at {step})" if step != STEP_GENERATE else "")))
        stage = prompts.STAGE_BATCH if self.config.generation == "alpaca" else prompts.STAGE_INSTRUCTIONS
        if step == STEP_GENERATE:
            if not self.pool.requests_for(round_id, stage):
                self.pool.add_requests(self.run_id, round_id, stage, self._plan_generation(number))
            self._send(round_id, number, stage, self.config.sampling)
            self.pool.set_round_step(round_id, STEP_FILTER)
            step = STEP_FILTER
        if step == STEP_FILTER:
            self._filter(round_id, number, stage)
            step = STEP_DONE if stage == prompts.STAGE_BATCH else STEP_CLASSIFY
        if step == STEP_CLASSIFY:
            self._classify(round_id, number)
            step = STEP_INSTANCES
        if step == STEP_INSTANCES:
            self._instances(round_id, number)
        summary = self.pool.round_summaries(self.run_id)
        row = summary[summary["round"] == number].iloc[0].to_dict()
        self.on_event(Event(
            "round_done", self.run_id, number, STEP_DONE,
            message=(f"round {number}: {row['candidates']} candidates, {row['accepted']} accepted, "
                     f"{row['rejected']} rejected, {row['errors']} request errors"),
            data=row,
        ))

    # -- generate ------------------------------------------------------------------
    def _plan_generation(self, number: int) -> list[dict]:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{self.run_id}:{number}")
        seeds = self.pool.seed_tasks()
        machine = self.pool.machine_instructions()
        planned = []
        for position in range(cfg.requests_per_round):
            if cfg.generation == "alpaca":
                examples = [_task_example(t, rng) for t in rng.sample(seeds, min(cfg.batch_examples, len(seeds)))]
                prompt = prompts.build_batch_prompt(examples, num_to_generate=cfg.batch_size)
            else:
                n_machine = min(cfg.machine_examples, len(machine))
                n_human = min(cfg.human_examples + cfg.machine_examples - n_machine, len(seeds))
                examples = [t["instruction"] for t in rng.sample(seeds, n_human)]
                examples += rng.sample(machine, n_machine)
                rng.shuffle(examples)
                prompt = prompts.build_instruction_prompt(examples, num_to_generate=cfg.new_per_request)
            planned.append(_planned(position, prompt, cfg))
        return planned

    def _send(self, round_id: int, number: int, stage: str, sampling: dict) -> None:
        """Send every stored request of this round and stage that has no answer yet."""
        pending = self.pool.requests_for(round_id, stage, pending_only=True)
        total = len(self.pool.requests_for(round_id, stage))
        if not pending:
            return
        done = total - len(pending)
        self.on_event(Event("step", self.run_id, number, stage, done, total, f"sending {len(pending)} request(s)"))
        _run_coroutine(self._send_async(pending, number, stage, Sampling(**sampling), done, total))
        if self.control.requested:
            raise _Interrupted()

    async def _send_async(self, pending: list[dict], number: int, stage: str, sampling: Sampling,
                          done: int, total: int) -> None:
        client = LLMClient(self.config.llm_config(self.api_key), prices=self.prices)
        gate = asyncio.Semaphore(self.config.concurrency)
        counter = {"done": done}

        async def one(row: dict) -> None:
            async with gate:
                if self.control.requested:
                    return
                prompt = _stored_prompt(row)
                result = await client.complete(prompt, sampling)
            self.pool.record_response(
                row["id"], response=result.text, finish_reason=result.finish_reason,
                prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                cost_usd=result.cost_usd, latency_s=result.latency_s, attempts=result.attempts,
                error=result.error, error_kind=result.error_kind,
            )
            counter["done"] += 1
            self.on_event(Event("request", self.run_id, number, stage, counter["done"], total,
                                result.error or "", {"error_kind": result.error_kind}))

        try:
            tasks = [asyncio.create_task(one(row)) for row in pending]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            await client.aclose()

    # -- filter --------------------------------------------------------------------
    def _filter(self, round_id: int, number: int, stage: str) -> None:
        rows = decide_round(self.pool.requests_for(round_id, stage), self.filter, self.index,
                            self.config.rouge_threshold, batch=stage == prompts.STAGE_BATCH)
        next_step = STEP_DONE if stage == prompts.STAGE_BATCH else STEP_CLASSIFY
        self.pool.add_candidates(self.run_id, round_id, rows, next_step=next_step)
        accepted = sum(r["status"] == "accepted" for r in rows)
        self.on_event(Event("step", self.run_id, number, STEP_FILTER, len(rows), len(rows),
                            f"{accepted} of {len(rows)} candidates accepted"))

    # -- classify --------------------------------------------------------------------
    def _classify(self, round_id: int, number: int) -> None:
        # This round's accepted candidates, and any rescued since an earlier round.
        accepted = self.pool.accepted_needing_classification()
        stage = prompts.STAGE_CLASSIFY
        if not self.pool.requests_for(round_id, stage):
            self.pool.add_requests(self.run_id, round_id, stage, [
                _planned(i, prompts.build_classify_prompt(c["instruction"]), self.config,
                         {"candidate_id": c["id"]})
                for i, c in enumerate(accepted)])
        self._send(round_id, number, stage, self.config.classify_sampling)
        labels = {}
        for row in self.pool.requests_for(round_id, stage):
            verdict = parsing.parse_classification(row["response"] or "")
            labels[row["meta"]["candidate_id"]] = bool(verdict)
        self.pool.set_classifications(round_id, labels, next_step=STEP_INSTANCES)

    # -- instances ---------------------------------------------------------------------
    def _instances(self, round_id: int, number: int) -> None:
        accepted = self.pool.accepted_needing_instances()
        stage = prompts.STAGE_INSTANCES
        if not self.pool.requests_for(round_id, stage):
            self.pool.add_requests(self.run_id, round_id, stage, [
                _planned(i, prompts.build_instance_prompt(c["instruction"], bool(c["is_classification"])),
                         self.config, {"candidate_id": c["id"], "is_classification": bool(c["is_classification"])})
                for i, c in enumerate(accepted)])
        self._send(round_id, number, stage, self.config.instance_sampling)
        by_candidate = {}
        for row in self.pool.requests_for(round_id, stage):
            if row["error"]:
                continue
            by_candidate[row["meta"]["candidate_id"]] = (
                row["id"], decide_instances(row["response"] or "", row["meta"]["is_classification"],
                                            self.config.max_instances, row.get("finish_reason")))
        self.pool.add_instances(round_id, by_candidate, next_step=STEP_DONE)


# -- decisions (pure: also used by re-filter) ----------------------------------------------
def decide_round(requests: list[dict], instruction_filter: InstructionFilter, index: NoveltyIndex,
                 threshold: float, *, batch: bool) -> list[dict]:
    """Parse a round's answered requests and decide every candidate, in order, adding
    the accepted ones to `index` as it goes (so a round cannot accept two copies)."""
    rows: list[dict] = []
    for request in requests:
        if request["response"] is None:
            continue
        text = request["response"]
        if batch:
            parsed = parsing.parse_batch(text, _stored_prompt(request),
                                         finish_reason=request.get("finish_reason"))
            items = [(t["instruction"], t) for t in parsed.tasks]
        else:
            parsed = parsing.parse_instructions(text, _stored_prompt(request),
                                                finish_reason=request.get("finish_reason"))
            items = [(item, None) for item in parsed.items]
        for instruction, task in items:
            row = decide_instruction(instruction, instruction_filter, index, threshold)
            row["request_id"] = request["id"]
            row["position"] = len(rows)
            if task is not None:
                row["is_classification"] = False
                if row["status"] == "accepted":
                    row["instances"] = decide_instances_list([{"input": task.get("input", ""),
                                                               "output": task.get("output", "")}])
            rows.append(row)
        fragments = list(parsed.unparseable)
        if not items and not fragments and text.strip():
            fragments = [text]
        for fragment in fragments:
            rows.append({
                "request_id": request["id"], "position": len(rows), "instruction": fragment,
                "status": "rejected", "reason": "unparseable",
                "details": {"message": "The model's answer could not be read as a task.",
                            "finish_reason": request.get("finish_reason")},
            })
    return rows


def decide_instruction(instruction: str, instruction_filter: InstructionFilter, index: NoveltyIndex,
                       threshold: float) -> dict:
    rejection = instruction_filter.check(instruction)
    if rejection is not None:
        return {"instruction": instruction, "status": "rejected", "reason": rejection.reason,
                "details": {"message": rejection.message, **rejection.evidence}}
    # The best score decides; only a reject pays for the top-10 evidence (4x dearer).
    best_score, best_id = index.max_similarity(instruction)
    row = {"instruction": instruction, "max_rouge": best_score,
           "nearest_text": index.text(best_id) if best_id is not None else None}
    if best_score > threshold:
        evidence = [{"text": index.text(i), "score": score}
                    for i, score in index.most_similar(instruction, k=TOP_K_EVIDENCE)]
        row.update(status="rejected", reason="rouge", details={
            "message": f"ROUGE-L {best_score:.3f} with a pool instruction is above the threshold {threshold}.",
            "threshold": threshold, "nearest": evidence})
    else:
        index.add(instruction)
        nearest = [{"text": row["nearest_text"], "score": best_score}] if best_id is not None else []
        row.update(status="accepted", reason=None, details={"threshold": threshold, "nearest": nearest})
    return row


def decide_instances_list(instances: list[dict]) -> list[dict]:
    kept, rejected = filter_instances(instances)
    rows = [{**inst, "status": "kept"} for inst in kept]
    rows += [{**inst, "status": "rejected", "reason": why.reason,
              "details": {"message": why.message, **why.evidence}} for inst, why in rejected]
    return rows


def decide_instances(text: str, is_classification: bool, max_instances: int,
                     finish_reason: str | None = None) -> list[dict]:
    parsed = parsing.parse_instances(text, is_classification, finish_reason=finish_reason)
    rows = decide_instances_list(parsed.instances[:max_instances])
    if not parsed.instances and text.strip():
        rows.append({"input": "", "output": text, "status": "rejected", "reason": "unparseable",
                     "details": {"message": "The model's answer could not be read as input/output examples."}})
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


def refilter(pool: Pool, run_id: int, *, threshold: float | None = None, keywords: list[str] | None = None,
             min_words: int | None = None, max_words: int | None = None, apply: bool = False,
             actor: str = "user") -> RefilterReport:
    """Decide a run's candidates again from the stored raw responses with other
    settings, without calling the model. With `apply`, candidates whose decision
    changes are updated (human decisions are left alone) and audited."""
    run = pool.run(run_id)
    if run is None:
        raise ValueError(f"There is no run {run_id}.")
    cfg = RunConfig.from_dict(run["config"])
    for name, value in (("rouge_threshold", threshold), ("keywords", keywords),
                        ("min_words", min_words), ("max_words", max_words)):
        if value is not None:
            setattr(cfg, name, value)
    index = NoveltyIndex(pool.pool_instructions_before_run(run_id))
    stage = prompts.STAGE_BATCH if cfg.generation == "alpaca" else prompts.STAGE_INSTRUCTIONS
    stored = pool.run_candidates(run_id)
    by_round: dict[int, list[dict]] = {}
    for cand in stored:
        by_round.setdefault(cand["round_id"], []).append(cand)
    changed, before, after, decisions = [], {}, {}, {}
    for round_id, old_rows in by_round.items():
        new_rows = decide_round(pool.requests_for(round_id, stage), cfg.instruction_filter(), index,
                                cfg.rouge_threshold, batch=stage == prompts.STAGE_BATCH)
        for old, new in zip(old_rows, new_rows):
            if old["instruction"] != new["instruction"]:
                raise RuntimeError("The stored candidates no longer match the stored responses "
                                   f"(round id {round_id}); re-filter cannot line them up.")
            old_key = old["reason"] if old["status"] == "rejected" else "accepted"
            new_key = new["reason"] if new["status"] == "rejected" else "accepted"
            before[old_key] = before.get(old_key, 0) + 1
            after[new_key] = after.get(new_key, 0) + 1
            if old_key != new_key:
                changed.append({"id": old["id"], "instruction": old["instruction"],
                                "before": old_key, "after": new_key})
                decisions[old["id"]] = {**new, "why": "re-filter with other settings"}
    report = RefilterReport(run_id, len(stored), changed, before, after)
    if apply and decisions:
        report.applied = pool.redecide_candidates(run_id, decisions, actor=actor)
    return report


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

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def time_text(self) -> str:
        if self.seconds < 90:
            return f"{self.seconds:.0f} s"
        if self.seconds < 5400:
            return f"{self.seconds / 60:.0f} min"
        return f"{self.seconds / 3600:.1f} h"


def estimate_run(pool: Pool, config: RunConfig, prices: PriceTable | None = None) -> Estimate:
    """Rough tokens, cost and time before a run, from this pool's history when it
    has some, else from prompt sizes and half of max_tokens."""
    prices = prices or config.price_table()
    history = pool.request_history(prompts.STAGE_INSTRUCTIONS, config.model)
    seeds = [t["instruction"] for t in pool.seed_tasks()[:8]] or ["An example task."]
    sample = prompts.build_instruction_prompt(seeds, num_to_generate=config.new_per_request)
    gen_prompt = history["prompt_tokens"] or math.ceil(len(sample.full_text()) / 4)
    gen_completion = history["completion_tokens"] or config.sampling.get("max_tokens", 1024) / 2
    # With no history: a few seconds per request for a hosted model, next to nothing offline.
    latency = history["latency_s"] or (0.05 if config.backend == "offline" else 5.0)
    accepted_per_request = config.new_per_request * 0.5
    if config.generation == "alpaca":
        accepted_per_request = config.batch_size * 0.5
    per_round_accepted = config.requests_per_round * accepted_per_request
    if config.rounds:
        rounds = config.rounds
    elif config.target:
        rounds = max(1, math.ceil(max(0, config.target - pool.accepted_count()) / per_round_accepted))
    else:
        rounds = 1
    follow_ups = 0 if config.generation == "alpaca" else int(2 * per_round_accepted)
    requests = rounds * (config.requests_per_round + follow_ups)
    prompt_tokens = int(rounds * (config.requests_per_round * gen_prompt + follow_ups * 250))
    completion_tokens = int(rounds * (config.requests_per_round * gen_completion + follow_ups * 80))
    cost = prices.cost(config.model, prompt_tokens, completion_tokens)
    seconds = requests * latency / max(1, config.concurrency)
    basis = (f"from {history['n']} earlier request(s) in this pool" if history["n"]
             else "from prompt sizes and half of max_tokens (no history yet)")
    return Estimate(rounds, requests, prompt_tokens, completion_tokens, cost, seconds, basis)


# -- helpers ------------------------------------------------------------------------------
def _run_coroutine(coro) -> None:
    """asyncio.run, also from a thread that already runs an event loop (a notebook,
    Playwright's sync API): then the coroutine gets a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    error: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # handed back to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="selfinstruct-requests")
    thread.start()
    thread.join()
    if error:
        raise error[0]


def _planned(position: int, prompt: prompts.Prompt, cfg: RunConfig, extra: dict | None = None) -> dict:
    return {
        "position": position, "prompt_version": prompt.version, "model": cfg.model, "mode": cfg.mode,
        "prompt": prompt.text,
        "meta": {"stage": prompt.stage, "system": prompt.system,
                 "stop": list(prompt.stop) if prompt.stop else None, "prompt_meta": prompt.meta,
                 **(extra or {})},
    }


def _stored_prompt(row: dict) -> prompts.Prompt:
    meta = row["meta"] or {}
    return prompts.Prompt(stage=row["stage"], version=row["prompt_version"], text=row["prompt"],
                          system=meta.get("system"), stop=tuple(meta["stop"]) if meta.get("stop") else None,
                          meta=meta.get("prompt_meta") or {})


def _task_example(task: dict, rng: random.Random) -> dict:
    instance = rng.choice(task["instances"]) if task["instances"] else {"input": "", "output": ""}
    return {"instruction": task["instruction"], "input": instance["input"], "output": instance["output"]}
