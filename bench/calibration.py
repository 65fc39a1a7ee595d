"""Benchmark: where a pool-wide rate's 95% interval keeps its promise, and how much a model judge
narrows it against people's labels alone.

Run from the repository root:

    .venv/bin/python bench/calibration.py --grid               # the coverage grid (issue 23)
    .venv/bin/python bench/calibration.py                      # PPI by accuracy: 200 labels, 10K judged, 200 sims
    .venv/bin/python bench/calibration.py --sims 500 --rate 0.58

The grid: n labels in {30, 50, 100, 200} x true yes-rate in {0.02, 0.05, 0.58, 0.92, 0.98} x four
judges (GRID_JUDGES), N = 10,000 judged items. Per cell, `--grid-sims` seeded pools (a cell whose
coverage is within 0.02 of 0.95 is run again with 5,000) for the pages' interval
(`calibration.strata_interval`, by judge verdict, exact per cell), `--ppi-sims` for PPI++
(`ppi_mean`), and the human-only Wilson and Clopper-Pearson intervals; the target is coverage
>= 0.93 minus two Monte Carlo standard errors in every cell. Width: mean width over the
human-only Wilson interval's.

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

from selfinstruct.calibration import KAPPA_ADD, clopper_pearson, kappa_interval, ppi_mean, strata_interval
from selfinstruct.quality import wilson_interval

GRID_N = (30, 50, 100, 200)
GRID_RATES = (0.02, 0.05, 0.58, 0.92, 0.98)
# judge: (share of true "no" it calls "no", share of true "yes" it calls "no")
GRID_JUDGES = {"accuracy 0.90": (0.90, 0.10), "accuracy 0.99": (0.99, 0.01),
               "lenient": (0.50, 0.01), "harsh": (0.95, 0.15)}
TARGET = 0.93

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


def draw_pools(rng, sims: int, n: int, judged: int, rate: float, catches_no: float, false_no: float):
    """`sims` pools as counts: labeled items per (truth, verdict) cell, and the judge's "yes" among
    `judged` unlabeled items (all a binary judge's and people's answers say about a rate)."""
    probs = [rate * (1 - false_no), rate * false_no, (1 - rate) * (1 - catches_no), (1 - rate) * catches_no]
    cells = rng.multinomial(n, probs, size=sims)       # yes-yes, yes-no, no-yes, no-no (truth-verdict)
    big_yes = rng.binomial(judged, probs[0] + probs[2], size=sims)
    return cells, big_yes


def by_verdict(cells, big_yes, judged: int):
    """The pages' interval (`strata_interval`) on drawn pools: cells judge yes / judge no, each
    weighed by its share of all judged items, labeled and not."""
    n = cells.sum(axis=1)
    labeled = np.stack([cells[:, 0] + cells[:, 2], cells[:, 1] + cells[:, 3]], axis=1)
    yes = np.stack([cells[:, 0], cells[:, 1]], axis=1)
    share_yes = (big_yes + labeled[:, 0]) / (judged + n)
    return strata_interval(yes, labeled, np.stack([share_yes, 1 - share_yes], axis=1), judged=judged + n)


def grid_cell(n: int, rate: float, judge: str, *, judged: int, sims: int, ppi_sims: int, seed: int) -> dict:
    catches_no, false_no = GRID_JUDGES[judge]
    rng = np.random.default_rng(seed)
    cells, big_yes = draw_pools(rng, sims, n, judged, rate, catches_no, false_no)
    _, low, high = by_verdict(cells, big_yes, judged)
    hits = cells[:, 0] + cells[:, 1]
    wilson = np.array([wilson_interval(int(h), n) for h in hits])
    exact = np.stack(clopper_pearson(hits, np.full(sims, n)), axis=1)
    covered = (low <= rate) & (rate <= high)
    out = {"n": n, "rate": rate, "judge": judge, "sims": sims, "cover": float(covered.mean()),
           "zero_width": int(((high - low) <= 0).sum()),
           "width_ratio": float((high - low).mean() / (wilson[:, 1] - wilson[:, 0]).mean()),
           "cover_wilson": float(((wilson[:, 0] <= rate) & (rate <= wilson[:, 1])).mean()),
           "cover_exact": float(((exact[:, 0] <= rate) & (rate <= exact[:, 1])).mean())}
    out["se"] = float(np.sqrt(out["cover"] * (1 - out["cover"]) / sims))
    covered_ppi = 0
    for s in range(min(ppi_sims, sims)):
        a, b, c, d = (int(x) for x in cells[s])
        f_small = np.repeat([1.0, 0.0, 1.0, 0.0], [a, b, c, d])
        y = np.repeat([1.0, 1.0, 0.0, 0.0], [a, b, c, d])
        f_big = np.repeat([1.0, 0.0], [int(big_yes[s]), judged - int(big_yes[s])])
        r = ppi_mean(f_big, f_small, y, method="ppi++")
        covered_ppi += r.low <= rate <= r.high
    out["cover_ppi++"] = covered_ppi / min(ppi_sims, sims) if ppi_sims else None
    return out


def run_grid(*, judged: int = 10_000, sims: int = 2000, close_sims: int = 5000, ppi_sims: int = 300,
             seed: int = 23, ns=GRID_N, rates=GRID_RATES, judges=tuple(GRID_JUDGES)) -> list[dict]:
    """Every cell of the grid, seeded; cells near the target are run again with `close_sims`."""
    rows = []
    for i, (n, rate, judge) in enumerate((n, r, j) for n in ns for r in rates for j in judges):
        row = grid_cell(n, rate, judge, judged=judged, sims=sims, ppi_sims=ppi_sims, seed=seed + i)
        if close_sims > sims and row["cover"] - 2 * row["se"] < 0.95:
            row = grid_cell(n, rate, judge, judged=judged, sims=close_sims, ppi_sims=ppi_sims, seed=seed + i)
        row["holds"] = row["cover"] >= TARGET - 2 * row["se"]
        rows.append(row)
    return rows


def kappa_cell(n: int, rate: float, judge: str, *, sims: int, seed: int, add: float) -> dict:
    """Coverage of `calibrate`'s kappa interval (yes / no / unsure table, judge rows) of the judge
    against people's truth, on `sims` seeded studies of `n` compared items; the true kappa is the
    judge's on the whole population."""
    catches_no, false_no = GRID_JUDGES[judge]
    probs = np.array([[rate * (1 - false_no), (1 - rate) * (1 - catches_no)], [rate * false_no, (1 - rate) * catches_no]])
    observed, expected = np.trace(probs), float(probs.sum(axis=1) @ probs.sum(axis=0))
    true = (observed - expected) / (1 - expected)
    rng = np.random.default_rng(seed)
    tables = rng.multinomial(n, probs.ravel(), size=sims).reshape(sims, 2, 2)
    covered = defined = 0
    for t in tables:
        k = kappa_interval(np.pad(t, ((0, 1), (0, 1))), add=add)
        if k.value is not None:
            defined += 1
            covered += k.low <= true <= k.high
    cover = covered / defined if defined else float("nan")
    return {"n": n, "rate": rate, "judge": judge, "kappa": true, "defined": defined, "cover": cover,
            "se": float(np.sqrt(cover * (1 - cover) / max(defined, 1)))}


def print_kappa_grid(args) -> None:
    print(f"kappa of the judge against people: {args.grid_sims} studies per cell, seed {args.seed}")
    print()
    print("| compared items | true yes-rate | judge | true kappa | coverage, FCE interval | coverage, one added "
          "per cell (calibrate) | studies with kappa defined |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    worst = {0.0: 1.0, KAPPA_ADD: 1.0}
    for i, (n, rate, judge) in enumerate((n, r, j) for n in GRID_N for r in GRID_RATES for j in GRID_JUDGES):
        plain, added = (kappa_cell(n, rate, judge, sims=args.grid_sims, seed=args.seed + i, add=a) for a in (0.0, KAPPA_ADD))
        for a, row in ((0.0, plain), (KAPPA_ADD, added)):
            if row["defined"] >= 100:
                worst[a] = min(worst[a], row["cover"])
        print(f"| {n} | {rate:.2f} | {judge} | {plain['kappa']:.2f} | {plain['cover']:.1%} | {added['cover']:.1%} "
              f"| {added['defined']} |", flush=True)
    print()
    print(f"lowest coverage (cells with 100 or more defined kappas): FCE {worst[0.0]:.1%}, one added per cell "
          f"{worst[KAPPA_ADD]:.1%}")


def print_grid(args) -> None:
    print(f"{args.judged:,} judged items; {args.grid_sims} simulations per cell (5,000 where close), PPI++ on "
          f"{args.ppi_sims}; seed {args.seed}; Python {platform.python_version()}, numpy {np.__version__}")
    print()
    print("| labels | true yes-rate | judge | coverage (by verdict) | width / people-only | PPI++ coverage "
          "| Wilson coverage | Clopper-Pearson coverage |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    start = time.perf_counter()
    rows = run_grid(judged=args.judged, sims=args.grid_sims, ppi_sims=args.ppi_sims, seed=args.seed)
    for r in rows:
        print(f"| {r['n']} | {r['rate']:.2f} | {r['judge']} | {r['cover']:.1%}{'' if r['holds'] else ' (below)'} "
              f"| {r['width_ratio']:.2f} | {r['cover_ppi++']:.1%} | {r['cover_wilson']:.1%} "
              f"| {r['cover_exact']:.1%} |")
    worst = min(rows, key=lambda r: r["cover"])
    print()
    print(f"lowest coverage by verdict: {worst['cover']:.1%} (n {worst['n']}, rate {worst['rate']}, "
          f"{worst['judge']}); cells below target: {sum(not r['holds'] for r in rows)} of {len(rows)}; "
          f"zero-width intervals: {sum(r['zero_width'] for r in rows)}")
    helps = [r for r in rows if r["n"] == 200 and r["rate"] in (0.58, 0.92) and r["judge"].startswith("accuracy")]
    print("width / people-only where the judge helps (n 200): " + "; ".join(
        f"{r['judge']} rate {r['rate']}: {r['width_ratio']:.2f}" for r in helps))
    print(f"{time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="the coverage grid instead of the accuracy sweep")
    parser.add_argument("--kappa", action="store_true", help="the coverage grid of the judge's kappa interval")
    parser.add_argument("--grid-sims", type=int, default=2000, help="grid: seeded pools per cell (default 2,000)")
    parser.add_argument("--ppi-sims", type=int, default=300, help="grid: pools per cell for PPI++ (default 300)")
    parser.add_argument("--rate", type=float, default=0.6, help="true share of yes (default 0.6)")
    parser.add_argument("--human", type=int, default=200, help="items people labeled (default 200)")
    parser.add_argument("--judged", type=int, default=10_000, help="other items the judge answered (default 10,000)")
    parser.add_argument("--sims", type=int, default=200, help="seeded pools per accuracy (default 200)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--accuracies", default=",".join(f"{a:g}" for a in ACCURACIES))
    args = parser.parse_args()
    if args.grid:
        print_grid(args)
        return
    if args.kappa:
        print_kappa_grid(args)
        return
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
