"""Topics over a hand-made pool with four known topics: exact sizes, names, the whole-topic
actions and their one undo, the "avoid" mark carried to recomputed topics, and the steering rule."""
import random

import numpy as np
import pytest

from selfinstruct import actions, topics
from selfinstruct.model import ACCEPTED, BULK_APPROVED, REJECTED, REMOVED, is_human_approved
from tests.topic_pool import SIZES, build

pytest.importorskip("wordllama")


@pytest.fixture
def topic_pool(pool):
    families = build(pool)
    set_id = topics.compute(pool)
    return pool, families, set_id


def _topic_of(pool, set_id, family_ids):
    found = pool.topics.topic_of_items(set_id, "candidate", family_ids["accepted"])
    assert len(set(found.values())) == 1, "a family's items landed in more than one topic"
    return next(iter(found.values()))


def test_four_topics_of_exact_sizes_with_names(topic_pool):
    pool, families, set_id = topic_pool
    rows = {r["topic"]: r for r in topics.topic_rows(pool, set_id)}
    assert len(rows) == 4
    for family, (n_seed, n_acc, n_rej) in SIZES.items():
        t = _topic_of(pool, set_id, families[family])
        assert rows[t]["size"] == n_seed + n_acc
        assert rows[t]["seeds"] == n_seed
        assert rows[t]["candidates"] == n_acc + n_rej
        assert rows[t]["acceptance"] == pytest.approx(n_acc / (n_acc + n_rej))
        assert set(pool.topics.topic_of_items(set_id, "seed_task", families[family]["seeds"]).values()) == {t}
        assert set(pool.topics.topic_of_items(set_id, "candidate", families[family]["rejected"]).values()) <= {t}
    # Numbered by size, largest first; named by the family's leading verb and noun.
    assert [rows[t]["size"] for t in sorted(rows)] == sorted((a + b for a, b, _ in SIZES.values()), reverse=True)
    names = {family: rows[_topic_of(pool, set_id, families[family])]["name"] for family in SIZES}
    assert names["cooking"].startswith("suggest recipe")
    assert names["code"].startswith("write python")
    assert names["poetry"].startswith("compose poem")
    assert names["math"].startswith("calculate")


def test_same_pool_same_topics_and_stale_after_growth(topic_pool):
    pool, families, set_id = topic_pool
    again = topics.compute(pool)
    a, b = pool.topics.members(set_id), pool.topics.members(again)
    assert (a["topic"] == b["topic"]).all() and np.allclose(a["x"], b["x"])
    assert not topics.current(pool).stale
    assert topics.refresh(pool) == again          # nothing changed: the stored set is used
    pool.bulk.bulk_insert("candidates", {"instruction": ["Suggest a recipe for barley soup seasoned with tarragon."],
                                    "status": [ACCEPTED]})
    now = topics.current(pool)
    assert now.stale and now.grown == 1
    assert topics.refresh(pool) != again


def test_remove_topic_keeps_seeds_unless_ticked_and_undoes_at_once(topic_pool):
    pool, families, set_id = topic_pool
    t = _topic_of(pool, set_id, families["code"])
    out = actions.remove_topic(pool, set_id, t, actor="ann")
    assert sorted(out.done) == sorted(families["code"]["accepted"])
    for cid in families["code"]["accepted"]:
        state = pool.audit.read_state("candidate", cid)
        assert (state["status"], state["reason"]) == (REJECTED, REMOVED)
    assert len(pool.seeds.seed_tasks()) == sum(s for s, _, _ in SIZES.values())
    actions.undo_batch(pool, out.batch, actor="ann")
    assert all(pool.audit.read_state("candidate", c)["status"] == ACCEPTED for c in families["code"]["accepted"])

    with_seeds = actions.remove_topic(pool, set_id, t, actor="ann", include_seeds=True)
    assert len(with_seeds.done) == len(families["code"]["accepted"]) + len(families["code"]["seeds"])
    assert all(pool.audit.read_state("seed_task", s) is None for s in families["code"]["seeds"])
    undone = actions.undo_batch(pool, with_seeds.batch, actor="ann")
    assert len(undone.done) == len(with_seeds.audit_ids) and not undone.skipped
    assert all(pool.audit.read_state("seed_task", s) is not None for s in families["code"]["seeds"])
    assert all(pool.audit.read_state("candidate", c)["status"] == ACCEPTED for c in families["code"]["accepted"])


def test_approve_topic_is_a_bulk_approval_apart_from_item_approval(topic_pool):
    pool, families, set_id = topic_pool
    t = _topic_of(pool, set_id, families["poetry"])
    first = families["poetry"]["accepted"][0]
    actions.approve(pool, first, actor="ann")
    out = actions.approve_topic(pool, set_id, t, actor="ann")
    assert sorted(out.done) == sorted(families["poetry"]["accepted"][1:])
    assert [sid for sid, _ in out.skipped] == [first]
    for cid in out.done:
        state = pool.audit.read_state("candidate", cid)
        assert state["review"] == BULK_APPROVED and not is_human_approved(state)
    assert pool.audit.entries(limit=1)[0]["action"] == actions.APPROVE_TOPIC
    actions.undo_batch(pool, out.batch, actor="ann")
    assert all(pool.audit.read_state("candidate", c)["review"] is None for c in out.done)
    assert pool.audit.read_state("candidate", first)["review"] == "approved"


def test_avoid_mark_follows_its_topic_and_undoes(topic_pool):
    pool, families, set_id = topic_pool
    t = _topic_of(pool, set_id, families["math"])
    out = actions.mark_topic(pool, set_id, t, actor="ann")
    assert topics.avoided(pool, set_id) == [t]
    with pytest.raises(actions.ActionError):
        actions.mark_topic(pool, set_id, t, actor="ann")
    # The pool grows; topics are computed again; the mark lands on the math topic of the new set.
    pool.bulk.bulk_insert("candidates", {"instruction": ["Calculate the volume of a prism with the given measurements."],
                                    "status": [ACCEPTED]})
    later = topics.refresh(pool)
    assert later != set_id
    assert topics.avoided(pool, later) == [_topic_of(pool, later, families["math"])]
    assert [r["avoid"] for r in topics.topic_rows(pool, later)].count(True) == 1
    actions.undo_batch(pool, out.batch, actor="ann")
    assert topics.avoided(pool, later) == []
    actions.mark_topic(pool, later, 1, actor="ann")
    lifted = actions.unmark_topic(pool, later, 1, actor="ann")
    assert topics.avoided(pool, later) == [] and lifted.count == 1


def test_steer_weights_favour_thin_topics_and_skip_avoided():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    weights = topics.steer_weights(labels, avoid=[1])
    assert weights[0] == pytest.approx(1 / 90) and weights[99] == 1.0 and not weights[90:99].any()
    draws = [topics.weighted_sample(random.Random(i), range(100), weights, 2) for i in range(400)]
    assert not any(90 <= d < 99 for pair in draws for d in pair)
    thin = sum(99 in pair for pair in draws) / len(draws)
    # Two topics left, each as likely: about 3 in 4 pairs hold the lone item (plain sampling: 2 in 100).
    assert 0.65 < thin < 0.85
    # The same rng gives the same draw: prompts are deterministic for the run's seed.
    assert topics.weighted_sample(random.Random("7:1:3"), range(100), weights, 5) == \
        topics.weighted_sample(random.Random("7:1:3"), range(100), weights, 5)


# ---------------------------------------------------------------------------- steered generation
def _steered(pool, server, **extra):
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import Runner, start_run

    config = RunConfig(base_url=server.base_url, rounds=4, seed=5, steer="coverage", requests_per_round=4,
                       example_lag=1, timeout_s=5.0, max_retries=3, **extra)
    run_id = start_run(pool, config)
    outcome = Runner(pool, run_id).run()
    assert outcome.status == "finished", outcome
    return run_id


def _prompts(pool, run_id):
    return [r[0] for r in pool.cursor().execute(
        "SELECT q.prompt FROM requests q JOIN rounds r ON r.id = q.round_id WHERE q.run_id = ? AND q.stage = 'instructions' "
        "ORDER BY r.number, q.position", [run_id]).fetchall()]


def test_steered_runs_are_deterministic_and_store_each_rounds_topics(tmp_path, server):
    from selfinstruct import seeds
    from selfinstruct.store import Pool

    runs = []
    for name in ("a", "b"):
        with Pool.open(tmp_path / f"{name}.duckdb") as pool:
            seeds.load_starter_seeds(pool)
            run_id = _steered(pool, server)
            runs.append((_prompts(pool, run_id), pool.topics.run_rounds(run_id),
                         [r[0] for r in pool.cursor().execute("SELECT instruction FROM candidates ORDER BY id").fetchall()]))
    (prompts_a, rounds_a, cands_a), (prompts_b, rounds_b, cands_b) = runs
    assert prompts_a == prompts_b and cands_a == cands_b
    assert [r["round_number"] for r in rounds_a] == [1, 2, 3, 4]
    assert [(r["k"], r["fitted"]) for r in rounds_a] == [(r["k"], r["fitted"]) for r in rounds_b]


def test_steered_examples_never_come_from_an_avoided_topic(seeded, server):
    set_id = topics.compute(seeded, topics.TopicSettings(k=6))
    avoided_topic = max(topics.topic_rows(seeded, set_id), key=lambda r: r["seeds"])["topic"]
    actions.mark_topic(seeded, set_id, avoided_topic, actor="ann")
    banned = {t["instruction"] for t in seeded.seeds.seed_tasks()
              if seeded.topics.topic_of_items(set_id, "seed_task", [t["id"]]).get(t["id"]) == avoided_topic}
    assert banned
    run_id = _steered(seeded, server)
    snapshot = seeded.topics.run_rounds(run_id)[0]
    assert snapshot["avoid"]
    prompts = _prompts(seeded, run_id)
    # The mark means the marked topic's items, whatever topics the run computes for its rounds.
    assert prompts and not [text for text in banned for p in prompts if text in p]
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import Runner, start_run

    plain = start_run(seeded, RunConfig(base_url=server.base_url, rounds=2, seed=5, requests_per_round=4,
                                        timeout_s=5.0, max_retries=3))
    Runner(seeded, plain).run()
    assert [text for text in banned for p in _prompts(seeded, plain) if text in p]


def test_export_caps_each_topic_by_the_keep_rule(topic_pool):
    from selfinstruct.export import ExportFilters

    pool, families, set_id = topic_pool
    # A person approves the last cooking instruction: it outranks the earlier unapproved ones.
    approved = families["cooking"]["accepted"][-1]
    actions.approve(pool, approved, actor="ann")
    filters = topics.capped(pool, ExportFilters(), 4)
    assert filters.topic_set_id != set_id         # the approval changed the pool: topics computed again
    rows = pool.explore.export_preview(filters, limit=1000)
    kept = {(r["source"], int(r["task_id"])) for _, r in rows.iterrows()}
    for family, (n_seed, n_acc, _) in SIZES.items():
        mine = {("seed", s) for s in families[family]["seeds"]} | {("generated", c) for c in families[family]["accepted"]}
        assert len(kept & mine) == min(4, n_seed + n_acc)
        assert {("seed", s) for s in families[family]["seeds"]} <= kept     # seed tasks first
    assert ("generated", approved) in kept
    cooking = families["cooking"]["accepted"]
    assert {("generated", c) for c in cooking[:4 - SIZES["cooking"][0] - 1]} <= kept   # then the earliest
    assert "At most 4 task(s) per topic" in " ".join(filters.describe())
    with pytest.raises(ValueError):
        topics.capped(pool, ExportFilters(), 0)


def test_card_shows_the_topics_rendered_once_per_pool_state(pool):
    from selfinstruct.export.card import build_card

    build(pool)
    before = build_card(pool, "alpaca")
    assert "not computed for the pool as it is now" in before.markdown and "topics.svg" not in before.charts
    set_id = topics.compute(pool)
    card = build_card(pool, "alpaca")
    assert "topics.svg" in card.charts and "| 1 | " in card.markdown
    cached = pool.topics.card_cache(set_id)
    assert cached["svg"] == card.charts["topics.svg"]
    assert build_card(pool, "alpaca").charts["topics.svg"] is not None
    assert pool.topics.card_cache(set_id) == cached           # not rendered again
    pool.bulk.bulk_insert("candidates", {"instruction": ["Compose a short poem about a red kite in the wind."],
                                    "status": [ACCEPTED]})
    assert "not computed for the pool as it is now" in build_card(pool, "alpaca").markdown


# ---------------------------------------------------------------------------- a study by topic
def test_topic_study_gives_each_topic_an_equal_share_and_weighs_the_rates(topic_pool):
    from selfinstruct import quality

    pool, families, set_id = topic_pool
    with pytest.raises(ValueError):      # a study by topic needs topics that are up to date
        pool.bulk.bulk_insert("candidates", {"instruction": ["Compose a short poem about dusk."], "status": [ACCEPTED]})
        quality.create_study(pool, "by topic", size=8, seed=1, stratify="topic")
    created = quality.create_study(pool, "by topic", size=8, seed=1, stratify="topic", topic_set_id=set_id)
    study = pool.quality.study(created.study_id)
    assert [(a["eligible"], a["drawn"]) for a in sorted(study["config"]["allocation"], key=lambda a: -a["eligible"])] \
        == [(9, 2), (8, 2), (5, 2), (4, 2)]       # accepted instructions with an instance, 2 from each
    assert quality.WEIGHTED_NOTE in quality.describe_study(study)
    cooking = set(families["cooking"]["accepted"])
    for item in pool.cursor().execute("SELECT id, candidate_id FROM study_items WHERE study_id = ?",
                                      [created.study_id]).fetchall():
        answer = "no" if item[1] in cooking else "yes"
        pool.quality.save_label(created.study_id, item[0], "ann", valid_task=answer, input_ok="yes", output_ok="yes")
    results = quality.study_results(pool, created.study_id)
    valid = results.overall.set_index("measure").loc["valid_task"]
    assert results.note == quality.WEIGHTED_NOTE
    assert valid["yes"] == 6 and valid["n"] == 8                      # 6 of 8 labeled items said yes ...
    assert valid["share"] == pytest.approx(1 - 9 / 26)                # ... but cooking is 9 of the 26
    assert valid["low"] < valid["share"] < valid["high"]


@pytest.mark.parametrize("sizes, rates, n", [
    ([5000, 2000, 1000, 500, 200, 100, 50, 30], [0.95, 0.9, 0.8, 0.7, 0.6, 0.9, 0.5, 0.85], 200),
    ([5000, 2000, 1000, 500, 200, 100, 50, 30], [0.95, 0.9, 0.8, 0.7, 0.6, 0.9, 0.5, 0.85], 60),
    ([3000] * 4 + [300] * 6, [0.99] * 10, 100),
    ([8000, 500, 500, 500], [0.6, 0.2, 0.9, 0.5], 40),
])
def test_weighted_rates_cover_the_pool_rate(sizes, rates, n):
    """Equal shares per topic, then the weighted rate's 95% interval: it holds the pool's true rate
    in at least 94% of 600 seeded draws at the sizes people label (30 to 200 items)."""
    from selfinstruct import quality
    from selfinstruct.model import QUESTIONS

    rng = np.random.default_rng(11)
    alloc = quality.allocate_equal(dict(enumerate(sizes)), n)
    goods = [round(s * r) for s, r in zip(sizes, rates)]
    truth = sum(goods) / sum(sizes)
    hits = 0
    for _ in range(600):
        items, strata = [], {}
        for h, (big, good) in enumerate(zip(sizes, goods)):
            yes = rng.hypergeometric(good, big - good, alloc[h])
            for j in range(alloc[h]):
                answer = "yes" if j < yes else "no"
                strata[len(items)] = h
                items.append({"candidate_id": len(items), **{q: answer for q in QUESTIONS}, "all_valid": answer})
        row = quality.weighted_rates(items, strata, dict(enumerate(sizes))).iloc[0]
        hits += row["low"] <= truth <= row["high"]
    assert hits / 600 >= 0.94


def test_names_by_the_configured_model_are_stored_with_the_prompt_version(topic_pool):
    from selfinstruct.backend import OPENAI_COMPATIBLE, Backend
    from selfinstruct.offline import OfflineServer
    from selfinstruct.prompts import TOPIC_NAME_VERSION

    pool, families, set_id = topic_pool

    def answer(text, seed):
        if "soup" in text:
            return "Name: Soup recipes."
        if "Python" in text:
            return '"Small Python functions"'
        return "This group is about many different things that have little in common with each other at all"

    with OfflineServer(responder=answer, model_names=("namer",)) as srv:
        backend = Backend(kind=OPENAI_COMPATIBLE, base_url=srv.base_url, api_key="sk-test")
        names = topics.name_with_model(pool, set_id, backend, model="namer")
    cooking, code = _topic_of(pool, set_id, families["cooking"]), _topic_of(pool, set_id, families["code"])
    assert names == {cooking: "Soup recipes", code: "Small Python functions"}   # the rambling answers are dropped
    stored = {t["topic"]: t for t in pool.topics.topics(set_id)}
    assert stored[cooking]["model_prompt_version"] == TOPIC_NAME_VERSION and stored[cooking]["model"] == "namer"
    rows = {r["topic"]: r for r in topics.topic_rows(pool, set_id)}
    assert rows[cooking]["name"] == "Soup recipes" and rows[cooking]["words_name"].startswith("suggest recipe")
    poetry = _topic_of(pool, set_id, families["poetry"])
    assert rows[poetry]["name"].startswith("compose poem")       # no model name: ours stays


def test_cli_topics_and_the_export_cap(db_path):
    import json

    from selfinstruct.store import Pool
    from tests.conftest import run_cli

    with Pool.open(db_path) as pool:
        build(pool)
    shown = run_cli("topics", "--db", str(db_path), "--json", timeout=300)
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert sorted(r["size"] for r in rows) == sorted(a + b for a, b, _ in SIZES.values())
    capped = run_cli("export", "--db", str(db_path), "--format", "alpaca", "--out", str(db_path.parent / "x.json"),
                     "--max-per-topic", "2", "--dry-run", timeout=300)
    assert capped.returncode == 0, capped.stderr
    assert "At most 2 task(s) per topic" in capped.stdout and "8 task(s)" in capped.stdout
    refused = run_cli("export", "--db", str(db_path), "--format", "alpaca", "--out", str(db_path.parent / "x.json"),
                      "--max-per-topic", "0", "--dry-run", timeout=300)
    assert refused.returncode == 2 and "at least 1" in refused.stderr


def test_a_steered_run_resumed_gives_the_prompts_of_one_run_through(tmp_path, server):
    from selfinstruct import seeds
    from selfinstruct.settings import RunConfig
    from selfinstruct.pipeline import Runner, start_run
    from selfinstruct.store import Pool

    config = dict(base_url=server.base_url, seed=5, steer="coverage", requests_per_round=4, example_lag=1,
                  timeout_s=5.0, max_retries=3)
    with Pool.open(tmp_path / "through.duckdb") as pool:
        seeds.load_starter_seeds(pool)
        run_id = start_run(pool, RunConfig(rounds=4, **config))
        Runner(pool, run_id).run()
        through = _prompts(pool, run_id), [r["set_id"] > 0 for r in pool.topics.run_rounds(run_id)]
    with Pool.open(tmp_path / "resumed.duckdb") as pool:
        seeds.load_starter_seeds(pool)
        run_id = start_run(pool, RunConfig(rounds=2, **config))
        Runner(pool, run_id).run()
        assert Runner(pool, run_id, overrides={"rounds": 4}).run().status == "finished"
        resumed = _prompts(pool, run_id), [r["set_id"] > 0 for r in pool.topics.run_rounds(run_id)]
    assert resumed == through and len(through[1]) == 4
