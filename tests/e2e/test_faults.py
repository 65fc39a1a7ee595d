"""The product under faults, in a real browser: a killed app, a misbehaving endpoint,
a locked pool file and hostile input. Each ends with a readable message and nothing lost."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from playwright.sync_api import expect

from selfinstruct import seeds
from selfinstruct.offline import OfflineServer
from selfinstruct.parsing import identify_stage
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.prompts import STAGE_CLASSIFY, STAGE_INSTANCES, STAGE_INSTRUCTIONS
from selfinstruct.store import Pool
from tests.e2e.conftest import go_to, open_app, wait_idle


def seeded_pool(path):
    with Pool.open(path) as pool:
        seeds.load_starter_seeds(pool)


def open_settings(page):
    wait_idle(page)
    backend = page.get_by_text("OpenAI-compatible endpoint")
    if not backend.is_visible():
        page.get_by_text("Model and settings").click()
        expect(backend).to_be_visible()
    return backend


def configure_endpoint(page, base_url: str, *, key: str = "", rounds: int = 2, concurrency: int = 2):
    backend = open_settings(page)
    if not page.get_by_label("Base URL").count():
        backend.click()
        wait_idle(page)
    fill(page, "Base URL", base_url)
    fill(page, "Model", "selfinstruct-demo")
    if key:
        fill(page, "API key", key)
    fill(page, "Rounds", str(rounds))
    fill(page, "Concurrent requests", str(concurrency))


def main(page):
    """The page's own content, without the sidebar (which repeats the run status)."""
    return page.get_by_test_id("stMainBlockContainer")


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    wait_idle(page)


def completions_served(server: OfflineServer) -> int:
    return sum(n for endpoint, n in server.stats["by_endpoint"].items() if "completions" in endpoint)


def test_app_killed_mid_round_resumes_without_duplicates_or_gaps(app_factory, page, shots, tmp_path):
    db = tmp_path / "pool.duckdb"
    seeded_pool(db)
    with OfflineServer(latency_s=0.08, seed=3) as server:
        app = app_factory(db)
        open_app(page, app, "Generate")
        configure_endpoint(page, server.base_url, rounds=2)
        page.get_by_role("button", name="Start run").click()
        deadline = time.time() + 60
        while completions_served(server) < 14 and time.time() < deadline:
            time.sleep(0.05)
        shots("running", page)
        app.kill()
        assert completions_served(server) < 120, "the run finished before the kill"

        app2 = app_factory(db)
        open_app(page, app2, "Generate")
        expect(main(page).get_by_text("Run 1 was interrupted")).to_be_visible()
        shots("interrupted", page)
        page.get_by_role("button", name="Resume").click()
        expect(main(page).get_by_text("Run 1 finished")).to_be_visible(timeout=120_000)
        shots("resumed-and-finished", page)
        app2.stop()

        # The same run, never interrupted, against the same deterministic server.
        reference = tmp_path / "reference.duckdb"
        seeded_pool(reference)
        with Pool.open(db) as pool:
            config = RunConfig.from_dict(pool.runs.get(1)["config"])
            got = _decisions(pool)
            duplicated = pool.cursor().execute(
                "SELECT count(*) FROM (SELECT round_id, stage, position FROM requests "
                "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
            texts = pool.seeds.pool_instructions()
        with Pool.open(reference) as pool:
            Runner(pool, start_run(pool, config)).run()
            want = _decisions(pool)
    assert duplicated == 0
    assert len(texts) == len(set(texts))
    assert got == want


def _decisions(pool):
    cur = pool.cursor()
    return (cur.execute("SELECT instruction, status, reason FROM candidates ORDER BY id").fetchall(),
            cur.execute("SELECT candidate_id, input, output, status FROM instances "
                        "WHERE candidate_id IS NOT NULL ORDER BY candidate_id, position").fetchall())


def test_endpoint_faults_read_as_plain_messages(app_factory, page, shots, tmp_path):
    db = tmp_path / "pool.duckdb"
    seeded_pool(db)
    with OfflineServer(api_key="sk-right", seed=2) as server:
        app = app_factory(db)
        open_app(page, app, "Generate")
        configure_endpoint(page, server.base_url, key="sk-wrong", rounds=1)
        page.get_by_role("button", name="Test connection").click()
        expect(page.get_by_text("401").first).to_be_visible()
        shots("wrong-key-test-connection", page)
        page.get_by_role("button", name="Start run").click()
        expect(main(page).get_by_text("Run 1 stopped on an error")).to_be_visible(timeout=60_000)
        expect(page.get_by_test_id("stAlertContentError").filter(has_text="Check the API key").first).to_be_visible()
        expect(main(page).get_by_test_id("stText").filter(has_text="401").first).to_be_visible()
        shots("wrong-key-run", page)

        # 429s with Retry-After are waited out; 500s, timeouts, garbage and empty bodies
        # are retried, then counted in plain words; the run still finishes.
        server.faults.push("429", count=3, retry_after=1)
        server.faults.set_rates({"500": 0.15, "garbage": 0.1, "empty": 0.05, "timeout": 0.03},
                                seed=4, params={"timeout": {"seconds": 8}})
        open_settings(page)
        fill(page, "API key", "sk-right")
        page.get_by_role("button", name="Start run").click()
        expect(main(page).get_by_text("Run 2 finished")).to_be_visible(timeout=180_000)
        shots("faulty-endpoint-finished", page)
        assert server.stats["by_fault"].get("429", 0) == 3
        assert page.get_by_test_id("stException").count() == 0


def test_locked_pool_is_a_clear_message(app_factory, page, shots, tmp_path):
    db = tmp_path / "pool.duckdb"
    seeded_pool(db)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, time; con = duckdb.connect(%r); print('ready', flush=True); time.sleep(120)"
    ) % str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        app = app_factory(db)
        page.goto(app.url + "/")
        wait_idle(page)
        expect(page.get_by_text(f"open in another selfinstruct process, PID {holder.pid}")).to_be_visible()
        assert page.get_by_test_id("stException").count() == 0
        shots("locked", page)
    finally:
        holder.kill()
        holder.wait()


def test_hostile_seed_uploads_are_refused_plainly(app_factory, page, shots, tmp_path):
    app = app_factory()
    open_app(page, app, "Seed")
    cases = {
        "binary.jsonl": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50, "looks like a binary file"),
        "latin1.csv": ("instruction\nTraduire « été » en anglais.\n".encode("latin-1"), "not UTF-8"),
        # 46 MB: read in full (no size limit below 1 GB), then refused for its repeats
        "huge.jsonl": (b'{"instruction": "Say hello to the reader in a friendly way."}\n' * 750_000,
                       "already on line 1"),
        "deep.json": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        "shape.json": (json.dumps({"instruction": "A task", "output": "x"}).encode(), "Expected a JSON list"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
        wait_idle(page, 120_000)
        page.get_by_role("button", name="Import file").click()
        wait_idle(page, 120_000)
        expect(page.get_by_text(expected).first).to_be_visible()
        expect(page.get_by_text("nothing was imported").first).to_be_visible()
        shots(name.replace(".", "-"), page)
        assert page.get_by_test_id("stException").count() == 0
    expect(page.get_by_text("0 seed tasks")).to_be_visible()


HOSTILE = [
    "Summarize the plot <script>window.__pwned = 1</script> of the story in two sentences.",
    "Describe the weather ![tracker](http://127.0.0.1:9/evil.png) you would expect in a desert town.",
    "Explain how <img src=x onerror=\"window.__pwned = 2\"> interest on a savings account grows.",
    "Count the words in this very long line " + "and keep counting " * 150 + "until the end.",
]


def hostile_responder(text: str, request_seed: int) -> str:
    stage = identify_stage(text)
    if stage == STAGE_INSTRUCTIONS:
        return "\n".join(f"{n}. {item}" for n, item in enumerate(HOSTILE, start=9))
    if stage == STAGE_CLASSIFY:
        return "No"
    if stage == STAGE_INSTANCES:
        return "Input: <b>bold</b> and <i>tags</i>\nOutput: <script>window.__pwned = 3</script> done"
    return "ok"


def test_hostile_model_text_is_shown_inert(app_factory, page, shots, tmp_path):
    db = tmp_path / "pool.duckdb"
    seeded_pool(db)
    with OfflineServer(responder=hostile_responder) as server:
        app = app_factory(db)
        open_app(page, app, "Generate")
        configure_endpoint(page, server.base_url, rounds=1)
        fill(page, "Requests per round", "1")
        page.get_by_role("button", name="Start run").click()
        expect(main(page).get_by_text("Run 1 finished")).to_be_visible(timeout=60_000)
        shots("generate", page)
        assert_inert(page)

        # The pool explorer shows an accepted hostile instruction as text.
        go_to(page, "Pool")
        fill(page, "Open item #", "1")
        expect(main(page).get_by_text("Summarize the plot <script>window.__pwned = 1</script>", exact=False)
               .first).to_be_visible()
        shots("pool", page)
        assert_inert(page)

        # The rejects page shows them as text: a keyword reject with its word marked, and
        # the over-long one wrapped inside the page.
        go_to(page, "Rejects")
        expect(main(page).get_by_text("Summarize the plot <script>window.__pwned = 1</script>")
               .filter(visible=True).first).to_be_visible()
        expect(main(page).locator("mark").filter(has_text="plot").first).to_be_visible()
        shots("rejects-keyword", page)
        assert_inert(page)
        page.get_by_role("button", name=re.compile("Too long")).click()
        wait_idle(page)
        expect(main(page).get_by_text("Count the words in this very long line").filter(visible=True)
               .first).to_be_visible()
        shots("rejects-too-long", page)
        assert_inert(page)

        # The label page shows the hostile instance as text.
        go_to(page, "Label")
        fill(page, "Your name", "Bo")
        expect(page.get_by_label("Instructions to sample", exact=True)).to_have_count(1)
        page.get_by_role("button", name="Draw the sample").click()
        wait_idle(page)
        expect(main(page).get_by_text("<script>window.__pwned = 3</script> done").first).to_be_visible()
        shots("label", page)
        assert_inert(page)


def assert_inert(page) -> None:
    """No script from model text ran, no image it named loaded, nothing overflows the page."""
    assert page.evaluate("window.__pwned") is None
    assert page.locator('img[src*="evil.png"], img[src="x"]').count() == 0
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
