"""Topics over the pool's embeddings (issue 25): data only, reached as `pool.topics`.

* A **topic set** is one clustering, stored per (embedder, settings, pool state): its topics
  (size, names, centroid), every member (seed task or candidate, accepted or rejected) with its
  topic and map position. `pool_state()` is the fingerprint that says when a set is stale.
* A **mark** ("avoid") is put on a topic by a person; it holds the topic's centroid, so a later
  set carries it to its nearest topic (`selfinstruct/topics.py` decides; this module stores).
* A steered run stores the set each round drew its examples by (`topic_rounds`).

What the numbers mean (acceptance, rescue, labeled invalid, judge "no") is decided in
`model.py` and the other query modules; the per-topic table reuses their SQL fragments.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..model import CANDIDATE, INSTRUCTION_QUESTIONS, SEED_TASK, SQL, accepted_sql, keep_rank_sql, labeled_no_sql, \
    rescued_sql, sql_literal
from .core import Queries, _dumps, _loads
from .judge import latest_verdicts_sql

_lock = threading.Lock()
_counter = [0]


@contextmanager
def _registered(cur, table: pa.Table) -> Iterator[str]:
    cur.execute("SELECT 1").fetchall()
    with _lock:
        _counter[0] += 1
        name = f"_topics_{_counter[0]}"
    cur.register(name, table)
    try:
        yield name
    finally:
        cur.unregister(name)


def _vector_array(matrix: np.ndarray) -> pa.ListArray:
    matrix = np.asarray(matrix, dtype=np.float32)
    n, dim = matrix.shape if matrix.ndim == 2 else (0, 0)
    offsets = pa.array(np.arange(0, n * dim + 1, max(dim, 1), dtype=np.int32)[:n + 1])
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), pa.float32()))


# Which state an item is in, for the map's colours: one SQL expression over members m joined to
# candidates c (NULL for seed tasks).
_STATE_SQL = (f"CASE WHEN m.kind = {sql_literal(SEED_TASK)} THEN 'seed' "
              f"WHEN {rescued_sql('c')} THEN 'rescued' "
              f"WHEN {accepted_sql('c')} THEN 'accepted' ELSE 'rejected' END")
_LABELED_SQL = "SELECT DISTINCT si.candidate_id FROM labels l JOIN study_items si ON si.id = l.item_id"
_INVALID_SQL = ("SELECT si.candidate_id FROM labels l JOIN study_items si ON si.id = l.item_id "
                "AND si.study_id = l.study_id GROUP BY si.candidate_id HAVING "
                + " OR ".join(f"({labeled_no_sql(q)})" for q in INSTRUCTION_QUESTIONS))


def _judge_sql() -> str:
    """candidate_id, judged (a readable verdict), judge_no ("no" to valid task?), from each
    candidate's latest verdicts of every judge run (store/judge.py's rule)."""
    return (f"SELECT lv.candidate_id, bool_or(lv.valid_task = {SQL.NO}) AS judge_no "
            f"FROM ({latest_verdicts_sql(one_run=False)}) lv GROUP BY lv.candidate_id")


def over_cap_sql(kind: str) -> str:
    """A SELECT of the ids of one kind (seed task or candidate) beyond the first N of their topic
    by the duplicate groups' keep rule (model.keep_rank_sql), among each topic's seed tasks and
    accepted candidates now. Parameters: the set's id, then N (the export's --max-per-topic)."""
    return (f"SELECT item_id FROM (SELECT m.kind, m.item_id, row_number() OVER (PARTITION BY m.topic ORDER BY "
            f"{keep_rank_sql('m.kind', 'm.item_id', 'c', 'j.valid')}) AS rank "
            f"FROM topic_members m LEFT JOIN candidates c ON m.kind = {SQL.CANDIDATE} AND c.id = m.item_id "
            f"LEFT JOIN (SELECT candidate_id, arg_max(valid_task, verdict_id) AS valid "
            f"FROM ({latest_verdicts_sql(one_run=False)}) GROUP BY candidate_id) j ON j.candidate_id = c.id "
            f"WHERE m.set_id = ? AND (m.kind = {sql_literal(SEED_TASK)} OR {accepted_sql('c')})) "
            f"WHERE rank > ? AND kind = {sql_literal(kind)}")


class TopicQueries(Queries):
    """Store and read topic sets, marks and steered rounds (see the module docstring)."""

    # -- the pool as topics see it -------------------------------------------------
    def pool_state(self) -> str:
        """A fingerprint of what topics depend on: seed tasks and candidates (counts, newest id,
        accepted count) and the last audited change (an edit or a removal changes the topics)."""
        row = self.pool._q(
            f"SELECT (SELECT count(*) FROM seed_tasks), (SELECT coalesce(max(id), 0) FROM seed_tasks), "
            f"(SELECT count(*) FROM candidates), (SELECT coalesce(max(id), 0) FROM candidates), "
            f"(SELECT count(*) FROM candidates c WHERE {accepted_sql('c')}), "
            f"(SELECT coalesce(max(id), 0) FROM audit_log WHERE target_kind IN "
            f"({sql_literal(CANDIDATE)}, {sql_literal(SEED_TASK)}))").fetchall()[0]
        return "s{}-{}:c{}-{}-{}:a{}".format(*row)

    def view_state(self) -> str:
        """What the Topics page's table and map depend on beyond the set: the pool, labels, judge
        verdicts and marks (a cache key for the page)."""
        row = self.pool._q(
            "SELECT (SELECT coalesce(max(id), 0) FROM labels), (SELECT count(*) FROM labels), "
            "(SELECT coalesce(max(id), 0) FROM judge_verdicts WHERE response IS NOT NULL), "
            "(SELECT count(*) FROM topic_marks WHERE active)").fetchall()[0]
        return self.pool_state() + ":l{}-{}:j{}:m{}".format(*row)

    def pool_size(self) -> int:
        """Seed tasks and accepted candidates: the rows topics are fitted on."""
        return int(self.pool._scalar(
            f"SELECT (SELECT count(*) FROM seed_tasks) + (SELECT count(*) FROM candidates c WHERE {accepted_sql('c')})"))

    def items(self) -> dict[str, list]:
        """Every seed task (by id) then every candidate that holds an instruction (by id, accepted or
        rejected, unparseable raw text left out) as columns: kind, id, text, fitted (a seed or
        accepted: the rows topics are fitted on)."""
        rows = self.pool._q(
            f"SELECT {sql_literal(SEED_TASK)}, id, instruction, TRUE FROM seed_tasks "
            f"UNION ALL SELECT {sql_literal(CANDIDATE)}, c.id, c.instruction, {accepted_sql('c')} FROM candidates c "
            f"WHERE c.reason IS DISTINCT FROM 'unparseable' ORDER BY 1 DESC, 2").fetchall()
        return {"kind": [r[0] for r in rows], "id": [int(r[1]) for r in rows], "text": [r[2] for r in rows],
                "fitted": [bool(r[3]) for r in rows]}

    # -- sets ------------------------------------------------------------------------
    def save_set(self, *, embedder: str, settings: dict, settings_key: str, pool_state: str, k: int,
                 fitted: int, projection: dict | None, silhouettes: dict | None, topics: Sequence[dict],
                 centroids: np.ndarray, kinds: Sequence[str], ids: Sequence[int], labels: np.ndarray,
                 fitted_mask: np.ndarray, xy: np.ndarray, run_id: int | None = None,
                 round_number: int | None = None, seconds: float | None = None) -> int:
        """Store one set with its topics (dicts: topic, size, name, pairs, words) and members."""
        xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2) if len(ids) else np.zeros((0, 2), np.float32)
        with self.pool.transaction() as cur:
            set_id = cur.execute(
                "INSERT INTO topic_sets (embedder, settings, settings_key, pool_state, fitted, items, k, projection, "
                "silhouettes, run_id, round_number, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [embedder, _dumps(settings), settings_key, pool_state, int(fitted), len(ids), int(k),
                 _dumps(projection), _dumps(silhouettes), run_id, round_number, seconds]).fetchall()[0][0]
            table = pa.table({
                "topic": pa.array([int(t["topic"]) for t in topics], pa.int32()),
                "size": pa.array([int(t["size"]) for t in topics], pa.int32()),
                "name": pa.array([t["name"] for t in topics]),
                "pairs": pa.array([json.dumps(t.get("pairs") or []) for t in topics]),
                "words": pa.array([json.dumps(t.get("words") or []) for t in topics]),
                "centroid": _vector_array(centroids)})
            with _registered(cur, table) as view:
                cur.execute(f"INSERT INTO topics (set_id, topic, size, name, pairs, words, centroid) "
                            f"SELECT ?, topic, size, name, pairs, words, centroid FROM {view}", [set_id])
            members = pa.table({
                "kind": pa.array(list(kinds)), "item_id": pa.array(np.asarray(ids, dtype=np.int64)),
                "topic": pa.array(np.asarray(labels, dtype=np.int32)),
                "fitted": pa.array(np.asarray(fitted_mask, dtype=bool)),
                "x": pa.array(xy[:, 0]), "y": pa.array(xy[:, 1])})
            with _registered(cur, members) as view:
                cur.execute(f"INSERT INTO topic_members SELECT ?, kind, item_id, topic, fitted, x, y FROM {view}",
                            [set_id])
        return int(set_id)

    def latest_set(self, embedder: str, settings_key: str | None = None, *, for_runs: bool = False) -> dict | None:
        """The newest set of `embedder` (with these settings, when given): the page's and
        export's (`for_runs` False) or a steered run's snapshots (True)."""
        sql = "SELECT * FROM topic_sets WHERE embedder = ? AND " + (
            "run_id IS NOT NULL" if for_runs else "run_id IS NULL")
        params: list[Any] = [embedder]
        if settings_key is not None:
            sql += " AND settings_key = ?"
            params.append(settings_key)
        rows = self.pool._rows(sql + " ORDER BY id DESC LIMIT 1", params)
        return self._decoded(rows[0]) if rows else None

    def get_set(self, set_id: int) -> dict | None:
        rows = self.pool._rows("SELECT * FROM topic_sets WHERE id = ?", [int(set_id)])
        return self._decoded(rows[0]) if rows else None

    def sets(self) -> list[dict]:
        return [self._decoded(r) for r in self.pool._rows(
            "SELECT id, embedder, settings_key, pool_state, fitted, items, k, run_id, round_number, seconds, created_at "
            "FROM topic_sets ORDER BY id")]

    @staticmethod
    def _decoded(row: dict) -> dict:
        for key in ("settings", "projection", "silhouettes"):
            if key in row:
                row[key] = _loads(row[key])
        return row

    def topics(self, set_id: int) -> list[dict]:
        """The set's topics by number, with names (ours and the model's) and sizes."""
        rows = self.pool._rows(
            "SELECT topic, size, name, pairs, words, model_name, model_prompt_version, model FROM topics "
            "WHERE set_id = ? ORDER BY topic", [int(set_id)])
        for row in rows:
            row["pairs"], row["words"] = _loads(row["pairs"]) or [], _loads(row["words"]) or []
        return rows

    def centroids(self, set_id: int) -> np.ndarray:
        table = self.pool.cursor().sql("SELECT centroid FROM topics WHERE set_id = ? ORDER BY topic",
                                       params=[int(set_id)]).to_arrow_table()
        if not table.num_rows:
            return np.zeros((0, 0), dtype=np.float32)
        column = table.column("centroid").combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        return flat.reshape(table.num_rows, -1)

    def members(self, set_id: int) -> dict[str, np.ndarray]:
        """Columns kind, item_id, topic, fitted, x, y of every member."""
        table = self.pool.cursor().sql(
            "SELECT kind, item_id, topic, fitted, x, y FROM topic_members WHERE set_id = ? ORDER BY kind DESC, item_id",
            params=[int(set_id)]).to_arrow_table()
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}

    def set_model_names(self, set_id: int, names: dict[int, str], *, prompt_version: str, model: str) -> None:
        with self.pool.transaction() as cur:
            cur.executemany("UPDATE topics SET model_name = ?, model_prompt_version = ?, model = ? "
                            "WHERE set_id = ? AND topic = ?",
                            [[name, prompt_version, model, int(set_id), int(t)] for t, name in names.items()])

    # -- what the page shows -----------------------------------------------------------
    def topic_table(self, set_id: int) -> list[dict]:
        """Per topic: size (seeds and accepted), seeds, candidates (accepted or rejected),
        accepted, rescued, rejected by the filters at first (rejected + rescued), labeled,
        labeled_invalid, judged, judge_no, rounds (round numbers its accepted items came from)."""
        return self.pool._rows(
            f"""WITH m AS (SELECT * FROM topic_members WHERE set_id = ?),
                lab AS ({_LABELED_SQL}), inv AS ({_INVALID_SQL}), jv AS ({_judge_sql()})
               SELECT t.topic, t.name, t.model_name, t.size,
                      count(*) FILTER (WHERE m.kind = {sql_literal(SEED_TASK)}) AS seeds,
                      count(c.id) AS candidates,
                      count(c.id) FILTER (WHERE {accepted_sql('c')}) AS accepted,
                      count(c.id) FILTER (WHERE {rescued_sql('c')}) AS rescued,
                      count(c.id) FILTER (WHERE c.status = {SQL.REJECTED} OR {rescued_sql('c')}) AS filtered_out,
                      count(c.id) FILTER (WHERE {accepted_sql('c')} AND c.id IN (SELECT * FROM lab)) AS labeled,
                      count(c.id) FILTER (WHERE {accepted_sql('c')} AND c.id IN (SELECT * FROM inv)) AS labeled_invalid,
                      count(jv.candidate_id) FILTER (WHERE {accepted_sql('c')}) AS judged,
                      count(jv.candidate_id) FILTER (WHERE {accepted_sql('c')} AND jv.judge_no) AS judge_no,
                      list(DISTINCT rd.number ORDER BY rd.number) FILTER (WHERE {accepted_sql('c')}
                           AND rd.number IS NOT NULL) AS rounds
               FROM topics t
               LEFT JOIN m ON m.topic = t.topic
               LEFT JOIN candidates c ON m.kind = {SQL.CANDIDATE} AND c.id = m.item_id
               LEFT JOIN rounds rd ON rd.id = c.round_id
               LEFT JOIN jv ON jv.candidate_id = c.id
               WHERE t.set_id = ?
               GROUP BY t.topic, t.name, t.model_name, t.size ORDER BY t.topic""", [int(set_id), int(set_id)])

    def map_points(self, set_id: int, *, limit: int = 5_000, seed: int = 0) -> list[dict]:
        """At most `limit` members for the map, a seeded sample (the same every time for a set),
        with their state, topic, seed flag, labeled-invalid and judge-"no" flags and a short text."""
        return self.pool._rows(
            f"""WITH m AS (SELECT * FROM topic_members WHERE set_id = ?
                           ORDER BY hash(item_id * 2 + (kind = {sql_literal(SEED_TASK)})::INT + ?) LIMIT ?),
                inv AS ({_INVALID_SQL}), jv AS ({_judge_sql()})
               SELECT m.kind, m.item_id, m.topic, m.x, m.y, {_STATE_SQL} AS state,
                      coalesce(c.id IN (SELECT * FROM inv), false) AS labeled_invalid,
                      coalesce(jv.judge_no, false) AS judge_no,
                      left(coalesce(c.instruction, s.instruction), 120) AS text
               FROM m LEFT JOIN candidates c ON m.kind = {SQL.CANDIDATE} AND c.id = m.item_id
               LEFT JOIN seed_tasks s ON m.kind = {sql_literal(SEED_TASK)} AND s.id = m.item_id
               LEFT JOIN jv ON jv.candidate_id = c.id""", [int(set_id), int(seed), int(limit)])

    def topic_items(self, set_id: int, topic: int | None = None, *, search: str = "", state: str | None = None,
                    limit: int = 50, offset: int = 0) -> tuple[int, list[dict]]:
        """(count, rows) of a topic's members (every topic when `topic` is None) matching `search`
        (case-insensitive, in the instruction) and `state` (seed, accepted, rescued, rejected)."""
        where, params = ["m.set_id = ?"], [int(set_id)]
        if topic is not None:
            where.append("m.topic = ?")
            params.append(int(topic))
        if search:
            where.append("coalesce(c.instruction, s.instruction) ILIKE ?")
            params.append("%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if state:
            where.append(f"{_STATE_SQL} = ?")
            params.append(state)
        base = (f"FROM topic_members m LEFT JOIN candidates c ON m.kind = {SQL.CANDIDATE} AND c.id = m.item_id "
                f"LEFT JOIN seed_tasks s ON m.kind = {sql_literal(SEED_TASK)} AND s.id = m.item_id "
                f"LEFT JOIN rounds rd ON rd.id = c.round_id WHERE " + " AND ".join(where))
        count = int(self.pool._scalar(f"SELECT count(*) {base}", params))
        rows = self.pool._rows(
            f"SELECT m.kind, m.item_id, m.topic, {_STATE_SQL} AS state, rd.number AS round, "
            f"coalesce(c.instruction, s.instruction) AS instruction, c.reason, c.review {base} "
            f"ORDER BY m.kind DESC, m.item_id LIMIT ? OFFSET ?", params + [int(limit), int(offset)])
        return count, rows

    def topic_member_ids(self, set_id: int, topic: int, *, kind: str, accepted_only: bool = False) -> list[int]:
        """Ids of a topic's members of one kind (candidates: accepted ones only, when asked)."""
        if kind == CANDIDATE:
            cond = f" AND c.id IS NOT NULL AND {accepted_sql('c')}" if accepted_only else ""
            sql = (f"SELECT m.item_id FROM topic_members m LEFT JOIN candidates c ON c.id = m.item_id "
                   f"WHERE m.set_id = ? AND m.topic = ? AND m.kind = {SQL.CANDIDATE}{cond} ORDER BY m.item_id")
        else:
            sql = (f"SELECT m.item_id FROM topic_members m JOIN seed_tasks s ON s.id = m.item_id "
                   f"WHERE m.set_id = ? AND m.topic = ? AND m.kind = {sql_literal(SEED_TASK)} ORDER BY m.item_id")
        return [int(r[0]) for r in self.pool._q(sql, [int(set_id), int(topic)]).fetchall()]

    def topic_of_items(self, set_id: int, kind: str, ids: Sequence[int]) -> dict[int, int]:
        """item id -> topic for these items of one kind (items not in the set are left out)."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        table = pa.table({"item_id": pa.array(ids, pa.int64())})
        cur = self.pool.cursor()
        with _registered(cur, table) as view:
            rows = cur.execute(f"SELECT m.item_id, m.topic FROM topic_members m JOIN {view} q ON q.item_id = m.item_id "
                               f"WHERE m.set_id = ? AND m.kind = ?", [int(set_id), kind]).fetchall()
        return {int(i): int(t) for i, t in rows}

    def card_cache(self, set_id: int) -> dict | None:
        """The dataset card's rendering of a set (None: not rendered yet)."""
        rows = self.pool._q("SELECT card FROM topic_sets WHERE id = ?", [int(set_id)]).fetchall()
        return _loads(rows[0][0]) if rows else None

    def save_card_cache(self, set_id: int, card: dict) -> None:
        self.pool._q("UPDATE topic_sets SET card = ? WHERE id = ?", [_dumps(card), int(set_id)])

    # -- marks ("avoid") -----------------------------------------------------------------
    def add_mark(self, *, embedder: str, mark: str, name: str, centroid: np.ndarray, set_id: int,
                 topic: int) -> int:
        table = pa.table({"centroid": _vector_array(np.asarray(centroid, dtype=np.float32).reshape(1, -1))})
        cur = self.pool.cursor()
        with _registered(cur, table) as view:
            return int(cur.execute(
                f"INSERT INTO topic_marks (embedder, mark, name, centroid, set_id, topic) "
                f"SELECT ?, ?, ?, centroid, ?, ? FROM {view} RETURNING id",
                [embedder, mark, name, int(set_id), int(topic)]).fetchall()[0][0])

    def marks(self, embedder: str, *, active: bool | None = True) -> list[dict]:
        sql = "SELECT id, mark, name, set_id, topic, active, created_at FROM topic_marks WHERE embedder = ?"
        if active is not None:
            sql += " AND active = ?"
        return self.pool._rows(sql + " ORDER BY id", [embedder] + ([active] if active is not None else []))

    def mark_centroids(self, embedder: str, mark: str) -> np.ndarray:
        table = self.pool.cursor().sql(
            "SELECT centroid FROM topic_marks WHERE embedder = ? AND mark = ? AND active ORDER BY id",
            params=[embedder, mark]).to_arrow_table()
        if not table.num_rows:
            return np.zeros((0, 0), dtype=np.float32)
        flat = table.column("centroid").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        return flat.reshape(table.num_rows, -1)

    def read_mark(self, mark_id: int) -> dict | None:
        rows = self.pool._q("SELECT mark, name, embedder, set_id, topic, active FROM topic_marks WHERE id = ?",
                            [int(mark_id)]).fetchall()
        if not rows:
            return None
        return dict(zip(("mark", "name", "embedder", "set_id", "topic", "active"), rows[0]))

    def write_mark(self, mark_id: int, state: dict | None) -> None:
        """A mark's writable state is whether it is active (an undone mark is kept, inactive)."""
        active = bool(state and state.get("active"))
        self.pool._q("UPDATE topic_marks SET active = ? WHERE id = ?", [active, int(mark_id)])

    # -- steered runs ----------------------------------------------------------------------
    def save_round(self, run_id: int, round_number: int, set_id: int, avoid: Sequence[int]) -> None:
        self.pool._q("INSERT INTO topic_rounds (run_id, round_number, set_id, avoid) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT DO NOTHING", [int(run_id), int(round_number), int(set_id),
                                                json.dumps([int(a) for a in avoid])])

    def round_snapshot(self, run_id: int, round_number: int) -> dict | None:
        rows = self.pool._rows("SELECT set_id, avoid FROM topic_rounds WHERE run_id = ? AND round_number = ?",
                               [int(run_id), int(round_number)])
        if not rows:
            return None
        return {"set_id": int(rows[0]["set_id"]), "avoid": _loads(rows[0]["avoid"]) or []}

    def run_rounds(self, run_id: int) -> list[dict]:
        rows = self.pool._rows(
            "SELECT r.round_number, r.set_id, r.avoid, s.k, s.fitted FROM topic_rounds r "
            "JOIN topic_sets s ON s.id = r.set_id WHERE r.run_id = ? ORDER BY r.round_number", [int(run_id)])
        for row in rows:
            row["avoid"] = _loads(row["avoid"]) or []
        return rows

    def last_run_set(self, run_id: int) -> dict | None:
        rows = self.pool._rows("SELECT * FROM topic_sets WHERE run_id = ? ORDER BY id DESC LIMIT 1", [int(run_id)])
        return self._decoded(rows[0]) if rows else None


__all__ = ["TopicQueries", "over_cap_sql"]
