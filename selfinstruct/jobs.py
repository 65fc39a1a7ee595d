"""Background runs inside the app process.

One `JobManager` per pool file (the app keeps it in `st.cache_resource`). It runs a
`pipeline.Runner` in a thread, so a run survives page switches and browser reloads,
and it is paused, resumed and stopped from any page. The worker never touches the
UI: pages read the manager's `status()` and the pool.

One run per pool at a time holds for the whole process, not just for one manager: a
second manager for the same file (another cache entry, another browser session) sees the
run through `control.active_run` and refuses to start or resume another.

Judge runs (selfinstruct/judge.py) are jobs under the same rule: `start_judge` / `resume_judge`
run a `judge.JudgeRunner` in the same kind of thread, and neither kind starts while the other is
going on (`judge.active_judge`). `status().kind` says which kind the job is ("run" or "judge").

Evaluations (selfinstruct/evaluate.py) are jobs too: `collect_evaluation` gathers the models'
answers and `prerate_evaluation` the judge's A-D pre-ratings, each an `evaluate.EvalRunner` in the
same kind of thread (kinds "evaluate" and "prerate"), never beside another job of the pool
(`evaluate.active_evaluation`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from .llm import PriceTable
from .model import FAILED, PAUSED, STOPPED, UNFINISHED_STATUSES
from .monitor import doing_words, run_headline
from .redact import redact
from .control import Event, JOB_NOUNS, RunControl, active_job, active_run
from .settings import RunConfig
from .pipeline import RunOutcome, Runner, apply_overrides, start_run
from .store import Pool


def _judge():
    from . import judge   # judge imports pipeline, as this module does; imported when first needed

    return judge


def _evaluate():
    from . import evaluate   # imported when first needed, like judge

    return evaluate


EVAL_KINDS = ("evaluate", "prerate")    # JobStatus.kind of an evaluation's collection and pre-rating


@dataclass(frozen=True)
class JobStatus:
    state: str = "idle"          # idle | running | pausing | stopping
    run_id: int | None = None
    round: int = 0
    step: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    started_at: float | None = None
    outcome: RunOutcome | None = None   # how the last run in this process ended
    errors_seen: int = 0
    in_flight: int = 0           # requests being answered now
    limit: int = 0               # current concurrency (lowered while the endpoint answers 429)
    rate_limited: int = 0        # 429 answers seen
    rate_limit_wait_s: float = 0.0   # seconds left of the wait a 429 asked for (monitor.rate_limit_words)
    kind: str = "run"            # "run" (generation), "judge" (run_id: the judge run's id), or "evaluate" /
    #                              "prerate" (run_id: the evaluation's id)
    cost_usd: float = 0.0        # judge runs: spent so far (the run's whole cost, earlier starts included)
    unparseable: int = 0         # judge runs: answers that could not be read as a verdict
    in_flight_stages: dict = field(default_factory=dict)   # requests being answered now, by stage
    preparing: str = ""          # what a run does before its first round ("loading the local model ...")

    @property
    def busy(self) -> bool:
        return self.state != "idle"

    def line(self, pool_size: int | None = None) -> str:
        """One line for the sidebar."""
        size = f", pool {pool_size:,}" if pool_size is not None else ""
        if self.kind == "judge":
            return self._judge_line() + size
        if self.kind in EVAL_KINDS:
            return self._eval_line() + size
        if self.state == "idle":
            if self.outcome:
                return run_headline(self.outcome.run_id, self.outcome.status, self.outcome.stop_reason) + size
            return f"No run in progress{size}"
        progress = f", {self.done}/{self.total} requests" if self.total else ""
        verb = {"running": "running", "pausing": "pausing", "stopping": "stopping"}[self.state]
        if not self.round and self.state == "running":
            return f"Run {self.run_id} starting{': ' + self.preparing if self.preparing else ''}{size}"
        # what the requests in flight are for; the round's own step ("classify") lasts through
        # its instances
        doing = doing_words(self.in_flight_stages) or self.step
        step = f" ({doing})" if doing else ""
        return f"Run {self.run_id} {verb}: round {self.round}{step}{progress}{size}"

    def _judge_line(self) -> str:
        if self.state == "idle":
            outcome = self.outcome
            if outcome is None:
                return "No run in progress"
            return f"Judge run {self.run_id} {outcome.status}: {outcome.done}/{outcome.total} items"
        if not self.total:
            return f"Judge run {self.run_id} starting"
        verb = "" if self.state == "running" else f" ({self.state})"
        return f"Judge run {self.run_id}{verb}: {self.done}/{self.total} items"

    def _eval_line(self) -> str:
        what = "answers" if self.kind == "evaluate" else "pre-ratings"
        if self.state == "idle":
            outcome = self.outcome
            if outcome is None:
                return "No run in progress"
            return f"Evaluation {self.run_id} {outcome.status}: {outcome.done}/{outcome.total} {what}"
        if not self.total:
            return f"Evaluation {self.run_id} starting"
        verb = "" if self.state == "running" else f" ({self.state})"
        return f"Evaluation {self.run_id}{verb}: {self.done}/{self.total} {what}"


class JobManager:
    """Start, pause, resume and stop the runs of one pool, one at a time."""

    def __init__(self, pool: Pool, *, prices: PriceTable | None = None):
        self.pool = pool
        self.prices = prices   # None: each run's own table (RunConfig.price_table)
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._thread: threading.Thread | None = None
        self._control: RunControl | None = None
        # Runs marked running belong to a process that died: nothing runs them now (unless
        # another manager of this process runs one).
        running = active_run(pool)
        self.interrupted_at_start = pool.runs.mark_interrupted(keep=[running] if running else [])
        judging = _judge().active_judge(pool)
        self.interrupted_judges_at_start = pool.judge.mark_interrupted(keep=[judging] if judging else [])
        evaluating = _evaluate().active_evaluation(pool)
        self.interrupted_evaluations_at_start = pool.evaluations.mark_interrupted(
            keep=[evaluating] if evaluating else [])

    # -- what pages read --------------------------------------------------------
    def status(self) -> JobStatus:
        with self._lock:
            status = self._status
        if not status.busy:
            other = active_job(self.pool)
            if other is not None:   # started by another manager of this process
                return JobStatus(state="running", run_id=other[1], message="running", kind=other[0])
        return status

    def resumable_runs(self) -> list[dict]:
        busy_id = self.status().run_id if self.status().busy else None
        return [r for r in self.pool.runs.all()
                if r["status"] in UNFINISHED_STATUSES and r["id"] != busy_id]

    # -- actions ------------------------------------------------------------------
    def start(self, config: RunConfig, *, api_key: str | None = None, name: str | None = None,
              actor: str = "user") -> int:
        with self._lock:
            self._refuse_if_busy()
            run_id = start_run(self.pool, config, name=name, actor=actor)
            self._launch(run_id, api_key)
        return run_id

    def resume(self, run_id: int, *, api_key: str | None = None, overrides: dict | None = None,
               actor: str = "user") -> None:
        """Resume a run, with corrected settings if given (see pipeline.RESUMABLE_SETTINGS)."""
        with self._lock:
            self._refuse_if_busy()
            if self.pool.runs.get(run_id) is None:
                raise ValueError(f"There is no run {run_id}.")
            if overrides:
                apply_overrides(self.pool, run_id, overrides, actor=actor)
            self._launch(run_id, api_key)

    def start_judge(self, config, scope: str, study_id: int | None = None, limit: int | None = None, *,
                    api_key: str | None = None, name: str | None = None, actor: str = "user") -> int:
        """Create a judge run (`judge.start_judge`) and run it in the background; its id."""
        with self._lock:
            self._refuse_if_busy()
            judge_run_id = _judge().start_judge(self.pool, config, scope, study_id, limit, name=name, actor=actor)
            self._launch(judge_run_id, api_key, kind="judge")
        return judge_run_id

    def resume_judge(self, judge_run_id: int, *, api_key: str | None = None, overrides: dict | None = None,
                     actor: str = "user") -> None:
        """Resume a judge run (its unanswered items), with corrected settings if given
        (judge.RESUMABLE_JUDGE_SETTINGS)."""
        with self._lock:
            self._refuse_if_busy()
            if self.pool.judge.run(judge_run_id) is None:
                raise ValueError(f"There is no judge run {judge_run_id}.")
            if overrides:
                _judge().apply_judge_overrides(self.pool, judge_run_id, overrides, actor=actor)
            self._launch(judge_run_id, api_key, kind="judge")

    def stop_judge(self, judge_run_id: int) -> None:
        """End a paused or interrupted judge run for good (a running one: `stop()`)."""
        with self._lock:
            busy = self._status.busy and self._status.kind == "judge" and self._status.run_id == judge_run_id
        if busy:
            self._ask(STOPPED, "stopping")
        else:
            self.pool.judge.set_status(judge_run_id, STOPPED, stop_reason="stopped", ended=True)

    def resumable_judge_runs(self) -> list[dict]:
        status = self.status()
        busy_id = status.run_id if status.busy and status.kind == "judge" else None
        return [r for r in _judge().resumable_judge_runs(self.pool) if r["id"] != busy_id]

    def collect_evaluation(self, evaluation_id: int, *, api_keys: dict | None = None) -> None:
        """Collect (or go on collecting) an evaluation's answers in the background; `api_keys`: a
        key typed for a model, by model index (this session's only, never stored)."""
        with self._lock:
            self._refuse_if_busy()
            if self.pool.evaluations.get(evaluation_id) is None:
                raise ValueError(f"There is no evaluation {evaluation_id}.")
            self._launch(evaluation_id, api_keys, kind="evaluate")

    def prerate_evaluation(self, evaluation_id: int, judge_config=None, *, api_key: str | None = None,
                           actor: str = "user") -> int:
        """Let a judge pre-rate an evaluation's answers in the background: with `judge_config`
        (judge.JudgeConfig) it is set and the missing pre-ratings planned first
        (evaluate.plan_prerating); without, the stored judge goes on. The number planned."""
        with self._lock:
            self._refuse_if_busy()
            evaluation = self.pool.evaluations.get(evaluation_id)
            if evaluation is None:
                raise ValueError(f"There is no evaluation {evaluation_id}.")
            planned = 0
            if judge_config is not None:
                planned = _evaluate().plan_prerating(self.pool, evaluation_id, judge_config, actor=actor)
            elif not evaluation["judge_config"]:
                raise ValueError("Choose a judge to pre-rate with.")
            self._launch(evaluation_id, {None: api_key} if api_key else None, kind="prerate")
        return planned

    def pause(self) -> None:
        self._ask(PAUSED, "pausing")

    def stop(self, run_id: int | None = None) -> None:
        """Stop the running run; or end a paused/interrupted one for good."""
        with self._lock:
            busy = self._status.busy
        if busy:
            self._ask(STOPPED, "stopping")
        elif run_id is not None:
            self.pool.runs.set_status(run_id, STOPPED, stop_reason="stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends (tests and shutdown); True when it has."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def shutdown(self, timeout: float = 30.0) -> None:
        self.pause()
        self.wait(timeout)

    # -- internals -------------------------------------------------------------------
    def _refuse_if_busy(self) -> None:
        if self._status.busy:
            raise RuntimeError(f"{JOB_NOUNS.get(self._status.kind, 'Run')} {self._status.run_id} is still "
                               f"{self._status.state}; pause or stop it first.")
        other = active_job(self.pool)
        if other is not None:
            raise RuntimeError(f"{JOB_NOUNS[other[0]]} {other[1]} is going on for this pool; pause or stop it first.")

    def _ask(self, reason: str, state: str) -> None:
        with self._lock:
            if not self._status.busy or self._control is None:
                return
            self._control.request(reason)
            self._status = replace(self._status, state=state, message=f"{state}…")

    def _launch(self, run_id: int, api_key, kind: str = "run") -> None:
        control = RunControl()
        self._control = control
        self._status = JobStatus(state="running", run_id=run_id, message="starting",
                                 started_at=time.time(), kind=kind)
        work = {"judge": self._work_judge, "evaluate": self._work_eval, "prerate": self._work_eval}.get(kind, self._work)
        self._thread = threading.Thread(target=work, args=(run_id, api_key, control),
                                        name=f"selfinstruct-{kind}-{run_id}", daemon=True)
        self._thread.start()

    def _work_judge(self, judge_run_id: int, api_key: str | None, control: RunControl) -> None:
        judge = _judge()
        outcome = None
        try:
            runner = judge.JudgeRunner(self.pool, judge_run_id, api_key=api_key, prices=self.prices,
                                       on_event=self._on_event, control=control)
            outcome = runner.run()
        except Exception as exc:  # the worker must never die silently
            message = f"The judge run stopped on an unexpected error: {exc.__class__.__name__}: {redact(str(exc))}"
            try:
                self.pool.judge.set_status(judge_run_id, FAILED, stop_reason="error", error=message, ended=True)
                progress = self.pool.judge.progress(judge_run_id)
            except Exception:  # noqa: BLE001 - a pool that cannot be written (full disk)
                progress = {"answered": 0, "total": 0, "unparseable": 0}
            outcome = judge.JudgeOutcome(judge_run_id, FAILED, "error", progress["answered"], progress["total"],
                                         progress["unparseable"], error=message)
        finally:
            with self._lock:
                self._status = JobStatus(outcome=outcome, run_id=judge_run_id, kind="judge",
                                         done=outcome.done if outcome else 0, total=outcome.total if outcome else 0,
                                         cost_usd=outcome.cost_usd if outcome else 0.0,
                                         unparseable=outcome.unparseable if outcome else 0,
                                         message=(outcome.error or outcome.stop_reason) if outcome else "")

    def _work_eval(self, evaluation_id: int, api_keys: dict | None, control: RunControl) -> None:
        evaluate = _evaluate()
        kind = self._status.kind
        task = evaluate.COLLECT if kind == "evaluate" else evaluate.PRERATE
        outcome = None
        try:
            runner = evaluate.EvalRunner(self.pool, evaluation_id, on_event=self._on_event, control=control,
                                         task=task, api_keys=api_keys, prices=self.prices)
            outcome = runner.run()
        except Exception as exc:  # the worker must never die silently
            message = f"The evaluation stopped on an unexpected error: {exc.__class__.__name__}: {redact(str(exc))}"
            try:
                self.pool.evaluations.set_status(evaluation_id, FAILED, stop_reason="error", error=message,
                                                ended=True, judge=task == evaluate.PRERATE)
            except Exception:  # noqa: BLE001 - a pool that cannot be written (full disk)
                pass
            outcome = evaluate.EvalOutcome(evaluation_id, task, FAILED, "error", 0, 0, error=message)
        finally:
            with self._lock:
                self._status = JobStatus(outcome=outcome, run_id=evaluation_id, kind=kind,
                                         done=outcome.done if outcome else 0, total=outcome.total if outcome else 0,
                                         cost_usd=outcome.cost_usd if outcome else 0.0,
                                         unparseable=outcome.unparseable if outcome else 0,
                                         message=(outcome.error or outcome.stop_reason) if outcome else "")

    def _work(self, run_id: int, api_key: str | None, control: RunControl) -> None:
        outcome: RunOutcome | None = None
        try:
            runner = Runner(self.pool, run_id, api_key=api_key, prices=self.prices,
                            on_event=self._on_event, control=control)
            outcome = runner.run()
        except Exception as exc:  # the worker must never die silently
            message = f"The run stopped on an unexpected error: {exc.__class__.__name__}: {redact(str(exc))}"
            try:
                self.pool.runs.set_status(run_id, FAILED, stop_reason="error", error=message)
                rounds, accepted = self.pool.runs.rounds_done(run_id), self.pool.runs.accepted_count(run_id)
            except Exception:  # noqa: BLE001 - a pool that cannot be written (full disk)
                rounds = accepted = 0
            outcome = RunOutcome(run_id, FAILED, "error", rounds, accepted, message)
        finally:
            with self._lock:
                self._status = JobStatus(outcome=outcome, run_id=run_id,
                                         message=(outcome.error or outcome.stop_reason) if outcome else "")

    def _on_event(self, event: Event) -> None:
        with self._lock:
            status = self._status
            changes: dict = {"round": event.round or status.round, "step": event.step or status.step}
            if event.total:
                changes.update(done=event.done, total=event.total)
            data = event.data or {}
            for key in ("in_flight", "limit", "rate_limited"):
                if key in data:
                    changes[key] = int(data[key])
            if "rate_limit_wait_s" in data:
                changes["rate_limit_wait_s"] = float(data["rate_limit_wait_s"])
            if "failures" in data:
                changes["errors_seen"] = int(data["failures"])
            if "cost_usd" in data:
                changes["cost_usd"] = float(data["cost_usd"])
            if "unparseable" in data:
                changes["unparseable"] = int(data["unparseable"])
            if "in_flight_stages" in data:
                changes["in_flight_stages"] = dict(data["in_flight_stages"])
            if event.kind == "preparing":
                changes["preparing"] = event.message
            if event.message:
                changes["message"] = event.message
            self._status = replace(status, **changes)
