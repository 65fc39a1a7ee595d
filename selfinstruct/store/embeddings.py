"""Sentence vectors: one row per (embedder, text) in `embeddings`, each embedder in `embedders`.

Reached as `pool.embeddings`. Vectors are stored by text, not by item: a seed task and a candidate
with the same words share one row, and an edit's new text simply has no vector until embedded.
Rows come back as one float32 matrix in the order asked for (read through Arrow, never row by row).
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..model import CANDIDATE, SEED_TASK, accepted_sql, sql_literal

from .core import Queries

_register_lock = threading.Lock()
_counter = [0]


def _temp_name(prefix: str) -> str:
    with _register_lock:
        _counter[0] += 1
        return f"_{prefix}_{_counter[0]}"


@dataclass
class PoolVectors:
    """The pool's instructions (seed tasks, then accepted candidates, each by id) with their
    vectors. `kinds[i]` is model.SEED_TASK or model.CANDIDATE and `ids[i]` that table's id;
    rows of `matrix` whose text has no vector yet are zero and listed in `missing`."""

    kinds: list[str]
    ids: np.ndarray
    texts: list[str]
    matrix: np.ndarray
    missing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def _matrix_from_arrow(column: pa.ChunkedArray | pa.Array, n: int, dim: int) -> np.ndarray:
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return np.ascontiguousarray(flat.reshape(n, dim))


@contextmanager
def _registered(cur, prefix: str, table: pa.Table) -> Iterator[str]:
    """`table` visible to SQL on `cur` under a fresh name for the block. DuckDB refuses to
    register while the cursor holds a result not fetched to the end (a `fetchone` elsewhere), so
    a trivial statement is run first to close it."""
    cur.execute("SELECT 1").fetchall()
    name = _temp_name(prefix)
    cur.register(name, table)
    try:
        yield name
    finally:
        cur.unregister(name)


class EmbeddingQueries(Queries):
    """Store and read sentence vectors (see the module docstring)."""

    # -- embedders ----------------------------------------------------------
    def register(self, name: str, kind: str, dim: int, spec: dict | None = None) -> None:
        """Record an embedder (once; a second call with another dimension is refused)."""
        with self.pool.transaction() as cur:
            rows = cur.execute("SELECT dim FROM embedders WHERE name = ?", [name]).fetchall()
            row = rows[0] if rows else None
            if row is None:
                cur.execute("INSERT INTO embedders (name, kind, dim, spec) VALUES (?, ?, ?, ?)",
                            [name, kind, int(dim), json.dumps(spec or {})])
            elif int(row[0]) != int(dim):
                raise ValueError(f"The embedder {name!r} gave {dim}-dimensional vectors, but the pool holds "
                                 f"{row[0]}-dimensional ones under that name.")

    def embedders(self) -> list[dict]:
        """Each embedder with its kind, dimension and how many texts it has vectors for."""
        return self.pool._rows(
            "SELECT d.name, d.kind, d.dim, (SELECT count(*) FROM embeddings e WHERE e.embedder = d.name) AS vectors "
            "FROM embedders d ORDER BY d.created_at, d.name")

    def dim(self, name: str) -> int | None:
        rows = self.pool._q("SELECT dim FROM embedders WHERE name = ?", [name]).fetchall()
        return int(rows[0][0]) if rows else None

    def count(self, name: str) -> int:
        return int(self.pool._q("SELECT count(*) FROM embeddings WHERE embedder = ?", [name]).fetchall()[0][0])

    # -- writing ------------------------------------------------------------
    def add(self, name: str, dim: int, texts: Sequence[str], vectors: np.ndarray, *, kind: str = "") -> int:
        """Store the vectors of `texts` (rows of `vectors`) for embedder `name`; a text that
        already has one keeps it (never computed or stored twice). Returns the rows added."""
        texts = list(texts)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(texts), dim):
            raise ValueError(f"Expected {len(texts)} vectors of {dim} numbers, got shape {vectors.shape}.")
        if not texts:
            return 0
        self.register(name, kind or "unknown", dim)
        # Duplicate texts in one call would break the primary key: keep the first of each.
        seen: dict[str, int] = {}
        for i, t in enumerate(texts):
            seen.setdefault(t, i)
        order = np.fromiter(seen.values(), dtype=np.int64, count=len(seen))
        flat = pa.array(vectors[order].reshape(-1))
        table = pa.table({"text": pa.array(list(seen)),
                          "vector": pa.ListArray.from_arrays(pa.array(np.arange(0, len(order) * dim + 1, dim,
                                                                                dtype=np.int32)), flat)})
        with self.pool.transaction() as cur, _registered(cur, "emb_add", table) as view:
            added = cur.execute(f"INSERT INTO embeddings (embedder, text, vector) SELECT ?, v.text, v.vector "
                                f"FROM {view} v WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                                f"WHERE e.embedder = ? AND e.text = v.text)", [name, name]).fetchall()[0][0]
        return int(added)

    # -- reading ------------------------------------------------------------
    def missing(self, name: str, texts: Sequence[str]) -> list[str]:
        """The distinct texts among `texts` with no vector from embedder `name`, in first-seen order."""
        distinct = list(dict.fromkeys(texts))
        if not distinct:
            return []
        cur = self.pool.cursor()
        query = pa.table({"i": pa.array(range(len(distinct)), pa.int64()), "text": pa.array(distinct)})
        with _registered(cur, "emb_missing", query) as view:
            rows = cur.execute(f"SELECT q.i FROM {view} q WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                               f"WHERE e.embedder = ? AND e.text = q.text) ORDER BY q.i", [name]).fetchall()
        return [distinct[r[0]] for r in rows]

    def vectors_for(self, name: str, texts: Sequence[str]) -> np.ndarray:
        """One row per text (in order) of embedder `name`; a text with no vector gets a zero row
        (cosine 0 with everything: never a duplicate). Check `missing` first when that matters."""
        texts = list(texts)
        dim = self.dim(name)
        if dim is None:
            raise KeyError(f"The pool holds no vectors of the embedder {name!r}.")
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        cur = self.pool.cursor()
        query = pa.table({"i": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts)})
        with _registered(cur, "emb_for", query) as view:
            table = cur.sql(f"SELECT q.i, e.vector FROM {view} q JOIN embeddings e "
                            f"ON e.embedder = ? AND e.text = q.text ORDER BY q.i", params=[name]).to_arrow_table()
        if table.num_rows:
            index = table.column("i").to_numpy()
            out[index] = _matrix_from_arrow(table.column("vector"), table.num_rows, dim)
        return out

    def texts_without_vectors(self, name: str) -> list[str]:
        """Every distinct text of the pool (seed tasks and all candidates, accepted or rejected)
        with no vector from `name`: what `selfinstruct embed` has left to do, oldest first."""
        rows = self.pool._q(
            "WITH t AS (SELECT instruction AS text, 0 AS src, id FROM seed_tasks "
            "UNION ALL SELECT instruction, 1, id FROM candidates), "
            "f AS (SELECT text, min(src * 1e15 + id) AS k FROM t GROUP BY text) "
            "SELECT f.text FROM f WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.embedder = ? "
            "AND e.text = f.text) ORDER BY f.k", [name]).fetchall()
        return [r[0] for r in rows]

    def pool_items(self, *, candidate_status_sql: str | None = None) -> tuple[list[str], np.ndarray, list[str]]:
        """(kinds, ids, texts) of the pool's instructions: seed tasks by id, then accepted
        candidates by id."""
        where = candidate_status_sql or accepted_sql("c")
        rows = self.pool._q(
            f"SELECT {sql_literal(SEED_TASK)} AS kind, id, instruction FROM seed_tasks "
            f"UNION ALL SELECT {sql_literal(CANDIDATE)}, c.id, c.instruction FROM candidates c WHERE {where} "
            f"ORDER BY 1 DESC, 2").fetchall()
        # 'seed_task' > 'candidate': DESC puts the seeds first.
        kinds = [r[0] for r in rows]
        ids = np.array([r[1] for r in rows], dtype=np.int64)
        texts = [r[2] for r in rows]
        return kinds, ids, texts

    def dedup_items(self) -> list[dict]:
        """The pool's seed tasks and accepted candidates with what the keep rule of duplicate
        groups reads (model.keep_rank): kind, id, instruction, status, review, and judge_valid,
        the latest readable judge verdict's answer to "valid task?" (None: never judged)."""
        from .judge import latest_verdicts_sql

        rows = self.pool._q(
            f"SELECT {sql_literal(SEED_TASK)} AS kind, id, instruction, NULL AS status, NULL AS review, "
            "NULL AS judge_valid FROM seed_tasks "
            f"UNION ALL SELECT {sql_literal(CANDIDATE)}, c.id, c.instruction, c.status, c.review, j.valid "
            f"FROM candidates c LEFT JOIN (SELECT candidate_id, arg_max(valid_task, verdict_id) AS valid "
            f"FROM ({latest_verdicts_sql(one_run=False)}) GROUP BY candidate_id) j ON j.candidate_id = c.id "
            f"WHERE {accepted_sql('c')} ORDER BY 1 DESC, 2").fetchall()
        names = ("kind", "id", "instruction", "status", "review", "judge_valid")
        return [dict(zip(names, r)) for r in rows]

    def pool_vectors(self, name: str) -> PoolVectors:
        """The pool's seed tasks and accepted candidates with their vectors from `name`."""
        kinds, ids, texts = self.pool_items()
        if self.dim(name) is None:
            return PoolVectors(kinds, ids, texts, np.zeros((len(texts), 0), dtype=np.float32),
                               list(dict.fromkeys(texts)))
        missing = self.missing(name, texts)
        return PoolVectors(kinds, ids, texts, self.vectors_for(name, texts), missing)
