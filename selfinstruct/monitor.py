"""What the Generate page shows about a run, shaped from the pool in one call."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from .filters import reason_label
from .model import CREATED, FAILED, FINISHED, INTERRUPTED, PAUSED, RUNNING, STOPPED, is_round_done
from .store import Pool


@dataclass
class RunView:
    run: dict
    rounds: pd.DataFrame      # one row per round (see Pool.round_summaries) + rejections by reason
    reasons: pd.DataFrame     # round, reason, label, n
    growth: pd.DataFrame      # round, pool_size (seeds + every accepted instruction so far)
    rouge: pd.DataFrame       # the latest round's candidates: status, reason, max_rouge
    newest: list[dict]        # newest accepted instructions of the run
    errors: list[dict]        # request errors by kind: error_kind, example, n
    usage: dict               # requests, tokens, cost_usd, errors
    batches: list[dict]       # batch mode: every batch sent for the run (newest first)
    health: list[dict]        # parse health per stage (Pool.parse_health)
    hints: list[str]          # plain-word advice when a stage is failing (parse_hints)

    @property
    def rounds_done(self) -> int:
        """Rounds whose step is done (model.is_round_done: the count Home shows too)."""
        return int(sum(is_round_done(step) for step in self.rounds["step"])) if len(self.rounds) else 0

    @property
    def latest_round(self) -> int:
        return int(self.rounds["round"].max()) if len(self.rounds) else 0


STATUS_WORDS = {
    CREATED: "has not started", RUNNING: "is running", PAUSED: "is paused", STOPPED: "was stopped",
    INTERRUPTED: "was interrupted (the app or the command stopped while it ran)",
    FAILED: "stopped on an error", FINISHED: "finished",
}
# Why a run ended, when the status alone does not say it.
STOP_REASON_WORDS = {
    "rounds": "it did the rounds it was asked for", "target": "the pool reached the target",
    "budget_usd": "it spent its budget", "budget_tokens": "it used its token budget",
    "batch file written": "its requests wait in a batch file for vllm run-batch",
}


def rate_limit_words(wait_s: float) -> str:
    """What a run waiting out a 429 says, on the page and in the CLI ("rate limited: waiting 24 s");
    "" when nothing waits."""
    return f"rate limited: waiting {math.ceil(wait_s)} s" if wait_s and wait_s > 0 else ""


def run_headline(run_id: int, status: str, stop_reason: str | None = None, noun: str = "Run") -> str:
    """One line about how a run stands, saying each thing once ("Run 1 is paused", "Run 2
    finished: the pool reached the target"; `noun` "Judge run" for a judge run)."""
    line = f"{noun} {run_id} {STATUS_WORDS.get(status, status)}"
    if stop_reason and stop_reason not in (status, "stopped", "paused", "interrupted", "error"):
        line += f": {STOP_REASON_WORDS.get(stop_reason, stop_reason.replace('_', ' '))}"
    return line


def run_view(pool: Pool, run_id: int, *, newest: int = 10) -> RunView:
    run = pool.runs.get(run_id)
    if run is None:
        raise ValueError(f"There is no run {run_id}.")
    rounds = pool.runs.round_summaries(run_id)
    reasons = pool.runs.reject_reasons_by_round(run_id)
    reasons["label"] = [reason_label(r) for r in reasons["reason"]]
    if len(reasons):
        wide = reasons.pivot_table(index="round", columns="label", values="n", aggfunc="sum", fill_value=0)
        rounds = rounds.merge(wide, how="left", left_on="round", right_index=True)
        rounds[list(wide.columns)] = rounds[list(wide.columns)].fillna(0).astype(int)
    start_size = pool.runs.pool_size_before_run(run_id)
    growth = pd.DataFrame({"round": [0, *rounds["round"]],
                           "pool_size": [start_size, *(start_size + rounds["accepted"].cumsum())]})
    latest = int(rounds["round"].max()) if len(rounds) else None
    rouge = pool.runs.rouge_scores(run_id, latest) if latest else pool.runs.rouge_scores(run_id, -1)
    health = pool.runs.parse_health(run_id)
    echo = int(reasons.loc[reasons["reason"] == "echo", "n"].sum()) if len(reasons) else 0
    return RunView(run=run, rounds=rounds, reasons=reasons, growth=growth, rouge=rouge,
                   newest=pool.runs.newest_accepted(run_id, newest), errors=pool.runs.error_summary(run_id),
                   usage=pool.runs.usage(run_id), batches=pool.requests.batches(run_id)[::-1], health=health,
                   hints=parse_hints(health, mode=(run["config"] or {}).get("mode", "chat"), echo=echo,
                                     candidates=int(rounds["candidates"].sum()) if len(rounds) else 0))


# -- parse health ------------------------------------------------------------------------------
FAILING_SHARE = 0.5      # a stage is failing when fewer than this share of its answers could be read
MIN_ANSWERS = 2          # ...judged once it has at least this many answers
ECHO_SHARE = 0.3         # echoes above this share of the candidates earn a hint of their own

_WHAT = {"instructions": "does not continue the numbered list", "batch": "does not follow the task layout",
         "classify": "does not answer yes or no", "instances": "does not follow the example layout"}


def health_table(health: list[dict]) -> pd.DataFrame:
    """Parse health as a table for the page and the CLI (one row per stage)."""
    return pd.DataFrame([{"stage": h["stage"], "answers": h["answers"], "parsed": h["parsed"],
                          "parsed %": round(100 * h["parsed"] / h["answers"]) if h["answers"] else 0,
                          "items": h["items"], "structured": h["structured"]} for h in health],
                        columns=["stage", "answers", "parsed", "parsed %", "items", "structured"])


def parse_hints(health: list[dict], *, mode: str = "chat", echo: int = 0, candidates: int = 0) -> list[str]:
    """Plain-word advice for each stage whose answers mostly could not be read, and for a run
    whose new tasks mostly repeat the prompt's examples."""
    hints = []
    for h in health:
        answers, parsed = h["answers"], h["parsed"]
        if answers < MIN_ANSWERS or parsed >= FAILING_SHARE * answers:
            continue
        head = f"{h['stage']}: {parsed} of {answers} answers could be read"
        if h["structured"] == answers:
            hints.append(f"{head}; the model's JSON did not match the requested shape (often an answer cut "
                         "by the token limit); raise max_tokens or turn structured output off")
        elif mode == "completion":
            hints.append(f"{head}; this model {_WHAT.get(h['stage'], 'does not follow the layout')}; "
                         "try a bigger model")
        else:
            hints.append(f"{head}; this model {_WHAT.get(h['stage'], 'does not follow the layout')}; "
                         "try completion mode or structured output")
    for h in health:
        if h.get("nul"):
            hints.append(f"{h['stage']}: {h['nul']} of {h['answers']} answers held NUL characters, kept as "
                         "U+FFFD (\ufffd) so that exports re-import as seeds")
    if candidates and echo > ECHO_SHARE * candidates:
        hints.append(f"instructions: {echo} of {candidates} tasks only repeated the prompt's examples (echo); "
                     + ("try structured output, completion mode or a bigger model" if mode == "chat"
                        else "try a bigger model"))
    return hints


# -- the pace of a run going on now ------------------------------------------------------------
PACE_SINCE_MIN_S = 5.0          # before this, no pace is measured yet ("measuring")
PACE_LAST = 20                  # the newest answers that give the tokens per second
# The bundled model writes about 99 tokens/s on an idle 2-core machine (bench/README.md, local
# model); below this a local run is slow enough to say why and how long it will take.
SLOW_LOCAL_TOKENS_PER_S = 5.0
# A 1-minute load average above this many times the cores means other work holds the CPU.
BUSY_LOAD_PER_CORE = 1.5

STAGE_WORDS = {"instructions": "new instructions", "classify": "classification", "instances": "instances",
               "batch": "new tasks", "probe": "structured-output probe"}


@dataclass
class Pace:
    tokens_per_s: float | None      # completion tokens per second of answering, newest answers
    seconds_per_request: float | None   # wall seconds per answer since the run (re)started
    answered: int                   # requests answered in the run so far
    remaining: int                  # requests still to answer: planned, and expected for the rounds asked for
    eta_s: float | None             # remaining * seconds_per_request
    busy: bool = False              # the machine's other work holds the CPU (load average)
    local: bool = False             # the run's model runs on this machine

    @property
    def slow(self) -> bool:
        return self.local and self.tokens_per_s is not None and self.tokens_per_s < SLOW_LOCAL_TOKENS_PER_S

    def words(self) -> str:
        """"12.3 tokens/s · about 4 min left" (or "measuring the pace" before the first answer)."""
        from .pipeline import Estimate

        if self.tokens_per_s is None:
            return "measuring the pace"
        parts = [_speed(self.tokens_per_s)]
        if self.eta_s is not None:
            parts.append(f"about {Estimate._duration(self.eta_s)} left" if self.remaining else "finishing")
        return " · ".join(parts)

    def note(self) -> str | None:
        """Plain words when a local run is slow, and why, with how long it will take."""
        if not self.slow:
            return None
        from .pipeline import Estimate

        expect = f"; expect about {Estimate._duration(self.eta_s)}" if self.eta_s else ""
        speed = _speed(self.tokens_per_s)
        if self.busy:
            return (f"The CPU is shared with other work: {speed}{expect}. llama.cpp's threads wait for each "
                    "other when other work holds the cores: pause the run and resume it with 1 thread (it wrote "
                    "14-18 tokens/s where 2 threads wrote 0.8 on a busy 2-core machine), or when the machine "
                    "is quieter.")
        return (f"The local model writes {speed} on this machine{expect}. Fewer threads, a smaller "
                "model or an endpoint would be faster.")


def _speed(tokens_per_s: float) -> str:
    """"1 token/s", "2.5 tokens/s", "98 tokens/s"."""
    value = f"{tokens_per_s:.1f}".rstrip("0").rstrip(".") if tokens_per_s < 10 else f"{tokens_per_s:.0f}"
    return f"{value} token{'' if value == '1' else 's'}/s"


def machine_busy() -> bool:
    """Whether other work holds the CPU (the 1-minute load average against the cores)."""
    import os

    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return False
    return load > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1)


def run_pace(pool: Pool, run_id: int, *, elapsed_s: float, busy: bool | None = None) -> Pace:
    """How fast a run going on now answers, from its own answers since it (re)started `elapsed_s`
    seconds ago, and how long the rest will take at that pace. The rest: requests planned and not
    answered, and for the rounds asked for but not planned yet (or half planned: follow-ups come
    as answers arrive) as many requests per round as its done rounds took (before one is done,
    the estimate's figure)."""
    from .backend import LOCAL

    run = pool.runs.get(run_id) or {}
    config = run.get("config") or {}
    a = pool.runs.run_activity(run_id, since_s=elapsed_s, last=PACE_LAST)
    tokens_per_s = (a["recent_tokens"] / a["recent_seconds"]
                    if a["recent"] and a["recent_seconds"] > 0 and elapsed_s >= PACE_SINCE_MIN_S else None)
    seconds_per_request = elapsed_s / a["answered_recently"] if a["answered_recently"] else None
    if a["rounds_done"]:
        per_round = a["answered_in_done_rounds"] / a["rounds_done"]
    else:
        per_round = _estimated_requests_per_round(pool, config)
    rounds = max(int(config.get("rounds") or 0), a["rounds"])
    expected = max(a["planned"], round(per_round * rounds))
    remaining = max(0, expected - a["answered"])
    eta = remaining * seconds_per_request if seconds_per_request is not None else None
    return Pace(tokens_per_s=tokens_per_s, seconds_per_request=seconds_per_request, answered=a["answered"],
                remaining=remaining, eta_s=eta, busy=machine_busy() if busy is None else busy,
                local=config.get("backend") == LOCAL)


# The estimate reads the seeds and earlier runs: made once per run and process, not every second
# the page refreshes while the first round goes on.
_per_round_estimates: dict[tuple, float] = {}


def _estimated_requests_per_round(pool: Pool, config: dict) -> float:
    from .settings import RunConfig
    from .pipeline import estimate_run

    key = (str(pool.path), json.dumps(config, sort_keys=True, default=str))
    if key not in _per_round_estimates:
        try:
            estimate = estimate_run(pool, RunConfig.from_dict(config))
            guess = estimate.requests / max(1, estimate.rounds)
        except Exception:  # noqa: BLE001 - an estimate is a nicety; the planned requests still count
            guess = float(config.get("requests_per_round") or 0)
        if len(_per_round_estimates) > 64:
            _per_round_estimates.clear()
        _per_round_estimates[key] = guess
    return _per_round_estimates[key]


def doing_words(stages: dict[str, int]) -> str:
    """What the requests in flight are for, by stage ("instances (2), classification (1)")."""
    return ", ".join(f"{STAGE_WORDS.get(stage, stage)} ({n})" for stage, n in stages.items() if n)
