"""The curated pool: browsing, editing, and the rows exports stream (issue 8).

Two halves:

* Export queries. One query builder (`_export_sql`) turns an `ExportFilters`
  (selfinstruct/export.py; any object with the same attributes works) into
  parameterised SQL. Counts, the page's preview, the streamed rows and the
  dataset card's statistics all run that same query, so they always agree.
* The pool explorer: paged search over accepted candidates and one item with its
  instances. Its edits (edit, approve, remove, undo) are `selfinstruct/actions.py`.

What is exportable: seed tasks (when asked for) and accepted candidates, each with
its kept instances. A task left with no instance after the filters is skipped
(counted as `empty_tasks`) unless the filters ask for empty tasks.

"Human-approved" means an accepted candidate a person has vouched for: rescued
from the rejects (review 'rescued') or approved/edited in the pool explorer
(review 'approved').

"Labeled invalid" follows the quality study's rule (store/quality.py): a candidate is
invalid when most of its labels answer "no" to "is this a valid task?"; an instance
when most of its labels answer "no" about its input or about its output.

The model judge's filter (`judge_run_id`, `judge_exclude`) reads the latest readable
verdict per item of one judge run (store/judge.py's `latest_verdicts_sql`, the one home of
that rule): a "no" to "valid task?" drops the task (every instance of it), a "no" to
"input appropriate?" or "output acceptable?" drops the instance the judge saw. Verdicts
are never labels: this filter and "labeled invalid" stay apart.
"""
from __future__ import annotations

from typing import Any

from ..model import CANDIDATE, SEED_TASK, INSTANCE_QUESTIONS, INSTRUCTION_QUESTIONS, NO, QUESTIONS, SQL, human_approved_sql, rescued_sql, \
    sql_literal
from .core import Queries, _loads
from .judge import latest_verdicts_sql
from .quality import QualityQueries
from .topics import over_cap_sql

# Columns of every exported row, in order.
EXPORT_COLUMNS = ("source", "task_id", "run_id", "round", "instruction", "is_classification",
                  "instance_id", "position", "input", "output")
# What Self-Instruct JSONL adds per task so that a round trip keeps them: a seed's own id and
# name from the file it came from (NULL for generated tasks and seeds typed in the app).
TASK_LABEL_COLUMNS = ("task_ref", "task_name")

# Review values that mean "a person vouched for this accepted item".
HUMAN_APPROVED_REVIEWS = ("rescued", "approved")


def judge_flagged_sql(questions, *, part: str) -> str:
    """SELECT of the ids (`part` "candidate" or "instance") whose latest verdict in one judge
    run (its id: the one `?` parameter) answers "no" to any of `questions`."""
    questions = tuple(questions)
    if not questions or set(questions) - set(QUESTIONS):
        raise ValueError(f"questions must be some of {QUESTIONS}, not {questions!r}")
    if part not in ("candidate", "instance"):
        raise ValueError(f"part must be candidate or instance, not {part!r}")
    any_no = " OR ".join(f"lv.{q} = {sql_literal(NO)}" for q in questions)
    return (f"SELECT lv.{part}_id FROM ({latest_verdicts_sql(one_run=True)}) lv "
            f"WHERE lv.{part}_id IS NOT NULL AND ({any_no})")


def _judge_parts(f) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The filters' judge questions that drop a task, and those that drop an instance."""
    chosen = tuple(getattr(f, "judge_exclude", ()) or ()) if getattr(f, "judge_run_id", None) is not None else ()
    return (tuple(q for q in chosen if q in INSTRUCTION_QUESTIONS),
            tuple(q for q in chosen if q in INSTANCE_QUESTIONS))


def _words(expr: str) -> str:
    """SQL for the number of whitespace-separated words of `expr` (Python's str.split())."""
    return f"len(regexp_extract_all({expr}, '\\S+'))"


class ExportStream:
    """Arrow record batches of an export, read through a cursor of their own that
    is closed when the batches run out (or on `close()`)."""

    def __init__(self, cursor, reader):
        self._cursor, self._reader = cursor, reader
        self.schema = reader.schema

    def __iter__(self):
        try:
            yield from self._reader
        finally:
            self.close()

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def __enter__(self) -> "ExportStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ExploreQueries(Queries):
    # =====================================================================
    # Export: one query builder
    # =====================================================================
    @staticmethod
    def _instance_conditions(f, alias: str) -> tuple[list[str], list[Any]]:
        where = [f"{alias}.status = {SQL.KEPT}"]
        params: list[Any] = []
        if f.min_output_words is not None:
            where.append(f"{_words(alias + '.output')} >= ?")
            params.append(int(f.min_output_words))
        if f.max_output_words is not None:
            where.append(f"{_words(alias + '.output')} <= ?")
            params.append(int(f.max_output_words))
        if f.exclude_invalid:
            where.append(f"{alias}.id NOT IN ({QualityQueries.invalid_instances_sql()})")
        drop_instances = _judge_parts(f)[1]
        if drop_instances:
            where.append(f"{alias}.id NOT IN ({judge_flagged_sql(drop_instances, part='instance')})")
            params.append(int(f.judge_run_id))
        return where, params

    @staticmethod
    def _task_conditions(f, alias: str, *, generated: bool) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        clf = f"coalesce({alias}.is_classification, FALSE)"
        if f.classification is not None:
            where.append(f"{clf} = ?")
            params.append(bool(f.classification))
        if f.min_instruction_words is not None:
            where.append(f"{_words(alias + '.instruction')} >= ?")
            params.append(int(f.min_instruction_words))
        if f.max_instruction_words is not None:
            where.append(f"{_words(alias + '.instruction')} <= ?")
            params.append(int(f.max_instruction_words))
        if getattr(f, "max_per_topic", None) is not None:
            where.append(f"{alias}.id NOT IN ({over_cap_sql(CANDIDATE if generated else SEED_TASK)})")
            params += [int(f.topic_set_id), int(f.max_per_topic)]
        if not generated:
            return where, params
        where.append(f"{alias}.status = {SQL.ACCEPTED}")
        if f.runs:
            where.append(f"list_contains(?::BIGINT[], {alias}.run_id)")
            params.append([int(r) for r in f.runs])
        if f.min_round is not None:
            where.append("r.number >= ?")
            params.append(int(f.min_round))
        if f.max_round is not None:
            where.append("r.number <= ?")
            params.append(int(f.max_round))
        if f.exclude_rescued:
            where.append(f"NOT {rescued_sql(alias)}")
        if f.human_approved_only:
            where.append(human_approved_sql(alias))
        if f.exclude_invalid:
            where.append(f"{alias}.id NOT IN ({QualityQueries.invalid_candidates_sql()})")
        drop_tasks = _judge_parts(f)[0]
        if drop_tasks:
            where.append(f"{alias}.id NOT IN ({judge_flagged_sql(drop_tasks, part='candidate')})")
            params.append(int(f.judge_run_id))
        return where, params

    def _export_sql(self, f, *, keep_empty: bool | None = None) -> tuple[str, list[Any]]:
        """SQL (no ORDER BY) giving one row per exported instance, with the columns
        `k` (0 seeds, 1 generated) and EXPORT_COLUMNS. With `keep_empty` (default:
        the filters' include_empty_tasks) a task with no instance gives one row
        whose instance columns are NULL."""
        keep_empty = f.include_empty_tasks if keep_empty is None else keep_empty
        join = "LEFT JOIN" if keep_empty else "JOIN"
        parts: list[str] = []
        params: list[Any] = []
        if f.include_seeds:
            t_where, t_params = self._task_conditions(f, "s", generated=False)
            i_where, i_params = self._instance_conditions(f, "i")
            parts.append(
                "SELECT 0 AS k, 'seed' AS source, t.id AS task_id, NULL::BIGINT AS run_id, "
                "NULL::INTEGER AS round, t.instruction, t.is_classification, "
                "x.id AS instance_id, x.position, x.input, x.output, "
                "t.source_id AS task_ref, t.name AS task_name "
                f"FROM (SELECT s.id, s.source_id, s.name, s.instruction, s.is_classification FROM seed_tasks s "
                f"{'WHERE ' + ' AND '.join(t_where) if t_where else ''}) t "
                f"{join} (SELECT i.id, i.seed_id, i.position, i.input, i.output FROM instances i "
                f"WHERE i.seed_id IS NOT NULL AND {' AND '.join(i_where)}) x ON x.seed_id = t.id")
            params += t_params + i_params
        if f.include_generated:
            t_where, t_params = self._task_conditions(f, "c", generated=True)
            i_where, i_params = self._instance_conditions(f, "i")
            parts.append(
                "SELECT 1 AS k, 'generated' AS source, t.id AS task_id, t.run_id, t.round, "
                "t.instruction, t.is_classification, "
                "x.id AS instance_id, x.position, x.input, x.output, "
                "NULL::VARCHAR AS task_ref, NULL::VARCHAR AS task_name "
                "FROM (SELECT c.id, c.run_id, r.number AS round, c.instruction, "
                "coalesce(c.is_classification, FALSE) AS is_classification "
                "FROM candidates c LEFT JOIN rounds r ON r.id = c.round_id "
                f"WHERE {' AND '.join(t_where)}) t "
                f"{join} (SELECT i.id, i.candidate_id, i.position, i.input, i.output FROM instances i "
                f"WHERE i.candidate_id IS NOT NULL AND {' AND '.join(i_where)}) x "
                "ON x.candidate_id = t.id")
            params += t_params + i_params
        if not parts:  # nothing asked for: a query with the right columns and no row
            return ("SELECT 0 AS k, NULL::VARCHAR AS source, NULL::BIGINT AS task_id, "
                    "NULL::BIGINT AS run_id, NULL::INTEGER AS round, NULL::VARCHAR AS instruction, "
                    "NULL::BOOLEAN AS is_classification, NULL::BIGINT AS instance_id, "
                    "NULL::INTEGER AS position, NULL::VARCHAR AS input, NULL::VARCHAR AS output, "
                    "NULL::VARCHAR AS task_ref, NULL::VARCHAR AS task_name WHERE FALSE"), []
        return " UNION ALL ".join(f"({p})" for p in parts), params

    _EXPORT_ORDER = " ORDER BY k, task_id, position"

    def export_counts(self, filters) -> dict[str, int]:
        """What an export with these filters holds: tasks (with at least one instance),
        empty_tasks (matching tasks left with no instance: skipped unless the filters
        include empty tasks), instances, and the same split by seed/generated, plus
        instances with a non-empty input and classification tasks."""
        sql, params = self._export_sql(filters, keep_empty=True)
        row = self.pool._q(
            f"""WITH rows AS ({sql}),
               per_task AS (
                 SELECT k, task_id, any_value(is_classification) AS clf,
                        count(instance_id) AS n,
                        count(instance_id) FILTER (WHERE input <> '') AS n_input
                 FROM rows GROUP BY k, task_id)
               SELECT count(*) FILTER (WHERE n > 0),
                      count(*) FILTER (WHERE n = 0),
                      coalesce(sum(n), 0),
                      count(*) FILTER (WHERE n > 0 AND k = 0),
                      count(*) FILTER (WHERE n > 0 AND k = 1),
                      coalesce(sum(n) FILTER (WHERE k = 0), 0),
                      coalesce(sum(n) FILTER (WHERE k = 1), 0),
                      coalesce(sum(n_input), 0),
                      count(*) FILTER (WHERE n > 0 AND clf)
               FROM per_task""", params).fetchone()
        keys = ("tasks", "empty_tasks", "instances", "seed_tasks", "generated_tasks",
                "seed_instances", "generated_instances", "with_input", "classification_tasks")
        return dict(zip(keys, (int(v) for v in row)))

    def export_preview(self, filters, limit: int = 20, *, task_labels: bool = False):
        """The first `limit` rows an export writes, in its order (a DataFrame); with
        `task_labels` also TASK_LABEL_COLUMNS."""
        sql, params = self._export_sql(filters)
        columns = EXPORT_COLUMNS + (TASK_LABEL_COLUMNS if task_labels else ())
        return self.pool._frame(
            f"SELECT {', '.join(columns)} FROM ({sql}) {self._EXPORT_ORDER} LIMIT ?",
            params + [int(limit)])

    def export_reader(self, filters, batch_size: int = 2_048, *, task_labels: bool = False) -> "ExportStream":
        """Every exported row, in order, as Arrow record batches of at most
        `batch_size` rows: DuckDB produces the batches as they are read, so the rows
        are never all in Python memory at once. The stream reads through its own
        cursor (other queries may run while it is open); iterate it to the end or
        close it."""
        sql, params = self._export_sql(filters)
        cur = self.pool._con.cursor()
        try:
            columns = EXPORT_COLUMNS + (TASK_LABEL_COLUMNS if task_labels else ())
            reader = cur.sql(f"SELECT {', '.join(columns)} FROM ({sql}) {self._EXPORT_ORDER}",
                             params=params).to_arrow_reader(int(batch_size))
        except BaseException:
            cur.close()
            raise
        return ExportStream(cur, reader)

    def export_instructions(self, filters) -> list[tuple[str, str]]:
        """(source, instruction) of every exported task, in export order."""
        sql, params = self._export_sql(filters)
        return [(r[0], r[1]) for r in self.pool._q(
            f"SELECT source, any_value(instruction) FROM ({sql}) GROUP BY k, task_id, source "
            "ORDER BY k, task_id", params).fetchall()]

    def export_run_ids(self, filters) -> list[int]:
        """Runs that contributed at least one exported task."""
        sql, params = self._export_sql(filters)
        return [int(r[0]) for r in self.pool._q(
            f"SELECT DISTINCT run_id FROM ({sql}) WHERE run_id IS NOT NULL ORDER BY run_id",
            params).fetchall()]

    def export_length_stats(self, filters, *, bin_width: int = 5, cap: int = 100) -> dict:
        """Word-count distributions of what an export holds, aggregated in SQL:
        instructions (one per task), non-empty inputs, outputs (one per instance).
        Returns {"histogram": DataFrame(field, bin_start, n), "means": {field: mean},
        "counts": {field: n}}; counts at or above `cap` fall in the last bin."""
        sql, params = self._export_sql(filters)
        base = f"""WITH rows AS ({sql}),
            words AS (
              SELECT 'instruction' AS field, {_words('any_value(instruction)')} AS w
                FROM rows GROUP BY k, task_id
              UNION ALL SELECT 'input', {_words('input')} FROM rows
                WHERE instance_id IS NOT NULL AND input <> ''
              UNION ALL SELECT 'output', {_words('output')} FROM rows WHERE instance_id IS NOT NULL)"""
        hist = self.pool._frame(
            base + " SELECT field, (least(w, ?) // ?) * ? AS bin_start, count(*) AS n, sum(w) AS words "
                   "FROM words GROUP BY ALL ORDER BY field, bin_start",
            params + [int(cap), int(bin_width), int(bin_width)])
        means, counts = {}, {}
        for field, group in hist.groupby("field"):
            counts[field] = int(group["n"].sum())
            means[field] = float(group["words"].sum()) / counts[field]
        hist = hist.drop(columns="words")
        return {"histogram": hist, "means": means, "counts": counts, "bin_width": bin_width, "cap": cap}

    def export_judged(self, filters, judge_run_id: int) -> dict[str, int]:
        """Of an export's generated rows: `tasks` with a readable verdict of this judge run on
        any of their (candidate, instance) items, and `instances` it judged."""
        sql, params = self._export_sql(filters)
        row = self.pool._q(
            f"""WITH rows AS ({sql}), lv AS ({latest_verdicts_sql(one_run=True)})
               SELECT count(DISTINCT r.task_id) FILTER (WHERE EXISTS (
                          SELECT 1 FROM lv WHERE lv.candidate_id = r.task_id)),
                      count(*) FILTER (WHERE EXISTS (
                          SELECT 1 FROM lv WHERE lv.instance_id = r.instance_id))
               FROM rows r WHERE r.k = 1""", params + [int(judge_run_id)]).fetchone()
        return {"tasks": int(row[0]), "instances": int(row[1])}

    # -- what the dataset card reports beside the rows --------------------------------
    def seed_instruction_texts(self) -> list[str]:
        return [r[0] for r in self.pool._q("SELECT instruction FROM seed_tasks ORDER BY id").fetchall()]

    def label_summary(self) -> list[dict]:
        """Per quality study with labels: items labeled, labels, annotators, and for each
        question the 'yes' count over the answered ones; `all_yes` counts labels with
        three yeses among labels with three answers."""
        return self.pool._rows(
            """SELECT q.id AS study_id, q.name, q.sample_size,
                      count(DISTINCT l.item_id) AS items_labeled, count(*) AS labels,
                      count(DISTINCT l.annotator) AS annotators,
                      count(*) FILTER (WHERE l.valid_task = 'yes') AS valid_task_yes,
                      count(l.valid_task) AS valid_task_answered,
                      count(*) FILTER (WHERE l.input_ok = 'yes') AS input_ok_yes,
                      count(l.input_ok) AS input_ok_answered,
                      count(*) FILTER (WHERE l.output_ok = 'yes') AS output_ok_yes,
                      count(l.output_ok) AS output_ok_answered,
                      count(*) FILTER (WHERE l.valid_task = 'yes' AND l.input_ok = 'yes'
                                         AND l.output_ok = 'yes') AS all_yes,
                      count(*) FILTER (WHERE l.valid_task IS NOT NULL AND l.input_ok IS NOT NULL
                                         AND l.output_ok IS NOT NULL) AS all_answered
               FROM quality_studies q JOIN labels l ON l.study_id = q.id
               GROUP BY q.id, q.name, q.sample_size ORDER BY q.id""")

    # =====================================================================
    # Pool explorer
    # =====================================================================
    def explore_version(self) -> tuple:
        """Changes whenever the pool does: seeds, candidates or instances added, a decision
        made or changed, any audited edit (rescue, confirm, remove, re-filter, ...). A cheap
        (~4 ms on 150K candidates) cache key for views that read a whole table: the
        diversity analyses here, the Rejects page's What-if evidence and filter lists."""
        return tuple(self.pool._q(
            """SELECT (SELECT count(*) FROM seed_tasks),
                      (SELECT count(*) FROM candidates WHERE status = 'accepted'),
                      (SELECT count(*) FROM instances WHERE status = 'kept'),
                      (SELECT coalesce(max(id), 0) FROM candidates),
                      (SELECT coalesce(max(id), 0) FROM instances),
                      (SELECT coalesce(max(id), 0) FROM audit_log),
                      (SELECT coalesce(max(updated_at)::VARCHAR, '') FROM candidates)""").fetchone())

    @staticmethod
    def _browse_where(search: str = "", *, in_instances: bool = False, run_id: int | None = None,
                      classification: bool | None = None, review: str | None = None,
                      judge_run_id: int | None = None, judge_drop: tuple[str, ...] = (),
                      judge_show: str = "hide") -> tuple[str, list[Any]]:
        where = [f"c.status = {SQL.ACCEPTED}"]
        params: list[Any] = []
        text = (search or "").strip().lower()
        if text:
            if in_instances:
                where.append("(contains(lower(c.instruction), ?) OR EXISTS (SELECT 1 FROM instances i "
                             f"WHERE i.candidate_id = c.id AND i.status = {SQL.KEPT} AND "
                             "(contains(lower(i.input), ?) OR contains(lower(i.output), ?))))")
                params += [text, text, text]
            else:
                where.append("contains(lower(c.instruction), ?)")
                params.append(text)
        if run_id is not None:
            where.append("c.run_id = ?")
            params.append(int(run_id))
        if classification is not None:
            where.append("coalesce(c.is_classification, FALSE) = ?")
            params.append(bool(classification))
        if review == "untouched":
            where.append("c.review IS NULL")
        elif review == "human_approved":
            where.append(human_approved_sql('c'))
        elif review:
            where.append("c.review = ?")
            params.append(review)
        if judge_run_id is not None and judge_drop:
            # A task is flagged when the judge's latest verdict on it says "no" to any chosen
            # question (a task's or its judged instance's): "hide" leaves those out, "only" shows them.
            if judge_show not in ("hide", "only"):
                raise ValueError(f"judge_show must be hide or only, not {judge_show!r}")
            where.append(f"c.id {'NOT IN' if judge_show == 'hide' else 'IN'} "
                         f"({judge_flagged_sql(judge_drop, part='candidate')})")
            params.append(int(judge_run_id))
        return " AND ".join(where), params

    def pool_browse_count(self, search: str = "", **kw) -> int:
        where, params = self._browse_where(search, **kw)
        return int(self.pool._scalar(f"SELECT count(*) FROM candidates c WHERE {where}", params))

    def pool_browse(self, search: str = "", *, limit: int = 50, offset: int = 0,
                    newest_first: bool = True, **kw):
        """One page of accepted candidates matching the search (a case-insensitive
        substring of the instruction, or also of the kept inputs/outputs), with their
        kept-instance count. A DataFrame."""
        where, params = self._browse_where(search, **kw)
        order = "DESC" if newest_first else "ASC"
        return self.pool._frame(
            f"""WITH page AS (
                  SELECT c.id, c.run_id, r.number AS round, c.instruction,
                         coalesce(c.is_classification, FALSE) AS is_classification,
                         c.max_rouge, c.review, c.decided_by
                  FROM candidates c LEFT JOIN rounds r ON r.id = c.round_id
                  WHERE {where} ORDER BY c.id {order} LIMIT ? OFFSET ?)
               SELECT page.*, coalesce(n.instances, 0) AS instances
               FROM page LEFT JOIN (SELECT candidate_id, count(*) AS instances FROM instances
                                    WHERE status = 'kept' AND candidate_id IN (SELECT id FROM page)
                                    GROUP BY candidate_id) n ON n.candidate_id = page.id
               ORDER BY page.id {order}""",
            params + [int(limit), int(offset)])

    def pool_item(self, candidate_id: int) -> dict | None:
        """One candidate with all its instances (kept first, then rejected)."""
        rows = self.pool._rows(
            "SELECT c.*, r.number AS round FROM candidates c LEFT JOIN rounds r ON r.id = c.round_id "
            "WHERE c.id = ?", [int(candidate_id)])
        if not rows:
            return None
        item = rows[0]
        item["details"] = _loads(item["details"])
        item["instances"] = self.pool._rows(
            "SELECT id, position, input, output, status, reason FROM instances WHERE candidate_id = ? "
            f"ORDER BY status = {SQL.KEPT} DESC, position", [int(candidate_id)])
        return item

    def pool_runs(self) -> list[dict]:
        """Runs with accepted candidates, and the rounds they span (for filters)."""
        return self.pool._rows(
            "SELECT c.run_id AS id, any_value(ru.name) AS name, min(r.number) AS first_round, "
            "max(r.number) AS last_round, count(*) AS accepted FROM candidates c "
            "LEFT JOIN rounds r ON r.id = c.round_id LEFT JOIN runs ru ON ru.id = c.run_id "
            f"WHERE c.status = {SQL.ACCEPTED} AND c.run_id IS NOT NULL GROUP BY c.run_id ORDER BY c.run_id")


__all__ = ["ExploreQueries", "ExportStream", "EXPORT_COLUMNS", "TASK_LABEL_COLUMNS", "HUMAN_APPROVED_REVIEWS", "judge_flagged_sql"]
