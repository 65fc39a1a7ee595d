"""Runs and their rounds: settings, status, progress and what they produced, as the pipeline
writes them and the Generate page reads them. Reached as `pool.runs` (requests, batches and the
rows an answer yields are `pool.requests`, store/requests.py)."""
from __future__ import annotations

from typing import Any, Sequence

from ..model import ENDED_STATUSES, INTERRUPTED, RUNNING, SQL, round_done_sql
from .core import Queries, _dumps, _loads


class RunQueries(Queries):
    # -- runs ------------------------------------------------------------------
    def create(self, config: dict, *, name: str | None = None, actor: str = "user") -> int:
        with self.pool.transaction() as cur:
            cur.execute(
                "INSERT INTO runs (name, status, config, started_at, updated_at) "
                "VALUES (?, 'created', ?, current_timestamp, current_timestamp) RETURNING id",
                [name, _dumps(config)],
            )
            run_id = cur.fetchone()[0]
            self.pool._audit(cur, actor, "create_run", "run", run_id, None, None, {"name": name})
        return run_id

    def get(self, run_id: int) -> dict | None:
        rows = self.pool._rows("SELECT * FROM runs WHERE id = ?", [run_id])
        if not rows:
            return None
        rows[0]["config"] = _loads(rows[0]["config"])
        return rows[0]

    def all(self) -> list[dict]:
        rows = self.pool._rows(
            f"""SELECT r.*,
                 (SELECT count(*) FROM rounds WHERE run_id = r.id AND {round_done_sql()}) AS rounds_done,
                 (SELECT count(*) FROM candidates WHERE run_id = r.id AND status = {SQL.ACCEPTED}) AS accepted,
                 (SELECT count(*) FROM candidates WHERE run_id = r.id AND status = {SQL.REJECTED}) AS rejected,
                 (SELECT coalesce(sum(cost_usd), 0) FROM requests WHERE run_id = r.id) AS cost_usd
               FROM runs r ORDER BY r.id DESC"""
        )
        for row in rows:
            row["config"] = _loads(row["config"])
        return rows

    def set_status(self, run_id: int, status: str, *, stop_reason: str | None = None,
                       error: str | None = None) -> None:
        finished = status in ENDED_STATUSES
        self.pool._q(
            "UPDATE runs SET status = ?, stop_reason = coalesce(?, stop_reason), error = ?, "
            "updated_at = current_timestamp, "
            "finished_at = CASE WHEN ? THEN current_timestamp ELSE NULL END WHERE id = ?",
            [status, stop_reason, error, finished, run_id],
        )

    def update_config(self, run_id: int, config: dict, changes: dict, *, actor: str = "user") -> None:
        """Store a run's corrected settings (resume with another model, URL, timeout...); audited."""
        with self.pool.transaction() as cur:
            cur.execute("UPDATE runs SET config = ?, updated_at = current_timestamp WHERE id = ?",
                        [_dumps(config), run_id])
            self.pool._audit(cur, actor, "change_run_settings", "run", run_id, None,
                        {k: v[0] for k, v in changes.items()}, {k: v[1] for k, v in changes.items()})

    def set_structured(self, run_id: int, structured: bool | None, note: str) -> None:
        """How the run's chat requests go (JSON with a schema, or the text layout), and why."""
        self.pool._q("UPDATE runs SET structured = ?, structured_note = ?, updated_at = current_timestamp "
                "WHERE id = ?", [structured, note, run_id])

    def parse_health(self, run_id: int) -> list[dict]:
        """Per stage of a run, in pipeline order: `answers` (answered requests already read),
        `parsed` (those whose answer yielded at least one item, or a readable yes/no), `items`
        (what they yielded: instructions or tasks, yes/no answers, instances), `structured`
        (answers to requests sent with a JSON schema) and `nul` (answers holding a NUL
        character, which the parsers read as U+FFFD: model.without_nul)."""
        rows = self.pool._rows(
            "SELECT stage, count(*) AS answers, count(*) FILTER (WHERE items > 0) AS parsed, "
            "coalesce(sum(items), 0) AS items, count(*) FILTER (WHERE structured) AS structured, "
            "count(*) FILTER (WHERE strpos(response, chr(0)) > 0) AS nul "
            "FROM requests WHERE run_id = ? AND response IS NOT NULL AND applied_at IS NOT NULL "
            "GROUP BY stage", [run_id])
        order = {"instructions": 0, "batch": 0, "classify": 1, "instances": 2}
        rows.sort(key=lambda r: order.get(r["stage"], 9))
        for row in rows:
            for key in ("answers", "parsed", "items", "structured", "nul"):
                row[key] = int(row[key])
        return rows

    def mark_interrupted(self, *, keep: Sequence[int] = ()) -> list[int]:
        """Runs still marked running when nothing runs them (the process died); `keep`
        lists runs that are running in this process."""
        ids = [r[0] for r in self.pool._q("SELECT id FROM runs WHERE status = ?", [RUNNING]).fetchall()
               if r[0] not in set(keep)]
        for run_id in ids:
            self.set_status(run_id, INTERRUPTED, stop_reason="interrupted")
        return ids

    def usage(self, run_id: int) -> dict:
        row = self.pool._q(
            "SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
            "coalesce(sum(cost_usd), 0.0), count(*) FILTER (WHERE error IS NOT NULL) "
            "FROM requests WHERE run_id = ? AND (response IS NOT NULL OR error IS NOT NULL)",
            [run_id],
        ).fetchone()
        return {"requests": row[0], "prompt_tokens": int(row[1]), "completion_tokens": int(row[2]),
                "tokens": int(row[1]) + int(row[2]), "cost_usd": float(row[3]), "errors": row[4]}

    def pool_size_before_run(self, run_id: int) -> int:
        """Seeds plus what earlier runs accepted: where a run's pool-growth chart starts."""
        return int(self.pool._scalar(
            "SELECT (SELECT count(*) FROM seed_tasks) + (SELECT count(*) FROM candidates "
            f"WHERE status = {SQL.ACCEPTED} AND run_id < ?)", [run_id]))

    def accepted_count(self, run_id: int | None = None) -> int:
        if run_id is None:
            return int(self.pool._scalar(f"SELECT count(*) FROM candidates WHERE status = {SQL.ACCEPTED}"))
        return int(self.pool._scalar(
            f"SELECT count(*) FROM candidates WHERE status = {SQL.ACCEPTED} AND run_id = ?", [run_id]))

    # -- rounds ------------------------------------------------------------------
    def create_round(self, run_id: int, number: int, step: str) -> int:
        return self.pool._scalar(
            "INSERT INTO rounds (run_id, number, step) VALUES (?, ?, ?) RETURNING id",
            [run_id, number, step],
        )

    def rounds_done(self, run_id: int) -> int:
        return int(self.pool._scalar(
            f"SELECT count(*) FROM rounds WHERE run_id = ? AND {round_done_sql()}", [run_id]))

    def set_round_step(self, round_id: int, step: str) -> None:
        self.pool._q(
            f"UPDATE rounds SET step = ?, finished_at = CASE WHEN ? = {SQL.STEP_DONE} THEN current_timestamp "
            "ELSE finished_at END WHERE id = ?",
            [step, step, round_id],
        )

    def round_summaries(self, run_id: int):
        """One row per round: requests, errors, candidates, accepted, rejections by
        reason, instances, tokens, cost and duration; derived from the rows, never cached."""
        frame = self.pool._frame(
            f"""WITH req AS (
                 SELECT round_id, count(*) FILTER (WHERE response IS NOT NULL OR error IS NOT NULL) AS requests,
                        count(*) FILTER (WHERE error IS NOT NULL) AS errors,
                        coalesce(sum(prompt_tokens), 0) + coalesce(sum(completion_tokens), 0) AS tokens,
                        coalesce(sum(cost_usd), 0) AS cost_usd
                 FROM requests WHERE run_id = ? GROUP BY round_id),
               cand AS (
                 SELECT round_id, count(*) AS candidates,
                        count(*) FILTER (WHERE status = {SQL.ACCEPTED}) AS accepted,
                        count(*) FILTER (WHERE status = {SQL.REJECTED}) AS rejected
                 FROM candidates WHERE run_id = ? GROUP BY round_id),
               inst AS (
                 SELECT c.round_id, count(*) FILTER (WHERE i.status = {SQL.KEPT}) AS instances,
                        count(*) FILTER (WHERE i.status = {SQL.REJECTED}) AS instances_rejected
                 FROM instances i JOIN candidates c ON c.id = i.candidate_id
                 WHERE c.run_id = ? GROUP BY c.round_id)
               SELECT r.number AS round, r.step, r.id AS round_id,
                      coalesce(req.requests, 0) AS requests, coalesce(req.errors, 0) AS errors,
                      coalesce(cand.candidates, 0) AS candidates, coalesce(cand.accepted, 0) AS accepted,
                      coalesce(cand.rejected, 0) AS rejected,
                      coalesce(inst.instances, 0) AS instances,
                      coalesce(inst.instances_rejected, 0) AS instances_rejected,
                      coalesce(req.tokens, 0) AS tokens, coalesce(req.cost_usd, 0) AS cost_usd,
                      epoch(coalesce(r.finished_at, current_timestamp::TIMESTAMP) - r.started_at) AS seconds
               FROM rounds r
               LEFT JOIN req ON req.round_id = r.id
               LEFT JOIN cand ON cand.round_id = r.id
               LEFT JOIN inst ON inst.round_id = r.id
               WHERE r.run_id = ? ORDER BY r.number""",
            [run_id, run_id, run_id, run_id],
        )
        frame["acceptance"] = (frame["accepted"] / frame["candidates"].where(frame["candidates"] > 0)).fillna(0.0)
        return frame

    def reject_reasons_by_round(self, run_id: int):
        return self.pool._frame(
            "SELECT r.number AS round, c.reason, count(*) AS n FROM candidates c "
            f"JOIN rounds r ON r.id = c.round_id WHERE c.run_id = ? AND c.status = {SQL.REJECTED} "
            "GROUP BY r.number, c.reason ORDER BY r.number, c.reason",
            [run_id],
        )

    # -- pace and errors ------------------------------------------------------------
    def run_pace(self, model: str, backend: str, limit: int = 5) -> list[dict]:
        """How long this pool's recent runs of `model` on `backend` took, newest first: per run,
        its done rounds, the requests answered in them, the wall seconds from the first of those
        rounds starting to the last finishing (a pause in between counts), its concurrency and
        requests per round. For estimates."""
        return self.pool._rows(
            f"""WITH done AS (
                   SELECT run_id, count(*) AS rounds, epoch(max(finished_at) - min(started_at)) AS seconds
                   FROM rounds WHERE step = {SQL.STEP_DONE} AND finished_at IS NOT NULL GROUP BY run_id),
                 answered AS (
                   SELECT q.run_id, count(*) AS requests FROM requests q
                   JOIN rounds rd ON rd.id = q.round_id AND rd.step = {SQL.STEP_DONE}
                   WHERE q.response IS NOT NULL GROUP BY q.run_id)
               SELECT r.id AS run_id, d.rounds, a.requests, d.seconds,
                      TRY_CAST(json_extract_string(r.config, '$.concurrency') AS INTEGER) AS concurrency,
                      TRY_CAST(json_extract_string(r.config, '$.requests_per_round') AS INTEGER)
                          AS requests_per_round
               FROM runs r JOIN done d ON d.run_id = r.id JOIN answered a ON a.run_id = r.id
               WHERE json_extract_string(r.config, '$.model') = ?
                 AND json_extract_string(r.config, '$.backend') = ? AND d.seconds > 0
               ORDER BY r.id DESC LIMIT ?""", [model, backend, int(limit)])

    def run_activity(self, run_id: int, since_s: float, last: int = 20) -> dict:
        """For the pace of a run going on now: its requests planned and answered (in all, and in
        rounds done), its rounds planned and done, and of the answers that arrived in the last
        `since_s` seconds (since the run (re)started) how many there are and, for the newest
        `last` of them, their completion tokens and seconds of answering."""
        since = int(max(0.0, since_s) * 1_000_000)
        row = self.pool._q(
            f"""WITH r AS (SELECT id, {round_done_sql()} AS done FROM rounds WHERE run_id = ?),
                 q AS (SELECT q.*, r.done FROM requests q JOIN r ON r.id = q.round_id WHERE q.run_id = ?),
                 recent AS (SELECT completion_tokens, latency_s FROM q
                            WHERE response IS NOT NULL
                              AND completed_at >= current_timestamp::TIMESTAMP - to_microseconds(?)
                            ORDER BY completed_at DESC LIMIT ?)
               SELECT (SELECT count(*) FROM q), (SELECT count(*) FROM q WHERE response IS NOT NULL),
                      (SELECT count(*) FROM q WHERE response IS NOT NULL AND done),
                      (SELECT count(*) FROM r), (SELECT count(*) FROM r WHERE done),
                      (SELECT count(*) FROM q WHERE response IS NOT NULL
                         AND completed_at >= current_timestamp::TIMESTAMP - to_microseconds(?)),
                      (SELECT coalesce(sum(completion_tokens), 0) FROM recent),
                      (SELECT coalesce(sum(latency_s), 0) FROM recent),
                      (SELECT count(*) FROM recent)""",
            [run_id, run_id, since, int(last), since]).fetchone()
        keys = ("planned", "answered", "answered_in_done_rounds", "rounds", "rounds_done",
                "answered_recently", "recent_tokens", "recent_seconds", "recent")
        return {k: (float(v) if k == "recent_seconds" else int(v)) for k, v in zip(keys, row)}

    def error_summary(self, run_id: int) -> list[dict]:
        return self.pool._rows(
            "SELECT error_kind, any_value(error) AS example, count(*) AS n FROM requests "
            "WHERE run_id = ? AND error IS NOT NULL GROUP BY error_kind ORDER BY n DESC",
            [run_id],
        )

    def rounds(self, run_id: int) -> list[dict]:
        return self.pool._rows("SELECT id, number, step FROM rounds WHERE run_id = ? ORDER BY number", [run_id])

    def machine_instructions_until(self, run_id: int, last_round: int) -> list[str]:
        """Accepted generated instructions a run's round may use as examples: those of earlier
        runs and of this run's rounds up to `last_round` (a fixed lag keeps prompts deterministic)."""
        return [r[0] for r in self.pool._q(
            "SELECT c.instruction FROM candidates c LEFT JOIN rounds r ON r.id = c.round_id "
            f"WHERE c.status = {SQL.ACCEPTED} AND (c.run_id IS NULL OR c.run_id < ? "
            "OR (c.run_id = ? AND r.number <= ?)) ORDER BY c.id",
            [run_id, run_id, last_round]).fetchall()]

    # -- what a run produced -----------------------------------------------------------
    def machine_instructions(self, limit: int | None = None) -> list[str]:
        sql = f"SELECT instruction FROM candidates WHERE status = {SQL.ACCEPTED} ORDER BY id"
        return [r[0] for r in self.pool._q(sql + (" LIMIT ?" if limit else ""),
                                      [limit] if limit else []).fetchall()]

    def newest_accepted(self, run_id: int, limit: int = 10) -> list[dict]:
        return self.pool._rows(
            "SELECT c.id, r.number AS round, c.instruction, c.max_rouge, c.is_classification "
            "FROM candidates c JOIN rounds r ON r.id = c.round_id "
            f"WHERE c.run_id = ? AND c.status = {SQL.ACCEPTED} ORDER BY c.id DESC LIMIT ?",
            [run_id, limit],
        )

    def rouge_scores(self, run_id: int, round_number: int | None = None):
        sql = ("SELECT r.number AS round, c.status, c.reason, c.max_rouge FROM candidates c "
               "JOIN rounds r ON r.id = c.round_id WHERE c.run_id = ? AND c.max_rouge IS NOT NULL")
        params: list[Any] = [run_id]
        if round_number is not None:
            sql += " AND r.number = ?"
            params.append(round_number)
        return self.pool._frame(sql, params)

    def candidates(self, run_id: int):
        """Every candidate of a run in decision order (for re-filtering and checks)."""
        rows = self.pool._rows(
            "SELECT c.*, r.number AS round FROM candidates c JOIN rounds r ON r.id = c.round_id "
            "WHERE c.run_id = ? ORDER BY r.number, c.position", [run_id])
        for row in rows:
            row["details"] = _loads(row["details"])
        return rows

    def pool_instructions_before_run(self, run_id: int) -> list[str]:
        """The novelty pool as a run saw it when it began: seeds and what earlier runs accepted."""
        return [r[0] for r in self.pool._q(
            "SELECT instruction FROM (SELECT 0 AS k, id, instruction FROM seed_tasks "
            f"UNION ALL SELECT 1 AS k, id, instruction FROM candidates WHERE status = {SQL.ACCEPTED} "
            "AND run_id < ?) ORDER BY k, id", [run_id]).fetchall()]

    def redecide_candidates(self, run_id: int, decisions: dict[int, dict], *, actor: str) -> int:
        """Apply re-filter decisions ({candidate id: {status, reason, details, max_rouge,
        nearest_text}}) to candidates the filters decided; audited."""
        changed = 0
        with self.pool.transaction() as cur:
            for candidate_id, new in decisions.items():
                before = cur.execute(
                    "SELECT status, reason, max_rouge FROM candidates WHERE id = ? AND run_id = ? "
                    f"AND decided_by = {SQL.BY_FILTER}", [candidate_id, run_id]).fetchone()
                if before is None:
                    continue
                cur.execute(
                    "UPDATE candidates SET status = ?, reason = ?, details = ?, max_rouge = ?, "
                    "nearest_text = ?, updated_at = current_timestamp WHERE id = ?",
                    [new["status"], new.get("reason"), _dumps(new.get("details")), new.get("max_rouge"),
                     new.get("nearest_text"), candidate_id],
                )
                self.pool._audit(cur, actor, "refilter", "candidate", candidate_id, new.get("why"),
                            {"status": before[0], "reason": before[1], "max_rouge": before[2]},
                            {"status": new["status"], "reason": new.get("reason"),
                             "max_rouge": new.get("max_rouge")})
                changed += 1
        return changed
