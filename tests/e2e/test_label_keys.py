"""Labeling by keyboard in a real browser (issue 16): every answer has a key, shown on its button
(1 2 3 / 4 5 6 / 7 8 9 = yes / no / unsure to the three questions), the key picks the answer,
Ctrl+S saves it, and the pool holds what was pressed; the results then lead with the interval."""
from __future__ import annotations

import os
import signal
import threading
import time

from playwright.sync_api import expect

from selfinstruct.model import ANSWERS, QUESTIONS
from selfinstruct.store import Pool
from tests.e2e.conftest import open_app, wait_idle
from tests.e2e.test_faults import fill, main

KEYS = {(q, a): str(3 * row + col + 1) for row, q in enumerate(QUESTIONS) for col, a in enumerate(ANSWERS)}


def answer_button(page, question: str, answer: str):
    # Streamlit also keeps a hidden copy of each button to measure it: the visible one.
    return main(page).locator(f".st-key-label_{question}_{answer} button").filter(visible=True)


def chosen(page, question: str) -> list[str]:
    """The answers drawn as chosen (primary) for one question."""
    return [a for a in ANSWERS if answer_button(page, question, a).get_attribute("data-testid")
            == "stBaseButton-primary"]


def press(page, key: str) -> None:
    page.keyboard.press(key)
    wait_idle(page)


def test_pressing_the_keys_labels_an_item(app_factory, demo_db_path, page, shots):
    app = app_factory(demo_db_path)
    open_app(page, app, "Label")
    fill(page, "Your name", "Kit")
    size = page.get_by_label("Instructions to sample", exact=True)
    size.fill("5")
    size.press("Enter")   # issue 26: Enter in a box of the form does not draw the study
    wait_idle(page)
    expect(main(page).get_by_role("button", name="Draw the sample")).to_be_visible()
    expect(main(page).get_by_text("Item 1 of 5")).to_have_count(0)
    page.get_by_role("button", name="Draw the sample").click()
    wait_idle(page)
    expect(main(page).get_by_text("Item 1 of 5")).to_be_visible()

    # Each answer button shows its key.
    for (question, answer), key in KEYS.items():
        button = answer_button(page, question, answer)
        expect(button).to_have_count(1)
        expect(button).to_contain_text(answer.capitalize())
        expect(button.locator("kbd")).to_have_text(key)   # Streamlit's key badge
    assert all(chosen(page, q) == [] for q in QUESTIONS)
    shots("item-1-blank", page)

    # Typing in the note box never answers.
    note = page.get_by_label("Note (optional)", exact=True)
    note.click()
    note.type("1 4 7 seen by key")
    note.press("Tab")
    wait_idle(page)
    assert all(chosen(page, q) == [] for q in QUESTIONS)

    # 2: not a valid task, 6: input unsure, 7: output acceptable; a change of mind: 1.
    for key in ("2", "6", "7"):
        press(page, key)
    assert [chosen(page, q) for q in QUESTIONS] == [["no"], ["unsure"], ["yes"]]
    press(page, "1")
    assert [chosen(page, q) for q in QUESTIONS] == [["yes"], ["unsure"], ["yes"]]
    shots("item-1-answered-by-keys", page)
    press(page, "Control+s")
    expect(main(page).get_by_text("Item 2 of 5")).to_be_visible()
    assert all(chosen(page, q) == [] for q in QUESTIONS)

    # A fast typist: three keys and Ctrl+S without waiting for the page in between.
    for key in ("3", "5", "9"):
        page.keyboard.press(key)
    wait_idle(page)
    expect(answer_button(page, "output_ok", "unsure")).to_have_attribute("data-testid", "stBaseButton-primary")
    assert [chosen(page, q) for q in QUESTIONS] == [["unsure"], ["no"], ["unsure"]]
    press(page, "Control+s")
    expect(main(page).get_by_text("Item 3 of 5")).to_be_visible()
    expect(main(page).get_by_text("2 of 5 items labeled by Kit")).to_be_visible()
    shots("item-3", page)

    # The results lead with the interval and say two items are too few to compare.
    main(page).get_by_text("Results", exact=True).click()
    wait_idle(page)
    expect(main(page).get_by_test_id("stMetricValue").first).to_have_text("9% – 91%")   # valid task: 1 yes of 2
    expect(main(page).get_by_text("Too small a sample to compare with the paper's 92%: 2 item(s) "
                                  "labeled, at least 10 needed.")).to_be_visible()
    shots("results", page)
    app.stop()

    with Pool.open(app.db_path) as pool:
        study_id = pool.quality.studies()[0]["id"]
        labels = pool.quality.study_labels(study_id)
        assert [(r["position"], r["annotator"], r["valid_task"], r["input_ok"], r["output_ok"], r["note"])
                for r in labels] == [(0, "Kit", "yes", "unsure", "yes", "1 4 7 seen by key"),
                                     (1, "Kit", "unsure", "no", "unsure", None)]


class Busy:
    """A machine busy with other work, for one process: it runs `share` of each slice of wall
    clock and is stopped (SIGSTOP) for the rest, so every rerun of the page takes several
    times longer while the person keeps typing at their own pace."""

    def __init__(self, pid: int, share: float, slice_s: float = 0.1):
        self.pid, self.share, self.slice_s = pid, share, slice_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.done.is_set():
                os.kill(self.pid, signal.SIGCONT)
                time.sleep(self.slice_s * self.share)
                os.kill(self.pid, signal.SIGSTOP)
                time.sleep(self.slice_s * (1 - self.share))
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> "Busy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def test_keys_typed_while_the_page_redraws_are_kept_in_order(app_factory, demo_db_path, page, shots):
    # Issue 26: on a busy machine, 1-4-8 typed 0.4 s apart right after a save, while the page
    # was still drawing the next item, lost keys or gave them to the item just saved, and the
    # next save then stored nothing. Keys typed ahead belong to the item the person moved to.
    app = app_factory(demo_db_path)
    open_app(page, app, "Label")
    fill(page, "Your name", "Kit")
    page.get_by_label("Instructions to sample", exact=True).fill("8")
    page.get_by_role("button", name="Draw the sample").click()
    wait_idle(page)
    expect(main(page).get_by_text("Item 1 of 8")).to_be_visible()
    page.wait_for_function("window.__selfinstructKeys && window.__selfinstructKeys.listening")
    typed = [("1", "4", "8"), ("2", "5", "9"), ("3", "6", "7"), ("1", "5", "8"), ("2", "4", "7")]
    with Busy(app.proc.pid, share=0.3):
        for keys in typed:
            for key in (*keys, "Control+s"):
                page.keyboard.press(key)
                page.wait_for_timeout(400)
    wait_idle(page)
    expect(main(page).get_by_text(f"Item {len(typed) + 1} of 8")).to_be_visible()
    expect(main(page).get_by_text(f"{len(typed)} of 8 items labeled by Kit")).to_be_visible()
    shots("after-typing-ahead", page)
    app.stop()

    answer_of = {key: (question, answer) for (question, answer), key in KEYS.items()}
    with Pool.open(app.db_path) as pool:
        labels = pool.quality.study_labels(pool.quality.studies()[0]["id"])
    assert [(r["position"], r["valid_task"], r["input_ok"], r["output_ok"]) for r in labels] == [
        (position, *(answer_of[key][1] for key in keys)) for position, keys in enumerate(typed)]
