"""Benchmark: the embedding index, the semantic gate and duplicate groups (issue 24).

Run from the repository root:

    .venv/bin/python bench/semantic.py                 # 50K, about 2 minutes
    .venv/bin/python bench/semantic.py --size 10000    # quick look

Measured side by side in one run, medians of --repeats:
- embed: the bundled WordLlama model on N instructions (embed.bundled().embed);
- store: pool.embeddings.add of N vectors, and vectors_for of all N back;
- gate: one answer of 16 candidates scored against an N-item pool (semantic.AnswerGate: one
  matrix product), per candidate, beside the same 16 scored one at a time (a matrix-vector
  product each); and the whole `answer()` with its store lookups and the embedding of 16 new texts;
- dedup: semantic.group_by_rank over N vectors at the default threshold, block by block (peak
  memory of that call with tracemalloc);
- calibration: the default threshold chosen on the 'choose' half of tests/data/semantic_pairs.jsonl
  and its precision and recall on the held-out half; the corpus pairs the embedder flags.

Texts: the distinct instructions of shared/data/instructions_corpus.jsonl (19,499), then new ones
spliced from the start of one and the end of another up to N, seeded (falling back to the
project's seed file when shared/ is absent). The load average is printed: on a busy machine
every figure is slower, so compare the figures of one run with each other.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from selfinstruct import embed, model
from selfinstruct.semantic import SemanticIndex, group_by_rank
from selfinstruct.store import Pool

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "instructions_corpus.jsonl"
PAIRS = ROOT / "tests" / "data" / "semantic_pairs.jsonl"


def corpus_texts() -> list[str]:
    path = CORPUS if CORPUS.exists() else ROOT / "data" / "seed_tasks.jsonl"
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            seen.setdefault(json.loads(line)["instruction"], None)
    return list(seen)


def texts_of(n: int, seed: int = 0) -> list[str]:
    """The corpus, then (beyond its size) new instructions spliced from the start of one and the
    end of another, seeded, so the pool is not thick with exact copies."""
    import random

    base = corpus_texts()
    out = dict.fromkeys(base[:n])
    rng = random.Random(seed)
    while len(out) < n:
        a, b = rng.choice(base).split(), rng.choice(base).split()
        out.setdefault(" ".join(a[:max(1, len(a) // 2)] + b[len(b) // 2:]), None)
    return list(out)


CPU: dict[str, float] = {}


def timed(fn, repeats: int, name: str = "") -> tuple[float, object]:
    """Median wall time of `repeats` calls, and (in CPU[name]) the median CPU time of this
    process over them: on a shared machine the CPU time is what an idle one would take."""
    times, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    CPU[name] = statistics.median(cpu)
    return statistics.median(times), result


def calibration() -> dict:
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    e = embed.bundled()
    cos = (e.embed([r["a"] for r in rows]) * e.embed([r["b"] for r in rows])).sum(axis=1)

    def rates(t: float, half: str) -> tuple[int, int, int, int]:
        same = [c > t for c, r in zip(cos, rows) if r["half"] == half and r["label"] == "reworded"]
        diff = [c > t for c, r in zip(cos, rows) if r["half"] == half and r["label"] == "different"]
        return sum(same), len(same), sum(diff), len(diff)

    grid = [round(x, 2) for x in np.arange(0.5, 1.0, 0.01)]
    # The rule: the lowest threshold at which at most 1 in 10 related-but-different pairs of the
    # choosing half would be grouped (a wrong rejection loses a real task; a missed duplicate
    # only keeps one).
    chosen = min(t for t in grid if (lambda s, ns, d, nd: d / nd <= 0.1)(*rates(t, "choose")))
    out = {"chosen": chosen, "default": model.COSINE_THRESHOLD, "table": []}
    for t in (0.7, chosen, 0.8, 0.85, 0.9):
        s, ns, d, nd = rates(t, "held_out")
        out["table"].append({"threshold": t, "recall": s / ns, "grouped_different": d / nd,
                             "precision": s / (s + d) if s + d else float("nan"), "counts": (s, ns, d, nd)})
    return out


def corpus_flags(threshold: float) -> dict:
    """Each distinct corpus instruction against every one before it (file order): how many have
    a cosine above `threshold` with an earlier one."""
    texts = corpus_texts()
    m = embed.bundled().embed(texts)
    best = np.full(len(texts), -1.0, dtype=np.float32)
    for start in range(0, len(texts), 2048):
        scores = m[start:start + 2048] @ m.T
        for k in range(scores.shape[0]):
            i = start + k
            if i:
                best[i] = scores[k, :i].max()
    return {"distinct": len(texts), "above_default": int((best > threshold).sum()),
            "above_0.9": int((best > 0.9).sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-calibration", action="store_true")
    args = ap.parse_args()
    n = args.size
    import os

    print(f"# bench/semantic.py  N={n:,}  {platform.processor() or platform.machine()}  "
          f"python {platform.python_version()}  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    e = embed.bundled()
    e.embed(["warm up"])
    texts = texts_of(n)
    t_embed, vectors = timed(lambda: e.embed(texts), args.repeats, "embed")
    print(f"embed {n:,} texts (bundled WordLlama, 256-d):  {t_embed:6.2f} s wall, {CPU['embed']:6.2f} s CPU")

    with tempfile.TemporaryDirectory() as tmp:
        pool = Pool.open(Path(tmp) / "bench.duckdb")
        start = time.perf_counter()
        pool.embeddings.add(e.name, e.dim, texts, vectors, kind=e.kind)
        t_add = time.perf_counter() - start
        t_read, back = timed(lambda: pool.embeddings.vectors_for(e.name, texts), args.repeats, "read")
        assert np.array_equal(back, vectors)
        print(f"store {n:,} vectors (one add):             {t_add:6.2f} s;  read all back: {t_read:.2f} s")

        index = SemanticIndex(pool, e, texts, model.COSINE_THRESHOLD)
        answer = [f"Write a new task number {i} about something else entirely." for i in range(16)]
        q = e.embed(answer)
        t_batch, _ = timed(lambda: index.matrix @ q.T, max(5, args.repeats * 5), "batch")
        t_single, _ = timed(lambda: [index.matrix @ q[i] for i in range(16)], max(5, args.repeats * 5), "single")
        print(f"gate at a {n:,} pool, 16 candidates:  batched {t_batch / 16 * 1000:5.2f} ms/candidate wall "
              f"({CPU['batch'] / 16 * 1000:5.2f} CPU);  one at a time {t_single / 16 * 1000:5.2f} ms/candidate wall "
              f"({CPU['single'] / 16 * 1000:5.2f} CPU)")

        def whole_answer(k=[0]):
            k[0] += 1
            gate = index.answer([f"{t} (answer {k[0]})" for t in answer])   # new texts: embedded and stored
            return [gate.nearest(i) for i in range(16)]
        t_whole, _ = timed(whole_answer, max(5, args.repeats * 5), "whole")
        print(f"  the whole answer (store lookups, embed 16, store 16, nearest of each): "
              f"{t_whole / 16 * 1000:5.2f} ms/candidate wall ({CPU['whole'] / 16 * 1000:5.2f} CPU)")
        pool.close()

    ranks = [(3, 1, i) for i in range(n)]
    tracemalloc.start()
    t_dedup, groups = timed(lambda: group_by_rank(vectors, ranks, model.COSINE_THRESHOLD), 1, "dedup")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grouped = sum(1 + len(g.members) for g in groups)
    print(f"dedup {n:,} at cosine > {model.COSINE_THRESHOLD}:  {t_dedup:6.2f} s wall, {CPU['dedup']:.2f} s CPU;  "
          f"{len(groups):,} groups holding "
          f"{grouped:,} items;  peak {peak / 1e6:,.0f} MB traced (an n x n float32 matrix would be "
          f"{n * n * 4 / 1e9:.1f} GB)")

    if not args.no_calibration:
        cal = calibration()
        print(f"calibration: chosen on the 'choose' half: {cal['chosen']} (model.COSINE_THRESHOLD = {cal['default']})")
        for row in cal["table"]:
            s, ns, d, nd = row["counts"]
            print(f"  held-out at {row['threshold']:.2f}: rewordings grouped {s}/{ns} ({row['recall']:.0%}), "
                  f"related-but-different grouped {d}/{nd} ({row['grouped_different']:.0%}), "
                  f"precision {row['precision']:.0%}")
        if CORPUS.exists():
            flags = corpus_flags(model.COSINE_THRESHOLD)
            print(f"corpus: {flags['above_default']:,} of {flags['distinct']:,} distinct instructions have cosine > "
                  f"{model.COSINE_THRESHOLD} with an earlier one ({flags['above_0.9']:,} above 0.9)")


if __name__ == "__main__":
    main()
