"""The embedding index, the semantic gate and duplicate groups (issue 24). Real DuckDB files, the
real bundled WordLlama model, the real openai client over HTTP to the offline server."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from selfinstruct import actions, embed, model, seeds
from selfinstruct.backend import OPENAI_COMPATIBLE, Backend
from selfinstruct.llm import LLMError
from selfinstruct.offline import EMBEDDING_MODEL, OfflineServer, offline_embedding
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, refilter, start_run
from selfinstruct.seeds import SeedTask
from selfinstruct.semantic import find_duplicates, group_by_rank
from selfinstruct.store import Pool
from tests.conftest import ROOT, run_cli, served_completions, served_offline

PAIRS = ROOT / "tests" / "data" / "semantic_pairs.jsonl"


def decisions(pool, run_id=None):
    where, params = ("WHERE c.run_id = ?", [run_id]) if run_id else ("", [])
    return pool.cursor().execute(
        "SELECT c.instruction, c.status, c.reason, c.nearest_text FROM candidates c "
        f"JOIN rounds r ON r.id = c.round_id {where} ORDER BY r.number, c.position", params).fetchall()


# -- the bundled embedder --------------------------------------------------------------
def test_bundled_vectors_are_normalised_and_importing_leaves_logging_alone():
    probe = ("import logging; from selfinstruct import embed; embed.bundled().embed(['a b c']); "
             "print(len(logging.getLogger().handlers), logging.getLogger().level)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["0", str(30)]          # no handler added, WARNING kept
    vectors = embed.bundled().embed(["Find and fix the error in the following code.",
                                     "Find the errors in the following code and fix them.", ""])
    assert vectors.dtype == np.float32 and vectors.shape == (3, embed.BUNDLED_DIM)
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)
    assert not vectors[2].any()                          # an empty text: a zero row, never NaN
    assert float(vectors[0] @ vectors[1]) > model.COSINE_THRESHOLD


# -- the honest default ------------------------------------------------------------------
def test_default_threshold_on_the_held_out_pairs():
    """The default was chosen on the 'choose' half; on the held-out half it must group at most 1
    in 10 related-but-different tasks. It groups far fewer than the 3 in 4 rewordings the issue
    asked for (7 of 25): the bundled static model cannot tell our rewordings from our related
    tasks at any single cosine (bench/README.md), and this asserts the figure we report."""
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    assert sum(r["label"] == "reworded" for r in rows) >= 40 and sum(r["label"] == "different" for r in rows) >= 40
    held = [r for r in rows if r["half"] == "held_out"]
    e = embed.bundled()
    cos = (e.embed([r["a"] for r in held]) * e.embed([r["b"] for r in held])).sum(axis=1)
    grouped = cos > model.COSINE_THRESHOLD
    same = np.array([r["label"] == "reworded" for r in held])
    assert grouped[~same].mean() <= 0.1
    assert grouped[same].sum() == 7 and grouped[~same].sum() == 0


# -- the store ---------------------------------------------------------------------------
def test_vectors_are_stored_once_per_text_and_read_back_exactly(pool):
    e = embed.bundled()
    texts = ["Write a poem about the sea.", "Sort the list.", "Write a poem about the sea."]
    assert pool.embeddings.add(e.name, e.dim, texts, e.embed(texts), kind=e.kind) == 2
    assert pool.embeddings.add(e.name, e.dim, texts[:1], e.embed(texts[:1]), kind=e.kind) == 0
    assert pool.embeddings.missing(e.name, ["Sort the list.", "New text."]) == ["New text."]
    back = pool.embeddings.vectors_for(e.name, ["Sort the list.", "New text.", "Write a poem about the sea."])
    assert np.array_equal(back[0], e.embed(["Sort the list."])[0]) and not back[1].any()
    assert pool.embeddings.embedders() == [{"name": e.name, "kind": "bundled", "dim": 256, "vectors": 2}]
    with pytest.raises(ValueError, match="dimensional"):
        pool.embeddings.register(e.name, "bundled", 128)


# -- duplicate groups ---------------------------------------------------------------------
def _accept(pool, texts, *, review=None):
    """Accepted candidates straight into the pool (bulk: no run needed); their ids."""
    start = pool.bulk.next_id("candidates")
    ids = list(range(start, start + len(texts)))
    pool.bulk.bulk_insert("candidates", {"id": ids, "instruction": list(texts)},
                     constants={"status": model.ACCEPTED, "review": review,
                                "decided_by": model.BY_HUMAN if review else model.BY_FILTER})
    return ids


def test_groups_follow_the_keep_rule_without_chains():
    # Unit vectors at chosen angles: a~b (0.95), b~c (0.95), a~c (0.81); d alone; e~f (0.99).
    def unit(deg):
        r = np.radians(deg)
        return [np.cos(r), np.sin(r), 0.0]
    m = np.array([unit(0), unit(18), unit(36.8), [0, 0, 1.0], [0.6, 0, 0.8], [0.55, 0.1, 0.83]], dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    ranks = [(3, 1, 5), (3, 1, 1), (3, 1, 2), (0, 0, 1), (3, 1, 9), (1, 1, 7)]
    groups = group_by_rank(m, ranks, 0.9, block=2)       # blocks smaller than the matrix
    assert [(g.keep, g.members) for g in groups] == [(5, [4]), (1, [0, 2])]
    # b ranks first among a, b, c and is close to both: one group. Were a to lead, c (0.81 to a)
    # would stay apart, never pulled in through b.
    ranks[0] = (2, 1, 0)
    groups = group_by_rank(m, ranks, 0.9, block=4)
    assert [(g.keep, g.members) for g in groups] == [(5, [4]), (0, [1]), ]


def test_exact_groups_on_a_hand_made_pool_and_one_undo(pool):
    pool.seeds.insert_seed_tasks([SeedTask(instruction=t, instances=[{"input": "", "output": "x"}]) for t in (
        "Find and fix the error in the following code.",
        "Write a haiku about autumn leaves.")], origin="test")
    plain = _accept(pool, [
        "Find the errors in the following code and fix them.",                 # ~ seed 1
        "Write a persuasive email to pitch a business idea to potential investors.",
        "Write a persuasive email to potential investors pitching your business idea.",
        "Explain how a rainbow forms."])
    approved = _accept(pool, ["Write a persuasive email to investors pitching your new business idea."],
                       review=model.APPROVED)
    dups = find_duplicates(pool, embed.bundled(), 0.9)
    got = [[(it["kind"], it["id"]) for it in dups.group_items(g)] for g in dups.groups]
    assert got == [[("seed_task", 1), ("candidate", plain[0])],
                   [("candidate", approved[0]), ("candidate", plain[2]), ("candidate", plain[1])]]   # by cosine
    lines = [json.loads(line) for line in dups.as_json_lines()]
    assert [len(x["cosines"]) for x in lines] == [2, 3] and lines[1]["keep"] == {"kind": "candidate", "id": approved[0]}
    assert lines[0]["items"][1]["instruction"] == "Find the errors in the following code and fix them."

    keep_candidate = {0: dups.groups[0].members[0]}                     # a person keeps the candidate...
    candidates, seed_ids = dups.removal(keep=keep_candidate)
    assert candidates == [plain[2], plain[1]] and seed_ids == []        # ...but the seed stays unless chosen
    candidates, seed_ids = dups.removal(keep=keep_candidate, seeds=[1])
    assert seed_ids == [1] and candidates == [plain[2], plain[1]]
    before_counts = pool.counts()
    outcome = actions.remove_duplicates(pool, candidates, seed_ids, actor="ann")
    assert outcome.count == 3 and len({e["after"]["batch"] for e in pool.audit.entries(action="remove_duplicates")}) == 1
    assert pool.counts().seeds == before_counts.seeds - 1 and pool.counts().accepted == before_counts.accepted - 2
    assert find_duplicates(pool, embed.bundled(), 0.9).groups == []
    undone = actions.undo_batch(pool, outcome.batch, actor="ann")
    assert len(undone.done) == 3 and pool.counts() == before_counts
    assert [[(it["kind"], it["id"]) for it in find_duplicates(pool, embed.bundled(), 0.9).group_items(g)]
            for g in find_duplicates(pool, embed.bundled(), 0.9).groups] == got


def test_dedup_cli_json_and_apply_never_remove_seeds(tmp_path):
    db = tmp_path / "p.duckdb"
    with Pool.open(db) as pool:
        pool.seeds.insert_seed_tasks([SeedTask(instruction=t, instances=[{"input": "", "output": "x"}]) for t in (
            "Find and fix the error in the following code.", "Find the errors in the following code and fix them.")],
            origin="test")
        ids = _accept(pool, ["Convert the temperature from Celsius to Fahrenheit.",
                             "Convert the given Celsius temperature to Fahrenheit.", "Name three rivers in Asia."])
    out = run_cli("dedup", "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    groups = [json.loads(line) for line in out.stdout.splitlines()]
    assert [[i["id"] for i in g["items"]] for g in groups] == [[1, 2], [ids[0], ids[1]]]
    applied = run_cli("dedup", "--apply", "--db", str(db))
    assert applied.returncode == 0 and "Removed 1 near-duplicate" in applied.stderr
    assert "1 seed task(s) in groups were left" in applied.stderr
    with Pool.open(db) as pool:
        assert pool.counts().seeds == 2 and pool.counts().accepted == 2


# -- the gate in generation --------------------------------------------------------------
def _run(pool, srv, **settings):
    seeds.load_starter_seeds(pool)
    config = RunConfig(base_url=srv.base_url, backend=OPENAI_COMPATIBLE, seed=3, timeout_s=5.0, max_retries=2,
                       **{"rounds": 2, "cosine_threshold": 0.7, **settings})
    run_id = start_run(pool, config)
    outcome = Runner(pool, run_id).run()
    assert outcome.status == "finished", outcome
    return run_id


def test_gate_rejects_with_evidence_and_decides_the_same_whatever_the_answer_order(tmp_path):
    results = []
    for latency_seed in (1, 2):
        with OfflineServer(seed=7, latency_median_s=0.02, latency_sigma=0.8, latency_seed=latency_seed) as srv, \
                Pool.open(tmp_path / f"p{latency_seed}.duckdb") as pool:
            run_id = _run(pool, srv, concurrency=8)
            results.append(decisions(pool, run_id))
            dups = pool._rows("SELECT instruction, nearest_text, details FROM candidates WHERE reason = 'semantic_dup'")
            assert dups, "the gate rejected nothing"
            e = embed.bundled()
            for row in dups:
                details = json.loads(row["details"])
                assert details["cosine"] > 0.7 and details["nearest"][0]["text"] == row["nearest_text"]
                a, b = e.embed([row["instruction"], row["nearest_text"]])
                assert abs(float(a @ b) - details["cosine"]) < 1e-5
                assert 0 <= details["rouge_l"] <= 0.7       # ROUGE let it through
            # every candidate's text has a vector, accepted or rejected
            assert pool._scalar("SELECT count(*) FROM candidates c WHERE c.reason IS DISTINCT FROM 'unparseable' AND "
                                "NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.text = c.instruction)") == 0
    assert results[0] == results[1]


def test_gate_off_and_refilter_from_stored_vectors(tmp_path):
    with OfflineServer(seed=7) as srv, Pool.open(tmp_path / "p.duckdb") as pool:
        run_id = _run(pool, srv, cosine_threshold=None)
        assert pool._scalar("SELECT count(*) FROM candidates WHERE reason = 'semantic_dup'") == 0
        report = refilter(pool, run_id, cosine=0.7)
        assert report.after.get("semantic_dup", 0) > 0 and report.before.get("semantic_dup", 0) == 0
        assert all(c["after"] == "semantic_dup" for c in report.changed)
        report = refilter(pool, run_id, cosine=0.7, apply=True)
        assert report.applied == report.after["semantic_dup"]
        assert refilter(pool, run_id, cosine="off").after.get("semantic_dup", 0) == 0


def test_a_run_stored_before_the_gate_resumes_without_one():
    cfg = RunConfig.from_dict({"model": "m", "rounds": 1})
    assert cfg.cosine_threshold is None and cfg.embedder is None
    assert RunConfig().cosine_threshold == model.COSINE_THRESHOLD


def test_resume_after_kills_gives_the_same_pool_and_refuses_another_threshold(tmp_path):
    rng = random.Random(24)
    with served_offline("--latency", "0.03") as base_url:
        args = ["generate", "--base-url", base_url, "--model", "selfinstruct-demo", "--rounds", "3",
                "--concurrency", "3", "--seed", "11", "--cosine", "0.7"]
        killed_db, straight_db = tmp_path / "killed.duckdb", tmp_path / "straight.duckdb"
        for i in range(3):
            extra = [] if i == 0 else ["--resume"]
            start = served_completions(base_url)
            victim = subprocess.Popen([sys.executable, "-m", "selfinstruct", *([*args, *extra] if i == 0 else
                                       ["generate", "--resume"]), "--db", str(killed_db)], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wanted, deadline = rng.randint(2, 12), time.time() + 30
            while served_completions(base_url) - start < wanted and victim.poll() is None and time.time() < deadline:
                time.sleep(0.005)
            if victim.poll() is None:
                os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
        refused = run_cli("generate", "--resume", "--cosine", "0.8", "--db", str(killed_db))
        assert refused.returncode == 2 and "cannot change it" in refused.stderr
        resumed = run_cli("generate", "--resume", "--db", str(killed_db))
        assert resumed.returncode == 0, resumed.stderr
        straight = run_cli(*args, "--db", str(straight_db))
        assert straight.returncode == 0, straight.stderr
    with Pool.open(killed_db) as killed, Pool.open(straight_db) as reference:
        assert decisions(killed) == decisions(reference)
        assert any(row[2] == "semantic_dup" for row in decisions(reference))
        name = embed.BUNDLED_NAME
        assert killed.embeddings.count(name) == reference.embeddings.count(name)


# -- backfill -------------------------------------------------------------------------------
def test_embed_backfills_a_pool_without_vectors_and_resumes(tmp_path):
    db = tmp_path / "p.duckdb"
    with Pool.open(db) as pool:
        seeds.load_starter_seeds(pool)
        _accept(pool, [f"Describe the history of city number {i} in two sentences." for i in range(300)])
        texts = pool.embeddings.texts_without_vectors(embed.BUNDLED_NAME)
        assert len(texts) == pool.counts().seeds + 300
        stopped = iter([False, True])                    # an interruption after the first batch
        done = embed.ensure_vectors(pool, embed.bundled(), texts, batch=100, stop=lambda: next(stopped, True))
        assert done == 100 and pool.embeddings.count(embed.BUNDLED_NAME) == 100
        first = pool._rows("SELECT text, created_at FROM embeddings ORDER BY text")
    out = run_cli("embed", "--batch-size", "64", "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert f"Stored {len(texts) - 100:,} vector(s)" in out.stdout
    again = run_cli("embed", "--db", str(db))
    assert "already has a vector" in again.stdout
    with Pool.open(db) as pool:
        assert pool.embeddings.texts_without_vectors(embed.BUNDLED_NAME) == []
        kept = {r["text"]: r["created_at"] for r in pool._rows("SELECT text, created_at FROM embeddings")}
        assert all(kept[r["text"]] == r["created_at"] for r in first)      # never embedded twice


# -- the endpoint embedder ------------------------------------------------------------------
def test_endpoint_embedder_batches_retries_and_matches_the_server():
    texts = [f"Write a limerick about topic {i}." for i in range(23)] + [""]
    with OfflineServer(seed=1) as srv:
        srv.faults.push("429", count=2, retry_after=0.01).push("500", count=1)
        backend = Backend(kind=OPENAI_COMPATIBLE, base_url=srv.base_url)
        e = embed.EndpointEmbedder(backend, EMBEDDING_MODEL, batch_size=5, concurrency=2)
        got = e.embed(texts)
        stats, url = srv.stats, srv.base_url
    want = np.array([offline_embedding(t) for t in texts[:-1]], dtype=np.float32)
    assert got.shape == (24, 64) and np.allclose(got[:-1], want, atol=1e-6) and not got[-1].any()
    assert stats["by_endpoint"]["embeddings"] == 5 + 3           # five batches, three failures retried
    assert e.tokens > 0 and e.name == f"{EMBEDDING_MODEL}@{url}"


def test_endpoint_embedder_key_rule(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")
    monkeypatch.delenv("SELFINSTRUCT_BASE_URL", raising=False)
    with OfflineServer(api_key="sk-env-secret") as srv:
        # The app's rule: the environment's key goes only to the owner's endpoints.
        stranger = embed.EndpointEmbedder(Backend(kind=OPENAI_COMPATIBLE, base_url=srv.base_url), EMBEDDING_MODEL)
        with pytest.raises(LLMError) as err:
            stranger.embed(["a text"])
        assert err.value.kind == "auth" and "sk-env-secret" not in str(err.value)
        monkeypatch.setenv("SELFINSTRUCT_BASE_URL", srv.base_url)
        owner = embed.EndpointEmbedder(Backend(kind=OPENAI_COMPATIBLE, base_url=srv.base_url), EMBEDDING_MODEL)
        assert owner.embed(["a text"]).shape == (1, 64)
        typed = embed.EndpointEmbedder(Backend(kind=OPENAI_COMPATIBLE, base_url=srv.base_url, api_key="sk-wrong"),
                                       EMBEDDING_MODEL)
        with pytest.raises(LLMError, match="rejected the API key"):
            typed.embed(["a text"])


def test_endpoint_gate_in_a_run(tmp_path):
    with OfflineServer(seed=7) as srv, Pool.open(tmp_path / "p.duckdb") as pool:
        run_id = _run(pool, srv, embedder={"kind": "endpoint", "model": EMBEDDING_MODEL}, cosine_threshold=0.8,
                      rounds=1)
        name = embed.endpoint_name(EMBEDDING_MODEL, srv.base_url)
        assert pool.embeddings.dim(name) == 64 and pool.embeddings.count(name) > pool.counts().seeds
        assert run_id == 1
