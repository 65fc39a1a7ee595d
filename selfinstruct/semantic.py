"""Semantic near-duplicates: the second novelty gate and duplicate groups (issue 24).

ROUGE-L keeps a task said twice in other words ("Find and fix the error in the following code." /
"Find the errors in the following code and fix them.": ROUGE-L 0.63). Sentence vectors
(embed.py) catch them: two instructions whose cosine is above the threshold
(`model.COSINE_THRESHOLD` by default) are one task.

- `SemanticIndex`: the pool's vectors as one growing float32 matrix. `answer(texts)` embeds one
  answer's items (stored as they arrive, accepted or rejected) and scores them all against the
  pool with one matrix product; `AnswerGate.nearest(k)` adds the items accepted earlier in the
  same answer, so the decision is exact and follows the answer's fixed order, as ROUGE's does.
- `duplicate_groups`: groups among the pool's seed tasks and accepted instructions. Items are
  visited in keep-rule order (`model.keep_rank`); an item not yet in a group leads one, and its
  group is the items not yet grouped whose cosine with IT is above the threshold. So every
  member is close to the item kept (no chains: A~B~C never removes C when C is not close to
  A). Pairs are found block by block over the upper triangle, so memory stays at one block.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .embed import BUNDLED, Embedder, ensure_vectors
from .model import COSINE_THRESHOLD, SEED_TASK, keep_rank

DEFAULT_BLOCK = 1024


class SemanticIndex:
    """The pool's instructions' vectors for one embedder, growing as candidates are accepted."""

    def __init__(self, pool, embedder: Embedder, texts: Sequence[str], threshold: float | None = COSINE_THRESHOLD):
        self.pool, self.embedder, self.threshold = pool, embedder, threshold
        texts = list(texts)
        ensure_vectors(pool, embedder, texts)       # a pool with no vectors yet is embedded first
        vectors = pool.embeddings.vectors_for(embedder.name, texts) if texts else \
            np.zeros((0, embedder.dim), dtype=np.float32)
        self._texts = texts
        self._n = len(texts)
        self._m = np.zeros((max(1024, 2 * self._n), vectors.shape[1]), dtype=np.float32)
        self._m[:self._n] = vectors

    def __len__(self) -> int:
        return self._n

    @property
    def matrix(self) -> np.ndarray:
        return self._m[:self._n]

    def text(self, i: int) -> str:
        return self._texts[i]

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of `texts`, embedding and storing those the pool has none for."""
        texts = list(texts)
        if self.embedder.kind == BUNDLED:
            # Deterministic: embedding again gives the stored vector bit for bit, so one INSERT
            # (which keeps rows that exist) replaces a lookup, an embed and an insert.
            vectors = self.embedder.embed(texts)
            self.pool.embeddings.add(self.embedder.name, self.embedder.dim, texts, vectors, kind=BUNDLED)
            return vectors
        missing = self.pool.embeddings.missing(self.embedder.name, texts)
        fresh = {}
        if missing:
            vectors = self.embedder.embed(missing)
            self.pool.embeddings.add(self.embedder.name, self.embedder.dim, missing, vectors, kind=self.embedder.kind)
            fresh = dict(zip(missing, vectors))
        stored = [t for t in dict.fromkeys(texts) if t not in fresh]
        if stored:
            fresh.update(zip(stored, self.pool.embeddings.vectors_for(self.embedder.name, stored)))
        return np.array([fresh[t] for t in texts], dtype=np.float32).reshape(len(texts), -1)

    def add(self, text: str, vector: np.ndarray) -> None:
        if self._n == len(self._m):
            grown = np.zeros((2 * len(self._m), self._m.shape[1]), dtype=np.float32)
            grown[:self._n] = self._m[:self._n]
            self._m = grown
        self._m[self._n] = vector
        self._texts.append(text)
        self._n += 1

    def answer(self, texts: Sequence[str]) -> "AnswerGate":
        return AnswerGate(self, list(texts))


class AnswerGate:
    """One answer's items scored against the pool with one matrix product."""

    def __init__(self, index: SemanticIndex, texts: list[str]):
        self.index, self.texts = index, texts
        self.q = index.vectors(texts) if texts else np.zeros((0, index.matrix.shape[1]), dtype=np.float32)
        self.base = len(index)
        if self.base and texts:
            scores = index.matrix @ self.q.T                     # pool x items
            self.best = scores.argmax(axis=0)
            self.best_score = scores[self.best, np.arange(len(texts))]
        else:
            self.best = np.full(len(texts), -1)
            self.best_score = np.full(len(texts), -np.inf, dtype=np.float32)

    def nearest(self, k: int) -> tuple[float | None, str | None]:
        """Item k's highest cosine with the pool as it stands now (including what this answer
        accepted before it), and that pool instruction; (None, None) for an empty pool."""
        best, where = float(self.best_score[k]), int(self.best[k])
        extra = self.index.matrix[self.base:]
        if len(extra):
            scores = extra @ self.q[k]
            j = int(scores.argmax())
            if float(scores[j]) > best:                      # ties keep the earlier item
                best, where = float(scores[j]), self.base + j
        if where < 0:
            return None, None
        return best, self.index.text(where)

    def accept(self, k: int) -> None:
        self.index.add(self.texts[k], self.q[k])


class StoredOnly(Embedder):
    """Stands for an endpoint embedder when only its stored vectors may be used (re-filter, the
    what-if view): asking it to embed anything is an error that says what to do."""

    kind = "stored"

    def __init__(self, name: str, dim: int):
        self.name, self.dim = name, dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise ValueError(f"{len(texts)} text(s) have no stored vector from {self.name}; embed the pool first "
                         f"(selfinstruct embed) and try again.")


# ---------------------------------------------------------------------------
# Duplicate groups
# ---------------------------------------------------------------------------
@dataclass
class DuplicateGroup:
    """A kept item and the items whose cosine with it is above the threshold."""

    keep: int                          # index into the items of `Duplicates`
    members: list[int]                 # the others, by decreasing cosine with `keep`
    cosines: list[float]               # member's cosine with `keep`


@dataclass
class Duplicates:
    items: list[dict]                  # kind, id, instruction, and the keep rule's fields
    groups: list[DuplicateGroup]
    threshold: float
    embedder: str
    matrix: np.ndarray = field(repr=False, default=None)

    def group_items(self, g: DuplicateGroup) -> list[dict]:
        return [self.items[i] for i in [g.keep, *g.members]]

    def pairwise(self, g: DuplicateGroup) -> np.ndarray:
        idx = [g.keep, *g.members]
        sub = self.matrix[idx]
        return sub @ sub.T

    def removal(self, keep: dict[int, int] | None = None, seeds: Sequence[int] = ()) -> tuple[list[int], list[int]]:
        """(candidate ids, seed task ids) the one action removes: from each group every item but
        the kept one (`keep` maps a group's number in `groups` to the item a person picked
        instead of the rule's), seed tasks only when their ids are in `seeds` (a person chose
        them)."""
        keep = keep or {}
        chosen = set(int(i) for i in seeds)
        candidates, seed_ids = [], []
        for n, g in enumerate(self.groups):
            kept = keep.get(n, g.keep)
            for i in [g.keep, *g.members]:
                item = self.items[i]
                if i == kept:
                    continue
                if item["kind"] == SEED_TASK:
                    if int(item["id"]) in chosen:
                        seed_ids.append(int(item["id"]))
                else:
                    candidates.append(int(item["id"]))
        return candidates, seed_ids

    def as_json_lines(self) -> Iterator[str]:
        """One JSON object per group: its items' kinds, ids and texts (the kept one first), the
        pairwise cosine matrix, and which one the keep rule keeps."""
        for n, g in enumerate(self.groups, start=1):
            members = self.group_items(g)
            yield json.dumps({
                "group": n, "keep": {"kind": members[0]["kind"], "id": members[0]["id"]},
                "items": [{"kind": m["kind"], "id": m["id"], "instruction": m["instruction"]} for m in members],
                "cosines": [[round(float(x), 4) for x in row] for row in self.pairwise(g)],
            }, ensure_ascii=False)


def close_pairs(matrix: np.ndarray, threshold: float, *, block: int = DEFAULT_BLOCK) -> Iterator[tuple]:
    """(rows i, cols j, cosines) arrays of every pair i < j with cosine above `threshold`, one
    block of rows at a time against the rows after it (the upper triangle): memory is one
    block x n matrix of float32, never n x n."""
    n = len(matrix)
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = matrix[start:stop] @ matrix[start:].T        # block x (n - start)
        rows, cols = np.nonzero(scores > threshold)
        keep = cols > rows                                      # strict upper triangle
        rows, cols = rows[keep], cols[keep]
        if len(rows):
            yield rows + start, cols + start, scores[rows, cols]


def group_by_rank(matrix: np.ndarray, ranks: Sequence[tuple], threshold: float, *,
                  block: int = DEFAULT_BLOCK) -> list[DuplicateGroup]:
    """Groups of `matrix`'s rows (normalised): rows taken in `ranks` order (smallest first);
    each row not yet grouped leads a group of the ungrouped rows above the threshold with it."""
    n = len(matrix)
    order = np.array(sorted(range(n), key=lambda i: ranks[i]), dtype=np.int64)
    ordered = np.ascontiguousarray(matrix[order])
    found = list(close_pairs(ordered, threshold, block=block)) if n else []
    if not found:
        return []
    rows = np.concatenate([f[0] for f in found])
    cols = np.concatenate([f[1] for f in found])
    cos = np.concatenate([f[2] for f in found])
    # Each pair once, r < c (r ranks first): a leader's candidates are its pairs as the row.
    sort = np.lexsort((cols, rows))
    rows, cols, cos = rows[sort], cols[sort], cos[sort]
    starts = np.searchsorted(rows, np.arange(n + 1))
    taken = np.zeros(n, dtype=bool)
    groups = []
    for p in np.unique(rows):
        if taken[p]:
            continue
        c, x = cols[starts[p]:starts[p + 1]], cos[starts[p]:starts[p + 1]]
        free = ~taken[c]
        c, x = c[free], x[free]
        if not len(c):
            continue
        by = np.lexsort((c, -x))                        # by decreasing cosine, then rank
        c, x = c[by], x[by]
        taken[p] = True
        taken[c] = True
        groups.append(DuplicateGroup(keep=int(order[p]), members=[int(i) for i in order[c]],
                                     cosines=[float(v) for v in x]))
    return groups


def find_duplicates(pool, embedder: Embedder, threshold: float = COSINE_THRESHOLD, *,
                    block: int = DEFAULT_BLOCK, progress=None) -> Duplicates:
    """Duplicate groups among the pool's seed tasks and accepted instructions (vectors embedded
    first where missing), the kept item of each chosen by `model.keep_rank`."""
    items = pool.embeddings.dedup_items()
    texts = [it["instruction"] for it in items]
    ensure_vectors(pool, embedder, texts, progress=progress)
    matrix = pool.embeddings.vectors_for(embedder.name, texts) if texts else \
        np.zeros((0, 1), dtype=np.float32)
    groups = group_by_rank(matrix, [keep_rank(it) for it in items], threshold, block=block)
    return Duplicates(items=items, groups=groups, threshold=threshold, embedder=embedder.name, matrix=matrix)


__all__ = ["AnswerGate", "DuplicateGroup", "Duplicates", "SemanticIndex", "StoredOnly", "close_pairs",
           "find_duplicates", "group_by_rank"]
