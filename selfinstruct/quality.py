"""The quality study: sampling, rates with confidence intervals, agreement, exports.

The paper (Wang et al. 2023, section 3) drew 200 generated instructions, took one random
instance of each, and asked three yes/no questions. Its answers: valid task 92%, appropriate
input 79%, acceptable output 58%, all three 54%. A study here does the same on your own pool,
with any number of annotators, "unsure" as a third answer, 95% Wilson intervals, and
Cohen's / Fleiss' kappa between annotators.

Rules, in one place:
- Sampling (`draw_sample`): the eligible candidates are the accepted ones with at least one
  kept instance, in candidate id order. One `random.Random(seed)` draws the instructions and
  then, in sample order, one kept instance of each, so the same pool, seed and filters give the
  same sample. When fewer are eligible than asked for, every eligible one is taken.
- Stratified sampling gives each stratum (a round number, or classification / other /
  not yet classified) a share of the sample proportional to its size: each gets the whole part
  of `size * stratum / eligible`, and the units left over go to the largest fractional parts
  (ties: the larger stratum, then the stratum key in sorted order). Each stratum is sampled on
  its own, and the whole sample is then shuffled so the labeling order mixes strata.
- Rates: "unsure" counts as not-yes. "All valid" means three "yes". With several annotators,
  the study's answer to a question for an item is given by the majority rule of
  `selfinstruct.model` (more than half of its labels; unanswered counts as "unsure"); without
  a majority it is "split", which counts as not-yes. An item is all-valid when its three
  majority answers are "yes".
- A team (overlap k, `create_study(overlap=)`): each item should get k labels; each annotator
  labels from their own queue (store/quality.py). Agreement as it accumulates
  (`overlap_agreement`) is Fleiss' kappa over the items that have k labels, each item's first k
  annotators by name, so it does not need the same people on every item.
- Against the paper (`paper_verdict`, `compare_with_paper`): "above" / "below" when the paper's
  rate lies outside the study's 95% Wilson interval; "consistent" when it lies inside an interval
  at most 20 points wide; otherwise, or with fewer than 10 labeled items, "too small" to tell.
- Agreement: Cohen's kappa for exactly two annotators over the items both labeled; Fleiss'
  kappa for three or more over the items all of them labeled. Categories: yes / no / unsure
  (all-valid: yes / no). Kappa is undefined (None) when there is no such item, or when the
  agreement expected by chance is already 1: every answer in the set is the same single
  category, so there is nothing to agree beyond chance.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

import pandas as pd

from .calibration import wilson_interval
from .model import (ALL_VALID, ANSWERS, LABEL_LEASE_S, MAX_OVERLAP, MEASURE_LABELS, MEASURES, NO, PAPER_RATES,
                    QUESTION_TEXT, QUESTIONS, UNSURE, YES, majority)
from .store.quality import utcnow

Z95 = 1.959963984540054
STRATIFY = {None: "No strata", "round": "By round", "classification": "Classification vs not",
            "topic": "By topic (equal shares)"}
CLASS_GROUPS = {True: "classification", False: "other", None: "not classified"}
DEFAULT_SIZE = 200


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------
# Comparing a study's rate with the paper's (`compare_with_paper`).
MIN_COMPARE_ITEMS = 10        # fewer labeled items than this: too few to say anything
MAX_CONSISTENT_WIDTH = 0.20   # "consistent" needs an interval at most 20 points wide
PAPER_VERDICTS = ("no data", "too small", "consistent", "above", "below")


def paper_verdict(yes: int, n: int, paper_rate: float) -> str:
    """How a study's `yes` of `n` compares with the paper's rate (one of PAPER_VERDICTS).

    The 95% Wilson interval is the set of rates a score test at the 5% level does not reject,
    so the paper's rate outside it means this pool differs from it: "above" or "below" (the
    paper's figure is taken as a fixed reference, its own 200-item uncertainty aside). Inside
    it, the data merely fail to tell the two apart, which says something only when the interval
    is narrow: "consistent" needs it at most MAX_CONSISTENT_WIDTH wide, else "too small".
    Below MIN_COMPARE_ITEMS items every answer is "too small" (the interval's coverage is
    shaky there); no item at all is "no data"."""
    if n <= 0:
        return "no data"
    if n < MIN_COMPARE_ITEMS:
        return "too small"
    low, high = wilson_interval(yes, n)
    if paper_rate < low:
        return "above"
    if paper_rate > high:
        return "below"
    return "consistent" if high - low <= MAX_CONSISTENT_WIDTH else "too small"


def compare_with_paper(yes: int, n: int, paper_rate: float) -> str:
    """`paper_verdict` as the plain sentence a page shows under the study's interval."""
    verdict = paper_verdict(yes, n, paper_rate)
    if verdict == "no data":
        return f"No labeled item yet to compare with the paper's {paper_rate:.0%}."
    if n < MIN_COMPARE_ITEMS:
        return (f"Too small a sample to compare with the paper's {paper_rate:.0%}: {n} item(s) "
                f"labeled, at least {MIN_COMPARE_ITEMS} needed.")
    low, high = wilson_interval(yes, n)
    interval = f"{_percent(low, paper_rate)} to {_percent(high, paper_rate)}"
    if verdict == "above":
        return f"Above the paper's {paper_rate:.0%}: the whole interval ({interval}) lies higher."
    if verdict == "below":
        return f"Below the paper's {paper_rate:.0%}: the whole interval ({interval}) lies lower."
    if verdict == "consistent":
        return f"Consistent with the paper's {paper_rate:.0%}: it lies inside the interval ({interval})."
    return (f"Too small a sample to compare with the paper's {paper_rate:.0%}: the interval ({interval}) "
            f"includes it but is wider than {100 * MAX_CONSISTENT_WIDTH:.0f} percentage points; label "
            "more items to narrow it.")


def _percent(value: float, paper_rate: float) -> str:
    # Whole percents, unless rounding would make a bound read as the paper's figure.
    whole = f"{value:.0%}"
    return f"{value:.1%}" if whole == f"{paper_rate:.0%}" and abs(value - paper_rate) > 1e-12 else whole


@dataclass(frozen=True)
class Kappa:
    value: float | None
    method: str            # "Cohen" or "Fleiss"
    items: int             # items the statistic is computed over
    observed: float | None  # share of those items on which every rater agreed
    why_undefined: str | None = None


def _undefined_reason(counts: Counter) -> str:
    only = next(iter(counts))
    return (f"every answer was \"{only}\": agreement expected by chance is already 100%, so "
            "kappa is undefined")


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> Kappa:
    """Cohen's kappa for two raters; `pairs` holds both raters' answers per item."""
    n = len(pairs)
    if n == 0:
        return Kappa(None, "Cohen", 0, None, "no item was labeled by both annotators")
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in first) / (n * n)
    if 1 - expected < 1e-12:
        return Kappa(None, "Cohen", n, observed, _undefined_reason(first + second))
    return Kappa((observed - expected) / (1 - expected), "Cohen", n, observed)


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> Kappa:
    """Fleiss' kappa; `ratings` holds, per item, the answers of the same number m >= 2 of raters."""
    n = len(ratings)
    if n == 0:
        return Kappa(None, "Fleiss", 0, None, "no item was labeled by all of the annotators")
    m = len(ratings[0])
    if m < 2 or any(len(r) != m for r in ratings):
        raise ValueError("every item needs the answers of the same number (two or more) of raters")
    totals: Counter = Counter()
    agreement = 0.0
    unanimous = 0
    for answers in ratings:
        counts = Counter(answers)
        totals.update(counts)
        agreement += (sum(c * c for c in counts.values()) - m) / (m * (m - 1))
        unanimous += len(counts) == 1
    p_bar = agreement / n
    expected = sum((c / (n * m)) ** 2 for c in totals.values())
    if 1 - expected < 1e-12:
        return Kappa(None, "Fleiss", n, unanimous / n, _undefined_reason(totals))
    return Kappa((p_bar - expected) / (1 - expected), "Fleiss", n, unanimous / n)


def kappa_words(value: float | None) -> str:
    """A rough reading of kappa (the bands of Landis and Koch, 1977)."""
    if value is None:
        return "n/a"
    if abs(value) < 1e-9:
        return "chance level"
    if value < 0:
        return "worse than chance"
    for upper, words in ((0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if value <= upper:
            return words
    return "almost perfect"


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------
def stratum_of(candidate: Mapping, stratify: str | None) -> Any:
    if stratify == "round":
        return candidate.get("round")
    if stratify == "topic":
        return candidate.get("topic")       # attached by `with_topics` (None: not in the topics)
    if stratify == "classification":
        flag = candidate.get("is_classification")
        return CLASS_GROUPS[None if flag is None else bool(flag)]
    return None


def allocate(sizes: Mapping[Any, int], total: int) -> dict[Any, int]:
    """Split `total` over strata in proportion to their `sizes` (largest-remainder rounding;
    ties go to the larger stratum, then to the smaller key). Never more than a stratum holds."""
    population = sum(sizes.values())
    total = min(total, population)
    if population == 0 or total <= 0:
        return {key: 0 for key in sizes}
    exact = {key: total * size / population for key, size in sizes.items()}
    shares = {key: math.floor(value) for key, value in exact.items()}
    left = total - sum(shares.values())
    order = sorted(sizes, key=lambda k: (-(exact[k] - shares[k]), -sizes[k], _sort_key(k)))
    for key in order[:left]:
        shares[key] += 1
    return shares


def allocate_equal(sizes: Mapping[Any, int], total: int) -> dict[Any, int]:
    """Split `total` over strata as evenly as they allow (a topic-stratified study: thin topics
    get as many labels as thick ones): each gets the same share, one more for the first ones in
    key order when it does not divide, and what a stratum cannot hold goes to the others."""
    shares = {key: 0 for key in sizes}
    left = min(total, sum(sizes.values()))
    while left > 0:
        open_ = sorted((k for k in sizes if shares[k] < sizes[k]), key=_sort_key)
        each, extra = divmod(left, len(open_))
        for i, key in enumerate(open_):
            add = min(each + (1 if i < extra else 0), sizes[key] - shares[key])
            shares[key] += add
            left -= add
    return shares


def with_topics(pool, eligible: Sequence[Mapping], topic_set_id: int) -> list[dict]:
    """`eligible` rows with the topic of each candidate in a topic set (None: not in it)."""
    topic = pool.topics.topic_of_items(topic_set_id, "candidate", [r["candidate_id"] for r in eligible])
    return [{**row, "topic": topic.get(int(row["candidate_id"]))} for row in eligible]


def study_strata(pool, study: Mapping) -> dict[int, Any] | None:
    """candidate id -> stratum for a stratified study (None: not stratified), the way it was drawn."""
    cfg = study.get("config") or {}
    if not cfg.get("stratify"):
        return None
    rows = pool.quality.study_candidates()
    if cfg["stratify"] == "topic":
        rows = with_topics(pool, rows, int(cfg["topic_set_id"]))
    return {int(r["candidate_id"]): stratum_of(r, cfg["stratify"]) for r in rows}


def _sort_key(value: Any) -> tuple:
    return (value is None, str(type(value)), value if value is not None else 0)


@dataclass
class Sample:
    items: list[tuple[int, int]]        # (candidate id, instance id) in labeling order
    eligible: int
    requested: int
    allocation: dict = field(default_factory=dict)   # stratum -> (eligible, drawn)

    @property
    def short(self) -> bool:
        return len(self.items) < self.requested


def draw_sample(eligible: Sequence[Mapping], size: int, seed: int,
                stratify: str | None = None) -> Sample:
    """Draw `size` instructions from `eligible` (rows of `Pool.study_candidates`, in candidate
    id order) and one kept instance of each, reproducibly for `seed`."""
    if stratify not in STRATIFY:
        raise ValueError(f"stratify must be one of {list(STRATIFY)}, not {stratify!r}")
    if size < 1:
        raise ValueError("the sample size must be at least 1")
    rng = random.Random(int(seed))
    rows = list(eligible)
    if stratify is None:
        chosen = rng.sample(rows, min(size, len(rows)))
        allocation = {}
    else:
        groups: dict[Any, list] = defaultdict(list)
        for row in rows:
            groups[stratum_of(row, stratify)].append(row)
        keys = sorted(groups, key=_sort_key)
        shares = (allocate_equal if stratify == "topic" else allocate)({k: len(groups[k]) for k in keys}, size)
        chosen = []
        for key in keys:
            chosen.extend(rng.sample(groups[key], shares[key]))
        rng.shuffle(chosen)
        allocation = {k: (len(groups[k]), shares[k]) for k in keys}
    items = [(int(row["candidate_id"]), int(rng.choice(list(row["instance_ids"])))) for row in chosen]
    return Sample(items, len(rows), int(size), allocation)


@dataclass
class StudyCreated:
    study_id: int
    sample: Sample

    def message(self) -> str:
        drawn = len(self.sample.items)
        text = f"Drew {drawn} instruction(s), one instance each"
        if self.sample.short:
            text += (f": only {self.sample.eligible} accepted instruction(s) with a kept instance "
                     f"match the filters, fewer than the {self.sample.requested} asked for, so all "
                     "of them are in the study")
        return text + "."


def create_study(pool, name: str, *, size: int = DEFAULT_SIZE, seed: int,
                 run_ids: Sequence[int] | None = None, rounds: Sequence[int] | None = None,
                 stratify: str | None = None, actor: str = "user", overlap: int = 1,
                 judge_run: int | None = None, topic_set_id: int | None = None) -> StudyCreated:
    """Sample the pool and store the study. Raises ValueError when nothing is eligible.
    `judge_run`: draw from the items a pool judge run judged, each task with the instance it
    judged, so the study is a random sample of them (what `judge.pool_rates` needs)."""
    eligible = pool.quality.study_candidates(run_ids, rounds)
    if judge_run is not None:
        judged = {v["candidate_id"]: v["instance_id"] for v in pool.judge.verdicts(judge_run)}
        eligible = [{**row, "instance_ids": [judged[row["candidate_id"]]]} for row in eligible
                    if judged.get(row["candidate_id"]) in row["instance_ids"]]
    if not eligible:
        raise ValueError("No accepted instruction with a kept instance matches these filters.")
    if stratify == "topic":
        if topic_set_id is None:
            from .topics import current

            now = current(pool)
            if now.set is None or now.stale:
                raise ValueError("A study by topic needs the pool's topics as they are now: compute them on the "
                                 "Topics page (or with selfinstruct topics) first.")
            topic_set_id = int(now.set["id"])
        eligible = with_topics(pool, eligible, topic_set_id)
    sample = draw_sample(eligible, size, seed, stratify)
    config = {
        "runs": None if run_ids is None else sorted(int(r) for r in run_ids),
        "rounds": None if rounds is None else sorted(int(r) for r in rounds),
        "stratify": stratify, "requested": int(size), "eligible": sample.eligible,
        "allocation": [{"stratum": k, "eligible": e, "drawn": d} for k, (e, d) in sample.allocation.items()],
        "method": "accepted candidates with a kept instance, by candidate id; random.Random(seed): "
                  "instructions, then one instance each",
    }
    if judge_run is not None:
        config["judge_run"] = int(judge_run)
    if stratify == "topic":
        config["topic_set_id"] = int(topic_set_id)
    study_id = pool.quality.create_study(name, seed=seed, items=sample.items, config=config, actor=actor,
                                 overlap=int(overlap))
    return StudyCreated(study_id, sample)


def next_in_queue(queue_positions: Sequence[int], after: int | None = None) -> int | None:
    """Where an annotator goes next: the first position of their queue (study order) after
    `after`, else the first of the queue (items skipped earlier), else None (nothing left)."""
    if after is not None:
        later = [p for p in queue_positions if p > after]
        if later:
            return later[0]
    return queue_positions[0] if queue_positions else None


def claim_next(pool, study_id: int, annotator: str, after: int | None = None, *,
               now: datetime | None = None) -> int | None:
    """The position `annotator` is offered next (`next_in_queue` over their queue, where items
    on other people's screens do not count), held for them for LABEL_LEASE_S; None when nothing
    is free for them right now (see `nothing_free`)."""
    return pool.quality.claim_next(study_id, annotator, lambda queue: next_in_queue(queue, after),
                           seconds=LABEL_LEASE_S, now=now)


def nothing_free(progress: Mapping, overlap: int, *, now: datetime | None = None) -> str:
    """What an annotator with an empty queue is told: done, or waiting for items that are on
    other annotators' screens (and when the first of those leases ends)."""
    if progress.get("held"):
        until = progress["held_until"]
        minutes = max(1, math.ceil((until - (now or utcnow())).total_seconds() / 60))
        return (f"Nothing left for you right now: the {progress['held']} item(s) that still need a label are on "
                f"other annotators' screens. The first is free again at {until:%H:%M} UTC (in about {minutes} "
                "min) unless it is saved before; press U (First in your queue) then.")
    return ("Your queue is empty: every item carries your label or already has "
            + ("its label" if overlap == 1 else f"its {overlap} labels") + ". See the results.")


def describe_study(study: Mapping) -> str:
    """One line saying how a study was drawn."""
    cfg = study.get("config") or {}
    parts = [f"{study.get('items', study.get('sample_size'))} items", f"seed {study['seed']}"]
    parts.append("runs " + ", ".join(map(str, cfg["runs"])) if cfg.get("runs") else "all runs")
    parts.append("rounds " + ", ".join(map(str, cfg["rounds"])) if cfg.get("rounds") else "all rounds")
    if cfg.get("stratify"):
        parts.append(STRATIFY[cfg["stratify"]].lower())
    if cfg.get("stratify") == "topic":
        parts.append(WEIGHTED_NOTE)
    if int(study.get("overlap") or 1) > 1:
        parts.append(f"{study['overlap']} annotators per item")
    if cfg.get("requested") and cfg.get("eligible", 0) < cfg["requested"]:
        parts.append(f"{cfg['requested']} asked for, {cfg['eligible']} eligible")
    return " · ".join(parts)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------
def item_answers(labels: Sequence[Mapping], annotator: str | None = None) -> list[dict]:
    """One row per labeled item: its round, classification group and the study's answer to
    each measure: `annotator`'s own, or (None) the majority of everyone who labeled it."""
    by_item: dict[int, list[Mapping]] = defaultdict(list)
    for row in labels:
        if annotator is None or row["annotator"] == annotator:
            by_item[row["item_id"]].append(row)
    items = []
    for item_id, rows in by_item.items():
        first = rows[0]
        answer = {q: majority([r[q] for r in rows]) for q in QUESTIONS}
        answer[ALL_VALID] = YES if all(answer[q] == YES for q in QUESTIONS) else NO
        flag = first["is_classification"]
        items.append({"item_id": item_id, "candidate_id": first.get("candidate_id"),
                      "position": first["position"], "round": first["round"],
                      "group": CLASS_GROUPS[None if flag is None else bool(flag)],
                      "labels": len(rows), **answer})
    items.sort(key=lambda r: r["position"])
    return items


def rates(items: Sequence[Mapping], by: str | None = None) -> pd.DataFrame:
    """Share of "yes" per measure (and per `by` group: "round" or "group"), with the 95% Wilson
    interval, the counts of each answer, and the paper's figure."""
    groups: dict[Any, list[Mapping]] = defaultdict(list)
    for item in items:
        groups[item[by] if by else "all"].append(item)
    rows = []
    for key in sorted(groups, key=_sort_key):
        members = groups[key]
        n = len(members)
        for measure in MEASURES:
            counts = Counter(m[measure] for m in members)
            yes = counts["yes"]
            interval = wilson_interval(yes, n)
            rows.append({
                "group": key if by else "all", "measure": measure, "label": MEASURE_LABELS[measure],
                "n": n, "yes": yes, "no": counts["no"], "unsure": counts["unsure"], "split": counts["split"],
                "share": yes / n if n else None,
                "low": interval[0] if interval else None, "high": interval[1] if interval else None,
                "paper": PAPER_RATES[measure],
            })
    columns = ["group", "measure", "label", "n", "yes", "no", "unsure", "split", "share", "low", "high", "paper"]
    return pd.DataFrame(rows, columns=columns)


def agreement(labels: Sequence[Mapping], annotators: Sequence[str]) -> list[dict]:
    """Kappa per measure between `annotators`: Cohen's for two (items both labeled), Fleiss'
    for three or more (items all labeled). Empty when fewer than two annotators."""
    annotators = sorted(set(annotators))
    if len(annotators) < 2:
        return []
    by_item: dict[int, dict[str, Mapping]] = defaultdict(dict)
    for row in labels:
        if row["annotator"] in annotators:
            by_item[row["item_id"]][row["annotator"]] = row
    shared = [rows for _, rows in sorted(by_item.items()) if len(rows) == len(annotators)]
    results = []
    for measure in MEASURES:
        ratings = [[_answer(rows[a], measure) for a in annotators] for rows in shared]
        if len(annotators) == 2:
            kappa = cohen_kappa([(r[0], r[1]) for r in ratings])
        else:
            kappa = fleiss_kappa(ratings)
        results.append({"measure": measure, "label": MEASURE_LABELS[measure], "method": kappa.method,
                        "items": kappa.items, "observed": kappa.observed, "kappa": kappa.value,
                        "reading": kappa_words(kappa.value), "why_undefined": kappa.why_undefined})
    return results


def overlap_agreement(labels: Sequence[Mapping], overlap: int) -> list[dict]:
    """Agreement so far in a study where each item gets `overlap` (k >= 2) labels from
    whichever annotators had it in their queue: Fleiss' kappa per measure over the items with
    k labels or more, using each item's first k annotators by name (rows as `agreement`)."""
    if overlap < 2:
        return []
    by_item: dict[int, dict[str, Mapping]] = defaultdict(dict)
    for row in labels:
        by_item[row["item_id"]][row["annotator"]] = row
    complete = [[rows[a] for a in sorted(rows)[:overlap]] for _, rows in sorted(by_item.items())
                if len(rows) >= overlap]
    results = []
    for measure in MEASURES:
        kappa = fleiss_kappa([[_answer(r, measure) for r in rows] for rows in complete])
        results.append({"measure": measure, "label": MEASURE_LABELS[measure], "method": kappa.method,
                        "items": kappa.items, "observed": kappa.observed, "kappa": kappa.value,
                        "reading": kappa_words(kappa.value), "why_undefined": kappa.why_undefined})
    return results


def _answer(row: Mapping, measure: str) -> str:
    if measure == ALL_VALID:
        return YES if all(row[q] == YES for q in QUESTIONS) else NO
    return row[measure] or UNSURE


def disagreements(labels: Sequence[Mapping], annotators: Sequence[str] | None = None) -> list[dict]:
    """Items on which the annotators who labeled them (two or more, among `annotators`) gave
    different answers to any question: per question, who said what ("" where they agree)."""
    chosen = set(annotators) if annotators is not None else None
    by_item: dict[int, list[Mapping]] = defaultdict(list)
    for row in labels:
        if chosen is None or row["annotator"] in chosen:
            by_item[row["item_id"]].append(row)
    found = []
    for item_id, rows in by_item.items():
        if len(rows) < 2:
            continue
        entry = {"item_id": item_id, "position": rows[0]["position"], "item": rows[0]["position"] + 1}
        differs = False
        for q in QUESTIONS:
            answers = {r["annotator"]: r[q] or UNSURE for r in rows}
            if len(set(answers.values())) > 1:
                differs = True
                entry[q] = ", ".join(f"{who}: {a}" for who, a in sorted(answers.items()))
            else:
                entry[q] = ""
        if differs:
            found.append(entry)
    found.sort(key=lambda r: r["position"])
    return found


@dataclass
class StudyResults:
    items: int                      # items in the study
    labeled: int                    # items with at least one label from the chosen annotator(s)
    annotators: list[str]
    overall: pd.DataFrame
    by_round: pd.DataFrame
    by_group: pd.DataFrame
    answers: list[dict]
    note: str | None = None         # how `overall` was computed, when not a plain share (WEIGHTED_NOTE)


WEIGHTED_NOTE = ("rates weighted by topic size (each topic got an equal share of the sample, so a plain "
                 "share would over-count thin topics)")


def _korn_graubard(share: float, n_eff: float, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson's interval at an effective sample size (Korn and Graubard, 1998): beta
    quantiles at share * n_eff successes of n_eff, which need not be whole numbers."""
    from scipy.stats import beta

    x, alpha = share * n_eff, 1 - confidence
    low = 0.0 if x <= 0 else float(beta.ppf(alpha / 2, x, n_eff - x + 1))
    high = 1.0 if x >= n_eff else float(beta.ppf(1 - alpha / 2, x + 1, n_eff - x))
    return low, high


def weighted_rates(items: Sequence[Mapping], strata: Mapping[int, Any], sizes: Mapping[Any, int]) -> pd.DataFrame:
    """`rates` of a stratified study whose strata were not sampled in proportion to their size:
    per measure, the share of yes in each stratum weighed by the stratum's size when the study was
    drawn (`sizes`; strata with no labeled item are left out and the others' weights scaled up),
    sum W_h p_h. Its 95% interval is Clopper-Pearson's at the effective sample size (Korn and
    Graubard's interval for survey estimates) q(1-q)/var (at most
    the items labeled), with q = sum W_h q_h, var = sum W_h^2 q_h(1-q_h)/n_h (1 - n_h/N_h) and
    q_h = (yes_h + 1/2)/(n_h + 1), so a stratum whose few items all agree still counts as
    uncertain (coverage checked by simulation in tests/test_topics.py). The counts columns stay the labeled items' own."""
    groups: dict[Any, list[Mapping]] = defaultdict(list)
    for item in items:
        groups[strata.get(int(item["candidate_id"]))].append(item)
    total = sum(sizes.get(k, 0) for k in groups)
    rows = []
    n = len(items)
    for measure in MEASURES:
        counts = Counter(i[measure] for i in items)
        share = var = shrunk = None
        if total:
            share = var = shrunk = 0.0
            for key, members in groups.items():
                big, small = sizes.get(key, 0), len(members)
                if not big:
                    continue
                w, yes_h = big / total, sum(1 for m in members if m[measure] == YES)
                q = (yes_h + 0.5) / (small + 1)
                share += w * yes_h / small
                shrunk += w * q
                var += w * w * q * (1 - q) / small * max(0.0, 1 - small / big)
        low = high = None
        if share is not None and n:
            n_eff = max(1.0, min(float(n), shrunk * (1 - shrunk) / var) if var else float(n))
            low, high = _korn_graubard(share, n_eff)
        rows.append({"group": "all", "measure": measure, "label": MEASURE_LABELS[measure], "n": n,
                     "yes": counts["yes"], "no": counts["no"], "unsure": counts["unsure"], "split": counts["split"],
                     "share": share, "low": low, "high": high, "paper": PAPER_RATES[measure]})
    columns = ["group", "measure", "label", "n", "yes", "no", "unsure", "split", "share", "low", "high", "paper"]
    return pd.DataFrame(rows, columns=columns)


def study_results(pool, study_id: int, annotator: str | None = None,
                  labels: Sequence[Mapping] | None = None) -> StudyResults:
    """Rates for a study: overall, by round and by classification vs not; `annotator` None
    uses the majority answer of everyone who labeled an item."""
    study = pool.quality.study(study_id)
    if study is None:
        raise ValueError(f"There is no study {study_id}.")
    labels = pool.quality.study_labels(study_id) if labels is None else labels
    answers = item_answers(labels, annotator)
    cfg = study.get("config") or {}
    overall, note = rates(answers), None
    if cfg.get("stratify") == "topic" and answers:
        sizes = {a["stratum"]: int(a["eligible"]) for a in cfg.get("allocation") or []}
        overall, note = weighted_rates(answers, study_strata(pool, study), sizes), WEIGHTED_NOTE
    return StudyResults(
        items=int(study["items"]), labeled=len(answers),
        annotators=sorted({r["annotator"] for r in labels}),
        overall=overall, by_round=rates(answers, "round"), by_group=rates(answers, "group"),
        answers=answers, note=note)


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------
STUDY_COLUMNS = ["item", "candidate_id", "instance_id", "run_id", "round", "is_classification",
                 "instruction", "input", "output", "annotator", "valid_task", "input_ok",
                 "output_ok", "note", "labeled_at"]


def study_rows(pool, study_id: int) -> list[dict]:
    """One row per (item, annotator), items in labeling order; an item nobody labeled appears
    once with empty answers. Columns: STUDY_COLUMNS."""
    rows = pool.quality.study_export_rows(study_id)
    out = []
    for row in rows:
        stamp = row.get("labeled_at")
        out.append({**{c: row.get(c) for c in STUDY_COLUMNS},
                    "labeled_at": stamp.isoformat(sep=" ", timespec="seconds") if stamp else None})
    return out


def study_csv(pool, study_id: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=STUDY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(study_rows(pool, study_id))
    return buffer.getvalue().encode("utf-8")


def study_json(pool, study_id: int) -> bytes:
    """The study, its annotators and its items, each item with its labels."""
    study = pool.quality.study(study_id)
    if study is None:
        raise ValueError(f"There is no study {study_id}.")
    items: dict[int, dict] = {}
    for row in study_rows(pool, study_id):
        item = items.setdefault(row["item"], {
            **{c: row[c] for c in STUDY_COLUMNS[:9]}, "labels": []})
        if row["annotator"] is not None:
            item["labels"].append({c: row[c] for c in STUDY_COLUMNS[9:]})
    annotators = [{"name": a["annotator"], "labels": a["labels"],
                   "first_label": _iso(a["first_label"]), "last_label": _iso(a["last_label"])}
                  for a in pool.quality.study_annotators(study_id)]
    document = {
        "study": {"id": study["id"], "name": study["name"], "seed": study["seed"],
                  "sample_size": study["sample_size"], "created_at": _iso(study["created_at"]),
                  "config": study["config"], "questions": QUESTION_TEXT,
                  "paper_rates": PAPER_RATES},
        "annotators": annotators,
        "items": list(items.values()),
    }
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")


def _iso(value: Any) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value is not None else None


__all__ = ["ANSWERS", "DEFAULT_SIZE", "LABEL_LEASE_S", "MAX_OVERLAP", "MEASURES", "MEASURE_LABELS", "PAPER_RATES", "QUESTIONS",
           "QUESTION_TEXT", "STRATIFY", "Z95", "Kappa", "Sample", "StudyCreated", "StudyResults",
           "MAX_CONSISTENT_WIDTH", "MIN_COMPARE_ITEMS", "PAPER_VERDICTS",
           "agreement", "allocate", "allocate_equal", "study_strata", "weighted_rates", "with_topics", "WEIGHTED_NOTE", "claim_next", "cohen_kappa", "compare_with_paper", "create_study", "describe_study", "disagreements",
           "draw_sample", "fleiss_kappa", "item_answers", "kappa_words", "next_in_queue", "nothing_free", "overlap_agreement", "paper_verdict",
           "rates", "study_csv",
           "study_json", "study_results", "study_rows", "wilson_interval"]
