"""The run engine: a run's work as a state machine over the pool, and the continuous scheduler
that keeps C request slots busy.

A request is *planned* (stored with its prompt before it is sent), *answered* (its response
stored: it is never sent again) and *applied* (what it leads to written: candidates, a
classification, instances, and the follow-up requests that become ready). Each apply is one
transaction, so a process killed anywhere resumes from the pool alone: requests without a
response are sent again, answered ones are applied, nothing is written twice.

No barriers between steps: an instruction request's answer is decided as soon as every
instruction request before it (in round, then position order) is decided, and each accepted
candidate at once queues its classification, whose answer queues its instances. Novelty is
therefore decided in a fixed order whatever the order answers arrive in, and prompts are
deterministic because round N samples generated examples only from rounds up to N - lag.
"""
from __future__ import annotations

import heapq
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from . import parsing, prompts
from .control import RunFailed
from .decisions import decide_instances, decide_round, is_structured, stored_parser_version, stored_prompt
from .llm import AdaptiveLimit, Completion, LLMError, PriceTable, Sampling
from .model import ACCEPTED, REJECTED, STEP_CLASSIFY, STEP_DONE, STEP_GENERATE
from .novelty import NoveltyIndex
from .runner import IDLE_S, MAX_FAILURES_PER_ITEM, RETRY_COOLDOWN_S, Request, Source, lane_for, send_all
from .settings import RunConfig
from .store import Pool

# Instruction requests first: each one unlocks the most follow-up work and the next rounds.
_PRIORITY = {prompts.STAGE_INSTRUCTIONS: 0, prompts.STAGE_BATCH: 0, prompts.STAGE_CLASSIFY: 1,
             prompts.STAGE_INSTANCES: 2}
# A request whose retries ran out waits RETRY_COOLDOWN_S before it is sent again, and the run fails
# if the same request runs out of retries MAX_FAILURES_PER_REQUEST times: the runner's rules.
MAX_FAILURES_PER_REQUEST = MAX_FAILURES_PER_ITEM
PREVIEW_CHARS = 500           # how much of an oversize answer a reject shows
# A structured answer spends tokens on JSON syntax and layout ('{\n    "labeling_task": "yes"\n}' is
# ~12 tokens for a small model): a yes/no request's 8-token budget would cut it.
STRUCTURED_MIN_TOKENS = {prompts.STAGE_CLASSIFY: 32}
# Candidate reasons that mean the answer yielded no item (parse health counts the others).
_NOT_AN_ITEM = ("unparseable", "oversize")


def answer_fields(completion: Completion) -> dict:
    return {"text": completion.text, "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "cost_usd": completion.cost_usd, "latency_s": completion.latency_s,
            "attempts": completion.attempts, "oversize": completion.oversize}


@dataclass
class Progress:
    round: int = 0
    step: str = ""
    done: int = 0            # requests applied in this run
    total: int = 0           # requests planned in this run
    in_flight: int = 0
    limit: int = 0           # current concurrency (adapts to 429s)
    rate_limited: int = 0    # 429 answers seen since the run (re)started
    failures: int = 0        # requests whose retries ran out since the run (re)started
    rate_limit_wait_s: float = 0.0   # seconds left of the longest wait a 429 asked for (0: none)
    # requests being answered now by stage, in pipeline order ({"instances": 2}): what the run is
    # doing, which the round's step does not say (a round stays "classify" through its instances)
    in_flight_stages: dict = field(default_factory=dict)


def semantic_index(pool: Pool, config, texts: list[str], backend=None):
    """The run's semantic gate over `texts` (None when the run has no embedder). An endpoint
    embedder goes through the run's backend (its URL and key rule)."""
    from . import embed
    from .semantic import SemanticIndex

    embedder = embed.embedder_for(getattr(config, "embedder", None), backend)
    if embedder is None:
        return None
    return SemanticIndex(pool, embedder, texts, config.cosine_threshold)


class RunState:
    """What a run still has to do, held in memory and written to the pool step by step."""

    def __init__(self, pool: Pool, run_id: int, config, *, on_event: Callable | None = None, backend=None) -> None:
        from .control import Event

        self._event_type = Event
        self.pool, self.run_id, self.cfg = pool, run_id, config
        self.on_event = on_event or (lambda event: None)
        self.gen_stage = prompts.STAGE_BATCH if config.generation == "alpaca" else prompts.STAGE_INSTRUCTIONS
        # Structured output (decided once per run, see pipeline.decide_structured) is a chat feature.
        run = pool.runs.get(run_id) or {}
        self.structured = config.mode == "chat" and bool(run.get("structured"))
        self.filter = config.instruction_filter()
        self.index = NoveltyIndex(pool.seeds.pool_instructions())
        self.semantic = semantic_index(pool, config, pool.seeds.pool_instructions(), backend)
        self.accepted_total = pool.runs.accepted_count()
        usage = pool.runs.usage(run_id)
        self.tokens, self.cost = usage["tokens"], usage["cost_usd"]
        self.rounds: dict[int, dict] = {}          # number -> {id, number, step}
        self.open_rounds: set[int] = set()         # numbers of the rounds not done (a few at a time)
        self.round_of: dict[int, dict] = {}        # round id -> the same dict
        for rnd in pool.runs.rounds(run_id):
            self._add_round(rnd)
        self.open: dict[int, dict] = {}            # unapplied requests by id
        self.open_by_round: Counter = Counter()
        self.gen_open_by_round: Counter = Counter()
        self.frontier: deque[dict] = deque()       # unapplied instruction requests, in decision order
        self.positions: Counter = Counter()        # next candidate position per round id
        for round_id, n in pool.cursor().execute(
                "SELECT round_id, max(position) + 1 FROM candidates WHERE run_id = ? GROUP BY round_id",
                [run_id]).fetchall():
            self.positions[round_id] = int(n)
        self.request_positions: Counter = Counter()  # next request position per (round id, stage)
        for round_id, stage, n in pool.cursor().execute(
                "SELECT round_id, stage, max(position) + 1 FROM requests WHERE run_id = ? GROUP BY ALL",
                [run_id]).fetchall():
            self.request_positions[(round_id, stage)] = int(n)
        self._ready: list = []                     # heap of (priority key, id)
        self._cooling: dict[int, float] = {}       # id -> when it may be sent again
        self.in_flight: set[int] = set()
        self.done, self.total = self._request_counts()
        self.failure_streak = 0
        self.failures = 0
        self.last_error: tuple[str, str] | None = None
        self.planning_stopped: str | None = None
        self.pacer: AdaptiveLimit | None = None
        rows = pool.requests.open_requests(run_id)
        rows.sort(key=lambda r: (r["round"], r["position"], r["id"]))
        for row in rows:
            self._track(row)
        for number in sorted(self.open_rounds):
            rnd = self.rounds[number]
            if self.open_by_round[rnd["id"]] <= 0:   # all its work was done (an older engine's round)
                self._set_step(rnd, STEP_DONE)
        self.plan_followups()
        # A process killed between storing an instruction answer and deciding it leaves that
        # answer at the head of the frontier. Only another instruction answer's arrival decides
        # the frontier, and when none is left to send (every one answered, or the example lag
        # holding the next round back) nothing ever would: decide it now.
        self.decide_frontier()

    # -- bookkeeping ---------------------------------------------------------------------
    def _request_counts(self) -> tuple[int, int]:
        done, total = self.pool.cursor().execute(
            "SELECT count(*) FILTER (WHERE applied_at IS NOT NULL), count(*) FROM requests WHERE run_id = ?",
            [self.run_id]).fetchone()
        return int(done), int(total)

    def _add_round(self, rnd: dict) -> None:
        rnd = dict(rnd)
        self.rounds[rnd["number"]] = rnd
        self.round_of[rnd["id"]] = rnd
        if rnd["step"] != STEP_DONE:
            self.open_rounds.add(rnd["number"])

    def _track(self, row: dict) -> None:
        row.setdefault("round", self.round_of[row["round_id"]]["number"])
        self.open[row["id"]] = row
        self.open_by_round[row["round_id"]] += 1
        if row["stage"] == self.gen_stage:
            self.frontier.append(row)
            self.gen_open_by_round[row["round_id"]] += 1
        if row.get("response") is None and row.get("batch_id") is None:
            self._push_ready(row)

    def _push_ready(self, row: dict) -> None:
        heapq.heappush(self._ready, ((_PRIORITY[row["stage"]], row["round"], row["position"], row["id"]),
                                     row["id"]))

    def _applied(self, row: dict) -> None:
        self.open.pop(row["id"], None)
        self.done += 1
        round_id = row["round_id"]
        self.open_by_round[round_id] -= 1
        if row["stage"] == self.gen_stage:
            self.gen_open_by_round[round_id] -= 1
        rnd = self.round_of[round_id]
        if self.open_by_round[round_id] <= 0:
            self._set_step(rnd, STEP_DONE)
        elif self.gen_open_by_round[round_id] <= 0:
            self._set_step(rnd, STEP_CLASSIFY)

    def _set_step(self, rnd: dict, step: str) -> None:
        if rnd["step"] == step:
            return
        rnd["step"] = step
        if step == STEP_DONE:
            self.open_rounds.discard(rnd["number"])
        else:
            self.open_rounds.add(rnd["number"])
        self.pool.runs.set_round_step(rnd["id"], step)
        if step == STEP_DONE:
            summary = self.pool.runs.round_summaries(self.run_id)
            row = summary[summary["round"] == rnd["number"]].iloc[0].to_dict()
            self.emit("round_done", rnd["number"], step,
                      f"round {rnd['number']}: {row['candidates']} candidates, {row['accepted']} accepted, "
                      f"{row['rejected']} rejected", row)

    def emit(self, kind: str, round_number: int = 0, step: str = "", message: str = "",
             data: dict | None = None) -> None:
        progress = self.progress(round_number, step)
        self.on_event(self._event_type(kind, self.run_id, progress.round, progress.step, progress.done,
                                       progress.total, message, {**progress.__dict__, **(data or {})}))

    def progress(self, round_number: int = 0, step: str = "") -> Progress:
        current = self.rounds[min(self.open_rounds)] if self.open_rounds else None
        pacer = self.pacer.snapshot() if self.pacer else {"limit": 0, "rate_limited": 0}
        return Progress(round=round_number or (current["number"] if current else len(self.rounds)),
                        step=step or (current["step"] if current else STEP_DONE), done=self.done,
                        total=self.total, in_flight=len(self.in_flight), limit=pacer["limit"],
                        rate_limited=pacer["rate_limited"], failures=self.failures,
                        rate_limit_wait_s=pacer.get("rate_limit_wait_s", 0.0),
                        in_flight_stages=self._in_flight_stages())

    def _in_flight_stages(self) -> dict:
        stages = [self.open[i]["stage"] for i in self.in_flight if i in self.open]
        return {stage: stages.count(stage) for stage in dict.fromkeys(prompts.STAGES + tuple(stages)) if stage in stages}

    # -- planning ------------------------------------------------------------------------
    def stop_reason(self) -> str | None:
        """A stop condition that is met (rounds are checked when planning)."""
        cfg = self.cfg
        if cfg.target is not None and self.accepted_total >= cfg.target:
            return "target"
        if cfg.budget_usd is not None and self.cost >= cfg.budget_usd:
            return "budget_usd"
        if cfg.budget_tokens is not None and self.tokens >= cfg.budget_tokens:
            return "budget_tokens"
        return None

    def budget_spent(self) -> bool:
        return self.stop_reason() in {"budget_usd", "budget_tokens"}

    def plan(self) -> None:
        """Plan every round the stop conditions and the example lag allow now."""
        while self.planning_stopped is None:
            number = max(self.rounds, default=0) + 1
            reason = self.stop_reason()
            if reason is None and self.cfg.rounds is not None and number > self.cfg.rounds:
                reason = "rounds"
            if reason:
                self.planning_stopped = reason
                return
            source = number - self.cfg.lag()
            if any(self.gen_open_by_round[self.rounds[n]["id"]] > 0 for n in self.open_rounds if n <= source):
                return   # round N's examples come from rounds up to N - lag: wait for them
            planned = self._plan_generation(number, source)
            round_id, ids = self.pool.requests.add_round(self.run_id, number, planned)
            self._add_round({"id": round_id, "number": number, "step": STEP_GENERATE})
            for request_id, item in zip(ids, planned):
                self._track(self._row(request_id, round_id, number, item))
            self.total += len(ids)
            self.emit("round_started", number, STEP_GENERATE, f"round {number}: {len(ids)} request(s) planned")
            self.plan_followups()

    def _plan_generation(self, number: int, source_round: int) -> list[dict]:

        machine = self.pool.runs.machine_instructions_until(self.run_id, source_round)
        seeds = self.pool.seeds.seed_tasks()
        weights = None
        if getattr(self.cfg, "steer", "off") == "coverage":
            from .topics import steer_examples

            weights = steer_examples(self.pool, self.run_id, number, [t["instruction"] for t in seeds], machine,
                                     seed=self.cfg.seed, embedder=self.semantic.embedder if self.semantic else None)
        return plan_generation(self.cfg, self.run_id, number, seeds, machine,
                               structured=self.structured, weights=weights)

    def plan_followups(self) -> None:
        """Classification or instances for accepted candidates that lack them and have no open
        request: rescued by a person, or whose follow-up was lost before engine v2."""
        if not self.rounds:
            return
        newest = self.rounds[max(self.rounds)]
        orphans = self.pool.requests.candidates_needing_followups()
        if not orphans:
            return
        planned = [self._followup(c, newest["id"]) for c in orphans]
        ids = self.pool.requests.add_followups(self.run_id, newest["id"], planned)
        if newest["step"] == STEP_DONE:
            self._set_step(newest, STEP_CLASSIFY)
        for request_id, item in zip(ids, planned):
            self._track(self._row(request_id, newest["id"], newest["number"], item))
        self.total += len(ids)

    def _followup(self, candidate: dict, round_id: int) -> dict:

        if candidate.get("is_classification") is None:
            prompt = prompts.build_classify_prompt(candidate["instruction"], structured=self.structured)
            extra = {"candidate_id": candidate["id"]}
        else:
            is_cls = bool(candidate["is_classification"])
            prompt = prompts.build_instance_prompt(candidate["instruction"], is_cls, structured=self.structured)
            extra = {"candidate_id": candidate["id"], "is_classification": is_cls}
        key = (round_id, prompt.stage)
        position, self.request_positions[key] = self.request_positions[key], self.request_positions[key] + 1
        item = planned_request(position, prompt, self.cfg, extra)
        item["candidate_id"] = candidate["id"]
        return item

    def _row(self, request_id: int, round_id: int, number: int, item: dict) -> dict:
        return {"id": request_id, "round_id": round_id, "round": number, "stage": item["meta"]["stage"],
                "position": item["position"], "prompt_version": item.get("prompt_version"),
                "prompt": item["prompt"], "meta": item["meta"], "candidate_id": item.get("candidate_id"),
                "response": None, "finish_reason": None, "oversize": False, "failures": 0, "batch_id": None}

    # -- sending -------------------------------------------------------------------------
    def next_ready(self) -> dict | None:
        now = time.monotonic()
        for request_id, when in list(self._cooling.items()):
            if when <= now:
                del self._cooling[request_id]
                if request_id in self.open:
                    self._push_ready(self.open[request_id])
        while self._ready:
            _, request_id = heapq.heappop(self._ready)
            row = self.open.get(request_id)
            if row is None or row.get("response") is not None or request_id in self.in_flight \
                    or row.get("batch_id") is not None:
                continue
            return row
        return None

    def ready_rows(self) -> list[dict]:
        """Every request that may be sent now (batch mode sends them together)."""
        rows = []
        while (row := self.next_ready()) is not None:
            rows.append(row)
        return rows

    def cooling_wait(self) -> float | None:
        if not self._cooling:
            return None
        return max(0.0, min(self._cooling.values()) - time.monotonic())

    def sampling(self, stage: str, structured: bool = False) -> Sampling:
        cfg = self.cfg
        raw = {prompts.STAGE_CLASSIFY: cfg.classify_sampling,
               prompts.STAGE_INSTANCES: cfg.instance_sampling}.get(stage, cfg.sampling)
        sampling = Sampling.from_dict(raw)
        floor = STRUCTURED_MIN_TOKENS.get(stage, 0) if structured else 0
        if sampling.max_tokens is not None and sampling.max_tokens < floor:
            sampling = Sampling.from_dict({**sampling.to_dict(), "max_tokens": floor})
        return sampling

    def row_sampling(self, row: dict) -> Sampling:
        return self.sampling(row["stage"], is_structured(row))

    # -- answers -------------------------------------------------------------------------
    def on_completion(self, row: dict, completion: Completion) -> None:
        self.in_flight.discard(row["id"])
        if completion.error:
            self.on_failure(row, completion)
            return
        self.failure_streak = 0
        self.tokens += completion.prompt_tokens + completion.completion_tokens
        self.cost += completion.cost_usd
        answer = answer_fields(completion)
        if row["stage"] == self.gen_stage:
            self.pool.requests.record_answer(row["id"], answer)
            row.update(response=answer["text"], finish_reason=answer["finish_reason"],
                       oversize=answer["oversize"])
            self.decide_frontier()
        elif row["stage"] == prompts.STAGE_CLASSIFY:
            self._apply_classification(row, answer)
        else:
            self._apply_instances(row, answer)
        self.emit("request", message="")

    def on_failure(self, row: dict, completion: Completion) -> None:
        """Retries ran out: keep the error, send the request again later; a run whose requests
        keep failing fails (and says what to do)."""
        self.pool.requests.record_failure(row["id"], error=completion.error or "", error_kind=completion.error_kind or "",
                                 attempts=completion.attempts, latency_s=completion.latency_s)
        row["failures"] = row.get("failures", 0) + 1
        row["batch_id"] = None
        self.failure_streak += 1
        self.failures += 1
        self.last_error = (completion.error_kind or "server", completion.error or "")
        self.emit("request", message=completion.error or "", data={"error_kind": completion.error_kind})
        if self.failure_streak >= self.cfg.failure_streak or row["failures"] >= MAX_FAILURES_PER_REQUEST:
            raise RunFailed(completion.error_kind or "server", completion.error or "Requests keep failing.")
        self._cooling[row["id"]] = time.monotonic() + RETRY_COOLDOWN_S

    def decide_frontier(self) -> None:
        """Decide answered instruction requests in their fixed order, as far as answers allow."""
        while self.frontier and self.frontier[0].get("response") is not None:
            row = self.frontier.popleft()
            if row["id"] not in self.open:
                continue
            if row.get("oversize"):
                rows = [{"request_id": row["id"], "instruction": (row.get("response") or "")[:PREVIEW_CHARS],
                         "status": REJECTED, "reason": "oversize", "details": _oversize_details(self.cfg)}]
            else:
                rows = decide_round([row], self.filter, self.index, self.cfg.rouge_threshold,
                                    batch=self.gen_stage == prompts.STAGE_BATCH, semantic=self.semantic)
            start = self.positions[row["round_id"]]
            for i, cand in enumerate(rows):
                cand["position"] = start + i
            self.positions[row["round_id"]] = start + len(rows)
            followups = []
            if self.gen_stage == prompts.STAGE_INSTRUCTIONS:
                for i, cand in enumerate(rows):
                    if cand["status"] == ACCEPTED:
                        item = self._followup({"id": None, "instruction": cand["instruction"],
                                               "is_classification": None}, row["round_id"])
                        item.update(candidate_id=None, candidate_ref=i)
                        followups.append(item)
            items = sum(c.get("reason") not in _NOT_AN_ITEM for c in rows)
            ids = self.pool.requests.apply_answer(row["id"], run_id=self.run_id, round_id=row["round_id"],
                                         candidates=rows, followups=followups, items=items,
                                         parser_version=stored_parser_version(row))
            self.accepted_total += sum(c["status"] == ACCEPTED for c in rows)
            for request_id, item in zip(ids, followups):
                cand = rows[item["candidate_ref"]]
                item = {**item, "candidate_id": cand["id"], "meta": {**item["meta"], "candidate_id": cand["id"]}}
                self._track(self._row(request_id, row["round_id"], row["round"], item))
            self.total += len(ids)
            self._applied(row)

    def _apply_classification(self, row: dict, answer: dict) -> None:
        candidate_id = row["candidate_id"]
        # An answer that says neither yes nor no counts as "no", as in the paper's code; a
        # request that could not be asked never gets here and is asked again.
        version = stored_parser_version(row)
        said = parsing.parse_answer(prompts.STAGE_CLASSIFY, answer["text"] or "", stored_prompt(row), version=version)
        label = bool(said)
        instruction = self.pool.cursor().execute(
            "SELECT instruction FROM candidates WHERE id = ? AND status = 'accepted'", [candidate_id]).fetchone()
        followups = []
        if instruction is not None:   # not removed by a person in the meantime
            item = self._followup({"id": candidate_id, "instruction": instruction[0],
                                   "is_classification": label}, row["round_id"])
            followups.append(item)
        ids = self.pool.requests.apply_answer(row["id"], answer=answer, run_id=self.run_id, round_id=row["round_id"],
                                     classification=(candidate_id, label), followups=followups,
                                     items=int(said is not None), parser_version=version)
        for request_id, item in zip(ids, followups):
            self._track(self._row(request_id, row["round_id"], row["round"], item))
        self.total += len(ids)
        self._applied(row)

    def _apply_instances(self, row: dict, answer: dict) -> None:
        meta = row["meta"] or {}
        version = stored_parser_version(row)
        if answer["oversize"]:
            rows = [{"input": "", "output": (answer["text"] or "")[:PREVIEW_CHARS], "status": REJECTED,
                     "reason": "oversize", "details": _oversize_details(self.cfg)}]
        else:
            rows = decide_instances(answer["text"] or "", bool(meta.get("is_classification")),
                                    self.cfg.max_instances, answer["finish_reason"], stored_prompt(row),
                                    parser_version=version)
        self.pool.requests.apply_answer(row["id"], answer=answer, run_id=self.run_id, round_id=row["round_id"],
                               instances=(row["candidate_id"], rows),
                               items=sum(r.get("reason") not in _NOT_AN_ITEM for r in rows), parser_version=version)
        self._applied(row)

    def finished(self) -> bool:
        """Nothing open, nothing to plan: the run is over."""
        return not self.open and self.planning_stopped is not None


def _oversize_details(cfg) -> dict:
    return {"message": f"The answer was larger than {cfg.max_answer_bytes:,} bytes; it was cut there "
                       "and not read as tasks.", "max_answer_bytes": cfg.max_answer_bytes}


class RunSource(Source):
    """A generation run's requests for the one request loop (`runner.send_all`): rounds planned
    each time round as answers allow, items in the state's priority order, no more sent once a
    budget is spent, and the state's own cooling and failure rule (batch mode shares them)."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def turn(self) -> None:
        self.state.plan()

    def may_send(self) -> bool:
        return not self.state.budget_spent()

    def next_request(self, lane) -> tuple[dict, Request] | None:
        state = self.state
        row = state.next_ready()
        if row is None:
            return None
        state.in_flight.add(row["id"])
        return row, Request(lambda client: client.complete(stored_prompt(row), state.row_sampling(row)))

    def completed(self, item: dict, sent, answer, lane) -> None:
        self.state.on_completion(item, answer)

    def end_reason(self) -> str | None:
        state = self.state
        if state.budget_spent() or state.finished():
            return state.stop_reason() or state.planning_stopped or "finished"
        return None

    def idle_s(self) -> float:
        wait = self.state.cooling_wait()
        return min(IDLE_S, wait) if wait is not None else IDLE_S

    def waiting_out_rate_limit(self) -> None:
        self.state.emit("rate_limit")


async def stream(state: RunState, backend, control, prices: PriceTable) -> str:
    """Send the run's requests through C slots that stay full until the run is over.
    Returns the stop reason; raises Interrupted, RunFailed or LLMError."""
    lane = lane_for(backend, state.cfg, prices)     # the client and pacer a judge or an evaluation gets
    state.pacer = lane.pacer
    return await send_all(RunSource(state), {0: lane}, control)


__all__ = ["RunState", "Progress", "stream", "answer_fields",
           "LLMError"]


# -- planning a round (deterministic for the run's seed) ------------------------------------------
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
