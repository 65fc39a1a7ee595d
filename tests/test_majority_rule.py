"""One majority rule (selfinstruct.model) for "labeled invalid", seen the same way by the Label
page's results, the Pool page's and Export page's filter, and `export --exclude-invalid`.

Two annotators label item A: one says "no" to "valid task?", the other leaves it unanswered.
Unanswered counts as "unsure", so A is split (1 of 2 is not more than half): A stays in every
view. Item B: "no", "no" and unanswered: 2 of 3 say no, so B is invalid everywhere.
"""
import json

from selfinstruct import model, quality
from selfinstruct.export import ExportFilters
from tests.conftest import run_cli


def _save(pool, study_id, item_id, annotator, valid_task, input_ok="yes", output_ok="yes"):
    pool.quality.save_label(study_id, item_id, annotator, valid_task=valid_task, input_ok=input_ok,
                    output_ok=output_ok)


def test_majority_counts_unanswered_as_unsure():
    assert model.majority(["no", None]) == model.SPLIT
    assert model.majority(["no", "no", None]) == model.NO
    assert model.majority([None, None, "yes"]) == model.UNSURE
    assert model.majority(["yes", "no"]) == model.SPLIT
    assert model.labeled_invalid([{"valid_task": "no"}, {"valid_task": None}], ["valid_task"]) is False
    assert model.labeled_invalid([{"valid_task": "no"}, {"valid_task": None}], ["valid_task"], rule="any")


def test_label_results_pool_filter_and_export_agree(demo_db_path):
    from selfinstruct.store import Pool

    with Pool.open(demo_db_path) as pool:
        study_id = quality.create_study(pool, "majority", size=4, seed=5, overlap=3).study_id
        item_a, item_b = (pool.quality.study_item(study_id, pos) for pos in (0, 1))
        _save(pool, study_id, item_a["item_id"], "ann", "no")
        _save(pool, study_id, item_a["item_id"], "bob", None)
        _save(pool, study_id, item_b["item_id"], "ann", "no")
        _save(pool, study_id, item_b["item_id"], "bob", "no")
        _save(pool, study_id, item_b["item_id"], "cy", None)
        a, b = item_a["candidate_id"], item_b["candidate_id"]

        # The Label page's results: majority answer per item.
        answers = {row["item_id"]: row["valid_task"] for row in quality.item_answers(pool.quality.study_labels(study_id))}
        assert answers == {item_a["item_id"]: model.SPLIT, item_b["item_id"]: model.NO}

        # The Label page's "judged not a valid task by most of their annotators" and the
        # per-candidate summary the pages show.
        assert pool.quality.invalid_candidate_ids() == {b}
        summary = pool.quality.candidate_label_summary([a, b])
        assert summary[a]["invalid"] is False and summary[b]["invalid"] is True

        # The Pool/Export pages' filter (the same ExportFilters): B leaves, A stays.
        all_tasks = pool.explore.export_instructions(ExportFilters(include_seeds=False))
        kept = pool.explore.export_instructions(ExportFilters(include_seeds=False, exclude_invalid=True))
        text_a, text_b = pool.review.candidate_detail(a)["instruction"], pool.review.candidate_detail(b)["instruction"]
        assert {text_a, text_b} <= {text for _, text in all_tasks}
        kept_texts = {text for _, text in kept}
        assert text_a in kept_texts and text_b not in kept_texts
        assert len(kept) == len(all_tasks) - 1

    # The CLI export: the same rule, read back from the file it wrote.
    out = demo_db_path.parent / "clean.jsonl"
    done = run_cli("export", "--format", "alpaca", "--no-seeds", "--exclude-invalid", "--out", str(out),
                   "--db", str(demo_db_path))
    assert done.returncode == 0, done.stderr
    exported = {record["instruction"] for record in json.loads(out.read_text())}
    assert text_a in exported and text_b not in exported


def test_instances_count_what_the_pool_holds(demo_pool):
    """Home and `info` count the instances an export holds: not those of rejected or removed
    tasks, though such instances stay 'kept' rows."""
    from selfinstruct import actions

    exported = demo_pool.explore.export_counts(ExportFilters(include_empty_tasks=True))["instances"]
    assert demo_pool.counts().instances == exported
    some = demo_pool.explore.pool_browse("", limit=1)
    candidate_id = int(some["id"].iloc[0]) if hasattr(some, "iloc") else int(some[0]["id"])
    with_instances = len([i for i in demo_pool.explore.pool_item(candidate_id)["instances"] if i["status"] == model.KEPT])
    assert with_instances > 0
    actions.remove(demo_pool, candidate_id, actor="test")
    assert demo_pool.counts().instances == exported - with_instances
    assert demo_pool.explore.export_counts(ExportFilters(include_empty_tasks=True))["instances"] == exported - with_instances
