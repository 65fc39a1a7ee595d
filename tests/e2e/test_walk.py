"""One user's story in a real browser: seed -> generate -> rescue a reject -> label a
sample -> export Alpaca JSON, checking each step against the pool it left behind."""
from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from selfinstruct import export
from selfinstruct.store import Pool
from tests.e2e.conftest import go_to, open_app, wait_idle
from tests.e2e.test_faults import fill, main


def metric(page, label: str) -> str:
    block = page.get_by_test_id("stMetric").filter(has_text=label).first
    return block.get_by_test_id("stMetricValue").inner_text().strip()


def test_the_whole_story(app_factory, page, shots, tmp_path):
    app = app_factory(tmp_path / "pool.duckdb")
    open_app(page, app)
    fill(page, "Your name", "Ada")     # the sidebar: recorded with every change and label
    shots("home-empty", page)

    # 1. Seed: load the starter seeds, see them on Home.
    go_to(page, "Seed")
    page.get_by_role("button", name="Load starter seeds").click()
    wait_idle(page)
    expect(main(page).get_by_text(re.compile(r"Loaded \d+ starter seed task"))).to_be_visible()
    n_seeds = int(re.search(r"Loaded (\d+)", main(page).get_by_text(re.compile("Loaded")).inner_text())[1])
    assert n_seeds >= 40
    shots("seeds-loaded", page)
    go_to(page, "Home")
    assert metric(page, "Seed tasks") == f"{n_seeds:,}"

    # 2. Generate: a demo run of three rounds, watched live (the offline demo, chosen: the
    # default is the local model, whose answers are not the same from one machine to the next).
    go_to(page, "Generate")
    page.get_by_text("Offline demo", exact=True).click()
    wait_idle(page)
    page.get_by_role("button", name="Start run").click()
    expect(main(page).get_by_text("Rounds done")).to_be_visible()
    shots("generate-running", page)
    expect(main(page).get_by_text("Run 1 finished")).to_be_visible(timeout=120_000)
    assert metric(page, "Rounds done") == "3"
    accepted = int(metric(page, "Accepted").replace(",", ""))
    assert accepted > 0
    shots("generate-finished", page)

    # 3. Rejects: filter to ROUGE rejects, inspect the first, rescue it.
    go_to(page, "Rejects")
    page.get_by_role("button", name=re.compile(r"Too similar \(ROUGE-L\)")).first.click()
    wait_idle(page)
    expect(main(page).get_by_text("Evidence", exact=True)).to_be_visible()
    shots("rejects-rouge", page)
    page.get_by_role("button", name="Rescue", exact=True).click()
    wait_idle(page)
    expect(main(page).get_by_text(re.compile("Rescued")).first).to_be_visible()
    shots("rejects-rescued", page)

    # 4. Label: draw a study of 10 and label five items, as Ada.
    go_to(page, "Label")
    expect(page.get_by_label("Your name, as the annotator", exact=True)).to_have_count(0)
    expect(page.get_by_label("Instructions to sample", exact=True)).to_have_count(1)
    page.get_by_label("Instructions to sample", exact=True).fill("10")   # in a form: Enter would submit it
    page.get_by_role("button", name="Draw the sample").click()
    wait_idle(page)
    expect(main(page).get_by_text("Item 1 of 10")).to_be_visible()
    shots("label-first-item", page)
    for question, answer in (("valid_task", "yes"), ("input_ok", "unsure"), ("output_ok", "no")):
        main(page).locator(f".st-key-label_{question}_{answer} button").filter(visible=True).click()
        wait_idle(page)
    page.get_by_role("button", name="Save and next", exact=False).and_(page.get_by_test_id("stBaseButton-primary")).click()
    wait_idle(page)
    for _ in range(4):
        page.get_by_role("button", name="All yes, save and next").click()
        wait_idle(page)
    expect(main(page).get_by_text("5 of 10 items labeled by Ada")).to_be_visible()
    shots("label-five-done", page)

    # 5. Export: Alpaca JSON without the card, downloaded by the browser.
    go_to(page, "Export")
    main(page).get_by_test_id("stButtonGroup").filter(has_text="Format").get_by_text(
        "Alpaca JSON", exact=True).click()
    wait_idle(page)
    page.get_by_text("Include the dataset card").click()
    wait_idle(page)
    shots("export", page)
    with page.expect_download() as download_info:
        page.get_by_role("button", name=re.compile(r"Download .*\.json")).click()
    downloaded = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(downloaded)
    rows = json.loads(downloaded.read_text(encoding="utf-8"))
    app.stop()

    # What the browser showed is what the pool holds.
    with Pool.open(app.db_path) as pool:
        counts = pool.counts()
        assert counts.seeds == n_seeds and counts.rounds == 3
        assert counts.accepted == accepted + 1 and counts.rescued == 1
        assert pool.audit.entries(action="rescue")[0]["actor"] == "Ada"
        labels = pool.cursor().execute(
            "SELECT annotator, valid_task, input_ok, output_ok FROM labels ORDER BY item_id").fetchall()
        assert len(labels) == 5 and labels[0] == ("Ada", "yes", "unsure", "no")
        assert all(label[1:] == ("yes", "yes", "yes") for label in labels[1:])
        expected = tmp_path / "expected.json"
        export.write_export(pool, "alpaca", expected, export.ExportFilters())
    assert rows == json.loads(expected.read_text(encoding="utf-8"))
    assert rows and set(rows[0]) == {"instruction", "input", "output"}
