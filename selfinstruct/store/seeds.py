"""Seed tasks: insert and list (edits, deletes and audited imports go through selfinstruct/actions.py)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..model import SQL
from .core import Queries

_TASK_COLUMNS = ("task", "source_id", "name", "instruction", "is_classification")
_INSTANCE_COLUMNS = ("task", "position", "input", "output")


def _temp_name(prefix: str) -> str:
    return f"_{prefix}_{uuid.uuid4().hex[:12]}"


def _task_schema():
    import pyarrow as pa

    return pa.schema([("task", pa.int64()), ("source_id", pa.string()), ("name", pa.string()),
                      ("instruction", pa.string()), ("is_classification", pa.bool_())])


def _instance_schema():
    import pyarrow as pa

    return pa.schema([("task", pa.int64()), ("position", pa.int32()), ("input", pa.string()),
                      ("output", pa.string())])


@dataclass
class StagedSeeds:
    """A bulk seed import on its way in: `tasks` holds the task columns (task = its number in
    the import, from 0; source_id, name, instruction, is_classification) and `table` names the
    temporary table (or registered view) holding their instances."""
    table: str
    tasks: dict[str, list] = field(default_factory=dict)
    registered: bool = False

    @property
    def count(self) -> int:
        return len(self.tasks.get("task", ()))


class SeedQueries(Queries):
    # -- seeds ---------------------------------------------------------------
    def insert_seed_tasks(self, tasks: Iterable[Any] | "StagedSeeds", *, origin: str) -> list[int]:
        """Insert seed tasks and their instances on this thread's cursor; their new ids, in
        order. `tasks` is either objects with instruction, instances, is_classification, name,
        source_id, or a `StagedSeeds` (a bulk import: the instances already staged in a
        temporary table with `stage_seed_instances`). Either way the rows go in with two
        set-based INSERTs (DuckDB's per-row inserts and executemany cost milliseconds a row).
        Not audited here: `actions.import_seeds` is the audited way in."""
        if isinstance(tasks, StagedSeeds):
            return self._insert_staged(tasks, origin)
        import pyarrow as pa

        cols: dict[str, list] = {k: [] for k in _TASK_COLUMNS}
        inst: dict[str, list] = {k: [] for k in _INSTANCE_COLUMNS}
        for n, task in enumerate(tasks):
            for key, value in zip(_TASK_COLUMNS, (n, task.source_id, task.name, task.instruction,
                                                   bool(task.is_classification))):
                cols[key].append(value)
            for pos, one in enumerate(task.instances):
                for key, value in zip(_INSTANCE_COLUMNS, (n, pos, one["input"], one["output"])):
                    inst[key].append(value)
        if not cols["task"]:
            return []
        name = _temp_name("seed_inst")
        cur = self.pool.cursor()
        cur.register(name, pa.table(inst, schema=_instance_schema()))
        try:
            return self._insert_staged(StagedSeeds(name, cols, registered=True), origin)
        finally:
            cur.unregister(name)

    def stage_seed_instances(self, staged: "StagedSeeds | None", columns: dict[str, list]) -> "StagedSeeds":
        """Append instances (columns task, position, input, output; `task` is the task's
        number in the import) to a temporary table on this thread's cursor, creating it on the
        first call (pass None). Nothing in the pool changes; `drop_staged_seeds` removes it."""
        import pyarrow as pa

        cur = self.pool.cursor()
        if staged is None:
            staged = StagedSeeds(_temp_name("seed_stage"), {k: [] for k in _TASK_COLUMNS})
            cur.execute(f"CREATE TEMP TABLE {staged.table} (task BIGINT, position INTEGER, "
                        "input VARCHAR, output VARCHAR)")
        if columns and columns["task"]:
            view = _temp_name("seed_batch")
            cur.register(view, pa.table(columns, schema=_instance_schema()))
            try:
                cur.execute(f"INSERT INTO {staged.table} SELECT task, position, input, output FROM {view}")
            finally:
                cur.unregister(view)
        return staged

    def drop_staged_seeds(self, staged: "StagedSeeds | None") -> None:
        if staged is not None and not staged.registered:
            self.pool.cursor().execute(f"DROP TABLE IF EXISTS {staged.table}")

    def _insert_staged(self, staged: "StagedSeeds", origin: str) -> list[int]:
        import pyarrow as pa

        n = len(staged.tasks["task"])
        if not n:
            return []
        cur = self.pool.cursor()
        tasks_view, ids = _temp_name("seed_tasks"), _temp_name("seed_ids")
        cur.register(tasks_view, pa.table(staged.tasks, schema=_task_schema()))
        try:
            # Ids come from the sequence (no clash with another writer); the k-th task of the
            # file takes the k-th smallest, so the pool lists the tasks in file order.
            cur.execute(f"CREATE TEMP TABLE {ids} AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS task "
                        f"FROM (SELECT nextval('seq_seed_tasks') AS id FROM range(?))", [n])
            cur.execute(
                "INSERT INTO seed_tasks (id, source_id, name, instruction, is_classification, origin) "
                f"SELECT i.id, t.source_id, t.name, t.instruction, t.is_classification, ? "
                f"FROM {tasks_view} t JOIN {ids} i USING (task) ORDER BY i.id", [origin])
            cur.execute(
                "INSERT INTO instances (seed_id, position, input, output) "
                f"SELECT i.id, s.position, s.input, s.output FROM {staged.table} s JOIN {ids} i USING (task) "
                "ORDER BY i.id, s.position")
            return [r[0] for r in cur.execute(f"SELECT id FROM {ids} ORDER BY id").fetchall()]
        finally:
            cur.unregister(tasks_view)
            cur.execute(f"DROP TABLE IF EXISTS {ids}")

    def seed_tasks(self) -> list[dict]:
        """Every seed task with its instances, in id order."""
        tasks = self.pool._rows(
            "SELECT id, source_id, name, instruction, is_classification, origin "
            "FROM seed_tasks ORDER BY id"
        )
        by_id = {t["id"]: t for t in tasks}
        for t in tasks:
            t["instances"] = []
        for row in self.pool._q(
            "SELECT seed_id, input, output FROM instances WHERE seed_id IS NOT NULL "
            "ORDER BY seed_id, position"
        ).fetchall():
            if row[0] in by_id:
                by_id[row[0]]["instances"].append({"input": row[1], "output": row[2]})
        return tasks

    def seed_table(self):
        """One row per seed for editing: the first instance inline, the count of the rest."""
        return self.pool._frame(
            """SELECT s.id, s.name, s.instruction,
                      coalesce(first_inst.input, '') AS input,
                      coalesce(first_inst.output, '') AS output,
                      s.is_classification,
                      (SELECT count(*) FROM instances i WHERE i.seed_id = s.id) AS instances
               FROM seed_tasks s
               LEFT JOIN (SELECT seed_id, input, output FROM instances
                          WHERE seed_id IS NOT NULL AND position = 0) first_inst
                      ON first_inst.seed_id = s.id
               ORDER BY s.id"""
        )

    def pool_instructions(self) -> list[str]:
        """The novelty pool: seeds then accepted candidates, in insertion order."""
        return [r[0] for r in self.pool._q(
            "SELECT instruction FROM (SELECT 0 AS k, id, instruction FROM seed_tasks "
            f"UNION ALL SELECT 1 AS k, id, instruction FROM candidates WHERE status = {SQL.ACCEPTED}) "
            "ORDER BY k, id"
        ).fetchall()]

    def existing_instructions(self, texts: Iterable[str]) -> set[str]:
        """Which of `texts` are already in the pool (seeds or accepted), exact match."""
        wanted = list({t for t in texts})
        if not wanted:
            return set()
        found: set[str] = set()
        for start in range(0, len(wanted), 5000):
            chunk = wanted[start:start + 5000]
            found.update(r[0] for r in self.pool._q(
                "SELECT instruction FROM seed_tasks WHERE instruction IN (SELECT unnest(?)) "
                f"UNION SELECT instruction FROM candidates WHERE status = {SQL.ACCEPTED} "
                "AND instruction IN (SELECT unnest(?))",
                [chunk, chunk],
            ).fetchall())
        return found

