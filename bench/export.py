"""Benchmark: export 100K instances to each format; time and peak memory.

Run from the repository root:

    .venv/bin/python bench/export.py                       # 100K instances, every format
    .venv/bin/python bench/export.py --instances 20000     # quick look
    .venv/bin/python bench/export.py --formats chat,parquet --keep /tmp/pool.duckdb

The pool file is filled quickly with the store's bulk inserts (`Pool.bulk_insert`: no model, no pipeline): a run,
rounds, seed tasks and accepted candidates whose instructions are real instructions from
shared/data/instructions_corpus.jsonl (else data/*.jsonl) with a numbered suffix, and for
each candidate two instances (the first with an input, the second without) whose texts are
seeded random words with realistic lengths (inputs ~15 words, outputs ~25).

Each format is exported by a fresh subprocess (`--worker`), so every peak is its own:
- *seconds*: `write_export` (the data file only; the card is timed on its own row);
- *peak RSS added*: the highest resident set size sampled (every 2 ms) during the export,
  minus the RSS just before it: what exporting added, DuckDB's buffers included;
- *tracemalloc peak*: a second run of the same export under tracemalloc: the most Python
  memory allocated at once (DuckDB's own memory is not Python memory). If the rows were
  held in Python this would be several times the data size; streaming keeps it near one
  batch (2,048 rows).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from selfinstruct.export import FORMAT_INFO, FORMATS, ExportFilters, ExportOptions, build_card, write_export
from selfinstruct.store import Pool

ROOT = Path(__file__).resolve().parents[1]
CORPORA = [ROOT.parent / "shared" / "data" / "instructions_corpus.jsonl", ROOT / "data" / "seed_tasks.jsonl",
           ROOT / "data" / "demo_corpus.jsonl"]
SEED_FILE = ROOT / "data" / "seed_tasks.jsonl"


def load_instructions() -> list[str]:
    for path in CORPORA:
        if path.exists():
            out = []
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    if isinstance(row, dict) and isinstance(row.get("instruction"), str):
                        out.append(" ".join(row["instruction"].split()))
            if out:
                return out
    raise SystemExit("No instruction corpus found.")


def fill_pool(path: Path, instances: int, seed: int = 0) -> dict:
    """A pool with `instances` kept generated instances (two per accepted candidate),
    written with DuckDB bulk inserts from Arrow tables."""
    import pyarrow as pa

    rng = random.Random(seed)
    corpus = load_instructions()
    vocabulary = sorted({w.strip(".,;:?!\"'()").lower() for text in corpus for w in text.split()} - {""})
    tasks = instances // 2
    rounds = 10
    started = time.perf_counter()
    with Pool.open(path) as pool:
        from selfinstruct.seeds import import_seeds

        import_seeds(pool, SEED_FILE, valid_only=True, origin="bench")
        run_id = pool.runs.create({"model": "bench-model", "backend": "synthetic", "mode": "chat",
                                  "rouge_threshold": 0.7, "seed": seed})
        round_ids = [pool.runs.create_round(run_id, n + 1, "done") for n in range(rounds)]
        first_candidate = pool.bulk.next_id("candidates")
        ids = list(range(first_candidate, first_candidate + tasks))

        def words(mean: int) -> str:
            n = max(1, int(rng.expovariate(1 / mean)))
            return " ".join(rng.choices(vocabulary, k=n))

        pool.bulk.bulk_insert("candidates", pa.table({
            "id": ids,
            "round_id": [round_ids[i * rounds // tasks] for i in range(tasks)],
            "position": [i % 50 for i in range(tasks)],
            "instruction": [f"{rng.choice(corpus)} (variant {i})" for i in range(tasks)],
            "status": ["accepted"] * tasks,
            "max_rouge": [round(rng.uniform(0.1, 0.7), 3) for _ in range(tasks)],
            "is_classification": [rng.random() < 0.12 for _ in range(tasks)],
        }), constants={"run_id": run_id})
        pool.bulk.bulk_insert("instances", pa.table({
            "candidate_id": [c for c in ids for _ in range(2)],
            "position": [p for _ in ids for p in range(2)],
            "input": [words(15) if p == 0 else "" for _ in ids for p in range(2)],
            "output": [words(25) for _ in range(tasks * 2)],
        }))
        pool.bulk.checkpoint()
    with Pool.open(path, read_only=True) as pool:
        counts = pool.explore.export_counts(ExportFilters())
    return {"seconds": time.perf_counter() - started, **counts}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """The highest RSS seen while the block runs (sampled every 2 ms from /proc/self/statm)."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        with open("/proc/self/statm") as fh:
            while not self._stop.is_set():
                fh.seek(0)
                self.peak = max(self.peak, int(fh.read().split()[1]) * self._page)
                self._stop.wait(0.002)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def worker(args) -> None:
    """One export in this process; prints one JSON line."""
    out = Path(args.out)
    with Pool.open(args.db, read_only=True) as pool:
        filters = ExportFilters()
        pool.explore.export_counts(filters)                                # warm the catalogue
        if args.tracemalloc:
            tracemalloc.start()
        before = rss_mb()
        with RssSampler() as sampler:
            started = time.perf_counter()
            if args.worker in ("card", "card-again"):
                card = build_card(pool, "chat", filters, ExportOptions())
                if args.worker == "card-again":   # the same card once more: the Export page's download and write
                    started = time.perf_counter()
                    card = build_card(pool, "chat", filters, ExportOptions())
                out.write_text(card.markdown)
                records, size = card.stats["records"], out.stat().st_size
            else:
                result = write_export(pool, args.worker, out, filters, ExportOptions())
                records, size = result.records, result.bytes
            seconds = time.perf_counter() - started
        peak_rss = sampler.peak
        traced = tracemalloc.get_traced_memory()[1] / 1e6 if args.tracemalloc else None
    print(json.dumps({"format": args.worker, "seconds": seconds, "records": records, "bytes": size,
                      "rss_before_mb": before, "peak_rss_mb": peak_rss, "tracemalloc_peak_mb": traced}))


def run_worker(db: Path, fmt: str, out: Path, traced: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", fmt, "--db", str(db), "--out", str(out)]
    if traced:
        cmd.append("--tracemalloc")
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--formats", default=",".join(FORMATS) + ",card,card-again")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the pool at this path and keep it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        db = args.keep or Path(tmp) / "pool.duckdb"
        if db.exists():
            with Pool.open(db, read_only=True) as pool:
                filled = {"seconds": 0.0, **pool.explore.export_counts(ExportFilters())}
            print(f"Reusing {db}.")
        else:
            filled = fill_pool(db, args.instances, args.seed)
        print(f"Pool: {filled['tasks']:,} tasks ({filled['seed_tasks']:,} seed), {filled['instances']:,} "
              f"instances, filled in {filled['seconds']:.1f} s; {db.stat().st_size / 1e6:.0f} MB on disk.")
        print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
              f"Python {platform.python_version()}.")
        print()
        print("| format | records | file | seconds | records/s | peak RSS added | tracemalloc peak |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for fmt in args.formats.split(","):
            ext = FORMAT_INFO[fmt].extension if fmt in FORMAT_INFO else ".md"
            out = Path(tmp) / f"out{ext}"
            plain = run_worker(db, fmt, out, traced=False)
            traced = run_worker(db, fmt, out, traced=True)
            label = {"card": "card (chat, with charts)", "card-again": "the same card built again (charts rendered once)"
                     }.get(fmt) or FORMAT_INFO[fmt].label
            print(f"| {label} | {plain['records']:,} | {plain['bytes'] / 1e6:.1f} MB | {plain['seconds']:.2f} | "
                  f"{plain['records'] / plain['seconds']:,.0f} | "
                  f"{plain['peak_rss_mb'] - plain['rss_before_mb']:.0f} MB | "
                  f"{traced['tracemalloc_peak_mb']:.1f} MB |", flush=True)
            out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
