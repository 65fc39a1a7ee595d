"""The Evaluate page through AppTest: an owner sets up two models and held-out instructions,
collects their answers in the background, rates blind, and sees the results; raters never see a
model's name; an annotator gets the rating view only."""
import time

from selfinstruct import evaluate
from selfinstruct.judge import JudgeConfig
from tests.conftest import app_pool, open_page
from tests.test_page_team import logged_in, team_app

NAMES = ("offline-base", "offline-tuned")


def page_texts(at) -> str:
    """Everything the page shows as text (titles, markdown, code, captions, buttons, select options)."""
    parts = [e.value for kind in ("title", "markdown", "caption", "code", "text", "subheader", "info", "warning")
             for e in at.get(kind)]
    parts += [b.label for b in at.button]
    parts += [str(o) for s in at.selectbox for o in s.options]
    parts += [t.value for t in at.toast]
    return "\n".join(str(p) for p in parts)


def wait_done(pool, evaluation_id, total: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while pool.evaluations.progress(evaluation_id)["answered"] < total and time.time() < deadline:
        time.sleep(0.05)
    from pages.common import job_manager   # the app's manager: wait for its worker to end

    job_manager().wait(10)


def set_up(at, k: int = 4):
    at.segmented_control(key="eval_view").set_value("setup").run()
    assert not at.exception
    at.text_input(key="eval_name").input("checks").run()
    for index in range(2):
        at.segmented_control(key=f"eval_m{index}_backend").set_value("offline").run()
        assert not at.exception
        assert at.text_input(key=f"eval_m{index}_offline").value == NAMES[index]
    at.segmented_control(key="eval_source").set_value("holdout").run()
    at.number_input(key="eval_holdout").set_value(k).run()
    assert not at.exception
    assert any(f"{k} instruction(s) x 2 models = {2 * k} answers" in c.value for c in at.caption)
    at.button(key="eval_create").click().run()
    assert not at.exception


def test_set_up_collect_rate_blind_and_see_the_results(demo_app_env):
    at = open_page("pages/evaluate.py")
    assert at.segmented_control(key="eval_view").options == ["Rate answers", "Set up", "Collect", "Results"]
    set_up(at)
    pool = app_pool(demo_app_env)
    [row] = pool.evaluations.all()
    assert row["name"] == "checks" and [m["model"] for m in row["config"]["models"]] == list(NAMES)
    assert at.session_state["eval_view"] == "collect"
    # Issue 26: a gap in the usage table reads "–", not "None", before anything is collected.
    assert list(at.dataframe[0].value["mean latency (s)"]) == ["–", "–"]
    at.button(key="eval_collect").click().run()
    assert not at.exception
    wait_done(pool, row["id"], 8)
    at.run()
    assert [m.value for m in at.metric][0] == "8 / 8"

    # Rating: a name first, then one instruction's two answers, no model named anywhere.
    at.segmented_control(key="eval_view").set_value("rate").run()
    assert any(i.value.startswith("Type your name in **Your name** in the sidebar to start rating")
               for i in at.info)   # a hint, not a blank page
    assert not [t.label for t in at.main.text_input if "your name" in t.label.lower()]   # one name box: the sidebar's
    at.session_state["user_name"] = "dana"   # the sidebar's "Your name"
    at.run()
    assert not at.exception
    shown = page_texts(at)
    assert "Answer 1" in shown and "Answer 2" in shown
    for name in NAMES:
        assert name not in shown
    assert "checks" not in shown              # the evaluation's name is the owner's, not the rater's
    item = evaluate.blind_item(pool, row["id"], "dana", evaluate.rating_queue(pool, row["id"], "dana")["ready"][0])
    codes = [c.value for c in at.code]
    assert codes[-2:] == [a.text for a in item.answers]
    at.button(key="eval_rate_1_A").click().run()
    assert not at.exception
    assert at.button(key="eval_rate_1_A").proto.type == "primary"     # half rated: it stays
    assert at.get("progress")[0].proto.text.endswith("this is instruction 1")
    at.button(key="eval_rate_2_D").click().run()                       # rated whole: the next, as Label's save
    assert not at.exception
    mine = {r["answer_id"]: r["rating"] for r in pool.evaluations.ratings(row["id"], rater="dana")}
    assert mine == {item.answers[0].answer_id: "A", item.answers[1].answer_id: "D"}
    assert at.get("progress")[0].proto.text == "You rated 1 of 4 instructions · this is instruction 2"
    assert at.button(key="eval_rate_1_A").proto.type == "secondary"
    # U: the first in your queue (the same meaning as on Label), from anywhere.
    assert at.button(key="eval_next_unrated").label == "First in your queue"
    at.button(key="eval_next").click().run()
    at.button(key="eval_next").click().run()
    at.button(key="eval_next_unrated").click().run()
    assert at.get("progress")[0].proto.text == "You rated 1 of 4 instructions · this is instruction 2"

    # Results: the models by name, the stacked bars, no agreement with one rater.
    at.segmented_control(key="eval_view").set_value("results").run()
    assert not at.exception
    shown = page_texts(at)
    assert "Rated by 1 person(s)" in shown and "needs at least two raters" in shown
    table = at.dataframe[0].value
    assert list(table["model"]) == list(NAMES) and list(table["rated answers"]) == [1, 1]
    assert "Offline stand-ins answer at random with odds set by their names" in shown   # why tuned may lose
    assert len(at.get("vega_lite_chart")) == 1


def test_the_judge_pre_rates_from_the_page_and_is_shown_apart(demo_app_env):
    at = open_page("pages/evaluate.py")
    set_up(at, 3)
    pool = app_pool(demo_app_env)
    evaluation_id = pool.evaluations.all()[0]["id"]
    at.button(key="eval_collect").click().run()
    wait_done(pool, evaluation_id, 6)
    at.run()
    at.segmented_control(key="eval_judge_backend").set_value("offline").run()
    at.button(key="eval_prerate").click().run()
    assert not at.exception
    deadline = time.time() + 30
    while pool.evaluations.prerate_progress(evaluation_id, "selfinstruct-demo")["answered"] < 6 and time.time() < deadline:
        time.sleep(0.05)
    from pages.common import job_manager

    job_manager().wait(10)
    assert pool.evaluations.ratings(evaluation_id) == []
    at.segmented_control(key="eval_view").set_value("results").run()
    assert not at.exception
    shown = page_texts(at)
    assert "The judge's pre-ratings" in shown and "Judge: selfinstruct-demo" in shown
    assert "Nobody has rated these answers yet." in shown


def test_two_raters_see_their_own_stable_orders(demo_app_env):
    pool = app_pool(demo_app_env)
    instructions = [{"instruction": f"Explain idea number {k} in a line.", "input": ""} for k in range(12)]
    models = [evaluate.model_from_spec(f"offline:{n}") for n in NAMES] + [evaluate.model_from_spec("offline:third")]
    evaluation_id = evaluate.create_evaluation(pool, models, instructions)
    assert evaluate.EvalRunner(pool, evaluation_id).run().status == "finished"

    def orders(rater: str) -> list[list[str]]:
        at = open_page("pages/evaluate.py")
        at.session_state["user_name"] = rater
        at.run()
        seen = []
        for k in range(len(instructions)):
            seen.append([c.value for c in at.code][-3:])
            if k < len(instructions) - 1:
                at.button(key="eval_next").click().run()
                assert not at.exception
        return seen

    ann, bob = orders("ann"), orders("bob")
    assert ann == orders("ann") and ann != bob
    assert [sorted(a) for a in ann] == [sorted(b) for b in bob]      # the same answers, another order


def test_an_annotator_only_rates(app_env):
    from selfinstruct.store import Pool

    with Pool.open(app_env) as pool:
        evaluation_id = evaluate.create_evaluation(
            pool, [evaluate.model_from_spec(f"offline:{n}") for n in NAMES],
            [{"instruction": "Name three rivers.", "input": ""}], name=" vs ".join(NAMES))
        evaluate.EvalRunner(pool, evaluation_id).run()
        evaluate.plan_prerating(pool, evaluation_id, JudgeConfig(backend="offline"))
    at = team_app(logged_in("grace@example.com"), "pages/evaluate.py")
    assert at.segmented_control(key="eval_view").options == ["Rate answers"]
    assert "eval_rater_name" not in [t.key for t in at.text_input]      # the login names the rater
    shown = page_texts(at)
    assert "Answer 1" in shown and all(name not in shown for name in NAMES)
    at.button(key="eval_rate_2_B").click().run()
    assert not at.exception
    ratings = app_pool(app_env).evaluations.ratings(evaluation_id)
    assert [(r["rater"], r["rating"]) for r in ratings] == [("grace@example.com", "B")]


def test_the_local_models_pace_is_said_in_each_pages_own_terms(demo_app_env):
    # Issue 26: "a round of 8 requests..." (generation's) was repeated on Judge and Evaluate.
    from pages.endpoint import LOCAL_PACE

    def captions(at) -> str:
        return "\n".join(c.value for c in at.caption)

    shown = {}
    for page, key, setup in (("pages/generate.py", "gen_backend", None), ("pages/judge.py", "judge_backend", None),
                             ("pages/evaluate.py", "eval_m0_backend", "setup")):
        at = open_page(page)
        if setup:
            at.segmented_control(key="eval_view").set_value(setup).run()
        at.segmented_control(key=key).set_value("local").run()
        assert not at.exception
        shown[page] = captions(at)
    assert LOCAL_PACE["generate"] in shown["pages/generate.py"]
    assert LOCAL_PACE["judge"] in shown["pages/judge.py"]
    assert LOCAL_PACE["evaluate"] in shown["pages/evaluate.py"]
    assert "round of 8" not in shown["pages/judge.py"] + shown["pages/evaluate.py"]
