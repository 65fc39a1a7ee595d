"""Seed tasks: insert, list, edit, delete (audited)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from .core import PoolError


class SeedQueries:
    # -- seeds ---------------------------------------------------------------
    def add_seed_tasks(self, tasks: Iterable[Any], *, origin: str, actor: str = "user") -> list[int]:
        """Insert seed tasks (objects with instruction, instances, is_classification,
        name, source_id) and their instances in one transaction."""
        ids: list[int] = []
        tasks = list(tasks)
        with self.transaction() as cur:
            for task in tasks:
                cur.execute(
                    "INSERT INTO seed_tasks (source_id, name, instruction, is_classification, origin) "
                    "VALUES (?, ?, ?, ?, ?) RETURNING id",
                    [task.source_id, task.name, task.instruction, bool(task.is_classification), origin],
                )
                seed_id = cur.fetchone()[0]
                ids.append(seed_id)
                self._insert_seed_instances(cur, seed_id, task.instances)
            self._audit(cur, actor, "import_seeds", "seed_tasks", None, None,
                        None, {"origin": origin, "count": len(tasks)})
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

    def update_seed_task(self, seed_id: int, *, actor: str = "user", **changes: Any) -> None:
        """Change instruction, name, is_classification, and/or the first instance
        (`input`, `output`) of one seed; audited with before and after."""
        allowed = {"instruction", "name", "is_classification", "input", "output"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"Cannot change {sorted(unknown)} of a seed task.")
        with self.transaction() as cur:
            before = self._seed_row(cur, seed_id)
            if before is None:
                raise PoolError(f"There is no seed task {seed_id}.")
            task_fields = {k: v for k, v in changes.items() if k in {"instruction", "name", "is_classification"}}
            if task_fields:
                assignments = ", ".join(f"{k} = ?" for k in task_fields)
                cur.execute(
                    f"UPDATE seed_tasks SET {assignments}, updated_at = current_timestamp WHERE id = ?",
                    [*task_fields.values(), seed_id],
                )
            if "input" in changes or "output" in changes:
                new_input = changes.get("input", before["input"]) or ""
                new_output = changes.get("output", before["output"]) or ""
                if before["instances"]:
                    cur.execute(
                        "UPDATE instances SET input = ?, output = ? WHERE seed_id = ? AND position = 0",
                        [new_input, new_output, seed_id],
                    )
                else:
                    self._insert_seed_instances(cur, seed_id, [{"input": new_input, "output": new_output}])
            after = self._seed_row(cur, seed_id)
            self._audit(cur, actor, "edit_seed", "seed_task", seed_id, None, before, after)

    def delete_seed_tasks(self, seed_ids: Iterable[int], *, actor: str = "user") -> int:
        ids = [int(i) for i in seed_ids]
        if not ids:
            return 0
        with self.transaction() as cur:
            for seed_id in ids:
                before = self._seed_row(cur, seed_id)
                if before is None:
                    continue
                cur.execute("DELETE FROM instances WHERE seed_id = ?", [seed_id])
                cur.execute("DELETE FROM seed_tasks WHERE id = ?", [seed_id])
                self._audit(cur, actor, "delete_seed", "seed_task", seed_id, None, before, None)
        return len(ids)

    @staticmethod
    def _seed_row(cur, seed_id: int) -> dict | None:
        row = cur.execute(
            "SELECT id, name, instruction, is_classification FROM seed_tasks WHERE id = ?", [seed_id]
        ).fetchone()
        if row is None:
            return None
        instances = cur.execute(
            "SELECT input, output FROM instances WHERE seed_id = ? ORDER BY position", [seed_id]
        ).fetchall()
        first = instances[0] if instances else ("", "")
        return {
            "id": row[0], "name": row[1], "instruction": row[2], "is_classification": row[3],
            "input": first[0], "output": first[1],
            "instances": [{"input": i, "output": o} for i, o in instances],
        }

    def pool_instructions(self) -> list[str]:
        """The novelty pool: seeds then accepted candidates, in insertion order."""
        return [r[0] for r in self._q(
            "SELECT instruction FROM (SELECT 0 AS k, id, instruction FROM seed_tasks "
            "UNION ALL SELECT 1 AS k, id, instruction FROM candidates WHERE status = 'accepted') "
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
                "UNION SELECT instruction FROM candidates WHERE status = 'accepted' "
                "AND instruction IN (SELECT unnest(?))",
                [chunk, chunk],
            ).fetchall())
        return found

