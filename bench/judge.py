"""Judge throughput through the judge runner's scheduler (not a test).

A fresh pool of N accepted generated tasks with one kept instance each (bulk-inserted), one
pool-scope judge run (`judge.start_judge` + `judge.JudgeRunner`, text layout, C = 32 slots)
against the offline server in a process of its own with the engine benchmark's latency model
(bench/throughput.py: lognormal per-request delay, median 1.5 s, sigma 0.8, latency seed = the
repeat's index). Reported per run and as medians over the repeats:

- items/s (answered items / wall time of `JudgeRunner.run()`), against the ideal C / median
  latency (what the brief asks for) and C / mean latency (the true ceiling for a lognormal: the
  mean is exp(sigma^2 / 2) above the median);
- slot utilisation over time: the runner's `in_flight` / C sampled every 50 ms (median and mean
  over the run), and sum(verdict latency) / (C x wall), the engine benchmark's measure;
- wall time.

    .venv/bin/python bench/judge.py                      # 2,000 items, 3 repeats, ~7 min
    .venv/bin/python bench/judge.py --items 300 --median 0.2 --repeats 1   # smoke, ~10 s
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa

from selfinstruct.judge import JudgeConfig, JudgeRunner, start_judge
from selfinstruct.store import Pool
from throughput import ENGINE_C, MODEL, RESULTS_DIR, lognormal_server  # bench/throughput.py

SAMPLE_EVERY_S = 0.05


def fill_pool(pool: Pool, items: int) -> None:
    """`items` accepted tasks with one kept instance each, in one run and one round."""
    run_id = pool.runs.create({"model": "bench"})
    round_id = pool.runs.create_round(run_id, 1, "done")
    first = pool.bulk.next_id("candidates")
    ids = list(range(first, first + items))
    pool.bulk.bulk_insert("candidates", pa.table({
        "id": ids, "round_id": [round_id] * items, "position": [i % 50 for i in range(items)],
        "instruction": [f"Write a short note about topic number {i} for a colleague." for i in range(items)],
        "status": ["accepted"] * items}), constants={"run_id": run_id})
    pool.bulk.bulk_insert("instances", pa.table({
        "candidate_id": ids, "position": [0] * items, "input": ["" if i % 3 else f"topic {i}" for i in range(items)],
        "output": [f"Here is a note about topic {i}: it matters because it is number {i}." for i in range(items)]}))
    pool.bulk.checkpoint()


def one_run(items: int, median_s: float, sigma: float, seed: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp, Pool.open(Path(tmp) / "pool.duckdb") as pool:
        fill_pool(pool, items)
        with lognormal_server(median_s, sigma, seed) as base_url:
            config = JudgeConfig(backend="openai-compatible", base_url=base_url, model=MODEL, structured="off",
                                 concurrency=concurrency, timeout_s=120.0)
            judge_run_id = start_judge(pool, config, "pool")
            runner = JudgeRunner(pool, judge_run_id)
            samples: list[int] = []
            outcome: list = []
            thread = threading.Thread(target=lambda: outcome.append(runner.run()))
            started = time.perf_counter()
            thread.start()
            while thread.is_alive():
                samples.append(runner.in_flight)
                time.sleep(SAMPLE_EVERY_S)
            wall = time.perf_counter() - started
        result = outcome[0]
        latencies = [v["latency_s"] for v in pool.judge.verdicts(judge_run_id) if v["response"] is not None]
    # The first samples come before the first request is sent (run start, structured decision).
    busy = [s / concurrency for s in samples]
    median_latency, mean_latency = statistics.median(latencies), statistics.fmean(latencies)
    return {
        "seed": seed, "status": result.status, "done": result.done, "total": result.total,
        "unparseable": result.unparseable, "wall_s": wall, "items_per_s": result.done / wall,
        "median_latency_s": median_latency, "mean_latency_s": mean_latency,
        "ideal_median_items_per_s": concurrency / median_latency, "ideal_mean_items_per_s": concurrency / mean_latency,
        "slot_util_median": statistics.median(busy), "slot_util_mean": statistics.fmean(busy),
        "latency_utilization": sum(latencies) / (concurrency * wall), "samples": len(samples),
        "tail_s": _tail(samples, concurrency, wall),
    }


def _tail(samples: list[int], concurrency: int, wall: float) -> float:
    """Seconds at the end of the run during which fewer than half the slots were busy."""
    k = len(samples)
    while k > 0 and samples[k - 1] < concurrency / 2:
        k -= 1
    return (len(samples) - k) * wall / max(len(samples), 1)


KEYS = ("wall_s", "items_per_s", "median_latency_s", "mean_latency_s", "ideal_median_items_per_s",
        "ideal_mean_items_per_s", "slot_util_median", "slot_util_mean", "latency_utilization", "tail_s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=ENGINE_C)
    parser.add_argument("--median", type=float, default=1.5, help="median per-request latency, seconds")
    parser.add_argument("--sigma", type=float, default=0.8, help="lognormal sigma of the latency")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    runs = []
    for rep in range(args.repeats):
        row = one_run(args.items, args.median, args.sigma, rep, args.concurrency)
        runs.append(row)
        print(f"run {rep}: {row['status']} {row['done']}/{row['total']} in {row['wall_s']:.1f} s, "
              f"{row['items_per_s']:.2f} items/s (ideal C/median {row['ideal_median_items_per_s']:.2f}, "
              f"C/mean {row['ideal_mean_items_per_s']:.2f}); slots busy median {row['slot_util_median']:.3f}, "
              f"mean {row['slot_util_mean']:.3f}; latency utilisation {row['latency_utilization']:.3f}; "
              f"tail below C/2 {row['tail_s']:.1f} s", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in KEYS}
    print(f"\nmedian of {len(runs)}: C = {args.concurrency}, {args.items:,} items, lognormal median {args.median} s "
          f"sigma {args.sigma} (expected mean {args.median * math.exp(args.sigma ** 2 / 2):.2f} s)")
    for k in KEYS:
        print(f"  {k:<26} {med[k]:.3f}")
    print(f"  items/s over ideal C/median {med['items_per_s'] / med['ideal_median_items_per_s']:.3f}, "
          f"over ideal C/mean {med['items_per_s'] / med['ideal_mean_items_per_s']:.3f}")
    result = {"config": {**vars(args), "json": None, "python": platform.python_version(),
                         "machine": platform.machine()}, "runs": runs, "median": med}
    out = args.json or RESULTS_DIR / f"judge-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
