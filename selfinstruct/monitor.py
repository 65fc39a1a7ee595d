"""What the Generate page shows about a run, shaped from the pool in one call."""
from __future__ import annotations

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


def run_headline(run_id: int, status: str, stop_reason: str | None = None, noun: str = "Run") -> str:
    """One line about how a run stands, saying each thing once ("Run 1 is paused", "Run 2
    finished: the pool reached the target"; `noun` "Judge run" for a judge run)."""
    line = f"{noun} {run_id} {STATUS_WORDS.get(status, status)}"
    if stop_reason and stop_reason not in (status, "stopped", "paused", "interrupted", "error"):
        line += f": {STOP_REASON_WORDS.get(stop_reason, stop_reason.replace('_', ' '))}"
    return line


def run_view(pool: Pool, run_id: int, *, newest: int = 10) -> RunView:
    run = pool.run(run_id)
    if run is None:
        raise ValueError(f"There is no run {run_id}.")
    rounds = pool.round_summaries(run_id)
    reasons = pool.reject_reasons_by_round(run_id)
    reasons["label"] = [reason_label(r) for r in reasons["reason"]]
    if len(reasons):
        wide = reasons.pivot_table(index="round", columns="label", values="n", aggfunc="sum", fill_value=0)
        rounds = rounds.merge(wide, how="left", left_on="round", right_index=True)
        rounds[list(wide.columns)] = rounds[list(wide.columns)].fillna(0).astype(int)
    start_size = pool.pool_size_before_run(run_id)
    growth = pd.DataFrame({"round": [0, *rounds["round"]],
                           "pool_size": [start_size, *(start_size + rounds["accepted"].cumsum())]})
    latest = int(rounds["round"].max()) if len(rounds) else None
    rouge = pool.rouge_scores(run_id, latest) if latest else pool.rouge_scores(run_id, -1)
    health = pool.parse_health(run_id)
    echo = int(reasons.loc[reasons["reason"] == "echo", "n"].sum()) if len(reasons) else 0
    return RunView(run=run, rounds=rounds, reasons=reasons, growth=growth, rouge=rouge,
                   newest=pool.newest_accepted(run_id, newest), errors=pool.error_summary(run_id),
                   usage=pool.run_usage(run_id), batches=pool.batches(run_id)[::-1], health=health,
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
    if candidates and echo > ECHO_SHARE * candidates:
        hints.append(f"instructions: {echo} of {candidates} tasks only repeated the prompt's examples (echo); "
                     + ("try structured output, completion mode or a bigger model" if mode == "chat"
                        else "try a bigger model"))
    return hints
