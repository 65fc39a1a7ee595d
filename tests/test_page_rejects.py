"""The Rejects page through app.py, on a pool grown by the offline demo."""
import html
import re

from selfinstruct.store import Pool
from tests.conftest import app_pool, open_page







def scalar(pool, query, params=None):
    return pool._q(query, params or []).fetchone()[0]


def shown_total(at) -> int:
    heading = at.subheader[0].value      # the table's heading: "<n> rejected instructions to review"
    return int(heading.split()[0].replace(",", ""))


def table(at):
    return next(d for d in at.dataframe if d.key == "rej_table").value


def frame_with(at, column):
    # Read-only dataframes carry no key in AppTest: find them by a column.
    return next(d.value for d in at.dataframe if column in d.value.columns)


def plain(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_filters_narrow_the_table_to_the_right_counts(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    pending = scalar(pool, "SELECT count(*) FROM candidates WHERE status = 'rejected' AND review IS NULL")
    assert shown_total(at) == pending and len(table(at)) == min(50, pending)

    at.pills(key="rej_reasons_instruction").set_value(["rouge", "too_short"]).run()
    expected = scalar(pool, "SELECT count(*) FROM candidates WHERE status = 'rejected' "
                            "AND reason IN ('rouge', 'too_short')")
    assert shown_total(at) == expected
    assert set(table(at)["reason"]) == {"Too similar (ROUGE-L)", "Too short"}

    at.selectbox(key="rej_round").set_value(2).run()
    expected = scalar(pool, "SELECT count(*) FROM candidates c JOIN rounds r ON r.id = c.round_id "
                            "WHERE c.status = 'rejected' AND c.reason IN ('rouge', 'too_short') AND r.number = 2")
    assert shown_total(at) == expected and "round" not in table(at).columns   # fixed by the filter
    ids = [int(i) for i in table(at)["id"]]
    assert {r for (r,) in pool._q("SELECT DISTINCT r.number FROM candidates c JOIN rounds r ON r.id = c.round_id "
                                  "WHERE c.id IN (SELECT unnest(?::BIGINT[]))", [ids]).fetchall()} == {2}

    at.text_input(key="rej_search").input("sentence").run()
    expected = scalar(pool, "SELECT count(*) FROM candidates c JOIN rounds r ON r.id = c.round_id "
                            "WHERE c.status = 'rejected' AND c.reason IN ('rouge', 'too_short') AND r.number = 2 "
                            "AND lower(c.instruction) LIKE '%sentence%'")
    assert shown_total(at) == expected > 0
    assert all("sentence" in t.lower() for t in table(at)["instruction"])

    at.segmented_control(key="rej_kind").set_value("instance").run()
    at.text_input(key="rej_search").input("").run()
    at.selectbox(key="rej_round").set_value(None).run()
    assert not at.exception
    assert shown_total(at) == scalar(pool, "SELECT count(*) FROM instances WHERE status = 'rejected'") > 0
    assert {"input", "output", "instruction"} <= set(table(at).columns)


def test_paging_walks_through_every_reject(demo_app_env):
    at = open_page("pages/rejects.py")
    total = shown_total(at)
    assert total > 50
    first = list(table(at)["id"])
    at.number_input(key="rej_page").set_value(2).run()
    second = list(table(at)["id"])
    assert len(first) == 50 and len(second) == total - 50 and not set(first) & set(second)


def test_rouge_detail_shows_the_stored_nearest_neighbour_and_score(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    cid, stored, nearest = pool._q(
        "SELECT id, max_rouge, nearest_text FROM candidates WHERE reason = 'rouge' AND max_rouge < 1 "
        "ORDER BY id DESC LIMIT 1").fetchone()
    at.pills(key="rej_reasons_instruction").set_value(["rouge"]).run()
    at.selectbox(key="rej_detail_instruction").set_value(cid).run()
    assert not at.exception
    metric = next(m for m in at.metric if m.label == "Max ROUGE-L")
    assert metric.value == f"{stored:.3f}"
    neighbours = frame_with(at, "pool instruction")
    assert neighbours["pool instruction"].iloc[0] == nearest
    assert neighbours["ROUGE-L"].iloc[0] == stored
    marked = [m.value for m in at.markdown if "<mark" in m.value]
    assert any(plain(m) == nearest for m in marked)          # the neighbour, with its shared words marked
    candidate = pool.review.candidate_detail(cid)["instruction"]
    assert any(plain(m) == candidate for m in marked)


def test_rescue_moves_it_into_the_pool_and_undo_restores_it(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    before = pool.counts()
    shown = shown_total(at)
    cid = int(table(at)["id"].iloc[3])
    at.selectbox(key="rej_detail_instruction").set_value(cid).run()
    at.text_input(key="rej_one_why").input("fine for a text model").run()
    at.button(key="rej_rescue").click().run()
    assert not at.exception
    assert any("Rescued 1 item" in s.value for s in at.success)
    after = pool.counts()
    assert (after.accepted, after.rejected, after.rescued) == (before.accepted + 1, before.rejected - 1, 1)
    assert pool._q("SELECT status, decided_by, review FROM candidates WHERE id = ?", [cid]).fetchone() == \
        ("accepted", "human", "rescued")
    entry = pool.audit.entries(action="rescue")[0]
    assert (entry["target_id"], entry["actor"], entry["reason"]) == (cid, "user", "fine for a text model")
    assert entry["before"]["status"] == "rejected" and entry["after"]["status"] == "accepted"
    assert shown_total(at) == shown - 1 and cid not in list(table(at)["id"])

    # it shows among the rescued, waiting for instances
    at.segmented_control(key="rej_review_instruction").set_value("rescued").run()
    assert list(table(at)["id"]) == [cid]
    assert table(at)["state"].iloc[0] == "rescued · instances pending"
    assert any("Instances pending" in i.value for i in at.info)

    at.button(key="rej_undo_one").click().run()
    assert not at.exception
    assert pool.counts() == before
    assert pool._q("SELECT status, review FROM candidates WHERE id = ?", [cid]).fetchone() == ("rejected", None)
    assert pool.audit.entries(action="rescue")[0]["undone_by"] == pool.audit.entries(action="undo")[0]["id"]


def test_bulk_confirm_and_undo_it_from_the_log(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    shown = shown_total(at)
    ids = [int(i) for i in table(at)["id"].iloc[[0, 2, 5]]]
    at.session_state["rej_table"] = {"selection": {"rows": [0, 2, 5], "columns": []}}
    at.run()
    assert at.button(key="rej_bulk_confirm").label == "Confirm 3 selected"
    at.text_input(key="rej_why").input("really off-task").run()
    at.button(key="rej_bulk_confirm").click().run()
    assert not at.exception
    assert any("Confirmed 3 item" in s.value for s in at.success)
    rows = pool._q("SELECT id, status, review FROM candidates WHERE review IS NOT NULL ORDER BY id").fetchall()
    assert rows == [(i, "rejected", "confirmed") for i in sorted(ids)]
    entries = pool.audit.entries(action="confirm")
    assert sorted(e["target_id"] for e in entries) == sorted(ids)
    assert {e["reason"] for e in entries} == {"really off-task"}
    assert len({e["after"]["batch"] for e in entries}) == 1
    assert shown_total(at) == shown - 3
    assert at.button(key="rej_bulk_confirm").label == "Confirm 0 selected"   # selection cleared
    assert at.text_input(key="rej_why").value == ""                           # and the reason

    at.segmented_control(key="rej_review_instruction").set_value("confirmed").run()
    assert sorted(table(at)["id"]) == sorted(ids)

    batch = entries[0]["after"]["batch"]
    at.button(key=f"rej_undo_{batch}").click().run()
    assert not at.exception
    assert pool._q("SELECT count(*) FROM candidates WHERE review IS NOT NULL").fetchone()[0] == 0
    assert shown_total(at) == 0


def test_whatif_counts_equal_a_direct_query(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    for t in (0.8, 1.0):
        at.slider(key="rej_whatif_t").set_value(t).run()
        assert not at.exception
        would_pass = next(m for m in at.metric if m.label == "ROUGE rejects that would have passed")
        direct = scalar(pool, "SELECT count(*) FROM candidates WHERE status = 'rejected' AND reason = 'rouge' "
                              "AND max_rouge <= ?", [t])
        assert would_pass.value == f"{direct:,}"
    assert direct > 0
    keywords = frame_with(at, "only_this")
    assert keywords["candidates"].sum() >= scalar(pool, "SELECT count(*) FROM candidates WHERE reason = 'keyword'")


def test_model_text_stays_text_and_unparseable_is_rescued_after_editing(demo_db_path, demo_app_env):
    hostile = "Draw a <img src=x onerror=alert(1)> map\n\n![p](http://127.0.0.1:9/x.png) **bold**"
    with Pool.open(demo_db_path) as pool:     # before the app opens the file
        run_id = pool.runs.create({"rouge_threshold": 0.7}, name="hostile")
        round_id = pool.runs.create_round(run_id, 1, "done")
        marked_id, raw_id = pool.requests.add_candidates(run_id, round_id, [
            {"position": 0, "instruction": hostile, "status": "rejected", "reason": "keyword",
             "details": {"message": "m", "keyword": "draw", "span": [0, 4],
                         "matches": [{"keyword": "draw", "span": [0, 4]}, {"keyword": "map", "span": [36, 39]}]}},
            {"position": 1, "instruction": "7) <script>x</script> and then", "status": "rejected",
             "reason": "unparseable", "details": {"message": "The model's answer could not be read as a task."}},
        ])
    assert hostile[36:39] == "map"
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    at.selectbox(key="rej_detail_instruction").set_value(marked_id).run()
    assert not at.exception
    html_blocks = [m.value for m in at.markdown if "<mark" in m.value]
    assert html_blocks and all("<img" not in b and "\n" not in b for b in html_blocks)
    block = html_blocks[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in block
    assert re.findall(r"<mark[^>]*>([^<]*)</mark>", block) == ["Draw", "map"]

    at.selectbox(key="rej_detail_instruction").set_value(raw_id).run()
    assert any(c.value == "7) <script>x</script> and then" for c in at.code)
    at.text_area(key=f"rej_edit_{raw_id}").input("Explain what a script tag does in a web page.").run()
    at.button(key="rej_rescue").click().run()
    assert not at.exception
    assert pool._q("SELECT instruction, status FROM candidates WHERE id = ?", [raw_id]).fetchone() == \
        ("Explain what a script tag does in a web page.", "accepted")
    assert pool.audit.entries(action="rescue")[0]["before"]["instruction"] == "7) <script>x</script> and then"


def test_instance_rejects_can_be_kept(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    at.segmented_control(key="rej_kind").set_value("instance").run()
    iid = int(table(at)["id"].iloc[0])
    detail = pool.review.instance_detail(iid)
    assert any(c.value == (detail["output"] or "(empty)") for c in at.code)
    kept = pool.counts().instances
    at.button(key="rej_rescue").click().run()
    assert not at.exception
    assert pool._q("SELECT status FROM instances WHERE id = ?", [iid]).fetchone() == ("kept",)
    assert pool.counts().instances == kept + 1
    assert iid not in list(table(at)["id"])


def test_empty_pool_says_there_is_nothing_to_review(app_env):
    at = open_page("pages/rejects.py")
    assert any("nothing to review" in i.value for i in at.info)


def test_selecting_one_row_shows_its_evidence(demo_app_env):
    at = open_page("pages/rejects.py")
    cid = int(table(at)["id"].iloc[4])
    at.session_state["rej_table"] = {"selection": {"rows": [4], "columns": []}}
    at.run()
    assert not at.exception
    assert at.selectbox(key="rej_detail_instruction").value == cid
    assert any(m.value.startswith(f"**Candidate #{cid} ·") for m in at.markdown)


def test_an_audit_row_from_before_the_actions_layer_is_listed_and_undone(demo_app_env):
    """A Rejects-page row written before the actions layer (partial states, batch in `after`)."""
    import json

    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    cid = int(table(at)["id"].iloc[0])
    reason = pool.review.candidate_detail(cid)["reason"]
    pool.audit.write_state("candidate", cid, {"status": "accepted", "decided_by": "human", "review": "rescued"})
    old_id = pool.cursor().execute(
        "INSERT INTO audit_log (actor, action, target_kind, target_id, reason, before, after) "
        "VALUES ('olga', 'rescue', 'candidate', ?, 'looked fine', ?, ?) RETURNING id",
        [cid, json.dumps({"status": "rejected", "reason": reason, "review": None, "decided_by": "filter"}),
         json.dumps({"status": "accepted", "reason": reason, "review": "rescued", "batch": "0ldb4tch0000"})]
    ).fetchone()[0]
    at.run()
    assert not at.exception
    assert any(t.value.startswith(f"#{old_id} · ") and f"olga rescued candidate #{cid} · why: looked fine" in t.value
               for t in at.text)
    at.button(key="rej_undo_0ldb4tch0000").click().run()
    assert not at.exception
    assert any("Undid 1 item" in s.value for s in at.success)
    assert pool._q("SELECT status, decided_by, review FROM candidates WHERE id = ?", [cid]).fetchone() == \
        ("rejected", "filter", None)
    assert pool.audit.audit_entry(old_id)["undone_by"] is not None


# ----------------------------------------------------------------------- issue 16
def in_order(node):
    """Every element under `node`, in the order the page draws them."""
    for child in getattr(node, "children", {}).values():
        yield child
        yield from in_order(child)


def drawn_after(at, key: str, kind: str, text: str) -> bool:
    """Whether an alert of `kind` holding `text` is drawn after the widget `key` (and before the
    next subheader): the message sits beside the button that caused it."""
    seen = False
    for el in in_order(at.main):
        if getattr(el, "key", None) == key:
            seen = True
        elif seen and el.type == kind and text in el.value:
            return True
        elif seen and el.type == "subheader":
            return False
    return False


def rescued_ids(pool):
    return {r[0] for r in pool._q("SELECT id FROM candidates WHERE review = 'rescued'").fetchall()}


def test_a_reason_belongs_to_one_rescue_and_the_message_sits_by_the_button(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    first = int(table(at)["id"].iloc[1])
    at.selectbox(key="rej_detail_instruction").set_value(first).run()
    at.text_input(key="rej_one_why").input("fine for a text model").run()
    at.button(key="rej_rescue").click().run()
    assert not at.exception
    assert at.text_input(key="rej_one_why").value == ""
    assert drawn_after(at, "rej_rescue", "success", "Rescued 1 item")
    assert any("Rescued 1 item" in t.value for t in at.toast)

    # The next item, rescued with one more click, carries no reason.
    second = at.selectbox(key="rej_detail_instruction").value
    assert second != first
    at.button(key="rej_rescue").click().run()
    reasons = {e["target_id"]: e["reason"] for e in pool.audit.entries(action="rescue")}
    assert reasons == {first: "fine for a text model", second: None}

    # A reason typed for one item does not follow to another one opened without acting.
    at.text_input(key="rej_one_why").input("only for this one").run()
    third = int(table(at)["id"].iloc[4])
    at.selectbox(key="rej_detail_instruction").set_value(third).run()
    assert at.text_input(key="rej_one_why").value == ""


def test_bulk_all_shows_the_count_asks_for_confirmation_and_rescues_them_in_one_batch(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    at.pills(key="rej_reasons_instruction").set_value(["rouge", "keyword"]).run()
    expected = {r[0] for r in pool._q("SELECT id FROM candidates WHERE status = 'rejected' AND review IS NULL "
                                      "AND reason IN ('rouge', 'keyword')").fetchall()}
    n = len(expected)
    assert n > 50 or n > len(table(at))   # more than one page would hold
    at.session_state["rej_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert at.button(key="rej_bulk_rescue").label == "Rescue 1 selected"

    at.segmented_control(key="rej_scope").set_value("all").run()
    box = at.checkbox(key="rej_all_ok")
    assert f"all {n:,} " in box.label and not box.value
    assert at.button(key="rej_bulk_rescue").label == f"Rescue all {n:,}"
    assert at.button(key="rej_bulk_rescue").disabled                     # not before the confirmation
    assert not rescued_ids(pool)

    at.checkbox(key="rej_all_ok").check().run()
    at.text_input(key="rej_why").input("ROUGE is too strict here").run()
    assert not at.button(key="rej_bulk_rescue").disabled
    at.button(key="rej_bulk_rescue").click().run()
    assert not at.exception
    assert rescued_ids(pool) == expected
    entries = [e for e in pool.audit.entries(limit=10_000, action="rescue")]
    assert len(entries) == n and {e["after"]["batch"] for e in entries} == {entries[0]["after"]["batch"]}
    assert {e["reason"] for e in entries} == {"ROUGE is too strict here"}
    assert drawn_after(at, "rej_bulk_rescue", "success", f"Rescued {n:,} item")
    # afresh: the confirmation, the scope and the reason
    assert at.segmented_control(key="rej_scope").value == "selected"
    assert at.text_input(key="rej_why").value == ""
    assert shown_total(at) == 0

    # one undo undoes them all
    at.button(key=f"rej_undo_{entries[0]['after']['batch']}").click().run()
    assert not at.exception and not rescued_ids(pool)


def test_bulk_all_confirmation_is_asked_again_when_the_filters_change(demo_app_env):
    at = open_page("pages/rejects.py")
    at.segmented_control(key="rej_scope").set_value("all").run()
    at.checkbox(key="rej_all_ok").check().run()
    assert not at.button(key="rej_bulk_confirm").disabled
    at.pills(key="rej_reasons_instruction").set_value(["rouge"]).run()
    assert not at.checkbox(key="rej_all_ok").value and at.button(key="rej_bulk_confirm").disabled


def _unparseable(demo_db_path, text="7) and then the model wrote"):
    with Pool.open(demo_db_path) as pool:     # before the app opens the file
        run_id = pool.runs.create({"rouge_threshold": 0.7}, name="raw")
        round_id = pool.runs.create_round(run_id, 1, "done")
        (raw_id,) = pool.requests.add_candidates(run_id, round_id, [
            {"position": 0, "instruction": text, "status": "rejected", "reason": "unparseable",
             "details": {"message": "The model's answer could not be read as a task."}}])
    return raw_id


def test_unparseable_cannot_be_rescued_from_the_page_without_an_edit(demo_db_path, demo_app_env):
    raw_id = _unparseable(demo_db_path)
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    at.pills(key="rej_reasons_instruction").set_value(["unparseable"]).run()
    at.selectbox(key="rej_detail_instruction").set_value(raw_id).run()
    assert at.text_area(key=f"rej_edit_{raw_id}").value == "7) and then the model wrote"
    assert at.button(key="rej_rescue").disabled                          # the raw text, unchanged
    at.text_area(key=f"rej_edit_{raw_id}").input("  7) and then the model wrote \n").run()
    assert at.button(key="rej_rescue").disabled                          # spaces are no edit
    assert pool.review.candidate_detail(raw_id)["status"] == "rejected"

    # selected in the table, the bulk rescue skips it and says why, beside the button
    at.session_state["rej_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.button(key="rej_bulk_rescue").click().run()
    assert not at.exception
    assert pool.review.candidate_detail(raw_id)["status"] == "rejected"
    assert drawn_after(at, "rej_bulk_rescue", "warning", "could not be parsed")

    at.selectbox(key="rej_detail_instruction").set_value(raw_id).run()
    at.text_area(key=f"rej_edit_{raw_id}").input("Explain what a numbered list is.").run()
    assert not at.button(key="rej_rescue").disabled
    at.button(key="rej_rescue").click().run()
    assert pool.review.candidate_detail(raw_id)["instruction"] == "Explain what a numbered list is."
    assert pool.review.candidate_detail(raw_id)["status"] == "accepted"


# -- issue 26: one wording for shared words; a message, a log line and an Undo that name the item --
def test_one_wording_for_shared_words_and_actions_that_name_their_item(demo_app_env):
    at = open_page("pages/rejects.py")
    pool = app_pool(demo_app_env)
    cid = pool._q("SELECT id FROM candidates WHERE reason = 'rouge' AND max_rouge < 1 "
                  "ORDER BY id DESC LIMIT 1").fetchone()[0]
    at.pills(key="rej_reasons_instruction").set_value(["rouge"]).run()
    at.selectbox(key="rej_detail_instruction").set_value(cid).run()
    assert not at.exception
    metric = next(m for m in at.metric if m.label == "Shared words with the nearest")
    header = next(m.value for m in at.markdown if m.value.startswith("**Pool instruction 1**"))
    wording = header.split(" · ", 2)[2]
    assert re.fullmatch(r"\d+ shared words \(\d+ in the candidate, \d+ in the pool instruction\)", wording)
    assert metric.help.startswith(wording)          # the same pair, said the same way, in both places
    assert metric.value == wording.split()[0]

    at.button(key="rej_rescue").click().run()
    assert not at.exception
    assert drawn_after(at, "rej_rescue", "success", "Rescued 1 item")

    def unescaped(text: str) -> str:
        return re.sub(r"\\(.)", r"\1", text)

    assert [unescaped(s.value) for s in at.success] == [f"Rescued 1 item(s): candidate #{cid}."]
    line = next(t.value for t in at.text if "rescued" in t.value)
    assert line.endswith(f"rescued candidate #{cid}")
    # Undo sits in the open, not in a collapsed box.
    assert not [e for e in at.expander if "Recent review actions" in e.label]
    undo = next(b for b in at.button if b.key and b.key.startswith("rej_undo_") and b.key != "rej_undo_one")
    undo.click().run()
    assert not at.exception
    assert pool.review.candidate_detail(cid)["status"] == "rejected"
    assert any(unescaped(s.value).startswith("Undid 1 item(s): audit entry #") for s in at.success)
