"""Calibration of a model judge against people, pool-wide rates that use both, and A-D agreement.

Plain sequences in, frozen dataclasses out: no Streamlit, no store. The judge and evaluation
features read their rows from the pool and hand them here.

1. `calibrate(judge, human)`, per quality question, on the items people labeled. The human
   truth of an item is `model.majority` of its labels. Only items whose truth is "yes" or
   "no" are compared; the others are left out and counted in `Calibration.left_out`: "split"
   (no majority), "unsure" (the majority said unsure), "unlabeled" (no label at all) and
   "unjudged" (no judge verdict). Figures:
   - the confusion matrix, judge yes / no / unsure (rows) against human yes / no (columns);
   - Cohen's kappa over the categories yes / no / unsure (a judge's "unsure" is always a
     disagreement, as people's truth is never "unsure" here), with a 95% interval from the
     large-sample standard error of Fleiss, Cohen & Everitt (1969) (normal approximation,
     clipped to [-1, 1]) on the table with one item added to each used cell (`KAPPA_ADD`): the
     plain interval collapses when judge and people rarely disagree (coverage 19-87%), this one
     covered at least 93% over bench/calibration.py --kappa;
   - how well the judge finds the invalid items: precision of its "no" (of the items it
     called "no", the share people call "no") and recall (of the items people call "no", the
     share it called "no"; "unsure" is not "no"), each with a Wilson interval
     (`quality.wilson_interval`).
2. `pool_rate` / `strata_rate` (what pages show, "by-verdict", `DEFAULT_METHOD`): a pool-wide
   rate from the judge's verdict on every judged item and people's truth on a uniform random
   sample of them. The pool is cut into cells by the judge's answer (yes / no / unsure /
   unreadable; with a stratified study, by study stratum and answer, weighed by the strata's
   sizes), each cell's rate gets its exact Clopper-Pearson interval from the labeled items in
   it, and the cells are combined by their shares (MOVER, `strata_interval`). It holds 95%
   coverage (at least 96% measured) in every cell of the grid n 30-200 x rates 2-98% x four
   judges, where PPI++ covered 10-90% at small n and rare answers (`RATES_PROMISE`).
   `ppi_mean` / `pool_rate(method="ppi" | "ppi++")`, kept for reference: a pool-wide rate from
   N judge verdicts on unlabeled items and n items with both a judge verdict and a human truth,
   by prediction-powered inference
   (Angelopoulos et al., Science 2023). Classic PPI ("ppi"): the judge's mean over the N items
   minus the mean of the rectifier (judge - human) over the n items; its variance is the
   judge's variance / N plus the rectifier's variance / n; a normal interval. PPI++ ("ppi++",
   Angelopoulos, Duchi & Zrnic 2023): the same with the judge scaled by lambda =
   Cov(human, judge) / ((1 + n/N) Var(judge)), the value that minimises the variance; lambda 0
   is the human-only mean, lambda 1 classic PPI, so a poor judge costs (almost) nothing;
   lambda is clipped to [0, 1] (as ppi_py does) and a rate's estimate and interval to [0, 1].
   Beside every rate: the human-only Wilson interval on the n human truths and the paper's rate.
3. `weighted_kappa` (two raters, linear or quadratic weights) and `krippendorff_alpha` (any
   number of raters, missing ratings allowed; ordinal, interval or nominal distances) for the
   paper's A-D ratings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import beta, binomtest, norm

from .model import NO, PAPER_RATES, SPLIT, UNSURE, YES, majority


def wilson_interval(yes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval for `yes` successes in `n` trials (None when n is 0), from
    scipy. Unlike the normal approximation it stays inside [0, 1] and is not empty at 0% or 100%."""
    if n <= 0:
        return None
    if not 0 <= yes <= n:
        raise ValueError(f"yes must be between 0 and n, got {yes} of {n}")
    ci = binomtest(int(yes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)

JUDGE_ANSWERS = (YES, NO, UNSURE)      # rows of the confusion matrix
HUMAN_TRUTHS = (YES, NO)               # its columns
LEFT_OUT = ("split", "unsure", "unlabeled", "unjudged")
PPI_METHODS = ("ppi", "ppi++")
STRATA = "by-verdict"                   # strata_rate: exact per judge verdict, combined (MOVER)
METHODS = (STRATA, *PPI_METHODS)
DEFAULT_METHOD = STRATA
RATINGS = ("A", "B", "C", "D")          # the paper's four levels, best first
KAPPA_WEIGHTS = ("linear", "quadratic")
ALPHA_METRICS = ("ordinal", "interval", "nominal")


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return float(norm.ppf(0.5 + confidence / 2))


# ---------------------------------------------------------------------------
# 1. Judge against people
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Proportion:
    """`hits` of `n` with its Wilson interval (all None when n is 0)."""
    hits: int
    n: int
    estimate: float | None
    low: float | None
    high: float | None


def proportion(hits: int, n: int, confidence: float = 0.95) -> Proportion:
    if n == 0:
        return Proportion(0, 0, None, None, None)
    low, high = wilson_interval(hits, n, confidence)
    return Proportion(hits, n, hits / n, low, high)


@dataclass(frozen=True)
class KappaInterval:
    """Cohen's kappa with its large-sample standard error (Fleiss, Cohen & Everitt 1969) and
    normal interval; value, se, low and high are None when kappa is undefined."""
    value: float | None
    se: float | None
    low: float | None
    high: float | None
    items: int
    observed: float | None          # share of items on which both gave the same answer
    expected: float | None          # agreement expected by chance from the two marginals
    why_undefined: str | None = None


@dataclass(frozen=True)
class Calibration:
    question: str | None
    confusion: dict[str, dict[str, int]]   # judge answer -> human truth -> items
    items: int                             # items compared (human truth yes or no, judged)
    left_out: dict[str, int]               # LEFT_OUT -> items not compared, by reason
    kappa: KappaInterval
    precision: Proportion                  # of the judge's "no": human "no"
    recall: Proportion                     # of the human "no": judge "no"

    @property
    def left_out_total(self) -> int:
        return sum(self.left_out.values())


KAPPA_ADD = 1.0     # calibrate's interval: one item added to each used cell (see kappa_interval)


def kappa_interval(table: Sequence[Sequence[float]], confidence: float = 0.95, *, add: float = 0.0) -> KappaInterval:
    """Cohen's kappa of a square table of counts (rows: one rater, columns: the other, the same
    categories in the same order) with the Fleiss-Cohen-Everitt (1969) standard error:

        var = [ sum_i p_ii (1 - (r_i + c_i)(1 - k))^2
                + (1 - k)^2 sum_{i != j} p_ij (c_i + r_j)^2
                - (k - p_e (1 - k))^2 ] / (n (1 - p_e)^2)

    with p_ij the cell shares, r / c the row / column shares, p_e = sum_i r_i c_i, k kappa.

    `add` > 0: the interval is the normal one of the table with `add` items added to every cell
    whose row and column are in use, widened to hold the observed kappa (value and se stay the
    observed table's). With few disagreements the plain interval collapses: judge against people
    at 30-200 items it covered 24-87% with a 99%-accurate judge and 61-77% with a lenient or
    harsh one at 30 items; with add = 1 at least 93% over the grid of bench/calibration.py
    --kappa (Agresti and Coull's add-a-few idea for a proportion, applied to the table). That grid
    has judges answering yes or no. A judge that also answers "unsure" now and then is not
    covered: at 30-50 items, 5% "unsure" and otherwise 99% right, this interval covered 54% of
    the time (too few "unsure" items to show how often it happens; not fixed, said on the page)."""
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError("the table must be square (the same categories for both raters)")
    if add > 0 and counts.sum() > 0:
        plain = kappa_interval(counts, confidence)
        if plain.value is None:
            return plain
        used = (counts.sum(axis=1) > 0) | (counts.sum(axis=0) > 0)
        adjusted = kappa_interval(counts + add * np.outer(used, used), confidence)
        if adjusted.value is None:
            return plain
        return KappaInterval(plain.value, plain.se, min(adjusted.low, plain.value), max(adjusted.high, plain.value),
                             plain.items, plain.observed, plain.expected)
    n = counts.sum()
    if n == 0:
        return KappaInterval(None, None, None, None, 0, None, None, "no item to compare")
    p = counts / n
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    observed = float(np.trace(p))
    expected = float(rows @ cols)
    if 1 - expected < 1e-12:
        return KappaInterval(None, None, None, None, int(n), observed, expected,
                             "both gave one and the same answer to every item: agreement expected "
                             "by chance is already 100%, so kappa is undefined")
    k = (observed - expected) / (1 - expected)
    diagonal = np.diag(p) * (1 - (rows + cols) * (1 - k)) ** 2
    off = p * (cols[:, None] + rows[None, :]) ** 2      # cell (i, j): (c_i + r_j)^2
    np.fill_diagonal(off, 0.0)
    var = (diagonal.sum() + (1 - k) ** 2 * off.sum() - (k - expected * (1 - k)) ** 2) / (n * (1 - expected) ** 2)
    se = math.sqrt(max(float(var), 0.0))
    z = z_value(confidence)
    return KappaInterval(float(k), se, max(-1.0, k - z * se), min(1.0, k + z * se), int(n), observed, expected)


def human_truth(labels: Sequence[str | None]) -> str:
    """The people's answer for one item: `model.majority` of its labels (SPLIT without one)."""
    return majority(labels)


def calibrate(judge: Sequence[str | None], human: Sequence[Sequence[str | None]], *,
              question: str | None = None, confidence: float = 0.95) -> Calibration:
    """The judge's verdicts (yes / no / unsure; None: not judged) against people's labels, item
    by item (`human[i]`: the answers item i received to this question, None counting as
    unsure). Items whose human truth is split or unsure, or that lack labels or a verdict, are
    left out and counted."""
    if len(judge) != len(human):
        raise ValueError(f"{len(judge)} judge verdicts but {len(human)} items of labels")
    confusion = {j: {h: 0 for h in HUMAN_TRUTHS} for j in JUDGE_ANSWERS}
    left_out = dict.fromkeys(LEFT_OUT, 0)
    for verdict, labels in zip(judge, human):
        if verdict is not None and verdict not in JUDGE_ANSWERS:
            raise ValueError(f"a judge verdict must be one of {JUDGE_ANSWERS} or None, not {verdict!r}")
        truth = human_truth(labels) if len(labels) else None
        if truth is None:
            left_out["unlabeled"] += 1
        elif truth == SPLIT:
            left_out["split"] += 1
        elif truth == UNSURE:
            left_out["unsure"] += 1
        elif verdict is None:
            left_out["unjudged"] += 1
        else:
            confusion[verdict][truth] += 1
    table = [[confusion[j].get(h, 0) for h in JUDGE_ANSWERS] for j in JUDGE_ANSWERS]
    judged_no = confusion[NO][YES] + confusion[NO][NO]
    human_no = sum(confusion[j][NO] for j in JUDGE_ANSWERS)
    return Calibration(
        question=question,
        confusion=confusion,
        items=sum(sum(row.values()) for row in confusion.values()),
        left_out=left_out,
        kappa=kappa_interval(table, confidence, add=KAPPA_ADD),
        precision=proportion(confusion[NO][NO], judged_no, confidence),
        recall=proportion(confusion[NO][NO], human_no, confidence),
    )


# ---------------------------------------------------------------------------
# 2. Pool-wide rates: prediction-powered inference
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolRate:
    estimate: float
    low: float
    high: float
    n_human: int                  # items with a judge verdict and a human truth (the rectifier's)
    n_judge: int                  # judged items without a human truth
    method: str                   # "ppi" or "ppi++"
    human_estimate: float | None  # the human-only estimate and interval on the n_human truths
    human_low: float | None
    human_high: float | None
    se: float                     # by verdict: the larger half-width / z
    lam: float | None             # the judge's weight: 1 for classic PPI, tuned for PPI++ (by verdict: None)
    confidence: float = 0.95
    paper_rate: float | None = None
    unreadable: int = 0           # judged items without a readable verdict (by verdict: their own cell)

    @property
    def width(self) -> float:
        return self.high - self.low

    @property
    def human(self) -> tuple[float | None, float | None, float | None]:
        """The human-only (estimate, low, high)."""
        return self.human_estimate, self.human_low, self.human_high

    @property
    def human_width(self) -> float | None:
        return None if self.human_low is None else self.human_high - self.human_low


def ppi_mean(judge_unlabeled: Sequence[float], judge_labeled: Sequence[float], human_labeled: Sequence[float],
             *, method: str = "ppi++", confidence: float = 0.95, paper_rate: float | None = None,
             lam: float | None = None, ddof: int = 1) -> PoolRate:
    """The mean of the human truth over the pool, from the judge on N unlabeled items and the
    (judge, human) pairs of n labeled ones (numbers; 1/0 for a rate).

    "ppi":   theta = mean_N(f) - mean_n(f - y),  var = var_N(f)/N + var_n(f - y)/n
    "ppi++": theta = lam mean_N(f) - mean_n(lam f - y),  var = lam^2 var_N(f)/N + var_n(lam f - y)/n,
             lam = cov_n(y, f) / ((1 + n/N) var(f)), var(f) over all N + n verdicts, clipped to
             [0, 1] as ppi_py does (`lam` given: that weight, not tuned)
    The interval is theta +- z sqrt(var); when every value is 0 or 1 the estimate and both ends
    are clipped to [0, 1], so the estimate stays inside its interval. Variances and the
    covariance divide by n - `ddof` (ppi_py 0.2.3: ddof 0 in the interval and in lambda's
    covariance, 1 in lambda's variance; tests/data/ppi_reference.json). The human-only interval
    beside it: Wilson when the truths are 0/1, else mean +- z sd/sqrt(n). `judge_unlabeled` must
    not hold the labeled items' verdicts (the two sets are independent samples of the pool).

    Kept for reference: its normal interval does not hold at small n or rare answers (coverage
    40-90% at 30-100 labels and a 2% or 5% "no" rate, bench/calibration.py); pages use
    `strata_rate`."""
    if method not in PPI_METHODS:
        raise ValueError(f"method must be one of {PPI_METHODS}, not {method!r}")
    f_big = np.asarray(judge_unlabeled, dtype=float)
    f_small = np.asarray(judge_labeled, dtype=float)
    y = np.asarray(human_labeled, dtype=float)
    big, small = f_big.size, y.size
    if f_small.size != small:
        raise ValueError(f"{f_small.size} judge verdicts but {small} human truths on the labeled items")
    if small < 2 or big < 2:
        raise ValueError(f"prediction-powered inference needs at least 2 labeled and 2 unlabeled items "
                         f"(got {small} and {big})")
    if lam is None:
        lam = 1.0
        if method == "ppi++":
            f_all = np.concatenate([f_big, f_small])
            var_f = f_all.var(ddof=1)
            cov = float(np.cov(y, f_small, ddof=ddof)[0, 1])
            # Outside [0, 1] the tuned weight overshoots (30 labels, 2 "no": lambda 3.25, estimate 1.085).
            lam = min(1.0, max(0.0, cov / ((1 + small / big) * var_f))) if var_f > 0 else 0.0
    rectifier = lam * f_small - y
    estimate = lam * f_big.mean() - rectifier.mean()
    var = lam ** 2 * f_big.var(ddof=ddof) / big + rectifier.var(ddof=ddof) / small
    se = math.sqrt(max(float(var), 0.0))
    z = z_value(confidence)
    low, high = estimate - z * se, estimate + z * se
    binary = all(np.isin(a, (0.0, 1.0)).all() for a in (f_big, f_small, y))
    if binary:
        estimate, low, high = (min(1.0, max(0.0, v)) for v in (estimate, low, high))
        hits = int(y.sum())
        h_low, h_high = wilson_interval(hits, small, confidence)
        h_est = hits / small
    else:
        h_est = float(y.mean())
        half = z * float(y.std(ddof=1)) / math.sqrt(small)
        h_low, h_high = h_est - half, h_est + half
    return PoolRate(float(estimate), float(low), float(high), small, big, method, h_est, h_low, h_high,
                    se, float(lam), confidence, paper_rate)


def clopper_pearson(hits, n, confidence: float = 0.95):
    """The exact (Clopper-Pearson) interval for `hits` of `n`, elementwise over arrays: beta
    quantiles, 0 at no hit and 1 at all hits. Never narrower than its promise for any rate."""
    hits, n = np.asarray(hits, dtype=float), np.asarray(n, dtype=float)
    tail = (1 - confidence) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(hits > 0, beta.ppf(tail, hits, n - hits + 1), 0.0)
        high = np.where(hits < n, beta.ppf(1 - tail, hits + 1, n - hits), 1.0)
    return np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=1.0)


def strata_interval(yes, labeled, weights, *, judged: float | None = None, confidence: float = 0.95):
    """A rate over a pool cut into cells of known size, from a uniform sample of labeled items
    in each: elementwise over leading axes, cells on the last one (numpy arrays, so the bench
    simulates thousands of pools in one call). `yes[..., k]` of the `labeled[..., k]` items of
    cell k are "yes"; `weights[..., k]` is cell k's share of the pool (summing to 1), counted on
    `judged` items (None: known exactly).

    estimate = sum_k w_k q_k, q_k = yes_k / labeled_k (a cell nobody labeled: the labeled mean)
    Each q_k gets its exact Clopper-Pearson interval [l_k, u_k] (a cell nobody labeled: [0, 1]),
    and the cells are combined by the method of variance estimates recovery (MOVER, Zou & Donner
    2008): low = estimate - sqrt(sum_k w_k^2 (q_k - l_k)^2 + z^2 v), high likewise with u_k - q_k,
    where v = sum_k w_k (q_k - estimate)^2 / judged is the spread from the cell shares being
    counted, not known. The estimate lies in [0, 1] and inside its interval, which is never
    empty: a Clopper-Pearson interval on a cell with labels has a positive width."""
    yes, labeled, weights = (np.asarray(a, dtype=float) for a in (yes, labeled, weights))
    z = z_value(confidence)
    total = labeled.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = np.where(total > 0, yes.sum(axis=-1, keepdims=True) / total, 0.5)
        q = np.where(labeled > 0, yes / np.maximum(labeled, 1), overall)
    low_k, high_k = clopper_pearson(yes, np.maximum(labeled, 1), confidence)
    low_k, high_k = np.where(labeled > 0, low_k, 0.0), np.where(labeled > 0, high_k, 1.0)
    estimate = (weights * q).sum(axis=-1)
    spread = 0.0 if judged is None else (weights * (q - estimate[..., None]) ** 2).sum(axis=-1) / judged
    low = estimate - np.sqrt((weights ** 2 * (q - low_k) ** 2).sum(axis=-1) + z * z * spread)
    high = estimate + np.sqrt((weights ** 2 * (high_k - q) ** 2).sum(axis=-1) + z * z * spread)
    return np.clip(estimate, 0, 1), np.clip(low, 0, 1), np.clip(high, 0, 1)


UNREADABLE = "unreadable"    # the judge's cell for items it gave no readable verdict
# Where the pool-wide interval holds, in the words the Judge page, the docs and the card use.
RATES_PROMISE = (
    "Judge + people: the pool cut into cells by the judge's verdict (yes, no, unsure, unreadable), each cell's "
    "rate from people's labels with its exact (Clopper-Pearson) interval, combined by the cells' sizes (MOVER). "
    "Its 95% interval covered the true rate at least 96% of the time in every simulated case "
    "(bench/calibration.py: 30-200 labels, true rates 2-98%, lenient, harsh, 90% and 99% accurate judges, "
    "10,000 judged items), whatever the judge's bias, provided the labeled items are a uniform random sample "
    "of the judged ones (checked) and people's majority answer is the truth. It is narrower than people alone "
    "when the judge is accurate (0.36-0.90 of the width at 200 labels) and may be a little wider when it is not. "
    "People only: the Label page's Wilson interval.")


def strata_rate(judge_unlabeled: Sequence[str | None], judge_labeled: Sequence[str | None],
                human_yes: Sequence[bool], *, unlabeled_strata: Sequence | None = None,
                labeled_strata: Sequence | None = None, strata_weights: Mapping | None = None,
                confidence: float = 0.95, paper_rate: float | None = None) -> PoolRate:
    """The pool's share of "yes" from the judge's verdict on every item and people's truth on a
    uniform random sample of them (`strata_interval`, method "by-verdict"). The cells are the
    judge's answers (yes / no / unsure; None: no readable verdict, its own cell, so unreadable
    items stay in the pool instead of being dropped). With a stratified study, `*_strata` give
    each item's study stratum and `strata_weights` each stratum's share of the pool (None: the
    strata's shares among the judged items); the cells are then (stratum, answer) and the
    labeled items must be a uniform sample within each stratum.

    Why not PPI++: its normal interval collapses when a labeled sample holds (almost) no "no" or
    no disagreement, and covers 10-90% of the time at 30-100 labels and a 2-5% rate; this one
    covers at least 95% at every cell of bench/calibration.py's grid (n 30-200, rates 2-98%,
    four judges) and is narrower than people alone when the judge is accurate."""
    if len(judge_labeled) != len(human_yes):
        raise ValueError(f"{len(judge_labeled)} judge verdicts but {len(human_yes)} human truths")
    n_lab, n_unl = len(judge_labeled), len(judge_unlabeled)
    if n_lab < 1 or n_unl < 1:
        raise ValueError(f"a pool-wide rate needs at least one labeled and one other judged item "
                         f"(got {n_lab} and {n_unl})")
    unlabeled_strata = [None] * n_unl if unlabeled_strata is None else list(unlabeled_strata)
    labeled_strata = [None] * n_lab if labeled_strata is None else list(labeled_strata)

    def cell(stratum, verdict):
        return stratum, UNREADABLE if verdict is None else verdict

    judged = Counter(cell(s, v) for s, v in zip(unlabeled_strata, judge_unlabeled))
    labels = Counter(cell(s, v) for s, v in zip(labeled_strata, judge_labeled))
    judged.update(labels)
    yes = Counter(cell(s, v) for s, v, h in zip(labeled_strata, judge_labeled, human_yes) if h)
    cells = sorted(judged, key=repr)
    total = sum(judged.values())
    if strata_weights is None:
        weights = [judged[c] / total for c in cells]
    else:
        missing = {s for s, _ in cells} - set(strata_weights)
        if missing:
            raise ValueError(f"no weight for the stratum or strata {sorted(map(repr, missing))}")
        share = sum(float(strata_weights[s]) for s in {s for s, _ in cells})
        in_stratum = Counter()
        for (s, _), count in judged.items():
            in_stratum[s] += count
        weights = [float(strata_weights[c[0]]) / share * judged[c] / in_stratum[c[0]] for c in cells]
    estimate, low, high = strata_interval([yes[c] for c in cells], [labels[c] for c in cells], weights,
                                          judged=total, confidence=confidence)
    hits = int(sum(bool(h) for h in human_yes))
    h_low, h_high = wilson_interval(hits, n_lab, confidence)
    unreadable = sum(v is None for v in judge_unlabeled) + sum(v is None for v in judge_labeled)
    return PoolRate(float(estimate), float(low), float(high), n_lab, n_unl, STRATA, hits / n_lab, h_low, h_high,
                    float(max(estimate - low, high - estimate) / z_value(confidence)), None, confidence,
                    paper_rate, unreadable)


def pool_rate(judge_unlabeled: Sequence[str | None], judge_labeled: Sequence[str | None],
              human_labels: Sequence[Sequence[str | None]], *, question: str | None = None,
              method: str = DEFAULT_METHOD, confidence: float = 0.95, unlabeled_strata: Sequence | None = None,
              labeled_strata: Sequence | None = None, strata_weights: Mapping | None = None) -> PoolRate:
    """The pool's share of "yes" to one question, with verdicts and labels as words.

    The human truth of a labeled item is `model.majority` of its labels and counts 1 when "yes",
    else 0 (split and unsure are not-yes, the quality study's rule), so the human-only interval
    is the Label page's; a labeled item without a label is an error (the caller keeps only
    labeled ones). By verdict (the default, `strata_rate`), None is an unreadable verdict and
    its own cell; for "ppi" / "ppi++" the judge counts 1 when "yes" (no / unsure: 0) and None
    items are dropped (from the unlabeled set, and from the labeled pairs). `paper_rate` comes
    from `model.PAPER_RATES[question]`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if len(judge_labeled) != len(human_labels):
        raise ValueError(f"{len(judge_labeled)} judge verdicts but {len(human_labels)} labeled items")
    paper = PAPER_RATES.get(question) if question else None
    if method == STRATA:
        if any(not len(labels) for labels in human_labels):
            raise ValueError("every labeled item needs at least one label")
        return strata_rate(judge_unlabeled, judge_labeled, [human_truth(labels) == YES for labels in human_labels],
                           unlabeled_strata=unlabeled_strata, labeled_strata=labeled_strata,
                           strata_weights=strata_weights, confidence=confidence, paper_rate=paper)
    f_big = [v == YES for v in judge_unlabeled if v is not None]
    pairs = [(v == YES, human_truth(labels) == YES) for v, labels in zip(judge_labeled, human_labels)
             if v is not None and len(labels)]
    return ppi_mean(f_big, [f for f, _ in pairs], [y for _, y in pairs], method=method,
                    confidence=confidence, paper_rate=paper)


# ---------------------------------------------------------------------------
# 3. Agreement on ordinal ratings (A-D)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    value: float | None
    method: str              # "weighted kappa (linear)", "Krippendorff's alpha (ordinal)", ...
    items: int               # items the statistic is computed over
    ratings: int             # ratings used (two per item for kappa; pairable values for alpha)
    why_undefined: str | None = None


def _index(value: str, categories: Sequence[str]) -> int:
    try:
        return categories.index(value)
    except ValueError:
        raise ValueError(f"rating {value!r} is not one of {tuple(categories)}") from None


def weighted_kappa(pairs: Sequence[tuple[str, str]], *, weights: str = "linear",
                   categories: Sequence[str] = RATINGS) -> Agreement:
    """Cohen's weighted kappa for two raters over ordered `categories` (best first or last, as
    long as the order is the scale's). Disagreement weights: |i - j| / (k - 1) (linear) or
    ((i - j) / (k - 1))^2 (quadratic); kappa_w = 1 - sum w_ij p_ij / sum w_ij r_i c_j."""
    if weights not in KAPPA_WEIGHTS:
        raise ValueError(f"weights must be one of {KAPPA_WEIGHTS}, not {weights!r}")
    categories = list(categories)
    k = len(categories)
    method = f"weighted kappa ({weights})"
    if k < 2:
        raise ValueError("weighted kappa needs at least two categories")
    n = len(pairs)
    if n == 0:
        return Agreement(None, method, 0, 0, "no item was rated by both raters")
    table = np.zeros((k, k))
    for a, b in pairs:
        table[_index(a, categories), _index(b, categories)] += 1
    p = table / n
    i, j = np.indices((k, k))
    w = np.abs(i - j) / (k - 1)
    if weights == "quadratic":
        w = w ** 2
    expected = float((w * np.outer(p.sum(axis=1), p.sum(axis=0))).sum())
    if expected < 1e-12:
        return Agreement(None, method, n, 2 * n, "both raters gave one and the same rating to every "
                         "item: there is no disagreement to expect by chance, so kappa is undefined")
    return Agreement(1 - float((w * p).sum()) / expected, method, n, 2 * n)


def krippendorff_alpha(units: Sequence[Sequence[str | None]], *, metric: str = "ordinal",
                       categories: Sequence[str] = RATINGS) -> Agreement:
    """Krippendorff's alpha for any number of raters; `units[u]` holds the ratings unit u got
    (None or a missing entry: not rated). Units with fewer than two ratings are not pairable
    and are left out.

    Coincidences: each ordered pair of ratings (c, k) from two different raters of a unit with
    m ratings adds 1 / (m - 1) to o_ck; n_c = sum_k o_ck, n = sum_c n_c.
    alpha = 1 - (n - 1) sum o_ck d_ck / sum n_c n_k d_ck, with d_ck:
      nominal  0 if c == k else 1
      interval (c - k)^2 on the category indices (equally spaced)
      ordinal  (sum_{g from c to k} n_g - (n_c + n_k) / 2)^2
    The ordinal distance depends on how often each category was used; it is proportional to the
    interval one (so alpha is equal) only when every category was used equally often."""
    if metric not in ALPHA_METRICS:
        raise ValueError(f"metric must be one of {ALPHA_METRICS}, not {metric!r}")
    categories = list(categories)
    k = len(categories)
    method = f"Krippendorff's alpha ({metric})"
    coincidences = np.zeros((k, k))
    items = 0
    for unit in units:
        values = [_index(v, categories) for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        items += 1
        counts = np.bincount(values, minlength=k).astype(float)
        # Ordered pairs from different raters: n_c n_k off the diagonal, n_c (n_c - 1) on it.
        coincidences += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    marginals = coincidences.sum(axis=1)
    n = float(marginals.sum())
    if items == 0:
        return Agreement(None, method, 0, 0, "no unit was rated by two raters or more")
    i, j = np.indices((k, k))
    if metric == "nominal":
        delta = (i != j).astype(float)
    elif metric == "interval":
        delta = (i - j).astype(float) ** 2
    else:
        cumulative = np.concatenate([[0.0], np.cumsum(marginals)])
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        delta = (cumulative[hi + 1] - cumulative[lo] - (marginals[i] + marginals[j]) / 2) ** 2
    expected = float((np.outer(marginals, marginals) * delta).sum())
    if expected < 1e-12:
        return Agreement(None, method, items, int(round(n)), "every rating was the same: there is no "
                         "disagreement to expect by chance, so alpha is undefined")
    observed = float((coincidences * delta).sum())
    return Agreement(1 - (n - 1) * observed / expected, method, items, int(round(n)))


def unit_ratings(ratings: Mapping[str, Mapping[object, str]]) -> list[list[str | None]]:
    """Rater -> {item -> rating} as `krippendorff_alpha`'s units (one list per item, one entry
    per rater, None where that rater did not rate the item), items in first-seen order."""
    raters = list(ratings)
    items: dict[object, None] = {}
    for per_item in ratings.values():
        items.update(dict.fromkeys(per_item))
    return [[ratings[r].get(item) for r in raters] for item in items]



def rates_frame(rates: Mapping[str, PoolRate], labels: Mapping[str, str]) -> pd.DataFrame:
    """Pool-wide rates as rows for a chart or a table: per measure, one row for the judge with
    people (PPI) and one for people alone, each with its interval, the paper's rate and counts
    (columns measure, label, group, share, low, high, yes, n, paper)."""
    rows = []
    for measure, rate in rates.items():
        common = {"measure": measure, "label": labels.get(measure, measure), "paper": rate.paper_rate}
        rows.append({**common, "group": f"judge + people ({rate.method})", "share": rate.estimate,
                     "low": rate.low, "high": rate.high, "n": rate.n_human + rate.n_judge,
                     "yes": round(rate.estimate * (rate.n_human + rate.n_judge))})
        if rate.human_estimate is not None:
            rows.append({**common, "group": "people only", "share": rate.human_estimate, "low": rate.human_low,
                         "high": rate.human_high, "n": rate.n_human,
                         "yes": round(rate.human_estimate * rate.n_human)})
    return pd.DataFrame(rows)
