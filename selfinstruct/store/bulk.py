"""Bulk writes and plain figures, for benchmarks and test fixtures that need big pools fast.

The pipeline writes a pool one request, candidate and instance at a time, with the audit log;
that is right for a run, and far too slow to fill a pool with 100K instances before timing an
export or a page. These methods insert whole columns at once (one Arrow table, one INSERT, one
transaction) with the ids the caller chose, and read back the figures the benchmarks report.
Nothing here is audited and nothing checks the product's rules: the app, the CLI and the
library never call it.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Sequence

from ..model import SQL
from .core import Queries

# The tables a caller may fill in bulk, with the sequence that hands out their ids.
BULK_TABLES = {"requests": "seq_requests", "candidates": "seq_candidates", "instances": "seq_instances"}


class BulkQueries(Queries):
    """Bulk inserts and figures for benchmarks and fixtures (see the module docstring)."""

    def _bulk_columns(self, table: str) -> set[str]:
        if table not in BULK_TABLES:
            raise ValueError(f"Bulk inserts go to {', '.join(BULK_TABLES)}, not {table!r}.")
        return {r[0] for r in self.pool._q(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}

    def next_id(self, table: str) -> int:
        """The first id after every row of `table` (requests, candidates or instances): where a
        caller's own ids for `bulk_insert` can start."""
        self._bulk_columns(table)
        return int(self.pool._scalar(f"SELECT coalesce(max(id), 0) + 1 FROM {table}"))

    def bulk_insert(self, table: str, columns: Mapping[str, Sequence[Any]], *,
                    constants: Mapping[str, Any] | None = None) -> int:
        """Insert the rows given column by column (equal-length sequences, or a pyarrow Table)
        into `table` in one statement, each row also taking the `constants`. When the rows carry
        their own `id`s, the table's id sequence moves past the largest, so the pipeline's next
        row does not collide. Returns the number of rows inserted."""
        import pyarrow as pa

        known = self._bulk_columns(table)
        data = columns if isinstance(columns, pa.Table) else pa.table(dict(columns))
        names = list(data.column_names) + list(constants or {})
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"{table} has no column(s) {', '.join(unknown)}.")
        if len(set(names)) != len(names):
            raise ValueError("A column is given twice (in the rows and in the constants).")
        if data.num_rows == 0:
            return 0
        view = f"bulk_{table}"
        with self.pool.transaction() as cur:
            cur.register(view, data)
            try:
                cur.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(data.column_names)}"
                    + "".join(", ?" for _ in constants or {}) + f" FROM {view}",
                    list((constants or {}).values()))
            finally:
                cur.unregister(view)
            if "id" in data.column_names:
                cur.execute(f"SELECT setval('{BULK_TABLES[table]}', "
                            f"greatest(?, (SELECT coalesce(max(id), 0) FROM {table})))",
                            [max(data.column("id").to_pylist())])
        return data.num_rows

    def set_round_times(self, round_id: int, started_at: dt.datetime, finished_at: dt.datetime | None) -> None:
        """Give a round the start and end times a synthetic run should show."""
        self.pool._q("UPDATE rounds SET started_at = ?, finished_at = ? WHERE id = ?",
                [started_at, finished_at, round_id])

    def checkpoint(self) -> None:
        """Write everything into the pool file now (DuckDB's CHECKPOINT), so a timing that
        follows does not pay for it."""
        self.pool._q("CHECKPOINT")

    def candidate_ids(self, *, status: str | None = None, exclude_reasons: Sequence[str] = (),
                      run_id: int | None = None) -> list[int]:
        """Ids of the candidates with this status (any if None), in this run (any if None),
        whose reason is not one of `exclude_reasons`, in id order."""
        return [r[0] for r in self.pool._q(
            "SELECT id FROM candidates WHERE (? IS NULL OR status = ?) AND (? IS NULL OR run_id = ?) "
            "AND (reason IS NULL OR NOT list_contains(?::VARCHAR[], reason)) ORDER BY id",
            [status, status, run_id, run_id, list(exclude_reasons)]).fetchall()]

    def study_item_ids(self, study_id: int) -> list[int]:
        """A study's item ids in the study's order."""
        return [r[0] for r in self.pool._q(
            "SELECT id FROM study_items WHERE study_id = ? ORDER BY position", [study_id]).fetchall()]

    def bulk_summary(self) -> dict:
        """What a benchmark reports about the pool it built: `requests` (all of them),
        `rejected_instances`, and `rejects_by_reason` (rejected candidates per reason, most
        first)."""
        requests = int(self.pool._scalar("SELECT count(*) FROM requests"))
        rejected_instances = int(self.pool._scalar(f"SELECT count(*) FROM instances WHERE status = {SQL.REJECTED}"))
        reasons = dict(self.pool._q(f"SELECT reason, count(*) FROM candidates WHERE status = {SQL.REJECTED} "
                               "GROUP BY reason ORDER BY 2 DESC, 1").fetchall())
        return {"requests": requests, "rejected_instances": rejected_instances, "rejects_by_reason": reasons}

    def run_figures(self, run_id: int) -> dict:
        """A run's request and time figures, for the throughput benchmark: `requests`,
        `latency_sum_s` (summed per-request latency), `attempts`, `failed_requests` (errors with
        no answer), `accepted`, `status`, `stop_reason` and `wall_s` (started to finished, None
        while unfinished)."""
        n, latency, attempts, failed = self.pool._q(
            "SELECT count(*), coalesce(sum(latency_s), 0), coalesce(sum(attempts), 0), "
            "count(*) FILTER (WHERE error IS NOT NULL AND response IS NULL) FROM requests WHERE run_id = ?",
            [run_id]).fetchone()
        accepted = self.pool._scalar(f"SELECT count(*) FROM candidates WHERE run_id = ? AND status = {SQL.ACCEPTED}",
                                [run_id])
        status, stop_reason, wall = self.pool._q(
            "SELECT status, stop_reason, epoch(finished_at) - epoch(started_at) FROM runs WHERE id = ?",
            [run_id]).fetchone()
        return {"requests": int(n), "latency_sum_s": float(latency), "attempts": int(attempts),
                "failed_requests": int(failed), "accepted": int(accepted), "status": status,
                "stop_reason": stop_reason, "wall_s": None if wall is None else float(wall)}

    def request_timeline(self, run_id: int) -> list[dict]:
        """Every request of a run in (round, position) order with what a scheduling bound needs:
        `id`, `stage`, `round` (number), `position`, `latency_s`, `candidate_id` (the candidate a
        follow-up is about) and `source_request_id` (for a follow-up: the request whose answer
        produced that candidate)."""
        return self.pool._rows(
            "SELECT q.id, q.stage, r.number AS round, q.position, q.latency_s, q.candidate_id, "
            "c.request_id AS source_request_id FROM requests q JOIN rounds r ON r.id = q.round_id "
            "LEFT JOIN candidates c ON c.id = q.candidate_id WHERE q.run_id = ? "
            "ORDER BY r.number, q.position, q.id", [run_id])
