"""Pool's bulk methods (store/bulk.py), which the benchmarks use to build big pools fast."""
import datetime as dt

import pytest


def test_bulk_rows_land_with_their_ids_and_the_pipeline_continues_after_them(seeded):
    pool = seeded
    run_id = pool.runs.create({"model": "bulk"})
    round_id = pool.runs.create_round(run_id, 1, "done")
    first = pool.bulk.next_id("candidates")
    n = pool.bulk.bulk_insert("candidates", {
        "id": [first, first + 1, first + 2],
        "round_id": [round_id] * 3,
        "position": [0, 1, 2],
        "instruction": ["Name a river in Spain.", "Write a haiku about rain.", "Draw the graph."],
        "status": ["accepted", "accepted", "rejected"],
        "reason": [None, None, "keyword"],
    }, constants={"run_id": run_id})
    assert n == 3
    assert pool.bulk.bulk_insert("instances", {"candidate_id": [first], "position": [0], "input": [""],
                                          "output": ["The Ebro."]}) == 1
    pool.bulk.set_round_times(round_id, dt.datetime(2026, 1, 5, 9), dt.datetime(2026, 1, 5, 9, 1, 20))
    pool.bulk.checkpoint()

    assert pool.bulk.candidate_ids(status="accepted") == [first, first + 1]
    assert pool.bulk.candidate_ids(exclude_reasons=["keyword"], run_id=run_id) == [first, first + 1]
    assert pool.bulk.next_id("candidates") == first + 3
    added = pool.requests.add_candidates(run_id, round_id, [{"instruction": "Give a synonym for happy.",
                                                    "status": "accepted", "position": 3}])
    assert min(added) > first + 2          # the id sequence moved past the bulk rows
    summary = pool.bulk.bulk_summary()
    assert summary["rejects_by_reason"] == {"keyword": 1}
    assert summary["requests"] == 0
    figures = pool.bulk.run_figures(run_id)
    assert figures["accepted"] == 3 and figures["requests"] == 0 and figures["wall_s"] is None
    assert pool.bulk.request_timeline(run_id) == []


def test_bulk_insert_refuses_other_tables_and_unknown_columns(pool):
    with pytest.raises(ValueError, match="not 'audit_log'"):
        pool.bulk.bulk_insert("audit_log", {"id": [1]})
    with pytest.raises(ValueError, match="no column"):
        pool.bulk.bulk_insert("instances", {"candidate_id": [1], "colour": ["red"]})
    assert pool.bulk.bulk_insert("instances", {"candidate_id": []}) == 0
