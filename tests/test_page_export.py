"""The Export page through AppTest: counts and preview are the filtered query, the
format preview parses, and writing a file from the page gives those rows."""
import json
import re
import zipfile

from selfinstruct import export
from selfinstruct.export import CSV_SAFETY_NOTE, ExportFilters
from tests.conftest import app_pool, open_page





def metrics(at) -> dict:
    return {m.label: int(m.value.replace(",", "")) for m in at.metric}




def test_counts_and_preview_are_the_filtered_query(demo_app_env):
    at = open_page("pages/export.py")
    pool = app_pool(demo_app_env)
    full = pool.explore.export_counts(ExportFilters())
    shown = metrics(at)
    assert (shown["Tasks"], shown["Instances"], shown["Seed tasks"], shown["Generated tasks"]) == (
        full["tasks"], full["instances"], full["seed_tasks"], full["generated_tasks"])
    assert shown["Records in the file"] == full["tasks"]          # Self-Instruct JSONL: one per task

    at.checkbox(key="exp_seeds").uncheck().run()
    at.selectbox(key="exp_clf").set_value("exclude").run()
    at.number_input(key="exp_min_ow").set_value(3).run()
    at.segmented_control(key="exp_format").set_value("chat").run()
    assert not at.exception
    filters = ExportFilters(include_seeds=False, classification=False, min_output_words=3)
    expected = pool.explore.export_counts(filters)
    shown = metrics(at)
    assert expected["instances"] < full["instances"]
    assert (shown["Tasks"], shown["Instances"], shown["Seed tasks"], shown["Records in the file"]) == (
        expected["tasks"], expected["instances"], 0, expected["instances"])
    preview = at.dataframe[0].value
    assert preview.equals(export.preview_table(pool, filters, 20))
    assert set(preview["source"]) == {"generated"} and not preview["is_classification"].any()
    records = [json.loads(line) for line in at.code[0].value.splitlines()]
    assert records[0]["messages"][-1]["content"] == preview.iloc[0]["output"]


def test_the_preview_table_has_no_none_and_csv_says_what_it_changes(demo_app_env):
    at = open_page("pages/export.py")
    preview = at.dataframe[0].value                                        # seed tasks first: no run, no round
    assert (preview["source"] == "seed").any()
    assert not preview.isna().any().any() and "None" not in preview.astype(str).to_numpy()
    assert set(preview.loc[preview["source"] == "seed", "run_id"]) == {"–"}
    assert not any(CSV_SAFETY_NOTE in c.value for c in at.caption)
    at.segmented_control(key="exp_format").set_value("csv").run()
    assert not at.exception
    assert any(c.value == CSV_SAFETY_NOTE for c in at.caption)
    assert "a cell that could run as a formula gets a leading '" in " ".join(c.value for c in at.caption)
    download = at.get("download_button")[0].proto                        # named after the format and the time
    assert re.fullmatch(r"Download selfinstruct-csv-\d{8}-\d{4}\.zip", download.label), download.label
    at.toggle(key="exp_card").set_value(False).run()
    assert re.fullmatch(r"Download selfinstruct-csv-\d{8}-\d{4}\.csv", at.get("download_button")[0].proto.label)


def test_write_from_the_page_gives_the_counted_rows(demo_app_env, tmp_path):
    at = open_page("pages/export.py")
    at.segmented_control(key="exp_format").set_value("alpaca").run()
    at.checkbox(key="exp_generated").uncheck().run()
    shown = metrics(at)
    target = tmp_path / "out" / "seeds.zip"
    at.text_input(key="exp_path_alpaca_True").input(str(target)).run()
    at.button(key="exp_write").click().run()
    assert not at.exception
    assert any(f"Wrote {shown['Records in the file']:,} record(s)" in s.value for s in at.success)
    with zipfile.ZipFile(target) as zf:
        rows = json.loads(zf.read("seeds.json"))
        card = zf.read("README.md").decode()
    seed_only = app_pool(demo_app_env).explore.export_counts(ExportFilters(include_generated=False))
    assert len(rows) == shown["Instances"] == seed_only["instances"] == seed_only["seed_instances"]
    assert "Seed tasks only." in card


def test_bad_length_bounds_are_reported_and_the_card_preview_builds(demo_app_env):
    at = open_page("pages/export.py")
    at.number_input(key="exp_min_iw").set_value(9).run()
    at.number_input(key="exp_max_iw").set_value(4).run()
    assert not at.exception
    assert "min_instruction_words (9) is above max_instruction_words (4)" in at.error[0].value
    at.number_input(key="exp_max_iw").set_value(40).run()
    at.button(key="exp_card_build").click().run()
    assert not at.exception
    card = at.code[-1].value
    assert "Instructions of 9 to 40 words." in card and "selfinstruct-demo" in card


def judged_demo(path) -> tuple[int, dict]:
    """Four of the demo pool's tasks judged by hand: A's output wrong, B not a valid task, C all
    yes, D unreadable. Returns the judge run and the candidate ids."""
    from selfinstruct.store import Pool
    from tests.test_export import first_kept, judge_rows

    yes = {"valid_task": "yes", "input_ok": "yes", "output_ok": "yes"}
    with Pool.open(path) as pool:
        a, b, c, d = [cand for cand, _, _ in pool.judge.pool_items()[:4]]
        run_id = judge_rows(pool, {(a, first_kept(pool, a)[0]): {**yes, "output_ok": "no"},
                                   (b, first_kept(pool, b)[0]): {**yes, "valid_task": "no"},
                                   (c, first_kept(pool, c)[0]): yes,
                                   (d, first_kept(pool, d)[0]): None})
        kept = {x: len(first_kept(pool, x)) for x in (a, b)}
    return run_id, {"A": a, "B": b, "C": c, "D": d, "kept": kept}


def test_the_judge_filter_on_the_page_drops_what_the_judge_called_no(demo_app_env):
    run_id, ids = judged_demo(demo_app_env)
    at = open_page("pages/export.py")
    pool = app_pool(demo_app_env)
    full = metrics(at)
    at.selectbox(key="exp_judge_run").set_value(run_id).run()
    assert metrics(at) == full                                   # a judge run alone filters nothing
    at.multiselect(key="exp_judge_drop").set_value(["valid_task", "output_ok"]).run()
    assert not at.exception
    filters = ExportFilters(judge_run_id=run_id, judge_exclude=("valid_task", "output_ok"))
    shown, expected = metrics(at), pool.explore.export_counts(filters)
    # hand-counted: B goes with all its instances, A loses the instance the judge saw
    assert full["Instances"] - shown["Instances"] == ids["kept"][ids["B"]] + 1
    assert full["Tasks"] - shown["Tasks"] == 1 + (ids["kept"][ids["A"]] == 1)
    assert (shown["Tasks"], shown["Instances"]) == (expected["tasks"], expected["instances"])
    assert any("the judge's verdicts leave out" in c.value for c in at.caption)
    at.text_input(key="exp_path_selfinstruct_True").input("exports/judged.zip").run()
    at.button(key="exp_write").click().run()
    assert not at.exception
    with zipfile.ZipFile(demo_app_env.parent / "exports" / "judged.zip") as zf:
        names = zf.namelist()
        data = [json.loads(line) for line in zf.read(next(n for n in names if n.endswith(".jsonl"))).splitlines()]
        card = zf.read("README.md").decode("utf-8")
    assert len(data) == shown["Records in the file"] == expected["tasks"]
    assert "## Model judge" in card and f"judge run {run_id}" in card
