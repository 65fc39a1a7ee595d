"""The paper's evaluation of models (issue 17): data only.

An evaluation (`evaluations`) names two or more models (their endpoint settings, never a key) and
a list of instructions (`eval_instructions`). Creating it plans one `eval_answers` row per
(instruction, model) in the same transaction. A row is *answered* once its `response` is set (the
same UPDATE stores tokens, cost and latency) and is never sent again, so a killed process resumes
from the rows alone; a row whose retries ran out keeps its `error` and is sent again.

People's ratings (`eval_ratings`, A-D) are one row per rater per answer, updated in place. A
judge's pre-ratings live in their own table (`eval_prerates`), so no figure about people ever
counts a judge. The workflow and the words are selfinstruct/evaluate.py's.
"""
from __future__ import annotations

import threading
from typing import Sequence

from ..model import INTERRUPTED, RUNNING
from .core import Queries, PoolError, _dumps, _loads

# The columns an answer writes (record_eval_answer), in order.
EVAL_ANSWER_COLUMNS = ("prompt", "prompt_version", "response", "finish_reason", "prompt_tokens",
                       "completion_tokens", "cost_usd", "latency_s", "attempts")
# The columns a pre-rating writes (record_eval_prerate), in order.
PRERATE_COLUMNS = ("prompt", "prompt_version", "parser_version", "structured", "response", "finish_reason",
                   "rating", "reason", "unparseable", "prompt_tokens", "completion_tokens", "cost_usd",
                   "latency_s", "attempts")
# Rating saves: read then insert or update, one at a time in this process (one row per rater
# per answer, whoever saves at the same moment).
_RATING_LOCK = threading.Lock()


class EvaluateQueries(Queries):
    # -- evaluations ---------------------------------------------------------------
    def create(self, *, name: str | None, config: dict, instructions: Sequence[dict],
                          models: int, actor: str = "user") -> int:
        """Store an evaluation, its instructions (`instruction`, `input`, `source`, in order) and
        one planned answer per (instruction, model index), in one transaction; audited."""
        if not instructions:
            raise PoolError("An evaluation needs at least one instruction.")
        if models < 1:
            raise PoolError("An evaluation needs at least one model.")
        with self.pool.transaction() as cur:
            cur.execute("INSERT INTO evaluations (name, status, config, updated_at) "
                        "VALUES (?, 'created', ?, current_timestamp) RETURNING id", [name, _dumps(config)])
            evaluation_id = cur.fetchone()[0]
            cur.executemany(
                "INSERT INTO eval_instructions (evaluation_id, position, instruction, input, source) "
                "VALUES (?, ?, ?, ?, ?)",
                [[evaluation_id, pos, row["instruction"], row.get("input") or "", row.get("source")]
                 for pos, row in enumerate(instructions)])
            cur.execute(
                "INSERT INTO eval_answers (evaluation_id, instruction_id, model_index) "
                "SELECT i.evaluation_id, i.id, m.m FROM eval_instructions i, range(?) AS m(m) "
                "WHERE i.evaluation_id = ? ORDER BY i.position, m.m", [int(models), evaluation_id])
            self.pool._audit(cur, actor, "create_evaluation", "evaluation", evaluation_id, None, None,
                        {"name": name, "instructions": len(instructions), "models": models})
        return evaluation_id

    def get(self, evaluation_id: int) -> dict | None:
        rows = self.pool._rows("SELECT * FROM evaluations WHERE id = ?", [evaluation_id])
        if not rows:
            return None
        row = rows[0]
        row["config"] = _loads(row["config"]) or {}
        row["judge_config"] = _loads(row["judge_config"]) if row["judge_config"] else None
        return row

    def all(self) -> list[dict]:
        """Every evaluation, newest first, with `instructions`, `answers` (planned), `answered`
        and `cost_usd`."""
        rows = self.pool._rows(
            """SELECT e.*, (SELECT count(*) FROM eval_instructions i WHERE i.evaluation_id = e.id) AS instructions,
                      count(a.id) AS answers, count(a.response) AS answered,
                      coalesce(sum(a.cost_usd), 0.0) AS cost_usd
               FROM evaluations e LEFT JOIN eval_answers a ON a.evaluation_id = e.id
               GROUP BY ALL ORDER BY e.id DESC""")
        for row in rows:
            row["config"] = _loads(row["config"]) or {}
            row["judge_config"] = _loads(row["judge_config"]) if row["judge_config"] else None
        return rows

    def set_status(self, evaluation_id: int, status: str, *, stop_reason: str | None = None,
                              error: str | None = None, ended: bool = False, judge: bool = False) -> None:
        """The collection's status (or, `judge`, the pre-rating's)."""
        if judge:
            self.pool._q("UPDATE evaluations SET judge_status = ?, judge_stop_reason = coalesce(?, judge_stop_reason), "
                    "judge_error = ?, updated_at = current_timestamp WHERE id = ?",
                    [status, stop_reason, error, evaluation_id])
            return
        self.pool._q("UPDATE evaluations SET status = ?, stop_reason = coalesce(?, stop_reason), error = ?, "
                "updated_at = current_timestamp, "
                "started_at = CASE WHEN ? = ? THEN coalesce(started_at, current_timestamp) ELSE started_at END, "
                "finished_at = CASE WHEN ? THEN current_timestamp ELSE NULL END WHERE id = ?",
                [status, stop_reason, error, status, RUNNING, bool(ended), evaluation_id])

    def mark_interrupted(self, *, keep: Sequence[int] = ()) -> list[int]:
        """Evaluations whose collection or pre-rating is still marked running when nothing runs it."""
        keep = set(keep)
        found = []
        for evaluation_id, status, judge_status in self.pool._q(
                "SELECT id, status, judge_status FROM evaluations WHERE status = ? OR judge_status = ?",
                [RUNNING, RUNNING]).fetchall():
            if evaluation_id in keep:
                continue
            if status == RUNNING:
                self.set_status(evaluation_id, INTERRUPTED, stop_reason="interrupted")
            if judge_status == RUNNING:
                self.set_status(evaluation_id, INTERRUPTED, stop_reason="interrupted", judge=True)
            found.append(int(evaluation_id))
        return found

    def set_judge(self, evaluation_id: int, judge_config: dict, *, actor: str = "user") -> int:
        """Store the pre-rating judge's settings and plan a pre-rating for every answered answer
        that this judge model has not pre-rated, in one transaction; the number planned."""
        model = judge_config.get("model") or ""
        with self.pool.transaction() as cur:
            cur.execute("UPDATE evaluations SET judge_config = ?, judge_status = 'created', judge_error = NULL, "
                        "judge_structured = NULL, updated_at = current_timestamp WHERE id = ?",
                        [_dumps(judge_config), evaluation_id])
            cur.execute(
                """INSERT INTO eval_prerates (evaluation_id, answer_id, judge_model)
                   SELECT a.evaluation_id, a.id, ? FROM eval_answers a
                   JOIN eval_instructions i ON i.id = a.instruction_id
                   WHERE a.evaluation_id = ? AND a.response IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM eval_prerates p WHERE p.answer_id = a.id AND p.judge_model = ?)
                   ORDER BY i.position, a.model_index RETURNING id""", [model, evaluation_id, model])
            planned = len(cur.fetchall())
            self.pool._audit(cur, actor, "set_evaluation_judge", "evaluation", evaluation_id, None, None,
                        {"judge_model": model, "planned": planned})
        return planned

    def set_judge_structured(self, evaluation_id: int, structured: bool) -> None:
        self.pool._q("UPDATE evaluations SET judge_structured = ? WHERE id = ?", [structured, evaluation_id])

    # -- instructions and answers ---------------------------------------------------
    def instructions(self, evaluation_id: int) -> list[dict]:
        return self.pool._rows("SELECT * FROM eval_instructions WHERE evaluation_id = ? ORDER BY position",
                          [evaluation_id])

    def answers(self, evaluation_id: int) -> list[dict]:
        """Every planned answer, in (instruction position, model index) order, with `position`."""
        return self.pool._rows(
            """SELECT a.*, i.position FROM eval_answers a JOIN eval_instructions i ON i.id = a.instruction_id
               WHERE a.evaluation_id = ? ORDER BY i.position, a.model_index""", [evaluation_id])

    def open_answers(self, evaluation_id: int) -> list[dict]:
        """Unanswered answers in (position, model) order, with the instruction's texts and failures so far."""
        return self.pool._rows(
            """SELECT a.id, a.model_index, a.failures, i.position, i.instruction, i.input
               FROM eval_answers a JOIN eval_instructions i ON i.id = a.instruction_id
               WHERE a.evaluation_id = ? AND a.response IS NULL ORDER BY i.position, a.model_index""",
            [evaluation_id])

    def record_answer(self, answer_id: int, answer: dict) -> bool:
        """Store one model answer (`EVAL_ANSWER_COLUMNS`); an answered row is left alone (False)."""
        values = [answer.get(col) for col in EVAL_ANSWER_COLUMNS]
        sets = ", ".join(f"{col} = ?" for col in EVAL_ANSWER_COLUMNS)
        row = self.pool._q(f"UPDATE eval_answers SET {sets}, error = NULL, error_kind = NULL, "
                      f"answered_at = current_timestamp WHERE id = ? AND response IS NULL RETURNING id",
                      [*values, answer_id]).fetchone()
        return row is not None

    def record_failure(self, answer_id: int, *, error: str, error_kind: str, attempts: int = 0,
                            latency_s: float = 0.0) -> None:
        self.pool._q("UPDATE eval_answers SET error = ?, error_kind = ?, attempts = ?, latency_s = ?, "
                "failures = failures + 1 WHERE id = ? AND response IS NULL",
                [error, error_kind, attempts, latency_s, answer_id])

    def progress(self, evaluation_id: int) -> dict:
        """`total` answers planned, `answered`, `pending`, `failing`, tokens and `cost_usd`."""
        row = self.pool._q(
            "SELECT count(*), count(response), count(*) FILTER (WHERE response IS NULL AND error IS NOT NULL), "
            "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(cost_usd), 0.0) "
            "FROM eval_answers WHERE evaluation_id = ?", [evaluation_id]).fetchone()
        total, answered, failing, pt, ct, cost = row
        return {"total": int(total), "answered": int(answered), "pending": int(total) - int(answered),
                "failing": int(failing), "prompt_tokens": int(pt), "completion_tokens": int(ct),
                "tokens": int(pt) + int(ct), "cost_usd": float(cost)}

    def usage_by_model(self, evaluation_id: int) -> list[dict]:
        """Per model index: answered, tokens, cost and mean latency."""
        return self.pool._rows(
            """SELECT model_index, count(response) AS answered, coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
                      coalesce(sum(completion_tokens), 0) AS completion_tokens,
                      coalesce(sum(cost_usd), 0.0) AS cost_usd, avg(latency_s) FILTER (WHERE response IS NOT NULL)
                      AS latency_s
               FROM eval_answers WHERE evaluation_id = ? GROUP BY model_index ORDER BY model_index""",
            [evaluation_id])

    # -- people's ratings -------------------------------------------------------------
    def save_rating(self, answer_id: int, rater: str, rating: str, note: str | None = None) -> None:
        """One rating per rater per answer: inserted, or updated when the rater rated it before."""
        with _RATING_LOCK:
            evaluation_id = self.pool._scalar("SELECT evaluation_id FROM eval_answers WHERE id = ?", [answer_id])
            if evaluation_id is None:
                raise PoolError(f"There is no answer {answer_id}.")
            with self.pool.transaction() as cur:
                cur.execute("SELECT id FROM eval_ratings WHERE answer_id = ? AND rater = ?", [answer_id, rater])
                found = cur.fetchone()
                if found:
                    cur.execute("UPDATE eval_ratings SET rating = ?, note = ?, updated_at = current_timestamp "
                                "WHERE id = ?", [rating, note, found[0]])
                else:
                    cur.execute("INSERT INTO eval_ratings (evaluation_id, answer_id, rater, rating, note) "
                                "VALUES (?, ?, ?, ?, ?)", [evaluation_id, answer_id, rater, rating, note])

    def ratings(self, evaluation_id: int, *, rater: str | None = None) -> list[dict]:
        """People's ratings (of one rater when given), with the answer's instruction and model index."""
        where, params = ("AND r.rater = ?", [rater]) if rater is not None else ("", [])
        return self.pool._rows(
            f"""SELECT r.*, a.instruction_id, a.model_index FROM eval_ratings r
                JOIN eval_answers a ON a.id = r.answer_id
                WHERE r.evaluation_id = ? {where} ORDER BY r.answer_id, r.rater""", [evaluation_id, *params])

    # -- the judge's pre-ratings ------------------------------------------------------
    def open_prerates(self, evaluation_id: int, judge_model: str) -> list[dict]:
        return self.pool._rows(
            """SELECT p.id, p.answer_id, p.failures, i.position, a.model_index, i.instruction, i.input,
                      a.response AS answer
               FROM eval_prerates p JOIN eval_answers a ON a.id = p.answer_id
               JOIN eval_instructions i ON i.id = a.instruction_id
               WHERE p.evaluation_id = ? AND p.judge_model = ? AND p.response IS NULL
               ORDER BY i.position, a.model_index""", [evaluation_id, judge_model])

    def record_prerate(self, prerate_id: int, answer: dict) -> bool:
        values = [answer.get(col) for col in PRERATE_COLUMNS]
        sets = ", ".join(f"{col} = ?" for col in PRERATE_COLUMNS)
        row = self.pool._q(f"UPDATE eval_prerates SET {sets}, error = NULL, error_kind = NULL, "
                      f"answered_at = current_timestamp WHERE id = ? AND response IS NULL RETURNING id",
                      [*values, prerate_id]).fetchone()
        return row is not None

    def record_prerate_failure(self, prerate_id: int, *, error: str, error_kind: str, attempts: int = 0,
                                    latency_s: float = 0.0) -> None:
        self.pool._q("UPDATE eval_prerates SET error = ?, error_kind = ?, attempts = ?, latency_s = ?, "
                "failures = failures + 1 WHERE id = ? AND response IS NULL",
                [error, error_kind, attempts, latency_s, prerate_id])

    def prerates(self, evaluation_id: int, judge_model: str | None = None) -> list[dict]:
        """Pre-ratings (of one judge model when given), with the answer's instruction and model index."""
        where, params = ("AND p.judge_model = ?", [judge_model]) if judge_model is not None else ("", [])
        return self.pool._rows(
            f"""SELECT p.*, a.instruction_id, a.model_index FROM eval_prerates p
                JOIN eval_answers a ON a.id = p.answer_id JOIN eval_instructions i ON i.id = a.instruction_id
                WHERE p.evaluation_id = ? {where} ORDER BY i.position, a.model_index""", [evaluation_id, *params])

    def prerate_progress(self, evaluation_id: int, judge_model: str) -> dict:
        row = self.pool._q(
            "SELECT count(*), count(response), count(unparseable), coalesce(sum(cost_usd), 0.0), "
            "coalesce(sum(prompt_tokens), 0) + coalesce(sum(completion_tokens), 0) "
            "FROM eval_prerates WHERE evaluation_id = ? AND judge_model = ?", [evaluation_id, judge_model]).fetchone()
        total, answered, unparseable, cost, tokens = row
        return {"total": int(total), "answered": int(answered), "pending": int(total) - int(answered),
                "unparseable": int(unparseable), "cost_usd": float(cost), "tokens": int(tokens)}
