"""The quality study: sampling, labels, statistics, hooks and exports (issue 7)."""
import csv
import io
import json
import math
import re

import pytest

from selfinstruct import quality
from selfinstruct.quality import (allocate, cohen_kappa, draw_sample, fleiss_kappa, kappa_words,
                                  wilson_interval)
from selfinstruct.store import Pool, PoolError

Z = quality.Z95


# ---------------------------------------------------------------------------
# Wilson interval
# ---------------------------------------------------------------------------
def test_wilson_all_no_and_all_yes_match_the_closed_forms():
    # 0 of n: [0, z^2 / (n + z^2)]; n of n: the mirror image.
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z * Z / (10 + Z * Z), abs=1e-12)
    assert high == pytest.approx(0.277533, abs=1e-6)
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(10 / (10 + Z * Z), abs=1e-12)
    assert low == pytest.approx(0.722467, abs=1e-6)


def test_wilson_interior_values_computed_by_hand():
    # 5 of 10: centre 0.5, half-width z/(1 + z^2/n) * sqrt(0.025 + z^2/400)
    half = Z / (1 + Z * Z / 10) * math.sqrt(0.25 / 10 + Z * Z / 400)
    assert wilson_interval(5, 10) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson_interval(8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    # the paper's 92% of 200
    assert wilson_interval(184, 200) == pytest.approx((0.874011, 0.950159), abs=1e-6)


def test_wilson_agrees_with_scipy_and_handles_no_data():
    from scipy.stats import binomtest

    for yes, n in [(1, 3), (7, 9), (58, 100), (1, 1), (0, 1)]:
        ci = binomtest(yes, n).proportion_ci(method="wilson")
        assert wilson_interval(yes, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


# ---------------------------------------------------------------------------
# Kappa
# ---------------------------------------------------------------------------
def test_cohen_textbook_case():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15.
    # po = 35/50 = 0.7; pe = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.4
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    result = cohen_kappa(pairs)
    assert result.value == pytest.approx(0.4)
    assert result.observed == pytest.approx(0.7)
    assert result.items == 50 and result.method == "Cohen"


def test_cohen_perfect_zero_and_negative_agreement():
    perfect = cohen_kappa([("yes", "yes"), ("no", "no"), ("unsure", "unsure"), ("yes", "yes")])
    assert perfect.value == pytest.approx(1.0)
    zero = cohen_kappa([("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no")])
    assert zero.value == pytest.approx(0.0) and zero.observed == 0.5
    opposite = cohen_kappa([("yes", "no"), ("no", "yes")])
    assert opposite.value == pytest.approx(-1.0)
    # one rater always yes, the other not: defined, and no better than chance
    assert cohen_kappa([("yes", "yes"), ("yes", "no")]).value == pytest.approx(0.0)


def test_cohen_undefined_cases_say_why():
    all_yes = cohen_kappa([("yes", "yes")] * 5)
    assert all_yes.value is None and all_yes.observed == 1.0
    assert '"yes"' in all_yes.why_undefined and "undefined" in all_yes.why_undefined
    all_no = cohen_kappa([("no", "no")] * 3)
    assert all_no.value is None and '"no"' in all_no.why_undefined
    empty = cohen_kappa([])
    assert empty.value is None and empty.items == 0 and "both" in empty.why_undefined
    assert kappa_words(None) == "n/a"


def test_fleiss_wikipedia_example():
    # The worked example on Wikipedia's "Fleiss' kappa" page: 10 items, 14 raters, 5 categories.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[cat for cat, count in enumerate(row) for _ in range(count)] for row in table]
    assert fleiss_kappa(ratings).value == pytest.approx(0.210, abs=5e-4)


def test_fleiss_small_case_by_hand():
    # P_i = 1/3, 1/3, 1, 1 -> P = 2/3; p_yes = p_no = 1/2 -> Pe = 1/2; kappa = 1/3
    ratings = [["yes", "yes", "no"], ["yes", "no", "no"], ["yes", "yes", "yes"], ["no", "no", "no"]]
    result = fleiss_kappa(ratings)
    assert result.value == pytest.approx(1 / 3)
    assert result.observed == 0.5 and result.items == 4


def test_fleiss_perfect_and_degenerate():
    assert fleiss_kappa([["yes"] * 3, ["no"] * 3, ["unsure"] * 3]).value == pytest.approx(1.0)
    same = fleiss_kappa([["no"] * 4] * 6)
    assert same.value is None and '"no"' in same.why_undefined
    assert fleiss_kappa([]).value is None
    with pytest.raises(ValueError):
        fleiss_kappa([["yes", "no"], ["yes"]])


def test_kappa_words():
    assert kappa_words(-0.2) == "worse than chance"
    assert kappa_words(0.0) == "chance level"
    assert kappa_words(0.5) == "moderate"
    assert kappa_words(0.9) == "almost perfect"


# ---------------------------------------------------------------------------
# Sampling (pure)
# ---------------------------------------------------------------------------
def _eligible(n: int, rounds: int = 3) -> list[dict]:
    return [{"candidate_id": i, "run_id": 1, "round": 1 + i % rounds, "is_classification": i % 4 == 0,
             "instance_ids": [1000 + 10 * i + k for k in range(1 + i % 3)]} for i in range(1, n + 1)]


def test_sample_is_reproducible_for_a_seed_and_one_instance_per_instruction():
    rows = _eligible(60)
    first, again = draw_sample(rows, 20, seed=11), draw_sample(rows, 20, seed=11)
    assert first.items == again.items
    assert draw_sample(rows, 20, seed=12).items != first.items
    candidates = [c for c, _ in first.items]
    assert len(candidates) == len(set(candidates)) == 20
    by_id = {r["candidate_id"]: r for r in rows}
    assert all(inst in by_id[c]["instance_ids"] for c, inst in first.items)


def test_sample_takes_everything_when_too_few_are_eligible():
    sample = draw_sample(_eligible(7), 200, seed=1)
    assert sorted(c for c, _ in sample.items) == list(range(1, 8))
    assert sample.short and sample.eligible == 7 and sample.requested == 200


def test_allocation_is_proportional_with_largest_remainders():
    # 20 * (51, 35, 31) / 117 = 8.72, 5.98, 5.30 -> 8, 5, 5 and two more to the largest remainders
    assert allocate({1: 51, 2: 35, 3: 31}, 20) == {1: 9, 2: 6, 3: 5}
    assert allocate({"a": 5, "b": 5}, 3) == {"a": 2, "b": 1}   # tie: smaller key first
    assert allocate({"a": 2, "b": 9}, 50) == {"a": 2, "b": 9}  # never more than a stratum holds
    assert sum(allocate({1: 13, 2: 7, 3: 1}, 10).values()) == 10


def test_stratified_sample_follows_the_allocation():
    rows = _eligible(90)  # 30 per round
    sample = draw_sample(rows, 12, seed=3, stratify="round")
    rounds = {r["candidate_id"]: r["round"] for r in rows}
    drawn = [rounds[c] for c, _ in sample.items]
    assert sorted(drawn.count(k) for k in (1, 2, 3)) == [4, 4, 4]
    assert sample.allocation == {1: (30, 4), 2: (30, 4), 3: (30, 4)}
    assert drawn != sorted(drawn)  # strata are shuffled together
    by_kind = draw_sample(rows, 20, seed=3, stratify="classification")
    assert by_kind.allocation == {"classification": (22, 5), "other": (68, 15)}


# ---------------------------------------------------------------------------
# Studies in the pool
# ---------------------------------------------------------------------------
def test_study_from_the_pool_is_reproducible_and_draws_kept_instances(demo_pool):
    first = quality.create_study(demo_pool, "one", size=30, seed=5)
    second = quality.create_study(demo_pool, "two", size=30, seed=5)
    items = lambda sid: [(r["candidate_id"], r["instance_id"]) for r in  # noqa: E731
                         demo_pool._rows("SELECT * FROM study_items WHERE study_id = ? ORDER BY position", [sid])]
    assert items(first.study_id) == items(second.study_id) == first.sample.items
    assert len(items(first.study_id)) == 30
    checks = demo_pool._rows(
        "SELECT c.status, i.status AS inst_status, i.candidate_id = c.id AS same FROM study_items si "
        "JOIN candidates c ON c.id = si.candidate_id JOIN instances i ON i.id = si.instance_id "
        "WHERE si.study_id = ?", [first.study_id])
    assert len(checks) == 30
    assert all(r["status"] == "accepted" and r["inst_status"] == "kept" and r["same"] for r in checks)
    study = demo_pool.quality.study(first.study_id)
    assert study["sample_size"] == 30 and study["seed"] == 5 and study["config"]["requested"] == 30
    assert demo_pool.audit.entries(action="create_study")[0]["after"]["items"] == 30


def test_study_filters_by_round_and_stratifies(demo_pool):
    scope = demo_pool.quality.quality_scope()
    assert scope["eligible"] > 50 and [r["round"] for r in scope["rounds"]] == [1, 2, 3]
    only_two = quality.create_study(demo_pool, "round 2", size=10, seed=1, rounds=[2])
    rounds = {r["round"] for r in demo_pool.quality.study_labels(only_two.study_id)} | {
        demo_pool.quality.study_item(only_two.study_id, p)["round"] for p in range(10)}
    assert rounds == {2}
    strat = quality.create_study(demo_pool, "strata", size=20, seed=1, stratify="round")
    sizes = {r["round"]: r["eligible"] for r in scope["rounds"]}
    expected = allocate(sizes, 20)
    drawn = [demo_pool.quality.study_item(strat.study_id, p)["round"] for p in range(20)]
    assert {k: drawn.count(k) for k in sizes} == expected
    everything = quality.create_study(demo_pool, "all", size=10_000, seed=2)
    assert everything.sample.short and len(everything.sample.items) == scope["eligible"]
    assert "fewer than the 10000 asked for" in everything.message()
    with pytest.raises(ValueError):
        quality.create_study(demo_pool, "none", size=5, seed=1, rounds=[99])


def _label(pool, study_id, position, annotator, answers, note=None):
    item = pool.quality.study_item(study_id, position)
    pool.quality.save_label(study_id, item["item_id"], annotator, valid_task=answers[0], input_ok=answers[1],
                    output_ok=answers[2], note=note)
    return item


def test_labels_persist_update_and_resume(demo_db_path):
    with Pool.open(demo_db_path) as pool:
        study_id = quality.create_study(pool, "resume", size=6, seed=9).study_id
        for pos in range(3):
            _label(pool, study_id, pos, "ann", ("yes", "yes", "no"), note=f"n{pos}")
        assert pool.quality.study_progress(study_id, "ann") == {
            "items": 6, "labeled": 3, "first_unlabeled": 3, "queue": 3, "queue_positions": [3, 4, 5],
            "overlap": 1, "complete": 3, "held": 0, "held_until": None, "holding": None}
    with Pool.open(demo_db_path) as pool:  # a new process, later
        progress = pool.quality.study_progress(study_id, "ann")
        assert progress["labeled"] == 3 and progress["first_unlabeled"] == 3
        assert pool.quality.study_progress(study_id, "bob")["first_unlabeled"] == 0
        item = pool.quality.study_item(study_id, 1, "ann")
        assert (item["valid_task"], item["input_ok"], item["output_ok"], item["note"]) == ("yes", "yes", "no", "n1")
        first_stamp = item["labeled_at"]
        _label(pool, study_id, 1, "ann", ("yes", "no", "unsure"), note="changed my mind")
        again = pool.quality.study_item(study_id, 1, "ann")
        assert (again["input_ok"], again["output_ok"], again["note"]) == ("no", "unsure", "changed my mind")
        assert again["labeled_at"] >= first_stamp
        count = pool._scalar("SELECT count(*) FROM labels WHERE study_id = ? AND annotator = 'ann'", [study_id])
        assert count == 3  # updated, not duplicated
        audit = pool.audit.entries(action="label")[0]
        assert audit["actor"] == "ann" and audit["before"]["output_ok"] == "no"
        assert audit["after"]["output_ok"] == "unsure"
        with pytest.raises(PoolError):
            pool.quality.save_label(study_id, item["item_id"], "ann", valid_task="maybe", input_ok="yes", output_ok="yes")
        with pytest.raises(PoolError):
            pool.quality.save_label(study_id, item["item_id"], "  ", valid_task="yes", input_ok="yes", output_ok="yes")
        with pytest.raises(PoolError):
            pool.quality.save_label(study_id + 99, item["item_id"], "ann", valid_task="yes", input_ok="yes", output_ok="yes")


# ---------------------------------------------------------------------------
# Results from labels
# ---------------------------------------------------------------------------
def test_results_one_annotator_with_unsure_as_not_yes(demo_pool):
    study_id = quality.create_study(demo_pool, "r", size=8, seed=4).study_id
    answers = [("yes", "yes", "yes"), ("yes", "yes", "no"), ("yes", "unsure", "yes"), ("no", "no", "no")]
    for pos, a in enumerate(answers):
        _label(demo_pool, study_id, pos, "ann", a)
    result = quality.study_results(demo_pool, study_id)
    assert result.items == 8 and result.labeled == 4 and result.annotators == ["ann"]
    rows = result.overall.set_index("measure")
    assert rows.loc["valid_task", "share"] == 0.75
    assert rows.loc["input_ok", "yes"] == 2 and rows.loc["input_ok", "unsure"] == 1
    assert rows.loc["input_ok", "share"] == 0.5
    assert rows.loc["all_valid", "yes"] == 1 and rows.loc["all_valid", "share"] == 0.25
    assert (rows.loc["valid_task", "low"], rows.loc["valid_task", "high"]) == pytest.approx(wilson_interval(3, 4))
    assert rows.loc["output_ok", "paper"] == 0.58
    by_round = result.by_round
    assert by_round[by_round.measure == "valid_task"]["n"].sum() == 4
    assert set(result.by_group["group"]) <= {"classification", "other", "not classified"}


def test_majority_agreement_and_disagreements_between_annotators(demo_pool):
    study_id = quality.create_study(demo_pool, "two", size=6, seed=8).study_id
    ann = [("yes", "yes", "yes"), ("yes", "no", "no"), ("no", "no", "no"), ("yes", "yes", "unsure")]
    bob = [("yes", "yes", "yes"), ("yes", "yes", "no"), ("no", "no", "no"), ("yes", "yes", "yes")]
    for pos in range(4):
        _label(demo_pool, study_id, pos, "ann", ann[pos])
        _label(demo_pool, study_id, pos, "bob", bob[pos])
    labels = demo_pool.quality.study_labels(study_id)
    consensus = {r["position"]: r for r in quality.item_answers(labels)}
    assert consensus[1]["input_ok"] == "split" and consensus[0]["all_valid"] == "yes"
    assert consensus[3]["output_ok"] == "split" and consensus[3]["all_valid"] == "no"
    kappas = {k["measure"]: k for k in quality.agreement(labels, ["ann", "bob"])}
    # valid task: pairs y/y, y/y, n/n, y/y -> perfect
    assert kappas["valid_task"]["kappa"] == pytest.approx(1.0)
    # input: (y,y),(n,y),(n,n),(y,y): po=.75; ann y .5, bob y .75 -> pe=.5 -> kappa .5
    assert kappas["input_ok"]["kappa"] == pytest.approx(0.5)
    assert kappas["input_ok"]["method"] == "Cohen" and kappas["input_ok"]["items"] == 4
    found = quality.disagreements(labels)
    assert [d["item"] for d in found] == [2, 4]
    assert found[0]["input_ok"] == "ann: no, bob: yes" and found[0]["valid_task"] == ""
    # a third annotator on two items: Fleiss' over the items all three labeled
    for pos in range(2):
        _label(demo_pool, study_id, pos, "cy", ("yes", "yes", "yes"))
    labels = demo_pool.quality.study_labels(study_id)
    fleiss = {k["measure"]: k for k in quality.agreement(labels, ["ann", "bob", "cy"])}
    assert fleiss["valid_task"]["method"] == "Fleiss" and fleiss["valid_task"]["items"] == 2
    assert fleiss["valid_task"]["kappa"] is None and "undefined" in fleiss["valid_task"]["why_undefined"]
    assert quality.agreement(labels, ["ann"]) == []


# ---------------------------------------------------------------------------
# Hooks for the pool and export pages; study export
# ---------------------------------------------------------------------------
def test_labeled_and_invalid_candidate_hooks(demo_pool):
    study_id = quality.create_study(demo_pool, "hooks", size=5, seed=2).study_id
    a = _label(demo_pool, study_id, 0, "ann", ("no", "yes", "yes"))       # one says no: invalid
    b = _label(demo_pool, study_id, 1, "ann", ("no", "yes", "yes"))       # split 1-1: majority keeps it
    _label(demo_pool, study_id, 1, "bob", ("yes", "yes", "no"))
    c = _label(demo_pool, study_id, 2, "ann", ("yes", "yes", "yes"))
    assert demo_pool.quality.labeled_candidate_ids() == {a["candidate_id"], b["candidate_id"], c["candidate_id"]}
    assert demo_pool.quality.invalid_candidate_ids() == {a["candidate_id"]}
    assert demo_pool.quality.invalid_candidate_ids(rule="any") == {a["candidate_id"], b["candidate_id"]}
    assert demo_pool.quality.invalid_instance_ids() == set()
    assert demo_pool.quality.invalid_instance_ids(rule="any") == {b["instance_id"]}
    summary = demo_pool.quality.candidate_label_summary([a["candidate_id"], b["candidate_id"], 10**9])
    assert summary[b["candidate_id"]]["labels"] == 2 and summary[b["candidate_id"]]["valid_no"] == 1
    assert summary[a["candidate_id"]]["invalid"] is True and summary[b["candidate_id"]]["invalid"] is False
    assert 10**9 not in summary
    with pytest.raises(ValueError):
        demo_pool.quality.invalid_candidate_ids(rule="most")


def test_study_export_csv_and_json(demo_pool):
    study_id = quality.create_study(demo_pool, "export", size=4, seed=3).study_id
    _label(demo_pool, study_id, 0, "ann", ("yes", "no", "no"), note='has "quotes", commas')
    _label(demo_pool, study_id, 0, "bob", ("yes", "yes", "no"))
    _label(demo_pool, study_id, 2, "ann", ("no", "no", "no"))
    rows = list(csv.DictReader(io.StringIO(quality.study_csv(demo_pool, study_id).decode("utf-8"))))
    assert list(rows[0]) == quality.STUDY_COLUMNS
    assert [(r["item"], r["annotator"]) for r in rows] == [("1", "ann"), ("1", "bob"), ("2", ""), ("3", "ann"), ("4", "")]
    assert rows[0]["note"] == 'has "quotes", commas' and rows[0]["input_ok"] == "no"
    first = demo_pool.quality.study_item(study_id, 0)
    assert rows[0]["instruction"] == first["instruction"] and rows[0]["output"] == first["output"]
    doc = json.loads(quality.study_json(demo_pool, study_id))
    assert doc["study"]["name"] == "export" and doc["study"]["seed"] == 3
    assert [a["name"] for a in doc["annotators"]] == ["ann", "bob"] and doc["annotators"][0]["labels"] == 2
    assert len(doc["items"]) == 4 and [len(i["labels"]) for i in doc["items"]] == [2, 0, 1, 0]
    assert doc["items"][0]["labels"][1]["annotator"] == "bob"
    assert doc["study"]["paper_rates"]["all_valid"] == 0.54


# ---------------------------------------------------------------------------
# A team of annotators: overlap k, queues, progress, agreement as it accumulates (issue 14)
# ---------------------------------------------------------------------------
def test_overlap_two_gives_each_annotator_a_queue_that_others_complete(demo_db_path):
    with Pool.open(demo_db_path) as pool:
        study_id = quality.create_study(pool, "team", size=4, seed=3, overlap=2).study_id
        assert pool.quality.study(study_id)["overlap"] == 2
        assert "2 annotators per item" in quality.describe_study(pool.quality.studies()[0])
        assert pool.quality.study_progress(study_id, "ann")["queue_positions"] == [0, 1, 2, 3]
        for pos in (0, 1):
            _label(pool, study_id, pos, "ann", ("yes", "yes", "yes"))
        _label(pool, study_id, 0, "bob", ("yes", "no", "yes"))
        # item 0 has its two labels: it leaves carl's queue; item 1 still needs one
        carl = pool.quality.study_progress(study_id, "carl")
        assert carl["queue_positions"] == [1, 2, 3] and carl["labeled"] == 0 and carl["complete"] == 1
        ann = pool.quality.study_progress(study_id, "ann")
        assert ann["queue_positions"] == [2, 3] and ann["labeled"] == 2
        bob = pool.quality.study_progress(study_id, "bob")
        assert bob["queue_positions"] == [1, 2, 3]
        assert quality.next_in_queue(bob["queue_positions"], after=1) == 2
        assert quality.next_in_queue(bob["queue_positions"], after=3) == 1   # back to what was skipped
        assert quality.next_in_queue([], after=0) is None
        _label(pool, study_id, 1, "carl", ("yes", "yes", "no"))
        assert pool.quality.study_progress(study_id, "bob")["queue_positions"] == [2, 3]

        team = pool.quality.study_team_progress(study_id)
        assert {k: team[k] for k in ("overlap", "items", "complete", "labels_needed")} == {
            "overlap": 2, "items": 4, "complete": 2, "labels_needed": 4}
        assert [(a["annotator"], a["labels"], a["queue"]) for a in team["annotators"]] == [
            ("ann", 2, 2), ("bob", 1, 2), ("carl", 1, 2)]

        # agreement over the items with two labels, whoever gave them (Fleiss, m = 2)
        so_far = {r["measure"]: r for r in quality.overlap_agreement(pool.quality.study_labels(study_id), 2)}
        assert so_far["valid_task"]["items"] == 2 and so_far["valid_task"]["method"] == "Fleiss"
        assert so_far["input_ok"]["observed"] == 0.5
        expected = fleiss_kappa([["yes", "no"], ["yes", "yes"]])
        assert so_far["input_ok"]["kappa"] == pytest.approx(expected.value)
        assert quality.overlap_agreement(pool.quality.study_labels(study_id), 1) == []
        with pytest.raises(PoolError, match="Annotators per item"):
            pool.quality.create_study("bad", seed=1, items=[(1, 1)], overlap=0)


def test_concurrent_saves_from_two_threads_are_all_stored(demo_db_path):
    import threading

    with Pool.open(demo_db_path) as pool:
        study_id = quality.create_study(pool, "race", size=30, seed=5, overlap=2).study_id
        items = [pool.quality.study_item(study_id, pos)["item_id"] for pos in range(30)]
        start = threading.Barrier(2)
        errors = []

        def annotate(who, answers):
            try:
                start.wait()
                for item_id in items:
                    pool.quality.save_label(study_id, item_id, who, valid_task=answers, input_ok="yes",
                                    output_ok="unsure", note=f"{who} {item_id}")
                for item_id in items[:10]:   # the same annotator saving again updates, never adds
                    pool.quality.save_label(study_id, item_id, who, valid_task="unsure", input_ok="yes",
                                    output_ok="unsure")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=annotate, args=(who, answer))
                   for who, answer in (("ann", "yes"), ("bob", "no"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        labels = pool.quality.study_labels(study_id)
        assert len(labels) == 60
        assert {(r["item_id"], r["annotator"]) for r in labels} == {(i, w) for i in items for w in ("ann", "bob")}
        for row in labels:
            position = items.index(row["item_id"])
            expected = "unsure" if position < 10 else {"ann": "yes", "bob": "no"}[row["annotator"]]
            assert row["valid_task"] == expected
        assert pool.quality.study_team_progress(study_id)["complete"] == 30

        # one annotator saving the same item from two tabs at once: one label, not two
        for item_id in items[:5]:
            same = threading.Barrier(8)

            def twice(answer, item_id=item_id, same=same):
                same.wait()
                pool.quality.save_label(study_id, item_id, "cat", valid_task=answer, input_ok="yes", output_ok="yes")

            tabs = [threading.Thread(target=twice, args=(a,)) for a in ("yes", "no") * 4]
            for tab in tabs:
                tab.start()
            for tab in tabs:
                tab.join(30)
        cat = [r for r in pool.quality.study_labels(study_id) if r["annotator"] == "cat"]
        assert sorted(r["item_id"] for r in cat) == sorted(items[:5])


def test_four_annotators_in_lockstep_spread_over_the_study(demo_db_path):
    # Issue 22: 12 items, 2 annotators per item, 4 people who open an item at the same moment,
    # then save at the same moment, six times: leases spread them over the whole study.
    import threading

    with Pool.open(demo_db_path) as pool:
        study_id = quality.create_study(pool, "lockstep", size=12, seed=9, overlap=2).study_id
        people = ("ann", "bob", "cat", "dan")
        opened = threading.Barrier(len(people))
        errors, nothing = [], []

        def annotate(who):
            try:
                position = None
                for _ in range(6):
                    position = quality.claim_next(pool, study_id, who, after=position)
                    opened.wait()
                    if position is None:
                        nothing.append(who)
                    else:
                        _label(pool, study_id, position, who, ("yes", "yes", "no"))
                    opened.wait()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=annotate, args=(who,)) for who in people]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors and not nothing
        per_item = {pos: 0 for pos in range(12)}
        for row in pool.quality.study_labels(study_id):
            per_item[row["position"]] += 1
        assert per_item == {pos: 2 for pos in range(12)}
        assert pool.quality.study_leases(study_id) == []   # every save released its lease


def test_a_lease_holds_an_item_until_it_ends_and_never_refuses_a_save(demo_db_path):
    from datetime import timedelta

    from selfinstruct.store.quality import utcnow

    with Pool.open(demo_db_path) as pool:
        study_id = quality.create_study(pool, "leases", size=2, seed=4, overlap=1).study_id
        t0 = utcnow()
        assert quality.claim_next(pool, study_id, "ann", now=t0) == 0
        assert quality.claim_next(pool, study_id, "bob", now=t0) == 1
        cat = pool.quality.study_progress(study_id, "cat", now=t0)
        assert cat["queue_positions"] == [] and cat["held"] == 2
        assert cat["held_until"] == t0 + timedelta(seconds=quality.LABEL_LEASE_S)
        assert quality.claim_next(pool, study_id, "cat", now=t0) is None
        words = quality.nothing_free(cat, 1, now=t0)
        assert words.startswith("Nothing left for you right now: the 2 item(s) that still need a label are on "
                                "other annotators' screens. The first is free again at ")
        assert f"{cat['held_until']:%H:%M} UTC (in about 5 min)" in words
        # Moving to another item releases the first: ann looks at bob's item (full, so not held).
        assert pool.quality.hold_item(study_id, 1, "ann", seconds=60, now=t0) is None
        assert pool.quality.study_progress(study_id, "cat", now=t0)["queue_positions"] == [0]
        # A lease that ends frees its item; a save is never refused, held or not.
        later = t0 + timedelta(seconds=quality.LABEL_LEASE_S + 1)
        assert pool.quality.study_progress(study_id, "cat", now=later)["queue_positions"] == [0, 1]
        _label(pool, study_id, 1, "cat", ("yes", "yes", "yes"))   # bob still holds it (at t0's clock)
        assert [(r["position"], r["annotator"]) for r in pool.quality.study_labels(study_id)] == [(1, "cat")]
        # The finished study: nothing held, the plain "queue is empty" words.
        _label(pool, study_id, 0, "dan", ("yes", "yes", "yes"))
        done = pool.quality.study_progress(study_id, "eve", now=later)
        assert done["held"] == 0 and quality.nothing_free(done, 1).startswith("Your queue is empty")


def test_schema_5_gives_old_studies_one_label_per_item(tmp_path):
    path = tmp_path / "old.duckdb"
    with Pool.open(path, migrate_to=4) as old:
        old._q("INSERT INTO quality_studies (name, sample_size, seed) VALUES ('old', 0, 1)")
    with Pool.open(path) as pool:
        assert pool.schema_version() >= 5
        assert pool.quality.studies()[0]["overlap"] == 1


# ---------------------------------------------------------------------------
# Against the paper (issue 16: "100% / +8 pts vs the paper" after 12 items)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("yes, n, paper, verdict", [
    (0, 0, 0.92, "no data"),
    (9, 9, 0.54, "too small"),      # under ten items nothing is claimed, even far from the paper
    (12, 12, 0.92, "too small"),    # the case: 76%-100% holds 92% but is 24 points wide
    (27, 30, 0.92, "too small"),    # 74%-97%: still wider than 20 points
    (30, 30, 0.92, "consistent"),   # 89%-100%
    (92, 100, 0.92, "consistent"),  # 85%-96%
    (184, 200, 0.92, "consistent"),  # the paper's own count
    (20, 20, 0.54, "above"),        # 84%-100%, wide but clear of 54%
    (0, 12, 0.92, "below"),         # 0%-24%
    (50, 100, 0.79, "below"),       # 40%-60%
])
def test_the_verdict_against_the_paper(yes, n, paper, verdict):
    assert quality.paper_verdict(yes, n, paper) == verdict


def test_the_verdict_follows_the_wilson_interval_and_its_width():
    # Sweep every count at a few sample sizes: the verdict is exactly the documented rule.
    for n in (10, 25, 60, 150, 400):
        for yes in range(n + 1):
            low, high = wilson_interval(yes, n)
            for paper in (0.54, 0.58, 0.79, 0.92):
                verdict = quality.paper_verdict(yes, n, paper)
                if paper < low:
                    assert verdict == "above"
                elif paper > high:
                    assert verdict == "below"
                else:
                    assert verdict == ("consistent" if high - low <= quality.MAX_CONSISTENT_WIDTH
                                       else "too small")


def test_the_sentence_leads_with_the_interval_and_says_too_small_plainly():
    small = quality.compare_with_paper(12, 12, 0.92)
    assert small == ("Too small a sample to compare with the paper's 92%: the interval (76% to 100%) "
                     "includes it but is wider than 20 percentage points; label more items to narrow it.")
    assert quality.compare_with_paper(3, 3, 0.92) == (
        "Too small a sample to compare with the paper's 92%: 3 item(s) labeled, at least 10 needed.")
    assert quality.compare_with_paper(0, 0, 0.92) == "No labeled item yet to compare with the paper's 92%."
    assert quality.compare_with_paper(30, 30, 0.92) == (
        "Consistent with the paper's 92%: it lies inside the interval (89% to 100%).")
    assert quality.compare_with_paper(20, 20, 0.54) == (
        "Above the paper's 54%: the whole interval (84% to 100%) lies higher.")
    assert quality.compare_with_paper(0, 12, 0.92) == (
        "Below the paper's 92%: the whole interval (0% to 24%) lies lower.")
    # No "pts", and every figure carries its %.
    for yes, n in ((12, 12), (30, 30), (20, 20), (0, 12), (92, 100)):
        sentence = quality.compare_with_paper(yes, n, 0.92)
        assert "pts" not in sentence
        figures = re.findall(r"\d+(?:\.\d+)?%?", sentence.replace("20 percentage points", ""))
        assert figures and all(figure.endswith("%") for figure in figures), sentence


def test_a_bound_that_rounds_to_the_papers_figure_shows_a_decimal():
    # An upper bound of 91.6% must not read "to 92%" next to "below the paper's 92%".
    for n in range(10, 400):
        for yes in range(n + 1):
            low, high = wilson_interval(yes, n)
            if f"{high:.0%}" == "92%" and high < 0.92:
                sentence = quality.compare_with_paper(yes, n, 0.92)
                assert f"{high:.1%}" in sentence and "to 92%)" not in sentence
                return
    raise AssertionError("no such case found")
