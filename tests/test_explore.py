"""The pool explorer's store queries (paged search, audited edits, undo) and the
diversity analyses (leading verb/noun, ROUGE-L against seeds, lengths)."""
import numpy as np
import pytest

from selfinstruct import actions, explore
from selfinstruct.export import ExportFilters
from selfinstruct.novelty import rouge_l, tokenize
from selfinstruct.actions import ActionError
from tests.test_export import build_small_pool


@pytest.fixture
def small(pool):
    return pool, build_small_pool(pool)


# -- leading verb and noun ------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Write a short story about a lost dog.", ("write", "story")),
    ("Please summarize the article below.", ("summarize", "article")),
    ("Create a list of healthy snacks.", ("create", "list")),
    ("Given a list of numbers, find the largest one.", ("find", "largest")),
    ("In this task you get a review. Classify its sentiment.", ("classify", "sentiment")),
    ("Tell me a joke about cats.", ("tell", "joke")),
    ("Explain", ("explain", None)),
    ("What is the capital of Peru?", (None, None)),
    ("", (None, None)),
])
def test_leading_verb_and_noun(text, expected):
    assert explore.leading_verb_noun(text) == expected


def test_verb_noun_counts_add_up_and_keep_the_top_verbs():
    texts = (["Write a poem about rain."] * 5 + ["Write an email to a friend."] * 3
             + ["Write a poem for my mother."] * 2 + ["Classify the tweet as spam."] * 4
             + ["List three fruits."] + ["Why is the sky blue?"] * 2)
    table = explore.verb_noun_counts(texts, top_verbs=2, nouns_per_verb=1)
    assert table["count"].sum() == len(texts) - 1          # 'list' is beyond the top two verbs
    rows = {(v, n): c for v, n, c in zip(table["verb"], table["noun"], table["count"])}
    assert rows == {("write", "poem"): 7, ("write", "(other)"): 3, ("classify", "tweet"): 4,
                    ("(none)", "(none)"): 2}
    assert list(table["verb"])[-1] == "(none)"


# -- ROUGE-L against the seeds -------------------------------------------------------------
def test_rouge_vs_seeds_is_the_exact_best_score_against_any_seed():
    seeds = ["Write a poem about the sea.", "Classify the sentence as positive or negative.",
             "Translate the text into German."]
    generated = ["Write a poem about the mountains.", "Translate the sentence into French.",
                 "Name three birds.", "Classify the review as positive or negative."]
    result = explore.rouge_vs_seeds(seeds, generated)
    brute = [max(rouge_l(tokenize(s), tokenize(g)) for s in seeds) for g in generated]
    assert np.allclose(result.scores, brute, rtol=0, atol=0)
    assert result.total == 4 and not result.sampled and result.seeds == 3
    assert result.scores[2] == 0.0
    sampled = explore.rouge_vs_seeds(seeds, generated * 10, max_items=5)
    assert sampled.sampled and len(sampled.scores) == 5 and sampled.total == 40
    hist = explore.rouge_histogram(result.scores)
    assert hist["n"].sum() == 4 and len(hist) == 20


def test_length_stats_match_python_word_counts(demo_pool):
    stats = demo_pool.explore.export_length_stats(ExportFilters(include_seeds=False), bin_width=5, cap=100)
    frame = demo_pool.explore.export_preview(ExportFilters(include_seeds=False), 100_000)
    outputs = [len(o.split()) for o in frame["output"]]
    inputs = [len(i.split()) for i in frame["input"] if i != ""]
    instructions = [len(t.split()) for t in frame.drop_duplicates("task_id")["instruction"]]
    assert stats["means"]["output"] == pytest.approx(np.mean(outputs))
    assert stats["means"]["input"] == pytest.approx(np.mean(inputs))
    assert stats["means"]["instruction"] == pytest.approx(np.mean(instructions))
    hist = stats["histogram"]
    assert hist[hist["field"] == "output"]["n"].sum() == len(outputs)
    first_bin = sum(1 for n in outputs if n < 5)
    assert int(hist[(hist["field"] == "output") & (hist["bin_start"] == 0)]["n"].sum()) == first_bin


# -- browsing ---------------------------------------------------------------------------------
def test_browse_pages_searches_and_counts_in_sql(demo_pool):
    total = demo_pool.explore.pool_browse_count()
    assert total == demo_pool.counts().accepted
    first = demo_pool.explore.pool_browse(limit=50, offset=0)
    second = demo_pool.explore.pool_browse(limit=50, offset=50)
    assert len(first) == 50 and not set(first["id"]) & set(second["id"])
    assert list(first["id"]) == sorted(first["id"], reverse=True)
    word = first.iloc[0]["instruction"].split()[0].lower()
    hits = demo_pool.explore.pool_browse(word.upper(), limit=500)
    assert len(hits) == demo_pool.explore.pool_browse_count(word) > 0
    assert all(word in text.lower() for text in hits["instruction"])
    clf = demo_pool.explore.pool_browse_count(classification=True)
    assert 0 < clf < total and clf + demo_pool.explore.pool_browse_count(classification=False) == total
    item = demo_pool.explore.pool_item(int(first.iloc[0]["id"]))
    kept = [i for i in item["instances"] if i["status"] == "kept"]
    assert len(kept) == first.iloc[0]["instances"]


def test_search_can_look_inside_instances(small):
    pool, ids = small
    assert pool.explore.pool_browse_count("rivers") == 0
    found = pool.explore.pool_browse("RIVERS", in_instances=True)
    assert list(found["id"]) == [ids["G1"]]
    assert pool.explore.pool_browse_count("%") == 0                   # no wildcard surprises


# -- audited edits and undo -------------------------------------------------------------------
def test_edit_instruction_is_audited_and_counts_as_human_approved(small):
    pool, ids = small
    [audit_id] = actions.edit_instruction(pool, ids["G2"], "  Decide whether the whole number is odd or even. ",
                                          actor="ana").audit_ids
    item = pool.explore.pool_item(ids["G2"])
    assert item["instruction"] == "Decide whether the whole number is odd or even."
    assert (item["review"], item["decided_by"]) == ("approved", "human")
    entry = pool.audit.entries(action="edit_candidate")[0]
    assert entry["id"] == audit_id and entry["actor"] == "ana"
    assert entry["before"]["instruction"] == "Decide whether the number is odd or even."
    assert entry["after"]["instruction"] == item["instruction"]
    assert ids["G2"] in set(pool.explore.pool_browse(review="human_approved")["id"])
    with pytest.raises(ActionError, match="empty"):
        actions.edit_instruction(pool, ids["G2"], "   ", actor="ana")
    actions.undo(pool, audit_id, actor="ana")
    item = pool.explore.pool_item(ids["G2"])
    assert item["instruction"] == "Decide whether the number is odd or even."
    assert (item["review"], item["decided_by"]) == (None, "filter")


def test_edit_and_drop_instances(small):
    pool, ids = small
    kept = [i for i in pool.explore.pool_item(ids["G1"])["instances"] if i["status"] == "kept"]
    edit = actions.edit_instance(pool, kept[0]["id"], input="A paragraph on rivers.", output="Rivers feed us.",
                                 actor="bo")
    entry = pool.audit.entries(action="edit_instance")[0]
    assert entry["id"] == edit.audit_ids[0] and entry["target_id"] == kept[0]["id"]
    vouch = pool.audit.entries(action="approve")[0]          # the task's approval, in the same batch
    assert (vouch["id"], vouch["target_id"], vouch["after"]["batch"]) == (edit.audit_ids[1], ids["G1"], edit.batch)
    assert entry["before"]["output"] == "Rivers matter." and entry["after"]["output"] == "Rivers feed us."
    assert pool.explore.pool_item(ids["G1"])["review"] == "approved"
    rows = pool.explore.export_preview(ExportFilters(include_seeds=False), 50)
    assert "Rivers feed us." in set(rows["output"])
    with pytest.raises(ActionError, match="output"):
        actions.edit_instance(pool, kept[0]["id"], input="x", output=" ", actor="bo")
    actions.undo_batch(pool, edit.batch, actor="bo")
    assert pool.explore.pool_item(ids["G1"])["review"] is None
    assert "Rivers matter." in set(pool.explore.export_preview(ExportFilters(include_seeds=False), 50)["output"])

    [drop] = actions.remove_instance(pool, kept[1]["id"], actor="bo").audit_ids
    assert pool.explore.export_counts(ExportFilters(include_seeds=False))["instances"] == 4
    actions.undo(pool, drop, actor="bo")
    assert pool.explore.export_counts(ExportFilters(include_seeds=False))["instances"] == 5


def test_remove_takes_an_item_out_and_undo_puts_it_back(small):
    pool, ids = small
    before = pool.explore.export_counts(ExportFilters(include_seeds=False))["tasks"]
    [audit_id] = actions.remove(pool, ids["G6"], actor="cy", reason="off topic").audit_ids
    item = pool.explore.pool_item(ids["G6"])
    assert (item["status"], item["reason"], item["decided_by"]) == ("rejected", "removed", "human")
    assert pool.explore.export_counts(ExportFilters(include_seeds=False))["tasks"] == before - 1
    assert ids["G6"] not in set(pool.explore.pool_browse()["id"])
    entry = pool.audit.entries(action="remove")[0]
    assert entry["reason"] == "off topic" and entry["before"]["status"] == "accepted"
    with pytest.raises(ActionError, match="not in the accepted pool"):
        actions.remove(pool, ids["G6"], actor="cy")
    [undo_id] = actions.undo(pool, audit_id, actor="cy").audit_ids
    item = pool.explore.pool_item(ids["G6"])
    assert (item["status"], item["reason"], item["decided_by"]) == ("accepted", None, "filter")
    assert pool.audit.entries(action="remove")[0]["undone_by"] == undo_id
    with pytest.raises(ActionError, match="already undone"):
        actions.undo(pool, audit_id, actor="cy")


def test_undo_refuses_when_the_item_changed_since(small):
    pool, ids = small
    [first] = actions.edit_instruction(pool, ids["G4"], "Explain photosynthesis to a curious child.",
                                       actor="d").audit_ids
    actions.edit_instruction(pool, ids["G4"], "Explain photosynthesis simply to a child.", actor="d")
    with pytest.raises(ActionError, match="changed since"):
        actions.undo(pool, first, actor="d")
    assert pool.explore.pool_item(ids["G4"])["instruction"] == "Explain photosynthesis simply to a child."


def test_approve_and_recent_actions(small):
    pool, ids = small
    [audit_id] = actions.approve(pool, ids["G2"], actor="eve").audit_ids
    assert pool.explore.pool_item(ids["G2"])["review"] == "approved"
    with pytest.raises(ActionError, match="already human-approved"):
        actions.approve(pool, ids["G2"], actor="eve")
    recent = actions.history(pool, actions.POOL_ACTIONS, undos=False)
    assert recent[0]["id"] == audit_id and recent[0]["action"] == "approve"
    version = pool.explore.explore_version()
    actions.undo(pool, audit_id, actor="eve")
    assert pool.explore.explore_version() != version                  # caches keyed on it are refreshed
    assert pool.explore.pool_item(ids["G2"])["review"] is None


def test_edit_warnings_name_the_heuristic_rules():
    assert explore.edit_warnings("Explain how tides work to a child.") == []
    warnings = explore.edit_warnings("Draw a map")
    assert len(warnings) == 2 and any("draw" in w for w in warnings)
