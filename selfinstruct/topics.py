"""Topics: clusters over the pool's embeddings, their names, a 2-D map, and the steering rule.

Pure computation over a float32 matrix of L2-normalised vectors (one row per text); the store
(`store/topics.py`, `pool.topics`) keeps the results and `topic_view` reads them back.

* **Clusters**: k-means by scipy's `kmeans2` (a dependency already; no numba, no scikit-learn).
  On unit vectors, Euclidean k-means groups by cosine. Centroids start from k-means++ on a
  seeded sample, then Lloyd's iterations run over every fitted row, so 50K texts cluster in a
  few seconds. Topics are numbered by size (1 is the largest); a topic left empty is dropped.
* **How many**: set by hand (`TopicSettings.k`), or chosen within `k_min..k_max` on a seeded
  sample by the mean silhouette (cosine distance): the smallest k whose silhouette is within
  `K_TOLERANCE` of the best in the range. Static embeddings of instructions have little
  cluster structure, so the silhouette creeps up with k; the tolerance keeps the map readable
  while a pool with clear topics still gets exactly its number (tests/test_topics.py).
* **Names without a model**: the most frequent leading verb-noun pairs of a topic's
  instructions (explore.py's heuristic, the paper's diversity analysis) and its distinctive
  words (largest share in the topic against the whole pool, by their contribution to the
  Kullback-Leibler divergence).
* **Map**: PCA (numpy's eigendecomposition of the covariance), fitted on a seeded sample. Linear and cheap (50K x 256 in well
  under a second), deterministic (signs fixed), with no new dependency: UMAP pulls numba and
  t-SNE needs scikit-learn and minutes at 50K. Topics overlap more on a PCA map than on UMAP's;
  colours and the table carry the topic, the map shows where the pool is thick or thin.
* **Steering** (`steer_weights`, `weighted_sample`, `steer_examples`): the one rule for drawing
  in-context examples that favour thin topics and skip "avoid" topics.
* **Avoid**: a mark keeps the set and topic it was put on; an item is avoided when that set's
  nearest centroid to it is the marked topic (`in_avoided`), so the mark means the same items
  when topics are computed again with another number of topics.
"""
from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .explore import content_words, leading_verb_noun

TOPICS_VERSION = "topics-v1"    # changes when the same vectors and settings would give other topics
K_TOLERANCE = 0.95              # the smallest k whose sample silhouette is >= this share of the best
MIN_TOPIC_MEAN = 5              # k is at most (fitted rows / this): topics of a handful of items at least


@dataclass(frozen=True)
class TopicSettings:
    """How topics are computed; stored with them (a change gives another set of topics)."""
    k: int | None = None        # None: chosen within k_min..k_max
    k_min: int = 4
    k_max: int = 30
    seed: int = 0
    sample: int = 2_000         # rows used to choose k and to start the centroids
    iterations: int = 20

    def validate(self) -> None:
        if self.k is not None and not 1 <= self.k <= 500:
            raise ValueError(f"The number of topics must be between 1 and 500, not {self.k}.")
        if not 2 <= self.k_min <= self.k_max <= 500:
            raise ValueError(f"The range of topics must satisfy 2 <= min <= max <= 500, not {self.k_min}..{self.k_max}.")
        if self.sample < 50:
            raise ValueError("The sample for choosing the number of topics needs at least 50 rows.")
        if self.iterations < 1:
            raise ValueError("k-means needs at least one iteration.")

    def to_dict(self) -> dict:
        return {**asdict(self), "version": TOPICS_VERSION}

    @classmethod
    def from_dict(cls, data: dict) -> "TopicSettings":
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__})


@dataclass
class Clustering:
    labels: np.ndarray          # topic index (0-based, by size) per row; -1 for rows not assigned
    centroids: np.ndarray       # k x dim, unit length
    k: int
    silhouettes: dict = field(default_factory=dict)   # k -> mean silhouette on the sample (auto k)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(int(seed))


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1)).astype(np.float32)


def assign(vectors: np.ndarray, centroids: np.ndarray, block: int = 8_192) -> np.ndarray:
    """Nearest centroid (largest cosine) of each row, in blocks (no n x k copy beyond a block)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    out = np.empty(len(vectors), dtype=np.int32)
    if not len(vectors):
        return out
    cents = np.asarray(centroids, dtype=np.float32)
    for start in range(0, len(vectors), block):
        out[start:start + block] = np.argmax(vectors[start:start + block] @ cents.T, axis=1)
    return out


def _silhouette(sample: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean silhouette with cosine distance (rows are unit vectors), in O(s^2 + s^2 k / s)."""
    dist = 1.0 - sample @ sample.T
    onehot = np.zeros((len(sample), k), dtype=np.float32)
    onehot[np.arange(len(sample)), labels] = 1.0
    counts = onehot.sum(axis=0)
    sums = dist @ onehot                                  # s x k: total distance to each cluster
    own = counts[labels]
    a = sums[np.arange(len(sample)), labels] / np.maximum(own - 1, 1)
    means = sums / np.where(counts > 0, counts, np.inf)
    means[np.arange(len(sample)), labels] = np.inf
    means[:, counts == 0] = np.inf
    b = means.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


SMALL_SAMPLE = 500      # below this many rows, k-means++ starts several times (see _kmeans)
SMALL_STARTS = 5


def _kmeans(data: np.ndarray, init: int | np.ndarray, *, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scipy's kmeans2 from given centroids, or from k-means++. On a small sample one k-means++
    start often lands in a poor optimum (two real topics merged, one split), so small inputs get
    SMALL_STARTS seeded starts and keep the one with the least squared distance; on thousands of
    rows one start is as good and five would cost five times as much."""
    from scipy.cluster.vq import kmeans2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "One of the clusters is empty": empty topics are dropped below
        if isinstance(init, np.ndarray):
            return kmeans2(data, init, iter=iterations, minit="matrix", missing="warn", seed=_rng(seed))
        best = None
        for start in range(SMALL_STARTS if len(data) < SMALL_SAMPLE else 1):
            cents, labels = kmeans2(data, int(init), iter=iterations, minit="++", missing="warn",
                                    seed=_rng(seed * 1_000 + start))
            cost = float(((data - cents[labels]) ** 2).sum())
            if best is None or cost < best[0]:
                best = (cost, cents, labels)
        return best[1], best[2]


def k_grid(low: int, high: int) -> list[int]:
    """The numbers of topics tried between `low` and `high`: steps of about 15%, so a range of
    4..30 costs 14 small k-means runs rather than 27."""
    grid, k = [], low
    while k < high:
        grid.append(k)
        k = max(k + 1, int(round(k * 1.15)))
    return grid + [high] if high >= low else grid


def choose_k(sample: np.ndarray, settings: TopicSettings) -> tuple[int, dict]:
    """The number of topics for `sample` (see the module docstring) and the silhouette per k."""
    n = len(sample)
    high = min(settings.k_max, max(1, n // MIN_TOPIC_MEAN))
    low = min(settings.k_min, high)
    if high < 2:
        return 1, {}
    scores = {}
    for k in k_grid(max(2, low), high):
        _, labels = _kmeans(sample, k, iterations=min(10, settings.iterations), seed=settings.seed)
        used = np.unique(labels)
        if len(used) < 2:
            continue
        scores[k] = _silhouette(sample, np.searchsorted(used, labels), len(used))
    if not scores:
        return 1, {}
    best = max(scores.values())
    bar = best * K_TOLERANCE if best > 0 else best
    return min(k for k, s in scores.items() if s >= bar), scores


def cluster(vectors: np.ndarray, settings: TopicSettings = TopicSettings(), *,
            fit: np.ndarray | None = None) -> Clustering:
    """Topics of `vectors` (unit rows). `fit` (a boolean mask) picks the rows that define the
    topics (the pool: seed tasks and accepted instructions); every row is then assigned to its
    nearest topic (rejected candidates too, for the acceptance rates)."""
    settings.validate()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    fit_idx = np.arange(n) if fit is None else np.flatnonzero(np.asarray(fit, dtype=bool))
    if len(fit_idx) == 0:
        return Clustering(np.full(n, -1, dtype=np.int32), np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0),
                                                                   dtype=np.float32), 0)
    rng = _rng(settings.seed)
    sample_idx = np.sort(rng.choice(fit_idx, min(settings.sample, len(fit_idx)), replace=False))
    sample = vectors[sample_idx]
    scores: dict = {}
    if settings.k is not None:
        k = min(settings.k, len(fit_idx))
    else:
        k, scores = choose_k(sample, settings)
    if k <= 1:
        centroids = _unit(vectors[fit_idx].mean(axis=0, keepdims=True))
    else:
        start, _ = _kmeans(sample, min(k, len(sample)), iterations=settings.iterations, seed=settings.seed)
        centroids, _ = _kmeans(vectors[fit_idx], start, iterations=settings.iterations, seed=settings.seed)
        centroids = _unit(centroids)
    labels = assign(vectors[fit_idx], centroids)
    sizes = np.bincount(labels, minlength=len(centroids))
    # Number topics by size (largest first; ties by the first row in each), dropping empty ones.
    first = np.full(len(centroids), n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(labels)))
    order = [int(t) for t in sorted(np.flatnonzero(sizes), key=lambda t: (-sizes[t], first[t]))]
    centroids = centroids[order]
    out = assign(vectors, centroids)
    return Clustering(out, centroids, len(order), scores)


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TopicName:
    name: str                               # short: the top verb-noun pair and distinctive words
    pairs: list = field(default_factory=list)   # [[verb, noun, count], ...] most frequent first
    words: list = field(default_factory=list)   # distinctive words, most distinctive first


def name_topics(texts: Sequence[str], labels: np.ndarray, k: int, *, pairs: int = 3,
                words: int = 4) -> list[TopicName]:
    """A name per topic 0..k-1 from its texts (rows whose label is -1 are ignored)."""
    labels = np.asarray(labels)
    pair_counts = [Counter() for _ in range(k)]
    word_counts = [Counter() for _ in range(k)]
    overall: Counter = Counter()
    for text, label in zip(texts, labels):
        seen = set(content_words(text))
        overall.update(seen)
        if 0 <= label < k:
            verb, noun = leading_verb_noun(text)
            if verb is not None:
                pair_counts[label][(verb, noun or "")] += 1
            word_counts[label].update(seen)
    total = max(1, len(texts))
    sizes = np.bincount(labels[labels >= 0], minlength=k) if k else np.zeros(0)
    names = []
    for t in range(k):
        size = max(1, int(sizes[t]))
        top_pairs = [[v, n, c] for (v, n), c in sorted(pair_counts[t].items(), key=lambda kv: (-kv[1], kv[0]))[:pairs]]

        def score(item):
            word, count = item
            p_in, p_all = count / size, overall[word] / total
            return p_in * math.log(p_in / p_all) if p_in > p_all else 0.0

        candidates = [(w, c) for w, c in word_counts[t].items() if c >= 2 or size < 4]
        top_words = [w for w, c in sorted(candidates, key=lambda wc: (-score(wc), -wc[1], wc[0]))
                     if score((w, c)) > 0][:words]
        head = " ".join(x for x in top_pairs[0][:2] if x) if top_pairs else ""
        shown = [w for w in top_words if w not in head.split()][:3]
        name = " · ".join(x for x in (head, ", ".join(shown)) if x) or f"topic {t + 1}"
        names.append(TopicName(name, top_pairs, top_words))
    return names


# ---------------------------------------------------------------------------
# The 2-D map
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Projection:
    mean: np.ndarray          # dim
    components: np.ndarray    # 2 x dim

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        if not len(vectors):
            return np.zeros((0, 2), dtype=np.float32)
        return ((np.asarray(vectors, dtype=np.float32) - self.mean) @ self.components.T).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "components": self.components.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Projection":
        return cls(np.asarray(data["mean"], dtype=np.float32), np.asarray(data["components"], dtype=np.float32))


def fit_projection(vectors: np.ndarray, *, sample: int = 5_000, seed: int = 0) -> Projection:
    """PCA to two dimensions, fitted on a seeded sample; each axis's sign is fixed so that its
    largest loading is positive (the same data always gives the same picture)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    if len(vectors) == 0:
        return Projection(np.zeros(dim, np.float32), np.zeros((2, dim), np.float32))
    idx = np.arange(len(vectors))
    if len(idx) > sample:
        idx = np.sort(_rng(seed).choice(idx, sample, replace=False))
    data = vectors[idx].astype(np.float64)
    mean = data.mean(axis=0)
    centred = data - mean
    # The top eigenvectors of the dim x dim covariance are the SVD's right singular vectors; on
    # 2 busy cores a full SVD of 5,000 x 256 took seconds, this takes milliseconds.
    values, vecs = np.linalg.eigh(centred.T @ centred)
    vt = vecs[:, np.argsort(values)[::-1]].T
    comps = np.zeros((2, dim))
    comps[:min(2, len(vt))] = vt[:2]
    for row in comps:
        j = int(np.argmax(np.abs(row))) if row.any() else 0
        if row[j] < 0:
            row *= -1
    return Projection(mean.astype(np.float32), comps.astype(np.float32))


# ---------------------------------------------------------------------------
# Steering: the one rule for in-context examples that favour thin topics
# ---------------------------------------------------------------------------
def steer_weights(labels: Sequence[int], avoid: Sequence[int] = ()) -> np.ndarray:
    """Sampling weight per item: 1 / (its topic's size among these items), 0 for an item in an
    "avoid" topic. Every topic is then equally likely to give the next example, whatever its size,
    so thin topics are drawn far more often than under plain sampling. An item with no topic
    (label -1) counts as a topic of its own."""
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return np.zeros(0)
    keyed = np.where(labels >= 0, labels, -1 - np.arange(len(labels)))
    _, inverse, counts = np.unique(keyed, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    if len(avoid):
        weights[np.isin(labels, np.asarray(list(avoid), dtype=np.int64))] = 0.0
    return weights


def weighted_sample(rng: random.Random, items: Sequence, weights: Sequence[float], k: int) -> list:
    """`k` items without replacement, each drawn with probability proportional to its weight among
    those left (Efraimidis and Spirakis' keys u ** (1 / w)), from the caller's seeded `rng`, so a
    round's prompts are the same on every run. Items of weight 0 are never drawn."""
    keyed = []
    for item, w in zip(items, weights):
        u = rng.random()
        if w > 0:
            keyed.append((math.log(u if u > 0 else 1e-300) / w, len(keyed), item))
    keyed.sort(key=lambda t: (-t[0], t[1]))
    return [item for _, _, item in keyed[:max(0, k)]]


def entropy(labels: Sequence[int]) -> float:
    """Shannon entropy (bits) of the topic distribution of `labels` (label -1 ignored)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0]) if len(labels) else np.zeros(0)
    counts = counts[counts > 0]
    if not len(counts):
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mean_nn_cosine(vectors: np.ndarray, block: int = 4_096) -> float:
    """Mean cosine of each row to its nearest other row (unit rows), in blocks."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 2:
        return 0.0
    total = 0.0
    for start in range(0, n, block):
        sims = vectors[start:start + block] @ vectors.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf
        total += float(sims.max(axis=1).sum())
    return total / n


# ---------------------------------------------------------------------------
# Topics of a pool: computed, stored, read back
# ---------------------------------------------------------------------------
AVOID = "avoid"                 # the one mark a person puts on a topic
MAP_POINTS = 1_200              # points drawn on the map at most (a seeded sample; search reaches all):
                                # 5,000 made the page 1.4x the Pool page's time at 50K, 1,200 1.2x (bench/README.md)


def settings_key(settings: TopicSettings) -> str:
    """The settings as stored for lookup: sets with another key are other topics."""
    return json.dumps(settings.to_dict(), sort_keys=True)


def _embedder(embedder=None):
    from . import embed

    return embedder if embedder is not None else embed.bundled()


def compute(pool, settings: TopicSettings = TopicSettings(), *, embedder=None, progress=None) -> int:
    """Cluster the pool now (seed tasks and accepted candidates define the topics; rejected
    candidates are assigned to their nearest one), name the topics, project the map, and store
    the set. Embeds first whatever has no vector (`progress(done, total)` reports that)."""
    from . import embed

    settings.validate()
    emb = _embedder(embedder)
    started = time.perf_counter()
    state = pool.topics.pool_state()
    items = pool.topics.items()
    embed.ensure_vectors(pool, emb, items["text"], progress=progress)
    vectors = pool.embeddings.vectors_for(emb.name, items["text"])
    fitted = np.asarray(items["fitted"], dtype=bool)
    result = cluster(vectors, settings, fit=fitted)
    names = name_topics([t for t, f in zip(items["text"], fitted) if f], result.labels[fitted], result.k)
    projection = fit_projection(vectors[fitted], seed=settings.seed)
    sizes = np.bincount(result.labels[fitted], minlength=result.k) if result.k else np.zeros(0, int)
    topics = [{"topic": t + 1, "size": int(sizes[t]), "name": names[t].name, "pairs": names[t].pairs,
               "words": names[t].words} for t in range(result.k)]
    return pool.topics.save_set(
        embedder=emb.name, settings=settings.to_dict(), settings_key=settings_key(settings), pool_state=state,
        k=result.k, fitted=int(fitted.sum()), projection=projection.to_dict(),
        silhouettes={str(k): v for k, v in result.silhouettes.items()}, topics=topics,
        centroids=result.centroids, kinds=items["kind"], ids=items["id"], labels=result.labels + 1,
        fitted_mask=fitted, xy=projection.apply(vectors), seconds=time.perf_counter() - started)


@dataclass
class Current:
    """The newest stored set for an embedder and settings, and whether the pool changed since."""
    set: dict | None
    stale: bool
    grown: int                  # rows topics are fitted on now, minus those the set was fitted on


def current(pool, settings: TopicSettings = TopicSettings(), *, embedder_name: str | None = None) -> Current:
    from .embed import BUNDLED_NAME

    found = pool.topics.latest_set(embedder_name or BUNDLED_NAME, settings_key(settings))
    if found is None:
        return Current(None, True, pool.topics.pool_size())
    return Current(found, found["pool_state"] != pool.topics.pool_state(), pool.topics.pool_size() - found["fitted"])


def refresh(pool, settings: TopicSettings = TopicSettings(), *, embedder=None, progress=None) -> int:
    """The newest set's id, computed again when the pool changed since (or none exists)."""
    emb_name = _embedder(embedder).name if embedder is not None else None
    now = current(pool, settings, embedder_name=emb_name)
    if now.set is not None and not now.stale:
        return int(now.set["id"])
    return compute(pool, settings, embedder=embedder, progress=progress)


def avoid_marks(pool, embedder_name: str) -> list[dict]:
    """The active "avoid" marks of an embedder's topics: id, set_id, topic."""
    return [m for m in pool.topics.marks(embedder_name) if m["mark"] == AVOID]


def in_avoided(pool, vectors: np.ndarray, marks: Sequence[dict]) -> np.ndarray:
    """Which rows fall in a marked topic: a row is in the topic marked in set S when S's nearest
    centroid to it is that topic's. A mark thus means the same items whatever topics are
    computed later (a region of the embedding space, not a topic number)."""
    mask = np.zeros(len(vectors), dtype=bool)
    by_set: dict[int, list[int]] = {}
    for m in marks:
        by_set.setdefault(int(m["set_id"]), []).append(int(m["topic"]))
    for set_id, marked in by_set.items():
        cents = pool.topics.centroids(set_id)
        if len(cents) and len(vectors):
            mask |= np.isin(assign(vectors, cents) + 1, marked)
    return mask


def avoided(pool, set_id: int) -> list[int]:
    """The set's topics (numbers) that lie in a marked region: those whose centroid falls in a
    topic marked "avoid" (in the set it was marked in; see `in_avoided`)."""
    found = pool.topics.get_set(set_id)
    if found is None:
        return []
    cents = pool.topics.centroids(set_id)
    marks = avoid_marks(pool, found["embedder"])
    if not marks or not len(cents):
        return []
    return [int(t) + 1 for t in np.flatnonzero(in_avoided(pool, cents, marks))]


def topic_rows(pool, set_id: int) -> list[dict]:
    """The per-topic table: the store's counts with the shares and the labeled-invalid
    interval (quality.wilson_interval), and the "avoid" marks."""
    from .calibration import wilson_interval

    avoid = set(avoided(pool, set_id))
    rows = []
    for r in pool.topics.topic_table(set_id):
        size = int(r["size"])
        labeled, invalid = int(r["labeled"]), int(r["labeled_invalid"])
        interval = wilson_interval(invalid, labeled) if labeled else None
        rows.append({
            "topic": int(r["topic"]), "name": r["model_name"] or r["name"], "words_name": r["name"],
            "size": size, "seeds": int(r["seeds"]),
            "seed_share": r["seeds"] / size if size else None,
            "candidates": int(r["candidates"]),
            "acceptance": r["accepted"] / r["candidates"] if r["candidates"] else None,
            "rescue": r["rescued"] / r["filtered_out"] if r["filtered_out"] else None,
            "labeled": labeled, "labeled_invalid": invalid,
            "invalid_share": invalid / labeled if labeled else None,
            "invalid_low": interval[0] if interval else None, "invalid_high": interval[1] if interval else None,
            "judged": int(r["judged"]), "judge_no": int(r["judge_no"]),
            "judge_no_share": r["judge_no"] / r["judged"] if r["judged"] else None,
            "rounds": list(r["rounds"] or []), "avoid": int(r["topic"]) in avoid,
        })
    return rows


def map_frame(pool, set_id: int, *, limit: int = MAP_POINTS):
    """The points the map draws (charts.topic_map's columns): at most `limit`, a sample fixed
    per set; every item stays reachable by `pool.topics.topic_items` (search)."""
    import pandas as pd

    names = {int(t["topic"]): t["model_name"] or t["name"] for t in pool.topics.topics(set_id)}
    frame = pd.DataFrame(pool.topics.map_points(set_id, limit=limit, seed=set_id),
                         columns=["kind", "item_id", "topic", "x", "y", "state", "labeled_invalid", "judge_no", "text"])
    frame = frame.drop(columns=["kind", "item_id"])     # the chart carries its data inline: only what it draws
    frame["x"], frame["y"] = frame["x"].round(3), frame["y"].round(3)
    frame["text"] = frame["text"].str.slice(0, 80)
    frame["topic_name"] = frame["topic"].map(names).fillna("")
    frame["origin"] = frame["state"].map(lambda s: "seed" if s == "seed" else "generated")
    for flag in ("labeled_invalid", "judge_no"):
        frame[flag] = frame[flag].map(lambda v: "yes" if v else "no")
    return frame


# ---------------------------------------------------------------------------
# Steered generation: which topics a round's examples come from
# ---------------------------------------------------------------------------
STEER_MODES = ("off", "coverage")
STEER_REFRESH = 0.2     # a steered run clusters again once the pool its rounds see grew by this share


def steer_examples(pool, run_id: int, number: int, seed_texts: Sequence[str], machine_texts: Sequence[str], *,
                   seed: int = 0, embedder=None) -> tuple[np.ndarray, np.ndarray]:
    """Sampling weights for round `number`'s in-context examples under `--steer coverage`: one
    for each seed task and each generated instruction the round may use (`steer_weights` over
    their topics: every topic equally likely, "avoid" topics never).

    The round's topics are those of the run's latest snapshot, computed again (and stored with
    the run and round) when the texts the round sees outnumber the snapshot's by STEER_REFRESH;
    the snapshot used and the "avoid" marks in force are stored per round (`topic_rounds`). Those texts
    are fixed by the example lag, and the clustering is seeded with the run's seed, so the same
    run plans the same prompts, and a resumed run reads back the snapshot of a round it planned."""
    from .embed import ensure_vectors

    emb = _embedder(embedder)
    texts = list(seed_texts) + list(machine_texts)
    if not texts:
        return np.zeros(0), np.zeros(0)
    ensure_vectors(pool, emb, texts)
    vectors = pool.embeddings.vectors_for(emb.name, texts)
    snapshot = pool.topics.round_snapshot(run_id, number)
    if snapshot is not None:
        set_id, mark_ids = snapshot["set_id"], snapshot["avoid"]
    else:
        last = pool.topics.last_run_set(run_id)
        if last is None or last["embedder"] != emb.name or len(texts) >= last["fitted"] * (1 + STEER_REFRESH):
            started = time.perf_counter()
            settings = TopicSettings(seed=seed)
            result = cluster(vectors, settings)
            names = name_topics(texts, result.labels, result.k)
            sizes = np.bincount(result.labels, minlength=result.k)
            empty = np.zeros(0)
            set_id = pool.topics.save_set(
                embedder=emb.name, settings=settings.to_dict(), settings_key=settings_key(settings),
                pool_state=pool.topics.pool_state(), k=result.k, fitted=len(texts), projection=None,
                silhouettes={str(k): v for k, v in result.silhouettes.items()},
                topics=[{"topic": t + 1, "size": int(sizes[t]), "name": names[t].name, "pairs": names[t].pairs,
                         "words": names[t].words} for t in range(result.k)],
                centroids=result.centroids, kinds=[], ids=[], labels=empty, fitted_mask=empty, xy=empty,
                run_id=run_id, round_number=number, seconds=time.perf_counter() - started)
        else:
            set_id = int(last["id"])
        mark_ids = [int(m["id"]) for m in avoid_marks(pool, emb.name)]
        pool.topics.save_round(run_id, number, set_id, mark_ids)
    labels = assign(vectors, pool.topics.centroids(set_id))
    weights = steer_weights(labels)
    marks = [pool.topics.read_mark(i) for i in mark_ids]
    weights[in_avoided(pool, vectors, [m for m in marks if m is not None])] = 0.0
    return weights[:len(seed_texts)], weights[len(seed_texts):]


def capped(pool, filters, max_per_topic: int, settings: TopicSettings = TopicSettings(), *, progress=None):
    """`filters` (export.ExportFilters) with at most `max_per_topic` tasks per topic, counted on the
    pool's topics as they are now (computed again if the pool changed since)."""
    import dataclasses

    if int(max_per_topic) < 1:
        raise ValueError(f"The cap per topic must be at least 1, not {max_per_topic}.")
    set_id = refresh(pool, settings, progress=progress)
    return dataclasses.replace(filters, max_per_topic=int(max_per_topic), topic_set_id=set_id)


# ---------------------------------------------------------------------------
# Names by the configured model (optional)
# ---------------------------------------------------------------------------
MODEL_NAME_EXAMPLES = 8     # tasks of a topic shown to the model
MODEL_NAME_MAX_WORDS = 8


def read_model_name(text: str | None) -> str | None:
    """The name in a model's answer: its first non-empty line without a "Name:" label, quotes,
    list marks or a final full stop; None when that is empty or longer than MODEL_NAME_MAX_WORDS
    words (an answer that ignored the request)."""
    for line in (text or "").splitlines():
        line = line.strip().strip("*#-").strip()
        if line.lower().startswith("name:"):
            line = line[5:].strip()
        line = line.strip("\"'`").rstrip(".").strip()
        if line:
            return line if len(line.split()) <= MODEL_NAME_MAX_WORDS and len(line) <= 80 else None
    return None


def name_with_model(pool, set_id: int, backend, *, model: str, mode: str = "chat", seed: int = 0,
                    concurrency: int = 4, timeout_s: float = 60.0) -> dict[int, str]:
    """Ask the configured model (`backend`: a started `backend.Backend`) for one short name per
    topic (prompts.build_topic_name_prompt, from a seeded sample of its seed tasks and accepted
    instructions and its distinctive words) and store the names with the prompt version and the
    model; our own names stay beside them. Returns topic -> name for the answers that read."""
    from .llm import Sampling
    from .control import run_coroutine
    from .prompts import TOPIC_NAME_VERSION, build_topic_name_prompt

    rng = random.Random(f"{seed}:{set_id}")
    rows = pool.topics.topics(set_id)
    asks = []
    for t in rows:
        _, members = pool.topics.topic_items(set_id, t["topic"], limit=2_000)
        texts = [m["instruction"] for m in members if m["state"] != "rejected"]
        asks.append(build_topic_name_prompt(rng.sample(texts, min(MODEL_NAME_EXAMPLES, len(texts))),
                                            list(t["words"])[:4], mode=mode))
    client = backend.client(backend.llm_config(model=model, mode=mode, concurrency=concurrency,
                                               timeout_s=timeout_s))

    async def ask():
        async with client:
            return await client.complete_many(asks, Sampling(temperature=0.0, top_p=1.0, max_tokens=24,
                                                             presence_penalty=0.0))

    answers = run_coroutine(ask())
    names = {int(t["topic"]): name for t, a in zip(rows, answers) if (name := read_model_name(a.text))}
    if names:
        pool.topics.set_model_names(set_id, names, prompt_version=TOPIC_NAME_VERSION, model=model)
    return names


CARD_POINTS = 2_000      # points in the card's map (an SVG of 5,000 would weigh most of a megabyte)


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _share(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def card_part(pool, filters=None, *, charts_dir: str = "charts") -> tuple[list[str], dict[str, str]]:
    """The dataset card's topic section (markdown lines) and its map (SVG, `topics.svg`), for the
    topics an export was capped by, else the pool's current topics when they are up to date.
    Rendered once per topic set and kept with it, so exports of an unchanged pool reuse it."""
    from . import charts

    set_id = getattr(filters, "topic_set_id", None)
    if set_id is None:
        now = current(pool)
        if now.set is None or now.stale:
            return (["", "## Topics", "", "The pool's topics are not computed for the pool as it is now (open the "
                     "Topics page or run `selfinstruct topics`, then export again to have them here)."], {})
        set_id = int(now.set["id"])
    cached = pool.topics.card_cache(set_id)
    if cached is None:
        found = pool.topics.get_set(set_id)
        rows = topic_rows(pool, set_id)
        frame = map_frame(pool, set_id, limit=CARD_POINTS)
        svg = charts.to_svg(charts.topic_map(frame, "topic", height=420), width=560,
                            title="The pool's topics", subtitle=f"{len(frame):,} of {found['items']:,} items drawn")
        table = ["| # | Topic | Size | Seeds | Accepted | Labeled invalid (95% interval) | Judge \"no\" |",
                 "|---:|---|---:|---:|---:|---|---:|"]
        for r in rows:
            invalid = "–" if r["invalid_share"] is None else (
                f"{r['invalid_share']:.0%} ({r['invalid_low']:.0%}-{r['invalid_high']:.0%}) of {r['labeled']}")
            table.append(f"| {r['topic']} | {_cell(r['name'])} | {r['size']:,} | {_share(r['seed_share'])} | "
                         f"{_share(r['acceptance'])} | {invalid} | {_share(r['judge_no_share'])} |")
        cached = {"svg": svg, "table": table, "k": int(found["k"]), "fitted": int(found["fitted"]),
                  "embedder": found["embedder"]}
        pool.topics.save_card_cache(set_id, cached)
    lines = ["", "## Topics", "",
             f"The pool's {cached['fitted']:,} seed tasks and accepted instructions fall into {cached['k']} topics "
             f"(k-means over {cached['embedder']} sentence vectors; named by their most frequent leading verb and "
             "noun and their most distinctive words). The figures are the pool's, not only this export's.", "",
             f"![The pool's topics]({charts_dir}/topics.svg)", "", *cached["table"], ""]
    return lines, {"topics.svg": cached["svg"]}


def rounds_text(rounds: Sequence[int]) -> str:
    """Round numbers as ranges: [1, 2, 3, 5] -> "1-3, 5"."""
    out: list[list[int]] = []
    for n in sorted(set(int(r) for r in rounds)):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


__all__ = ["name_with_model", "read_model_name", "card_part", "CARD_POINTS", "capped", "avoid_marks", "in_avoided", "STEER_MODES", "STEER_REFRESH", "steer_examples", "AVOID", "MAP_POINTS", "Current", "avoided", "compute", "current", "map_frame", "refresh", "rounds_text",
           "settings_key", "topic_rows", "TOPICS_VERSION", "Clustering", "Projection", "TopicName", "TopicSettings", "assign", "choose_k",
           "cluster", "entropy", "fit_projection", "mean_nn_cosine", "name_topics", "steer_weights",
           "weighted_sample"]
