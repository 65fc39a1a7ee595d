"""The bundled local model on this machine (a benchmark, not a test).

Section "speed": tokens per second of SmolLM2-135M-Instruct (Q4_1) served by llama.cpp
(xllamacpp) on 127.0.0.1, through the real `openai` client: one stream, then DEFAULT_SLOTS
streams at once (the server's slots), each asked for a fixed number of tokens (`ignore_eos`,
so every answer is that long); prompt reading speed from the server's own timings.

Section "modes": the project's pipeline on the bundled model in three settings, side by side,
each `--runs` times (default 3) with the same run seeds (so the same in-context examples):
chat with the text layout (structured off), chat with structured output (JSON schema), and
completion mode (the paper's). For each, one round of `--requests` instruction requests in a
fresh pool of the starter seeds; per stage the answers received, the answers that could be read
(parsed) and the items they yielded (`Pool.parse_health`), the round's wall time, accepted
instructions and kept instances. Medians over the runs. The model samples at temperature 0.7
(0 for classification and instances), so runs differ even with the same run seed.

    .venv/bin/python bench/local_model.py                  # both sections, about 10 min on 2 cores
    .venv/bin/python bench/local_model.py --section speed
    .venv/bin/python bench/local_model.py --section modes --runs 1 --requests 2   # smoke run
    .venv/bin/python bench/local_model.py --section startup   # the server's start: child vs in-process

Results go to bench/results/local_model.json (git-ignored) and are printed as tables.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import openai

from selfinstruct import local, seeds
from selfinstruct.backend import LOCAL
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.prompts import build_instruction_prompt
from selfinstruct.store import Pool

ROOT = Path(__file__).resolve().parent.parent

MODES = {   # label -> RunConfig settings
    "chat, text layout": {"mode": "chat", "structured": "off"},
    "chat, structured": {"mode": "chat", "structured": "on"},
    "completion": {"mode": "completion", "structured": "off"},
}
STAGES = ("instructions", "classify", "instances")


# -- speed ------------------------------------------------------------------------------------
async def _timed_completion(client, model: str, prompt: str, tokens: int) -> dict:
    started = time.perf_counter()
    answer = await client.completions.create(
        model=model, prompt=prompt, max_tokens=tokens, temperature=0.7,
        extra_body={"ignore_eos": True, "cache_prompt": False})
    timings = (answer.model_extra or {}).get("timings") or {}
    return {"seconds": time.perf_counter() - started, "completion_tokens": answer.usage.completion_tokens,
            "prompt_tokens": answer.usage.prompt_tokens, "prompt_per_second": timings.get("prompt_per_second")}


async def _speed(base_url: str, model: str, tokens: int, repeats: int) -> dict:
    seed_texts = [t.instruction for t in seeds.read_seed_file(seeds.STARTER_SEEDS_PATH).tasks[:8]]
    prompt = build_instruction_prompt(seed_texts).text
    async with openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=600) as client:
        await _timed_completion(client, model, prompt, 8)   # warm-up
        single, parallel = [], []
        for _ in range(repeats):
            one = await _timed_completion(client, model, prompt, tokens)
            single.append(one)
            started = time.perf_counter()
            many = await asyncio.gather(*[_timed_completion(client, model, prompt, tokens)
                                          for _ in range(local.DEFAULT_SLOTS)])
            wall = time.perf_counter() - started
            parallel.append({"seconds": wall, "completion_tokens": sum(m["completion_tokens"] for m in many)})
    return {
        "prompt_tokens": single[0]["prompt_tokens"],
        "prompt_tokens_per_s": statistics.median(s["prompt_per_second"] or 0 for s in single),
        "one_stream_tokens_per_s": statistics.median(s["completion_tokens"] / s["seconds"] for s in single),
        "slots": local.DEFAULT_SLOTS,
        "all_slots_tokens_per_s": statistics.median(p["completion_tokens"] / p["seconds"] for p in parallel),
        "tokens_per_answer": tokens, "repeats": repeats,
    }


def section_speed(args) -> dict:
    with local.LocalModel(threads=args.threads) as model:
        result = asyncio.run(_speed(model.base_url, model.model, args.tokens, args.repeats))
    result["threads"] = args.threads or local.default_threads()
    print(f"\nspeed ({result['threads']} threads, {result['tokens_per_answer']} tokens per answer, "
          f"median of {result['repeats']}):")
    print(f"  prompt reading      {result['prompt_tokens_per_s']:8.0f} tokens/s  ({result['prompt_tokens']}-token prompt)")
    print(f"  one stream          {result['one_stream_tokens_per_s']:8.1f} tokens/s")
    print(f"  {result['slots']} streams at once   {result['all_slots_tokens_per_s']:8.1f} tokens/s in total")
    return result


# -- modes ------------------------------------------------------------------------------------
def _health(pool: Pool, run_id: int) -> dict:
    rows = {row["stage"]: row for row in pool.runs.parse_health(run_id)}
    return {stage: {k: rows.get(stage, {}).get(k, 0) for k in ("answers", "parsed", "items", "structured")}
            for stage in STAGES}


def one_run(settings: dict, seed: int, requests: int, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp, Pool.open(Path(tmp) / "pool.duckdb") as pool:
        seeds.load_starter_seeds(pool)
        config = RunConfig(backend=LOCAL, model=local.model_name(None), threads=threads,
                           requests_per_round=requests, rounds=1, concurrency=local.DEFAULT_SLOTS,
                           timeout_s=300, seed=seed, **settings)
        run_id = start_run(pool, config)
        started = time.perf_counter()
        outcome = Runner(pool, run_id).run()
        seconds = time.perf_counter() - started
        if outcome.status != "finished":
            raise SystemExit(f"run failed: {outcome}")
        return {"seed": seed, "seconds": seconds, "accepted": outcome.accepted,
                "instances": int(pool.runs.round_summaries(run_id)["instances"].sum()),
                "tokens": pool.runs.usage(run_id).get("tokens"), "structured": pool.runs.get(run_id).get("structured"),
                "health": _health(pool, run_id)}


def _median(runs: list[dict], get) -> float:
    return statistics.median(get(r) for r in runs)


def section_modes(args) -> dict:
    results = {}
    for label, settings in MODES.items():
        runs = []
        for seed in range(args.runs):
            run = one_run(settings, seed, args.requests, args.threads)
            runs.append(run)
            h = run["health"]
            print(f"  {label:<18} seed {seed}: {run['seconds']:5.1f} s, {run['accepted']} accepted, "
                  f"{run['instances']} instances; " + ", ".join(
                      f"{s} {h[s]['parsed']}/{h[s]['answers']} ({h[s]['items']} items)" for s in STAGES), flush=True)
        results[label] = runs
    print(f"\nmodes: median of {args.runs} run(s) of 1 round, {args.requests} instruction requests each "
          f"(parsed/answers, items):")
    header = "| mode | s per round | accepted | instances | " + " | ".join(STAGES) + " |"
    print(header)
    print("|---" + "|---:" * (len(STAGES) + 3) + "|")
    for label, runs in results.items():
        cells = []
        for stage in STAGES:
            answers = _median(runs, lambda r: r["health"][stage]["answers"])
            parsed = _median(runs, lambda r: r["health"][stage]["parsed"])
            items = _median(runs, lambda r: r["health"][stage]["items"])
            rate = _median(runs, lambda r: r["health"][stage]["parsed"] / r["health"][stage]["answers"]
                           if r["health"][stage]["answers"] else 0.0)
            cells.append(f"{parsed:g}/{answers:g} ({rate:.0%}), {items:g} items")
        print(f"| {label} | {_median(runs, lambda r: r['seconds']):.1f} | {_median(runs, lambda r: r['accepted']):g} "
              f"| {_median(runs, lambda r: r['instances']):g} | " + " | ".join(cells) + " |")
    return results


_IN_PROCESS = """
import sys, time
t = time.perf_counter()
from selfinstruct import local
key = local._Key(str(local.resolve_gguf(None)), int(sys.argv[1]), local.DEFAULT_CTX_SIZE, local.DEFAULT_SLOTS)
server = local._server_params(key)
print(time.perf_counter() - t, flush=True)
import os; os._exit(0)
"""


def section_startup(args) -> dict:
    """Seconds from asking for the bundled model to an address that answers: the server in a
    child process (`LocalModel.start()`, what runs use) against xllamacpp in the asking process
    (how it ran before the child), alternating, `--repeats` times each. Each in-process start runs
    in a fresh Python whose imports are counted, as the child's are."""
    import subprocess
    import sys

    threads = args.threads or local.default_threads()
    child, in_process = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model = local.LocalModel(threads=threads).start()
        child.append(time.perf_counter() - started)
        model.stop()
        done = subprocess.run([sys.executable, "-c", _IN_PROCESS, str(threads)], capture_output=True, text=True,
                              check=True, cwd=ROOT)
        in_process.append(float(done.stdout.strip().splitlines()[-1]))
    result = {"threads": threads, "child_s": child, "in_process_s": in_process,
              "child_median_s": statistics.median(child), "in_process_median_s": statistics.median(in_process)}
    print(f"\nstartup ({threads} threads, median of {args.repeats}): child process "
          f"{result['child_median_s']:.2f} s, in the asking process {result['in_process_median_s']:.2f} s")
    return result


SECTIONS = {"speed": section_speed, "modes": section_modes, "startup": section_startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=list(SECTIONS), action="append",
                        help="run only this section (repeatable; default: all)")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--tokens", type=int, default=256, help="speed: tokens per answer")
    parser.add_argument("--repeats", type=int, default=3, help="speed: measurements per figure")
    parser.add_argument("--runs", type=int, default=3, help="modes: runs per mode (seeds 0..runs-1)")
    parser.add_argument("--requests", type=int, default=4, help="modes: instruction requests per round")
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
               "model": local.BUNDLED_FILE}
    for name in args.section or list(SECTIONS):
        results[name] = SECTIONS[name](args)
    results["machine"]["load_after"] = os.getloadavg()
    out = ROOT / "bench" / "results" / "local_model.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
