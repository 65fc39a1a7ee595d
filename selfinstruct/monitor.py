"""What the Generate page shows about a run, shaped from the pool in one call."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .filters import REASON_LABELS
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

    @property
    def latest_round(self) -> int:
        return int(self.rounds["round"].max()) if len(self.rounds) else 0


def reason_label(reason: str | None) -> str:
    return REASON_LABELS.get(reason or "", reason or "")


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
    return RunView(run=run, rounds=rounds, reasons=reasons, growth=growth, rouge=rouge,
                   newest=pool.newest_accepted(run_id, newest), errors=pool.error_summary(run_id),
                   usage=pool.run_usage(run_id), batches=pool.batches(run_id)[::-1])
