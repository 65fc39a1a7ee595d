"""The actions layer: one audit format for every change, one undo primitive, old audit rows."""
import json

import pytest

from selfinstruct import actions
from selfinstruct.actions import ActionError, UndoRefused
from selfinstruct.model import CANDIDATE, INSTANCE, SEED_TASK
from selfinstruct.seeds import SeedTask
from selfinstruct.store.audit import STATE_COLUMNS
from tests.test_export import build_small_pool


@pytest.fixture
def small(pool):
    return pool, build_small_pool(pool)


def entry(pool, audit_id):
    return pool.audit.audit_entry(audit_id)


def candidate(pool, cid):
    return pool.audit.read_state(CANDIDATE, cid)


def old_row(pool, actor, action, kind, target_id, reason, before, after) -> int:
    """An audit row written as the code before the actions layer wrote it (raw JSON)."""
    return pool.cursor().execute(
        "INSERT INTO audit_log (actor, action, target_kind, target_id, reason, before, after) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [actor, action, kind, target_id, reason, None if before is None else json.dumps(before),
         None if after is None else json.dumps(after)]).fetchone()[0]


# --------------------------------------------------------------------------- one format
def test_rejects_and_pool_actions_write_the_same_audit_format(small):
    pool, ids = small
    rescue = actions.rescue(pool, [ids["G3"]], actor="ana", reason="fine")
    remove = actions.remove(pool, ids["G6"], actor="bo", reason="off topic")
    edit = actions.edit_instance(pool, pool.explore.pool_item(ids["G1"])["instances"][0]["id"], input="x",
                                 output="Rivers feed us.", actor="cy")
    seed = actions.edit_seed(pool, ids["S1"], actor="di", instruction="Translate the word into German.")
    for outcome in (rescue, remove, edit, seed):
        assert len(outcome.audit_ids) == len(set(outcome.audit_ids)) >= 1
        for audit_id in outcome.audit_ids:
            row = entry(pool, audit_id)
            cols = set(STATE_COLUMNS[row["target_kind"]])
            assert set(row["before"]) == cols                       # the whole state before ...
            assert set(row["after"]) == cols | {"batch"}            # ... and after, with the call's batch
            assert row["after"]["batch"] == outcome.batch
            assert row["target_id"] is not None and row["undone_by"] is None
    assert [entry(pool, i)["target_kind"] for i in edit.audit_ids] == [INSTANCE, CANDIDATE]
    assert entry(pool, edit.audit_ids[1])["action"] == actions.APPROVE   # the edit vouched for its task
    # the two pages list their own actions, one row per call
    rejects = actions.history(pool, actions.REJECTS_ACTIONS)
    assert [(r["batch"], r["action"], r["items"], r["open"]) for r in rejects] == [(rescue.batch, "rescue", 1, 1)]
    pool_log = actions.history(pool, actions.POOL_ACTIONS, undos=False)
    assert [(r["batch"], r["action"], r["target_id"], r["items"]) for r in pool_log] == [
        (edit.batch, "edit_instance", edit.done[0], 2), (remove.batch, "remove", ids["G6"], 1)]


# --------------------------------------------------------------------------- one undo
def test_a_pool_action_and_a_rejects_bulk_action_undo_through_the_same_primitive(small):
    pool, ids = small
    rescued = actions.rescue(pool, [ids["G3"]], actor="ana")
    before = {k: candidate(pool, ids[k]) for k in ("G2", "G4", "G5")}
    removed = [actions.remove(pool, ids[k], actor="bo") for k in ("G2", "G4")]
    bulk = actions.confirm(pool, [ids["G2"], ids["G4"], ids["G3"]], actor="bo", reason="rightly out")
    assert bulk.done == [ids["G2"], ids["G4"]] and bulk.skipped == [(ids["G3"], "it is accepted (undo the rescue instead)")]

    undone_bulk = actions.undo_batch(pool, bulk.batch, actor="cy")           # the Rejects page's log
    undone_remove = actions.undo_batch(pool, removed[0].batch, actor="cy")   # the Pool page's list
    assert sorted(undone_bulk.done) == sorted(bulk.audit_ids) and undone_remove.done == removed[0].audit_ids
    assert candidate(pool, ids["G2"]) == before["G2"]
    assert candidate(pool, ids["G4"])["status"] == "rejected"                # its removal still stands
    for undone, originals in ((undone_bulk, bulk.audit_ids), (undone_remove, removed[0].audit_ids)):
        rows = [entry(pool, i) for i in undone.audit_ids]
        assert {r["action"] for r in rows} == {"undo"} and {r["actor"] for r in rows} == {"cy"}
        assert {r["after"]["batch"] for r in rows} == {undone.batch}
        assert sorted(r["after"]["undoes"] for r in rows) == sorted(originals)
        assert all(entry(pool, o)["undone_by"] in undone.audit_ids for o in originals)
    with pytest.raises(UndoRefused, match="Nothing left to undo"):
        actions.undo_batch(pool, bulk.batch, actor="cy")
    # the rescue is undone the same way, and the log shows the undo under the Rejects page
    actions.undo(pool, rescued.audit_ids[0], actor="cy")
    assert candidate(pool, ids["G3"])["status"] == "rejected"
    assert [r["action"] for r in actions.history(pool)][:2] == ["undo", "undo"]


def test_undo_refuses_when_the_item_changed_since_and_names_the_later_change(small):
    pool, ids = small
    rescued = actions.rescue(pool, [ids["G3"]], actor="ana")
    actions.edit_instruction(pool, ids["G3"], "Write a haiku about the first snow.", actor="bo")
    with pytest.raises(UndoRefused, match=r"candidate \d+ changed since by entry #\d+ \(edit_candidate, bo\): "
                                          r"instruction is now 'Write a haiku about the first snow.'"):
        actions.undo(pool, rescued.audit_ids[0], actor="ana")
    refused = actions.undo_batch(pool, rescued.batch, actor="ana")          # a batch reports it instead
    assert not refused.done and "edit_candidate, bo" in refused.skipped[0][1]
    assert candidate(pool, ids["G3"])["instruction"] == "Write a haiku about the first snow."
    assert entry(pool, rescued.audit_ids[0])["undone_by"] is None


def test_seed_edits_and_deletes_undo_and_an_import_is_refused_in_words(small):
    pool, ids = small
    first = pool.audit.read_state(SEED_TASK, ids["S2"])
    edit = actions.edit_seed(pool, ids["S2"], actor="ana", output="good", name="sentiment")
    assert pool.audit.read_state(SEED_TASK, ids["S2"])["instances"][0] == {"input": "Great film.", "output": "good"}
    actions.undo(pool, edit.audit_ids[0], actor="ana")
    assert pool.audit.read_state(SEED_TASK, ids["S2"]) == first
    deleted = actions.delete_seeds(pool, [ids["S2"], 999_999], actor="ana")
    assert deleted.done == [ids["S2"]] and deleted.skipped == [(999_999, "there is no seed task 999999")]
    assert pool.audit.read_state(SEED_TASK, ids["S2"]) is None and entry(pool, deleted.audit_ids[0])["after"]["absent"]
    actions.undo_batch(pool, deleted.batch, actor="ana")
    assert pool.audit.read_state(SEED_TASK, ids["S2"]) == first                   # back, with both instances
    imported = actions.import_seeds(pool, [SeedTask("Name a color.", []), SeedTask("Name a fruit.", [])],
                                    origin="t", actor="ana")
    row = entry(pool, imported.audit_ids[0])
    assert row["after"]["count"] == 2 and row["after"]["id_ranges"] == [[imported.done[0], imported.done[1]]]
    with pytest.raises(UndoRefused, match="cannot be undone. Delete the imported seed tasks"):
        actions.undo(pool, imported.audit_ids[0], actor="ana")
    with pytest.raises(ActionError, match="There is no seed task"):
        actions.edit_seed(pool, 999_999, actor="ana", name="x")


# --------------------------------------------------------------------------- old rows
def test_old_rejects_rows_are_listed_and_undone(small):
    """The Rejects page's rows from before: partial states, the batch inside `after`."""
    pool, ids = small
    cid = ids["G3"]
    pool.audit.write_state(CANDIDATE, cid, {"status": "accepted", "decided_by": "human", "review": "rescued"})
    audit_id = old_row(pool, "ana", "rescue", "candidate", cid, "old reason",
                       {"status": "rejected", "reason": "rouge", "review": None, "decided_by": "filter"},
                       {"status": "accepted", "reason": "rouge", "review": "rescued", "batch": "0ldb4tch0000"})
    [log] = actions.history(pool)
    assert (log["batch"], log["id"], log["action"], log["items"], log["open"]) == \
        ("0ldb4tch0000", audit_id, "rescue", 1, 1)
    undone = actions.undo_batch(pool, "0ldb4tch0000", actor="bo")
    assert undone.done == [audit_id]
    assert candidate(pool, cid) == {"instruction": "Write a haiku about autumn leaves falling.", "status": "rejected",
                                    "reason": "rouge", "decided_by": "filter", "review": None}
    assert actions.history(pool)[1]["open"] == 0


def test_old_pool_rows_are_listed_and_undone(small):
    """The Pool page's rows from before: whole states, no batch, an instance edit with its task inside."""
    pool, ids = small
    g6 = candidate(pool, ids["G6"])
    removed = {**g6, "status": "rejected", "reason": "removed", "decided_by": "human"}
    pool.audit.write_state(CANDIDATE, ids["G6"], removed)
    remove_id = old_row(pool, "cy", "remove", "candidate", ids["G6"], "off topic", g6, removed)
    inst = pool.explore.pool_item(ids["G1"])["instances"][0]
    inst_before = {"input": inst["input"], "output": inst["output"], "status": "kept", "reason": None,
                   "candidate_id": ids["G1"], "seed_id": None}
    inst_after = {**inst_before, "output": "Rivers feed us."}
    task_before = candidate(pool, ids["G1"])
    task_after = {**task_before, "decided_by": "human", "review": "approved"}
    pool.audit.write_state(INSTANCE, inst["id"], inst_after)
    pool.audit.write_state(CANDIDATE, ids["G1"], task_after)
    edit_id = old_row(pool, "cy", "edit_instance", "instance", inst["id"], None,
                      {**inst_before, "task": task_before}, {**inst_after, "task": task_after})

    listed = actions.history(pool, actions.POOL_ACTIONS, undos=False)
    assert [(r["id"], r["batch"], r["action"], r["open"]) for r in listed] == [
        (edit_id, f"#{edit_id}", "edit_instance", 1), (remove_id, f"#{remove_id}", "remove", 1)]
    actions.undo_batch(pool, f"#{remove_id}", actor="cy")                   # what the page's button does
    assert candidate(pool, ids["G6"]) == g6
    done = actions.undo(pool, edit_id, actor="cy")
    assert pool.audit.read_state(INSTANCE, inst["id"])["output"] == inst["output"]
    assert candidate(pool, ids["G1"]) == task_before                       # its task is restored too
    assert [entry(pool, i)["target_kind"] for i in done.audit_ids] == [INSTANCE, CANDIDATE]
    assert [r["open"] for r in actions.history(pool, actions.POOL_ACTIONS, undos=False)] == [0, 0]


def test_old_rows_refuse_like_new_ones(small):
    pool, ids = small
    g2 = candidate(pool, ids["G2"])
    approved = {**g2, "decided_by": "human", "review": "approved"}
    pool.audit.write_state(CANDIDATE, ids["G2"], approved)
    approve_id = old_row(pool, "eve", "approve", "candidate", ids["G2"], None, g2, approved)
    actions.edit_instruction(pool, ids["G2"], "Decide if the number is odd.", actor="fay")
    with pytest.raises(UndoRefused, match=r"changed since by entry #\d+ \(edit_candidate, fay\)"):
        actions.undo(pool, approve_id, actor="eve")
    old_undo = old_row(pool, "eve", "undo", "candidate", ids["G2"], f"undo of audit entry {approve_id}",
                       approved, g2)
    with pytest.raises(UndoRefused, match="itself an undo"):
        actions.undo(pool, old_undo, actor="eve")
    old_import = old_row(pool, "cli", "import_seeds", "seed_tasks", None, None, None, {"origin": "x", "count": 3})
    with pytest.raises(UndoRefused, match="cannot be undone"):
        actions.undo(pool, old_import, actor="eve")
    # an old seed deletion (after = NULL) is undone by putting the seed back
    gone = pool.audit.read_state(SEED_TASK, ids["S3"])
    pool.audit.write_state(SEED_TASK, ids["S3"], None)
    delete_id = old_row(pool, "di", "delete_seed", "seed_task", ids["S3"], None, gone, None)
    actions.undo(pool, delete_id, actor="di")
    assert pool.audit.read_state(SEED_TASK, ids["S3"]) == gone
