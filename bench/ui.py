"""Benchmark: how fast each page of the app renders on a large pool, in a real browser.

Run from the repository root:

    .venv/bin/python bench/ui.py                      # 50K accepted, 100K instances, 100K rejects
    .venv/bin/python bench/ui.py --quick              # 5K / 10K / 10K, 3 samples: a fast check
    .venv/bin/python bench/ui.py --keep /tmp/ui.duckdb     # build the pool there, or reuse it
    .venv/bin/python bench/ui.py --profile-only --keep /tmp/ui.duckdb   # store queries only

1. The pool. Filled without a model and without the pipeline, but with the pipeline's own
   decisions so the rows look like what a run writes: the 53 starter seeds; one finished run of
   `--rounds` rounds; candidates made by recombining real instructions
   (shared/data/instructions_corpus.jsonl, through bench/novelty.py's `Generator`) and decided
   by `InstructionFilter` and an exact `NoveltyIndex` exactly as `decide_instruction` does
   (accepted ones join the index; ROUGE-L rejects carry the threshold and their 10 nearest pool
   instructions with scores); heuristic rejects (keyword, too short, "Write a program", ...)
   made by mutating instructions until the filter rejects them for that reason, so their
   evidence (keyword spans, word counts) is the filter's own; "unparseable" fragments as the
   parser reports them. Every candidate points at the generation request whose numbered-list
   answer holds it; each accepted one has a classify and an instances request (real prompts
   from selfinstruct.prompts), one to three kept instances (real input/output pairs from the
   bundled corpora) and now and then rejected instances with the instance filter's reasons.
   Then a few hundred human reviews (rescue, confirm, approve, edit, remove: audited, through
   the Pool API) and a 200-item quality study with two annotators' labels. All rows go in
   with DuckDB bulk inserts from Arrow tables.
2. Store queries, without the app: for each page the pool calls it makes on its first run,
   each timed (median of `--query-samples`); and the search queries of the Rejects and Pool
   pages (median of `--query-samples`).
3. The browser. `streamlit run app.py` on the pool (started as `bench/ui.py --serve`, which runs
   Streamlit's own command line with one hook: the wall and CPU time of every script run is
   logged, so a load splits into server time and the rest); Playwright with the system
   chromium. The root URL is opened once first (a deep link before any session ran app.py is
   sent to Home). Then, per page, a cold first load ("cold (first ever)": the first time this
   server process renders the page: module imports, caches filled), then `--samples` loads,
   each in a new browser context (empty HTTP cache, new session: nothing in session state, but
   the server's process-wide caches stay warm, as they would for a second user), then
   `--samples` loads in new tabs of one context that has seen every page (cached static
   files). A load is timed from `page.goto` to the moment the script has finished
   (`stApp[data-test-script-state=notRunning]`) and the page's own content is there (its
   title and its main table, chart or metric). Searches: on Rejects and Pool, a term is typed
   in the search box and the time from Enter until the page shows that term's row count and
   the script has finished.
4. A reference: the same measure on a two-line Streamlit app, the floor every page stands on.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selfinstruct import actions, prompts
from selfinstruct.filters import InstructionFilter, filter_instances
from selfinstruct.novelty import NoveltyIndex
from selfinstruct.parsing import TRUNCATED
from selfinstruct.decisions import TOP_K_EVIDENCE
from selfinstruct.settings import RunConfig
from selfinstruct.store import Pool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # for its sibling bench/novelty.py (the package is installed)

from novelty import Generator, load_instructions  # noqa: E402  (bench/novelty.py)


SHARED = ROOT.parent / "shared" / "data"
INSTANCE_SOURCES = [ROOT / "data" / "demo_corpus.jsonl", SHARED / "selfinstruct_seed_tasks.jsonl",
                    SHARED / "selfinstruct_user_oriented_instructions.jsonl", ROOT / "data" / "seed_tasks.jsonl"]

# Share of each reason among instruction rejects (ROUGE-L takes the rest). At 50K accepted the
# novelty filter is the main cause, as in the paper's runs and bench/novelty.py.
HEURISTIC_MIX = {"keyword": 0.12, "too_short": 0.07, "unparseable": 0.05, "write_a_program": 0.03,
                 "starts_with_punctuation": 0.03, "too_long": 0.015, "non_ascii_start": 0.015}
INSTANCE_REJECT_SHARE = 0.04       # accepted candidates with some rejected instances
THRESHOLD = 0.7
KEYWORD_PHRASES = [
    "using the image below", "and draw a graph of the result", "from the attached file",
    "as shown in the picture", "and plot the values", "on a map of the region", "in the images provided",
    "and save it to a file", "with a simple graph", "Go to the website and", "based on the maps",
    "and draw a diagram of it"]
PREAMBLES = ["Sure! Here are some more tasks:", "Here are eight new tasks for the list.",
             "I hope these help!", "Note: some of these tasks may need extra context.",
             "Let me know if you would like more examples.", "Tasks 9 to 16 follow."]


# =============================================================================== the pool
def _instance_bank() -> list[tuple[str, str]]:
    pairs = []
    for path in INSTANCE_SOURCES:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                for inst in row.get("instances") or []:
                    inp, out = str(inst.get("input") or "").strip(), str(inst.get("output") or "").strip()
                    if out and inp != out and not inp.endswith(":") and not out.endswith(":"):
                        pairs.append((inp, out))
    return pairs or [("", "An answer.")]


class Decider:
    """Candidates decided as `decisions.decide_instruction` decides them, with quotas per outcome."""

    def __init__(self, seeds: list[str], corpus: list[str], *, accepted: int, rejects: int, seed: int):
        self.rng = random.Random(seed)
        self.gen = Generator(corpus, seed)
        self.corpus = corpus
        self.filter = InstructionFilter()
        self.index = NoveltyIndex(seeds)
        self.pool: list[str] = []
        heuristic = {k: int(round(rejects * share)) for k, share in HEURISTIC_MIX.items()}
        self.want = {"accepted": accepted, "rouge": rejects - sum(heuristic.values()), **heuristic}
        self.have = {k: 0 for k in self.want}
        self.rows: list[dict] = []

    def left(self, kind: str) -> int:
        return self.want[kind] - self.have[kind]

    def _record(self, row: dict) -> None:
        kind = row["reason"] or "accepted"
        self.have[kind] += 1
        self.rows.append(row)

    def _mutate(self, kind: str) -> str:
        rng, text = self.rng, self.gen.one()
        if kind == "keyword":
            phrase = rng.choice(KEYWORD_PHRASES)
            if phrase[0].isupper():
                return f"{phrase} {text[0].lower()}{text[1:]}"
            return f"{text.rstrip('.?!')} {phrase}."
        if kind == "too_short":
            return " ".join(text.split()[:rng.randint(1, 3)])
        if kind == "too_long":
            return " ".join(rng.choice(self.corpus) for _ in range(rng.randint(10, 16)))
        if kind == "write_a_program":
            return "Write a program that " + text[0].lower() + text[1:]
        if kind == "starts_with_punctuation":
            return rng.choice(['"', "- ", "* ", "(", "# ", "... "]) + text
        if kind == "non_ascii_start":
            return rng.choice(["• ", "“", "– ", "¿", "→ "]) + text
        raise ValueError(kind)

    def _unparseable(self) -> dict:
        rng = self.rng
        if rng.random() < 0.3:
            text = f"{TRUNCATED}: " + " ".join(self.gen.one().split()[:rng.randint(3, 9)])
        else:
            text = "not a list item: " + rng.choice(PREAMBLES)
        return {"instruction": text, "status": "rejected", "reason": "unparseable",
                "details": {"message": "The model's answer could not be read as a task.",
                            "finish_reason": "length" if text.startswith(TRUNCATED) else "stop"}}

    def _decide(self, text: str) -> dict | None:
        rejection = self.filter.check(text)
        if rejection is not None:
            if rejection.reason not in self.want or not self.left(rejection.reason):
                return None
            return {"instruction": text, "status": "rejected", "reason": rejection.reason,
                    "details": {"message": rejection.message, **rejection.evidence}}
        best, best_id = self.index.max_similarity(text)
        nearest_text = self.index.text(best_id) if best_id is not None else None
        if best > THRESHOLD:
            if not self.left("rouge"):
                return None
            evidence = [{"text": self.index.text(i), "score": s}
                        for i, s in self.index.most_similar(text, k=TOP_K_EVIDENCE)]
            return {"instruction": text, "status": "rejected", "reason": "rouge", "max_rouge": best,
                    "nearest_text": nearest_text, "details": {
                        "message": f"ROUGE-L {best:.3f} with a pool instruction is above the threshold {THRESHOLD}.",
                        "threshold": THRESHOLD, "nearest": evidence}}
        if not self.left("accepted"):
            return None
        self.index.add(text)
        self.pool.append(text)
        nearest = [{"text": nearest_text, "score": best}] if best_id is not None else []
        return {"instruction": text, "status": "accepted", "reason": None, "max_rouge": best,
                "nearest_text": nearest_text, "details": {"threshold": THRESHOLD, "nearest": nearest}}

    def run(self, progress=None) -> list[dict]:
        rng = self.rng
        heuristic = list(HEURISTIC_MIX)
        total = sum(self.want.values())
        tries = 0
        while len(self.rows) < total:
            tries += 1
            if tries > 50 * total:
                raise RuntimeError(f"could not reach the quotas: {self.have} of {self.want}")
            left_h = {k: self.left(k) for k in heuristic if self.left(k) > 0}
            left_main = self.left("accepted") + self.left("rouge")
            if left_h and rng.random() < sum(left_h.values()) / (sum(left_h.values()) + left_main):
                kind = rng.choices(list(left_h), weights=list(left_h.values()))[0]
                row = self._unparseable() if kind == "unparseable" else self._decide(self._mutate(kind))
            else:
                # Near-copies of pooled items are what the novelty filter rejects; ask for more of
                # them while ROUGE-L rejects lag behind the accepted ones.
                behind = self.have["rouge"] / max(1, self.want["rouge"]) < \
                    self.have["accepted"] / max(1, self.want["accepted"])
                near = self.pool and (not self.left("accepted") or rng.random() < (0.6 if behind else 0.15))
                row = self._decide(self.gen.near(rng.choice(self.pool)) if near else self.gen.one())
            if row is not None:
                self._record(row)
                if progress and len(self.rows) % 20000 == 0:
                    progress(len(self.rows), total)
        return self.rows


def _instances_for(rng: random.Random, bank: list[tuple[str, str]], clf: bool) -> list[dict]:
    n = rng.choices([1, 2, 3], weights=[0.2, 0.6, 0.2])[0]
    rows = []
    for _ in range(n):
        inp, out = rng.choice(bank)
        if clf and not inp:
            inp = rng.choice(bank)[1][:200]
        rows.append({"input": inp, "output": out})
    if rng.random() < INSTANCE_REJECT_SHARE:
        kind = rng.choice(["duplicate", "conflict", "truncated", "same", "empty"])
        extra = {"duplicate": dict(rows[0]),
                 "conflict": {"input": rows[0]["input"] or "x", "output": rows[0]["output"] + " (or not)"},
                 "truncated": {"input": rng.choice(bank)[0], "output": "The answer is as follows:"},
                 "same": {"input": "the same text", "output": "the same text"},
                 "empty": {"input": rng.choice(bank)[0], "output": ""}}[kind]
        rows.append(extra)
    kept, rejected = filter_instances(rows)
    out = [{**r, "status": "kept", "reason": None, "details": None} for r in kept]
    out += [{**r, "status": "rejected", "reason": why.reason, "details": {"message": why.message, **why.evidence}}
            for r, why in rejected]
    return out


def fill_pool(path: Path, *, accepted: int, rejects: int, rounds: int, seed: int = 0, log=print) -> dict:
    """Fill a new pool at `path` (see the module docstring). Returns what went in and timings."""
    import pyarrow as pa

    from selfinstruct import quality
    from selfinstruct.seeds import load_starter_seeds

    started = time.perf_counter()
    rng = random.Random(seed)
    corpus = load_instructions()
    bank = _instance_bank()
    pool = Pool.open(path)
    try:
        load_starter_seeds(pool, actor="bench")
        seeds = pool.explore.seed_instruction_texts()
        cfg = RunConfig(model="bench-model", backend="openai-compatible", base_url="http://127.0.0.1:9/v1",
                        rounds=rounds, seed=seed)
        run_id = pool.runs.create(cfg.to_dict(), name="bench", actor="bench")
        log(f"  deciding {accepted:,} accepted + {rejects:,} rejected candidates ...")
        t_decide = time.perf_counter()
        decider = Decider(seeds, corpus, accepted=accepted, rejects=rejects, seed=seed)
        rows = decider.run(lambda n, total: log(f"    {n:,} / {total:,} ({time.perf_counter() - t_decide:.0f} s)"))
        decide_s = time.perf_counter() - t_decide
        log(f"  decided in {decide_s:.0f} s; writing ...")

        t0 = dt.datetime(2026, 1, 5, 9, 0, 0)
        round_ids = [pool.runs.create_round(run_id, n + 1, "done") for n in range(rounds)]
        for n, round_id in enumerate(round_ids):
            pool.bulk.set_round_times(round_id, t0 + dt.timedelta(seconds=90 * n),
                                 t0 + dt.timedelta(seconds=90 * n + 80))
        next_cand = pool.bulk.next_id("candidates")
        next_req = pool.bulk.next_id("requests")

        meta_instr = {"stage": "instructions", "system": prompts.SYSTEM_INSTRUCTIONS,
                      "stop": ["\n\n", "\n17."],
                      "prompt_meta": {"start_index": 9, "stop_index": 17, "num_to_generate": 8, "num_examples": 8}}
        req: dict[str, list] = {k: [] for k in (
            "id", "round_id", "stage", "position", "prompt_version", "prompt", "meta", "response",
            "finish_reason", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "created_at",
            "completed_at")}
        cand: dict[str, list] = {k: [] for k in (
            "id", "round_id", "request_id", "position", "instruction", "status", "reason", "details",
            "max_rouge", "nearest_text", "is_classification")}
        inst: dict[str, list] = {k: [] for k in (
            "candidate_id", "request_id", "position", "input", "output", "status", "reason", "details")}

        def add_request(round_id, stage, position, prompt, meta, response, when):
            rid = next_req + len(req["id"])
            ptok, ctok = math.ceil(len(prompt.full_text()) / 4), max(1, math.ceil(len(response) / 4))
            latency = round(rng.uniform(1.0, 9.0), 2)
            for k, v in (("id", rid), ("round_id", round_id), ("stage", stage), ("position", position),
                         ("prompt_version", prompt.version), ("prompt", prompt.full_text()),
                         ("meta", json.dumps(meta)), ("response", response), ("finish_reason", "stop"),
                         ("prompt_tokens", ptok), ("completion_tokens", ctok),
                         ("cost_usd", ptok * 0.15e-6 + ctok * 0.6e-6),
                         ("latency_s", latency), ("created_at", when),
                         ("completed_at", when + dt.timedelta(seconds=latency))):
                req[k].append(v)
            return rid

        per_round = math.ceil(len(rows) / rounds)
        accepted_so_far: list[str] = []
        for r_index, round_id in enumerate(round_ids):
            chunk = rows[r_index * per_round:(r_index + 1) * per_round]
            when = t0 + dt.timedelta(seconds=90 * r_index)
            # the generation requests: 8 candidates per numbered-list answer
            for g in range(0, len(chunk), 8):
                group = chunk[g:g + 8]
                examples = rng.sample(seeds, 6) + (rng.sample(accepted_so_far, 2) if len(accepted_so_far) > 2 else [])
                prompt = prompts.build_instruction_prompt(examples, num_to_generate=8)
                answer = "\n".join(f"{9 + i}. {c['instruction']}" for i, c in enumerate(group))
                rid = add_request(round_id, "instructions", g // 8, prompt, meta_instr, answer, when)
                for i, c in enumerate(group):
                    c["request_id"], c["position"] = rid, g + i
            follow = 0
            for c in chunk:
                cid = next_cand + len(cand["id"])
                clf = None
                if c["status"] == "accepted":
                    accepted_so_far.append(c["instruction"])
                    clf = rng.random() < 0.12
                    p = prompts.build_classify_prompt(c["instruction"])
                    add_request(round_id, "classify", follow, p,
                                {"stage": "classify", "system": p.system, "prompt_meta": p.meta, "candidate_id": cid},
                                "Yes" if clf else "No", when)
                    p = prompts.build_instance_prompt(c["instruction"], clf)
                    made = _instances_for(rng, bank, clf)
                    answer = "\n\n".join(f"Example {i + 1}\nInput: {m['input'] or '(none)'}\nOutput: {m['output']}"
                                         for i, m in enumerate(made))
                    irid = add_request(round_id, "instances", follow, p,
                                       {"stage": "instances", "system": p.system, "prompt_meta": p.meta,
                                        "candidate_id": cid, "is_classification": clf}, answer, when)
                    follow += 1
                    for pos, m in enumerate(made):
                        for k, v in (("candidate_id", cid), ("request_id", irid), ("position", pos),
                                     ("input", m["input"]), ("output", m["output"]), ("status", m["status"]),
                                     ("reason", m["reason"]),
                                     ("details", None if m["details"] is None else json.dumps(m["details"]))):
                            inst[k].append(v)
                for k, v in (("id", cid), ("round_id", round_id), ("request_id", c["request_id"]),
                             ("position", c["position"]), ("instruction", c["instruction"]),
                             ("status", c["status"]), ("reason", c["reason"]),
                             ("details", json.dumps(c["details"], ensure_ascii=False)),
                             ("max_rouge", c.get("max_rouge")), ("nearest_text", c.get("nearest_text")),
                             ("is_classification", clf)):
                    cand[k].append(v)

        n_req = pool.bulk.bulk_insert("requests", pa.table(req), constants={
            "run_id": run_id, "model": "bench-model", "mode": "chat", "attempts": 1})
        pool.bulk.bulk_insert("candidates", pa.table(cand), constants={"run_id": run_id})
        pool.bulk.bulk_insert("instances", pa.table(inst))
        pool.runs.set_status(run_id, "finished", stop_reason="rounds")
        pool.bulk.checkpoint()

        # A few hundred human actions, through the audited API, as people would have made them.
        rej_ids = pool.bulk.candidate_ids(status="rejected", exclude_reasons=["unparseable"])
        acc_ids = pool.bulk.candidate_ids(status="accepted")
        picks = rng.sample(rej_ids, min(len(rej_ids), 600))
        for actor, part in (("dana", picks[:150]), ("lee", picks[150:300])):
            for start in range(0, len(part), 50):
                actions.rescue(pool, part[start:start + 50], actor=actor, reason="bench: looks fine")
        for start in range(300, len(picks), 50):
            actions.confirm(pool, picks[start:start + 50], actor="dana", reason="bench: agreed")
        for cid in rng.sample(acc_ids, min(len(acc_ids), 120)):
            actions.approve(pool, cid, actor="lee")
        for cid in rng.sample(acc_ids, min(len(acc_ids), 20)):
            try:
                actions.edit_instruction(pool, cid, pool.explore.pool_item(cid)["instruction"] + " Be brief.", actor="dana")
            except Exception:
                pass
        for cid in rng.sample(acc_ids, min(len(acc_ids), 15)):
            try:
                actions.remove(pool, cid, actor="dana", reason="bench: off topic")
            except Exception:
                pass

        created = quality.create_study(pool, "Bench study", size=200, seed=seed, actor="dana")
        items = pool.bulk.study_item_ids(created.study_id)
        answers = ["yes"] * 8 + ["no", "unsure"]
        for annotator, share in (("dana", 1.0), ("lee", 0.6)):
            for item_id in items[:int(len(items) * share)]:
                pool.quality.save_label(created.study_id, item_id, annotator, valid_task=rng.choice(answers),
                                input_ok=rng.choice(answers), output_ok=rng.choice(answers))
        pool.bulk.checkpoint()
        counts = pool.counts().as_dict()
    finally:
        pool.close()
    return {"seconds": time.perf_counter() - started, "decide_seconds": decide_s, "requests": n_req,
            "rejected_instances": sum(1 for s in inst["status"] if s == "rejected"), **counts}


# =============================================================================== store profile
def _median_ms(fn, n: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), result


def page_calls(pool) -> dict[str, list[tuple[str, object]]]:
    """The pool calls each page makes on its first run (defaults, no interaction), as the
    pages make them; plus the sidebar's, which every page runs."""
    from selfinstruct import monitor, review
    from selfinstruct.export import ExportFilters, ExportOptions, preview_records
    from selfinstruct.pipeline import estimate_run

    run_id = pool.runs.all()[0]["id"] if pool.runs.all() else None
    q = review.RejectQuery()
    counts = review.reason_counts(pool, q)
    first = review.load_page(pool, q, 1, 50, counts=counts).rows
    first_id = int(first["id"].iloc[0]) if len(first) else None
    studies = pool.quality.studies()
    study_id = studies[0]["id"] if studies else None
    filters = ExportFilters().for_format("selfinstruct")
    return {
        "(sidebar)": [("counts", pool.counts)],
        "Home": [("counts", pool.counts)],
        "Seed": [("seed_table", pool.seeds.seed_table)],
        "Generate": [("counts", pool.counts), ("estimate_run", lambda: estimate_run(pool, RunConfig())),
                     ("runs", pool.runs.all), ("monitor.run_view", lambda: monitor.run_view(pool, run_id))],
        "Rejects": [("explore_version", pool.explore.explore_version),
                    ("reason_counts", lambda: review.reason_counts(pool, q)),
                    ("reject_reasons", lambda: pool.review.reject_reasons("instruction")),
                    ("load_page", lambda: review.load_page(pool, q, 1, 50, counts=counts)),
                    ("candidate_detail+explain", lambda: review.explain_candidate(
                        pool.review.candidate_detail(first_id), k=10)),
                    ("rescue_warnings", lambda: review.rescue_warnings(pool, pool.review.candidate_detail(first_id))),
                    ("review_history", lambda: pool.review.review_history("candidate", first_id)),
                    ("review_log", lambda: actions.history(pool, actions.REJECTS_ACTIONS, limit=10)),
                    ("rouge_whatif", lambda: pool.review.rouge_whatif(0.7)),
                    # st.cache_data in the page, keyed on explore_version: paid once per change of the pool
                    ("[cached] reject_runs", pool.review.reject_runs), ("[cached] reject_rounds", pool.review.reject_rounds),
                    ("[cached] rouge_thresholds", pool.review.rouge_thresholds),
                    ("[cached] rouge_histogram", lambda: pool.review.rouge_histogram(bins=20)),
                    ("[cached] keyword_rejects", pool.review.keyword_rejects)],
        "Pool": [("counts", pool.counts), ("pool_runs", pool.explore.pool_runs),
                 ("pool_browse_count", lambda: pool.explore.pool_browse_count("")),
                 ("pool_browse", lambda: pool.explore.pool_browse("", limit=50, offset=0)),
                 ("pool_actions", lambda: actions.history(pool, actions.POOL_ACTIONS, undos=False, limit=8))],
        "Label": [("studies", pool.quality.studies), ("quality_scope", pool.quality.quality_scope),
                  ("study_progress", lambda: pool.quality.study_progress(study_id, "user") if study_id else None)],
        "Export": [("counts", pool.counts), ("pool_runs", pool.explore.pool_runs),
                   ("export_counts", lambda: pool.explore.export_counts(filters)),
                   ("export_preview", lambda: pool.explore.export_preview(filters, 20)),
                   ("preview_records", lambda: preview_records(pool, "selfinstruct", filters, ExportOptions(),
                                                               limit=3))],
    }


def profile_store(db: Path, n: int) -> dict[str, list[tuple[str, float]]]:
    out = {}
    with Pool.open(db) as pool:
        for page, calls in page_calls(pool).items():
            out[page] = [(name, _median_ms(fn, n)[0]) for name, fn in calls]
    return out


def search_terms(db: Path, n_terms: int) -> dict[str, list[tuple[str, int]]]:
    """Search terms for each page, with the row count each gives (counts differ from one term
    to the next, so the page visibly changes)."""
    from selfinstruct import review

    candidates = ["email", "poem", "summarize", "customer", "recipe", "list", "movie", "python",
                  "sentence", "story", "write", "explain", "company", "health", "music", "travel",
                  "student", "product", "weather", "history"]
    out: dict[str, list[tuple[str, int]]] = {"Rejects": [], "Pool": []}
    with Pool.open(db, read_only=True) as pool:
        for page in out:
            previous = None
            for term in candidates:
                if page == "Rejects":
                    total = review.matching_total(review.reason_counts(pool, review.RejectQuery(search=term)), ())
                else:
                    total = pool.explore.pool_browse_count(term)
                if total and total != previous:
                    out[page].append((term, total))
                    previous = total
                if len(out[page]) == n_terms:
                    break
    return out


def time_search_queries(db: Path, terms: dict, n: int) -> dict[str, float]:
    """Median ms of what a search runs in the store: Rejects: reason counts + the page of rows;
    Pool: the count + the page of rows. Each term timed `n` times; the median over all."""
    from selfinstruct import review

    out = {}
    with Pool.open(db, read_only=True) as pool:
        times = []
        for term, _ in terms["Rejects"]:
            q = review.RejectQuery(search=term)
            times += [_median_ms(lambda: review.load_page(pool, q, 1, 50, counts=review.reason_counts(pool, q)), n)[0]]
        out["Rejects"] = statistics.median(times)
        times = []
        for term, _ in terms["Pool"]:
            times += [_median_ms(lambda: (pool.explore.pool_browse_count(term), pool.explore.pool_browse(term, limit=50)), n)[0]]
        out["Pool"] = statistics.median(times)
    return out


# =============================================================================== browser
PAGES = {
    # name: (url path, JS condition on the page that says its main content is there)
    "Home": ("", "h1text('selfinstruct') && count('[data-testid=stMetricValue]') >= 6"),
    "Seed": ("seed", "h1text('Seed tasks') && has('[data-testid=stDataFrame] canvas') "
                     "&& bodytext().includes('seed tasks')"),
    "Generate": ("generate", "h1text('Generate') && has('[data-testid=stDataFrame] canvas') "
                             "&& count('[data-testid=stVegaLiteChart]') >= 3 "
                             "&& count('[data-testid=stMetricValue]') >= 10"),
    "Rejects": ("rejects", "h1text('Rejects') && has('[data-testid=stDataFrame] canvas') "
                           "&& bodytext().includes('rejected instructions to review') "
                           "&& bodytext().includes('Evidence') && bodytext().includes('Confirm rejection')"),
    "Pool": ("pool", "h1text('Pool') && has('[data-testid=stDataFrame] canvas') "
                     "&& bodytext().includes('matching instruction')"),
    "Label": ("label", "h1text('Quality study') && bodytext().includes(' items · seed ') "
                       "&& bodytext().includes('Enter your name above')"),
    "Export": ("export", "h1text('Export') && has('[data-testid=stDataFrame] canvas') "
                         "&& has('[data-testid=stCode]') && count('[data-testid=stMetricValue]') >= 5"),
}
JS_HELPERS = """
const has = (s) => document.querySelector(s) !== null;
const count = (s) => document.querySelectorAll(s).length;
const bodytext = () => document.body.innerText;
const h1text = (t) => [...document.querySelectorAll('h1')].some(h => h.innerText.trim().startsWith(t));
const idle = () => has('[data-testid=stApp][data-test-script-state=notRunning]');
"""
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STREAMLIT_ARGS = ["--server.headless", "true", "--server.address", "127.0.0.1",
                  "--browser.gatherUsageStats", "false"]


def serve(timing_path: str, port: int, script: str = "app.py") -> None:
    """`streamlit run app.py ...` in this process, with one hook: every script run (a page's
    run in one session) appends {"page", "end", "wall", "cpu"} to `timing_path`, so the
    browser timings can be split into what the server spent and the rest."""
    from streamlit.runtime.scriptrunner import script_runner
    from streamlit.web import cli

    log = open(timing_path, "a", buffering=1)
    original = script_runner.ScriptRunner._run_script

    def timed(self, rerun_data):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(self, rerun_data)
        finally:
            log.write(json.dumps({"page": rerun_data.page_name, "end": time.time(),
                                  "wall": time.perf_counter() - wall, "cpu": time.thread_time() - cpu}) + "\n")

    script_runner.ScriptRunner._run_script = timed
    sys.argv = ["streamlit", "run", script, *STREAMLIT_ARGS, "--server.port", str(port)]
    sys.exit(cli.main())


class Server:
    """`streamlit run app.py` on a pool (through `serve`, in a process of its own); stopped by
    its PID. `script_runs()` reads the timing lines written since the last call."""

    def __init__(self, db: Path, port: int, workdir: Path, script: str = "app.py"):
        self.db, self.port, self.script = db, port, script
        self.log_path, self.timing_path = workdir / "streamlit.log", workdir / "script-runs.jsonl"
        self.proc: subprocess.Popen | None = None
        self._read = 0

    def __enter__(self) -> "Server":
        env = {**os.environ, "SELFINSTRUCT_DB": str(self.db)}
        self._log = open(self.log_path, "w")
        self.timing_path.touch()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(self.timing_path),
             "--port", str(self.port), "--script", self.script],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.3)
        raise RuntimeError(f"streamlit did not come up: {self.log_path.read_text()[-2000:]}")

    def script_runs(self) -> list[dict]:
        lines = self.timing_path.read_text().splitlines()
        new, self._read = lines[self._read:], len(lines)
        return [json.loads(line) for line in new if line.strip()]

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)   # the process group of the server we started
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _wait(page, condition: str, timeout_s: float) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"() => {{ {JS_HELPERS} return idle() && ({condition}); }}",
                               timeout=timeout_s * 1000, polling=20)
    except PlaywrightTimeout:
        parts = ["idle()"] + [p.strip() for p in condition.split("&&")]
        state = {p: page.evaluate(f"() => {{ {JS_HELPERS} try {{ return {p}; }} catch (e) {{ return String(e); }} }}")
                 for p in parts}
        shot = Path(tempfile.gettempdir()) / f"bench-ui-timeout-{int(time.time())}.png"
        page.screenshot(path=str(shot))
        raise RuntimeError(f"{page.url}: not ready after {timeout_s:.0f} s: {state}; screenshot {shot}") from None


MARKS_JS = """
window.__bench = {};
new MutationObserver(() => {
  const app = document.querySelector('[data-testid=stApp]');
  if (!app) return;
  if (!('shell' in window.__bench)) window.__bench.shell = performance.now();
  if (app.dataset.testScriptState === 'running' && !('start' in window.__bench))
    window.__bench.start = performance.now();
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


def load_once(context, server: Server, base: str, name: str, shot: Path | None, timeout_s: float,
              pages: dict = PAGES) -> dict:
    """Open one page in a new tab of `context` (a new session) and time it; the tab is closed."""
    path, condition = pages[name]
    server.script_runs()                       # forget runs of earlier loads
    page = context.new_page()
    try:
        started = time.perf_counter()
        page.goto(f"{base}/{path}", wait_until="commit")
        _wait(page, condition, timeout_s)
        seconds = time.perf_counter() - started
        marks = page.evaluate("() => window.__bench || {}")
        if page.locator("[data-testid=stException]").count():
            raise RuntimeError(f"{name}: the page shows an exception: "
                               + page.locator("[data-testid=stException]").first.inner_text()[:500])
        if shot:
            page.screenshot(path=str(shot))
    finally:
        page.close()
    runs = []
    for _ in range(50):                        # the run's line is written just after it ends
        runs += server.script_runs()
        if runs:
            break
        time.sleep(0.02)
    return {"seconds": seconds, "shell": marks.get("shell", 0) / 1000, "start": marks.get("start", 0) / 1000,
            "server": sum(r["wall"] for r in runs), "server_cpu": sum(r["cpu"] for r in runs), "runs": len(runs)}


def search_once(page, server: Server, box_label: str, term: str, expect: str, timeout_s: float) -> dict:
    box = page.locator(f"input[aria-label={json.dumps(box_label)}]")
    box.fill(term)
    server.script_runs()
    started = time.perf_counter()
    box.press("Enter")
    _wait(page, f"bodytext().includes({json.dumps(expect)})", timeout_s)
    seconds = time.perf_counter() - started
    time.sleep(0.05)
    runs = server.script_runs()
    return {"seconds": seconds, "server": sum(r["wall"] for r in runs), "server_cpu": sum(r["cpu"] for r in runs),
            "runs": len(runs)}


def _context(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.add_init_script(MARKS_JS)
    return context


def browser_bench(db: Path, pages: list[str], samples: int, terms: dict, shots: Path | None,
                  timeout_s: float, log=print) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results: dict = {"pages": {}, "cached": {}, "searches": {}}

    def shot(name: str, tag: str) -> Path | None:
        return shots / f"{name.lower()}-{tag}.png" if shots else None

    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp, Server(db, port, Path(tmp)) as server, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        try:
            def fresh(name: str, tag: str | None) -> dict:
                context = _context(browser)            # empty HTTP cache, new session
                try:
                    return load_once(context, server, base, name, shot(name, tag) if tag else None, timeout_s)
                finally:
                    context.close()

            # The root first: it runs app.py once in this process (deep links need that).
            home_cold = fresh("Home", "cold")
            for name in pages:
                cold = home_cold if name == "Home" else fresh(name, "cold")
                warm = [fresh(name, "warm" if i == 0 else None) for i in range(samples)]
                results["pages"][name] = {"cold": cold, "samples": warm}
                log(f"  {name:<9} cold {cold['seconds']:5.2f} s · median {_med(warm, 'seconds'):5.2f} s "
                    f"(min {min(w['seconds'] for w in warm):.2f}, max {max(w['seconds'] for w in warm):.2f}); "
                    f"app shell {_med(warm, 'shell'):.2f} s, script starts {_med(warm, 'start'):.2f} s, "
                    f"server script {_med(warm, 'server'):.2f} s (CPU {_med(warm, 'server_cpu'):.2f} s)")
            # A returning browser: the static files are cached, the session is new (a new tab).
            cached = _context(browser)
            for name in pages:
                load_once(cached, server, base, name, None, timeout_s)
            for name in pages:
                results["cached"][name] = [load_once(cached, server, base, name, None, timeout_s)
                                           for _ in range(samples)]
                log(f"  {name:<9} cached files: median {_med(results['cached'][name], 'seconds'):.2f} s")
            cached.close()

            for name, label, noun in (("Rejects", "Search the text", "rejected instructions to review"),
                                      ("Pool", "Search", "matching instruction")):
                if name not in pages or not terms.get(name):
                    continue
                context = _context(browser)
                page = context.new_page()
                page.goto(f"{base}/{PAGES[name][0]}", wait_until="commit")
                _wait(page, PAGES[name][1], timeout_s)
                times = [search_once(page, server, label, term, f"{total:,} {noun}", timeout_s)
                         for term, total in terms[name]]
                if shots:
                    page.screenshot(path=str(shot(name, "search")))
                context.close()
                results["searches"][name] = {"terms": [t for t, _ in terms[name]], "samples": times}
                log(f"  search on {name}: median {_med(times, 'seconds'):.2f} s "
                    f"(min {min(t['seconds'] for t in times):.2f}, max {max(t['seconds'] for t in times):.2f}); "
                    f"server script {_med(times, 'server'):.2f} s (CPU {_med(times, 'server_cpu'):.2f} s)")
        except Exception:
            log("server log:\n" + server.log_path.read_text()[-3000:])
            raise
        finally:
            browser.close()
    return results


REFERENCE_APP = """
import pandas as pd
import streamlit as st

st.title("Reference")
st.write("A Streamlit page with nothing of this project in it.")
if st.query_params.get("table"):
    st.dataframe(pd.DataFrame({"id": range(50), "text": [f"row {i}" for i in range(50)]}))
"""
REFERENCE_PAGES = {
    "Streamlit, a title": ("", "h1text('Reference') && bodytext().includes('nothing of this project')"),
    "Streamlit, a title and a 50-row table": ("?table=1", "h1text('Reference') "
                                              "&& has('[data-testid=stDataFrame] canvas')"),
}


def reference_bench(samples: int, timeout_s: float, log=print) -> dict:
    """The same measure on a two-line Streamlit app (no pool): the floor every page stands on."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-ui-ref-") as tmp:
        script = Path(tmp) / "reference_app.py"
        script.write_text(REFERENCE_APP)
        with Server(Path(tmp) / "unused.duckdb", port, Path(tmp), script=str(script)) as server, \
                sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
            try:
                for name in REFERENCE_PAGES:
                    rows = []
                    for i in range(samples + 1):          # the first load warms the server
                        context = _context(browser)
                        try:
                            rows.append(load_once(context, server, base, name, None, timeout_s, REFERENCE_PAGES))
                        finally:
                            context.close()
                    cached = _context(browser)
                    load_once(cached, server, base, name, None, timeout_s, REFERENCE_PAGES)
                    warm = [load_once(cached, server, base, name, None, timeout_s, REFERENCE_PAGES)
                            for _ in range(samples)]
                    cached.close()
                    results[name] = {"samples": rows[1:], "cached": warm}
                    log(f"  {name}: median {_med(rows[1:], 'seconds'):.2f} s, cached files {_med(warm, 'seconds'):.2f} s")
            finally:
                browser.close()
    return results


def _store_ms(rows: list[tuple[str, float]]) -> float:
    return sum(ms for name, ms in rows if not name.startswith("[cached]"))


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


# =============================================================================== main
def print_tables(result: dict, pages: list[str], profile: dict, store_search: dict, samples: int,
                 query_samples: int) -> None:
    sidebar_ms = sum(ms for _, ms in profile["(sidebar)"])
    print(f"\n| page | first full render, median of {samples} | min | max | cold (first ever) "
          "| cached static files | app shell | script starts | server script run | its store queries* "
          "| < 1.5 s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for name in pages:
        r = result["pages"][name]
        rows, med = r["samples"], _med(r["samples"], "seconds")
        cached = f"{_med(result['cached'][name], 'seconds'):.2f} s" if result["cached"].get(name) else "–"
        store_ms = _store_ms(profile.get(name, [])) + sidebar_ms
        print(f"| {name} | {med:.2f} s | {min(x['seconds'] for x in rows):.2f} s | "
              f"{max(x['seconds'] for x in rows):.2f} s | {r['cold']['seconds']:.2f} s | {cached} | "
              f"{_med(rows, 'shell'):.2f} s | {_med(rows, 'start'):.2f} s | {_med(rows, 'server'):.2f} s | "
              f"{store_ms:.0f} ms | {'yes' if med < 1.5 else 'no'} |")
    for name, r in result.get("reference", {}).items():
        rows, med = r["samples"], _med(r["samples"], "seconds")
        print(f"| *{name}* | {med:.2f} s | {min(x['seconds'] for x in rows):.2f} s | "
              f"{max(x['seconds'] for x in rows):.2f} s | – | {_med(r['cached'], 'seconds'):.2f} s | "
              f"{_med(rows, 'shell'):.2f} s | {_med(rows, 'start'):.2f} s | {_med(rows, 'server'):.2f} s | – | "
              f"{'yes' if med < 1.5 else 'no'} |")
    print(f"\n| search (terms) | Enter to updated table, median | min | max | server script run (CPU) "
          f"| store queries, median of {query_samples} | < 0.5 s |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for name, r in result["searches"].items():
        rows, med = r["samples"], _med(r["samples"], "seconds")
        print(f"| {name} ({', '.join(r['terms'])}) | {med:.2f} s | {min(x['seconds'] for x in rows):.2f} s | "
              f"{max(x['seconds'] for x in rows):.2f} s | {_med(rows, 'server'):.2f} s "
              f"({_med(rows, 'server_cpu'):.2f} s) | {store_search[name]:.0f} ms | {'yes' if med < 0.5 else 'no'} |")
    print("\n* the pool calls the page's first run makes, plus the sidebar's, timed directly (not in the app).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accepted", type=int, default=50_000)
    parser.add_argument("--rejects", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--samples", type=int, default=5, help="page loads per page (after the cold one)")
    parser.add_argument("--query-samples", type=int, default=20, help="timings per store query")
    parser.add_argument("--quick", action="store_true", help="5K accepted, 10K rejects, 50 rounds, 3 samples")
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated, of: " + ", ".join(PAGES))
    parser.add_argument("--keep", type=Path, help="build the pool there, or reuse it if it exists")
    parser.add_argument("--screenshots", type=Path, help="save a screenshot of each page here")
    parser.add_argument("--profile-only", action="store_true", help="time the store queries, no browser")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one page")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference pages (a two-line Streamlit app without the pool)")
    parser.add_argument("--json", type=Path, help="also write every timing to this JSON file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--script", default="app.py", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.script)
        return
    if args.quick:
        args.accepted, args.rejects, args.rounds = 5_000, 10_000, 50
        args.samples, args.query_samples = 3, 5
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    unknown = set(pages) - set(PAGES)
    if unknown:
        raise SystemExit(f"Unknown page(s): {', '.join(sorted(unknown))}")

    tmp = tempfile.mkdtemp(prefix="bench-ui-pool-")
    try:
        db = args.keep or Path(tmp) / "pool.duckdb"
        if db.exists():
            print(f"Reusing {db}.")
        else:
            print(f"Filling {db} ...")
            filled = fill_pool(db, accepted=args.accepted, rejects=args.rejects, rounds=args.rounds,
                               seed=args.seed)
            print(f"  filled in {filled['seconds']:.0f} s (deciding the candidates: "
                  f"{filled['decide_seconds']:.0f} s)")
        with Pool.open(db, read_only=True) as pool:
            c = pool.counts()
            summary = pool.bulk.bulk_summary()
            reasons = summary["rejects_by_reason"]
            n_inst_rej, n_requests = summary["rejected_instances"], summary["requests"]
        print(f"Pool: {c.seeds:,} seeds, {c.accepted:,} accepted, {c.instances:,} kept instances "
              f"({n_inst_rej:,} rejected), {c.rejected:,} rejected candidates, {c.rounds:,} rounds, "
              f"{n_requests:,} requests, {c.rescued:,} rescued, 1 study with {c.labeled} labeled items; "
              f"{db.stat().st_size / 1e6:.0f} MB on disk.")
        print("Rejects by reason: " + ", ".join(f"{k} {v:,}" for k, v in reasons.items()))
        print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}; "
              f"load average {os.getloadavg()[0]:.1f}.")

        print(f"\nStore queries each page runs first (median of {args.query_samples}, ms; [cached]: kept by "
              "the page until the pool changes, not counted in the total):")
        profile = profile_store(db, args.query_samples)
        for page, rows in profile.items():
            print(f"  {page:<10} {_store_ms(rows):7.1f}  " + ", ".join(f"{name} {ms:.1f}" for name, ms in rows))
        terms = search_terms(db, 5 if not args.quick else 3)
        store_search = time_search_queries(db, terms, args.query_samples)
        for name, ms in store_search.items():
            print(f"  search on {name}: {ms:.1f} ms (terms: {', '.join(t for t, _ in terms[name])})")
        if args.profile_only:
            return

        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
        print(f"\nBrowser (cold = first load in this server; then {args.samples} loads, a new session each):")
        result = browser_bench(db, pages, args.samples, terms, args.screenshots, args.timeout)

        if not args.no_reference:
            print("\nReference (a two-line Streamlit app, same browser, same measure):")
            result["reference"] = reference_bench(args.samples, args.timeout)
        print_tables(result, pages, profile, store_search, args.samples, args.query_samples)
        if args.json:
            args.json.write_text(json.dumps({"browser": result, "store": profile, "store_search": store_search,
                                             "terms": terms}, indent=1, default=str))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
