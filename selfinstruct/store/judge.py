"""Judge runs and their verdicts (issue 17): a model's answers to the quality questions, kept
apart from people's labels.

A judge run (`judge_runs`) judges a planned list of items (`judge_verdicts`, one row per item,
written with the run in one transaction): a quality study's items (scope 'study') or the pool's
accepted candidates with one kept instance each (scope 'pool'). A row is *answered* once its
`response` is set (it is never sent again; the same UPDATE stores the parsed answers, the tokens
and the cost), so a process killed anywhere resumes from the rows alone. A row whose retries ran
out keeps its `error` and is sent again.

Verdicts never enter `labels`: the Label page, the majority rule, the export's "labeled invalid"
and every human figure read `labels` only, so a judge is never counted as a person. Data only:
the runner (selfinstruct/judge.py) holds the workflow and the words.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..model import INTERRUPTED, RUNNING, accepted_sql, kept_sql
from .core import Queries, PoolError, _dumps, _loads

# The columns an answer writes (record_judge_answer), in order.
ANSWER_COLUMNS = ("prompt", "prompt_version", "parser_version", "structured", "response", "finish_reason",
                  "valid_task", "input_ok", "output_ok", "reason", "unparseable", "prompt_tokens",
                  "completion_tokens", "cost_usd", "latency_s", "attempts")


def latest_verdicts_sql(*, one_run: bool) -> str:
    """The one home of "the latest readable verdict": a SELECT giving, per (candidate, instance),
    the newest answered verdict whose three answers were read (candidate_id, instance_id,
    valid_task, input_ok, output_ok, reason, judge_run_id, verdict_id, answered_at), from every
    judge run, or (`one_run`) from the run given as its one `?` parameter. The export and Pool
    filters (store/explore.py) and `latest_judge_verdicts` use it."""
    run_filter = "AND v.judge_run_id = ?" if one_run else ""
    return f"""SELECT v.candidate_id, v.instance_id, v.valid_task, v.input_ok, v.output_ok, v.reason,
                      v.judge_run_id, v.id AS verdict_id, v.answered_at
               FROM judge_verdicts v WHERE v.response IS NOT NULL AND v.unparseable IS NULL {run_filter}
               QUALIFY row_number() OVER (PARTITION BY v.candidate_id, v.instance_id
                                          ORDER BY v.answered_at DESC, v.id DESC) = 1"""


class JudgeQueries(Queries):
    # -- what a run judges ---------------------------------------------------------
    def pool_items(self, limit: int | None = None) -> list[tuple[int, int, None]]:
        """(candidate id, instance id, None) for every accepted candidate with a kept instance, its
        first kept instance (lowest id), in candidate id order; the first `limit` when given."""
        sql = (f"SELECT c.id, min(i.id) FROM candidates c JOIN instances i ON i.candidate_id = c.id "
               f"AND {kept_sql('i')} WHERE {accepted_sql('c')} GROUP BY c.id ORDER BY c.id")
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [(int(c), int(i), None) for c, i in self.pool._q(sql, params).fetchall()]

    def study_items(self, study_id: int, limit: int | None = None) -> list[tuple[int, int | None, int]]:
        """(candidate id, instance id, study item id) of a study's items, in study order."""
        sql = "SELECT candidate_id, instance_id, id FROM study_items WHERE study_id = ? ORDER BY position"
        params: list[Any] = [study_id]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [(int(c), None if i is None else int(i), int(s)) for c, i, s in self.pool._q(sql, params).fetchall()]

    def item_texts(self, items: Sequence[tuple[int, int | None]]) -> list[dict]:
        """Instruction, input and output of (candidate id, instance id) pairs, in the given order
        (None for what no longer exists)."""
        if not items:
            return []
        rows = self.pool._rows(
            """WITH wanted AS (SELECT * FROM (VALUES """ + ", ".join("(?, ?, ?)" for _ in items) + """)
                                AS w(k, candidate_id, instance_id))
               SELECT w.k, c.instruction, i.input, i.output FROM wanted w
               LEFT JOIN candidates c ON c.id = w.candidate_id LEFT JOIN instances i ON i.id = w.instance_id
               ORDER BY w.k""", [x for k, (c, i) in enumerate(items) for x in (k, int(c), i)])
        return [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows]

    def answer_tokens(self, model: str) -> float | None:
        """Mean completion tokens of the answered verdicts of judge runs of `model` (None: none yet)."""
        value = self.pool._scalar(
            "SELECT avg(v.completion_tokens) FROM judge_verdicts v JOIN judge_runs r ON r.id = v.judge_run_id "
            "WHERE v.response IS NOT NULL AND v.completion_tokens IS NOT NULL "
            "AND json_extract_string(r.config, '$.model') = ?", [model])
        return None if value is None else float(value)

    # -- runs ----------------------------------------------------------------------
    def create_run(self, *, scope: str, config: dict, items: Sequence[tuple[int, int | None, int | None]],
                         study_id: int | None = None, name: str | None = None, actor: str = "user") -> int:
        """Store a judge run and plan its items, (candidate id, instance id, study item id) in
        judging order, in one transaction; audited."""
        if not items:
            raise PoolError("A judge run needs at least one item.")
        with self.pool.transaction() as cur:
            cur.execute(
                "INSERT INTO judge_runs (name, status, scope, study_id, config, updated_at) "
                "VALUES (?, 'created', ?, ?, ?, current_timestamp) RETURNING id",
                [name, scope, study_id, _dumps(config)])
            run_id = cur.fetchone()[0]
            cur.executemany(
                "INSERT INTO judge_verdicts (judge_run_id, position, candidate_id, instance_id, study_item_id) "
                "VALUES (?, ?, ?, ?, ?)",
                [[run_id, pos, int(c), None if i is None else int(i), None if s is None else int(s)]
                 for pos, (c, i, s) in enumerate(items)])
            self.pool._audit(cur, actor, "create_judge_run", "judge_run", run_id, None, None,
                        {"name": name, "scope": scope, "study_id": study_id, "items": len(items)})
        return run_id

    def run(self, judge_run_id: int) -> dict | None:
        rows = self.pool._rows("SELECT * FROM judge_runs WHERE id = ?", [judge_run_id])
        if not rows:
            return None
        rows[0]["config"] = _loads(rows[0]["config"]) or {}
        return rows[0]

    def runs(self, *, study_id: int | None = None) -> list[dict]:
        """Every judge run (of one study when given), newest first, with its progress counts
        (`items`, `answered`, `unparseable`) and `cost_usd`."""
        where, params = ("WHERE r.study_id = ?", [study_id]) if study_id is not None else ("", [])
        rows = self.pool._rows(
            f"""SELECT r.*, count(v.id) AS items, count(v.response) AS answered,
                       count(v.unparseable) AS unparseable, coalesce(sum(v.cost_usd), 0.0) AS cost_usd
                FROM judge_runs r LEFT JOIN judge_verdicts v ON v.judge_run_id = r.id
                {where} GROUP BY ALL ORDER BY r.id DESC""", params)
        for row in rows:
            row["config"] = _loads(row["config"]) or {}
        return rows

    def set_status(self, judge_run_id: int, status: str, *, stop_reason: str | None = None,
                             error: str | None = None, ended: bool = False) -> None:
        """`ended`: the run is over until resumed (finished_at set); RUNNING sets started_at once."""
        self.pool._q("UPDATE judge_runs SET status = ?, stop_reason = coalesce(?, stop_reason), error = ?, "
                "updated_at = current_timestamp, "
                "started_at = CASE WHEN ? = ? THEN coalesce(started_at, current_timestamp) ELSE started_at END, "
                "finished_at = CASE WHEN ? THEN current_timestamp ELSE NULL END WHERE id = ?",
                [status, stop_reason, error, status, RUNNING, bool(ended), judge_run_id])

    def set_structured(self, judge_run_id: int, structured: bool, note: str) -> None:
        self.pool._q("UPDATE judge_runs SET structured = ?, structured_note = ?, updated_at = current_timestamp "
                "WHERE id = ?", [structured, note, judge_run_id])

    def mark_interrupted(self, *, keep: Sequence[int] = ()) -> list[int]:
        """Judge runs still marked running when nothing runs them (their process died)."""
        ids = [r[0] for r in self.pool._q("SELECT id FROM judge_runs WHERE status = ?", [RUNNING]).fetchall()
               if r[0] not in set(keep)]
        for run_id in ids:
            self.set_status(run_id, INTERRUPTED, stop_reason="interrupted")
        return ids

    # -- items and answers -----------------------------------------------------------
    def open_items(self, judge_run_id: int) -> list[dict]:
        """The run's unanswered items in judging order, with their texts as they are now
        (`instruction` None: the candidate is gone) and `failures` so far."""
        return self.pool._rows(
            """SELECT v.id, v.position, v.candidate_id, v.instance_id, v.study_item_id, v.failures,
                      c.instruction, i.input, i.output
               FROM judge_verdicts v LEFT JOIN candidates c ON c.id = v.candidate_id
               LEFT JOIN instances i ON i.id = v.instance_id
               WHERE v.judge_run_id = ? AND v.response IS NULL ORDER BY v.position""", [judge_run_id])

    def record_answer(self, verdict_id: int, answer: dict) -> bool:
        """Store one answer and what was read from it (`ANSWER_COLUMNS`); a row already answered is
        left alone (False), so an answer is never stored twice."""
        values = [answer.get(col) for col in ANSWER_COLUMNS]
        sets = ", ".join(f"{col} = ?" for col in ANSWER_COLUMNS)
        row = self.pool._q(f"UPDATE judge_verdicts SET {sets}, error = NULL, error_kind = NULL, "
                      f"answered_at = current_timestamp WHERE id = ? AND response IS NULL RETURNING id",
                      [*values, verdict_id]).fetchone()
        return row is not None

    def record_failure(self, verdict_id: int, *, error: str, error_kind: str, attempts: int = 0,
                             latency_s: float = 0.0) -> None:
        """A request whose retries ran out: keep the error; the item is sent again."""
        self.pool._q("UPDATE judge_verdicts SET error = ?, error_kind = ?, attempts = ?, latency_s = ?, "
                "failures = failures + 1 WHERE id = ? AND response IS NULL",
                [error, error_kind, attempts, latency_s, verdict_id])

    def progress(self, judge_run_id: int) -> dict:
        """`total` items, `answered`, `parsed` (three answers read), `unparseable`, `pending`
        (not answered yet), `failing` (pending items whose last attempt failed)."""
        row = self.pool._q(
            "SELECT count(*), count(response), count(response) FILTER (WHERE unparseable IS NULL), "
            "count(unparseable), count(*) FILTER (WHERE response IS NULL AND error IS NOT NULL) "
            "FROM judge_verdicts WHERE judge_run_id = ?", [judge_run_id]).fetchone()
        total, answered, parsed, unparseable, failing = (int(x) for x in row)
        return {"total": total, "answered": answered, "parsed": parsed, "unparseable": unparseable,
                "pending": total - answered, "failing": failing}

    def usage(self, judge_run_id: int) -> dict:
        row = self.pool._q(
            "SELECT count(response), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
            "coalesce(sum(cost_usd), 0.0), coalesce(sum(latency_s) FILTER (WHERE response IS NOT NULL), 0.0) "
            "FROM judge_verdicts WHERE judge_run_id = ?", [judge_run_id]).fetchone()
        return {"answers": int(row[0]), "prompt_tokens": int(row[1]), "completion_tokens": int(row[2]),
                "tokens": int(row[1]) + int(row[2]), "cost_usd": float(row[3]), "latency_s": float(row[4])}

    def verdicts(self, judge_run_id: int) -> list[dict]:
        """Every item of a run in judging order, answered or not (all columns)."""
        return self.pool._rows("SELECT * FROM judge_verdicts WHERE judge_run_id = ? ORDER BY position", [judge_run_id])

    def latest_verdicts(self, *, study_id: int | None = None, judge_run_id: int | None = None) -> list[dict]:
        """The latest readable verdict per (candidate, instance), from every judge run or one:
        for a study's items (with `study_item_id` and `position`, in study order), or (study_id
        None) for every item any run judged, in candidate order. Columns: candidate_id,
        instance_id, valid_task, input_ok, output_ok, reason, judge_run_id, verdict_id, answered_at."""
        latest = latest_verdicts_sql(one_run=judge_run_id is not None)
        params: list[Any] = [judge_run_id] if judge_run_id is not None else []
        if study_id is None:
            return self.pool._rows(f"SELECT * FROM ({latest}) ORDER BY candidate_id, instance_id", params)
        return self.pool._rows(
            f"""SELECT si.id AS study_item_id, si.position, lv.*
                FROM study_items si JOIN ({latest}) lv ON lv.candidate_id = si.candidate_id
                 AND lv.instance_id IS NOT DISTINCT FROM si.instance_id
                WHERE si.study_id = ? ORDER BY si.position""", [*params, study_id])

    def update_config(self, judge_run_id: int, config: dict, changes: dict, *, actor: str = "user") -> None:
        """Store a judge run's corrected settings (resumed with another model, URL...); audited."""
        with self.pool.transaction() as cur:
            cur.execute("UPDATE judge_runs SET config = ?, updated_at = current_timestamp WHERE id = ?",
                        [_dumps(config), judge_run_id])
            self.pool._audit(cur, actor, "change_judge_settings", "judge_run", judge_run_id, None,
                        {k: v[0] for k, v in changes.items()}, {k: v[1] for k, v in changes.items()})
