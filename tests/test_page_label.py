"""The Label page through AppTest: create a study, label items, see the results (issue 7)."""
import csv
import io
import re

from streamlit.testing.v1 import AppTest

from selfinstruct import quality
from selfinstruct.model import ANSWERS, PAPER_RATES, QUESTION_TEXT, QUESTIONS
from tests.conftest import app_pool, open_page


def label_page(name: str | None = "alice") -> AppTest:
    at = open_page("pages/label.py")
    if name:
        at.session_state["user_name"] = name   # the sidebar's "Your name", the one name box
        at.run()
        assert not at.exception
    return at


def answer(at: AppTest, item_id: int, answers) -> None:
    """Press one answer button per question, as a click or its key would."""
    for question, value in zip(QUESTIONS, answers):
        at.button(key=f"label_{question}_{value}").click().run()
        assert not at.exception
        assert at.session_state[f"lab_{question}_{item_id}"] == value


def chosen(at: AppTest, question: str) -> str | None:
    """The answer shown as chosen (the primary button) for one question."""
    picked = [a for a in ANSWERS if at.button(key=f"label_{question}_{a}").proto.type == "primary"]
    assert len(picked) <= 1
    return picked[0] if picked else None


def progress_text(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def test_create_a_study_label_three_items_and_see_the_results(demo_app_env):
    at = label_page()
    at.number_input(key="study_size").set_value(6)
    at.number_input(key="study_seed").set_value(42)
    at.form_submit_button(key="study_create").click().run()
    assert not at.exception
    assert any("Drew 6 instruction(s)" in t.value for t in at.toast)

    pool = app_pool(demo_app_env)
    study = pool.quality.studies()[0]
    assert study["items"] == 6 and study["seed"] == 42
    study_id = study["id"]
    assert progress_text(at) == "0 of 6 items labeled by alice"
    first = pool.quality.study_item(study_id, 0)
    assert first["instruction"] in [c.value for c in at.code]

    plan = [("yes", "yes", "yes"), ("yes", "no", "unsure"), ("no", "no", "no")]
    for position, answers in enumerate(plan):
        assert at.subheader[0].value == f"Item {position + 1} of 6"
        item = pool.quality.study_item(study_id, position)
        answer(at, item["item_id"], answers)
        if position == 1:
            at.text_input(key=f"lab_note_{item['item_id']}").input("input does not fit")
        at.button(key="label_save").click().run()
        assert not at.exception
        assert any(f"Saved item {position + 1}." in t.value for t in at.toast)
    assert progress_text(at) == "3 of 6 items labeled by alice"
    assert at.subheader[0].value == "Item 4 of 6"

    stored = pool.quality.study_labels(study_id)
    assert [(r["valid_task"], r["input_ok"], r["output_ok"]) for r in stored] == plan
    assert {r["annotator"] for r in stored} == {"alice"}
    assert pool.quality.study_item(study_id, 1, "alice")["note"] == "input does not fit"

    at.segmented_control(key="label_view").set_value("results").run()
    assert not at.exception
    # The headline leads with the 95% interval; the share is the small print under it.
    metrics = {m.label: (m.value, m.delta) for m in at.metric}
    assert metrics == {"Valid task": ("21% – 94%", "67% yes (2 of 3)"),
                       "Input appropriate": ("6% – 79%", "33% yes (1 of 3)"),
                       "Output acceptable": ("6% – 79%", "33% yes (1 of 3)"),
                       "All three valid": ("6% – 79%", "33% yes (1 of 3)")}
    assert not any("pts" in (m.delta or "") for m in at.metric)
    assert any(c.value == "Too small a sample to compare with the paper's 92%: 3 item(s) labeled, at "
                          "least 10 needed." for c in at.caption)
    assert any(h.value == "3 of 6 items labeled" for h in at.subheader)

    # one more label moves the numbers
    at.segmented_control(key="label_view").set_value("label").run()
    item = pool.quality.study_item(study_id, 3)
    answer(at, item["item_id"], ("yes", "yes", "yes"))
    at.button(key="label_save").click().run()
    at.segmented_control(key="label_view").set_value("results").run()
    assert not at.exception
    metrics = {m.label: m.delta for m in at.metric}
    assert metrics["Valid task"] == "75% yes (3 of 4)" and metrics["All three valid"] == "50% yes (2 of 4)"


def test_save_needs_three_answers_and_all_yes_is_one_click(demo_app_env):
    at = label_page("bea")
    at.number_input(key="study_size").set_value(4)
    at.form_submit_button(key="study_create").click().run()
    pool = app_pool(demo_app_env)
    study_id = pool.quality.studies()[0]["id"]
    at.button(key="label_valid_task_yes").click().run()
    at.button(key="label_save").click().run()
    assert not at.exception
    # Refused, and said so: which item, which questions are unanswered, and their keys.
    assert [w.value for w in at.warning] == [
        f"Item 1 is not saved: answer \"{QUESTION_TEXT['input_ok']}\" (keys 4 5 6) and "
        f"\"{QUESTION_TEXT['output_ok']}\" (keys 7 8 9) first, then save again. \"Unsure\" is an answer."]
    assert pool.quality.study_labels(study_id) == []
    assert at.subheader[0].value == "Item 1 of 4"
    at.button(key="label_all_yes").click().run()
    assert not at.exception
    saved = pool.quality.study_labels(study_id)
    assert [(r["valid_task"], r["input_ok"], r["output_ok"], r["annotator"]) for r in saved] == [
        ("yes", "yes", "yes", "bea")]
    assert at.subheader[0].value == "Item 2 of 4"


def test_resume_at_the_first_unlabeled_item_and_navigate(demo_app_env):
    at = label_page("carl")
    at.number_input(key="study_size").set_value(5)
    at.form_submit_button(key="study_create").click().run()
    pool = app_pool(demo_app_env)
    study_id = pool.quality.studies()[0]["id"]
    for position in (0, 1):
        item = pool.quality.study_item(study_id, position)
        pool.quality.save_label(study_id, item["item_id"], "carl", valid_task="yes", input_ok="yes", output_ok="no")

    again = label_page("carl")  # a new browser session
    assert again.subheader[0].value == "Item 3 of 5"
    assert progress_text(again) == "2 of 5 items labeled by carl"
    again.button(key="label_prev").click().run()
    assert again.subheader[0].value == "Item 2 of 5"
    assert chosen(again, "output_ok") == "no" and chosen(again, "valid_task") == "yes"
    again.button(key="label_next").click().run()
    again.button(key="label_next").click().run()
    assert again.subheader[0].value == "Item 4 of 5"
    again.button(key="label_first_unlabeled").click().run()
    assert again.subheader[0].value == "Item 3 of 5"
    again.number_input(key=f"label_jump_{study_id}_2").set_value(5).run()   # the box of item 3
    assert not again.exception
    assert again.subheader[0].value == "Item 5 of 5"

    # One label per item (overlap 1): carl's two items left dora's queue, and item 5, open on
    # carl's screen, is held for him; so she starts at the first item nobody labeled or holds.
    other = label_page("dora")
    assert other.subheader[0].value == "Item 3 of 5"
    assert progress_text(other) == "0 of 2 items labeled by dora · 1 on other annotators' screens"


def test_labeling_needs_a_name(demo_app_env):
    at = label_page(name=None)
    at.number_input(key="study_size").set_value(3)
    at.form_submit_button(key="study_create").click().run()
    assert not at.exception
    assert any(i.value.startswith("Type your name in **Your name** in the sidebar to start labeling")
               for i in at.info)
    assert not at.get("progress")
    assert not [t.label for t in at.main.text_input if "your name" in t.label.lower()]   # one name box: the sidebar's
    at.session_state["user_name"] = "erin"
    at.run()
    assert progress_text(at) == "0 of 3 items labeled by erin"


def test_two_annotators_show_agreement_disagreements_and_exports(demo_app_env):
    at = label_page("fay")
    at.number_input(key="study_size").set_value(5)
    at.form_submit_button(key="study_create").click().run()
    pool = app_pool(demo_app_env)
    study_id = pool.quality.studies()[0]["id"]
    fay = [("yes", "yes", "yes"), ("yes", "no", "no"), ("no", "no", "no")]
    gus = [("yes", "yes", "yes"), ("yes", "yes", "no"), ("no", "no", "no")]
    for position in range(3):
        item = pool.quality.study_item(study_id, position)
        for who, answers in (("fay", fay[position]), ("gus", gus[position])):
            pool.quality.save_label(study_id, item["item_id"], who, valid_task=answers[0], input_ok=answers[1],
                            output_ok=answers[2])
    at.segmented_control(key="label_view").set_value("results").run()
    assert not at.exception
    kappas = at.dataframe[-2].value.set_index("label")
    assert kappas.loc["Valid task", "kappa"] == "1.00" and kappas.loc["Valid task", "method"] == "Cohen"
    assert kappas.loc["Output acceptable", "kappa"] == "1.00"
    assert kappas.loc["Input appropriate", "items"] == 3
    disagreements = at.dataframe[-1].value
    assert list(disagreements["item"]) == [2]
    assert disagreements.iloc[0]["input_ok"] == "fay: no, gus: yes"

    # open the disagreement in the labeling view
    at.session_state["label_disagreements"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    at.button(key="label_open_disagreement").click().run()
    assert not at.exception
    assert at.segmented_control(key="label_view").value == "label"
    assert at.subheader[0].value == "Item 2 of 5"
    at.segmented_control(key="label_view").set_value("results").run()

    # one annotator's own answers
    at.selectbox(key="label_whose").select("gus").run()
    assert {m.label: m.delta for m in at.metric}["Input appropriate"] == "67% yes (2 of 3)"

    at.segmented_control(key="label_view").set_value("data").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 3 * 2 + 2  # three items with two labels each, two unlabeled items
    keys = {b.key for b in at.get("download_button")}
    assert keys == {"label_download_csv", "label_download_json"}
    rows = list(csv.DictReader(io.StringIO(quality.study_csv(pool, study_id).decode("utf-8"))))
    assert len(rows) == 8 and {r["annotator"] for r in rows} == {"fay", "gus", ""}


def test_an_empty_pool_says_what_to_do_first(app_env):
    at = label_page(name=None)
    assert not at.exception
    assert any("Nothing to sample yet" in i.value for i in at.info)
    assert not at.get("form_submit_button")


def test_asking_for_more_than_the_pool_holds_takes_all_and_says_so(demo_app_env):
    at = label_page()
    at.number_input(key="study_size").set_value(5000)
    at.form_submit_button(key="study_create").click().run()
    assert not at.exception
    pool = app_pool(demo_app_env)
    eligible = pool.quality.quality_scope()["eligible"]
    assert pool.quality.studies()[0]["items"] == eligible
    assert any(f"only {eligible} accepted instruction(s)" in w.value for w in at.warning)


def test_filters_that_match_nothing_explain_and_store_nothing(demo_app_env):
    at = label_page()
    at.multiselect(key="study_rounds").set_value([])
    at.form_submit_button(key="study_create").click().run()
    assert not at.exception
    assert any("No accepted instruction" in e.value for e in at.error)
    assert app_pool(demo_app_env).quality.studies() == []
    at.multiselect(key="study_rounds").set_value([2])
    at.number_input(key="study_size").set_value(4)
    at.segmented_control(key="study_stratify").set_value("classification")
    at.form_submit_button(key="study_create").click().run()
    assert not at.exception
    study = app_pool(demo_app_env).quality.studies()[0]
    assert study["config"]["rounds"] == [2] and study["config"]["stratify"] == "classification"
    assert any("rounds 2" in c.value and "classification" in c.value.lower() for c in at.caption)


def test_a_team_with_two_labels_per_item_has_queues_progress_and_agreement(demo_app_env):
    at = label_page("hal")
    at.number_input(key="study_size").set_value(3)
    at.number_input(key="study_overlap").set_value(2)
    at.form_submit_button(key="study_create").click().run()
    assert not at.exception
    pool = app_pool(demo_app_env)
    study_id = pool.quality.studies()[0]["id"]
    assert pool.quality.study(study_id)["overlap"] == 2
    items = [pool.quality.study_item(study_id, pos)["item_id"] for pos in range(3)]
    # ivy and jo labeled item 1 already: it has its two labels and is not in hal's queue
    for who, answers in (("ivy", ("yes", "yes", "yes")), ("jo", ("yes", "no", "yes"))):
        pool.quality.save_label(study_id, items[0], who, valid_task=answers[0], input_ok=answers[1],
                        output_ok=answers[2])
    pool.quality.save_label(study_id, items[1], "ivy", valid_task="yes", input_ok="yes", output_ok="yes")

    hal = label_page("hal")   # a new session starts at the first item of hal's queue
    assert hal.subheader[0].value == "Item 2 of 3"
    assert progress_text(hal) == "0 of 2 items labeled by hal"
    answer(hal, items[1], ("no", "no", "no"))
    hal.button(key="label_save").click().run()
    assert not hal.exception
    assert hal.subheader[0].value == "Item 3 of 3" and progress_text(hal) == "1 of 2 items labeled by hal"
    hal.button(key="label_all_yes").click().run()
    assert progress_text(hal) == "2 of 2 items labeled by hal"
    assert any("Your queue is empty" in t.value for t in hal.toast)
    assert hal.button(key="label_first_unlabeled").disabled

    # jo's queue: item 2 has its two labels now (ivy, hal), item 3 one (hal)
    jo = label_page("jo")
    assert jo.subheader[0].value == "Item 3 of 3"
    assert progress_text(jo) == "1 of 2 items labeled by jo"

    # the owner's view: progress per annotator, and agreement over items with two labels
    hal.segmented_control(key="label_view").set_value("results").run()
    assert not hal.exception
    team = next(d.value for d in hal.dataframe if "queue" in d.value.columns).set_index("annotator")
    assert team.loc["hal", "labels"] == 2 and team.loc["hal", "queue"] == 0
    assert team.loc["jo", "labels"] == 1 and team.loc["jo", "queue"] == 1
    assert team.loc["ivy", "queue"] == 1 and team.loc["ivy", "share"] == 2 / 3
    assert any(p.proto.text == "2 of 3 items have their 2 labels; 1 label(s) still to give"
               for p in hal.get("progress"))
    so_far = next(d.value for d in hal.dataframe
                  if "why_undefined" in d.value.columns and (d.value["method"] == "Fleiss").all())
    assert set(so_far["items"]) == {2}
    # one agreement table (the team's so far and the chosen annotators' were two near-identical
    # ones), and every percentage in one form: "50%", never "16.67%" beside "25%"
    assert len([d for d in hal.dataframe if "why_undefined" in d.value.columns]) == 1
    numbers = [d.value for d in hal.dataframe if "interval" in d.value.columns]
    shown = [str(v) for table in [so_far["observed"], *(t[c] for t in numbers for c in ("share", "paper"))]
             for v in table]
    assert shown and all(re.fullmatch(r"\d{1,3}%|n/a", v) for v in shown), shown


# -- issue 16: a key for every answer, and a headline that leads with the interval --------
def new_study(at: AppTest, demo_app_env, size: int) -> int:
    at.number_input(key="study_size").set_value(size)
    at.form_submit_button(key="study_create").click().run()
    assert not at.exception
    return app_pool(demo_app_env).quality.studies()[0]["id"]


def test_every_answer_has_its_own_key_shown_on_its_button(demo_app_env):
    at = label_page("kim")
    new_study(at, demo_app_env, 3)
    expected = {}
    for row, question in enumerate(QUESTIONS):
        for col, answer in enumerate(ANSWERS):
            key = str(3 * row + col + 1)            # 1 2 3 / 4 5 6 / 7 8 9
            button = at.button(key=f"label_{question}_{answer}")
            assert button.label == answer.capitalize()
            assert button.proto.shortcut == key     # Streamlit draws it on the button
            assert f"Key {key}" in button.help and QUESTION_TEXT[question] in button.help
            expected[key] = (question, answer)
    assert sorted(expected) == [str(k) for k in range(1, 10)]
    # No key is taken twice on the page, and none is one Streamlit keeps for itself (C, R).
    shortcuts = [b.proto.shortcut for b in at.button if b.proto.shortcut]
    assert len(shortcuts) == len(set(shortcuts)) == 9 + 5      # + Ctrl+S, Y, P, N, U
    assert not {s.split("+")[-1] for s in shortcuts} & {"c", "r"}
    assert any(c.value.startswith("Keys: 1 2 3 answer the first question yes / no / unsure, 4 5 6 "
                                  "the second, 7 8 9 the third") for c in at.caption)


def test_pressing_answer_buttons_sets_the_answers_and_saving_stores_them(demo_app_env):
    at = label_page("lou")
    study_id = new_study(at, demo_app_env, 4)
    pool = app_pool(demo_app_env)
    first, second = (pool.quality.study_item(study_id, p)["item_id"] for p in (0, 1))
    assert [chosen(at, q) for q in QUESTIONS] == [None, None, None]

    answer(at, first, ("no", "unsure", "yes"))             # keys 2, 6, 7
    assert [chosen(at, q) for q in QUESTIONS] == ["no", "unsure", "yes"]
    at.button(key="label_valid_task_yes").click().run()    # a change of mind: key 1
    assert at.session_state[f"lab_valid_task_{first}"] == "yes"
    assert chosen(at, "valid_task") == "yes"
    assert pool.quality.study_labels(study_id) == []               # nothing is stored before saving
    at.button(key="label_save").click().run()
    assert not at.exception
    assert at.subheader[0].value == "Item 2 of 4"
    assert [(r["valid_task"], r["input_ok"], r["output_ok"], r["annotator"])
            for r in pool.quality.study_labels(study_id)] == [("yes", "unsure", "yes", "lou")]
    assert [chosen(at, q) for q in QUESTIONS] == [None, None, None]   # the next item starts blank

    # An answer not saved stays behind when moving on, as P / N say ("without saving").
    at.button(key="label_output_ok_no").click().run()
    assert chosen(at, "output_ok") == "no"
    at.button(key="label_prev").click().run()
    assert at.subheader[0].value == "Item 1 of 4"
    assert [chosen(at, q) for q in QUESTIONS] == ["yes", "unsure", "yes"]  # what was saved
    at.button(key="label_next").click().run()
    assert chosen(at, "output_ok") is None and f"lab_output_ok_{second}" in at.session_state

    # Y still answers yes to all three, whatever was pressed before.
    at.button(key="label_input_ok_no").click().run()
    at.button(key="label_all_yes").click().run()
    assert not at.exception
    assert [(r["valid_task"], r["input_ok"], r["output_ok"]) for r in pool.quality.study_labels(study_id)] == [
        ("yes", "unsure", "yes"), ("yes", "yes", "yes")]


def test_the_headline_leads_with_the_interval_and_says_when_the_sample_is_too_small(demo_app_env):
    at = label_page("max")
    study_id = new_study(at, demo_app_env, 12)
    pool = app_pool(demo_app_env)
    for position in range(12):        # the case: 12 items, all yes
        item = pool.quality.study_item(study_id, position)
        pool.quality.save_label(study_id, item["item_id"], "max", valid_task="yes", input_ok="yes", output_ok="yes")
    at.segmented_control(key="label_view").set_value("results").run()
    assert not at.exception
    low, high = quality.wilson_interval(12, 12)
    assert (f"{low:.0%}", f"{high:.0%}") == ("76%", "100%")
    for metric in at.metric:
        assert metric.value == "76% – 100%" and metric.delta == "100% yes (12 of 12)"
        assert "pts" not in metric.delta
    captions = [c.value for c in at.caption]
    for measure in quality.MEASURES:
        assert quality.compare_with_paper(12, 12, PAPER_RATES[measure]) in captions
    assert ("Too small a sample to compare with the paper's 92%: the interval (76% to 100%) includes "
            "it but is wider than 20 percentage points; label more items to narrow it.") in captions
    # ... while 12 of 12 is already clearly above the paper's 54% for all three valid
    assert "Above the paper's 54%: the whole interval (76% to 100%) lies higher." in captions


def test_a_larger_sample_is_compared_with_the_paper(demo_app_env):
    at = label_page("ned")
    study_id = new_study(at, demo_app_env, 30)
    pool = app_pool(demo_app_env)
    assert pool.quality.studies()[0]["items"] == 30
    for position in range(30):
        item = pool.quality.study_item(study_id, position)
        pool.quality.save_label(study_id, item["item_id"], "ned", valid_task="yes", input_ok="yes",
                        output_ok="no" if position < 15 else "yes")
    at.segmented_control(key="label_view").set_value("results").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Valid task"] == "89% – 100%" and metrics["Output acceptable"] == "33% – 67%"
    captions = [c.value for c in at.caption]
    assert "Consistent with the paper's 92%: it lies inside the interval (89% to 100%)." in captions
    assert any(c.startswith("Too small a sample to compare with the paper's 58%: the interval (33% to 67%)")
               for c in captions)


# -- issue 22: four annotators at once are offered different items --------------------------
def test_four_annotators_saving_in_lockstep_cover_the_whole_study(demo_app_env):
    owner = label_page("ann")
    owner.number_input(key="study_overlap").set_value(2)
    study_id = new_study(owner, demo_app_env, 12)
    pool = app_pool(demo_app_env)
    sessions = [owner] + [label_page(name) for name in ("bob", "cat", "dan")]   # four screens open
    for _ in range(6):   # then four saves, each moving its annotator on to the next item
        for at in sessions:
            at.button(key="label_all_yes").click().run()
            assert not at.exception
    per_item = {pos: 0 for pos in range(12)}
    for row in pool.quality.study_labels(study_id):
        per_item[row["position"]] += 1
    assert per_item == {pos: 2 for pos in range(12)}   # was: items 1-6 four labels, 7-12 none

    assert pool.quality.hold_item(study_id, 0, "eve", seconds=60) is None   # a full item is not held
    eve = label_page("eve")   # a fifth annotator finds nothing to do, nothing held
    assert eve.button(key="label_first_unlabeled").disabled


def test_an_item_open_on_another_screen_is_not_offered_and_the_page_says_until_when(demo_app_env):
    owner = label_page("ann")
    study_id = new_study(owner, demo_app_env, 1)
    pool = app_pool(demo_app_env)
    assert pool.quality.study_leases(study_id)[0]["annotator"] == "ann"   # the item on ann's screen
    bob = label_page("bob")
    texts = [i.value for i in bob.info]
    assert any(t.startswith("Nothing left for you right now: the 1 item(s) that still need a label are on "
                            "other annotators' screens. The first is free again at ") for t in texts)
    assert "1 on other annotators' screens" in progress_text(bob)
    # bob may still open and save it (a save is never refused); ann then sees it labeled.
    bob.button(key="label_all_yes").click().run()
    assert not bob.exception
    assert [(r["annotator"]) for r in pool.quality.study_labels(study_id)] == ["bob"]
    # The owner's results name what is open on whose screen.
    owner.segmented_control(key="label_view").set_value("results").run()
    assert pool.quality.study_leases(study_id) == []   # leaving the labeling view lets the item go
