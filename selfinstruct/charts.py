"""Every chart the product draws, each defined once.

A chart function takes plain data (DataFrames, dicts, numbers) and returns an Altair
chart; nothing here knows about Streamlit. The pages show the charts with
``st.altair_chart``; the dataset card renders the same definitions to SVG files
(`to_svg`, through vl-convert).

==========================  ================================================  ======================
function                    what it shows                                     used by
==========================  ================================================  ======================
`rouge_histogram`           ROUGE-L histogram with the threshold line(s):     the three below
                            the one definition of that chart
`round_rouge`               a round's candidates by status                    Generate
`rouge_vs_seeds`            generated instructions against the seeds          Pool, dataset card
`rouge_whatif`              reviewed candidates by outcome, the thresholds    Rejects
                            used and a what-if threshold
`rejections_by_round`       rejected candidates per round by reason           Generate
`pool_growth`               pool size after each round                        Generate
`verb_sunburst`             leading verbs and their first nouns, two rings    Pool
`verb_bars`                 the same as bars with the nouns written out       dataset card
`length_histograms`         word counts of instructions, inputs, outputs      Pool, dataset card
`keyword_bars`              keywords that reject the most                     Rejects
`yes_rates`                 a study's share of yes per question, the paper's  Label
`yes_rates_by_group`        the same per round or per task kind               Label
`eval_levels`               the paper's A-D stacked bars per model, with      Evaluate
                            intervals of "at least A / B / C"
`topic_map`                 the pool's items on a 2-D map by topic, status,   Topics, dataset card
                            origin, labeled invalid or judge "no"
`topic_sizes`               items per topic, seeds and generated              dataset card
==========================  ================================================  ======================

Legends never truncate their labels (`labelLimit=0`); axes that show shares as
percentages say "%" in their title.
"""
from __future__ import annotations

import functools
import json
import math
from typing import Iterable, Sequence

import altair as alt
import pandas as pd

from .explore import NONE, rouge_histogram as rouge_bins

__all__ = [
    "rouge_histogram", "round_rouge", "rouge_vs_seeds", "rouge_whatif", "rejections_by_round",
    "pool_growth", "verb_sunburst", "verb_bars", "length_histograms", "keyword_bars", "yes_rates",
    "yes_rates_by_group", "eval_levels", "topic_map", "topic_sizes", "TOPIC_COLORINGS", "to_svg", "LENGTH_FIELDS", "STUDY", "PAPER",
]

BAR = "#4c78a8"
THRESHOLD = "#c0392b"
WHAT_IF = "#333333"
OUTCOME_COLORS = {"accepted": "#4c9f70", "rescued": "#4c78a8", "rejected": "#e45756"}
STUDY, PAPER = "This study", "Paper (Wang et al. 2023)"
LENGTH_FIELDS = {"instruction": "Instruction", "input": "Input (non-empty)", "output": "Output"}
_OTHER_COLORS = ("#f58518", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac", "#eeca3b")


def count_axis(**kwargs) -> alt.Axis:
    """The axis of a count: whole numbers only (one candidate is "1", never 0.0-1.0 in tenths)."""
    return alt.Axis(tickMinStep=1, format="d", **kwargs)


def round_axis(**kwargs) -> alt.Axis:
    """The axis of round numbers: labels upright (Vega-Lite turns an ordinal axis's labels 90
    degrees)."""
    return alt.Axis(labelAngle=0, **kwargs)


def _legend(**kwargs) -> alt.Legend:
    """A legend that shows its labels whole."""
    return alt.Legend(labelLimit=0, titleLimit=0, **kwargs)


def _outcome_scale(values: Iterable[str]) -> alt.Scale:
    """Fixed colours for accepted/rescued/rejected, others after them."""
    present = list(dict.fromkeys(str(v) for v in values))
    domain = [k for k in OUTCOME_COLORS if k in present] + [v for v in present if v not in OUTCOME_COLORS]
    others = iter(_OTHER_COLORS * (len(domain) // len(_OTHER_COLORS) + 1))
    return alt.Scale(domain=domain, range=[OUTCOME_COLORS.get(v) or next(others) for v in domain])


# ---------------------------------------------------------------------------- ROUGE-L
def rouge_histogram(hist: pd.DataFrame, thresholds: float | Sequence[float] = (), *,
                    what_if: float | None = None, x_title: str = "ROUGE-L F-measure",
                    y_title: str = "instructions", group: str | None = None,
                    height: int = 260) -> alt.LayerChart:
    """ROUGE-L counts per bin from 0 to 1 with a dashed line at each novelty
    threshold (and a solid one at `what_if`).

    `hist`: columns bin_start, bin_end, n (as `explore.rouge_histogram` gives),
    and `group` when the bars are stacked by it (an outcome or status)."""
    if isinstance(thresholds, (int, float)):
        thresholds = [thresholds]
    x = alt.X("bin_start:Q", bin="binned", title=x_title, scale=alt.Scale(domain=[0, 1]))
    if group:
        bars = alt.Chart(hist).mark_bar().encode(
            x=x, x2="bin_end:Q", y=alt.Y("sum(n):Q", title=y_title, stack=True, axis=count_axis()),
            color=alt.Color(f"{group}:N", title=None, scale=_outcome_scale(hist[group]),
                            legend=_legend(orient="top")),
            tooltip=[alt.Tooltip(f"{group}:N"), alt.Tooltip("bin_start:Q", title="from"),
                     alt.Tooltip("bin_end:Q", title="to"), alt.Tooltip("n:Q", title=y_title)])
    else:
        bars = alt.Chart(hist).mark_bar(color=BAR).encode(
            x=x, x2="bin_end:Q", y=alt.Y("n:Q", title=y_title, axis=count_axis()),
            tooltip=[alt.Tooltip("bin_start:Q", title="from"), alt.Tooltip("bin_end:Q", title="to"),
                     alt.Tooltip("n:Q", title=y_title)])
    lines = [{"at": float(t), "line": f"novelty threshold {float(t):g}", "dash": "threshold"}
             for t in dict.fromkeys(float(t) for t in thresholds)]
    if what_if is not None:
        lines.append({"at": float(what_if), "line": f"what-if {float(what_if):g}", "dash": "what-if"})
    if not lines:
        return alt.layer(bars).properties(height=height)
    names = [line["line"] for line in lines]
    rule = alt.Chart(pd.DataFrame(lines)).mark_rule(strokeWidth=2).encode(
        x="at:Q",
        color=alt.Color("line:N", title=None, legend=_legend(orient="top"), scale=alt.Scale(
            domain=names, range=[WHAT_IF if line["dash"] == "what-if" else THRESHOLD for line in lines])),
        strokeDash=alt.StrokeDash("line:N", title=None, legend=_legend(orient="top"), scale=alt.Scale(
            domain=names, range=[[1, 0] if line["dash"] == "what-if" else [5, 3] for line in lines])),
        tooltip=[alt.Tooltip("line:N", title="line"), alt.Tooltip("at:Q", title="at")])
    return alt.layer(bars, rule).resolve_scale(color="independent", strokeDash="independent").properties(
        height=height)


def _binned(scores: pd.DataFrame, column: str, by: str) -> pd.DataFrame:
    """Raw scores binned as `explore.rouge_histogram` bins them, one set of bins per `by` value."""
    parts = []
    for key, part in scores.groupby(by, sort=False):
        frame = rouge_bins(part[column].fillna(0.0).to_numpy(dtype=float))
        parts.append(frame[frame["n"] > 0].assign(**{by: str(key)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"bin_start": [], "bin_end": [], "n": [], by: []})


def round_rouge(scores: pd.DataFrame, threshold: float) -> alt.LayerChart:
    """One round's candidates (columns max_rouge, status) by their highest ROUGE-L
    against the pool, stacked by status."""
    return rouge_histogram(_binned(scores, "max_rouge", "status"), threshold, group="status",
                           x_title="ROUGE-L with the most similar pool instruction", y_title="candidates")


def rouge_vs_seeds(hist: pd.DataFrame, threshold: float) -> alt.LayerChart:
    """Generated instructions by their ROUGE-L against the most similar seed."""
    return rouge_histogram(hist, threshold, x_title="ROUGE-L F-measure against the most similar seed",
                           y_title="instructions")


def rouge_whatif(hist: pd.DataFrame, thresholds_used: Sequence[float], what_if: float) -> alt.LayerChart:
    """Reviewed candidates (columns bin_start, bin_end, n, outcome) with the
    thresholds their runs used and a what-if threshold."""
    return rouge_histogram(hist, thresholds_used, what_if=what_if, group="outcome",
                           x_title="max ROUGE-L against the pool", y_title="candidates")


# ---------------------------------------------------------------------------- a run
def rejections_by_round(reasons: pd.DataFrame) -> alt.Chart:
    """Rejected candidates per round (columns round, label, n), by reason."""
    return alt.Chart(reasons).mark_bar().encode(
        x=alt.X("round:O", title="Round", axis=round_axis()), y=alt.Y("n:Q", title="Rejected", axis=count_axis()),
        color=alt.Color("label:N", title="Reason", legend=_legend(orient="bottom", direction="vertical")),
        tooltip=[alt.Tooltip("round:O", title="round"), alt.Tooltip("label:N", title="reason"),
                 alt.Tooltip("n:Q", title="rejected")])


def pool_growth(growth: pd.DataFrame) -> alt.Chart:
    """Instructions in the pool after each round (columns round, pool_size)."""
    return alt.Chart(growth).mark_line(point=True).encode(
        x=alt.X("round:O", title="After round", axis=round_axis()),
        y=alt.Y("pool_size:Q", title="Instructions in the pool", axis=count_axis()),
        tooltip=[alt.Tooltip("round:O", title="after round"), alt.Tooltip("pool_size:Q", title="instructions")])


# ---------------------------------------------------------------------------- verbs and nouns
def _label_fits(text: str, start: float, end: float, radius: float, ring: float, font: float) -> bool:
    """Whether a horizontal label centred on the arc stays inside its own arc:
    its extent along the ring's tangent within the arc's length, across the ring
    within the ring's width. Angles in radians, clockwise from 12 o'clock."""
    if not text:
        return False
    width, height = 0.62 * font * len(text), 1.25 * font
    mid = (start + end) / 2
    along = width * abs(math.cos(mid)) + height * abs(math.sin(mid))
    across = width * abs(math.sin(mid)) + height * abs(math.cos(mid))
    return along <= 0.9 * radius * (end - start) and across <= 0.9 * ring


def verb_sunburst(table: pd.DataFrame, *, size: int = 480) -> alt.LayerChart:
    """Leading verbs on the inner ring, their first nouns on the outer ring
    (`table`: columns verb, noun, count, verb_total, as `explore.verb_noun_counts`
    gives). A label is drawn only where it fits inside its arc, so labels never
    overlap; every arc has a tooltip."""
    shown = table[table["verb"] != NONE]
    grand = shown["count"].sum() or 1
    inner_r, mid_r, outer_r = 0.083 * size, 0.29 * size, 0.48 * size
    inner_label, outer_label = (inner_r + mid_r) / 2, (mid_r + outer_r) / 2
    rows, start = [], 0.0
    for verb, group in shown.groupby("verb", sort=False):
        total = int(group["verb_total"].iloc[0])
        end = start + 2 * math.pi * total / grand
        rows.append({"ring": "verb", "verb": verb, "noun": "", "count": total, "start": start, "end": end,
                     "label": verb if _label_fits(verb, start, end, inner_label, mid_r - inner_r, 11) else ""})
        at = start
        for noun, count in zip(group["noun"], group["count"]):
            stop = at + 2 * math.pi * int(count) / grand
            rows.append({"ring": "noun", "verb": verb, "noun": noun, "count": int(count), "start": at,
                         "end": stop, "label": noun if _label_fits(noun, at, stop, outer_label,
                                                                   outer_r - mid_r, 10) else ""})
            at = stop
        start = end
    arcs = pd.DataFrame(rows, columns=["ring", "verb", "noun", "count", "start", "end", "label"])
    arcs["mid"] = (arcs["start"] + arcs["end"]) / 2
    base = alt.Chart(arcs)
    color = alt.Color("verb:N", legend=None, scale=alt.Scale(scheme="tableau20"),
                      sort=list(dict.fromkeys(shown["verb"])))
    tooltip = [alt.Tooltip("verb:N"), alt.Tooltip("noun:N"), alt.Tooltip("count:Q")]
    theta = alt.Theta("start:Q", scale=None)
    verbs, nouns = alt.datum.ring == "verb", alt.datum.ring == "noun"
    inner = base.transform_filter(verbs).mark_arc(
        innerRadius=inner_r, outerRadius=mid_r, stroke="white").encode(
        theta=theta, theta2="end:Q", color=color, tooltip=tooltip)
    outer = base.transform_filter(nouns).mark_arc(
        innerRadius=mid_r + 2, outerRadius=outer_r, stroke="white", opacity=0.6).encode(
        theta=theta, theta2="end:Q", color=color, tooltip=tooltip)
    inner_text = base.transform_filter(verbs).mark_text(
        radius=inner_label, fontSize=11, fontWeight="bold").encode(
        theta=alt.Theta("mid:Q", scale=None), text="label:N")
    outer_text = base.transform_filter(nouns).mark_text(radius=outer_label, fontSize=10).encode(
        theta=alt.Theta("mid:Q", scale=None), text="label:N")
    return (inner + outer + inner_text + outer_text).properties(width=size, height=size)


def verb_bars(verbs: pd.DataFrame) -> alt.LayerChart:
    """The most common leading verbs as bars, each with its first nouns written
    after it (a static picture of `verb_sunburst`'s data)."""
    rows = verbs[verbs["verb"] != NONE]
    per_verb = []
    for verb, group in rows.groupby("verb", sort=False):
        nouns = [f"{n} {int(c):,}" for n, c in zip(group["noun"], group["count"]) if n != "(other)"]
        total = int(group["verb_total"].iloc[0])
        per_verb.append({"verb": verb, "total": total, "text": f"{total:,} — " + ", ".join(nouns)})
    frame = pd.DataFrame(per_verb, columns=["verb", "total", "text"])
    order = list(frame["verb"])
    y = alt.Y("verb:N", sort=order, title=None, axis=alt.Axis(labelLimit=0))
    bars = alt.Chart(frame).mark_bar(color=BAR).encode(
        x=alt.X("total:Q", title="instructions", axis=count_axis()), y=y, tooltip=["verb:N", "total:Q"])
    text = alt.Chart(frame).mark_text(align="left", dx=4, fontSize=11, color="#333").encode(
        x="total:Q", y=y, text="text:N")
    return (bars + text).properties(width=360, height=alt.Step(22))


# ---------------------------------------------------------------------------- lengths
def length_histograms(stats: dict, *, show_means: bool = False, width: int = 210,
                      height: int = 200) -> alt.Chart:
    """Word counts of instructions, non-empty inputs and outputs side by side
    (`stats` as `Pool.export_length_stats` gives: histogram with field, bin_start,
    n; bin_width; cap; means)."""
    names = dict(LENGTH_FIELDS)
    if show_means:
        names = {k: f"{v} · mean {stats['means'][k]:.1f}" if stats["means"].get(k) is not None else v
                 for k, v in names.items()}
    hist = stats["histogram"].copy()
    hist["field"] = hist["field"].map(names)
    hist["bin_end"] = hist["bin_start"] + stats["bin_width"]
    return alt.Chart(hist).mark_bar(color=BAR).encode(
        x=alt.X("bin_start:Q", bin="binned", title=f"words ({stats['cap']}+ in the last bar)",
                scale=alt.Scale(domain=[0, stats["cap"] + stats["bin_width"]])),
        x2="bin_end:Q", y=alt.Y("n:Q", title="count", axis=count_axis()),
        column=alt.Column("field:N", title=None, sort=list(names.values()),
                          header=alt.Header(labelLimit=0, labelFontSize=12, labelFontWeight="bold")),
        tooltip=[alt.Tooltip("field:N", title="field"), alt.Tooltip("bin_start:Q", title="from"),
                 alt.Tooltip("n:Q", title="count")],
    ).properties(width=width, height=height).resolve_scale(y="independent")


# ---------------------------------------------------------------------------- rejects
def keyword_bars(keywords: pd.DataFrame) -> alt.Chart:
    """Rejected candidates per keyword (columns keyword, candidates, only_this, rescued)."""
    return alt.Chart(keywords).mark_bar(color=BAR).encode(
        x=alt.X("candidates:Q", title="rejected candidates", axis=count_axis()),
        y=alt.Y("keyword:N", sort="-x", title=None, axis=alt.Axis(labelLimit=0)),
        tooltip=["keyword", "candidates", alt.Tooltip("only_this:Q", title="only this keyword"), "rescued"])


# ---------------------------------------------------------------------------- quality studies
_SHARE_TITLE = "Share answered yes (%)"


def _measure_order() -> list[str]:
    from .model import MEASURE_LABELS

    return list(MEASURE_LABELS.values())


def yes_rates(frame: pd.DataFrame) -> alt.LayerChart:
    """Share of yes per measure with its 95% interval, and the paper's figure as a
    tick (`frame`: `quality.study_results(...).overall`)."""
    order = _measure_order()
    frame = frame.dropna(subset=["share"]).assign(source=STUDY)
    paper = frame.assign(source=PAPER)
    color = alt.Color("source:N", title=None, legend=_legend(),
                      scale=alt.Scale(domain=[STUDY, PAPER], range=["#4c78a8", "#e45756"]))
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=0))
    x = alt.X("share:Q", title=_SHARE_TITLE, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    tooltip = [alt.Tooltip("label:N", title="Question"), alt.Tooltip("share:Q", format=".1%", title="Yes"),
               alt.Tooltip("low:Q", format=".1%", title="95% from"), alt.Tooltip("high:Q", format=".1%", title="95% to"),
               "yes:Q", "n:Q", "unsure:Q", alt.Tooltip("paper:Q", format=".0%", title="Paper")]
    bars = alt.Chart(frame).mark_bar(opacity=0.8, height=22).encode(x=x, y=y, color=color, tooltip=tooltip)
    whiskers = alt.Chart(frame).mark_errorbar(ticks=True, color="#1f2937").encode(
        x=alt.X("low:Q", title=_SHARE_TITLE), x2="high:Q", y=y)
    ticks = alt.Chart(paper).mark_tick(thickness=4, size=34).encode(
        x="paper:Q", y=y, color=color, tooltip=[alt.Tooltip("paper:Q", format=".0%", title="Paper")])
    return (bars + whiskers + ticks).properties(height=alt.Step(44))   # see eval_levels


def yes_rates_by_group(frame: pd.DataFrame, title: str) -> alt.LayerChart:
    """The same, one bar per group (round, or classification vs not) within each
    measure (`frame`: `.by_round` or `.by_group` of the study's results)."""
    order = _measure_order()
    frame = frame.dropna(subset=["share"]).assign(group=lambda f: f["group"].astype(str))
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=0))
    offset = alt.YOffset("group:N")
    color = alt.Color("group:N", title=title, legend=_legend())
    x = alt.X("share:Q", title=_SHARE_TITLE, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    tooltip = [alt.Tooltip("group:N", title=title), alt.Tooltip("label:N", title="Question"),
               alt.Tooltip("share:Q", format=".1%", title="Yes"), alt.Tooltip("low:Q", format=".1%", title="95% from"),
               alt.Tooltip("high:Q", format=".1%", title="95% to"), "yes:Q", "n:Q"]
    bars = alt.Chart(frame).mark_bar(opacity=0.8).encode(x=x, y=y, yOffset=offset, color=color, tooltip=tooltip)
    whiskers = alt.Chart(frame).mark_rule(color="#1f2937").encode(
        x=alt.X("low:Q", title=_SHARE_TITLE), x2="high:Q", y=y, yOffset=offset)
    ticks = alt.Chart(frame.drop_duplicates("measure")).mark_tick(color="#e45756", thickness=3).encode(
        x="paper:Q", y=y, tooltip=[alt.Tooltip("paper:Q", format=".0%", title="Paper")])
    groups = frame["group"].nunique()
    return (bars + whiskers + ticks).properties(height=alt.Step(14 * groups + 16))   # see eval_levels


# The paper's colours run from good to bad: A green, B light green, C orange, D red.
LEVEL_COLORS = {"A": "#2e7d32", "B": "#9ccc65", "C": "#ffa726", "D": "#e53935"}


EVAL_AXIS_TITLE = ("Share of answers (%); whiskers: 95% interval of \"at least A / B / C\", "
                   "each boundary on its own")


def eval_levels(frame: pd.DataFrame) -> alt.LayerChart:
    """The paper's evaluation figure: one stacked bar per model, the share of its answers rated
    A, B, C and D (best on the left), and at each boundary the 95% Wilson interval of "at least
    this good" (A; A or B; A to C). `frame`: `evaluate.results_table(...)` (model, level, count,
    n, share, cum_share, cum_low, cum_high). Each whisker is a 95% interval for its own boundary,
    not a band for the three at once (all three hold together less often); the axis title says so."""
    frame = frame.copy()
    levels = list(LEVEL_COLORS)
    models = list(dict.fromkeys(frame["model"]))
    frame["order"] = frame["level"].map(levels.index)
    y = alt.Y("model:N", sort=models, title=None, axis=alt.Axis(labelLimit=0))
    x = alt.X("share:Q", title=EVAL_AXIS_TITLE, stack="zero", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%"))
    color = alt.Color("level:N", title="Rating", sort=levels, legend=_legend(orient="bottom"),
                      scale=alt.Scale(domain=levels, range=list(LEVEL_COLORS.values())))
    tooltip = ["model:N", alt.Tooltip("level:N", title="Rating"), alt.Tooltip("share:Q", format=".1%", title="Share"),
               "count:Q", alt.Tooltip("n:Q", title="Rated answers")]
    bars = alt.Chart(frame).mark_bar(height=26).encode(
        x=x, y=y, color=color, order=alt.Order("order:Q"), tooltip=tooltip)
    bounds = frame.dropna(subset=["cum_low"])
    whiskers = alt.Chart(bounds).mark_errorbar(ticks=True, color="#1f2937").encode(
        x=alt.X("cum_low:Q", title=EVAL_AXIS_TITLE), x2="cum_high:Q", y=y,
        tooltip=["model:N", alt.Tooltip("level:N", title="At least"),
                 alt.Tooltip("cum_share:Q", format=".1%", title="Share"),
                 alt.Tooltip("cum_low:Q", format=".1%", title="95% from"),
                 alt.Tooltip("cum_high:Q", format=".1%", title="95% to")])
    # A step per model, not a total height: Streamlit fits the whole chart (axis and legend
    # included) into a given height, which squeezed two models into one row.
    return (bars + whiskers).properties(height=alt.Step(44))


# ---------------------------------------------------------------------------- topics
# What the topic map can colour its points by (topics.py's map points carry these columns).
TOPIC_COLORINGS = {"topic": "Topic", "state": "Status", "origin": "Seed or generated",
                   "labeled_invalid": "Labeled invalid", "judge_no": "Judge said \"no\""}
_FLAG_COLORS = {"yes": "#e45756", "no": "#d0d5dd"}
_STATE_COLORS = {"seed": "#f58518", **OUTCOME_COLORS}


def topic_map(points: pd.DataFrame, color_by: str = "topic", *, height: int = 460) -> alt.Chart:
    """The pool's topics on two axes (PCA of the embeddings): one dot per item drawn (a seeded
    sample on large pools), coloured by `color_by` (a key of TOPIC_COLORINGS). `points`: x, y,
    topic, topic_name, state, origin, labeled_invalid ("yes"/"no"), judge_no ("yes"/"no"), text."""
    if color_by not in TOPIC_COLORINGS:
        raise ValueError(f"color_by must be one of {list(TOPIC_COLORINGS)}, not {color_by!r}")
    frame = points.copy()
    title = TOPIC_COLORINGS[color_by]
    if color_by == "topic":
        frame["topic_label"] = frame["topic"].astype(int).astype(str) + " " + frame["topic_name"].astype(str)
        order = list(dict.fromkeys(frame.sort_values("topic")["topic_label"]))
        color = alt.Color("topic_label:N", title=title, sort=order,
                          scale=alt.Scale(scheme="category20"), legend=_legend(symbolLimit=0, columns=1))
    elif color_by == "state":
        present = [k for k in _STATE_COLORS if k in set(frame["state"])]
        color = alt.Color("state:N", title=title, legend=_legend(),
                          scale=alt.Scale(domain=present, range=[_STATE_COLORS[k] for k in present]))
    elif color_by == "origin":
        color = alt.Color("origin:N", title=title, legend=_legend(),
                          scale=alt.Scale(domain=["seed", "generated"], range=["#f58518", BAR]))
    else:
        color = alt.Color(f"{color_by}:N", title=title, legend=_legend(),
                          scale=alt.Scale(domain=list(_FLAG_COLORS), range=list(_FLAG_COLORS.values())))
    # Flagged points drawn last, so the few red ones are not hidden under the grey.
    if color_by in ("labeled_invalid", "judge_no"):
        frame = frame.sort_values(color_by, ascending=True, kind="stable")
    axis = alt.Axis(labels=False, ticks=False, grid=False)
    return alt.Chart(frame).mark_circle(size=22, opacity=0.75).encode(
        x=alt.X("x:Q", title="first principal component", axis=axis),
        y=alt.Y("y:Q", title="second principal component", axis=axis),
        color=color,
        tooltip=[alt.Tooltip("topic:Q", title="Topic"), alt.Tooltip("topic_name:N", title="Name"),
                 alt.Tooltip("state:N", title="Status"), alt.Tooltip("text:N", title="Instruction")],
    ).properties(height=height)


def topic_sizes(table: pd.DataFrame) -> alt.Chart:
    """One bar per topic: its size, split into seed tasks and generated instructions (the dataset
    card). `table`: topic, name, size, seeds."""
    frame = table.copy()
    frame["label"] = frame["topic"].astype(int).astype(str) + " " + frame["name"].astype(str)
    long = pd.concat([frame.assign(kind="generated", n=frame["size"] - frame["seeds"]),
                      frame.assign(kind="seed", n=frame["seeds"])])
    return alt.Chart(long).mark_bar().encode(
        y=alt.Y("label:N", sort=list(frame["label"]), title=None, axis=alt.Axis(labelLimit=0)),
        x=alt.X("n:Q", title="Instructions", stack="zero", axis=count_axis()),
        color=alt.Color("kind:N", title=None, legend=_legend(orient="bottom"),
                        scale=alt.Scale(domain=["generated", "seed"], range=[BAR, "#f58518"])),
        tooltip=["label:N", "kind:N", "n:Q"],
    ).properties(height=alt.Step(16))


# ---------------------------------------------------------------------------- static images
def to_svg(chart: alt.TopLevelMixin, *, title: str | None = None, subtitle: str | None = None,
           width: int | None = None) -> str:
    """A chart as SVG text (vl-convert, no browser), white background; `title`
    (and `subtitle`) on top and a fixed `width` for a layer or unit chart when given."""
    if title is not None:
        chart = chart.properties(title=alt.TitleParams(title, subtitle=subtitle or alt.Undefined,
                                                       anchor="start", fontSize=15))
    if width is not None:
        chart = chart.properties(width=width)
    spec = chart.to_dict()
    spec.setdefault("background", "white")
    version = "_".join(alt.SCHEMA_VERSION.split(".")[:2])       # "v6.4.1" -> "v6_4"
    return _rendered_svg(json.dumps(spec, sort_keys=True, default=str), version)


# The Export page builds one card up to three times (preview, download, write) and the same
# pool gives the same charts: each is rendered once, then served from here (vl-convert takes
# 0.1-0.5 s a chart; bench/README.md, export).
@functools.lru_cache(maxsize=32)
def _rendered_svg(spec_json: str, version: str) -> str:
    import vl_convert as vlc

    return vlc.vegalite_to_svg(json.loads(spec_json), vl_version=version)
