"""Requests and what their answers become: the engine's plan -> answer -> apply, batches handed to
a provider, and the candidates and instances an answer yields. Reached as `pool.requests`."""
from __future__ import annotations

from typing import Any, Sequence

from ..model import SQL
from .core import Queries, _dumps, _loads


class RequestQueries(Queries):
    def requests_for(self, round_id: int, stage: str) -> list[dict]:
        """A round's requests of one stage in position order (re-filter reads their answers)."""
        rows = self.pool._rows("SELECT * FROM requests WHERE round_id = ? AND stage = ? ORDER BY position",
                          [round_id, stage])
        for row in rows:
            row["meta"] = _loads(row["meta"]) or {}
        return rows

    def request_history(self, stage: str, model: str | None = None, limit: int = 500) -> dict:
        """Medians of recent answered requests, for estimates."""
        row = self.pool._q(
            "SELECT count(*), median(prompt_tokens), median(completion_tokens), median(latency_s) "
            "FROM (SELECT * FROM requests WHERE stage = ? AND response IS NOT NULL "
            "AND (? IS NULL OR model = ?) ORDER BY id DESC LIMIT ?)",
            [stage, model, model, limit],
        ).fetchone()
        return {"n": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "latency_s": row[3]}

    def add_round(self, run_id: int, number: int, planned: Sequence[dict]) -> tuple[int, list[int]]:
        """A new round and its instruction requests, stored together before any is sent."""
        with self.pool.transaction() as cur:
            cur.execute("INSERT INTO rounds (run_id, number, step) VALUES (?, ?, 'generate') RETURNING id",
                        [run_id, number])
            round_id = cur.fetchone()[0]
            ids = self._insert_requests(cur, run_id, round_id, planned)
        return round_id, ids

    def _insert_requests(self, cur, run_id: int, round_id: int, planned: Sequence[dict]) -> list[int]:
        ids = []
        for item in planned:
            cur.execute(
                "INSERT INTO requests (run_id, round_id, stage, position, prompt_version, model, mode, "
                "prompt, meta, candidate_id, structured) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [run_id, round_id, item["meta"]["stage"], item["position"], item.get("prompt_version"),
                 item.get("model"), item.get("mode"), item["prompt"], _dumps(item.get("meta")),
                 item.get("candidate_id"), item.get("structured")])
            ids.append(cur.fetchone()[0])
        return ids

    def open_requests(self, run_id: int) -> list[dict]:
        """Every request of a run that is not applied yet (unsent, failed, in a batch, or
        answered and waiting for its turn to be decided), with its round number."""
        rows = self.pool._rows(
            "SELECT q.*, r.number AS round FROM requests q JOIN rounds r ON r.id = q.round_id "
            "WHERE q.run_id = ? AND q.applied_at IS NULL ORDER BY r.number, q.stage, q.position, q.id",
            [run_id])
        for row in rows:
            row["meta"] = _loads(row["meta"]) or {}
        return rows

    def record_answer(self, request_id: int, answer: dict) -> None:
        """Store an answer (it will not be sent again); applying it may come later."""
        self.pool._q(
            "UPDATE requests SET response = ?, finish_reason = ?, prompt_tokens = ?, completion_tokens = ?, "
            "cost_usd = ?, latency_s = ?, attempts = coalesce(attempts, 0) + ?, oversize = ?, error = NULL, "
            "error_kind = NULL, completed_at = current_timestamp WHERE id = ?",
            [answer["text"], answer.get("finish_reason"), answer.get("prompt_tokens", 0),
             answer.get("completion_tokens", 0), answer.get("cost_usd", 0.0), answer.get("latency_s", 0.0),
             answer.get("attempts", 1), bool(answer.get("oversize")), request_id])

    def record_failure(self, request_id: int, *, error: str, error_kind: str, attempts: int,
                       latency_s: float = 0.0) -> None:
        """A request whose retries ran out: the error is kept, the request stays unanswered
        (it is sent again on resume)."""
        self.pool._q(
            "UPDATE requests SET error = ?, error_kind = ?, attempts = coalesce(attempts, 0) + ?, "
            "failures = failures + 1, latency_s = ?, completed_at = current_timestamp, batch_id = NULL "
            "WHERE id = ? AND response IS NULL",
            [error, error_kind, attempts, latency_s, request_id])

    def apply_answer(self, request_id: int, *, answer: dict | None = None, run_id: int | None = None,
                     round_id: int | None = None, candidates: Sequence[dict] = (),
                     classification: tuple[int, bool] | None = None,
                     instances: tuple[int, list[dict]] | None = None,
                     followups: Sequence[dict] = (), items: int | None = None,
                     parser_version: str | None = None) -> list[int]:
        """Everything an answer leads to, in one transaction: the answer itself (unless it was
        stored before), the candidates it yields, a classification or instances, the follow-up
        requests it makes ready, and the request marked applied with `items`, what its answer
        yielded (parse health), and `parser_version`, the parser that read it (re-filter reads it
        again with that one). Returns the follow-ups' ids."""
        with self.pool.transaction() as cur:
            if answer is not None:
                self.record_answer(request_id, answer)
            for row in candidates:
                row["id"] = self._insert_candidate(cur, run_id, round_id, request_id, row)
            if classification is not None:
                cur.execute("UPDATE candidates SET is_classification = ? WHERE id = ?",
                            [bool(classification[1]), classification[0]])
            if instances is not None:
                candidate_id, rows = instances
                cur.execute("DELETE FROM instances WHERE candidate_id = ?", [candidate_id])
                if rows:
                    self._insert_instances(cur, candidate_id, request_id, rows)
            ids = []
            for item in followups:
                item = dict(item)
                if item.get("candidate_id") is None and item.get("candidate_ref") is not None:
                    item["candidate_id"] = candidates[item["candidate_ref"]]["id"]
                    item["meta"] = {**item["meta"], "candidate_id": item["candidate_id"]}
                ids += self._insert_requests(cur, run_id, item.pop("round_id", round_id), [item])
            cur.execute("UPDATE requests SET applied_at = current_timestamp, items = ?, parser_version = ? "
                        "WHERE id = ?", [items, parser_version, request_id])
        return ids

    def add_followups(self, run_id: int, round_id: int, planned: Sequence[dict]) -> list[int]:
        with self.pool.transaction() as cur:
            return self._insert_requests(cur, run_id, round_id, planned)

    def candidates_needing_followups(self) -> list[dict]:
        """Accepted candidates (new, rescued, or whose follow-up failed before) that lack a
        classification or instances and have no open request that will bring it."""
        return self.pool._rows(
            "SELECT c.id, c.instruction, c.is_classification, c.run_id, c.round_id FROM candidates c "
            f"WHERE c.status = {SQL.ACCEPTED} AND (c.is_classification IS NULL OR NOT EXISTS "
            "  (SELECT 1 FROM instances i WHERE i.candidate_id = c.id)) "
            "AND NOT EXISTS (SELECT 1 FROM requests q WHERE q.candidate_id = c.id AND q.applied_at IS NULL) "
            "ORDER BY c.id")

    def add_batch(self, run_id: int, kind: str, request_ids: Sequence[int], **fields: Any) -> int:
        """A batch of requests handed to a provider's Batch API (kind 'api') or written to a
        file for an offline batch engine (kind 'file')."""
        with self.pool.transaction() as cur:
            cur.execute(
                "INSERT INTO batches (run_id, kind, remote_id, input_file_id, endpoint, status, requests, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, current_timestamp) RETURNING id",
                [run_id, kind, fields.get("remote_id"), fields.get("input_file_id"), fields.get("endpoint"),
                 fields.get("status", "submitted"), len(request_ids)])
            batch_id = cur.fetchone()[0]
            if request_ids:
                cur.execute("UPDATE requests SET batch_id = ? WHERE id IN (SELECT unnest(?))",
                            [batch_id, list(request_ids)])
        return batch_id

    def update_batch(self, batch_id: int, **fields: Any) -> None:
        allowed = ("status", "output_file_id", "error_file_id", "error", "remote_id", "input_file_id")
        sets = [f"{k} = ?" for k in fields if k in allowed]
        params = [fields[k] for k in fields if k in allowed]
        done = fields.get("status") in {"completed", "failed", "expired", "cancelled", "imported"}
        self.pool._q(f"UPDATE batches SET {', '.join(sets + ['updated_at = current_timestamp'])}"
                + (", finished_at = current_timestamp" if done else "") + " WHERE id = ?", [*params, batch_id])

    def batches(self, run_id: int, *, open_only: bool = False) -> list[dict]:
        sql = "SELECT * FROM batches WHERE run_id = ?"
        if open_only:
            sql += " AND finished_at IS NULL"
        return self.pool._rows(sql + " ORDER BY id", [run_id])

    def release_batch_requests(self, batch_id: int) -> int:
        """Unanswered requests of an ended batch become ready to be sent again."""
        n = int(self.pool._scalar("SELECT count(*) FROM requests WHERE batch_id = ? AND response IS NULL", [batch_id]))
        self.pool._q("UPDATE requests SET batch_id = NULL WHERE batch_id = ? AND response IS NULL", [batch_id])
        return n

    def add_candidates(self, run_id: int, round_id: int, rows: Sequence[dict], *,
                       next_step: str | None = None) -> list[int]:
        """Insert decided candidates (with their instances, if any) and optionally move the
        round on, in one transaction (tests and benchmarks build pools with it)."""
        with self.pool.transaction() as cur:
            ids = [self._insert_candidate(cur, run_id, round_id, row.get("request_id"), row) for row in rows]
            if next_step:
                self.pool.runs.set_round_step(round_id, next_step)
        return ids

    def _insert_candidate(self, cur, run_id: int | None, round_id: int | None, request_id: int | None,
                          row: dict) -> int:
        cur.execute(
            "INSERT INTO candidates (run_id, round_id, request_id, position, instruction, status, "
            "reason, details, max_rouge, nearest_text, is_classification) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [run_id, round_id, request_id, row["position"], row["instruction"], row["status"],
             row.get("reason"), _dumps(row.get("details")), row.get("max_rouge"), row.get("nearest_text"),
             row.get("is_classification")])
        candidate_id = cur.fetchone()[0]
        if row.get("instances"):
            self._insert_instances(cur, candidate_id, request_id, row["instances"])
        return candidate_id

    @staticmethod
    def _insert_instances(cur, candidate_id: int, request_id: int | None, instances: Sequence[dict]) -> None:
        cur.executemany(
            "INSERT INTO instances (candidate_id, request_id, position, input, output, status, reason, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [[candidate_id, request_id, i, inst["input"], inst["output"], inst.get("status", "kept"),
              inst.get("reason"), _dumps(inst.get("details"))] for i, inst in enumerate(instances)],
        )
