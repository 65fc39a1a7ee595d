"""Benchmark: NoveltyIndex against rouge-score as the Self-Instruct scripts use it.

Run from the repository root:

    .venv/bin/python bench/novelty.py                     # 1K, 10K, 50K, 200K pools
    .venv/bin/python bench/novelty.py --sizes 1000,10000 --queries 200   # quick

Pools are synthetic but built from real instructions (shared/data/instructions_corpus.jsonl,
else the project's data/ files): a seeded generator splices the start of one instruction
onto the end of another, swaps, drops, inserts and replaces words, and makes near-copies,
so lengths, vocabulary and near-duplicates look like a real pool.  Candidates are made
the same way from another seed, a fifth of them as light edits of pooled items (the kind
the novelty filter rejects).

rouge-score is timed on a sample of (pool item, candidate) pairs of each pool and the
per-pair time is multiplied by the pool size: that is the per-candidate cost of
scoring a candidate against the whole pool the way the reference does.  The output says
so ("extrapolated").  Decisions and best scores are checked against a real full scan
with rouge-score for a sample of candidates.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import time
import tracemalloc
from pathlib import Path

from rouge_score import rouge_scorer
from rouge_score.rouge_scorer import _score_lcs  # rouge-score's pre-tokenized entry point

from selfinstruct.novelty import NoveltyIndex, tokenize

ROOT = Path(__file__).resolve().parents[1]

# CPU time of this (single-threaded) process: equal to wall time on an idle machine, and not
# inflated when other jobs share the cores.  --wall switches to wall-clock time.
clock = time.process_time

CORPORA = [
    ROOT.parent / "shared" / "data" / "instructions_corpus.jsonl",
    ROOT / "data" / "seed_tasks.jsonl",
    ROOT / "data" / "demo_corpus.jsonl",
]


def load_instructions() -> list[str]:
    for path in CORPORA:
        if not path.exists():
            continue
        out = []
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                row = json.loads(line)
                text = row.get("instruction") if isinstance(row, dict) else None
                if isinstance(text, str) and text.strip():
                    out.append(text.strip())
        if out:
            return out
    raise SystemExit("no instruction corpus found (looked in: %s)" % ", ".join(map(str, CORPORA)))


class Generator:
    """Seeded recombination of real instructions."""

    def __init__(self, base: list[str], seed: int):
        self.rng = random.Random(seed)
        self.base = [t.split() for t in base]
        self.base = [w for w in self.base if len(w) >= 2]
        self.words = [w for ws in self.base for w in ws]  # word frequencies as in the corpus

    def _edit(self, words: list[str], n_edits: int) -> list[str]:
        rng = self.rng
        words = list(words)
        for _ in range(n_edits):
            op = rng.random()
            if op < 0.3 and len(words) > 2:
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            elif op < 0.55 and len(words) > 3:
                del words[rng.randrange(len(words))]
            elif op < 0.8:
                words[rng.randrange(len(words))] = rng.choice(self.words)
            else:
                words.insert(rng.randrange(len(words) + 1), rng.choice(self.words))
        return words

    def one(self) -> str:
        rng = self.rng
        r = rng.random()
        a = rng.choice(self.base)
        if r < 0.35:      # splice: start of one, end of another
            b = rng.choice(self.base)
            words = a[: rng.randint(1, len(a) - 1)] + b[rng.randint(1, len(b) - 1):]
        elif r < 0.65:    # a few word-level edits
            words = self._edit(a, rng.randint(1, 3))
        elif r < 0.9:     # heavy rewording: a third to a half of the words replaced
            words = self._edit(a, max(1, int(len(a) * rng.uniform(0.33, 0.5))))
        else:             # near-copy: same words, other casing / punctuation
            words = list(a)
            if rng.random() < 0.5:
                words[0] = words[0].lower()
            if words[-1][-1:] in ".?!":
                words[-1] = words[-1][:-1]
        return " ".join(words)

    def near(self, text: str) -> str:
        return " ".join(self._edit(text.split(), self.rng.randint(1, 2)))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        t0 = clock()
        fn(item)
        out.append(clock() - t0)
    return out


def rouge_pair_time(pool: list[str], queries: list[str], n_pairs: int, pretokenized: bool,
                    seed: int) -> float:
    """Seconds per (pool item, candidate) pair, on a random sample of pairs."""
    rng = random.Random(seed)
    pairs = [(rng.choice(pool), rng.choice(queries)) for _ in range(n_pairs)]
    if pretokenized:
        pairs = [(tokenize(p), tokenize(q)) for p, q in pairs]
        t0 = clock()
        for p, q in pairs:
            _score_lcs(p, q)
        return (clock() - t0) / n_pairs
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    t0 = clock()
    for p, q in pairs:
        scorer.score(p, q)
    return (clock() - t0) / n_pairs


def check_against_rouge(index: NoveltyIndex, pool_tokens: list[list[str]], queries: list[str],
                        threshold: float) -> tuple[int, int]:
    """Full rouge-score scans for `queries`: (agreeing, checked)."""
    agree = 0
    for q in queries:
        qt = tokenize(q)
        scores = [_score_lcs(p, qt).fmeasure for p in pool_tokens]
        best = max(scores) if scores else 0.0
        top = sorted(((s, i) for i, s in enumerate(scores) if s > 0), key=lambda x: (-x[0], x[1]))[:10]
        got_best, _ = index.max_similarity(q)
        got_top = index.most_similar(q, 10)
        ok = (got_best == best
              and index.is_novel(q, threshold) == (best <= threshold)
              and [s for _, s in got_top] == [s for s, _ in top])
        agree += ok
    return agree, len(queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,50000,200000",
                    help="comma-separated pool sizes (default: %(default)s)")
    ap.add_argument("--queries", type=int, default=1000, help="candidates per pool (default: %(default)s)")
    ap.add_argument("--pairs", type=int, default=20000,
                    help="rouge-score pairs timed per pool (default: %(default)s)")
    ap.add_argument("--check", type=int, default=None,
                    help="candidates checked by a full rouge-score scan per pool "
                         "(default: about 30 s of scanning per pool)")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wall", action="store_true",
                    help="time with the wall clock instead of this process's CPU time")
    args = ap.parse_args()
    global clock
    if args.wall:
        clock = time.perf_counter
    sizes = [int(s.replace("_", "").replace("k", "000").replace("K", "000")) for s in args.sizes.split(",")]

    base = load_instructions()
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"corpus {len(base)} real instructions; {args.queries} candidates per pool; "
          f"threshold {args.threshold}; times are "
          + ("wall-clock" if args.wall else "process CPU time (time.process_time)"))
    print("rouge-score cost per candidate = (time per pair on a sample of "
          f"{args.pairs} pairs) x pool size  [extrapolated]\n")
    rows = []
    for size in sizes:
        gen = Generator(base, seed=args.seed * 1000 + size)
        pool = [gen.one() for _ in range(size)]
        qgen = Generator(base, seed=args.seed * 1000 + size + 1)
        queries = [qgen.near(qgen.rng.choice(pool)) if i % 5 == 0 else qgen.one()
                   for i in range(args.queries)]

        # Build time (no tracing), then memory (traced build of a second index).
        gc.collect()
        t0 = clock()
        index = NoveltyIndex()
        index.add_many(pool)
        build_s = clock() - t0
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        traced = NoveltyIndex()
        traced.add_many(pool)
        mem_per_item = (tracemalloc.get_traced_memory()[0] - before) / size
        tracemalloc.stop()
        del traced
        gc.collect()

        gc.collect()
        lat_max = timed(index.max_similarity, queries)
        lat_top = timed(lambda q: index.most_similar(q, 10), queries)
        lat_dec = timed(lambda q: index.is_novel(q, args.threshold), queries)
        rejected = sum(not index.is_novel(q, args.threshold) for q in queries)

        # The pipeline's loop: decide, and add the candidate when it is novel.
        loop = NoveltyIndex()
        loop.add_many(pool)
        t0 = clock()
        for q in queries:
            if loop.is_novel(q, args.threshold):
                loop.add(q)
        loop_ms = (clock() - t0) / len(queries) * 1e3
        del loop

        pair_raw = rouge_pair_time(pool, queries, max(1000, args.pairs // 10), False, size)
        pair_tok = rouge_pair_time(pool, queries, args.pairs, True, size)
        per_cand_raw = pair_raw * size
        per_cand_tok = pair_tok * size

        n_check = args.check
        if n_check is None:
            n_check = max(2, min(len(queries), int(30 / max(per_cand_tok, 1e-9))))
        pool_tokens = [tokenize(p) for p in pool]
        agree, checked = check_against_rouge(index, pool_tokens, queries[:n_check], args.threshold)

        med_max = statistics.median(lat_max)
        row = dict(
            size=size, build_s=build_s, mem=mem_per_item,
            med_max=med_max * 1e3, p95_max=pct(lat_max, 0.95) * 1e3,
            med_top=statistics.median(lat_top) * 1e3, p95_top=pct(lat_top, 0.95) * 1e3,
            med_dec=statistics.median(lat_dec) * 1e3, p95_dec=pct(lat_dec, 0.95) * 1e3,
            loop_ms=loop_ms, rouge_raw=per_cand_raw, rouge_tok=per_cand_tok,
            speed_tok=per_cand_tok / med_max, speed_raw=per_cand_raw / med_max,
            speed_dec=per_cand_tok / statistics.median(lat_dec),
            agree=f"{agree}/{checked}", rejected=rejected,
        )
        rows.append(row)
        print(f"pool {size:>7,}: build {build_s:.2f} s, {mem_per_item:.0f} B/item; "
              f"max_similarity median {row['med_max']:.3f} ms (p95 {row['p95_max']:.3f}); "
              f"most_similar(10) median {row['med_top']:.3f} ms (p95 {row['p95_top']:.3f}); "
              f"is_novel median {row['med_dec']:.3f} ms; "
              f"rouge-score {per_cand_raw:.2f} s (score) / {per_cand_tok:.2f} s (_score_lcs) "
              f"per candidate [extrapolated]; x{row['speed_tok']:,.0f}; "
              f"{rejected}/{len(queries)} rejected; agree {row['agree']}", flush=True)

    print()
    print("| pool | build | memory / item | max_similarity median (p95) | most_similar k=10 median (p95) "
          "| is_novel median (p95) | is_novel + add | rouge-score `score` / candidate* "
          "| rouge-score `_score_lcs` / candidate* | speed-up vs `_score_lcs` (max_similarity / is_novel) "
          "| agree with full scan |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']:,} | {r['build_s']:.2f} s | {r['mem']:.0f} B "
              f"| {r['med_max']:.3f} ms ({r['p95_max']:.3f}) | {r['med_top']:.3f} ms ({r['p95_top']:.3f}) "
              f"| {r['med_dec']:.3f} ms ({r['p95_dec']:.3f}) | {r['loop_ms']:.3f} ms "
              f"| {r['rouge_raw']:.3f} s | {r['rouge_tok']:.3f} s "
              f"| {r['speed_tok']:,.0f}x / {r['speed_dec']:,.0f}x | {r['agree']} |")
    print("\n* extrapolated: time per pair on a random sample of pairs x pool size.")


if __name__ == "__main__":
    main()
