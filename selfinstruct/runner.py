"""One request runner (issue 27): the one loop every job's requests go through (`send_all`).

`send_all(source, lanes, control)` keeps up to each lane's pacer limit in flight, hands each
answer to its source as it arrives, says a 429 wait once a second, and on a pause, stop, Ctrl+C
or SIGTERM keeps the answers still arriving for control.DRAIN_S (`keep_arrived`). A *source*
says what is ready and what an answer means: a generation run's `engine.RunSource` (rounds
planned as answers arrive, items in priority order, a budget, its cooling shared with batch
mode) or a plan's `PlanSource` below.

A *plan* says what to send and what to do with each answer; `RequestRunner` does the rest, once
for every job: up to the pacer's limit in flight per lane (`llm.AdaptiveLimit`: 429s lower it),
an item whose retries ran out keeps its error (the plan stores it) and is sent again after
RETRY_COOLDOWN_S, `failure_streak` such items in a row or one item failing MAX_FAILURES_PER_ITEM
times end the job *failed* with the plan's next step, each answer is handed to the plan the
moment it arrives (so a killed process resumes from what the plan stored: its open items), a
run whose first UNREADABLE_CHECK answers are all unreadable fails, a 429 wait is told once a
second, and a pause, stop, Ctrl+C or SIGTERM still keeps the answers arriving for
control.DRAIN_S (`keep_arrived`). Tokens and cost are counted from the answers the plan stored.

The key rule and redaction are not repeated here: a lane's client comes from its
`backend.Backend` (which decides the key), `llm.LLMClient` retries and redacts what endpoints
say, and `control.RunFailed` redacts its message.

Plans: the judge (`judge.JudgeRunner`), an evaluation's answers and the judge's pre-ratings
(`evaluate.EvalRunner`), and the endpoint embedder's batches (`embed.EndpointEmbedder`, which
uses only `stream`: it is no stored job). Batch mode (batch.py) sends no requests of its own: it
hands a run's ready requests to a provider's Batch API and applies the answers through the same
RunState.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, Hashable

import duckdb

from . import local
from .control import Interrupted, RunFailed, keep_arrived
from .llm import AdaptiveLimit, LLMClient, LLMError
from .model import ENDED_STATUSES, FAILED, FINISHED, PAUSED, RUNNING, STOPPED
from .store import PoolError

MAX_FAILURES_PER_ITEM = 3       # one item running out of retries this often fails the job
RETRY_COOLDOWN_S = 5.0          # an item whose retries ran out waits this long before it is sent again
UNREADABLE_CHECK = 10           # this many answers in a row none of which could be read fail the job
IDLE_S = 0.2                    # how long the loop waits for an answer before it looks at pause/stop again


@dataclass
class Lane:
    """Where one kind of item goes: a client and its pacer (an evaluation collects from several
    models at once, each at its own pace), and how many failed items in a row end the job."""
    client: LLMClient
    pacer: AdaptiveLimit
    failure_streak: int = 3


def lane_for(backend, settings, prices) -> Lane:
    """A lane for stored endpoint settings (a judge's or a model's: model, mode, concurrency,
    timeout_s, max_retries, max_answer_bytes, rate_limit_patience_s, rpm/tpm when they have them),
    through the started `backend` and so its key rule."""
    pacer = AdaptiveLimit(settings.concurrency, rpm=getattr(settings, "rpm", None), tpm=getattr(settings, "tpm", None))
    client = backend.client(backend.llm_config(
        model=settings.model, mode=settings.mode, concurrency=settings.concurrency, timeout_s=settings.timeout_s,
        max_retries=settings.max_retries, max_answer_bytes=settings.max_answer_bytes,
        rate_limit_patience_s=settings.rate_limit_patience_s), prices=prices, pacer=pacer)
    return Lane(client, pacer, settings.failure_streak)


@dataclass
class Request:
    """One item's request: `send(client)` makes it (a Completion, or an EmbeddingBatch); `sent`
    is what the plan needs beside the answer (the prompt as sent)."""
    send: Callable[[LLMClient], Awaitable]
    sent: Any = None


@dataclass(frozen=True)
class Answered:
    """What the plan did with an answer it stored: `readable` False when it could not be read,
    with `why`."""
    readable: bool = True
    why: str = ""


class Plan:
    """The requests of one job and where their answers go. Items are dicts with an "id" (and
    "failures": how often their retries ran out before, when stored). A subclass gives `lanes`,
    `open_items`, `request`, `on_answer` and `on_failure`; a stored job (`RequestRunner.run`)
    also the status, counts, outcome and words hooks below."""

    pool = None                 # a stored job's store.Pool
    job = ""                    # control.exclusive_job's kind ("judge", "evaluate")
    job_id = 0
    step = ""                   # the events' step
    events = ("started", "progress", "ended")
    runner: "RequestRunner"

    # -- the requests
    def lanes(self) -> dict[Hashable, Lane]:
        """Built inside the runner's event loop (the clients belong to it)."""
        raise NotImplementedError

    def open_items(self) -> list[dict]:
        raise NotImplementedError

    def lane_of(self, item: dict) -> Hashable:
        return 0

    def request(self, item: dict) -> Request | None:
        """The item's request; None when the plan settled it without one."""
        raise NotImplementedError

    def on_answer(self, item: dict, sent: Any, answer) -> Answered | None:
        """Store an answer; None when it was stored already (nothing is counted twice)."""
        raise NotImplementedError

    def on_failure(self, item: dict, answer) -> None:
        """Store why an item's retries ran out (it is sent again later)."""

    def unreadable_words(self, done: int, why: str) -> str:
        return f"None of the first {done} answers could be read (the last: {why[:200]})."

    # -- a stored job's lifecycle
    def start(self) -> None:
        """Start backends and decide what the requests look like (before the first request)."""

    def close(self) -> None:
        """Stop what `start` started."""

    def set_status(self, status: str, **kwargs) -> None:
        raise NotImplementedError

    def stored_counts(self) -> dict:
        """done, total, unparseable, cost_usd, tokens as stored."""
        raise NotImplementedError

    def started_words(self) -> str:
        return ""

    def resume_command(self) -> str:
        raise NotImplementedError

    def next_step(self, kind: str) -> str:
        raise NotImplementedError

    def status_unsaved_words(self, said: str, exc: Exception) -> str:
        return f"{said} The status could not be saved either ({exc})."

    def outcome(self, status: str, reason: str, error: str | None, next_step: str):
        raise NotImplementedError

    # -- what the runner counts, read and written on the plan as before the runner existed
    def _proxy(name: str):   # noqa: N805 (a property factory used in the class body)
        return property(lambda self: getattr(self.runner, name),
                        lambda self, value: setattr(self.runner, name, value))

    done = _proxy("done")
    total = _proxy("total")
    unparseable = _proxy("unparseable")
    failures = _proxy("failures")
    cost = _proxy("cost")
    tokens = _proxy("tokens")
    in_flight = _proxy("in_flight")
    del _proxy

    def emit(self, kind: str, message: str = "", data: dict | None = None) -> None:
        self.runner.emit(kind, message, data)

    def run(self):
        return self.runner.run()


class Source:
    """Where `send_all` takes its items from and where their answers go: `PlanSource` for a plan
    (its open items, a failed item cooling before it is sent again) and `engine.RunSource` for a
    generation run (rounds planned as answers arrive, items in priority order, a budget)."""

    def turn(self) -> None:
        """Before sending, each time round: make ready what time or answers allow."""

    def may_send(self) -> bool:
        """False once nothing more may be sent (a spent budget); what is out still comes back."""
        return True

    def next_request(self, lane: Hashable) -> tuple[dict, Request] | None:
        """The next item for `lane` and its request; None when that lane has nothing ready."""
        raise NotImplementedError

    def completed(self, item: dict, sent: Any, answer, lane: Lane) -> None:
        """An item's answer (or its error, once its retries ran out) came back."""
        raise NotImplementedError

    def end_reason(self) -> str | None:
        """Asked when nothing is in flight: why sending is over, or None to wait for more."""
        raise NotImplementedError

    def idle_s(self) -> float:
        """How long to wait, with nothing in flight, before looking again."""
        return IDLE_S

    def in_flight(self, n: int) -> None:
        """How many requests are out now."""

    def waiting_out_rate_limit(self) -> None:
        """A 429 wait grew or shrank by a second: no answer arrives meanwhile, so say it."""


async def send_all(source: Source, lanes: dict[Hashable, Lane], control=None) -> str:
    """The one request loop: up to each lane's pacer limit in flight, answers handed to `source`
    as they arrive, until `source.end_reason()`. Raises Interrupted (a pause or stop asked on
    `control`), RunFailed (from the source) or LLMError (fatal); on an interrupt the answers that
    still arrive within control.DRAIN_S are kept (`keep_arrived`). Closes the lanes' clients."""
    tasks: dict[asyncio.Task, tuple[dict, Any, Hashable]] = {}
    busy: Counter = Counter()
    waited = 0
    try:
        while True:
            if control is not None and control.requested:
                raise Interrupted()
            source.turn()
            if source.may_send():
                for key, lane in lanes.items():
                    while busy[key] < lane.pacer.limit and (got := source.next_request(key)) is not None:
                        item, request = got
                        tasks[asyncio.create_task(request.send(lane.client))] = (item, request.sent, key)
                        busy[key] += 1
            source.in_flight(len(tasks))
            if not tasks:
                reason = source.end_reason()
                if reason is not None:
                    return reason
                await asyncio.sleep(source.idle_s())
                continue
            done, _ = await asyncio.wait(tasks, timeout=IDLE_S, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                item, sent, key = tasks.pop(task)
                busy[key] -= 1
                source.in_flight(len(tasks))
                source.completed(item, sent, task.result(), lanes[key])    # a fatal LLMError is raised here
            shown = math.ceil(max(lane.pacer.wait_s() for lane in lanes.values()))
            if shown != waited:
                waited = shown
                source.waiting_out_rate_limit()
    except (Interrupted, asyncio.CancelledError):    # a pause, a stop, Ctrl+C or SIGTERM
        await keep_arrived(tasks, lambda what, answer: source.completed(what[0], what[1], answer, lanes[what[2]]))
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in lanes.values():
            await lane.client.aclose()


class PlanSource(Source):
    """A plan's items for `send_all`: its open items per lane in stored order; an item whose
    retries ran out is sent again after RETRY_COOLDOWN_S."""

    def __init__(self, runner: "RequestRunner") -> None:
        self.runner, self.plan = runner, runner.plan
        self.ready: dict[Hashable, deque] = {key: deque() for key in runner.lanes}
        for item in self.plan.open_items():
            self.ready[self.plan.lane_of(item)].append(item)
        self.cooling: dict[Any, tuple[float, dict]] = {}

    def turn(self) -> None:
        now = time.monotonic()
        for item_id, (when, item) in list(self.cooling.items()):
            if when <= now:
                del self.cooling[item_id]
                self.ready[self.plan.lane_of(item)].append(item)

    def next_request(self, lane: Hashable) -> tuple[dict, Request] | None:
        queue = self.ready[lane]
        while queue:
            item = queue.popleft()
            request = self.plan.request(item)
            if request is not None:         # None: the plan settled the item without a request
                return item, request
        return None

    def completed(self, item: dict, sent: Any, answer, lane: Lane) -> None:
        if getattr(answer, "error", None):
            self.runner._failed(item, answer, lane)
            self.cooling[item["id"]] = (time.monotonic() + RETRY_COOLDOWN_S, item)
        else:
            self.runner._streak[0] = 0
            self.runner._answered(item, sent, answer)

    def end_reason(self) -> str | None:
        return None if any(self.ready.values()) or self.cooling else "finished"

    def idle_s(self) -> float:
        if not self.cooling:
            return IDLE_S
        return max(0.0, min(IDLE_S, min(when for when, _ in self.cooling.values()) - time.monotonic()))

    def in_flight(self, n: int) -> None:
        self.runner.in_flight = n

    def waiting_out_rate_limit(self) -> None:
        self.runner.emit("rate_limit")


class RequestRunner:
    """Sends a plan's open items until each is answered (see the module docstring).
    `stream()` is the loop alone; `run()` drives a stored job around it: one job per pool, its
    status, and an outcome for every way it ends."""

    def __init__(self, plan: Plan, on_event: Callable | None = None, control=None) -> None:
        self.plan = plan
        plan.runner = self
        self.on_event = on_event or (lambda event: None)
        self.control = control
        self.done = self.total = self.unparseable = self.failures = 0
        self.cost, self.tokens = 0.0, 0
        self.in_flight = 0
        self.lanes: dict[Hashable, Lane] = {}
        self._streak = [0, 0]      # items in a row whose retries ran out; answers in a row not read

    # -- events
    def pacing(self) -> dict:
        """The lanes' pacing together: their limits and 429s added up, the longest 429 wait."""
        snaps = [lane.pacer.snapshot() for lane in list(self.lanes.values())]
        return {"limit": sum(s["limit"] for s in snaps), "rate_limited": sum(s["rate_limited"] for s in snaps),
                "rate_limit_wait_s": max((s["rate_limit_wait_s"] for s in snaps), default=0.0)}

    def emit(self, kind: str, message: str = "", data: dict | None = None) -> None:
        from .control import Event

        self.on_event(Event(kind, self.plan.job_id, step=self.plan.step, done=self.done, total=self.total,
                            message=message, data={"in_flight": self.in_flight, **self.pacing(),
                                                   "failures": self.failures, "unparseable": self.unparseable,
                                                   "cost_usd": self.cost, "tokens": self.tokens, **(data or {})}))

    # -- counting
    def count(self, answer=None, readable: bool = True) -> None:
        """One more item settled (its answer's tokens and cost, if it had one)."""
        self.done += 1
        if answer is not None:
            self.cost += answer.cost_usd
            self.tokens += answer.prompt_tokens + getattr(answer, "completion_tokens", 0)
        if not readable:
            self.unparseable += 1
        self.emit(self.plan.events[1])

    def load_counts(self) -> None:
        counts = self.plan.stored_counts()
        self.done, self.total, self.unparseable = counts["done"], counts["total"], counts["unparseable"]
        self.cost, self.tokens = counts["cost_usd"], counts["tokens"]

    # -- the loop
    def _answered(self, item: dict, sent: Any, answer) -> None:
        result = self.plan.on_answer(item, sent, answer)
        if result is None:
            return
        self._streak[1] = 0 if result.readable else self._streak[1] + 1
        self.count(answer, result.readable)
        if self._streak[1] >= UNREADABLE_CHECK and self.done == self.unparseable:
            raise RunFailed("unparseable", self.plan.unreadable_words(self.done, result.why))

    def _failed(self, item: dict, answer, lane: Lane) -> None:
        self.plan.on_failure(item, answer)
        item["failures"] = int(item.get("failures") or 0) + 1
        self._streak[0] += 1
        self.failures += 1
        self.emit(self.plan.events[1], answer.error or "", {"error_kind": answer.error_kind})
        if self._streak[0] >= lane.failure_streak or item["failures"] >= MAX_FAILURES_PER_ITEM:
            raise RunFailed(answer.error_kind or "server", answer.error or "Requests keep failing.")

    async def stream(self) -> str:
        """Send every open item until each is answered; "finished". Raises Interrupted (pause,
        stop), RunFailed or LLMError (fatal)."""
        self.lanes = lanes = self.plan.lanes()
        return await send_all(PlanSource(self), lanes, self.control)

    # -- a stored job
    def run(self):
        """Run (or resume) the plan's job until every item is answered, a pause/stop request, or
        a failure that needs a person; the plan's outcome."""
        from .control import exclusive_job, run_coroutine

        plan = self.plan
        # One job per pool file (a plan without a pool is nobody else's business).
        with exclusive_job(plan.pool, plan.job, plan.job_id) if plan.pool is not None else contextlib.nullcontext():
            plan.set_status(RUNNING)
            self.load_counts()
            self.emit(plan.events[0], plan.started_words())
            try:
                plan.start()
                reason = run_coroutine(self.stream())
                return self._end(FINISHED, reason)
            except Interrupted:
                reason = (self.control.reason if self.control is not None else None) or STOPPED
                return self._end(reason, reason,
                                 next_step=f"Resume with: {plan.resume_command()}" if reason == PAUSED else "")
            except local.LocalModelError as exc:
                return self._end(FAILED, "local_model", error=str(exc), next_step=plan.next_step("local_model"))
            except (LLMError, RunFailed) as exc:
                return self._end(FAILED, exc.kind, error=exc.message, next_step=plan.next_step(exc.kind))
            except (duckdb.Error, OSError) as exc:
                where = f"the pool {plan.pool.path}" if plan.pool is not None else "the store"
                message = (f"Could not write to {where}: {exc.__class__.__name__}: {exc}. "
                           "Nothing already written is lost.")
                return self._end(FAILED, "storage", error=message, next_step=plan.next_step("storage"))
            finally:
                plan.close()

    def _end(self, status: str, reason: str, error: str | None = None, next_step: str = ""):
        plan = self.plan
        try:
            plan.set_status(status, stop_reason=reason, error=error, ended=status in ENDED_STATUSES)
            self.load_counts()
        except (duckdb.Error, OSError) as exc:
            raise PoolError(plan.status_unsaved_words(error or reason, exc)) from None
        outcome = plan.outcome(status, reason, error, next_step)
        self.in_flight = 0
        self.emit(plan.events[2], error or reason, asdict(outcome))
        return outcome


__all__ = ["Answered", "Lane", "MAX_FAILURES_PER_ITEM", "Plan", "PlanSource", "RETRY_COOLDOWN_S", "Request",
           "RequestRunner", "Source", "UNREADABLE_CHECK", "lane_for", "send_all"]
