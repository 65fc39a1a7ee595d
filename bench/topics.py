"""Benchmark: topics at scale, the Topics page against the Pool page, and steered generation.

Run from the repository root:

    .venv/bin/python bench/topics.py scale --keep /tmp/topics.duckdb   # 50K accepted + rejects
    .venv/bin/python bench/topics.py page --keep /tmp/topics.duckdb    # Pool vs Topics in chromium
    .venv/bin/python bench/topics.py steer --backend offline --rounds 6
    .venv/bin/python bench/topics.py steer --backend local --rounds 3 --requests 2

1. scale: bench/ui.py's `fill_pool` (the 53 starter seeds, accepted candidates recombined from
   shared/data/instructions_corpus.jsonl and decided by the real filters, rejects with their
   reasons); every text embedded once (bundled WordLlama, timed apart); then `topics.compute`
   timed end to end (k chosen on a sample, k-means over every seed and accepted instruction,
   rejects assigned, names, PCA, stored), three times, median.
2. page: bench/ui.py's server and loads (a new browser context per load, the script timed from
   `goto` until it is idle with its content): Pool then Topics, alternately, `--samples` each, so
   both see the same machine load; medians and their ratio.
3. steer: the same seeds (the starter seeds), two runs of `--rounds` rounds, plain sampling and
   `--steer coverage`, each on a pool of its own, against the offline synthetic model or the
   bundled local model. Afterwards one topic set is computed over the seeds and both runs'
   accepted instructions together (so both arms are measured on the same topics); per round,
   over the seeds and the instructions accepted up to that round: topic entropy (bits), topics
   covered (holding at least one generated instruction), mean nearest-neighbour cosine among the
   generated instructions, and accepted instructions per 100 instruction requests.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # for its sibling bench/ui.py (the package is installed)

from selfinstruct import embed, seeds, topics  # noqa: E402
from selfinstruct.store import Pool  # noqa: E402


def _median(values):
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------- scale
def scale(args) -> dict:
    from ui import fill_pool  # noqa: E402  (bench/ui.py)

    db = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-topics-")) / "pool.duckdb"
    if not db.exists():
        print(f"Filling {db} ({args.accepted:,} accepted, {args.rejects:,} rejects)...", flush=True)
        fill_pool(db, accepted=args.accepted, rejects=args.rejects, rounds=20, log=lambda *a: None)
    out: dict = {"db": str(db)}
    with Pool.open(db) as pool:
        emb = embed.bundled()
        texts = pool.topics.items()["text"]
        started = time.perf_counter()
        done = embed.ensure_vectors(pool, emb, texts)
        out["embed_s"], out["embedded"] = time.perf_counter() - started, done
        out["items"], out["fitted"] = len(texts), pool.topics.pool_size()
        times = []
        for _ in range(args.samples):
            started = time.perf_counter()
            set_id = topics.compute(pool, embedder=emb)
            times.append(time.perf_counter() - started)
        found = pool.topics.get_set(set_id)
        out.update(compute_s=times, compute_median_s=_median(times), k=found["k"])
        # Where the time goes, on the same matrix.
        vectors = pool.embeddings.vectors_for(emb.name, texts)
        fitted = np.asarray(pool.topics.items()["fitted"])
        parts = {}
        started = time.perf_counter()
        result = topics.cluster(vectors, topics.TopicSettings(), fit=fitted)
        parts["cluster_s"] = time.perf_counter() - started
        started = time.perf_counter()
        topics.name_topics([t for t, f in zip(texts, fitted) if f], result.labels[fitted], result.k)
        parts["names_s"] = time.perf_counter() - started
        started = time.perf_counter()
        topics.fit_projection(vectors[fitted]).apply(vectors)
        parts["projection_s"] = time.perf_counter() - started
        out["parts"] = parts
        started = time.perf_counter()
        topics.topic_rows(pool, set_id)
        topics.map_frame(pool, set_id)
        out["page_queries_s"] = time.perf_counter() - started
    print(json.dumps(out, indent=1))
    return out


# ---------------------------------------------------------------------------- page
TOPICS_PAGE = ("topics", "h1text('Topics') && has('[data-testid=stDataFrame] canvas') "
                         "&& count('[data-testid=stVegaLiteChart]') >= 1 && bodytext().includes('item(s)')")


def page(args) -> dict:
    from playwright.sync_api import sync_playwright

    from ui import BROWSER_ARGS, PAGES, Server, _context, free_port, load_once  # noqa: E402

    db = Path(args.keep)
    with Pool.open(db) as pool:
        if topics.current(pool).set is None or topics.current(pool).stale:
            topics.compute(pool)
    pages = {**PAGES, "Topics": TOPICS_PAGE}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results: dict = {"Pool": [], "Topics": []}
    with tempfile.TemporaryDirectory(prefix="bench-topics-") as tmp, Server(db, port, Path(tmp)) as server, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        try:
            def fresh(name):
                context = _context(browser)
                try:
                    return load_once(context, server, base, name, None, args.timeout, pages=pages)
                finally:
                    context.close()
            fresh("Home")
            cold = {name: fresh(name) for name in ("Pool", "Topics")}
            for _ in range(args.samples):
                for name in ("Pool", "Topics"):
                    results[name].append(fresh(name))
        finally:
            browser.close()
    out = {name: {"cold_s": cold[name]["seconds"], "median_s": _median([r["seconds"] for r in runs]),
                  "server_median_s": _median([r["server"] for r in runs])} for name, runs in results.items()}
    out["ratio"] = out["Topics"]["median_s"] / out["Pool"]["median_s"]
    out["server_ratio"] = out["Topics"]["server_median_s"] / out["Pool"]["server_median_s"]
    print(json.dumps(out, indent=1))
    return out


# ---------------------------------------------------------------------------- steer
def _run(db: Path, args, steer: str) -> int:
    from selfinstruct.demo import SyntheticModel
    from selfinstruct.offline import OfflineServer
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import Runner, start_run

    with Pool.open(db) as pool:
        seeds.load_starter_seeds(pool)
        common = dict(rounds=args.rounds, seed=args.seed, steer=steer, requests_per_round=args.requests,
                      example_lag=1)
        if args.backend == "offline":
            with OfflineServer(responder=SyntheticModel(seed=args.seed)) as srv:
                run_id = start_run(pool, RunConfig(base_url=srv.base_url, timeout_s=30, **common))
                outcome = Runner(pool, run_id).run()
        else:
            from selfinstruct import local
            from selfinstruct.backend import defaults_for

            d = defaults_for("local")
            run_id = start_run(pool, RunConfig(backend="local", model=local.model_name(None), mode=d["mode"],
                                               concurrency=d["concurrency"],
                                               timeout_s=d["timeout_s"], **common))
            outcome = Runner(pool, run_id).run()
        print(f"  {steer}: {outcome.status} ({outcome.stop_reason}), {outcome.accepted} accepted", flush=True)
        return run_id


def _arm(db: Path, run_id: int) -> dict:
    with Pool.open(db) as pool:
        cur = pool.cursor()
        cands = cur.execute(
            "SELECT c.instruction, r.number FROM candidates c JOIN rounds r ON r.id = c.round_id "
            "WHERE c.run_id = ? AND c.status = 'accepted' ORDER BY c.id", [run_id]).fetchall()
        requests = dict(cur.execute(
            "SELECT r.number, count(*) FROM requests q JOIN rounds r ON r.id = q.round_id "
            "WHERE q.run_id = ? AND q.stage IN ('instructions', 'batch') GROUP BY r.number", [run_id]).fetchall())
        return {"seeds": pool.explore.seed_instruction_texts(), "accepted": cands, "requests": requests}


def steer(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-steer-"))
    arms = {}
    for mode in ("off", "coverage"):
        db = work / f"{mode}.duckdb"
        started = time.perf_counter()
        run_id = _run(db, args, mode)
        arms[mode] = {**_arm(db, run_id), "seconds": time.perf_counter() - started}
    emb = embed.bundled()
    seed_texts = arms["off"]["seeds"]
    union = list(dict.fromkeys(seed_texts + [t for a in arms.values() for t, _ in a["accepted"]]))
    vectors = embed.normalise(emb.embed(union))
    index = {t: i for i, t in enumerate(union)}
    common = topics.cluster(vectors, topics.TopicSettings(seed=args.seed))
    out: dict = {"backend": args.backend, "rounds": args.rounds, "requests_per_round": args.requests,
                 "common_topics": common.k, "arms": {}}
    for mode, arm in arms.items():
        rows = []
        for n in range(1, args.rounds + 1):
            gen = [t for t, r in arm["accepted"] if r <= n]
            labels = common.labels[[index[t] for t in seed_texts + gen]]
            gen_labels = common.labels[[index[t] for t in gen]]
            reqs = sum(v for k, v in arm["requests"].items() if k <= n)
            rows.append({
                "round": n, "accepted": len(gen),
                "entropy_bits": round(topics.entropy(labels), 3),
                "topics_covered": int(len(set(gen_labels.tolist()))),
                "mean_nn_cosine": round(topics.mean_nn_cosine(vectors[[index[t] for t in gen]]), 4) if len(gen) > 1
                else None,
                "accepted_per_100_requests": round(100 * len(gen) / reqs, 1) if reqs else None})
        out["arms"][mode] = {"seconds": round(arm["seconds"], 1), "per_round": rows}
    last = {m: a["per_round"][-1] for m, a in out["arms"].items()}
    if last["off"]["accepted_per_100_requests"]:
        out["acceptance_change"] = round(last["coverage"]["accepted_per_100_requests"]
                                         / last["off"]["accepted_per_100_requests"] - 1, 3)
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sc = sub.add_parser("scale")
    sc.add_argument("--keep", help="build the pool there, or reuse it")
    sc.add_argument("--accepted", type=int, default=50_000)
    sc.add_argument("--rejects", type=int, default=20_000)
    sc.add_argument("--samples", type=int, default=3)
    sc.set_defaults(func=scale)
    pg = sub.add_parser("page")
    pg.add_argument("--keep", required=True, help="a pool built by `scale`")
    pg.add_argument("--samples", type=int, default=5)
    pg.add_argument("--timeout", type=float, default=120)
    pg.set_defaults(func=page)
    st = sub.add_parser("steer")
    st.add_argument("--backend", choices=("offline", "local"), default="offline")
    st.add_argument("--rounds", type=int, default=6)
    st.add_argument("--requests", type=int, default=8, help="instruction requests per round")
    st.add_argument("--seed", type=int, default=0)
    st.set_defaults(func=steer)
    args = parser.parse_args()
    result = args.func(args)
    if result is not None:
        print("done", flush=True)


if __name__ == "__main__":
    main()
