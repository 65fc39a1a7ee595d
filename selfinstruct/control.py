"""How a job is steered and how it reports, shared by every kind of job (a generation run, a
judge run, an evaluation): its events, a pause or stop asked from another thread, the two ways it
ends early (`Interrupted`, `RunFailed`), keeping the answers that arrive while it stops, the one
job per pool file rule, and running its coroutine from synchronous code."""
from __future__ import annotations

import asyncio
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from .redact import redact
from .store import Pool

DRAIN_S = 1.5                # a pause, stop or Ctrl+C still stores the answers arriving this long after it


class RunFailed(Exception):
    """The run cannot go on: `kind` names why, `message` says it in plain words."""

    def __init__(self, kind: str, message: str) -> None:
        message = redact(message)     # often an endpoint's words, stored and printed
        super().__init__(message)
        self.kind, self.message = kind, message


class Interrupted(Exception):
    """A pause or stop asked for from outside."""


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


# -- helpers ------------------------------------------------------------------------------
def run_coroutine(coro):
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


# -- the continuous scheduler ----------------------------------------------------------------
async def keep_arrived(tasks: dict, store: Callable, seconds: float = DRAIN_S) -> None:
    """Store the answers that come back while a run is being interrupted, for up to `seconds`,
    instead of cancelling them with the requests still out: an answer that came back has been paid
    for, and one thrown away is sent (and paid for) again on resume. `tasks` maps each request's
    task to what `store(what, completion)` needs; failed requests are left for the resume. The
    generation engine, the judge and evaluations use it."""
    deadline = time.monotonic() + seconds
    while tasks and (left := deadline - time.monotonic()) > 0:
        done, _ = await asyncio.wait(tasks, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            what = tasks.pop(task)
            if task.cancelled() or task.exception() is not None:
                continue
            completion = task.result()
            if not completion.error:
                store(what, completion)
