"""The Judge page through AppTest: a study judged by the offline demo's judge (which answers the
truth, `offline.judge_truth`), its agreement with people who labeled the truth, then the whole
pool with pool-wide rates that combine both."""
import time

from selfinstruct import quality
from selfinstruct.offline import judge_truth
from tests.conftest import app_pool, open_page


def wait_idle(at, db_path, timeout: float = 90.0) -> None:
    from pages.common import _job_manager

    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _job_manager(str(db_path)).status().busy:
            at.run()
            return
        time.sleep(0.2)
    raise AssertionError("the judge run did not end in time")


def label_with_the_truth(pool, study_id: int, items: int) -> None:
    rows = pool.judge.study_items(study_id, items)
    for (candidate_id, instance_id, item_id), text in zip(
            rows, pool.judge.item_texts([(c, i) for c, i, _ in rows])):
        truth = judge_truth(text["instruction"], text["input"], text["output"])
        for annotator in ("ann", "bob"):
            pool.quality.save_label(study_id, item_id, annotator, **truth)


def test_judge_a_labeled_study_then_the_pool(demo_app_env):
    at = open_page("pages/judge.py")
    pool = app_pool(demo_app_env)
    study_id = quality.create_study(pool, "checked", size=20, seed=4).study_id
    label_with_the_truth(pool, study_id, 12)
    at.run()
    assert not at.exception

    at.segmented_control(key="judge_backend").set_value("offline").run()
    at.segmented_control(key="judge_scope").set_value("study").run()
    at.selectbox(key="judge_study").set_value(study_id).run()
    assert next(m.value for m in at.metric if m.label == "Items") == "20"
    at.button(key="judge_start").click().run()
    assert not at.exception
    wait_idle(at, demo_app_env)
    assert not at.exception
    assert any("Judge run 1 finished" in m.value for m in at.markdown)
    assert next(m.value for m in at.metric if m.label == "Items answered") == "20 of 20"
    # verdicts are not labels: the study still has the people's 24 labels only
    assert len(pool.quality.study_labels(study_id)) == 24
    calibration = next(d.value for d in at.dataframe if "kappa" in d.value.columns)
    assert list(calibration["compared"]) == [12, 12, 12]     # the 12 labeled items
    assert list(calibration["left out"]) == ["8 unlabeled"] * 3     # once "none": unlabeled items count too
    assert all(k.startswith("1.00") or k == "–" for k in calibration["kappa"])   # a perfect judge

    at.segmented_control(key="judge_scope").set_value("pool").run()
    at.button(key="judge_start").click().run()
    wait_idle(at, demo_app_env, 180)
    assert not at.exception
    assert any("Judge run 2 finished" in m.value for m in at.markdown)
    at.selectbox(key="judge_rates_study").set_value(study_id).run()
    # the study drew another instance of some tasks than the pool run judged: no rate, one sentence
    # saying why and what to do
    refusal = next(w.value for w in at.warning if "No pool-wide rate" in w.value)
    assert "draw a study from judge run 2's items" in refusal and refusal.count(". ") == 0
    assert not any("judge + people (%)" in d.value.columns for d in at.dataframe)
    # the Label page draws one from the judged items
    label = open_page("pages/label.py")
    label.number_input(key="study_size").set_value(20)
    label.selectbox(key="study_judge_run").set_value(2)
    label.form_submit_button(key="study_create").click().run()
    assert not label.exception
    drawn = pool.quality.studies()[0]["id"]
    assert pool.quality.study(drawn)["config"]["judge_run"] == 2
    label_with_the_truth(pool, drawn, 12)
    at.run()
    at.selectbox(key="judge_rates_study").set_value(drawn).run()
    rates = next(d.value for d in at.dataframe if "judge + people (%)" in d.value.columns)
    assert list(rates["measure"])[:3] == ["Valid task", "Input appropriate", "Output acceptable"]
    assert set(rates["labeled"]) == {12}
    assert any("at least 96%" in c.value for c in at.caption)          # where the interval holds
    assert any("0 without a readable verdict" in c.value and "the 8 study items nobody labeled" in c.value
               for c in at.caption)
    assert list(rates["split / unsure (not-yes)"]) == ["0 / 0"] * 4 and set(rates["unreadable"]) == {0}
    assert not at.exception
