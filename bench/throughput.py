"""Throughput benchmarks (not tests).

Section "requests": LLMClient.complete_many against the offline server with a fixed injected
latency L per request. With C requests in flight, N requests should take close to N*L/C;
the table shows achieved/ideal (ideal time / measured time; 1.0 is perfect) per concurrency,
plus requests per second and the median and p95 per-request latency (Completion.latency_s).

    .venv/bin/python bench/throughput.py --section requests
    .venv/bin/python bench/throughput.py --section requests --latency 0.05 --concurrency 1 8 32 64

By default the server runs in a subprocess (`python -m selfinstruct.offline --responder echo`)
so that client and server do not share one GIL; `--server inprocess` runs it in a thread.

Section "engine": utilization of the run engine's C request slots, sum(requests.latency_s) /
(C x wall time of `python -m selfinstruct generate`), for this checkout's continuous engine and
the barrier engine at git tag `engine-v1` (a temporary worktree), against offline servers with
lognormal per-request latency; plus a 429 storm for the new engine. Slow (minutes per run at the
default 1.5 s median); `--rounds-list 1 --median 0.05` is a smoke run.

    .venv/bin/python bench/throughput.py --section engine
    .venv/bin/python bench/throughput.py --section engine --rounds-list 2 --median 0.05

Section "loop": this checkout's generation against another git revision's (`--before`, a
temporary worktree), in turn, the same seeds: wall time, utilization and the paired ratio.

    .venv/bin/python bench/throughput.py --section loop --before 957dbce --rounds-list 3 --repeats 5

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

from selfinstruct.llm import LLMClient, LLMConfig, Sampling
from selfinstruct.offline import OfflineServer
from selfinstruct.prompts import Prompt
from selfinstruct.store import Pool

ROOT = Path(__file__).resolve().parent.parent

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
    with server_process("--responder", "echo") as base_url:
        yield base_url


@contextlib.contextmanager
def server_process(*options: str) -> Iterator[str]:
    """Yield the base URL (.../v1) of `python -m selfinstruct.offline OPTIONS` started from this
    checkout in a process of its own (so client and server do not share one GIL)."""
    errlog = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct.offline", "--port", "0", *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=errlog, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://\S+/v1", line)
        if not match:
            errlog.seek(0)
            raise RuntimeError(f"offline server did not start: {line!r} {errlog.read()[-2000:]}")
        # keep draining stdout so a chatty server never blocks on a full pipe
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        yield match.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errlog.close()


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
    from selfinstruct.decisions import decide_round
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


# --------------------------------------------------------------------------- section: engine

ENGINE_C = 32               # --concurrency of every generate run
ENGINE_RPR = 16             # --requests-per-round
# --example-lag of this checkout's runs: the figures in bench/README.md and the README were measured
# when the default lag was one round more than instruction requests need to fill the slots (3 at
# C=32, 16 a round); the default is now 2 at any concurrency (the same seed, the same pool).
ENGINE_LAG = 3
OLD_ENGINE_TAG = "engine-v1"
# The tag names this commit (the last one with the barrier engine); a clone without tags uses it.
OLD_ENGINE_COMMIT = "35a33a4"
RESULTS_DIR = ROOT / "bench" / "results"


def _log(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def lognormal_server(median_s: float, sigma: float, latency_seed: int,
                     responder: str = "demo") -> Iterator[str]:
    """Yield the base URL (.../v1) of an offline server (started from this checkout) with a
    lognormal per-request delay; `responder` demo (the bundled corpus, which runs dry after a few
    hundred tasks) or synthetic (endless new tasks, as a real model keeps producing)."""
    with server_process("--responder", responder, "--latency-median", str(median_s),
                        "--latency-sigma", str(sigma), "--latency-seed", str(latency_seed)) as base_url:
        yield base_url


def post_faults(base_url: str, spec: dict) -> dict:
    root = base_url[: -len("/v1")]
    req = urllib.request.Request(root + "/_control/faults", data=json.dumps(spec).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


@contextlib.contextmanager
def old_engine_worktree() -> Iterator[Path]:
    """A detached git worktree of the barrier engine's tag, removed afterwards."""
    has_tag = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{OLD_ENGINE_TAG}"],
                             cwd=ROOT, capture_output=True).returncode == 0
    with worktree_at(OLD_ENGINE_TAG if has_tag else OLD_ENGINE_COMMIT) as tree:
        yield tree


@contextlib.contextmanager
def worktree_at(rev: str) -> Iterator[Path]:
    """A detached git worktree of `rev`, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-worktree-"))
    tree = tmp / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT,
                   check=True, capture_output=True, text=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                       capture_output=True, text=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _engine_env(src: Path) -> dict:
    # the API key variable only has to exist; the offline server accepts any key
    return {**os.environ, "PYTHONPATH": str(src), "OPENAI_API_KEY": "bench"}


def _which_package(src: Path) -> str:
    out = subprocess.run([sys.executable, "-c", "import selfinstruct; print(selfinstruct.__file__)"],
                         cwd=src, env=_engine_env(src), capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()[-500:]


def read_pool(db: Path, *, continuous: bool = True) -> dict:
    """The last run's figures, read through the store (`Pool.run_figures`). A pool written by
    the barrier engine's older schema is upgraded on opening (it is a temporary file); its
    dependency bound is not computed (`continuous=False`)."""
    with Pool.open(db) as pool:
        runs = pool.runs.all()
        if not runs:
            raise RuntimeError(f"No run in {db}.")
        run = runs[0]   # newest first
        figures = pool.bulk.run_figures(run["id"])
        bound = dependency_bound(pool.bulk.request_timeline(run["id"]), int(run["config"].get("example_lag") or 2),
                                 ENGINE_C) if continuous else None
    n, lat_sum, attempts = figures["requests"], figures["latency_sum_s"], figures["attempts"]
    return {"requests": n, "latency_sum_s": lat_sum,
            "attempts": attempts, "failed_requests": figures["failed_requests"],
            "retries_429": attempts - n, "accepted": figures["accepted"],
            "run_status": figures["status"], "stop_reason": figures["stop_reason"],
            "run_wall_s": figures["wall_s"],
            **({"best_wall_s": bound["best_wall_s"], "critical_path_s": bound["critical_path_s"],
                "best_utilization": lat_sum / (ENGINE_C * bound["best_wall_s"])}
               if bound else {})}


def dependency_bound(timeline: list[dict], lag: int, concurrency: int) -> dict:
    """For a run of the continuous engine (`timeline`: `Pool.request_timeline`): the shortest
    wall time any scheduler could reach with the same requests, their latencies and the engine's
    rules (decisions in round and position order, round N planned once round N - lag is decided,
    classification after the decision, instances after the classification), as max(critical
    path with unlimited slots, summed latency / C)."""
    decided: dict[int, float] = {}
    round_decided: dict[int, float] = {}
    frontier = 0.0
    for row in timeline:
        if row["stage"] in ("instructions", "batch"):
            start = round_decided.get(row["round"] - lag, 0.0)
            frontier = max(frontier, start + (row["latency_s"] or 0.0))
            decided[row["id"]] = round_decided[row["round"]] = frontier
    classified: dict[int, float] = {}
    end = frontier
    for stage_wanted in ("classify", "instances"):
        for row in timeline:
            if row["stage"] != stage_wanted:
                continue
            cand = row["candidate_id"]
            ready = (decided.get(row["source_request_id"], 0.0) if stage_wanted == "classify"
                     else classified.get(cand, 0.0))
            done = ready + (row["latency_s"] or 0.0)
            if stage_wanted == "classify":
                classified[cand] = done
            end = max(end, done)
    work = sum((row["latency_s"] or 0.0) for row in timeline) / concurrency
    return {"critical_path_s": end, "work_over_c_s": work, "best_wall_s": max(end, work)}


def run_generate(src: Path, rounds: int, median_s: float, sigma: float, latency_seed: int,
                 responder: str = "demo",
                 faults: dict | None = None, timeout_s: float = 3600.0, lag: int | None = None) -> dict:
    """One measurement: fresh pool with the starter seeds, a fresh lognormal server, one timed
    `generate` subprocess of the checkout at `src`, then the pool read back."""
    env = _engine_env(src)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        db = Path(tmp) / "pool.duckdb"
        seeds = subprocess.run([sys.executable, "-m", "selfinstruct", "seeds", "import", "starter",
                                "--db", str(db)], cwd=src, env=env, capture_output=True, text=True)
        if seeds.returncode != 0:
            raise RuntimeError(f"seeds import failed in {src}:\n{seeds.stderr[-3000:]}")
        with lognormal_server(median_s, sigma, latency_seed, responder) as base_url:
            if faults:
                post_faults(base_url, faults)
            cmd = [sys.executable, "-m", "selfinstruct", "generate", "--base-url", base_url,
                   "--model", MODEL, "--rounds", str(rounds),
                   "--requests-per-round", str(ENGINE_RPR), "--concurrency", str(ENGINE_C),
                   "--seed", "0", "--db", str(db)]
            if lag is not None:
                cmd += ["--example-lag", str(lag)]
            elif src == ROOT:     # the old engine has no lag (and no --example-lag): it waits for each step
                cmd += ["--example-lag", str(ENGINE_LAG)]
            started = time.perf_counter()
            try:
                proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True,
                                      timeout=timeout_s)
                returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
            except subprocess.TimeoutExpired as e:
                returncode, stdout, stderr = None, str(e.stdout or ""), f"timed out after {timeout_s} s"
            wall = time.perf_counter() - started
        row = {"wall_s": wall, "returncode": returncode}
        if returncode != 0:
            row["stderr_tail"] = (stderr or "")[-4000:]
            row["stdout_tail"] = (stdout or "")[-1000:]
        try:
            row.update(read_pool(db, continuous=Path(src).resolve() == ROOT))
        except Exception as e:  # noqa: BLE001 - a crashed run may leave no readable pool
            row["pool_error"] = f"{type(e).__name__}: {e}"
    if "latency_sum_s" in row:
        row["utilization"] = row["latency_sum_s"] / (ENGINE_C * wall)
        if row.get("run_wall_s"):   # without the process's start-up (imports, index, estimate)
            row["run_utilization"] = row["latency_sum_s"] / (ENGINE_C * row["run_wall_s"])
    return row


_NUMERIC = ("wall_s", "requests", "latency_sum_s", "utilization", "run_utilization", "best_utilization",
            "best_wall_s", "critical_path_s", "accepted", "attempts",
            "failed_requests", "retries_429", "run_wall_s")


def _median_row(samples: list[dict]) -> dict:
    out: dict = {}
    for key in _NUMERIC:
        values = [s[key] for s in samples if s.get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    for key in ("run_status", "stop_reason", "returncode"):
        out[key] = [s.get(key) for s in samples] if len(samples) > 1 else samples[0].get(key)
    return out


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def section_engine(args: argparse.Namespace) -> dict:
    engines = list(dict.fromkeys(args.engines))
    result: dict = {"config": {"concurrency": ENGINE_C, "requests_per_round": ENGINE_RPR,
                               "median_s": args.median, "sigmas": args.sigmas,
                               "responders": args.responders,
                               "rounds": args.rounds_list, "engines": engines,
                               "repeats": args.repeats, "old_engine_tag": OLD_ENGINE_TAG},
                    "rows": [], "storm": None}
    stack = contextlib.ExitStack()
    with stack:
        sources = {"new": ROOT}
        if "old" in engines:
            sources["old"] = stack.enter_context(old_engine_worktree())
        result["config"]["packages"] = {name: _which_package(src) for name, src in sources.items()
                                        if name in engines}
        _log(f"engine: C={ENGINE_C}, {ENGINE_RPR} requests/round, lognormal latency median "
             f"{args.median} s; packages {result['config']['packages']}")
        for responder in args.responders:
            for rounds in args.rounds_list:
                for sigma in args.sigmas:
                    for engine in engines:
                        samples = []
                        for rep in range(args.repeats):
                            _log(f"  {engine} {responder} rounds={rounds} sigma={sigma} "
                                 f"repeat {rep + 1}/{args.repeats} ...")
                            sample = run_generate(sources[engine], rounds, args.median, sigma, rep, responder)
                            samples.append(sample)
                            _log(f"    wall {sample['wall_s']:.1f} s, requests {sample.get('requests')}, "
                                 f"utilization {_fmt(sample.get('utilization'), '.3f')} "
                                 f"(run {_fmt(sample.get('run_utilization'), '.3f')}, best "
                                 f"{_fmt(sample.get('best_utilization'), '.3f')}), "
                                 f"status {sample.get('run_status')}, rc {sample['returncode']}")
                            if sample["returncode"] != 0:
                                _log("    generate failed:\n" + sample.get("stderr_tail", ""))
                        row = {"engine": engine, "responder": responder, "rounds": rounds, "sigma": sigma,
                               **_median_row(samples), "samples": samples}
                        result["rows"].append(row)

        if args.storm and "new" in engines:
            storm_rounds, storm_sigma = 3, 0.8
            faults = {"rates": {"429": 0.333}, "rate_params": {"429": {"retry_after": 0.2}}, "seed": 1}
            storm, calm = [], []
            for rep in range(args.repeats):
                _log(f"  storm: new rounds={storm_rounds} sigma={storm_sigma} with 429 every ~3rd request, "
                     f"repeat {rep + 1}/{args.repeats} ...")
                storm.append(run_generate(ROOT, storm_rounds, args.median, storm_sigma, rep, faults=faults))
                _log(f"    wall {storm[-1]['wall_s']:.1f} s, status {storm[-1].get('run_status')}, "
                     f"failed {storm[-1].get('failed_requests')}, 429s {storm[-1].get('retries_429')}")
                if storm[-1]["returncode"] != 0:
                    _log("    generate failed:\n" + storm[-1].get("stderr_tail", ""))
            same = next((r for r in result["rows"] if r["engine"] == "new" and r["responder"] == "demo"
                         and r["rounds"] == storm_rounds and r["sigma"] == storm_sigma), None)
            if same is not None:
                calm = same["samples"]
            else:
                for rep in range(args.repeats):
                    _log(f"  storm baseline: new rounds={storm_rounds} sigma={storm_sigma} without 429s ...")
                    calm.append(run_generate(ROOT, storm_rounds, args.median, storm_sigma, rep))
            result["storm"] = {"rounds": storm_rounds, "sigma": storm_sigma, "faults": faults,
                               "with_429": {**_median_row(storm), "samples": storm},
                               "without_429": {**_median_row(calm), "samples": calm}}

    rows = result["rows"]
    print(f"\nengine: slot utilization = sum(requests.latency_s) / (C x wall), C = {ENGINE_C}, "
          f"{ENGINE_RPR} requests/round, lognormal latency median {args.median} s"
          + (f", medians of {args.repeats}" if args.repeats > 1 else ""))
    header = (f"{'engine':>6} {'model':>9} {'rounds':>6} {'sigma':>5} {'wall s':>8} {'requests':>8} "
              f"{'latency sum s':>13} {'utilization':>11} {'run util':>8} {'best':>6} {'accepted':>8} "
              f"{'status':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['engine']:>6} {r['responder']:>9} {r['rounds']:>6} {r['sigma']:>5} {_fmt(r.get('wall_s'), '.1f'):>8} "
              f"{_fmt(r.get('requests'), '.0f'):>8} {_fmt(r.get('latency_sum_s'), '.1f'):>13} "
              f"{_fmt(r.get('utilization'), '.3f'):>11} {_fmt(r.get('run_utilization'), '.3f'):>8} "
              f"{_fmt(r.get('best_utilization'), '.3f'):>6} {_fmt(r.get('accepted'), '.0f'):>8} "
              f"{str(r.get('run_status')):>10}")
    ratios = []
    for r in rows:
        if r["engine"] != "new":
            continue
        old = next((o for o in rows if o["engine"] == "old" and o["rounds"] == r["rounds"]
                    and o["sigma"] == r["sigma"] and o["responder"] == r["responder"]), None)
        if old is None or not old.get("utilization") or r.get("utilization") is None:
            continue
        ratios.append({"responder": r["responder"], "rounds": r["rounds"], "sigma": r["sigma"],
                       "utilization_new_over_old": r["utilization"] / old["utilization"],
                       "wall_new_over_old": r["wall_s"] / old["wall_s"]})
    if ratios:
        print("\nnew / old")
        print(f"{'model':>9} {'rounds':>6} {'sigma':>5} {'utilization':>11} {'wall':>6}")
        for q in ratios:
            print(f"{q['responder']:>9} {q['rounds']:>6} {q['sigma']:>5} {q['utilization_new_over_old']:>11.2f} "
                  f"{q['wall_new_over_old']:>6.2f}")
    result["ratios"] = ratios
    storm = result["storm"]
    if storm:
        w, c = storm["with_429"], storm["without_429"]
        print(f"\n429 storm (new engine, C={ENGINE_C}, {storm['rounds']} rounds, sigma {storm['sigma']}, "
              f"429 on ~1/3 of requests, retry-after 0.2 s): status {w.get('run_status')}, "
              f"failed requests {_fmt(w.get('failed_requests'), '.0f')}, "
              f"429s {_fmt(w.get('retries_429'), '.0f')}, accepted {_fmt(w.get('accepted'), '.0f')}, "
              f"wall {_fmt(w.get('wall_s'), '.1f')} s vs {_fmt(c.get('wall_s'), '.1f')} s without "
              f"429s (status {c.get('run_status')})")
        if w.get("wall_s") and c.get("wall_s"):
            storm["wall_ratio"] = w["wall_s"] / c["wall_s"]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"engine-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {out}")
    return result


def section_loop(args: argparse.Namespace) -> dict:
    """This checkout's generation against `--before` (a git revision in a temporary worktree),
    the same runs in turn (before, after, before, after ...): the wall time and utilization of
    `generate`, to check that moving the engine onto the one request loop cost nothing."""
    rows: dict[str, list[dict]] = {"before": [], "after": []}
    with worktree_at(args.before) as before:
        for rep in range(args.repeats):
            for name, src in (("before", before), ("after", ROOT)):
                sample = run_generate(src, args.rounds_list[0], args.median, args.sigmas[0], rep, lag=ENGINE_LAG)
                if sample.get("returncode") != 0:
                    _log(f"    {name}: generate failed:\n" + sample.get("stderr_tail", ""))
                rows[name].append(sample)
                _log(f"  {name} rep {rep}: {sample['wall_s']:.2f} s, utilization "
                     f"{sample.get('utilization', float('nan')):.3f}, accepted {sample.get('accepted')}")
    result = {name: {key: statistics.median(r[key] for r in samples if key in r)
                     for key in ("wall_s", "utilization", "requests", "accepted")} for name, samples in rows.items()}
    pairs = [a["wall_s"] / b["wall_s"] for a, b in zip(rows["after"], rows["before"])]
    result["wall_ratio_after_over_before"] = statistics.median(pairs)
    print(f"generate, {args.rounds_list[0]} rounds, C={ENGINE_C}, median latency {args.median} s, "
          f"sigma {args.sigmas[0]}, {args.repeats} pairs (before = {args.before})")
    print("| | wall s | utilization | requests | accepted |\n|---|---:|---:|---:|---:|")
    for name in ("before", "after"):
        r = result[name]
        print(f"| {name} | {r['wall_s']:.2f} | {r['utilization']:.3f} | {r['requests']:.0f} | {r['accepted']:.0f} |")
    print(f"median after/before wall ratio (paired): {result['wall_ratio_after_over_before']:.3f}")
    return result


SECTIONS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "requests": section_requests,
    "filters": section_filters,
    "engine": section_engine,
    "loop": section_loop,
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
    e = parser.add_argument_group("engine")
    e.add_argument("--rounds-list", type=int, nargs="+", default=[3, 10], help="rounds per run (default: 3 10)")
    e.add_argument("--sigmas", type=float, nargs="+", default=[0.8, 0.3],
                   help="lognormal sigmas of the per-request latency (default: 0.8 0.3)")
    e.add_argument("--engines", nargs="+", choices=("new", "old"), default=["new", "old"],
                   help="new: this checkout; old: git tag engine-v1 in a temporary worktree")
    e.add_argument("--repeats", type=int, default=1, help="runs per cell; medians when > 1")
    e.add_argument("--median", type=float, default=1.5, help="median per-request latency, seconds")
    e.add_argument("--responders", nargs="+", default=["demo", "synthetic"], choices=("demo", "synthetic"),
                   help="the offline server's model: demo (bundled corpus) and/or synthetic (endless new tasks)")
    e.add_argument("--no-storm", dest="storm", action="store_false",
                   help="skip the 429-storm case (new engine, 3 rounds)")
    e.add_argument("--before", default="HEAD",
                   help="section loop: the git revision this checkout is compared with (default: HEAD)")


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
