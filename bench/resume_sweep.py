"""Resume sweep (not a test): freeze a live `generate` run at many seeded random moments and
require every frozen copy to resume to the end with the same decisions as a run left alone.

A moment: the CLI process is stopped (SIGSTOP), the pool file and its `.wal` are copied as they
are on disk at that instant (what a SIGKILL or a power cut of the process would leave), and the
process goes on (SIGCONT). Each copy is then resumed with `selfinstruct generate --resume`; it
*holds* when the resume exits 0 within the time limit with the run finished, the same candidates
(text, status, reason, classification, in round and position order) and the same instances as
an uninterrupted run of the same seed, and when no request answered before the freeze was paid
for again. Moments are spread over several runs (`--per-run` each) so they fall at different
points of the answer order; the offline server's answers have lognormal latency, so answers
arrive out of order.

    .venv/bin/python bench/resume_sweep.py                       # 120 moments, ~6 min on 2 cores
    .venv/bin/python bench/resume_sweep.py --moments 10 --rounds 2

tests/test_resume_anywhere.py runs `sweep` at 6 moments.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from selfinstruct import seeds
from selfinstruct.offline import OfflineServer
from selfinstruct.store import Pool

ROOT = Path(__file__).resolve().parent.parent
MODEL = "selfinstruct-demo"


def decisions(pool: Pool) -> dict:
    """What a run decided, in a fixed order: candidates and instances."""
    cur = pool.cursor()
    return {
        "candidates": cur.execute(
            "SELECT r.number, c.position, c.instruction, c.status, c.reason, c.is_classification "
            "FROM candidates c JOIN rounds r ON r.id = c.round_id ORDER BY r.number, c.position").fetchall(),
        "instances": cur.execute(
            "SELECT r.number, c.position, i.input, i.output, i.status FROM instances i "
            "JOIN candidates c ON c.id = i.candidate_id JOIN rounds r ON r.id = c.round_id "
            "ORDER BY r.number, c.position, i.position").fetchall(),
    }


def _answered(pool: Pool) -> int:
    return pool.cursor().execute("SELECT count(*) FROM requests WHERE response IS NOT NULL").fetchone()[0]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "selfinstruct", *args]


def _served(server: OfflineServer) -> int:
    stats = server.stats
    return sum(n for endpoint, n in stats["by_endpoint"].items() if "completions" in endpoint)


def _seeded_pool(path: Path) -> None:
    with Pool.open(path) as pool:
        seeds.load_starter_seeds(pool)


def _copy(db: Path, to: Path) -> None:
    shutil.copyfile(db, to)
    wal = Path(f"{db}.wal")
    if wal.exists():
        shutil.copyfile(wal, Path(f"{to}.wal"))


def _frozen_run(args: list[str], db: Path, moments: list[float], copies: list[Path]) -> float:
    """Run the CLI, freezing it at each moment (seconds of its own running time after it said
    "Run N:") to copy the pool; returns how long it ran."""
    proc = subprocess.Popen(_cli([*args, "--db", str(db)]), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("Run "):
                break
        ran, last = 0.0, time.monotonic()
        for moment, copy in zip(moments, copies):
            if moment > ran:
                time.sleep(moment - ran)
            if proc.poll() is not None:      # the run ended first: the copy is of the end
                _copy(db, copy)
                continue
            os.kill(proc.pid, signal.SIGSTOP)
            ran += time.monotonic() - last
            try:
                _copy(db, copy)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
                last = time.monotonic()
        proc.stdout.read()
        proc.wait(timeout=300)
        ran += time.monotonic() - last
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"the frozen run itself ended with exit {proc.returncode}")
    return ran


def sweep(workdir: Path, *, moments: int, rng: random.Random, rounds: int = 3, per_run: int = 10,
          concurrency: int = 8, seed: int = 11, resume_timeout_s: float = 60.0, log=None) -> dict:
    """Freeze runs at `moments` random moments; resume each copy; returns tries, held, the
    failures (moment, why) and timings."""
    workdir = Path(workdir)
    log = log or (lambda text: None)
    with OfflineServer(seed=7, latency_median_s=0.02, latency_sigma=0.8, latency_seed=rng.randrange(1000)) as server:
        args = ["generate", "--base-url", server.base_url, "--model", MODEL, "--rounds", str(rounds),
                "--concurrency", str(concurrency), "--seed", str(seed), "--structured", "off"]
        straight = workdir / "straight.duckdb"
        _seeded_pool(straight)
        run_s = _frozen_run(args, straight, [], [])    # frozen at no moment: how long a run takes
        with Pool.open(straight) as pool:
            expected, expected_answered = decisions(pool), _answered(pool)
        log(f"uninterrupted run: {run_s:.1f} s, {len(expected['candidates'])} candidates, "
            f"{len(expected['instances'])} instances, {expected_answered} answers")
        tries, held, failures, resume_times = 0, 0, [], []
        run_no = 0
        while tries < moments:
            run_no += 1
            batch = min(per_run, moments - tries)
            # moments over the whole run; the start-up before "Run N:" is not part of it
            points = sorted(rng.uniform(0.0, run_s) for _ in range(batch))
            db = workdir / f"frozen{run_no}.duckdb"
            _seeded_pool(db)
            copies = [workdir / f"frozen{run_no}-{i}.duckdb" for i in range(batch)]
            _frozen_run(args, db, points, copies)
            with Pool.open(db) as pool:
                if decisions(pool) != expected:
                    failures.append((f"run {run_no} (frozen, not resumed)", "other decisions"))
            for point, copy in zip(points, copies):
                tries += 1
                with Pool.open(copy) as pool:
                    answered_before = _answered(pool)
                served_before = _served(server)
                started = time.monotonic()
                try:
                    resumed = subprocess.run(_cli(["generate", "--resume", "1", "--db", str(copy)]), cwd=ROOT,
                                             capture_output=True, text=True, timeout=resume_timeout_s)
                except subprocess.TimeoutExpired:
                    failures.append((f"{point:.2f} s", f"no end after {resume_timeout_s:.0f} s"))
                    log(f"  {point:6.2f} s: HUNG")
                    continue
                resume_times.append(time.monotonic() - started)
                resent = _served(server) - served_before - (expected_answered - answered_before)
                with Pool.open(copy) as pool:
                    status = pool.runs.get(1)["status"] if pool.runs.get(1) else "no run"
                    got = decisions(pool)
                why = ("exit %d: %s" % (resumed.returncode, resumed.stderr.strip()[-300:]) if resumed.returncode
                       else f"run {status}" if status != "finished"
                       else "other decisions" if got != expected
                       else f"{resent} answered request(s) sent again" if resent > 0 else None)
                if why:
                    failures.append((f"{point:.2f} s", why))
                else:
                    held += 1
                log(f"  {point:6.2f} s: {answered_before:3d} answered before, "
                    f"{resume_times[-1]:.1f} s to resume: {why or 'held'}")
    return {"tries": tries, "held": held, "failures": failures, "run_s": run_s,
            "resume_median_s": statistics.median(resume_times) if resume_times else None,
            "resume_max_s": max(resume_times) if resume_times else None,
            "candidates": len(expected["candidates"]), "instances": len(expected["instances"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moments", type=int, default=120)
    parser.add_argument("--per-run", type=int, default=10, help="moments per frozen run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the moments and of the latencies")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a resume may take")
    parser.add_argument("--workdir", type=Path, help="keep the copies here (default: a temporary folder)")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        result = sweep(workdir, moments=args.moments, rng=random.Random(args.seed), rounds=args.rounds,
                       per_run=args.per_run, concurrency=args.concurrency, resume_timeout_s=args.timeout,
                       log=print)
        total = time.monotonic() - started
    print(f"\nresume sweep: {result['tries']} moments, {result['held']} held, "
          f"{len(result['failures'])} failed; uninterrupted run {result['run_s']:.1f} s "
          f"({result['candidates']} candidates, {result['instances']} instances); resume median "
          f"{result['resume_median_s']:.1f} s, max {result['resume_max_s']:.1f} s; whole sweep {total:.0f} s")
    for moment, why in result["failures"]:
        print(f"  {moment}: {why}")
    return 0 if result["held"] == result["tries"] and not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
