"""Items labeled in several studies (issue 23 item 5): a study's results use that study's labels;
"labeled invalid" (the export filter, the count across studies) takes the majority over all of an
item's labels. The rule has one home, model.SEVERAL_STUDIES_RULE, and every page that counts
labels shows it, so no page silently disagrees with another. Real DuckDB, AppTest pages."""
from selfinstruct import quality
from selfinstruct.model import NO, SEVERAL_STUDIES_RULE, YES
from tests.conftest import app_pool, open_page


def test_one_item_no_in_one_study_and_yes_in_another_and_every_page_says_which_labels_count(demo_app_env):
    pool = app_pool(demo_app_env)
    first = quality.create_study(pool, "first", size=5, seed=1).study_id
    candidate, instance, item = pool.judge.study_items(first)[0]
    second = pool.quality.create_study("second", seed=2, items=[(candidate, instance)])
    other_item = pool.judge.study_items(second)[0][2]
    pool.quality.save_label(first, item, "ann", valid_task=NO, input_ok=YES, output_ok=YES)
    pool.quality.save_label(second, other_item, "bo", valid_task=YES, input_ok=YES, output_ok=YES)

    # study 1's results: its own label, "no"; across studies: one "no", one "yes", no majority
    first_answers = {a["item_id"]: a for a in quality.study_results(pool, first).answers}
    assert first_answers[item]["valid_task"] == NO
    assert candidate not in pool.quality.invalid_candidate_ids()     # so the export keeps it

    at = open_page("pages/label.py")
    at.session_state["user_name"] = "ann"   # the sidebar's "Your name"
    at.run()
    at.selectbox(key="label_study").set_value(first).run()
    at.segmented_control(key="label_view").set_value("results").run()
    assert not at.exception
    assert any(c.value == SEVERAL_STUDIES_RULE for c in at.caption)
    export = open_page("pages/export.py")
    assert SEVERAL_STUDIES_RULE in export.checkbox(key="exp_no_invalid").help
