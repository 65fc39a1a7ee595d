"""Seed tasks: insert and list (edits, deletes and audited imports go through selfinstruct/actions.py)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..model import SQL


class SeedQueries:
    # -- seeds ---------------------------------------------------------------
    def insert_seed_tasks(self, tasks: Iterable[Any], *, origin: str) -> list[int]:
        """Insert seed tasks (objects with instruction, instances, is_classification, name,
        source_id) and their instances on this thread's cursor; their new ids, in order.
        Not audited here: `actions.import_seeds` is the audited way in."""
        ids: list[int] = []
        cur = self.cursor()
        for task in tasks:
            cur.execute(
                "INSERT INTO seed_tasks (source_id, name, instruction, is_classification, origin) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                [task.source_id, task.name, task.instruction, bool(task.is_classification), origin],
            )
            seed_id = cur.fetchone()[0]
            ids.append(seed_id)
            self._insert_seed_instances(cur, seed_id, task.instances)
        return ids

    @staticmethod
    def _insert_seed_instances(cur, seed_id: int, instances: Sequence[dict]) -> None:
        if instances:
            cur.executemany(
                "INSERT INTO instances (seed_id, position, input, output) VALUES (?, ?, ?, ?)",
                [[seed_id, i, inst["input"], inst["output"]] for i, inst in enumerate(instances)],
            )

    def seed_tasks(self) -> list[dict]:
        """Every seed task with its instances, in id order."""
        tasks = self._rows(
            "SELECT id, source_id, name, instruction, is_classification, origin "
            "FROM seed_tasks ORDER BY id"
        )
        by_id = {t["id"]: t for t in tasks}
        for t in tasks:
            t["instances"] = []
        for row in self._q(
            "SELECT seed_id, input, output FROM instances WHERE seed_id IS NOT NULL "
            "ORDER BY seed_id, position"
        ).fetchall():
            if row[0] in by_id:
                by_id[row[0]]["instances"].append({"input": row[1], "output": row[2]})
        return tasks

    def seed_table(self):
        """One row per seed for editing: the first instance inline, the count of the rest."""
        return self._frame(
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
        return [r[0] for r in self._q(
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
            found.update(r[0] for r in self._q(
                "SELECT instruction FROM seed_tasks WHERE instruction IN (SELECT unnest(?)) "
                f"UNION SELECT instruction FROM candidates WHERE status = {SQL.ACCEPTED} "
                "AND instruction IN (SELECT unnest(?))",
                [chunk, chunk],
            ).fetchall())
        return found

