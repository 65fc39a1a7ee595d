"""Benchmark: import a 100,000-row seed file in each format into a fresh pool.

Run from the repository root:

    .venv/bin/python bench/seed_import.py                     # 100,000 rows, 3 formats, median of 3
    .venv/bin/python bench/seed_import.py --rows 20000 --repeat 1
    .venv/bin/python bench/seed_import.py --formats alpaca --keep /tmp/seedbench

The files are generated here, from a seeded random generator and a small word list written
for this script (no dataset is copied): one row per unique instruction, with lengths like
Alpaca's (instructions of 6 to 20 words, an input on about 40% of the rows, outputs of 8 to
61 words), about 42 MB as Alpaca JSON (`json.dump(..., indent=4)`, as alpaca_data.json is
laid out). The same rows are written as Self-Instruct JSONL (one task and one instance per
line) and as CSV (instruction,input,output,is_classification).

Each import is `selfinstruct.seeds.import_seeds(pool, path)` into a new pool file (its
migrations run before the clock starts), timed with `time.perf_counter` around the call
(reading, validating, the duplicate and pool checks, the insert and the audit row, the
commit). The table gives the median of the repeats, and rows per second from it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from selfinstruct.seeds import import_seeds
from selfinstruct.store import Pool

VERBS = ("Write", "Explain", "Describe", "Summarize", "List", "Compare", "Classify", "Rewrite", "Translate",
         "Suggest", "Identify", "Generate", "Outline", "Evaluate", "Create", "Name", "Find", "Edit",
         "Convert", "Predict", "Design", "Analyze", "Give", "Recommend")
WORDS = ("apple", "river", "market", "teacher", "garden", "planet", "engine", "letter", "story", "budget",
         "window", "city", "doctor", "recipe", "forest", "message", "bridge", "season", "student", "museum",
         "program", "ocean", "village", "concert", "policy", "report", "kitchen", "camera", "journey",
         "mountain", "library", "network", "picture", "friend", "project", "company", "weather", "song",
         "history", "machine", "language", "island", "holiday", "battery", "customer", "painting",
         "the", "a", "of", "and", "to", "in", "for", "with", "on", "that", "is", "are", "was", "it", "as",
         "by", "from", "about", "this", "their", "more", "most", "very", "quickly", "carefully", "new",
         "old", "small", "large", "bright", "quiet", "simple", "useful", "strange", "modern", "ancient",
         "green", "cold", "warm", "early", "late", "happy", "serious", "careful", "common", "rare",
         "build", "read", "carry", "open", "change", "follow", "help", "measure", "plan", "choose",
         "improve", "explain", "share", "protect", "visit", "learn", "cook", "travel", "save", "grow")
FORMAT_FILES = {"alpaca": "seeds.json", "selfinstruct": "seeds.jsonl", "csv": "seeds.csv"}


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def _sentences(rng: random.Random, low: int, high: int) -> str:
    n = rng.randint(low, high)
    out, used = [], 0
    while used < n:
        k = min(n - used, rng.randint(6, 16))
        sentence = " ".join(rng.choices(WORDS, k=k))
        out.append(sentence[0].upper() + sentence[1:] + ".")
        used += k
    return " ".join(out)


def make_rows(n: int, seed: int = 7) -> list[dict]:
    """n Alpaca-like rows with unique instructions."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        instruction = f"{rng.choice(VERBS)} {_words(rng, 5, 19)}."
        if instruction in seen:
            continue
        seen.add(instruction)
        inp = _words(rng, 3, 30) if rng.random() < 0.4 else ""
        rows.append({"instruction": instruction, "input": inp, "output": _sentences(rng, 8, 61)})
    return rows


def write_files(rows: list[dict], folder: Path, formats) -> dict[str, Path]:
    paths = {}
    for fmt in formats:
        path = paths[fmt] = folder / FORMAT_FILES[fmt]
        with path.open("w", encoding="utf-8", newline="") as f:
            if fmt == "alpaca":
                json.dump(rows, f, indent=4, ensure_ascii=False)
            elif fmt == "selfinstruct":
                for n, row in enumerate(rows):
                    f.write(json.dumps({"id": f"seed_task_{n}", "name": f"task_{n}",
                                        "instruction": row["instruction"],
                                        "instances": [{"input": row["input"], "output": row["output"]}],
                                        "is_classification": False}, ensure_ascii=False) + "\n")
            else:
                writer = csv.writer(f)
                writer.writerow(["instruction", "input", "output", "is_classification"])
                for row in rows:
                    writer.writerow([row["instruction"], row["input"], row["output"], "false"])
    return paths


def time_import(path: Path, folder: Path, run: int) -> tuple[float, int, int]:
    db = folder / f"{path.stem}-{path.suffix[1:]}-{run}.duckdb"
    with Pool.open(db) as pool:
        start = time.perf_counter()
        result = import_seeds(pool, path)
        seconds = time.perf_counter() - start
        tasks, audits = pool.counts().seeds, len(pool.audit.entries(action="import_seeds"))
    db.unlink(missing_ok=True)
    if audits != 1 or tasks != result.imported:
        raise SystemExit(f"{path.name}: {tasks} tasks and {audits} audit rows after the import")
    return seconds, result.imported, result.instances


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="alpaca,selfinstruct,csv")
    parser.add_argument("--keep", type=Path, help="write the files and pools here and keep them")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="seedbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = write_files(make_rows(args.rows, args.seed), folder, formats)
    print(f"Generated {args.rows:,} rows in {time.perf_counter() - t0:.1f} s; Python {platform.python_version()}, "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print(f"| format | file | MB | tasks | instances | median s (of {args.repeat}) | runs s | rows/s |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for fmt in formats:
        path = paths[fmt]
        runs = [time_import(path, folder, run) for run in range(args.repeat)]
        times = [r[0] for r in runs]
        median = statistics.median(times)
        print(f"| {fmt} | {path.name} | {path.stat().st_size / 1e6:.1f} | {runs[0][1]:,} | {runs[0][2]:,} "
              f"| {median:.2f} | {', '.join(f'{t:.2f}' for t in times)} | {args.rows / median:,.0f} |", flush=True)
    if not args.keep:
        for path in paths.values():
            path.unlink(missing_ok=True)
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
