"""429 storms at random moments (issue 22, item 4): does a run with the default settings ride
them out, and what do they cost?

Each try starts a generation run against the offline server with the default retries, failure
streak and rate-limit patience, and at a seeded random moment (0 to 3 s in) the server answers
429 to every request (or 90 % of them) for a seeded random 5 to 20 s, with Retry-After 1 or 2.
A try *held* when the run finished; the table gives each try's storm, the run's wall time and the
429s it saw, and a last line the count held. A storm longer than the patience would fail the run
by design: the patience here is the default, 10 minutes.

    .venv/bin/python bench/rate_limit_storms.py --tries 10 --seed 1
"""
from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

from selfinstruct import seeds
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.store import Pool


def one_try(rng: random.Random, workdir: Path, k: int) -> dict:
    start, length = rng.uniform(0, 3), rng.uniform(5, 20)
    share, retry_after = rng.choice((1.0, 0.9)), rng.choice((1, 2))
    with Pool.open(workdir / f"pool{k}.duckdb") as pool, OfflineServer(seed=k, latency_s=0.05) as server:
        seeds.load_starter_seeds(pool)
        config = RunConfig(backend="openai-compatible", base_url=server.base_url, model="selfinstruct-demo",
                           structured="off", rounds=2, requests_per_round=8, seed=k)
        run_id = start_run(pool, config)

        def begin():
            server.faults.set_rates({"429": share}, seed=k, params={"429": {"retry_after": retry_after}})
            stop = threading.Timer(length, lambda: server.faults.set_rates({}))
            stop.daemon = True
            stop.start()

        timer = threading.Timer(start, begin)
        timer.daemon = True
        timer.start()
        t0 = time.monotonic()
        outcome = Runner(pool, run_id).run()
        took = time.monotonic() - t0
        limited = server.stats["by_status"].get("429", 0)
    return {"start": start, "length": length, "share": share, "retry_after": retry_after,
            "status": outcome.status, "seconds": took, "429s": limited, "accepted": outcome.accepted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    held = 0
    print(f"{'try':>3} {'start s':>7} {'storm s':>7} {'429 share':>9} {'R-A':>3} {'status':>8} {'run s':>6} "
          f"{'429s':>5} {'accepted':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.tries):
            r = one_try(rng, Path(tmp), k)
            held += r["status"] == "finished"
            print(f"{k:>3} {r['start']:>7.1f} {r['length']:>7.1f} {r['share']:>9.0%} {r['retry_after']:>3} "
                  f"{r['status']:>8} {r['seconds']:>6.1f} {r['429s']:>5} {r['accepted']:>8}", flush=True)
    print(f"held: {held} of {args.tries}")


if __name__ == "__main__":
    main()
