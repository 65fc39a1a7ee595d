"""The Pool page through AppTest: paged search with SQL counts, opening an item,
audited edit / remove / undo, and the diversity view."""
from selfinstruct import explore
from selfinstruct.export import ExportFilters
from tests.conftest import app_pool, open_page







def matching(at) -> int:
    line = next(m.value for m in at.markdown if "matching instruction" in m.value)
    return int(line.split("**")[1].replace(",", ""))


def test_browse_and_search_show_the_sql_counts(demo_app_env):
    at = open_page("pages/pool.py")
    pool = app_pool(demo_app_env)
    assert matching(at) == pool.counts().accepted
    table = at.dataframe[0].value
    assert list(table["id"]) == list(pool.explore.pool_browse(limit=50)["id"])
    at.text_input(key="pool_search").input("summar").run()
    assert not at.exception
    assert matching(at) == pool.explore.pool_browse_count("summar") > 0
    assert all("summar" in t.lower() for t in at.dataframe[0].value["instruction"])
    at.text_input(key="pool_search").input("").run()
    at.number_input(key="pool_page").set_value(2).run()
    assert list(at.dataframe[0].value["id"]) == list(pool.explore.pool_browse(limit=50, offset=50)["id"])


def test_select_a_row_edit_remove_and_undo(demo_app_env):
    at = open_page("pages/pool.py")
    pool = app_pool(demo_app_env)
    first = int(at.dataframe[0].value.iloc[0]["id"])
    at.session_state["pool_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert not at.exception
    assert at.number_input(key="pool_open").value == first
    at.text_area(key=f"pool_instr_{first}").input("Suggest a kind reply when a coworker asks about pay.").run()
    at.button(key="pool_save_instruction").click().run()
    assert not at.exception
    assert any(f"Saved the instruction of #{first}" in s.value for s in at.success)
    item = pool.explore.pool_item(first)
    assert item["instruction"] == "Suggest a kind reply when a coworker asks about pay."
    assert pool.audit.entries(action="edit_candidate")[0]["target_id"] == first

    at.button(key="pool_remove").click().run()
    assert not at.exception
    assert pool.explore.pool_item(first)["status"] == "rejected"
    assert matching(at) == pool.counts().accepted
    remove_entry = pool.audit.entries(action="remove")[0]
    at.button(key=f"pool_undo_{remove_entry['id']}").click().run()
    assert not at.exception
    assert pool.explore.pool_item(first)["status"] == "accepted"
    assert pool.audit.entries(action="remove")[0]["undone_by"] is not None


def test_edit_an_instance_and_see_the_filter_warning(demo_app_env):
    at = open_page("pages/pool.py")
    pool = app_pool(demo_app_env)
    item_id = int(at.dataframe[0].value.iloc[1]["id"])
    at.number_input(key="pool_open").set_value(item_id).run()
    instance = next(i for i in pool.explore.pool_item(item_id)["instances"] if i["status"] == "kept")
    at.text_area(key=f"pool_out_{instance['id']}").input("A corrected answer.").run()
    at.button(key=f"pool_save_inst_{instance['id']}").click().run()
    assert not at.exception
    assert next(i for i in pool.explore.pool_item(item_id)["instances"] if i["id"] == instance["id"])["output"] == \
        "A corrected answer."
    assert pool.explore.pool_item(item_id)["review"] == "approved"
    at.text_area(key=f"pool_instr_{item_id}").input("Draw a map").run()
    assert any("filters would reject" in w.value for w in at.warning)


def test_diversity_view(demo_app_env):
    at = open_page("pages/pool.py")
    pool = app_pool(demo_app_env)
    at.segmented_control(key="pool_view").set_value("diversity").run()
    assert not at.exception
    verbs = at.dataframe[0].value
    expected = explore.verb_noun_counts(pool.runs.machine_instructions(), top_verbs=20, nouns_per_verb=4)
    expected = expected[expected["verb"] != "(none)"][["verb", "noun", "count"]]
    assert verbs.reset_index(drop=True).equals(expected.reset_index(drop=True))
    recognised = next(m.value for m in at.markdown if "leading verb was recognised" in m.value)
    assert f"of {pool.counts().accepted:,} instructions" in recognised
    assert any("heuristic" in c.value for c in at.caption)
    means = {m.label: float(m.value) for m in at.metric}
    stats = pool.explore.export_length_stats(ExportFilters(include_seeds=False))
    assert means["Output, mean words"] == round(stats["means"]["output"], 1)
    assert any("median" in c.value for c in at.caption)


def test_an_audit_row_from_before_the_actions_layer_is_listed_and_undone(demo_app_env):
    """A Pool-page row written before batches existed (whole states, no batch) keeps its Undo."""
    import json

    from selfinstruct.model import CANDIDATE

    at = open_page("pages/pool.py")
    pool = app_pool(demo_app_env)
    first = int(at.dataframe[0].value.iloc[0]["id"])
    before = pool.audit.read_state(CANDIDATE, first)
    after = {**before, "status": "rejected", "reason": "removed", "decided_by": "human"}
    pool.audit.write_state(CANDIDATE, first, after)
    old_id = pool.cursor().execute(
        "INSERT INTO audit_log (actor, action, target_kind, target_id, reason, before, after) "
        "VALUES ('olga', 'remove', 'candidate', ?, NULL, ?, ?) RETURNING id",
        [first, json.dumps(before), json.dumps(after)]).fetchone()[0]
    at.run()
    assert not at.exception
    assert any(f"olga removed #{first}" in t.value for t in at.text)
    at.button(key=f"pool_undo_{old_id}").click().run()
    assert not at.exception
    assert any(f"Undid: removed #{first}" in s.value for s in at.success)
    assert pool.audit.read_state(CANDIDATE, first) == before
    assert pool.audit.audit_entry(old_id)["undone_by"] is not None
    assert any(f"olga removed #{first} (undone)" in t.value for t in at.text)


def test_the_judge_filter_hides_or_shows_what_the_judge_called_no(demo_app_env):
    from tests.test_page_export import judged_demo

    run_id, ids = judged_demo(demo_app_env)
    at = open_page("pages/pool.py")
    pool = app_pool(demo_app_env)
    total = matching(at)
    at.selectbox(key="pool_judge_run").set_value(run_id).run()       # flags a wrong output by default
    assert not at.exception
    assert matching(at) == total - 1                                  # hand-counted: A only
    assert ids["A"] not in set(at.dataframe[0].value["id"])
    at.multiselect(key="pool_judge_drop").set_value(["valid_task", "output_ok"]).run()
    assert matching(at) == total - 2
    at.selectbox(key="pool_judge_show").set_value("only").run()
    assert not at.exception
    assert matching(at) == 2 and set(at.dataframe[0].value["id"]) == {ids["A"], ids["B"]}
    assert pool.explore.pool_browse_count(judge_run_id=run_id, judge_drop=("valid_task", "output_ok"),
                                  judge_show="only") == 2
    at.multiselect(key="pool_judge_drop").set_value(["input_ok"]).run()    # nobody's input was called wrong
    assert matching(at) == 0
