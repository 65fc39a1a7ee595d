"""Benchmark: how much a model judge narrows a pool-wide rate's interval (prediction-powered
inference, `selfinstruct.calibration.ppi_mean`) against people's labels alone.

Run from the repository root:

    .venv/bin/python bench/calibration.py                      # 200 labels, 10K judged, 200 sims
    .venv/bin/python bench/calibration.py --sims 500 --rate 0.58

Simulation: each item is truly "yes" with probability `--rate`. The judge answers each item
correctly with probability `accuracy`, whatever the truth (symmetric errors; its own rate is
then biased towards 50%). People label `--human` items (their majority is the truth); the judge
also answers `--judged` other items. For each accuracy, `--sims` seeded pools; the table shows
the median width of each 95% interval (PPI, PPI++, human-only Wilson), their ratio, and the share
of pools whose interval covers the true rate.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from selfinstruct.calibration import ppi_mean

ACCURACIES = (0.60, 0.65, 0.70, 0.72, 0.74, 0.76, 0.77, 0.78, 0.80, 0.85, 0.90, 0.95, 0.99)


def simulate(accuracy: float, *, rate: float, human: int, judged: int, sims: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    truth = rng.random((sims, human)) < rate
    wrong = rng.random((sims, human)) >= accuracy
    judge_small = truth ^ wrong
    judge_rate = rate * accuracy + (1 - rate) * (1 - accuracy)
    judge_big = rng.random((sims, judged)) < judge_rate
    widths = {"ppi": [], "ppi++": [], "human": []}
    covered = {"ppi": 0, "ppi++": 0, "human": 0}
    for s in range(sims):
        for method in ("ppi", "ppi++"):
            r = ppi_mean(judge_big[s], judge_small[s], truth[s], method=method)
            widths[method].append(r.width)
            covered[method] += r.low <= rate <= r.high
        widths["human"].append(r.human_width)
        covered["human"] += r.human_low <= rate <= r.human_high
    return {"accuracy": accuracy, **{f"width_{k}": float(np.median(v)) for k, v in widths.items()},
            **{f"cover_{k}": covered[k] / sims for k in covered}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.6, help="true share of yes (default 0.6)")
    parser.add_argument("--human", type=int, default=200, help="items people labeled (default 200)")
    parser.add_argument("--judged", type=int, default=10_000, help="other items the judge answered (default 10,000)")
    parser.add_argument("--sims", type=int, default=200, help="seeded pools per accuracy (default 200)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--accuracies", default=",".join(f"{a:g}" for a in ACCURACIES))
    args = parser.parse_args()
    accuracies = [float(a) for a in args.accuracies.split(",")]
    print(f"true rate {args.rate}, {args.human} human labels, {args.judged:,} judged items, {args.sims} "
          f"simulations per accuracy, seed {args.seed}; Python {platform.python_version()}, numpy {np.__version__}")
    print()
    print("| judge accuracy | PPI width | PPI++ width | human-only width | PPI / human | PPI++ / human "
          "| PPI coverage | PPI++ coverage | human-only coverage |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    start = time.perf_counter()
    narrower = {}
    for i, accuracy in enumerate(accuracies):
        r = simulate(accuracy, rate=args.rate, human=args.human, judged=args.judged, sims=args.sims,
                     seed=args.seed + i)
        print(f"| {accuracy:.2f} | {r['width_ppi']:.3f} | {r['width_ppi++']:.3f} | {r['width_human']:.3f} "
              f"| {r['width_ppi'] / r['width_human']:.2f} | {r['width_ppi++'] / r['width_human']:.2f} "
              f"| {r['cover_ppi']:.1%} | {r['cover_ppi++']:.1%} | {r['cover_human']:.1%} |", flush=True)
        narrower[accuracy] = {m: r[f"width_{m}"] < r["width_human"] for m in ("ppi", "ppi++")}
    print()
    for method in ("ppi", "ppi++"):
        beyond = [a for a in accuracies if all(narrower[b][method] for b in accuracies if b >= a)]
        where = f"from accuracy {min(beyond):.2f} on" if beyond else "at none of the accuracies tested"
        print(f"{method}: median width below human-only {where}")
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
