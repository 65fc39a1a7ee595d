"""The semantic gate and duplicate groups on the pages (AppTest through app.py): the Rejects
page's evidence for semantic_dup and its cosine what-if, and the Pool page's Duplicates view with
its one action and its undo."""
import html
import json
import re

from selfinstruct import embed, seeds, semantic
from selfinstruct.backend import OPENAI_COMPATIBLE
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.store import Pool
from tests.conftest import app_pool, open_page


def plain(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def _grow(path, cosine=0.7):
    with Pool.open(path) as pool, OfflineServer(seed=7) as srv:
        seeds.load_starter_seeds(pool)
        run_id = start_run(pool, RunConfig(base_url=srv.base_url, backend=OPENAI_COMPATIBLE, seed=3, rounds=2,
                                           cosine_threshold=cosine))
        assert Runner(pool, run_id).run().status == "finished"


def test_rejects_page_shows_both_texts_with_cosine_and_rouge_and_rescue_works(db_path, app_env):
    _grow(db_path)
    at = open_page("pages/rejects.py")
    pool = app_pool(db_path)
    cid, nearest, details = pool._q("SELECT id, nearest_text, details FROM candidates WHERE reason = 'semantic_dup' "
                                    "ORDER BY id LIMIT 1").fetchone()
    details = json.loads(details)
    at.pills(key="rej_reasons_instruction").set_value(["semantic_dup"]).run()
    at.selectbox(key="rej_detail_instruction").set_value(cid).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cosine with the nearest"] == f"{details['cosine']:.3f}"
    assert metrics["ROUGE-L of the pair"] == f"{details['rouge_l']:.3f}"
    assert metrics["Cosine threshold (reject above)"] == "0.7"
    marked = [plain(m.value) for m in at.markdown if "<mark" in m.value or "class=" in m.value]
    candidate = pool.review.candidate_detail(cid)["instruction"]
    assert nearest in marked and candidate in marked
    before = pool.counts()
    at.button(key="rej_rescue").click().run()
    assert not at.exception
    assert pool.counts().accepted == before.accepted + 1
    assert pool._q("SELECT status, review, reason FROM candidates WHERE id = ?", [cid]).fetchone() == \
        ("accepted", "rescued", "semantic_dup")


def test_cosine_whatif_counts_equal_a_direct_query(db_path, app_env):
    _grow(db_path)
    at = open_page("pages/rejects.py")
    at.slider(key="rej_whatif_cos").set_value(0.8).run()
    assert not at.exception
    pool = app_pool(db_path)
    cos = "CAST(details->>'cosine' AS DOUBLE)"
    would_pass = pool._scalar(f"SELECT count(*) FROM candidates WHERE reason = 'semantic_dup' AND {cos} <= 0.8")
    would_fail = pool._scalar(f"SELECT count(*) FROM candidates WHERE status = 'accepted' AND decided_by = 'filter' "
                              f"AND {cos} > 0.8")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Semantic rejects that would have passed"] == f"{would_pass:,}"
    assert metrics["Accepted ones that would have been rejected"] == f"{would_fail:,}"
    assert would_pass > 0


def test_duplicates_view_removes_all_but_one_per_group_and_undoes_at_once(demo_db_path, demo_app_env):
    at = open_page("pages/pool.py")
    at.segmented_control(key="pool_view").set_value("duplicates").run()
    at.slider(key="dup_threshold").set_value(0.6).run()
    assert not at.exception
    pool = app_pool(demo_db_path)
    expected = semantic.find_duplicates(pool, embed.bundled(), 0.6)
    assert expected.groups
    assert any(m.value.startswith(f"**{len(expected.groups)} groups**") for m in at.markdown)
    # a person keeps another item in the first group
    first = expected.groups[0]
    other = first.members[0]
    at.radio(key="dup_keep_0").set_value(other).run()
    candidates, seed_ids = expected.removal({0: other})
    before = pool.counts()
    at.button(key="dup_apply").click().run()
    assert not at.exception
    assert pool.counts().accepted == before.accepted - len(candidates) and pool.counts().seeds == before.seeds
    state = {r[0]: r[1] for r in pool._q("SELECT id, status FROM candidates WHERE id IN (SELECT unnest(?::BIGINT[]))",
                                         [candidates + [expected.items[other]["id"]]]).fetchall()}
    assert state[expected.items[other]["id"]] == "accepted" and all(state[c] == "rejected" for c in candidates)
    entries = pool.audit.entries(action="remove_duplicates")
    assert len(entries) == len(candidates) and len({e["after"]["batch"] for e in entries}) == 1
    undo = next(b for b in at.button if b.key and b.key.startswith("pool_undo_"))
    undo.click().run()
    assert not at.exception
    assert pool.counts() == before


def test_the_dataset_card_states_the_gate(db_path):
    from selfinstruct.export.card import build_card

    _grow(db_path, cosine=0.7)
    with Pool.open(db_path) as pool:
        card = build_card(pool, "alpaca")
    text = card.markdown
    assert "| Semantic gate | reject the same task reworded: cosine above 0.7 with a pool instruction" in text


def test_generate_page_sets_the_gate_and_a_new_visit_remembers_it(app_env):
    from tests.test_page_generate import manager, open_generate, use_endpoint, wait_for

    with OfflineServer(seed=7) as server:
        at = open_generate(app_env)
        use_endpoint(at, server)
        at.number_input(key="gen_rounds").set_value(1).run()
        assert at.toggle(key="gen_gate").value is True
        at.slider(key="gen_cosine").set_value(0.72).run()
        at.button(key="gen_start").click().run()
        wait_for(at, lambda: not manager(app_env).status().busy)
        pool = app_pool(app_env)
        config = pool.runs.get(1)["config"]
        assert config["cosine_threshold"] == 0.72 and config["embedder"] == {"kind": "bundled", "model": None,
                                                                              "base_url": None}
        again = open_page("pages/generate.py")
        assert again.toggle(key="gen_gate").value is True and again.slider(key="gen_cosine").value == 0.72
        again.toggle(key="gen_gate").set_value(False).run()
        again.button(key="gen_start").click().run()
        wait_for(again, lambda: not manager(app_env).status().busy)
        assert pool.runs.get(2)["config"]["cosine_threshold"] is None
        assert pool._scalar("SELECT count(*) FROM candidates WHERE run_id = 2 AND reason = 'semantic_dup'") == 0
