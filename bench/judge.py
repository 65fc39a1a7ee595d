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

`--task collect` times an evaluation's collection instead (two models, C/2 slots each, items / 2
instructions: `EvalRunner.run()`), `--task prerate` the judge's A-D pre-ratings of items answers
(collected first from an offline server without latency, not timed). All three go through
runner.RequestRunner now; an older checkout runs this file unchanged (`call` finds its Pool
methods), so the same figures can be taken side by side:

    git worktree add --detach /tmp/old <commit>; cp bench/judge.py /tmp/old/bench/judge_sbs.py
    cd /tmp/old/bench && PYTHONPATH=/tmp/old <this checkout>/.venv/bin/python judge_sbs.py --task collect
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
TASKS = ("judge", "collect", "prerate")


def fill_pool(pool: Pool, items: int) -> None:
    """`items` accepted tasks with one kept instance each, in one run and one round."""
    run_id = call(pool, "runs.create", "create_run", {"model": "bench"})
    round_id = call(pool, "runs.create_round", "create_round", run_id, 1, "done")
    first = call(pool, "bulk.next_id", "next_id", "candidates")
    ids = list(range(first, first + items))
    call(pool, "bulk.bulk_insert", "bulk_insert", "candidates", pa.table({
        "id": ids, "round_id": [round_id] * items, "position": [i % 50 for i in range(items)],
        "instruction": [f"Write a short note about topic number {i} for a colleague." for i in range(items)],
        "status": ["accepted"] * items}), constants={"run_id": run_id})
    call(pool, "bulk.bulk_insert", "bulk_insert", "instances", pa.table({
        "candidate_id": ids, "position": [0] * items, "input": ["" if i % 3 else f"topic {i}" for i in range(items)],
        "output": [f"Here is a note about topic {i}: it matters because it is number {i}." for i in range(items)]}))
    call(pool, "bulk.checkpoint", "checkpoint")


def call(pool: Pool, new: str, old: str, *args, **kwargs):
    """`pool.<area>.<method>(...)`, or the Pool method of the same use on a checkout from before
    the store's areas (the side-by-side run of an older tree: PYTHONPATH=<worktree>)."""
    area, name = new.split(".")
    method = getattr(getattr(pool, area, None), name, None)
    return (method or getattr(pool, old))(*args, **kwargs)


def fill_evaluation(pool: Pool, items: int, base_url: str, concurrency: int) -> int:
    """An evaluation of two models (both `MODEL` at `base_url`, C/2 slots each) on items / 2
    instructions: `items` answers to collect."""
    from selfinstruct.evaluate import EvalModel, create_evaluation

    models = [EvalModel(backend="openai-compatible", base_url=base_url, model=MODEL, label=label,
                        concurrency=max(1, concurrency // 2), timeout_s=120.0) for label in ("a", "b")]
    instructions = [{"instruction": f"Write a short note about topic number {i} for a colleague.",
                     "input": "" if i % 3 else f"topic {i}", "source": f"bench:{i}"} for i in range(max(1, items // 2))]
    return create_evaluation(pool, models, instructions)


def prepare(pool: Pool, task: str, items: int, base_url: str, concurrency: int):
    """The runner to time, and how to read its requests' latencies afterwards."""
    from selfinstruct.evaluate import COLLECT, PRERATE, EvalRunner, plan_prerating
    from selfinstruct.offline import OfflineServer

    judge = JudgeConfig(backend="openai-compatible", base_url=base_url, model=MODEL, structured="off",
                        concurrency=concurrency, timeout_s=120.0)
    if task == "judge":
        fill_pool(pool, items)
        judge_run_id = start_judge(pool, judge, "pool")
        return JudgeRunner(pool, judge_run_id), lambda: [
            v["latency_s"] for v in call(pool, "judge.verdicts", "judge_verdicts", judge_run_id)
            if v["response"] is not None]
    if task == COLLECT:
        evaluation_id = fill_evaluation(pool, items, base_url, concurrency)
        return EvalRunner(pool, evaluation_id), lambda: [
            a["latency_s"] for a in call(pool, "evaluations.answers", "eval_answers", evaluation_id)
            if a["response"] is not None]
    # pre-rating: the answers come from an offline server without latency first (not timed)
    with OfflineServer(model_names=(MODEL,)) as fast:
        evaluation_id = fill_evaluation(pool, items, fast.base_url, concurrency)
        collected = EvalRunner(pool, evaluation_id).run()
        assert collected.status == "finished", collected
    plan_prerating(pool, evaluation_id, judge)
    return EvalRunner(pool, evaluation_id, task=PRERATE), lambda: [
        p["latency_s"] for p in call(pool, "evaluations.prerates", "eval_prerates", evaluation_id, MODEL)
        if p["response"] is not None]


def one_run(items: int, median_s: float, sigma: float, seed: int, concurrency: int, task: str = "judge") -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp, Pool.open(Path(tmp) / "pool.duckdb") as pool:
        with lognormal_server(median_s, sigma, seed) as base_url:
            runner, read_latencies = prepare(pool, task, items, base_url, concurrency)
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
        latencies = read_latencies()
    # The first samples come before the first request is sent (run start, structured decision).
    busy = [s / concurrency for s in samples]
    median_latency, mean_latency = statistics.median(latencies), statistics.fmean(latencies)
    return {
        "task": task, "seed": seed, "status": result.status, "done": result.done, "total": result.total,
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
    parser.add_argument("--task", choices=TASKS, default="judge",
                        help="judge: a pool judge run; collect: an evaluation's answers from two models (C/2 "
                             "slots each); prerate: the judge's A-D pre-ratings of an evaluation's answers")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    runs = []
    for rep in range(args.repeats):
        row = one_run(args.items, args.median, args.sigma, rep, args.concurrency, args.task)
        runs.append(row)
        print(f"run {rep}: {row['status']} {row['done']}/{row['total']} in {row['wall_s']:.1f} s, "
              f"{row['items_per_s']:.2f} items/s (ideal C/median {row['ideal_median_items_per_s']:.2f}, "
              f"C/mean {row['ideal_mean_items_per_s']:.2f}); slots busy median {row['slot_util_median']:.3f}, "
              f"mean {row['slot_util_mean']:.3f}; latency utilisation {row['latency_utilization']:.3f}; "
              f"tail below C/2 {row['tail_s']:.1f} s", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in KEYS}
    print(f"\n{args.task}: median of {len(runs)}: C = {args.concurrency}, {args.items:,} items, lognormal median {args.median} s "
          f"sigma {args.sigma} (expected mean {args.median * math.exp(args.sigma ** 2 / 2):.2f} s)")
    for k in KEYS:
        print(f"  {k:<26} {med[k]:.3f}")
    print(f"  items/s over ideal C/median {med['items_per_s'] / med['ideal_median_items_per_s']:.3f}, "
          f"over ideal C/mean {med['items_per_s'] / med['ideal_mean_items_per_s']:.3f}")
    result = {"config": {**vars(args), "json": None, "python": platform.python_version(),
                         "machine": platform.machine()}, "runs": runs, "median": med}
    out = args.json or RESULTS_DIR / f"{'judge' if args.task == 'judge' else 'eval-' + args.task}-" \
                                     f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
