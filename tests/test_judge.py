"""The model judge (issue 17): prompts and parsers, the offline judge with a known truth and error
rate, verdicts apart from labels, resume after a kill, failing plainly, the one-job rule.

Everything goes through real HTTP to the offline server with the real openai client."""
import json
import threading
import time
from collections import Counter

import pytest

from selfinstruct import parsing, prompts, quality
from selfinstruct.jobs import JobManager
from selfinstruct.judge import (JudgeConfig, JudgeRunner, active_judge, answer_rates, calibrate_run, estimate_judge,
                                judge_view, start_judge)
from selfinstruct.model import ANSWERS, QUESTIONS
from selfinstruct.offline import FaultPlan, OfflineServer, judge_answer, judge_mistakes, judge_reply, judge_truth
from selfinstruct.settings import RunConfig
from selfinstruct.control import active_run
from selfinstruct.store import Pool
from tests.conftest import kill_cli_after, run_cli

ITEM = ("Sort the numbers from smallest to largest.", "14, 3, 27\n8", "3, 8,\n14, 27")


def endpoint(server, **kw) -> JudgeConfig:
    return JudgeConfig(backend="openai-compatible", base_url=server.base_url, model="selfinstruct-demo", **kw)


def item_texts(pool, verdict) -> tuple[str, str, str]:
    row = pool.cursor().execute(
        "SELECT c.instruction, i.input, i.output FROM candidates c JOIN instances i ON i.id = ? WHERE c.id = ?",
        [verdict["instance_id"], verdict["candidate_id"]]).fetchone()
    return row


# -- prompts and parsers -----------------------------------------------------------------------------
@pytest.mark.parametrize("structured", [False, True])
def test_judge_prompt_is_versioned_and_reads_back_its_item(structured):
    prompt = prompts.build_judge_prompt(*ITEM, structured=structured)
    assert prompt.stage == prompts.STAGE_JUDGE
    assert prompt.version == prompts.JUDGE_VERSIONS["json" if structured else "text"]
    assert prompt.structured == structured
    if structured:
        assert prompt.schema == prompts.response_schema("judge")
        assert prompt.response_format()["json_schema"]["schema"]["required"] == [*QUESTIONS, "reason"]
        assert prompt.stop is None
    else:
        assert prompt.text.endswith("\nValid task:") and prompt.stop == ("\n\n",)
    payload = parsing.read_prompt(prompt.full_text())
    assert payload.stage == "judge" and payload.structured == structured
    assert payload.item == {"instruction": ITEM[0], "input": ITEM[1], "output": ITEM[2]}
    empty = parsing.read_prompt(prompts.build_judge_prompt("Name a colour.", "", "Blue", structured=structured).full_text())
    assert empty.item == {"instruction": "Name a colour.", "input": "", "output": "Blue"}
    with pytest.raises(ValueError):
        prompts.build_judge_prompt("  ", "", "x")


def test_judge_schema_allows_the_three_answers_only():
    schema = prompts.response_schema("judge")
    for q in QUESTIONS:
        assert schema["properties"][q]["enum"] == list(ANSWERS)
    assert schema["properties"]["reason"] == {"type": "string"} and schema["additionalProperties"] is False


def test_parsers_round_trip_both_layouts():
    answers = {"valid_task": "yes", "input_ok": "no", "output_ok": "unsure"}
    text = prompts.render_judge_answer(answers, "The input is a placeholder.")
    assert parsing.parse_judge(text).answers == answers
    assert parsing.parse_judge(text).reason == "The input is a placeholder."
    as_json = json.dumps({**answers, "reason": "r"})
    assert parsing.parse_judge_json(as_json).answers == answers
    # parse_answer picks the reader from the stored prompt, under the registered version
    assert parsing.PARSER_VERSIONS["judge"] == "judge-parse-v1" and parsing.has_parser("judge", "judge-parse-v1")
    for structured, answer in ((False, text), (True, as_json)):
        prompt = prompts.build_judge_prompt(*ITEM, structured=structured)
        assert parsing.parse_answer("judge", answer, prompt, version="judge-parse-v1").answers == answers
    # the JSON reader never reads the text layout, and the other way round
    assert not parsing.parse_answer("judge", text, prompts.build_judge_prompt(*ITEM, structured=True)).ok


def test_text_parser_is_forgiving_in():
    # a completion continuing the open label, markdown, bullets, other spellings, a reason on two lines
    completion = " Yes\nInput appropriate: No.\nOutput acceptable: not sure\nReason: the input\nis empty"
    v = parsing.parse_judge(completion)
    assert v.answers == {"valid_task": "yes", "input_ok": "no", "output_ok": "unsure"}
    assert v.reason == "the input is empty"
    chatty = ("**Valid task:** yes\n- **Input appropriate**: yes - it gives the list\n"
              "- Output acceptable: **No**, 27 is missing\n")
    assert parsing.parse_judge(chatty).answers == {"valid_task": "yes", "input_ok": "yes", "output_ok": "no"}
    assert parsing.parse_judge("1. Valid: Y\n2. Input OK: N\n3. Output correct: uncertain").answers == {
        "valid_task": "yes", "input_ok": "no", "output_ok": "unsure"}


@pytest.mark.parametrize("answer, why", [
    ("Valid task: yes\nInput appropriate: yes", "no answer for output_ok"),
    ("Valid task: yes\nInput appropriate: yes\nOutput acceptable: probably fine", "no yes/no/unsure for output_ok"),
    ("Valid task: yes\nValid task: no\nInput appropriate: yes\nOutput acceptable: yes", "two different answers"),
    ("I think this item is fine overall.", "no answer for valid_task"),
    ("", "no answer"),
])
def test_text_parser_is_strict_out(answer, why):
    v = parsing.parse_judge(answer)
    assert not v.ok and why in v.unparseable
    assert v.answers == {q: None for q in QUESTIONS}      # never a guess, not even a partial one


@pytest.mark.parametrize("answer, why", [
    ('{"valid_task": "yes", "input_ok": "maybe", "output_ok": "no", "reason": ""}', "does not match the schema"),
    ('{"valid_task": "yes", "input_ok": "no", "output_ok": "no"}', "does not match the schema"),
    ("Valid task: yes", "not JSON"),
    ('```json\n{"valid_task": "yes"}\n```', "not JSON"),
])
def test_json_parser_is_strict(answer, why):
    v = parsing.parse_judge_json(answer)
    assert not v.ok and v.unparseable.startswith(why) and v.answers == {q: None for q in QUESTIONS}
    cut = parsing.parse_judge_json('{"valid_task": "ye', finish_reason="length")
    assert cut.unparseable.startswith(parsing.TRUNCATED)


# -- the offline judge ----------------------------------------------------------------------------------
def test_offline_truth_is_stable_and_near_the_papers_rates():
    assert judge_truth(*ITEM) == judge_truth("  Sort the numbers from smallest to largest. ", "14, 3, 27 8",
                                             "3, 8, 14, 27")      # whitespace does not matter
    assert judge_truth("Name a colour.", "", "Blue") == judge_truth("Name a colour.", "(none)", "Blue")
    items = [(f"Task number {k}.", f"input {k}", f"output {k}") for k in range(4000)]
    truths = [judge_truth(*item) for item in items]
    for q, rate in (("valid_task", 0.92), ("input_ok", 0.79), ("output_ok", 0.58)):
        assert abs(sum(t[q] == "yes" for t in truths) / len(truths) - rate) < 0.03
    wrong = [judge_mistakes(*item, error=0.2, seed=5) for item in items]
    assert abs(sum(w[q] for w in wrong for q in QUESTIONS) / (3 * len(items)) - 0.2) < 0.02
    assert judge_answer(*ITEM, error=0.0) == judge_truth(*ITEM)
    assert judge_answer(*ITEM, error=1.0) == {q: {"yes": "no", "no": "yes"}[a] for q, a in judge_truth(*ITEM).items()}


@pytest.mark.parametrize("mode, structured", [("chat", False), ("chat", True), ("completion", False)])
def test_offline_server_answers_both_layouts(mode, structured):
    import asyncio

    from selfinstruct.llm import LLMClient, LLMConfig, Sampling

    prompt = prompts.build_judge_prompt(*ITEM, structured=structured)
    with OfflineServer(judge_error=0.5, judge_seed=3) as srv:
        client = LLMClient(LLMConfig(base_url=srv.base_url, model="selfinstruct-demo", mode=mode))
        answer = asyncio.run(client.complete(prompt, Sampling(temperature=0, max_tokens=256)))
    if structured:
        json.loads(answer.text)
    verdict = parsing.parse_answer("judge", answer.text, prompt)
    assert verdict.answers == judge_answer(*ITEM, error=0.5, seed=3)
    assert judge_reply("not a judge prompt") is None


# -- judge runs against the offline server ------------------------------------------------------------------
@pytest.mark.parametrize("mode, structured", [("chat", "off"), ("chat", "on"), ("completion", "auto")])
def test_a_perfect_judge_gives_the_truth_for_every_item(demo_pool, mode, structured):
    with OfflineServer(judge_error=0.0) as srv:
        config = endpoint(srv, mode=mode, structured=structured)
        estimate = estimate_judge(demo_pool, config, "pool")
        judge_run_id = start_judge(demo_pool, config, "pool")
        outcome = JudgeRunner(demo_pool, judge_run_id).run()
    if mode == "chat":   # the offline server counts characters / 4 of what it is sent, as the estimate does
        assert estimate.items == outcome.total
        assert estimate.prompt_tokens == demo_pool.judge.usage(judge_run_id)["prompt_tokens"]
    assert outcome.status == "finished" and outcome.done == outcome.total > 50 and outcome.unparseable == 0
    verdicts = demo_pool.judge.verdicts(judge_run_id)
    for v in verdicts:
        assert {q: v[q] for q in QUESTIONS} == judge_truth(*item_texts(demo_pool, v))
        assert v["parser_version"] == "judge-parse-v1" and v["answered_at"] is not None
        assert v["structured"] == (True if (mode, structured) == ("chat", "on") else None)
        assert v["prompt_version"] == ("judge-json-v1" if v["structured"] else "judge-v1")
        assert v["prompt"] and v["response"] and v["reason"]
    # the pool scope: every accepted candidate with a kept instance, its first one, once
    assert len({v["candidate_id"] for v in verdicts}) == len(verdicts) == len(demo_pool.judge.pool_items())
    assert demo_pool.judge.run(judge_run_id)["status"] == "finished"


def test_the_measured_error_rate_is_the_servers(demo_pool):
    with OfflineServer(judge_error=0.2, judge_seed=11) as srv:
        judge_run_id = start_judge(demo_pool, endpoint(srv, structured="on", concurrency=4), "pool")
        assert JudgeRunner(demo_pool, judge_run_id).run().status == "finished"
    wrong = total = 0
    for v in demo_pool.judge.verdicts(judge_run_id):
        texts = item_texts(demo_pool, v)
        assert {q: v[q] for q in QUESTIONS} == judge_answer(*texts, error=0.2, seed=11)   # the known mistakes
        truth = judge_truth(*texts)
        wrong += sum(v[q] != truth[q] for q in QUESTIONS)
        total += len(QUESTIONS)
    # ~100 items x 3 questions: the binomial standard deviation is about 0.023
    assert total >= 250 and abs(wrong / total - 0.2) < 0.07
    rates = answer_rates(demo_pool, judge_run_id)
    assert all(rates[q]["n"] == total // 3 for q in QUESTIONS)


def test_verdicts_are_stored_apart_from_labels(demo_pool):
    study = quality.create_study(demo_pool, "judge vs people", size=12, seed=4).study_id
    items = demo_pool.judge.study_items(study)
    for k, (_, _, item_id) in enumerate(items[:8]):
        truth = judge_truth(*demo_pool.cursor().execute(
            "SELECT c.instruction, i.input, i.output FROM study_items si JOIN candidates c ON c.id = si.candidate_id "
            "JOIN instances i ON i.id = si.instance_id WHERE si.id = ?", [item_id]).fetchone())
        answers = dict(truth) if k < 6 else {q: "unsure" for q in QUESTIONS}
        demo_pool.quality.save_label(study, item_id, "ann", **answers)

    def human_side():
        labels = demo_pool.cursor().execute("SELECT * FROM labels ORDER BY id").fetchall()
        results = quality.study_results(demo_pool, study)
        return (labels, demo_pool.counts().labeled, results.labeled, results.annotators,
                results.overall.to_dict(), demo_pool.quality.invalid_candidate_ids(), demo_pool.quality.invalid_instance_ids())

    before = human_side()
    with OfflineServer() as srv:
        judge_run_id = start_judge(demo_pool, endpoint(srv, structured="off"), "study", study)
        assert JudgeRunner(demo_pool, judge_run_id).run().status == "finished"
    assert human_side() == before                                  # nothing a person sees has changed
    verdicts = demo_pool.judge.verdicts(judge_run_id)
    assert [v["study_item_id"] for v in verdicts] == [item_id for _, _, item_id in items]
    latest = demo_pool.judge.latest_verdicts(study_id=study)
    assert [r["study_item_id"] for r in latest] == [item_id for _, _, item_id in items]
    assert demo_pool.judge.latest_verdicts()                      # the pool-wide view
    view = judge_view(demo_pool, judge_run_id)
    assert view.progress["answered"] == view.progress["total"] == len(items) and view.run["scope"] == "study"
    assert view.calibration is not None and view.resume_command == f"selfinstruct judge --resume {judge_run_id}"
    calibrated = calibrate_run(demo_pool, judge_run_id)     # calibration.py's figures, from the same rows
    for q in QUESTIONS:
        cal = calibrated[q]
        # 6 items labeled with the truth (a perfect judge agrees on all), 2 unsure ones left out,
        # and the study items nobody labeled counted too (the page once said "left out: none")
        unlabeled = len(items) - 8
        assert unlabeled > 0 and cal.left_out["unlabeled"] == unlabeled
        assert cal.items == 6 and cal.left_out["unsure"] == 2 and cal.left_out_total == 2 + unlabeled
        assert cal.confusion["yes"]["yes"] + cal.confusion["no"]["no"] == 6
        assert cal.confusion["yes"]["no"] == cal.confusion["no"]["yes"] == cal.confusion["unsure"]["yes"] == 0


def test_cli_prints_the_agreement_with_people_for_a_labeled_study(demo_db_path):
    with Pool.open(demo_db_path) as pool:
        study = quality.create_study(pool, "s", size=5, seed=2).study_id
        for _, _, item_id in pool.judge.study_items(study):
            pool.quality.save_label(study, item_id, "ann", valid_task="yes", input_ok="no", output_ok="yes")
    done = run_cli("judge", "--study", str(study), "--offline", "--structured", "off", "--db", str(demo_db_path))
    assert done.returncode == 0, done.stderr
    assert "5/5 items judged" in done.stdout and "Against people's majority answer" in done.stdout
    assert "on 5 item(s)" in done.stdout


def test_unreadable_answers_are_stored_with_a_reason_and_a_judge_that_never_answers_fails(demo_pool):
    def responder(text, seed):
        return "This looks like a reasonable item to me." if seed % 5 else "Valid task: yes"

    with OfflineServer(responder=responder, judge_answers=False) as srv:
        judge_run_id = start_judge(demo_pool, endpoint(srv, structured="off", concurrency=1), "pool", limit=30)
        outcome = JudgeRunner(demo_pool, judge_run_id).run()
    assert outcome.status == "failed" and outcome.stop_reason == "unparseable"
    assert "--structured on" in outcome.next_step and "selfinstruct judge --resume" in outcome.next_step
    answered = [v for v in demo_pool.judge.verdicts(judge_run_id) if v["response"] is not None]
    assert len(answered) == 10 and all(v["unparseable"] and v["valid_task"] is None for v in answered)


# -- resume, failures, the one-job rule ------------------------------------------------------------------------
def test_a_killed_judge_resumes_without_sending_an_answered_item_again(demo_db_path):
    sent: Counter = Counter()
    lock = threading.Lock()

    def responder(text, seed):   # the offline judge, counting what each item is asked
        item = parsing.read_prompt(text).item
        with lock:
            sent[tuple(" ".join(t.split()) for t in item.values())] += 1
        return judge_reply(text)

    with OfflineServer(responder=responder, judge_answers=False, latency_s=0.03) as srv:
        args = ["judge", "--pool", "--base-url", srv.base_url, "--model", "selfinstruct-demo", "--structured", "off",
                "--concurrency", "2", "--db", str(demo_db_path)]
        kill_cli_after(args, srv.base_url, 12)
        with Pool.open(demo_db_path) as pool:
            before = {v["id"]: item_texts(pool, v) for v in pool.judge.verdicts(1) if v["response"] is not None}
            total = pool.judge.progress(1)["total"]
        assert 10 <= len(before) < total
        with lock:
            sent_before = sum(sent.values())
        resumed = run_cli("judge", "--resume", "--db", str(demo_db_path))
        assert resumed.returncode == 0, resumed.stderr
        assert "Judge run 1 finished" in resumed.stdout and "valid task" in resumed.stdout
    with Pool.open(demo_db_path) as pool:
        verdicts = pool.judge.verdicts(1)
        assert pool.judge.run(1)["status"] == "finished" and len(verdicts) == total
        assert len({v["position"] for v in verdicts}) == total      # every item once, none duplicated
        assert all(v["response"] is not None and v["unparseable"] is None for v in verdicts)
        for v in verdicts:
            assert {q: v[q] for q in QUESTIONS} == judge_truth(*item_texts(pool, v))
        # an item answered before the kill was never asked again; at most the two in flight were lost
        for texts in before.values():
            assert sent[tuple(" ".join(t.split()) for t in texts)] == 1
        assert sum(sent.values()) - total <= 2 + (sent_before - len(before))


def test_a_failing_endpoint_ends_failed_with_exit_2_and_the_resume_command(demo_db_path):
    with OfflineServer(faults=FaultPlan(rates={"500": 1.0})) as srv:
        done = run_cli("judge", "--pool", "--base-url", srv.base_url, "--model", "selfinstruct-demo",
                       "--structured", "off", "--max-retries", "0", "--db", str(demo_db_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Judge run 1 failed" in done.stderr and "Resume with: selfinstruct judge --resume 1" in done.stderr
    assert "Traceback" not in done.stderr
    with Pool.open(demo_db_path) as pool:
        run = pool.judge.run(1)
        assert run["status"] == "failed" and run["stop_reason"] == "server" and run["finished_at"] is not None
        progress = pool.judge.progress(1)
        assert progress["answered"] == 0 and progress["failing"] >= 1
    # the endpoint works again: resume finishes the run
    with OfflineServer() as srv:
        done = run_cli("judge", "--resume", "1", "--base-url", srv.base_url, "--db", str(demo_db_path))
    assert done.returncode == 0, done.stderr
    with Pool.open(demo_db_path) as pool:
        assert pool.judge.run(1)["status"] == "finished" and pool.judge.progress(1)["pending"] == 0


def test_fatal_errors_fail_at_once(demo_pool):
    with OfflineServer() as srv:
        judge_run_id = start_judge(demo_pool, JudgeConfig(backend="openai-compatible", base_url=srv.base_url,
                                                          model="no-such-model", structured="off"), "pool")
        outcome = JudgeRunner(demo_pool, judge_run_id).run()
    assert outcome.status == "failed" and outcome.stop_reason == "model_not_found"
    assert "--model" in outcome.next_step and outcome.done == 0


def test_one_job_per_pool_with_generation(demo_pool):
    with OfflineServer(latency_s=0.2) as srv:
        manager = JobManager(demo_pool)
        run_id = manager.start(RunConfig(base_url=srv.base_url, backend="openai-compatible", rounds=5, seed=3))
        with pytest.raises(RuntimeError, match=f"Run {run_id}"):
            manager.start_judge(endpoint(srv), "pool")
        deadline = time.time() + 10
        while active_run(demo_pool) is None and time.time() < deadline:   # the worker thread has begun
            time.sleep(0.01)
        with pytest.raises(RuntimeError, match=f"Run {run_id}"):
            JobManager(demo_pool).start_judge(endpoint(srv), "pool")     # another manager of the same pool
        manager.stop()
        assert manager.wait(30)

        judge_run_id = manager.start_judge(endpoint(srv, concurrency=1, structured="off"), "pool")
        deadline = time.time() + 10
        while (manager.status().done < 1 or active_judge(demo_pool) is None) and time.time() < deadline:
            time.sleep(0.05)
        status = manager.status()
        assert status.kind == "judge" and status.busy
        assert status.line().startswith(f"Judge run {judge_run_id}: ") and status.line().endswith(
            f"/{status.total} items")
        with pytest.raises(RuntimeError, match=f"Judge run {judge_run_id}"):
            manager.start(RunConfig(base_url=srv.base_url, backend="openai-compatible", rounds=1))
        other = JobManager(demo_pool)
        assert other.status().kind == "judge"
        with pytest.raises(RuntimeError, match=f"Judge run {judge_run_id}"):
            other.resume(run_id)
        manager.pause()
        assert manager.wait(30)
        assert demo_pool.judge.run(judge_run_id)["status"] == "paused"
        assert [r["id"] for r in manager.resumable_judge_runs()] == [judge_run_id]
        manager.resume_judge(judge_run_id, overrides={"concurrency": 8})
        assert manager.wait(60)
    status = manager.status()
    assert status.outcome.status == "finished" and status.line() == (
        f"Judge run {judge_run_id} finished: {status.total}/{status.total} items")


def test_cli_help_and_refusals(demo_db_path):
    helped = run_cli("judge", "--help")
    assert helped.returncode == 0 and "examples:" in helped.stdout and "selfinstruct judge --study 1" in helped.stdout
    nothing = run_cli("judge", "--offline", "--db", str(demo_db_path))
    assert nothing.returncode == 2 and "--study ID" in nothing.stderr
    no_study = run_cli("judge", "--study", "99", "--offline", "--db", str(demo_db_path))
    assert no_study.returncode == 2 and "There is no study 99" in no_study.stderr
    offline = run_cli("judge", "--pool", "--offline", "--limit", "5", "--db", str(demo_db_path))
    assert offline.returncode == 0, offline.stderr
    assert "5/5 items judged" in offline.stdout and "input appropriate" in offline.stdout


def test_ctrl_c_exits_130_with_the_resume_command(demo_db_path):
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, served_completions

    with OfflineServer(latency_s=0.05) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "selfinstruct", "judge", "--pool", "--base-url", srv.base_url,
                                 "--model", "selfinstruct-demo", "--structured", "off", "--concurrency", "1",
                                 "--db", str(demo_db_path)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while served_completions(srv.base_url) < 5 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "Resume with: selfinstruct judge --resume 1" in err
    with Pool.open(demo_db_path) as pool:
        assert pool.judge.run(1)["status"] == "interrupted" and pool.judge.progress(1)["answered"] >= 1
