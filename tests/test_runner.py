"""The one request runner (selfinstruct/runner.py) on its own: a plan of its own over a real
DuckDB file, sent through the real openai client to the offline server with faults and latency.

The plan stores each answer with a plain INSERT on a primary key, so an item answered twice
breaks the run (a constraint error), and a resumed plan's open items are read back from the file.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import duckdb
import pytest

from selfinstruct import runner
from selfinstruct.llm import AdaptiveLimit, LLMClient, LLMConfig, PriceTable, Sampling
from selfinstruct.offline import DEFAULT_MODEL, FaultPlan, OfflineServer
from selfinstruct.control import RunControl
from selfinstruct.prompts import Prompt
from selfinstruct.runner import Answered, Lane, Plan, Request, RequestRunner

PRICES = PriceTable({DEFAULT_MODEL: (2.0, 6.0)})    # USD per 1M tokens: every answer costs something
SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=64, presence_penalty=0.0)


def echo(text: str, seed: int) -> str:
    return f"echo:{text}"


@dataclass
class Outcome:
    status: str
    stop_reason: str
    done: int
    total: int
    cost_usd: float
    error: str | None
    next_step: str


class TablePlan(Plan):
    """Items in a DuckDB table, one lane per server; an answer is read when it echoes its prompt."""

    job, step = "test", "test"

    def __init__(self, path, servers, *, concurrency=(4,), max_retries=2, failure_streak=1000, timeout_s=10.0,
                 control=None):
        self.con = duckdb.connect(str(path))
        self.servers, self.concurrency = servers, concurrency
        self.max_retries, self.failure_streak, self.timeout_s = max_retries, failure_streak, timeout_s
        self.statuses: list[str] = []
        RequestRunner(self, control=control)

    @staticmethod
    def create(path, n: int, lanes: int = 1) -> None:
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, lane INTEGER, prompt VARCHAR, failures INTEGER)")
            con.execute("CREATE TABLE answers (item_id INTEGER PRIMARY KEY, text VARCHAR, prompt_tokens INTEGER, "
                        "completion_tokens INTEGER, cost_usd DOUBLE, readable BOOLEAN)")
            con.execute("CREATE TABLE errors (item_id INTEGER, kind VARCHAR)")
            con.executemany("INSERT INTO items VALUES (?, ?, ?, 0)",
                            [[i, i % lanes, f"item {i}: say something about the number {i * 7}"] for i in range(n)])

    def close_file(self) -> None:
        self.con.close()

    # -- the requests
    def lanes(self):
        return {k: Lane(LLMClient(LLMConfig(base_url=srv.base_url, model=DEFAULT_MODEL, api_key="not-needed",
                                            concurrency=self.concurrency[k], max_retries=self.max_retries,
                                            backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=self.timeout_s),
                                  prices=PRICES),
                        AdaptiveLimit(self.concurrency[k]), self.failure_streak)
                for k, srv in enumerate(self.servers)}

    def open_items(self):
        rows = self.con.execute("SELECT id, lane, prompt, failures FROM items WHERE id NOT IN "
                                "(SELECT item_id FROM answers) ORDER BY id").fetchall()
        return [{"id": i, "lane": lane, "prompt": p, "failures": f} for i, lane, p, f in rows]

    def lane_of(self, item):
        return item["lane"]

    def request(self, item):
        prompt = Prompt(stage="test", version="test-v1", text=item["prompt"])
        return Request(lambda client: client.complete(prompt, SAMPLING), prompt)

    def on_answer(self, item, prompt, completion):
        readable = completion.text == f"echo:{prompt.text}"
        self.con.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                         [item["id"], completion.text, completion.prompt_tokens, completion.completion_tokens,
                          completion.cost_usd, readable])
        return Answered(readable, "" if readable else completion.text[:40])

    def on_failure(self, item, completion):
        self.con.execute("INSERT INTO errors VALUES (?, ?)", [item["id"], completion.error_kind])
        self.con.execute("UPDATE items SET failures = failures + 1 WHERE id = ?", [item["id"]])

    # -- the stored job
    def set_status(self, status, **kwargs):
        self.statuses.append(status)

    def stored_counts(self):
        done, total, unreadable, cost, tokens = self.con.execute(
            "SELECT count(a.item_id), count(*), count(*) FILTER (WHERE NOT a.readable), "
            "coalesce(sum(a.cost_usd), 0), coalesce(sum(a.prompt_tokens + a.completion_tokens), 0) "
            "FROM items i LEFT JOIN answers a ON a.item_id = i.id").fetchone()
        return {"done": done, "total": total, "unparseable": unreadable, "cost_usd": cost, "tokens": tokens}

    def resume_command(self):
        return "run the test plan again"

    def next_step(self, kind):
        return f"Fix the {kind} problem, then {self.resume_command()}."

    def outcome(self, status, reason, error, next_step):
        return Outcome(status, reason, self.done, self.total, self.cost, error, next_step)

    def answers(self) -> dict[int, str]:
        return dict(self.con.execute("SELECT item_id, text FROM answers").fetchall())


def expected(path) -> dict[int, str]:
    with duckdb.connect(str(path)) as con:
        return {i: f"echo:{p}" for i, p in con.execute("SELECT id, prompt FROM items").fetchall()}


@pytest.fixture
def quick_retries(monkeypatch):
    """A failed item is sent again after 50 ms rather than 5 s, so a storm fits in a test."""
    monkeypatch.setattr(runner, "RETRY_COOLDOWN_S", 0.05)


STORM = {"500": 0.12, "503": 0.06, "429": 0.05, "reset": 0.03, "malformed_json": 0.02, "empty": 0.02}


def test_under_a_seeded_fault_storm_every_item_is_answered_exactly_once(tmp_path, quick_retries, monkeypatch):
    # Items whose retries run out come back as often as it takes (the per-item limit has its own test).
    monkeypatch.setattr(runner, "MAX_FAILURES_PER_ITEM", 1000)
    failures = faults = 0
    for seed in range(3):
        path = tmp_path / f"storm{seed}.duckdb"
        TablePlan.create(path, 120, lanes=2)
        plans = [FaultPlan(seed=seed * 10 + k) for k in range(2)]
        for k, plan in enumerate(plans):
            plan.set_rates(STORM, seed=seed * 10 + k, params={"429": {"retry_after": 0.05}})
            plan.set_latency_distribution(0.01, 0.8, seed=seed)
        with OfflineServer(responder=echo, faults=plans[0]) as a, OfflineServer(responder=echo, faults=plans[1]) as b:
            job = TablePlan(path, [a, b], concurrency=(6, 3), max_retries=1)
            outcome = job.run()
            faults += sum(a.stats["by_fault"].values()) + sum(b.stats["by_fault"].values())
        assert outcome.status == "finished", outcome.error
        assert job.answers() == expected(path)          # each item once, with its own answer
        stored_errors = job.con.execute("SELECT count(*) FROM errors").fetchone()[0]
        assert job.failures == stored_errors
        failures += stored_errors
        # the runner's cost and tokens are the stored rows' sums
        cost, tokens = job.con.execute(
            "SELECT sum(cost_usd), sum(prompt_tokens + completion_tokens) FROM answers").fetchone()
        assert outcome.cost_usd == pytest.approx(cost) and cost > 0
        assert job.tokens == tokens and outcome.done == outcome.total == 120
        assert job.statuses == ["running", "finished"]
        job.close_file()
    assert faults > 50 and failures > 0    # the storm did hit, and some items ran out of retries and came back


def test_a_pause_at_random_moments_then_resume_ends_with_the_same_answers_and_sends_none_twice(tmp_path):
    for seed in range(3):
        rng = random.Random(seed)
        path = tmp_path / f"pause{seed}.duckdb"
        TablePlan.create(path, 90)
        sent: dict[str, int] = {}

        def counting(text: str, request_seed: int) -> str:
            sent[text] = sent.get(text, 0) + 1
            return echo(text, request_seed)

        faults = FaultPlan()
        faults.set_latency_distribution(0.05, 0.8, seed=seed)
        statuses = []
        with OfflineServer(responder=counting, faults=faults) as srv:
            for _ in range(30):
                control = RunControl()
                job = TablePlan(path, [srv], concurrency=(8,), control=control)
                before = job.answers()
                sent_before = dict(sent)
                timer = threading.Timer(rng.uniform(0.05, 0.6), control.request, ["paused"])
                timer.start()
                outcome = job.run()
                timer.cancel()
                statuses.append(outcome.status)
                after = job.answers()
                job.close_file()
                assert after.items() >= before.items()       # nothing stored is lost or changed
                for text in before.values():                 # an answered item is never sent again
                    prompt = text[len("echo:"):]
                    assert sent[prompt] == sent_before[prompt]
                if outcome.status == "finished":
                    break
                assert outcome.status == "paused" and outcome.next_step == "Resume with: run the test plan again"
        assert statuses[-1] == "finished" and "paused" in statuses
        assert after == expected(path)
        # every answer the server gave was kept, the ones arriving after a pause too (keep_arrived)
        assert sorted(sent.values()) == [1] * 90


def test_a_failure_streak_ends_failed_with_the_next_step(tmp_path):
    path = tmp_path / "streak.duckdb"
    TablePlan.create(path, 30)
    with OfflineServer(responder=echo, faults=FaultPlan(rates={"500": 1.0})) as srv:
        job = TablePlan(path, [srv], concurrency=(1,), max_retries=0, failure_streak=3)
        outcome = job.run()
    assert outcome.status == "failed" and outcome.stop_reason == "server"
    assert outcome.next_step == "Fix the server problem, then run the test plan again."
    assert outcome.error and job.failures == 3 and outcome.done == 0
    assert job.con.execute("SELECT count(*), count(DISTINCT kind) FROM errors").fetchone() == (3, 1)
    assert job.statuses == ["running", "failed"]


def test_one_item_failing_too_often_ends_failed_even_between_successes(tmp_path, quick_retries):
    path = tmp_path / "item.duckdb"
    TablePlan.create(path, 6)
    doomed = "item 3: say something about the number 21"

    def fails_on_one(text: str, seed: int) -> str:
        if text == doomed:
            raise RuntimeError("this item always breaks the server")
        return echo(text, seed)

    with OfflineServer(responder=fails_on_one) as srv:
        job = TablePlan(path, [srv], concurrency=(2,), max_retries=0, failure_streak=1000)
        outcome = job.run()
    assert outcome.status == "failed" and outcome.stop_reason == "server" and outcome.done <= 5
    assert job.con.execute("SELECT item_id, count(*) FROM errors GROUP BY ALL").fetchall() == \
        [(3, runner.MAX_FAILURES_PER_ITEM)]


def test_answers_none_of_which_can_be_read_end_failed(tmp_path):
    path = tmp_path / "unreadable.duckdb"
    TablePlan.create(path, 40)
    with OfflineServer(responder=lambda text, seed: "I would rather not.") as srv:
        job = TablePlan(path, [srv], concurrency=(1,))
        outcome = job.run()
    assert outcome.status == "failed" and outcome.stop_reason == "unparseable"
    assert outcome.done == runner.UNREADABLE_CHECK and "I would rather not" in outcome.error


def test_each_lane_keeps_its_own_slots_full_and_no_more(tmp_path):
    path = tmp_path / "lanes.duckdb"
    TablePlan.create(path, 60, lanes=2)
    with OfflineServer(responder=echo, latency_s=0.05) as a, OfflineServer(responder=echo, latency_s=0.05) as b:
        job = TablePlan(path, [a, b], concurrency=(2, 5))
        assert job.run().status == "finished"
        assert (a.stats["max_in_flight"], b.stats["max_in_flight"]) == (2, 5)
    assert job.answers() == expected(path)


def test_the_judge_as_a_plan_rides_a_storm_and_its_cost_is_its_stored_verdicts(demo_pool, quick_retries, monkeypatch):
    from selfinstruct.judge import JudgeConfig, JudgeRunner, start_judge

    monkeypatch.setattr(runner, "MAX_FAILURES_PER_ITEM", 1000)
    faults = FaultPlan().set_rates({"500": 0.2, "503": 0.1}, seed=4)
    with OfflineServer(faults=faults) as srv:
        config = JudgeConfig(backend="openai-compatible", base_url=srv.base_url, model=DEFAULT_MODEL, structured="off",
                             price_per_m=[2.0, 6.0], max_retries=0, failure_streak=1000, concurrency=4)
        judge_run_id = start_judge(demo_pool, config, "pool")
        job = JudgeRunner(demo_pool, judge_run_id)
        outcome = job.run()
    verdicts = demo_pool.judge.verdicts(judge_run_id)
    assert outcome.status == "finished" and outcome.done == outcome.total == len(verdicts) > 20
    assert all(v["response"] for v in verdicts) and job.failures > 0
    assert outcome.cost_usd == pytest.approx(sum(v["cost_usd"] for v in verdicts)) and outcome.cost_usd > 0
    assert job.tokens == sum(v["prompt_tokens"] + v["completion_tokens"] for v in verdicts)
