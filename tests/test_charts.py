"""The charts: each definition builds a valid Vega-Lite spec from small data, the ROUGE-L
chart always carries its threshold line, legends and labels are not cut or piled up, and
the dataset card's charts are rendered to SVG files from the same definitions."""
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from selfinstruct import charts, explore
from selfinstruct.export import ExportFilters, export_dataset
from selfinstruct.model import PAPER_RATES
from selfinstruct.quality import MEASURE_LABELS

SVG = "{http://www.w3.org/2000/svg}"


def walk(spec):
    """Every dict inside a spec."""
    if isinstance(spec, dict):
        yield spec
        for value in spec.values():
            yield from walk(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from walk(value)


def mark_of(node) -> str | None:
    mark = node.get("mark")
    return mark if mark is None or isinstance(mark, str) else mark["type"]


def marks(spec) -> list[str]:
    return [mark_of(node) for node in walk(spec) if mark_of(node)]


def rows_of(spec, node) -> list[dict]:
    """The data rows a layer uses (inline datasets, by name)."""
    name = (node.get("data") or {}).get("name")
    return spec.get("datasets", {}).get(name, [])


def rule_positions(spec) -> list[float]:
    return [row["at"] for node in walk(spec) if mark_of(node) == "rule" for row in rows_of(spec, node)]


@pytest.fixture
def rouge_hist():
    return explore.rouge_histogram(np.random.default_rng(1).beta(2, 6, 300))


def study_frame(groups=("all",)) -> pd.DataFrame:
    rows = []
    for g in groups:
        for measure, label in MEASURE_LABELS.items():
            rows.append({"group": g, "measure": measure, "label": label, "n": 10, "yes": 7, "no": 2,
                         "unsure": 1, "split": 0, "share": 0.7, "low": 0.4, "high": 0.89,
                         "paper": PAPER_RATES[measure]})
    return pd.DataFrame(rows)


VERBS = pd.DataFrame([
    {"verb": "write", "noun": "poem", "count": 40, "verb_total": 70},
    {"verb": "write", "noun": "story", "count": 30, "verb_total": 70},
    {"verb": "give", "noun": "example", "count": 20, "verb_total": 20},
    *({"verb": f"verb{i}", "noun": f"a-rather-long-noun-{i}", "count": 1, "verb_total": 1} for i in range(12)),
    {"verb": "(none)", "noun": "(none)", "count": 5, "verb_total": 5},
])


def every_chart(rouge_hist) -> dict:
    outcomes = pd.concat([rouge_hist.assign(outcome=o) for o in ("accepted", "rejected", "rescued")])
    scores = pd.DataFrame({"max_rouge": [0.1, 0.3, 0.75, 0.2], "status": ["accepted", "accepted", "rejected",
                                                                       "rejected"]})
    lengths = {"histogram": pd.DataFrame({"field": ["instruction", "input", "output"], "bin_start": [5, 0, 10],
                                          "n": [3, 2, 4]}),
               "means": {"instruction": 8.0, "input": 3.0, "output": 12.0}, "counts": {}, "bin_width": 5,
               "cap": 100}
    return {
        "round_rouge": charts.round_rouge(scores, 0.7),
        "rouge_vs_seeds": charts.rouge_vs_seeds(rouge_hist, 0.7),
        "rouge_whatif": charts.rouge_whatif(outcomes, [0.7], 0.55),
        "rejections_by_round": charts.rejections_by_round(pd.DataFrame(
            {"round": [1, 1, 2], "label": ['Starts with "Write a program"', "Too short", "Too short"],
             "n": [3, 1, 2]})),
        "pool_growth": charts.pool_growth(pd.DataFrame({"round": [0, 1], "pool_size": [175, 190]})),
        "verb_sunburst": charts.verb_sunburst(VERBS),
        "verb_bars": charts.verb_bars(VERBS),
        "length_histograms": charts.length_histograms(lengths, show_means=True),
        "keyword_bars": charts.keyword_bars(pd.DataFrame(
            {"keyword": ["image", "plot"], "candidates": [4, 2], "only_this": [3, 1], "rescued": [0, 1]})),
        "yes_rates": charts.yes_rates(study_frame()),
        "yes_rates_by_group": charts.yes_rates_by_group(study_frame((1, 2)), "Round"),
        "eval_levels": charts.eval_levels(pd.DataFrame(
            [{"model": m, "level": level, "count": 2, "n": 8, "share": 0.25, "cum_share": c, "cum_low": c and c - 0.2,
              "cum_high": c and c + 0.2} for m in ("base", "tuned")
             for level, c in zip("ABCD", (0.25, 0.5, 0.75, None))])),
        "topic_map": charts.topic_map(TOPIC_POINTS, "topic"),
        "topic_sizes": charts.topic_sizes(pd.DataFrame({"topic": [1, 2], "name": ["write poem", "solve equation"],
                                                        "size": [30, 12], "seeds": [5, 2]})),
    }


TOPIC_POINTS = pd.DataFrame({"x": [0.1, -0.2, 0.3], "y": [0.0, 0.2, -0.1], "topic": [1, 2, 1],
                             "topic_name": ["write poem", "solve equation", "write poem"],
                             "state": ["seed", "accepted", "rejected"], "origin": ["seed", "generated", "generated"],
                             "labeled_invalid": ["no", "yes", "no"], "judge_no": ["no", "no", "yes"],
                             "text": ["Write a poem.", "Solve x + 1 = 2.", "Write a <b>poem</b>."]})


@pytest.mark.parametrize("color_by", ["topic", "state", "origin", "labeled_invalid", "judge_no"])
def test_topic_map_colours_by_each_field(color_by):
    spec = charts.topic_map(TOPIC_POINTS, color_by).to_dict()
    assert spec["encoding"]["color"]["title"] == charts.TOPIC_COLORINGS[color_by]
    with pytest.raises(ValueError):
        charts.topic_map(TOPIC_POINTS, "size")


def test_every_chart_builds_a_valid_vega_lite_spec(rouge_hist):
    built = every_chart(rouge_hist)
    assert set(built) == {name for name in charts.__all__ if name not in (
        "rouge_histogram", "to_svg", "LENGTH_FIELDS", "STUDY", "PAPER", "TOPIC_COLORINGS")}
    for name, chart in built.items():
        spec = chart.to_dict()                  # validates against the Vega-Lite schema
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/"), name
        assert marks(spec), name


@pytest.mark.parametrize("name", ["round_rouge", "rouge_vs_seeds", "rouge_whatif"])
def test_every_rouge_chart_draws_its_threshold(rouge_hist, name):
    spec = every_chart(rouge_hist)[name].to_dict()
    assert "rule" in marks(spec) and "bar" in marks(spec)
    assert 0.7 in rule_positions(spec)
    if name == "rouge_whatif":
        assert 0.55 in rule_positions(spec)
    x = next(node["encoding"]["x"] for node in walk(spec)
             if node.get("encoding", {}).get("x", {}).get("field") == "bin_start")
    assert x["scale"]["domain"] == [0, 1]


def test_a_rouge_chart_from_one_definition():
    """The page and card variants are the same chart with other titles and groups."""
    hist = explore.rouge_histogram(np.array([0.1, 0.2, 0.9]))
    plain = charts.rouge_histogram(hist, 0.6).to_dict()
    assert rule_positions(plain) == [0.6]
    several = charts.rouge_histogram(hist, [0.6, 0.6, 0.8]).to_dict()
    assert rule_positions(several) == [0.6, 0.8]                  # one line per threshold


def test_legends_show_their_labels_whole(rouge_hist):
    for name, chart in every_chart(rouge_hist).items():
        for node in walk(chart.to_dict()):
            legend = node.get("legend")
            if isinstance(legend, dict):
                assert legend.get("labelLimit") == 0, name


def test_share_axes_say_percent():
    for chart in (charts.yes_rates(study_frame()), charts.yes_rates_by_group(study_frame((1, 2)), "Round")):
        titles = [node["encoding"]["x"]["title"] for node in walk(chart.to_dict())
                  if "title" in node.get("encoding", {}).get("x", {})]
        assert titles and all("%" in t for t in titles)


def test_sunburst_labels_only_arcs_that_hold_them():
    spec = charts.verb_sunburst(VERBS).to_dict()
    rows = next(rows for rows in spec["datasets"].values() if rows and "ring" in rows[0])
    labels = {(r["ring"], r["verb"], r["noun"]): r["label"] for r in rows}
    assert labels[("verb", "write", "")] == "write"             # a big arc keeps its label
    assert labels[("noun", "write", "poem")] == "poem"
    small = [label for (ring, verb, _), label in labels.items() if verb.startswith("verb")]
    assert small and not any(small)                              # tiny arcs: no label to pile up
    assert ("verb", "(none)", "") not in labels                  # no recognised verb: not drawn
    # any two labels drawn on the same ring are at least one text line apart along it
    for ring, radius in (("verb", 0.1865 * 480), ("noun", 0.385 * 480)):
        mids = sorted((r["start"] + r["end"]) / 2 for r in rows if r["ring"] == ring and r["label"])
        assert all((b - a) * radius > 12 for a, b in zip(mids, mids[1:]))


def test_to_svg_renders_a_chart_with_its_title(rouge_hist):
    svg = charts.to_svg(charts.rouge_vs_seeds(rouge_hist, 0.7), title="A title", width=500)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and float(root.get("width")) >= 500
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "A title" in texts and "novelty threshold 0.7" in texts


def test_the_card_charts_are_svg_files_from_the_chart_definitions(demo_pool, tmp_path):
    result = export_dataset(demo_pool, "alpaca", tmp_path / "data.json", ExportFilters())
    names = {p.name: p for p in result.chart_paths}
    assert set(names) == {"lengths.svg", "verbs.svg", "rouge_vs_seeds.svg"}
    assert all(p.parent.name == "data_charts" for p in names.values())
    card = result.card_path.read_text(encoding="utf-8")
    for name, path in names.items():
        assert f"](data_charts/{name})" in card
        root = ET.fromstring(path.read_text(encoding="utf-8"))
        assert root.tag == f"{SVG}svg" and root.findall(f".//{SVG}path")
    texts = lambda name: [t.text for t in ET.parse(names[name]).iter(f"{SVG}text")]  # noqa: E731
    assert "Length in words" in texts("lengths.svg")
    assert any(t.startswith("Most common leading verbs") for t in texts("verbs.svg"))
    assert any(t.startswith("novelty threshold") for t in texts("rouge_vs_seeds.svg"))


def test_the_evaluation_chart_says_its_whiskers_are_per_boundary():
    """Issue 23: each A-D whisker is a 95% interval for its own boundary, not a simultaneous band;
    the chart says so where the reader looks (the axis title), bars and whiskers alike."""
    chart = charts.eval_levels(pd.DataFrame(
        [{"model": "base", "level": level, "count": 2, "n": 8, "share": 0.25, "cum_share": c,
          "cum_low": c and c - 0.2, "cum_high": c and c + 0.2} for level, c in zip("ABCD", (0.25, 0.5, 0.75, None))]))
    titles = [node["encoding"]["x"]["title"] for node in walk(chart.to_dict())
              if "title" in node.get("encoding", {}).get("x", {})]
    assert titles and all("each boundary on its own" in t and "%" in t for t in titles)


def test_counts_have_whole_number_axes_and_rounds_upright_labels(rouge_hist):
    """A count of 1 gets ticks 0 and 1, never 0.0, 0.1, ... 1.0; round numbers read upright."""
    reasons = pd.DataFrame({"round": [1], "label": ["too short"], "n": [1]})
    growth = pd.DataFrame({"round": [0, 1], "pool_size": [1, 2]})
    for chart, count_channel in ((charts.rejections_by_round(reasons), "y"), (charts.pool_growth(growth), "y"),
                                 (charts.rouge_histogram(rouge_hist), "y")):
        spec = chart.to_dict()
        encoding = (spec.get("encoding") or spec["layer"][0]["encoding"])
        axis = encoding[count_channel]["axis"]
        assert axis["format"] == "d" and axis["tickMinStep"] == 1, axis
        if "round" in encoding["x"]["field"]:
            assert encoding["x"]["axis"]["labelAngle"] == 0
