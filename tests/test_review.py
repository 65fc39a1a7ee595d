"""Rejects review: evidence, LCS marks, paged queries, rescue / confirm / undo, what-if."""
import random

import pytest

from selfinstruct import actions, review
from selfinstruct.novelty import lcs_length, rouge_l, tokenize
from selfinstruct.actions import ActionError, UndoRefused


def sql(pool, query, params=None):
    return pool._q(query, params or []).fetchall()


def scalar(pool, query, params=None):
    return sql(pool, query, params)[0][0]


def add_rejects(pool, rows, *, name="synthetic"):
    """A run with one round holding `rows` (candidates as the pipeline writes them)."""
    run_id = pool.runs.create({"rouge_threshold": 0.7, "min_words": 4, "max_words": 150,
                              "keywords": ["draw", "map", "go to"]}, name=name)
    round_id = pool.runs.create_round(run_id, 1, "done")
    rows = [{"position": i, "status": "rejected", **row} for i, row in enumerate(rows)]
    return run_id, pool.requests.add_candidates(run_id, round_id, rows)


# ----------------------------------------------------------------------- tokens and LCS
@pytest.mark.parametrize("text", [
    "Write a poem about the sea.", "don't STOP", "café au lait", "İstanbul is big",
    "\u212a is the Kelvin sign", "ＡＢＣ full width", "snake_case and 3.14 pi", "", "!!! ...",
    "Σίσυφος and ΣΑΣ", "emoji 🙂 here 42", "ß and ẞ", "ǅungla",
])
def test_token_spans_cover_exactly_the_rouge_tokens(text):
    spans = review.token_spans(text)
    tokens = tokenize(text)
    assert len(spans) == len(tokens)
    for (start, end), token in zip(spans, tokens):
        assert tokenize(text[start:end]) == [token]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_token_spans_agree_with_tokenize_on_random_unicode():
    rng = random.Random(7)
    alphabet = "abcXYZ09 -'.,İıK\u212aßéÉΣσς🙂中\u0307\n\t"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        spans = review.token_spans(text)
        assert [tokenize(text[s:e])[0] for s, e in spans] == tokenize(text)


def test_dotted_capital_i_marks_the_whole_character():
    # "İ" lower-cases to "i" + a combining dot: the token "i" maps back to the one "İ".
    assert review.token_spans("İstanbul") == [(0, 1), (1, 8)]
    assert tokenize("İstanbul") == ["i", "stanbul"]


def test_lcs_alignment_is_a_longest_common_subsequence():
    rng = random.Random(3)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 14))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 14))]
        ia, ib = review.lcs_alignment(a, b)
        assert len(ia) == len(ib) == lcs_length(a, b)
        assert ia == sorted(set(ia)) and ib == sorted(set(ib))
        assert [a[i] for i in ia] == [b[j] for j in ib]


def test_shared_word_spans_mark_the_common_words_in_both_texts():
    a = "Summarize the customer complaint in one sentence."
    b = "Summarize the customer's complaint in a single sentence."
    shared = review.shared_word_spans(a, b)
    assert [a[s:e] for s, e in shared.a_spans] == ["Summarize", "the", "customer", "complaint", "in", "sentence"]
    assert [b[s:e] for s, e in shared.b_spans] == ["Summarize", "the", "customer", "complaint", "in", "sentence"]
    assert shared.shared == lcs_length(tokenize(a), tokenize(b))


# ----------------------------------------------------------------------- explanations
def test_rouge_explanation_shows_the_stored_neighbours_and_scores(demo_pool):
    cid, stored, nearest = sql(demo_pool, "SELECT id, max_rouge, nearest_text FROM candidates "
                                          "WHERE reason = 'rouge' AND max_rouge < 1 ORDER BY id LIMIT 1")[0]
    cand = demo_pool.review.candidate_detail(cid)
    exp = review.explain_candidate(cand, k=10)
    assert exp.kind == "rouge" and exp.threshold == 0.7
    assert exp.max_rouge == stored
    assert exp.neighbours[0].text == nearest and exp.neighbours[0].score == stored
    assert [n.text for n in exp.neighbours] == [n["text"] for n in cand["details"]["nearest"]]
    for nb in exp.neighbours:
        assert nb.recomputed == nb.score          # the marks explain exactly the stored score
        assert nb.shared == len(nb.candidate_spans) == len(nb.neighbour_spans)
        assert rouge_l(tokenize(nb.text), tokenize(exp.text)) == nb.score


def test_keyword_explanation_marks_the_word_from_evidence_or_recomputes_it(pool):
    text = "Draw a map of the old town and go to bed."
    _, (good, stale) = add_rejects(pool, [
        {"instruction": text, "reason": "keyword",
         "details": {"message": "m", "keyword": "draw", "span": [0, 4],
                     "matches": [{"keyword": "draw", "span": [0, 4]}, {"keyword": "map", "span": [7, 10]},
                                 {"keyword": "go to", "span": [31, 36]}]}},
        {"instruction": text, "reason": "keyword",
         "details": {"message": "m", "keyword": "map", "span": [40, 99]}},   # span no longer fits
    ])
    exp = review.explain_candidate(pool.review.candidate_detail(good))
    assert [text[s:e] for s, e in exp.spans] == ["Draw", "map", "go to"]
    assert exp.keywords == ["draw", "map", "go to"]
    exp = review.explain_candidate(pool.review.candidate_detail(stale))
    assert [text[s:e] for s, e in exp.spans] == ["map"]


def test_length_and_unparseable_explanations(pool):
    _, (short, raw) = add_rejects(pool, [
        {"instruction": "Tell a joke.", "reason": "too_short",
         "details": {"message": "The instruction has 3 words; at least 4 are needed.", "words": 3, "limit": 4}},
        {"instruction": "1) <b>half a list", "reason": "unparseable", "details": {"message": "m"}},
    ])
    exp = review.explain_candidate(pool.review.candidate_detail(short))
    assert (exp.kind, exp.words, exp.limit, exp.facts["direction"]) == ("length", 3, 4, "at least")
    exp = review.explain_candidate(pool.review.candidate_detail(raw))
    assert exp.kind == "unparseable" and exp.text == "1) <b>half a list" and exp.rescue_blocked


# ----------------------------------------------------------------------- browsing
def test_counts_and_pages_match_direct_queries(demo_pool):
    counts = demo_pool.review.reject_counts("instruction", review="pending")
    direct = dict(sql(demo_pool, "SELECT reason, count(*) FROM candidates WHERE status = 'rejected' GROUP BY 1"))
    assert counts == direct
    q = review.RejectQuery(reasons=("rouge", "keyword"))
    first = review.load_page(demo_pool, q, page=1, page_size=20)
    assert first.total == direct["rouge"] + direct["keyword"]
    ids = []
    for page in range(1, first.pages + 1):
        rows = review.load_page(demo_pool, q, page=page, page_size=20).rows
        assert set(rows["reason_code"]) <= {"rouge", "keyword"}
        ids += list(rows["id"])
    assert len(ids) == len(set(ids)) == first.total
    # search, run and round narrow it down
    n = scalar(demo_pool, "SELECT count(*) FROM candidates WHERE status = 'rejected' "
                          "AND lower(instruction) LIKE '%summarize%'")
    assert review.load_page(demo_pool, review.RejectQuery(search="SUMMARIZE")).total == n > 0
    n = scalar(demo_pool, "SELECT count(*) FROM candidates c JOIN rounds r ON r.id = c.round_id "
                          "WHERE c.status = 'rejected' AND r.number = 2")
    assert review.load_page(demo_pool, review.RejectQuery(run_id=1, round_number=2)).total == n > 0
    # a page past the end is clamped to the last one
    assert review.load_page(demo_pool, q, page=99, page_size=20).page == first.pages


def test_instance_rejects_are_browsable(demo_pool):
    page = review.load_page(demo_pool, review.RejectQuery(kind="instance"))
    assert page.total == scalar(demo_pool, "SELECT count(*) FROM instances WHERE status = 'rejected'") > 0
    row = page.rows.iloc[0]
    detail = demo_pool.review.instance_detail(int(row["id"]))
    assert detail["instruction"] == row["instruction"] and detail["input"] == row["input"]
    exp = review.explain_instance(detail)
    assert exp.reason == row["reason_code"] and exp.facts["output"] == row["output"]


def test_paged_queries_on_100k_rejects(pool):
    run_id, _ = add_rejects(pool, [{"instruction": "seed row", "reason": "too_short"}])
    pool._q("INSERT INTO candidates (run_id, round_id, position, instruction, status, reason, max_rouge) "
            "SELECT ?, 1, i, 'Candidate number ' || i, 'rejected', "
            "CASE WHEN i % 3 = 0 THEN 'rouge' ELSE 'keyword' END, "
            "CASE WHEN i % 3 = 0 THEN 0.7 + (i % 30) / 100.0 END FROM range(1, 100001) t(i)", [run_id])
    page = review.load_page(pool, review.RejectQuery(reasons=("rouge",)), page=400, page_size=50)
    assert page.total == 33333 and page.pages == 667 and len(page.rows) == 50
    assert review.load_page(pool, review.RejectQuery(search="number 99999")).total == 1
    what = review.whatif(pool, 0.8)
    assert what.would_pass == scalar(pool, "SELECT count(*) FROM candidates WHERE reason = 'rouge' "
                                           "AND max_rouge <= 0.8")


# ----------------------------------------------------------------------- actions
def audit(pool, audit_id):
    return next(e for e in pool.audit.entries(limit=1000) if e["id"] == audit_id)


def test_rescue_puts_a_reject_in_the_pool_audited_and_undoable(demo_pool):
    cid, text = sql(demo_pool, "SELECT id, instruction FROM candidates WHERE reason = 'keyword' "
                               "AND status = 'rejected' ORDER BY id LIMIT 1")[0]
    before = demo_pool.counts()
    outcome = actions.rescue(demo_pool, [cid], actor="ana", reason="a photo can be described in words")
    assert outcome.done == [cid] and not outcome.skipped
    after = demo_pool.counts()
    assert (after.accepted, after.rejected, after.rescued) == (before.accepted + 1, before.rejected - 1,
                                                               before.rescued + 1)
    row = sql(demo_pool, "SELECT status, decided_by, review, reason FROM candidates WHERE id = ?", [cid])[0]
    assert row == ("accepted", "human", "rescued", "keyword")
    entry = audit(demo_pool, outcome.audit_ids[0])
    assert (entry["actor"], entry["action"], entry["target_kind"], entry["target_id"]) == ("ana", "rescue", "candidate", cid)
    assert entry["reason"] == "a photo can be described in words"
    assert entry["before"] == {"instruction": text, "status": "rejected", "reason": "keyword", "review": None,
                               "decided_by": "filter"}
    assert entry["after"] == {"instruction": text, "status": "accepted", "reason": "keyword", "review": "rescued",
                              "decided_by": "human", "batch": outcome.batch}
    # it is in the novelty pool of every later run, and waits for instances
    assert text in demo_pool.seeds.pool_instructions()
    waiting = {c["id"]: c for c in demo_pool.requests.candidates_needing_followups()}
    assert cid in waiting and waiting[cid]["is_classification"] is None
    # it stays visible as rescued
    rescued = review.load_page(demo_pool, review.RejectQuery(review="rescued")).rows
    assert list(rescued["id"]) == [cid] and rescued["state"][0] == "rescued · instances pending"

    [undo_id] = actions.undo(demo_pool, outcome.audit_ids[0], actor="ben").audit_ids
    assert demo_pool.counts() == before
    assert sql(demo_pool, "SELECT status, decided_by, review FROM candidates WHERE id = ?", [cid])[0] == \
        ("rejected", "filter", None)
    assert audit(demo_pool, outcome.audit_ids[0])["undone_by"] == undo_id
    assert audit(demo_pool, undo_id)["action"] == "undo" and audit(demo_pool, undo_id)["actor"] == "ben"
    with pytest.raises(UndoRefused, match="already undone"):
        actions.undo(demo_pool, outcome.audit_ids[0], actor="ben")


def test_undo_refuses_when_the_candidate_changed_since(demo_pool):
    cid = scalar(demo_pool, "SELECT min(id) FROM candidates WHERE reason = 'rouge'")
    confirm = actions.confirm(demo_pool, [cid], actor="ana")
    rescue = actions.rescue(demo_pool, [cid], actor="ben")
    assert rescue.done == [cid]
    with pytest.raises(UndoRefused, match="changed since.*rescue, ben"):
        actions.undo(demo_pool, confirm.audit_ids[0], actor="ana")
    assert scalar(demo_pool, "SELECT review FROM candidates WHERE id = ?", [cid]) == "rescued"
    actions.undo(demo_pool, rescue.audit_ids[0], actor="ben")       # newest first works
    actions.undo(demo_pool, confirm.audit_ids[0], actor="ana")      # then the older one
    assert sql(demo_pool, "SELECT status, review FROM candidates WHERE id = ?", [cid])[0] == ("rejected", None)
    with pytest.raises(UndoRefused, match="itself an undo"):
        actions.undo(demo_pool, demo_pool.audit.entries(action="undo")[0]["id"], actor="ana")


def test_bulk_confirm_and_batch_undo(demo_pool):
    ids = [r[0] for r in sql(demo_pool, "SELECT id FROM candidates WHERE status = 'rejected' ORDER BY id LIMIT 4")]
    actions.rescue(demo_pool, ids[:1], actor="ana")
    outcome = actions.confirm(demo_pool, ids, actor="ana", reason="rightly dropped")
    assert outcome.done == ids[1:] and outcome.skipped[0][0] == ids[0]
    assert "undo the rescue instead" in outcome.skipped[0][1]
    assert [r[0] for r in sql(demo_pool, "SELECT id FROM candidates WHERE review = 'confirmed' ORDER BY id")] == ids[1:]
    log = actions.history(demo_pool)
    assert (log[0]["action"], log[0]["items"], log[0]["open"], log[0]["batch"]) == ("confirm", 3, 3, outcome.batch)
    assert actions.confirm(demo_pool, ids[1:2], actor="ana").skipped[0][1] == "it is already confirmed"
    undone = actions.undo_batch(demo_pool, outcome.batch, actor="ana")
    assert undone.count == 3
    assert scalar(demo_pool, "SELECT count(*) FROM candidates WHERE review = 'confirmed'") == 0
    with pytest.raises(UndoRefused):
        actions.undo_batch(demo_pool, outcome.batch, actor="ana")


def test_unparseable_is_rescued_only_with_an_edited_text_and_undo_restores_it(pool):
    _, (cid,) = add_rejects(pool, [{"instruction": "3) Draw a\n\nmap of", "reason": "unparseable",
                                    "details": {"message": "m"}}])
    skipped = actions.rescue(pool, [cid], actor="ana")
    assert not skipped.done and "edit it" in skipped.skipped[0][1]
    with pytest.raises(ActionError):
        actions.rescue(pool, [cid], actor="ana", instruction="   ")
    cand = pool.review.candidate_detail(cid)
    warnings = review.rescue_warnings(pool, cand, "Draw a map of the town.")
    assert any("Unsuitable" in w or "mentions" in w for w in warnings)
    done = actions.rescue(pool, [cid], actor="ana", instruction=" Describe the town square in detail. ")
    assert pool.review.candidate_detail(cid)["instruction"] == "Describe the town square in detail."
    entry = audit(pool, done.audit_ids[0])
    assert entry["before"]["instruction"] == "3) Draw a\n\nmap of"
    actions.undo(pool, done.audit_ids[0], actor="ana")
    assert sql(pool, "SELECT instruction, status FROM candidates WHERE id = ?", [cid])[0] == \
        ("3) Draw a\n\nmap of", "rejected")


def test_rescue_warns_about_an_exact_copy(demo_pool):
    cid = scalar(demo_pool, "SELECT min(id) FROM candidates WHERE reason = 'rouge' AND max_rouge = 1")
    warnings = review.rescue_warnings(demo_pool, demo_pool.review.candidate_detail(cid))
    assert any("exact instruction" in w for w in warnings)


def test_instance_rescue_keeps_it_and_undo_rejects_it_again(demo_pool):
    iid, reason = sql(demo_pool, "SELECT id, reason FROM instances WHERE status = 'rejected' ORDER BY id LIMIT 1")[0]
    kept_before = demo_pool.counts().instances
    outcome = actions.rescue_instances(demo_pool, [iid], actor="ana")
    assert sql(demo_pool, "SELECT status, reason FROM instances WHERE id = ?", [iid])[0] == ("kept", reason)
    assert demo_pool.counts().instances == kept_before + 1
    rescued = review.load_page(demo_pool, review.RejectQuery(kind="instance", review="rescued")).rows
    assert list(rescued["id"]) == [iid]
    actions.undo(demo_pool, outcome.audit_ids[0], actor="ana")
    assert sql(demo_pool, "SELECT status FROM instances WHERE id = ?", [iid])[0] == ("rejected",)


# ----------------------------------------------------------------------- what-if
@pytest.mark.parametrize("t", [0.7, 0.75, 0.8, 0.95, 1.0])
def test_whatif_counts_equal_direct_queries(demo_pool, t):
    what = review.whatif(demo_pool, t)
    assert what.would_pass == scalar(
        demo_pool, "SELECT count(*) FROM candidates WHERE status = 'rejected' AND reason = 'rouge' "
                   "AND max_rouge <= ?", [t])
    assert what.would_fail == scalar(
        demo_pool, "SELECT count(*) FROM candidates WHERE status = 'accepted' AND max_rouge > ?", [t])
    assert what.thresholds_used == [0.7]


def test_histogram_and_keyword_table(demo_pool):
    hist = demo_pool.review.rouge_histogram(bins=20)
    assert hist["n"].sum() == scalar(demo_pool, "SELECT count(*) FROM candidates WHERE max_rouge IS NOT NULL")
    assert hist["bin_start"].min() >= 0 and hist["bin_end"].max() <= 1.0
    keywords = demo_pool.review.keyword_rejects()
    expected: dict[str, int] = {}
    for (details,) in sql(demo_pool, "SELECT details FROM candidates WHERE reason = 'keyword'"):
        import json
        for kw in {m["keyword"] for m in json.loads(details)["matches"]}:
            expected[kw] = expected.get(kw, 0) + 1
    assert dict(zip(keywords["keyword"], keywords["candidates"])) == expected


# ----------------------------------------------------------------------- bulk (issue 16)
def test_matching_ids_are_every_page_in_table_order(demo_pool):
    query = review.RejectQuery(reasons=("rouge", "keyword"))
    pages = review.load_page(demo_pool, query, page_size=10).pages
    paged = [int(i) for p in range(1, pages + 1) for i in review.load_page(demo_pool, query, p, 10).rows["id"]]
    assert review.matching_ids(demo_pool, query) == paged and len(paged) > 10
    inst = review.RejectQuery(kind="instance")
    assert review.matching_ids(demo_pool, inst) == [int(i) for i in review.load_page(demo_pool, inst, 1, 1000).rows["id"]]


def test_skipped_summary_groups_the_reasons():
    assert review.skipped_summary([]) == ""
    text = review.skipped_summary([(4, "it is already accepted"), (7, "it is raw"), (9, "it is already accepted"),
                                   (11, "it is already accepted"), (12, "it is already accepted")])
    assert text == "Skipped 5: 4 because it is already accepted (#4, #9, #11, ...); 1 because it is raw (#7)."
    assert review.edited_text(" 7) raw ", "7) raw") is None and review.edited_text("7) raw", " ") is None
    assert review.edited_text("7) raw", " Explain lists. ") == "Explain lists."


def expected_undo(state_now, state_back, audit_id):
    return {"before": state_now, "after": {**state_back, "undoes": audit_id}, "reason": f"undo of #{audit_id}"}


def test_bulk_actions_and_their_undo_write_what_one_row_at_a_time_writes(pool):
    """The set-based path (a whole batch at once) against the per-entry one (`undo`)."""
    _, ids = add_rejects(pool, [{"instruction": f"Describe item number {i} in detail.", "reason": "keyword"}
                                for i in range(6)] + [{"instruction": "7) raw", "reason": "unparseable"}])
    states = {i: pool.audit.read_state("candidate", i) for i in ids}
    out = actions.rescue(pool, ids, actor="ana", reason="  fine  ")
    assert out.done == ids[:6] and [s[0] for s in out.skipped] == [ids[6]] and "edit it" in out.skipped[0][1]
    rows = {audit(pool, a)["target_id"]: audit(pool, a) for a in out.audit_ids}
    assert list(rows) == ids[:6]
    for i in ids[:6]:
        entry = rows[i]
        assert (entry["action"], entry["actor"], entry["reason"], entry["target_kind"]) == ("rescue", "ana", "fine", "candidate")
        assert entry["before"] == states[i]
        assert entry["after"] == {**states[i], "status": "accepted", "decided_by": "human", "review": "rescued",
                                  "batch": out.batch}

    # One entry undone on its own (the per-entry path), the rest of the batch at once.
    rescued = {i: pool.audit.read_state("candidate", i) for i in ids[:6]}
    one = actions.undo(pool, rows[ids[0]]["id"], actor="bo")
    rest = actions.undo_batch(pool, out.batch, actor="bo")
    assert sorted(rest.done) == sorted(rows[i]["id"] for i in ids[1:6]) and not rest.skipped
    for undo_id, target in [(one.audit_ids[0], ids[0])] + [(u, audit(pool, u)["target_id"]) for u in rest.audit_ids]:
        entry = audit(pool, undo_id)
        got = {"before": entry["before"], "after": {k: v for k, v in entry["after"].items() if k != "batch"},
               "reason": entry["reason"]}
        assert got == expected_undo(rescued[target], states[target], rows[target]["id"])
        assert audit(pool, rows[target]["id"])["undone_by"] == undo_id
    assert {i: pool.audit.read_state("candidate", i) for i in ids} == states

    # A batch whose item changed since: that one is refused in words, the others undone.
    again = actions.confirm(pool, ids[:3], actor="ana")
    later = actions.rescue(pool, [ids[1]], actor="cy")    # a confirmed reject can still be rescued
    partial = actions.undo_batch(pool, again.batch, actor="bo")
    assert partial.count == 2 and partial.skipped[0][0] == again.audit_ids[1]
    assert f"changed since by entry #{later.audit_ids[0]} (rescue, cy)" in partial.skipped[0][1]


def test_all_that_match_100k_rejects_rescued_and_undone_in_seconds(pool):
    import time

    run_id, _ = add_rejects(pool, [{"instruction": "seed row", "reason": "too_short"}])
    pool._q("INSERT INTO candidates (run_id, round_id, position, instruction, status, reason) "
            "SELECT ?, 1, i, 'Candidate number ' || i, 'rejected', 'keyword' FROM range(1, 100001) t(i)", [run_id])
    start = time.perf_counter()
    ids = review.matching_ids(pool, review.RejectQuery(reasons=("keyword",)))
    out = actions.rescue(pool, ids, actor="ana", reason="bulk")
    rescued = time.perf_counter() - start
    assert out.count == 100_000 == len(set(out.audit_ids))
    assert scalar(pool, "SELECT count(*) FROM audit_log WHERE action = 'rescue'") == 100_000
    start = time.perf_counter()
    undone = actions.undo_batch(pool, out.batch, actor="ana")
    undid = time.perf_counter() - start
    assert undone.count == 100_000
    assert scalar(pool, "SELECT count(*) FROM candidates WHERE status = 'rejected' AND reason = 'keyword'") == 100_000
    assert rescued < 30 and undid < 30, (rescued, undid)     # ~2 s and ~3 s on the dev machine
