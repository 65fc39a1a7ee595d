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

from ..model import CANDIDATE, INSTANCE, SEED_TASK, TOPIC_MARK
from .core import Queries, _dumps, _loads

# The columns each kind of target records in an audit row. Read-only ones (not written back by
# `write_state`): an instance's candidate_id, a seed's id and its first instance's input/output.
STATE_COLUMNS: dict[str, tuple[str, ...]] = {
    CANDIDATE: ("instruction", "status", "reason", "decided_by", "review"),
    INSTANCE: ("input", "output", "status", "reason", "candidate_id"),
    SEED_TASK: ("id", "name", "instruction", "is_classification", "input", "output", "instances"),
    TOPIC_MARK: ("mark", "name", "embedder", "set_id", "topic", "active"),
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


def _bulk_target(kind: str) -> tuple[str, tuple[str, ...]]:
    """The table and state columns of the two kinds a bulk Rejects action changes."""
    if kind not in (CANDIDATE, INSTANCE):
        raise ValueError(f"bulk states are for {CANDIDATE} and {INSTANCE} targets, not {kind!r}")
    return ("candidates" if kind == CANDIDATE else "instances"), STATE_COLUMNS[kind]


class AuditQueries(Queries):
    # -- state of a target ---------------------------------------------------------
    def read_state(self, kind: str, target_id: int) -> dict | None:
        """The target's STATE_COLUMNS as a dict, or None when there is no such row."""
        kind, target_id = _kind(kind), int(target_id)
        if kind == SEED_TASK:
            return self._seed_state(target_id)
        if kind == TOPIC_MARK:
            return self.pool.topics.read_mark(target_id)
        cols = STATE_COLUMNS[kind]
        table = "candidates" if kind == CANDIDATE else "instances"
        row = self.pool._q(f"SELECT {', '.join(cols)} FROM {table} WHERE id = ?", [target_id]).fetchone()
        return None if row is None else dict(zip(cols, row))

    def write_state(self, kind: str, target_id: int, state: dict | None) -> None:
        """Write the writable columns present in `state`. For a seed task, `None` deletes it
        (with its instances), a state for a missing id inserts it under that id, and
        `instances` (when given) replaces its instances position by position."""
        kind, target_id = _kind(kind), int(target_id)
        if kind == SEED_TASK:
            self._write_seed(target_id, state)
            return
        if kind == TOPIC_MARK:
            self.pool.topics.write_mark(target_id, state)
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
        self.pool._q(f"UPDATE {table} SET {sets} WHERE id = ?", [*(state[c] for c in cols), target_id])

    def _seed_state(self, seed_id: int) -> dict | None:
        row = self.pool._q("SELECT id, name, instruction, is_classification FROM seed_tasks WHERE id = ?",
                      [seed_id]).fetchone()
        if row is None:
            return None
        instances = self.pool._q("SELECT input, output FROM instances WHERE seed_id = ? ORDER BY position",
                            [seed_id]).fetchall()
        first = instances[0] if instances else ("", "")
        return {"id": row[0], "name": row[1], "instruction": row[2], "is_classification": row[3],
                "input": first[0], "output": first[1],
                "instances": [{"input": i, "output": o} for i, o in instances]}

    def _write_seed(self, seed_id: int, state: dict | None) -> None:
        cur = self.pool.cursor()
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
    def entries(self, limit: int = 100, action: str | None = None) -> list[dict]:
        """The newest audit rows (of one action, if given), before/after decoded."""
        sql = "SELECT * FROM audit_log"
        params: list[Any] = []
        if action:
            sql += " WHERE action = ?"
            params.append(action)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_decoded(row) for row in self.pool._rows(sql, params)]

    def append_audit(self, actor: str, action: str, target_kind: str | None, target_id: int | None,
                     reason: str | None, before: Any, after: Any) -> int:
        """Write one audit row (before/after as JSON) on this thread's cursor; its id."""
        return self.pool._audit(self.pool.cursor(), actor, action, target_kind, target_id, reason, before, after)

    def audit_entry(self, audit_id: int) -> dict | None:
        rows = self.pool._rows("SELECT * FROM audit_log WHERE id = ?", [int(audit_id)])
        return _decoded(rows[0]) if rows else None

    def set_undone_by(self, audit_id: int, undo_id: int) -> None:
        self.pool._q("UPDATE audit_log SET undone_by = ? WHERE id = ?", [int(undo_id), int(audit_id)])

    def later_audit(self, target_kind: str, target_id: int, audit_id: int) -> dict | None:
        """The newest audit row about this target written after entry `audit_id`."""
        rows = self.pool._rows("SELECT * FROM audit_log WHERE target_kind = ? AND target_id = ? AND id > ? "
                          "ORDER BY id DESC LIMIT 1", [target_kind, int(target_id), int(audit_id)])
        return _decoded(rows[0]) if rows else None

    def batch_entry_ids(self, batch: str, *, actions: Sequence[str], open_only: bool = True) -> list[int]:
        """Ids of a batch's rows whose action is one of `actions`, newest first."""
        return [r[0] for r in self.pool._q(
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
        return self.pool._rows(
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

    # -- many targets at once (bulk actions) --------------------
    # The set-based twins of read_state / write_state / append_audit above, for candidates
    # and instances: the same columns (STATE_COLUMNS) and the same audit row, in a few
    # statements whatever the number of targets. Only data: actions.py decides what changes.
    def read_states(self, kind: str, ids: Sequence[int]) -> dict[int, dict]:
        """{id: state} for the candidates or instances among `ids` that exist."""
        table, cols = _bulk_target(kind)
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        rows = self.pool._q(f"SELECT t.id, {', '.join('t.' + c for c in cols)} FROM {table} t "
                       "WHERE t.id IN (SELECT unnest(?::BIGINT[]))", [ids]).fetchall()
        return {int(row[0]): dict(zip(cols, row[1:])) for row in rows}

    def write_states(self, kind: str, states: Sequence[tuple[int, dict]]) -> None:
        """Write each (id, state)'s writable columns in one UPDATE (every state must carry the
        same writable columns, as whole states do)."""
        table, _ = _bulk_target(kind)
        states = list(states)
        if not states:
            return
        cols = [c for c in _WRITABLE[kind] if c in states[0][1]]
        if any(set(c for c in _WRITABLE[kind] if c in s) != set(cols) for _, s in states):
            raise ValueError("write_states needs the same columns in every state")
        if not cols:
            return
        sets = ", ".join(f"{c} = u.{c}" for c in cols)
        if kind == CANDIDATE:
            sets += ", updated_at = current_timestamp"
        unnests = ", ".join(["unnest(?::BIGINT[]) AS id"] + [f"unnest(?::VARCHAR[]) AS {c}" for c in cols])
        self.pool._q(f"UPDATE {table} SET {sets} FROM (SELECT {unnests}) u WHERE {table}.id = u.id",
                [[int(i) for i, _ in states], *([s[c] for _, s in states] for c in cols)])

    def append_audits(self, actor: str, action: str, target_kind: str,
                      rows: Sequence[tuple[int, str | None, Any, Any]]) -> list[int]:
        """One audit row per (target_id, reason, before, after), as `append_audit` writes it,
        in one INSERT; their ids, in the order of `rows` (one row per target)."""
        rows = list(rows)
        if not rows:
            return []
        targets = [int(t) for t, _, _, _ in rows]
        got = self.pool._q(
            "INSERT INTO audit_log (actor, action, target_kind, target_id, reason, before, after) "
            "SELECT ?, ?, ?, u.target_id, u.reason, u.before, u.after FROM (SELECT "
            "unnest(?::BIGINT[]) AS target_id, unnest(?::VARCHAR[]) AS reason, unnest(?::VARCHAR[]) AS before, "
            "unnest(?::VARCHAR[]) AS after, generate_subscripts(?::BIGINT[], 1) AS n) u ORDER BY u.n "
            "RETURNING id, target_id",
            [actor, action, target_kind, targets, [r for _, r, _, _ in rows], [_dumps(b) for _, _, b, _ in rows],
             [_dumps(a) for _, _, _, a in rows], targets]).fetchall()
        by_target = {int(t): int(i) for i, t in got}
        if len(by_target) != len(rows):
            raise ValueError("append_audits takes one row per target")
        return [by_target[t] for t in targets]

    def audit_rows(self, audit_ids: Sequence[int]) -> list[dict]:
        """Audit rows by id (before/after decoded), in the order of `audit_ids`."""
        ids = [int(i) for i in audit_ids]
        if not ids:
            return []
        rows = {r["id"]: r for r in self.pool._rows(
            "SELECT * FROM audit_log WHERE id IN (SELECT unnest(?::BIGINT[]))", [ids])}
        return [_decoded(rows[i]) for i in ids if i in rows]

    def set_undone_by_many(self, pairs: Sequence[tuple[int, int]]) -> None:
        """`set_undone_by` for many (audit_id, undo_id) pairs in one UPDATE."""
        pairs = list(pairs)
        if pairs:
            self.pool._q("UPDATE audit_log SET undone_by = u.undo_id FROM (SELECT unnest(?::BIGINT[]) AS audit_id, "
                    "unnest(?::BIGINT[]) AS undo_id) u WHERE audit_log.id = u.audit_id",
                    [[int(a) for a, _ in pairs], [int(u) for _, u in pairs]])


__all__ = ["AuditQueries", "STATE_COLUMNS", "batch_sql"]
