"""Blind rating in a real browser (issue 17): the rating view's whole DOM names no model, the
number keys rate the answers (1-4: Answer 1 A-D, 5-8: Answer 2), and the results view, an owner's,
names the models beside their stacked bars."""
from __future__ import annotations

from playwright.sync_api import expect

from selfinstruct import evaluate
from selfinstruct.store import Pool
from tests.e2e.conftest import open_app, wait_idle
from tests.e2e.test_faults import fill, main

NAMES = ("zephyr-base-model", "quokka-tuned-model")


def rate_button(page, slot: int, level: str):
    # Streamlit also keeps a hidden copy of each button to measure it: the visible one.
    return main(page).locator(f".st-key-eval_rate_{slot}_{level} button").filter(visible=True)


def test_rating_is_blind_and_the_results_name_the_models(app_factory, db_path, page, shots):
    instructions = [{"instruction": f"Give one tip number {k} for writing clearly.", "input": ""} for k in range(4)]
    with Pool.open(db_path) as pool:
        evaluation_id = evaluate.create_evaluation(
            pool, [evaluate.model_from_spec(f"offline:{n}") for n in NAMES], instructions, name="spring check")
        assert evaluate.EvalRunner(pool, evaluation_id).run().status == "finished"
        first = evaluate.blind_item(pool, evaluation_id, "Kit", pool.evaluations.instructions(evaluation_id)[0]["id"])
    app = app_factory(db_path)
    open_app(page, app, "Evaluate")
    fill(page, "Your name", "Kit")
    expect(main(page).get_by_text("Answer 1", exact=True)).to_be_visible()
    expect(main(page).get_by_text("Answer 2", exact=True)).to_be_visible()
    html = page.content()
    for name in NAMES:
        assert name not in html
    assert "spring check" not in html
    for answer in first.answers:      # the rater's own order
        assert answer.text.split('"')[0] in main(page).inner_text()
    shots("rating-view", page)

    # Each rating button shows its key; the keys rate.
    for slot in (1, 2):
        for k, level in enumerate(evaluate.LEVELS):
            expect(rate_button(page, slot, level).locator("kbd")).to_have_text(str(4 * (slot - 1) + k + 1))
    main(page).get_by_role("heading", name="Evaluate models").click()    # out of the name box: keys are live
    page.keyboard.press("2")
    wait_idle(page)
    expect(rate_button(page, 1, "B")).to_have_attribute("data-testid", "stBaseButton-primary")
    page.keyboard.press("8")   # the instruction's last rating: on to the next, as a save on Label
    wait_idle(page)
    expect(main(page).get_by_text("You rated 1 of", exact=False)).to_be_visible()
    expect(rate_button(page, 2, "D")).to_have_attribute("data-testid", "stBaseButton-secondary")
    for name in NAMES:
        assert name not in page.content()
    shots("rated-by-keys", page)

    # The owner's results view names the models.
    main(page).locator(".st-key-eval_view").get_by_text("Results", exact=True).click()
    wait_idle(page)
    expect(main(page).get_by_text("Rated by 1 person(s)", exact=False)).to_be_visible()
    html = page.content()
    for name in NAMES:
        assert name in html
    shots("results", page)
    app.stop()
    with Pool.open(db_path) as pool:
        ratings = {r["answer_id"]: (r["rater"], r["rating"]) for r in pool.evaluations.ratings(evaluation_id)}
    assert ratings == {first.answers[0].answer_id: ("Kit", "B"), first.answers[1].answer_id: ("Kit", "D")}
