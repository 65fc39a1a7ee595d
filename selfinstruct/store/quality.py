"""Quality studies: samples, labels and their statistics' raw data (issue 7).

A study is a stored random sample of accepted machine-generated instructions, one kept
instance each (`study_items`, in labeling order). Labels are one row per (study, item,
annotator); saving again updates that row. The statistics themselves live in
`selfinstruct.quality`; this module only reads and writes rows.

A team of annotators: a study's `overlap` (k, 1 by default) is how many annotators should label
each item. An annotator's queue is the study's items, in study order, that they have not
labeled and that have fewer than k labels; an item leaves every other queue once it has k. The
item on an annotator's screen is leased to them (`label_leases`, one per annotator per study,
with an expiry): it counts toward k for everyone else's queue until it is saved, skipped or the
lease ends, so people are offered different items. Leases only steer what is offered: two
annotators who save the same item at the same moment both keep their label (an item may then
hold more than k): nobody's work is refused or overwritten.

Hooks for the pool and export pages:
- `labeled_candidate_ids()`: candidates that carry at least one label in any study.
- `invalid_candidate_ids(rule="majority")`: candidates whose instruction people judged not a
  valid task, by the majority rule of `selfinstruct.model` over every label the candidate got
  (every study, every annotator; an unanswered question counts as "unsure"). "any": at least
  one label says "no".
- `invalid_instance_ids(rule="majority")`: the labeled instances whose input or output people
  judged wrong, by the same rule applied to "input appropriate" and "output correct" separately.
- `candidate_label_summary(candidate_ids)`: per candidate, how many labels and how they went.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

import duckdb

from ..model import (ANSWERS, INSTANCE_QUESTIONS, INSTRUCTION_QUESTIONS, MAX_OVERLAP, NO, QUESTIONS, YES,
                     accepted_sql, kept_sql, labeled_no_sql, sql_literal)
from .core import Queries, PoolError, _dumps, _loads

# Saving a label reads (is there one of this annotator already?) then writes: the app's sessions
# share one process, so one lock makes the pair atomic and the same annotator saving from two
# tabs cannot leave two rows. DuckDB keeps other processes out of the file.
# Leases are read and written under the same lock, so choosing an item and holding it is one
# step (re-entered by claim_next, hence an RLock).
_LABEL_WRITE = threading.RLock()


def utcnow() -> datetime:
    """Lease times: UTC without a zone, as stored."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _in_list(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


class QualityQueries(Queries):
    # -- what can be sampled -------------------------------------------------------
    def quality_scope(self) -> dict:
        """Runs and round numbers that hold sampleable instructions (accepted, with at least
        one kept instance), with counts, for the study form."""
        runs = self.pool._rows(
            f"""SELECT c.run_id, any_value(r.name) AS name, count(*) AS eligible
               FROM candidates c LEFT JOIN runs r ON r.id = c.run_id
               WHERE {accepted_sql('c')} AND EXISTS
                 (SELECT 1 FROM instances i WHERE i.candidate_id = c.id AND {kept_sql('i')})
               GROUP BY c.run_id ORDER BY c.run_id""")
        rounds = self.pool._rows(
            f"""SELECT rd.number AS round, count(*) AS eligible
               FROM candidates c JOIN rounds rd ON rd.id = c.round_id
               WHERE {accepted_sql('c')} AND EXISTS
                 (SELECT 1 FROM instances i WHERE i.candidate_id = c.id AND {kept_sql('i')})
               GROUP BY rd.number ORDER BY rd.number""")
        return {"runs": runs, "rounds": rounds,
                "eligible": sum(int(r["eligible"]) for r in runs)}

    def study_candidates(self, run_ids: Sequence[int] | None = None,
                         round_numbers: Sequence[int] | None = None) -> list[dict]:
        """Every sampleable candidate (accepted, at least one kept instance) in candidate id
        order, with its run, round number, classification flag and kept instance ids (in id
        order). Ids only, no text: this is read once, when a study is created."""
        sql = [f"""SELECT c.id AS candidate_id, c.run_id, rd.number AS round, c.is_classification,
                         list(i.id ORDER BY i.id) AS instance_ids
                  FROM candidates c
                  JOIN instances i ON i.candidate_id = c.id AND {kept_sql('i')}
                  LEFT JOIN rounds rd ON rd.id = c.round_id
                  WHERE {accepted_sql('c')}"""]
        params: list[Any] = []
        if run_ids is not None:
            if not run_ids:
                return []
            sql.append(f"AND c.run_id IN ({_in_list(run_ids)})")
            params.extend(int(r) for r in run_ids)
        if round_numbers is not None:
            if not round_numbers:
                return []
            sql.append(f"AND rd.number IN ({_in_list(round_numbers)})")
            params.extend(int(r) for r in round_numbers)
        sql.append("GROUP BY c.id, c.run_id, rd.number, c.is_classification ORDER BY c.id")
        return self.pool._rows(" ".join(sql), params)

    # -- studies -------------------------------------------------------------------
    def create_study(self, name: str, *, seed: int, items: Sequence[tuple[int, int]],
                     config: dict | None = None, actor: str = "user", overlap: int = 1) -> int:
        """Store a study and its sample: `items` are (candidate id, instance id) in labeling
        order. `sample_size` records how many items were actually drawn; `overlap` how many
        annotators should label each item."""
        name = (name or "").strip()
        if not name:
            raise PoolError("A study needs a name.")
        if not items:
            raise PoolError("A study needs at least one item.")
        if not 1 <= int(overlap) <= MAX_OVERLAP:
            raise PoolError(f"Annotators per item must be between 1 and {MAX_OVERLAP}, not {overlap}.")
        with self.pool.transaction() as cur:
            cur.execute(
                "INSERT INTO quality_studies (name, sample_size, seed, config, overlap) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                [name, len(items), int(seed), _dumps(config or {}), int(overlap)])
            study_id = cur.fetchone()[0]
            cur.executemany(
                "INSERT INTO study_items (study_id, position, candidate_id, instance_id) "
                "VALUES (?, ?, ?, ?)",
                [[study_id, pos, int(cand), None if inst is None else int(inst)]
                 for pos, (cand, inst) in enumerate(items)])
            self.pool._audit(cur, actor, "create_study", "study", study_id, None, None,
                        {"name": name, "seed": int(seed), "items": len(items), "overlap": int(overlap),
                         "config": config or {}})
        return study_id

    def studies(self) -> list[dict]:
        """Every study, newest first, with its item, labeled-item, label and annotator counts."""
        rows = self.pool._rows(
            """SELECT s.id, s.name, s.sample_size, s.seed, s.config, s.created_at, s.overlap,
                      (SELECT count(*) FROM study_items si WHERE si.study_id = s.id) AS items,
                      (SELECT count(DISTINCT item_id) FROM labels l WHERE l.study_id = s.id) AS labeled_items,
                      (SELECT count(*) FROM labels l WHERE l.study_id = s.id) AS labels,
                      (SELECT count(DISTINCT annotator) FROM labels l WHERE l.study_id = s.id) AS annotators
               FROM quality_studies s ORDER BY s.id DESC""")
        for row in rows:
            row["config"] = _loads(row["config"]) or {}
        return rows

    def study(self, study_id: int) -> dict | None:
        rows = self.pool._rows(
            "SELECT s.*, (SELECT count(*) FROM study_items si WHERE si.study_id = s.id) AS items "
            "FROM quality_studies s WHERE s.id = ?", [study_id])
        if not rows:
            return None
        rows[0]["config"] = _loads(rows[0]["config"]) or {}
        return rows[0]

    def study_item(self, study_id: int, position: int, annotator: str | None = None) -> dict | None:
        """One item with its texts, round and classification flag, and `annotator`'s label
        (answers None when not labeled yet). `input`/`output` are None when the sampled
        instance no longer exists."""
        rows = self.pool._rows(
            """SELECT si.id AS item_id, si.position, si.candidate_id, si.instance_id,
                      c.instruction, i.input, i.output, c.run_id, rd.number AS round,
                      c.is_classification, c.status AS candidate_status,
                      l.valid_task, l.input_ok, l.output_ok, l.note, l.updated_at AS labeled_at
               FROM study_items si
               JOIN candidates c ON c.id = si.candidate_id
               LEFT JOIN instances i ON i.id = si.instance_id
               LEFT JOIN rounds rd ON rd.id = c.round_id
               LEFT JOIN labels l ON l.study_id = si.study_id AND l.item_id = si.id AND l.annotator = ?
               WHERE si.study_id = ? AND si.position = ?""",
            [annotator, study_id, position])
        return rows[0] if rows else None

    def study_progress(self, study_id: int, annotator: str, *, now: datetime | None = None) -> dict:
        """How far `annotator` is: items, items they labeled, the position of their first
        unlabeled item (None when they have labeled every item), how many items are in their
        queue (`queue`) and the positions of those items in study order (`queue_positions`);
        `complete`: items with `overlap` labels or more.

        Leases: an item whose labels plus other annotators' live leases reach `overlap` is not
        in the queue; `held` counts such items (they still need a label but are on someone
        else's screen) and `held_until` is the earliest end of those leases (None: none held).
        `holding` is the position of the item this annotator holds (None: none)."""
        now = now or utcnow()
        rows = self.pool._q(
            """WITH item AS (
                   SELECT si.id, si.position,
                          count(l.id) AS labels,
                          count(l.id) FILTER (WHERE l.annotator = ?) AS mine
                   FROM study_items si
                   LEFT JOIN labels l ON l.study_id = si.study_id AND l.item_id = si.id
                   WHERE si.study_id = ? GROUP BY si.id, si.position),
               held AS (
                   SELECT item_id, count(*) FILTER (WHERE annotator <> ?) AS others,
                          min(expires_at) FILTER (WHERE annotator <> ?) AS until,
                          bool_or(annotator = ?) AS own
                   FROM label_leases WHERE study_id = ? AND expires_at > ? GROUP BY item_id)
               SELECT item.position, item.labels, item.mine, s.overlap,
                      coalesce(held.others, 0), held.until, coalesce(held.own, FALSE)
               FROM item JOIN quality_studies s ON s.id = ? LEFT JOIN held ON held.item_id = item.id
               ORDER BY item.position""",
            [annotator, study_id, annotator, annotator, annotator, study_id, now, study_id]).fetchall()
        overlap = int(rows[0][3]) if rows else 1
        open_items = [r for r in rows if not r[2] and r[1] < overlap]
        queue = [int(r[0]) for r in open_items if r[1] + r[4] < overlap]
        held = [r for r in open_items if r[1] + r[4] >= overlap]
        return {"items": len(rows), "labeled": sum(1 for r in rows if r[2]),
                "first_unlabeled": next((int(r[0]) for r in rows if not r[2]), None),
                "queue": len(queue), "queue_positions": queue, "overlap": overlap,
                "complete": sum(1 for r in rows if r[1] >= overlap),
                "held": len(held), "held_until": min((r[5] for r in held), default=None),
                "holding": next((int(r[0]) for r in rows if r[6]), None)}

    # -- leases: the item on an annotator's screen is held for them for a while ---------
    def hold_item(self, study_id: int, position: int, annotator: str, *, seconds: float,
                  now: datetime | None = None) -> datetime | None:
        """`annotator` has the item at `position` on their screen: their lease on any other item
        of the study ends, and this one is held for them for `seconds` (renewed when held
        already) if it still has room: they have not labeled it and its labels plus the others'
        live leases are under the study's overlap. Returns when the lease ends, or None (not
        held: labeled by them, or full)."""
        with _LABEL_WRITE:
            return self._hold(study_id, position, annotator, seconds, now or utcnow())

    def claim_next(self, study_id: int, annotator: str, pick: Callable[[list[int]], int | None], *,
                   seconds: float, now: datetime | None = None) -> int | None:
        """Choose and hold in one step, so two annotators who open the page at the same moment
        are not both given the last free place on an item: `pick` chooses a position from the
        annotator's queue (leases counted); that item is held for them. None (and no lease)
        when the queue is empty."""
        now = now or utcnow()
        with _LABEL_WRITE:
            position = pick(self.study_progress(study_id, annotator, now=now)["queue_positions"])
            if position is None:
                self.release_lease(study_id, annotator)
                return None
            self._hold(study_id, position, annotator, seconds, now)
            return position

    def release_lease(self, study_id: int, annotator: str) -> None:
        """`annotator` no longer has an item of this study on their screen."""
        with _LABEL_WRITE, self.pool.transaction() as cur:
            cur.execute("DELETE FROM label_leases WHERE study_id = ? AND annotator = ?", [study_id, annotator])

    def study_leases(self, study_id: int, *, now: datetime | None = None) -> list[dict]:
        """The live leases of a study (annotator, position, expires_at), by position."""
        return self.pool._rows(
            """SELECT ll.annotator, si.position, ll.expires_at FROM label_leases ll
               JOIN study_items si ON si.id = ll.item_id AND si.study_id = ll.study_id
               WHERE ll.study_id = ? AND ll.expires_at > ? ORDER BY si.position, ll.annotator""",
            [study_id, now or utcnow()])

    def _hold(self, study_id: int, position: int, annotator: str, seconds: float,
              now: datetime) -> datetime | None:
        with self.pool.transaction() as cur:
            cur.execute("DELETE FROM label_leases WHERE study_id = ? AND (annotator = ? OR expires_at <= ?)",
                        [study_id, annotator, now])
            row = cur.execute(
                """SELECT si.id, s.overlap,
                          (SELECT count(*) FROM labels l WHERE l.study_id = si.study_id AND l.item_id = si.id),
                          (SELECT count(*) FROM labels l WHERE l.study_id = si.study_id AND l.item_id = si.id
                                                           AND l.annotator = ?),
                          (SELECT count(*) FROM label_leases ll WHERE ll.study_id = si.study_id
                                                                AND ll.item_id = si.id)
                   FROM study_items si JOIN quality_studies s ON s.id = si.study_id
                   WHERE si.study_id = ? AND si.position = ?""", [annotator, study_id, position]).fetchone()
            if row is None:
                return None
            item_id, overlap, labels, mine, others = row
            if mine or labels + others >= overlap:
                return None
            until = now + timedelta(seconds=seconds)
            cur.execute("INSERT INTO label_leases (study_id, item_id, annotator, expires_at) VALUES (?, ?, ?, ?)",
                        [study_id, item_id, annotator, until])
            return until

    def study_team_progress(self, study_id: int) -> dict:
        """For the owner: the study's `overlap`, `items`, `complete` (items with k labels or
        more), `labels_needed` (labels still missing to give every item k), and per annotator
        (`annotators`, by name): labels given, items left in their queue, last label time."""
        study = self.pool._rows(
            """WITH item AS (
                   SELECT si.id, count(l.id) AS labels FROM study_items si
                   LEFT JOIN labels l ON l.study_id = si.study_id AND l.item_id = si.id
                   WHERE si.study_id = ? GROUP BY si.id)
               SELECT s.overlap, count(item.id) AS items,
                      count(item.id) FILTER (WHERE item.labels >= s.overlap) AS complete,
                      coalesce(sum(greatest(s.overlap - item.labels, 0)), 0) AS labels_needed
               FROM quality_studies s LEFT JOIN item ON TRUE WHERE s.id = ? GROUP BY s.overlap""",
            [study_id, study_id])
        if not study:
            raise PoolError(f"There is no study {study_id}.")
        annotators = self.pool._rows(
            """WITH item AS (
                   SELECT si.id, count(l.id) AS labels FROM study_items si
                   LEFT JOIN labels l ON l.study_id = si.study_id AND l.item_id = si.id
                   WHERE si.study_id = ? GROUP BY si.id),
               who AS (
                   SELECT annotator, count(*) AS labels, max(coalesce(updated_at, created_at)) AS last_label
                   FROM labels WHERE study_id = ? GROUP BY annotator)
               SELECT who.annotator, who.labels, who.last_label,
                      (SELECT count(*) FROM item, quality_studies s
                       WHERE s.id = ? AND item.labels < s.overlap AND NOT EXISTS (
                           SELECT 1 FROM labels l WHERE l.study_id = ? AND l.item_id = item.id
                           AND l.annotator = who.annotator)) AS queue
               FROM who ORDER BY who.annotator""", [study_id, study_id, study_id, study_id])
        return {**{k: int(v) for k, v in study[0].items()}, "annotators": annotators}

    def study_annotators(self, study_id: int) -> list[dict]:
        return self.pool._rows(
            "SELECT annotator, count(*) AS labels, min(created_at) AS first_label, "
            "max(coalesce(updated_at, created_at)) AS last_label FROM labels WHERE study_id = ? "
            "GROUP BY annotator ORDER BY annotator", [study_id])

    # -- labels --------------------------------------------------------------------
    def save_label(self, study_id: int, item_id: int, annotator: str, *, valid_task: str | None,
                   input_ok: str | None, output_ok: str | None, note: str | None = None) -> int:
        """Create or update `annotator`'s label of one item (audited); returns the label id."""
        annotator = (annotator or "").strip()
        if not annotator:
            raise PoolError("A label needs the annotator's name.")
        answers = {"valid_task": valid_task, "input_ok": input_ok, "output_ok": output_ok}
        for question, answer in answers.items():
            if answer is not None and answer not in ANSWERS:
                raise PoolError(f"{question} must be one of {', '.join(ANSWERS)}, not {answer!r}.")
        note = (note or "").strip() or None
        attempt = 0
        while True:
            try:
                with _LABEL_WRITE:
                    return self._save_label(study_id, item_id, annotator, answers, note)
            except duckdb.TransactionException:
                # Another writer of the same rows committed first (DuckDB's optimistic
                # concurrency): read again and write again rather than lose the label.
                attempt += 1
                if attempt == 5:
                    raise
                time.sleep(0.05 * attempt)

    def _save_label(self, study_id: int, item_id: int, annotator: str, answers: dict,
                    note: str | None) -> int:
        valid_task, input_ok, output_ok = answers["valid_task"], answers["input_ok"], answers["output_ok"]
        with self.pool.transaction() as cur:
            found = cur.execute("SELECT 1 FROM study_items WHERE id = ? AND study_id = ?",
                                [item_id, study_id]).fetchone()
            if not found:
                raise PoolError(f"Study {study_id} has no item {item_id}.")
            # Saved: the item is no longer held for them (a save never needs nor checks a lease).
            cur.execute("DELETE FROM label_leases WHERE study_id = ? AND item_id = ? AND annotator = ?",
                        [study_id, item_id, annotator])
            old = cur.execute(
                "SELECT id, valid_task, input_ok, output_ok, note FROM labels "
                "WHERE study_id = ? AND item_id = ? AND annotator = ?",
                [study_id, item_id, annotator]).fetchone()
            after = {**answers, "note": note, "study_id": study_id, "annotator": annotator}
            if old is None:
                cur.execute(
                    "INSERT INTO labels (study_id, item_id, annotator, valid_task, input_ok, output_ok, "
                    "note, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, current_timestamp) RETURNING id",
                    [study_id, item_id, annotator, valid_task, input_ok, output_ok, note])
                label_id, before = cur.fetchone()[0], None
            else:
                label_id = old[0]
                before = {"valid_task": old[1], "input_ok": old[2], "output_ok": old[3], "note": old[4]}
                if before == {k: after[k] for k in before}:
                    return label_id  # nothing changed: no write, no audit entry
                cur.execute(
                    "UPDATE labels SET valid_task = ?, input_ok = ?, output_ok = ?, note = ?, "
                    "updated_at = current_timestamp WHERE id = ?",
                    [valid_task, input_ok, output_ok, note, label_id])
            self.pool._audit(cur, annotator, "label", "study_item", item_id, None, before, after)
        return label_id

    def study_labels(self, study_id: int) -> list[dict]:
        """Every label of a study with its item's position, candidate, round and
        classification flag (no texts), in position then annotator order."""
        return self.pool._rows(
            """SELECT si.id AS item_id, si.position, si.candidate_id, si.instance_id,
                      rd.number AS round, c.is_classification,
                      l.annotator, l.valid_task, l.input_ok, l.output_ok, l.note
               FROM labels l
               JOIN study_items si ON si.id = l.item_id AND si.study_id = l.study_id
               JOIN candidates c ON c.id = si.candidate_id
               LEFT JOIN rounds rd ON rd.id = c.round_id
               WHERE l.study_id = ? ORDER BY si.position, l.annotator""", [study_id])

    def study_texts(self, study_id: int, item_ids: Iterable[int]) -> dict[int, dict]:
        """Instruction, input and output of some items of a study, by item id."""
        item_ids = [int(i) for i in item_ids]
        if not item_ids:
            return {}
        rows = self.pool._rows(
            f"""SELECT si.id AS item_id, c.instruction, i.input, i.output
                FROM study_items si JOIN candidates c ON c.id = si.candidate_id
                LEFT JOIN instances i ON i.id = si.instance_id
                WHERE si.study_id = ? AND si.id IN ({_in_list(item_ids)})""", [study_id, *item_ids])
        return {r["item_id"]: r for r in rows}

    def study_export_rows(self, study_id: int) -> list[dict]:
        """Every item of a study with its texts and each of its labels: one row per
        (item, annotator), and one row with empty answers for an item nobody labeled."""
        return self.pool._rows(
            """SELECT si.position + 1 AS item, si.id AS item_id, si.candidate_id, si.instance_id,
                      c.run_id, rd.number AS round, c.is_classification,
                      c.instruction, i.input, i.output,
                      l.annotator, l.valid_task, l.input_ok, l.output_ok, l.note,
                      coalesce(l.updated_at, l.created_at) AS labeled_at
               FROM study_items si
               JOIN candidates c ON c.id = si.candidate_id
               LEFT JOIN instances i ON i.id = si.instance_id
               LEFT JOIN rounds rd ON rd.id = c.round_id
               LEFT JOIN labels l ON l.study_id = si.study_id AND l.item_id = si.id
               WHERE si.study_id = ? ORDER BY si.position, l.annotator""", [study_id])

    # -- hooks for the pool and export pages -----------------------------------------
    def labeled_candidate_ids(self) -> set[int]:
        """Candidates with at least one label, in any study."""
        return {r[0] for r in self.pool._q(
            "SELECT DISTINCT si.candidate_id FROM labels l "
            "JOIN study_items si ON si.id = l.item_id AND si.study_id = l.study_id").fetchall()}

    @classmethod
    def invalid_candidates_sql(cls, rule: str = "majority") -> str:
        """A subquery of the ids of candidates people judged not a valid task; the export
        filter uses it too, so 'labeled invalid' means one thing everywhere."""
        return ("SELECT si.candidate_id FROM labels l "
                "JOIN study_items si ON si.id = l.item_id AND si.study_id = l.study_id "
                "GROUP BY si.candidate_id HAVING "
                + " OR ".join(f"({labeled_no_sql(q, rule)})" for q in INSTRUCTION_QUESTIONS))

    @classmethod
    def invalid_instances_sql(cls, rule: str = "majority") -> str:
        """A subquery of labeled instances whose input or output people judged wrong (same
        rule, applied to each of the two questions)."""
        return ("SELECT si.instance_id FROM labels l "
                "JOIN study_items si ON si.id = l.item_id AND si.study_id = l.study_id "
                "WHERE si.instance_id IS NOT NULL GROUP BY si.instance_id "
                "HAVING " + " OR ".join(f"({labeled_no_sql(q, rule)})" for q in INSTANCE_QUESTIONS))

    def invalid_candidate_ids(self, rule: str = "majority") -> set[int]:
        """Candidates people judged not a valid task (see the module docstring for `rule`)."""
        return {r[0] for r in self.pool._q(self.invalid_candidates_sql(rule)).fetchall()}

    def invalid_instance_ids(self, rule: str = "majority") -> set[int]:
        return {r[0] for r in self.pool._q(self.invalid_instances_sql(rule)).fetchall()}

    def candidate_label_summary(self, candidate_ids: Iterable[int]) -> dict[int, dict]:
        """For each given candidate that has labels: {labels, valid_yes, valid_no,
        all_yes (labels with three yes), invalid (majority rule)}. For a page of rows."""
        ids = [int(i) for i in candidate_ids]
        if not ids:
            return {}
        rows = self.pool._rows(
            f"""SELECT si.candidate_id, count(*) AS labels,
                       count(*) FILTER (WHERE l.valid_task = {sql_literal(YES)}) AS valid_yes,
                       count(*) FILTER (WHERE l.valid_task = {sql_literal(NO)}) AS valid_no,
                       count(*) FILTER (WHERE {' AND '.join(f"l.{q} = {sql_literal(YES)}" for q in QUESTIONS)})
                           AS all_yes,
                       {labeled_no_sql('valid_task')} AS invalid
                FROM labels l JOIN study_items si ON si.id = l.item_id AND si.study_id = l.study_id
                WHERE si.candidate_id IN ({_in_list(ids)}) GROUP BY si.candidate_id""", ids)
        return {r.pop("candidate_id"): r for r in rows}
