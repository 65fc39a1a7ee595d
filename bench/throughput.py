"""Throughput benchmarks (not tests).

Section "requests": LLMClient.complete_many against the offline server with a fixed injected
latency L per request. With C requests in flight, N requests should take close to N*L/C;
the table shows achieved/ideal (ideal time / measured time; 1.0 is perfect) per concurrency,
plus requests per second and the median and p95 per-request latency (Completion.latency_s).

    .venv/bin/python bench/throughput.py --section requests
    .venv/bin/python bench/throughput.py --section requests --latency 0.05 --concurrency 1 8 32 64

By default the server runs in a subprocess (`python -m selfinstruct.offline --responder echo`)
so that client and server do not share one GIL; `--server inprocess` runs it in a thread.

New sections: write `section_<name>(args) -> dict`, register it in SECTIONS, and add its
options in `add_arguments`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from selfinstruct.llm import LLMClient, LLMConfig, Sampling  # noqa: E402
from selfinstruct.offline import OfflineServer  # noqa: E402
from selfinstruct.prompts import Prompt  # noqa: E402

MODEL = "selfinstruct-demo"
# Requests per concurrency level: enough for a steady state, short enough for C=1.
DEFAULT_N = {1: 100, 8: 400, 32: 1000, 64: 2000}


# --------------------------------------------------------------------------- server


@contextlib.contextmanager
def offline_server(mode: str) -> Iterator[str]:
    """Yield the base URL of an offline server with the echo responder."""
    if mode == "inprocess":
        with OfflineServer(responder=lambda text, seed: f"ok {seed % 97}: {text[:40]}") as srv:
            yield srv.base_url
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct.offline", "--port", "0", "--responder", "echo"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://\S+/v1", line)
        if not match:
            raise RuntimeError(f"offline server did not start: {line!r} {proc.stderr.read()}")
        yield match.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def set_latency(base_url: str, latency_s: float) -> None:
    root = base_url[: -len("/v1")]
    body = json.dumps({"clear": True, "latency_s": latency_s}).encode()
    req = urllib.request.Request(root + "/_control/faults", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


# --------------------------------------------------------------------------- section: requests


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def measure_level(base_url: str, concurrency: int, n: int, latency_s: float) -> dict:
    cfg = LLMConfig(base_url=base_url, model=MODEL, api_key="bench", concurrency=concurrency,
                    timeout_s=30.0, max_retries=0)
    prompts = [Prompt(stage="instructions", version="bench", text=f"Write task number {i}.")
               for i in range(n)]
    sampling = Sampling(max_tokens=64)
    async with LLMClient(cfg) as client:
        # warm-up: open the connection pool so the timing sees steady state
        await client.complete_many(prompts[: concurrency], sampling)
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = await client.complete_many(prompts, sampling)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    failures = sum(1 for r in results if not r.ok)
    latencies = [r.latency_s for r in results if r.ok]
    ideal = n * latency_s / concurrency
    return {
        "concurrency": concurrency,
        "n": n,
        "latency_s": latency_s,
        "elapsed_s": elapsed,
        "ideal_s": ideal,
        "achieved_over_ideal": (ideal / elapsed) if ideal > 0 else None,
        "requests_per_s": n / elapsed,
        "median_latency_s": statistics.median(latencies) if latencies else float("nan"),
        "p95_latency_s": percentile(latencies, 0.95),
        "client_cpu_ms_per_request": cpu / n * 1000,
        "failures": failures,
    }


def print_rows(rows: list[dict], first_col: str) -> None:
    header = (f"{first_col:>6} {'N':>6} {'ideal s':>8} {'actual s':>9} {'achieved/ideal':>15} "
              f"{'req/s':>7} {'median ms':>10} {'p95 ms':>8} {'cpu ms/req':>11} {'failed':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r["achieved_over_ideal"]
        key = r["concurrency"] if first_col == "C" else f"{r['latency_s'] * 1000:.0f} ms"
        print(f"{key:>6} {r['n']:>6} {r['ideal_s']:>8.2f} {r['elapsed_s']:>9.2f} "
              f"{(f'{ratio:.3f}' if ratio is not None else '-'):>15} {r['requests_per_s']:>7.0f} "
              f"{r['median_latency_s'] * 1000:>10.1f} {r['p95_latency_s'] * 1000:>8.1f} "
              f"{r['client_cpu_ms_per_request']:>11.2f} {r['failures']:>7}")


def section_requests(args: argparse.Namespace) -> dict:
    rows, sweep = [], []
    overhead = None
    with offline_server(args.server) as base_url:
        for c in args.concurrency:
            n = args.n or DEFAULT_N.get(c, max(100, 32 * c))
            set_latency(base_url, args.latency)
            rows.append(asyncio.run(measure_level(base_url, c, n, args.latency)))
        for latency in args.sweep:
            set_latency(base_url, latency)
            sweep.append(asyncio.run(measure_level(base_url, 32, 1000, latency)))
        if args.overhead:
            set_latency(base_url, 0.0)
            overhead = asyncio.run(measure_level(base_url, 32, 1000, 0.0))
    print(f"\nrequests: LLMClient.complete_many -> offline server ({args.server}), "
          f"injected latency L = {args.latency * 1000:.0f} ms per request")
    print_rows(rows, "C")
    if sweep:
        print("\nC = 32, N = 1000 at other latencies")
        print_rows(sweep, "L")
    if overhead:
        print(f"\nclient ceiling (L = 0, C = 32, N = 1000): {overhead['requests_per_s']:.0f} req/s, "
              f"{overhead['client_cpu_ms_per_request']:.2f} ms client CPU per request, "
              f"median {overhead['median_latency_s'] * 1000:.1f} ms, "
              f"p95 {overhead['p95_latency_s'] * 1000:.1f} ms")
    target = next((r for r in rows if r["concurrency"] == 32), None)
    if target is not None and target["achieved_over_ideal"] is not None:
        verdict = "meets" if target["achieved_over_ideal"] >= 0.9 else "misses"
        print(f"C=32, L={args.latency * 1000:.0f} ms: achieved/ideal "
              f"{target['achieved_over_ideal']:.3f} {verdict} the 0.9 target")
    return {"rows": rows, "sweep": sweep, "overhead": overhead}


# --------------------------------------------------------------------------- driver

# --------------------------------------------------------------------------- section: filters


def section_filters(args: argparse.Namespace) -> dict:
    """Candidates per second through parse + heuristic filters + novelty (the pipeline's
    `decide_round`) against a pool of realistic instructions."""
    sys.path.insert(0, str(ROOT / "bench"))
    from novelty import Generator, load_instructions  # the novelty bench's corpus generator

    from selfinstruct.filters import InstructionFilter
    from selfinstruct.novelty import NoveltyIndex
    from selfinstruct.pipeline import decide_round
    from selfinstruct.prompts import build_instruction_prompt

    base = load_instructions()
    rows = []
    for pool_size in args.pool_sizes:
        pool = Generator(base, seed=1)
        texts = [pool.one() for _ in range(pool_size)]
        started = time.perf_counter()
        index = NoveltyIndex(texts)
        build_s = time.perf_counter() - started
        candidates = Generator(base, seed=2)
        prompt = build_instruction_prompt(texts[:8], num_to_generate=8)
        requests = []
        for n in range(args.responses):
            items = [candidates.one() for _ in range(8)]
            response = "\n".join(f"{9 + i}. {item}" for i, item in enumerate(items))
            requests.append({"id": n, "response": response, "finish_reason": "stop", "stage": prompt.stage,
                             "prompt_version": prompt.version, "prompt": prompt.text,
                             "meta": {"system": prompt.system, "stop": list(prompt.stop or []),
                                      "prompt_meta": prompt.meta}})
        started = time.perf_counter()
        decided = decide_round(requests, InstructionFilter(), index, 0.7, batch=False)
        elapsed = time.perf_counter() - started
        accepted = sum(r["status"] == "accepted" for r in decided)
        rows.append({"pool": pool_size, "index build s": round(build_s, 2), "candidates": len(decided),
                     "accepted": accepted, "seconds": round(elapsed, 2),
                     "candidates/s": round(len(decided) / elapsed),
                     "ms/candidate": round(1000 * elapsed / len(decided), 3)})
    print("filters: parse + heuristic filters + ROUGE-L novelty (decide_round), one core")
    columns = list(rows[0])
    print("  ".join(f"{c:>14}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>14,}" if isinstance(row[c], int) else f"{row[c]:>14}" for c in columns))
    return {"rows": rows}


SECTIONS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "requests": section_requests,
    "filters": section_filters,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all",
                        help="which benchmark to run (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    f = parser.add_argument_group("filters")
    f.add_argument("--pool-sizes", type=int, nargs="+", default=[50_000])
    f.add_argument("--responses", type=int, default=250, help="numbered-list answers of 8 items each")
    g = parser.add_argument_group("requests")
    g.add_argument("--latency", type=float, default=0.05, help="injected seconds per request")
    g.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    g.add_argument("--n", type=int, default=None,
                   help="requests per level (default: 100/400/1000/2000 for C=1/8/32/64)")
    g.add_argument("--server", choices=("subprocess", "inprocess"), default="subprocess")
    g.add_argument("--sweep", type=float, nargs="*", default=[0.1, 0.2],
                   help="extra latencies to run at C=32, N=1000 (default: 0.1 0.2; none: --sweep)")
    g.add_argument("--no-overhead", dest="overhead", action="store_false",
                   help="skip the L=0 client-ceiling measurement")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    names = list(SECTIONS) if args.section == "all" else [args.section]
    results = {name: SECTIONS[name](args) for name in names}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
