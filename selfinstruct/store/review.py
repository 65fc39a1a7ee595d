"""Rejected candidates: paged browsing and the evidence of each decision (issue 6).

Two kinds of reject can be reviewed:

* ``instruction``: a row of ``candidates`` with ``status = 'rejected'`` (or one a person
  rescued: ``status = 'accepted'``, ``review = 'rescued'``, ``decided_by = 'human'``).
  ``reason`` keeps what the filter said even after a rescue, so the Rejects page can
  still show why it was dropped; ``status``, ``decided_by`` and ``review`` say where it
  stands now.
* ``instance``: a row of ``instances`` with ``status = 'rejected'`` (or one a person
  kept: ``status = 'kept'`` with its ``reason`` still set, which only a rescue produces).

Review states of an instruction reject (the ``review`` filter):
``pending`` (rejected, not reviewed), ``confirmed`` (rejected, a person agreed),
``rescued`` (a person put it in the pool), ``all`` (any of these).
Instances have ``pending``, ``rescued`` and ``all``.

Rescue, confirm and undo are `selfinstruct/actions.py`; this module only reads.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..model import REVIEW_STATES, SQL, rescued_sql
from .core import Queries, _loads

KINDS = ("instruction", "instance")

_CANDIDATE_REVIEW_SQL = {
    "pending": f"c.status = {SQL.REJECTED} AND c.review IS NULL",
    "confirmed": f"c.status = {SQL.REJECTED} AND c.review = {SQL.CONFIRMED}",
    "rescued": rescued_sql("c"),
    "all": f"(c.status = {SQL.REJECTED} OR {rescued_sql('c')})",
}
_INSTANCE_REVIEW_SQL = {
    "pending": f"i.status = {SQL.REJECTED}",
    "confirmed": "FALSE",   # instances have no confirmed state
    "rescued": f"i.status = {SQL.KEPT} AND i.reason IS NOT NULL",
    "all": f"(i.status = {SQL.REJECTED} OR (i.status = {SQL.KEPT} AND i.reason IS NOT NULL))",
}


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return kind


def _review(review: str | None, kind: str) -> str:
    review = review or "all"
    if review not in REVIEW_STATES:
        raise ValueError(f"review must be one of {REVIEW_STATES}, not {review!r}")
    return review


class ReviewQueries(Queries):
    # -- browsing ----------------------------------------------------------------
    def _reject_where(self, kind: str, *, reasons: Sequence[str] | None, run_id: int | None,
                      round_number: int | None, search: str | None,
                      review: str | None) -> tuple[str, list[Any]]:
        kind = _kind(kind)
        review = _review(review, kind)
        if kind == "instruction":
            clauses = [_CANDIDATE_REVIEW_SQL[review]]
            text_sql = "contains(lower(c.instruction), ?)"
            n_text = 1
        else:
            clauses = [_INSTANCE_REVIEW_SQL[review]]
            text_sql = ("(contains(lower(c.instruction), ?) OR contains(lower(i.input), ?) "
                        "OR contains(lower(i.output), ?))")
            n_text = 3
        reason_col = "c.reason" if kind == "instruction" else "i.reason"
        params: list[Any] = []
        if reasons:
            clauses.append(f"{reason_col} IN ({', '.join('?' for _ in reasons)})")
            params.extend(reasons)
        if run_id is not None:
            clauses.append("c.run_id = ?")
            params.append(int(run_id))
        if round_number is not None:
            clauses.append("r.number = ?")
            params.append(int(round_number))
        term = (search or "").strip().lower()
        if term:
            clauses.append(text_sql)
            params.extend([term] * n_text)
        return " AND ".join(clauses), params

    @staticmethod
    def _reject_from(kind: str) -> str:
        if kind == "instruction":
            return "candidates c LEFT JOIN rounds r ON r.id = c.round_id"
        return ("instances i JOIN candidates c ON c.id = i.candidate_id "
                "LEFT JOIN rounds r ON r.id = c.round_id")

    def reject_reasons(self, kind: str = "instruction") -> list[str]:
        """Every reason that any reject of this kind (reviewed or not) carries, sorted."""
        where, params = self._reject_where(kind, reasons=None, run_id=None, round_number=None,
                                           search=None, review="all")
        col = "c.reason" if kind == "instruction" else "i.reason"
        return [r[0] for r in self.pool._q(
            f"SELECT DISTINCT {col} FROM {self._reject_from(kind)} WHERE {where} "
            f"AND {col} IS NOT NULL ORDER BY 1", params).fetchall()]

    def reject_counts(self, kind: str = "instruction", *, run_id: int | None = None,
                      round_number: int | None = None, search: str | None = None,
                      review: str | None = "all") -> dict[str, int]:
        """{reason: rows} for the rejects matching every filter but the reason one."""
        where, params = self._reject_where(kind, reasons=None, run_id=run_id,
                                           round_number=round_number, search=search, review=review)
        col = "c.reason" if kind == "instruction" else "i.reason"
        rows = self.pool._q(
            f"SELECT coalesce({col}, '') AS reason, count(*) FROM {self._reject_from(kind)} "
            f"WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1", params).fetchall()
        return {reason: int(n) for reason, n in rows}

    def reject_total(self, kind: str = "instruction", *, reasons: Sequence[str] | None = None,
                     run_id: int | None = None, round_number: int | None = None,
                     search: str | None = None, review: str | None = "all") -> int:
        where, params = self._reject_where(kind, reasons=reasons, run_id=run_id,
                                           round_number=round_number, search=search, review=review)
        return int(self.pool._scalar(f"SELECT count(*) FROM {self._reject_from(kind)} WHERE {where}", params))

    def reject_rows(self, kind: str = "instruction", *, reasons: Sequence[str] | None = None,
                    run_id: int | None = None, round_number: int | None = None,
                    search: str | None = None, review: str | None = "all",
                    limit: int = 50, offset: int = 0):
        """One page of rejects (newest run first, then decision order) as a DataFrame.

        instruction: id, run_id, round, reason, instruction, max_rouge, status, review,
        decided_by, has_instances. instance: id, candidate_id, run_id, round, reason,
        instruction, input, output, status."""
        where, params = self._reject_where(kind, reasons=reasons, run_id=run_id,
                                           round_number=round_number, search=search, review=review)
        if kind == "instruction":
            # The page first, then the per-row instance check on its rows only.
            return self.pool._frame(
                "WITH page AS (SELECT c.id, c.run_id, r.number AS round, c.reason, c.instruction, "
                "c.max_rouge, c.status, c.review, c.decided_by, c.position "
                f"FROM {self._reject_from(kind)} WHERE {where} "
                "ORDER BY c.run_id DESC, r.number, c.position, c.id LIMIT ? OFFSET ?) "
                "SELECT id, run_id, round, reason, instruction, max_rouge, status, review, decided_by, "
                "EXISTS (SELECT 1 FROM instances x WHERE x.candidate_id = page.id) AS has_instances "
                "FROM page ORDER BY run_id DESC, round, position, id",
                [*params, int(limit), int(offset)])
        return self.pool._frame(
            "SELECT i.id, i.candidate_id, c.run_id, r.number AS round, i.reason, c.instruction, "
            f"i.input, i.output, i.status FROM {self._reject_from(kind)} WHERE {where} "
            "ORDER BY c.run_id DESC, r.number, i.candidate_id, i.position, i.id LIMIT ? OFFSET ?",
            [*params, int(limit), int(offset)])

    def reject_ids(self, kind: str = "instruction", *, reasons: Sequence[str] | None = None,
                   run_id: int | None = None, round_number: int | None = None,
                   search: str | None = None, review: str | None = "all") -> list[int]:
        """Every id matching the filters (the rows of every page of `reject_rows`, in the same
        order): what a bulk action on "all that match" acts on."""
        where, params = self._reject_where(kind, reasons=reasons, run_id=run_id,
                                           round_number=round_number, search=search, review=review)
        id_col, order = (("c.id", "c.run_id DESC, r.number, c.position, c.id") if kind == "instruction" else
                         ("i.id", "c.run_id DESC, r.number, i.candidate_id, i.position, i.id"))
        return [int(r[0]) for r in self.pool._q(
            f"SELECT {id_col} FROM {self._reject_from(kind)} WHERE {where} ORDER BY {order}", params).fetchall()]

    def reject_rounds(self, run_id: int | None = None) -> list[int]:
        """Round numbers that hold rejects (of either kind), in the given run or any."""
        return [r[0] for r in self.pool._q(
            "SELECT DISTINCT r.number FROM rounds r JOIN candidates c ON c.round_id = r.id "
            f"WHERE (? IS NULL OR r.run_id = ?) AND (c.status = {SQL.REJECTED} OR c.review = {SQL.RESCUED} "
            "OR EXISTS (SELECT 1 FROM instances i WHERE i.candidate_id = c.id AND i.reason IS NOT NULL)) "
            "ORDER BY 1", [run_id, run_id]).fetchall()]

    def reject_runs(self) -> list[dict]:
        """Runs that have candidates: id, name, created_at, rejected (still rejected)."""
        return self.pool._rows(
            f"SELECT r.id, r.name, r.created_at, count(*) FILTER (WHERE c.status = {SQL.REJECTED}) AS rejected "
            "FROM runs r JOIN candidates c ON c.run_id = r.id GROUP BY r.id, r.name, r.created_at "
            "ORDER BY r.id DESC")

    # -- one item ----------------------------------------------------------------
    def candidate_detail(self, candidate_id: int) -> dict | None:
        """A candidate with its round number, details decoded, its request's raw
        response and finish reason, and how many instances it has."""
        rows = self.pool._rows(
            "SELECT c.*, r.number AS round, q.response AS raw_response, q.finish_reason, "
            "(SELECT count(*) FROM instances i WHERE i.candidate_id = c.id) AS instances "
            "FROM candidates c LEFT JOIN rounds r ON r.id = c.round_id "
            "LEFT JOIN requests q ON q.id = c.request_id WHERE c.id = ?", [candidate_id])
        if not rows:
            return None
        rows[0]["details"] = _loads(rows[0]["details"]) or {}
        return rows[0]

    def instance_detail(self, instance_id: int) -> dict | None:
        """An instance with its instruction, run, round and decoded details."""
        rows = self.pool._rows(
            "SELECT i.*, c.instruction, c.run_id, c.is_classification, r.number AS round "
            "FROM instances i LEFT JOIN candidates c ON c.id = i.candidate_id "
            "LEFT JOIN rounds r ON r.id = c.round_id WHERE i.id = ?", [instance_id])
        if not rows:
            return None
        rows[0]["details"] = _loads(rows[0]["details"]) or {}
        return rows[0]

    def review_history(self, target_kind: str, target_id: int, limit: int = 20) -> list[dict]:
        """Audit rows about one candidate or instance, newest first."""
        rows = self.pool._rows(
            "SELECT * FROM audit_log WHERE target_kind = ? AND target_id = ? ORDER BY id DESC LIMIT ?",
            [target_kind, target_id, limit])
        for row in rows:
            row["before"], row["after"] = _loads(row["before"]), _loads(row["after"])
        return rows

    # -- what-if -----------------------------------------------------------------
    def rouge_whatif(self, threshold: float, *, run_id: int | None = None) -> dict:
        """From the stored scores: ROUGE rejects (still rejected) and how many score at or
        below `threshold` (would have passed); filter-accepted candidates and how many score
        above it (would have been rejected)."""
        row = self.pool._q(
            f"SELECT count(*) FILTER (WHERE status = {SQL.REJECTED} AND reason = 'rouge'), "
            f"count(*) FILTER (WHERE status = {SQL.REJECTED} AND reason = 'rouge' AND max_rouge <= ?), "
            f"count(*) FILTER (WHERE status = {SQL.ACCEPTED} AND decided_by = {SQL.BY_FILTER}), "
            f"count(*) FILTER (WHERE status = {SQL.ACCEPTED} AND decided_by = {SQL.BY_FILTER} AND max_rouge > ?) "
            "FROM candidates WHERE max_rouge IS NOT NULL AND (? IS NULL OR run_id = ?)",
            [threshold, threshold, run_id, run_id]).fetchone()
        return {"rouge_rejects": int(row[0]), "would_pass": int(row[1]),
                "accepted": int(row[2]), "would_fail": int(row[3])}

    def cosine_whatif(self, threshold: float, *, run_id: int | None = None) -> dict:
        """The semantic gate's twin of `rouge_whatif`, from the cosines stored in the decisions'
        details: semantic_dup rejects (still rejected) and how many are at or below `threshold`;
        filter-accepted candidates with a stored cosine and how many are above it; the
        thresholds the decisions used."""
        cos = "TRY_CAST(details->>'cosine' AS DOUBLE)"
        row = self.pool._q(
            f"SELECT count(*) FILTER (WHERE status = {SQL.REJECTED} AND reason = 'semantic_dup'), "
            f"count(*) FILTER (WHERE status = {SQL.REJECTED} AND reason = 'semantic_dup' AND {cos} <= ?), "
            f"count(*) FILTER (WHERE status = {SQL.ACCEPTED} AND decided_by = {SQL.BY_FILTER}), "
            f"count(*) FILTER (WHERE status = {SQL.ACCEPTED} AND decided_by = {SQL.BY_FILTER} AND {cos} > ?), "
            "list(DISTINCT TRY_CAST(details->>'cosine_threshold' AS DOUBLE)) "
            f"FROM candidates WHERE {cos} IS NOT NULL AND (? IS NULL OR run_id = ?)",
            [threshold, threshold, run_id, run_id]).fetchall()[0]
        return {"semantic_rejects": int(row[0]), "would_pass": int(row[1]), "accepted": int(row[2]),
                "would_fail": int(row[3]), "thresholds": sorted(x for x in (row[4] or []) if x is not None)}

    def rouge_histogram(self, *, run_id: int | None = None, bins: int = 20):
        """Counts of max ROUGE-L per bin of width 1/bins and outcome (accepted, rescued,
        rejected), aggregated in SQL: columns bin_start, bin_end, outcome, n."""
        bins = max(1, int(bins))
        return self.pool._frame(
            "SELECT least(floor(max_rouge * ?), ? - 1) / ? AS bin_start, "
            "(least(floor(max_rouge * ?), ? - 1) + 1) / ? AS bin_end, "
            f"CASE WHEN {rescued_sql('candidates')} THEN {SQL.RESCUED} "
            f"WHEN status = {SQL.ACCEPTED} THEN {SQL.ACCEPTED} ELSE {SQL.REJECTED} END AS outcome, count(*) AS n "
            "FROM candidates WHERE max_rouge IS NOT NULL AND (? IS NULL OR run_id = ?) "
            "GROUP BY ALL ORDER BY bin_start, outcome",
            [bins, bins, float(bins), bins, bins, float(bins), run_id, run_id])

    def rouge_thresholds(self, *, run_id: int | None = None) -> list[float]:
        """The ROUGE-L thresholds the stored decisions were made with."""
        return [float(r[0]) for r in self.pool._q(
            "SELECT DISTINCT TRY_CAST(json_extract(details, '$.threshold') AS DOUBLE) AS t "
            "FROM candidates WHERE max_rouge IS NOT NULL AND (? IS NULL OR run_id = ?) "
            "AND t IS NOT NULL ORDER BY 1", [run_id, run_id]).fetchall()]

    def keyword_rejects(self, *, run_id: int | None = None):
        """Which keywords reject the most candidates: keyword, candidates (rejected for
        the keyword rule and mentioning it), only_this (that keyword is the only one they
        mention, so dropping it from the list would let them on to the ROUGE check),
        rescued (of those, how many a person rescued)."""
        return self.pool._frame(
            f"WITH k AS (SELECT c.id, {rescued_sql('c')} AS rescued, "
            "list_distinct(coalesce(json_extract_string(c.details, '$.matches[*].keyword'), "
            "[json_extract_string(c.details, '$.keyword')])) AS kws "
            "FROM candidates c WHERE c.reason = 'keyword' AND (? IS NULL OR c.run_id = ?) "
            f"AND (c.status = {SQL.REJECTED} OR c.review = {SQL.RESCUED})), "
            "u AS (SELECT id, rescued, len(kws) AS n_kws, unnest(kws) AS keyword FROM k) "
            "SELECT keyword, count(DISTINCT id) AS candidates, "
            "count(DISTINCT id) FILTER (WHERE n_kws = 1) AS only_this, "
            "count(DISTINCT id) FILTER (WHERE rescued) AS rescued "
            "FROM u WHERE keyword IS NOT NULL GROUP BY keyword ORDER BY candidates DESC, keyword",
            [run_id, run_id])
