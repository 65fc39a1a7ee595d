"""The audit log, and the state of the things a person can change: data only.

What may change, why, in which words, and how an undo decides are the business of
`selfinstruct/actions.py`; this module reads and writes rows for it:

* a target's **state** (`read_state` / `write_state`): the columns an audit row records and an
  undo restores, per target kind (`STATE_COLUMNS`). A seed task's state holds its instances
  (and its first one's input and output, as the Seed page shows them); `None` means the target
  does not exist (a deleted seed task).
* **audit rows** (`append_audit`, `audit_entry`, `set_undone_by`, `later_audit`,
  `batch_entry_ids`, `audit_batches`). Rows of one action share a batch key, stored in
  `after.batch`; rows written before batches existed (the Pool page's first audit rows) form a
  batch of their own, keyed `#<id>` (`batch_sql`).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..model import CANDIDATE, INSTANCE, SEED_TASK
from .core import _loads

# The columns each kind of target records in an audit row. Read-only ones (not written back by
# `write_state`): an instance's candidate_id, a seed's id and its first instance's input/output.
STATE_COLUMNS: dict[str, tuple[str, ...]] = {
    CANDIDATE: ("instruction", "status", "reason", "decided_by", "review"),
    INSTANCE: ("input", "output", "status", "reason", "candidate_id"),
    SEED_TASK: ("id", "name", "instruction", "is_classification", "input", "output", "instances"),
}
_WRITABLE = {
    CANDIDATE: ("instruction", "status", "reason", "decided_by", "review"),
    INSTANCE: ("input", "output", "status", "reason"),
    SEED_TASK: ("name", "instruction", "is_classification"),
}


def batch_sql(alias: str = "") -> str:
    """The batch an audit row belongs to (a row from before batches is a batch of one)."""
    a = f"{alias}." if alias else ""
    return f"coalesce(json_extract_string({a}after, '$.batch'), '#' || {a}id::VARCHAR)"


def _kind(kind: str) -> str:
    if kind not in STATE_COLUMNS:
        raise ValueError(f"target kind must be one of {tuple(STATE_COLUMNS)}, not {kind!r}")
    return kind


def _decoded(row: dict) -> dict:
    row["before"], row["after"] = _loads(row["before"]), _loads(row["after"])
    return row


class AuditQueries:
    # -- state of a target ---------------------------------------------------------
    def read_state(self, kind: str, target_id: int) -> dict | None:
        """The target's STATE_COLUMNS as a dict, or None when there is no such row."""
        kind, target_id = _kind(kind), int(target_id)
        if kind == SEED_TASK:
            return self._seed_state(target_id)
        cols = STATE_COLUMNS[kind]
        table = "candidates" if kind == CANDIDATE else "instances"
        row = self._q(f"SELECT {', '.join(cols)} FROM {table} WHERE id = ?", [target_id]).fetchone()
        return None if row is None else dict(zip(cols, row))

    def write_state(self, kind: str, target_id: int, state: dict | None) -> None:
        """Write the writable columns present in `state`. For a seed task, `None` deletes it
        (with its instances), a state for a missing id inserts it under that id, and
        `instances` (when given) replaces its instances position by position."""
        kind, target_id = _kind(kind), int(target_id)
        if kind == SEED_TASK:
            self._write_seed(target_id, state)
            return
        if state is None:
            raise ValueError(f"a {kind} cannot be deleted")
        cols = [c for c in _WRITABLE[kind] if c in state]
        if not cols:
            return
        table = "candidates" if kind == CANDIDATE else "instances"
        sets = ", ".join(f"{c} = ?" for c in cols)
        if kind == CANDIDATE:
            sets += ", updated_at = current_timestamp"
        self._q(f"UPDATE {table} SET {sets} WHERE id = ?", [*(state[c] for c in cols), target_id])

    def _seed_state(self, seed_id: int) -> dict | None:
        row = self._q("SELECT id, name, instruction, is_classification FROM seed_tasks WHERE id = ?",
                      [seed_id]).fetchone()
        if row is None:
            return None
        instances = self._q("SELECT input, output FROM instances WHERE seed_id = ? ORDER BY position",
                            [seed_id]).fetchall()
        first = instances[0] if instances else ("", "")
        return {"id": row[0], "name": row[1], "instruction": row[2], "is_classification": row[3],
                "input": first[0], "output": first[1],
                "instances": [{"input": i, "output": o} for i, o in instances]}

    def _write_seed(self, seed_id: int, state: dict | None) -> None:
        cur = self.cursor()
        if state is None:
            cur.execute("DELETE FROM instances WHERE seed_id = ?", [seed_id])
            cur.execute("DELETE FROM seed_tasks WHERE id = ?", [seed_id])
            return
        exists = cur.execute("SELECT count(*) FROM seed_tasks WHERE id = ?", [seed_id]).fetchone()[0]
        if not exists:
            cur.execute("INSERT INTO seed_tasks (id, source_id, name, instruction, is_classification, origin) "
                        "VALUES (?, NULL, ?, ?, ?, NULL)",
                        [seed_id, state.get("name"), state["instruction"], bool(state.get("is_classification"))])
        else:
            cols = [c for c in _WRITABLE[SEED_TASK] if c in state]
            if cols:
                cur.execute(f"UPDATE seed_tasks SET {', '.join(f'{c} = ?' for c in cols)}, "
                            "updated_at = current_timestamp WHERE id = ?", [*(state[c] for c in cols), seed_id])
        if "instances" not in state:
            return
        wanted = list(state["instances"] or [])
        have = cur.execute("SELECT position, input, output FROM instances WHERE seed_id = ? ORDER BY position",
                           [seed_id]).fetchall()
        for position, inp, out in have:
            if position >= len(wanted):
                cur.execute("DELETE FROM instances WHERE seed_id = ? AND position = ?", [seed_id, position])
            elif (inp, out) != (wanted[position]["input"], wanted[position]["output"]):
                cur.execute("UPDATE instances SET input = ?, output = ? WHERE seed_id = ? AND position = ?",
                            [wanted[position]["input"], wanted[position]["output"], seed_id, position])
        present = {row[0] for row in have}
        missing = [[seed_id, p, inst["input"], inst["output"]] for p, inst in enumerate(wanted) if p not in present]
        if missing:
            cur.executemany("INSERT INTO instances (seed_id, position, input, output) VALUES (?, ?, ?, ?)", missing)

    # -- audit rows ----------------------------------------------------------------
    def append_audit(self, actor: str, action: str, target_kind: str | None, target_id: int | None,
                     reason: str | None, before: Any, after: Any) -> int:
        """Write one audit row (before/after as JSON) on this thread's cursor; its id."""
        return self._audit(self.cursor(), actor, action, target_kind, target_id, reason, before, after)

    def audit_entry(self, audit_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM audit_log WHERE id = ?", [int(audit_id)])
        return _decoded(rows[0]) if rows else None

    def set_undone_by(self, audit_id: int, undo_id: int) -> None:
        self._q("UPDATE audit_log SET undone_by = ? WHERE id = ?", [int(undo_id), int(audit_id)])

    def later_audit(self, target_kind: str, target_id: int, audit_id: int) -> dict | None:
        """The newest audit row about this target written after entry `audit_id`."""
        rows = self._rows("SELECT * FROM audit_log WHERE target_kind = ? AND target_id = ? AND id > ? "
                          "ORDER BY id DESC LIMIT 1", [target_kind, int(target_id), int(audit_id)])
        return _decoded(rows[0]) if rows else None

    def batch_entry_ids(self, batch: str, *, actions: Sequence[str], open_only: bool = True) -> list[int]:
        """Ids of a batch's rows whose action is one of `actions`, newest first."""
        return [r[0] for r in self._q(
            f"SELECT id FROM audit_log WHERE {batch_sql()} = ? AND list_contains(?::VARCHAR[], action) "
            + ("AND undone_by IS NULL " if open_only else "") + "ORDER BY id DESC",
            [batch, list(actions)]).fetchall()]

    def audit_batches(self, actions: Iterable[str], *, undo_action: str | None = None,
                      limit: int = 10) -> list[dict]:
        """Recent batches of rows whose action is one of `actions` (and, with `undo_action`, the
        rows of that action that undid one of them), newest first, one row per batch: batch, id
        and first_id (its first row), last_id, created_at, actor, action, target_kind, target_id
        (of its first row), reason, items, open (rows not undone), target_ids."""
        actions = list(actions)
        marks = ", ".join("?" for _ in actions)
        undo_clause = (f"OR (a.action = ? AND a.id IN (SELECT o.undone_by FROM audit_log o "
                       f"WHERE o.action IN ({marks}) AND o.undone_by IS NOT NULL))") if undo_action else ""
        params: list[Any] = actions + ([undo_action, *actions] if undo_action else []) + [int(limit)]
        # First the newest `limit` batches (ids and keys only), then the details of their rows.
        return self._rows(
            f"WITH r AS (SELECT a.id, {batch_sql('a')} AS batch FROM audit_log a "
            f"WHERE a.action IN ({marks}) {undo_clause}), "
            "top AS (SELECT batch, min(id) AS first_id FROM r GROUP BY batch ORDER BY first_id DESC LIMIT ?) "
            "SELECT top.batch, top.first_id AS id, top.first_id, max(a.id) AS last_id, "
            "max(a.created_at) AS created_at, arg_min(a.actor, a.id) AS actor, arg_min(a.action, a.id) AS action, "
            "arg_min(a.target_kind, a.id) AS target_kind, arg_min(a.target_id, a.id) AS target_id, "
            "arg_min(a.reason, a.id) AS reason, count(*) AS items, "
            "count(*) FILTER (WHERE a.undone_by IS NULL) AS open, list(a.target_id ORDER BY a.id) AS target_ids "
            "FROM top JOIN r ON r.batch = top.batch JOIN audit_log a ON a.id = r.id "
            "GROUP BY top.batch, top.first_id ORDER BY top.first_id DESC", params)


__all__ = ["AuditQueries", "STATE_COLUMNS", "batch_sql"]
