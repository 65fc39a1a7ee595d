"""The paper's evaluation of models (issue 17): prompts and parsers, the offline server's known
answers and rater, collection over real HTTP with resume after SIGKILL, blind per-rater order,
ratings per rater, results against hand-computed shares, agreement against calibration.py, the
judge's pre-ratings kept apart from people, one job per pool, the CLI."""
import threading
import time
from collections import Counter

import pytest

from selfinstruct import calibration, evaluate, parsing, prompts
from selfinstruct.evaluate import EvalModel, EvalRunner
from selfinstruct.judge import JudgeConfig
from selfinstruct.offline import (OfflineServer, eval_answer_level, eval_answer_text, eval_rating_answer, eval_reply,
                                  eval_skill, eval_truth)
from selfinstruct.quality import wilson_interval
from selfinstruct.store import Pool
from tests.conftest import kill_cli_after, run_cli, shared_file

INSTRUCTIONS = [{"instruction": f"Write a short note number {k} about {topic}.", "input": inp, "source": f"t{k}"}
                for k, (topic, inp) in enumerate([("tea", ""), ("rain", "It rained all day."), ("cats", ""),
                                                  ("maps", "A map of Lisbon"), ("bread", ""), ("snow", ""),
                                                  ("trains", "The 8:15 was late."), ("bees", ""), ("ink", ""),
                                                  ("clocks", "")])]


def http_models(server, names=("base", "tuned")) -> list[EvalModel]:
    return [EvalModel(backend="openai-compatible", base_url=server.base_url, model=n, concurrency=2) for n in names]


def collected(pool, server, instructions=INSTRUCTIONS, names=("base", "tuned")) -> int:
    evaluation_id = evaluate.create_evaluation(pool, http_models(server, names), instructions, name="t")
    outcome = EvalRunner(pool, evaluation_id).run()
    assert outcome.status == "finished", outcome
    return evaluation_id


# -- prompts and parsers -----------------------------------------------------------------------------
@pytest.mark.parametrize("completion", [False, True])
def test_the_answer_prompt_is_the_request_as_the_users_turn(completion):
    prompt = prompts.build_eval_answer_prompt("Name a color.", "sky", completion=completion)
    assert prompt.version == prompts.EVAL_ANSWER_VERSION and not prompt.structured
    text = prompt.text if completion else prompt.full_text()
    assert parsing.read_eval_answer_prompt(text) == "Name a color.\n\nsky"
    if not completion:
        assert prompt.as_messages()[-1] == {"role": "user", "content": "Name a color.\n\nsky"}
    assert parsing.read_eval_answer_prompt(prompts.build_judge_prompt("a b c", "", "x").full_text()) is None


@pytest.mark.parametrize("structured", [False, True])
def test_the_rating_prompt_is_versioned_and_reads_back_its_item(structured):
    prompt = prompts.build_eval_rate_prompt("Sum\nthe numbers.", "1, 2", "3\nDone.", structured=structured)
    assert prompt.version == prompts.EVAL_RATE_VERSIONS["json" if structured else "text"]
    assert prompt.structured == structured
    item = parsing.read_eval_rate_prompt(prompt.full_text())
    assert (item["instruction"], item["input"], item["answer"], item["structured"]) == \
        ("Sum\nthe numbers.", "1, 2", "3\nDone.", structured)
    if structured:
        assert prompt.schema["properties"]["rating"]["enum"] == ["A", "B", "C", "D"]
        assert prompt.response_format()["json_schema"]["strict"] is True


@pytest.mark.parametrize("text,rating,reason", [
    (" B\nReason: one slip.", "B", "one slip."),
    ("Rating: a\nReason: fine", "A", "fine"),
    ("**Rating:** D", "D", ""),
    ("grade = C", "C", ""),
])
def test_the_rating_parser_reads_the_layouts(text, rating, reason):
    got = parsing.parse_eval_rating(text)
    assert (got.rating, got.reason, got.ok) == (rating, reason, True)


def test_the_rating_parsers_never_guess():
    assert not parsing.parse_eval_rating("I think it is decent overall.").ok
    assert not parsing.parse_eval_rating("a").ok                        # a lone letter must be upper case
    assert parsing.parse_eval_rating_json('{"rating": "B", "reason": "ok"}').rating == "B"
    for bad in ('{"rating": "E", "reason": "x"}', '{"rating": "A"}', "Rating: A"):
        assert not parsing.parse_eval_rating_json(bad).ok


# -- the offline server's evaluation -------------------------------------------------------------------
def test_offline_answers_carry_their_level_and_better_models_answer_better():
    assert eval_skill("tuned") > eval_skill("base")
    levels = {m: Counter(eval_truth(m, f"Task {k}: explain idea {k * 7}.") for k in range(600)) for m in ("base", "tuned")}
    acceptable = {m: (c["A"] + c["B"]) / 600 for m, c in levels.items()}
    assert acceptable["tuned"] > acceptable["base"] + 0.1
    for level in "ABCD":
        assert eval_answer_level(eval_answer_text(level, "Write a poem about the sea, in four lines.")) == level
    assert eval_answer_level("Some real model's answer.") is None


def test_the_offline_rater_has_a_known_error_rate():
    items = [(f"Do task {k}.", "", eval_answer_text("ABCD"[k % 4], f"Do task {k}.")) for k in range(4000)]
    assert all(eval_rating_answer(*item) == "ABCD"[k % 4] for k, item in enumerate(items))
    wrong = sum(eval_rating_answer(*item, error=0.2, seed=3) != "ABCD"[k % 4] for k, item in enumerate(items))
    assert abs(wrong / len(items) - 0.2) < 0.025
    rate_prompt = prompts.build_eval_rate_prompt(*items[1])
    assert eval_reply(rate_prompt.full_text(), "any").startswith(" B\n")          # continues the open "Rating:"


# -- collecting -------------------------------------------------------------------------------------------
def test_answers_are_collected_over_http_each_with_its_known_level(pool):
    with OfflineServer(model_names=("base", "tuned")) as server:
        evaluation_id = collected(pool, server)
    answers = pool.evaluations.answers(evaluation_id)
    assert len(answers) == 2 * len(INSTRUCTIONS)
    names = [m.model for m in evaluate.models_of(pool, evaluation_id)]
    by_id = {i["id"]: i for i in pool.evaluations.instructions(evaluation_id)}
    for a in answers:
        instruction = by_id[a["instruction_id"]]
        assert a["prompt_version"] == prompts.EVAL_ANSWER_VERSION
        assert a["prompt_tokens"] > 0 and a["completion_tokens"] > 0 and a["latency_s"] is not None
        assert eval_answer_level(a["response"]) == eval_truth(names[a["model_index"]], instruction["instruction"],
                                                              instruction["input"])
    config = pool.evaluations.get(evaluation_id)["config"]
    assert config["sampling"]["temperature"] == 0.0
    assert all("api_key" not in m for m in config["models"])
    assert pool.evaluations.get(evaluation_id)["status"] == "finished"


def test_offline_models_share_one_offline_server_of_the_run(pool):
    evaluation_id = evaluate.create_evaluation(
        pool, [evaluate.model_from_spec("offline:base"), evaluate.model_from_spec("offline:tuned")], INSTRUCTIONS[:4])
    assert EvalRunner(pool, evaluation_id).run().status == "finished"
    levels = [eval_answer_level(a["response"]) for a in pool.evaluations.answers(evaluation_id)]
    assert levels == [eval_truth(("base", "tuned")[k % 2], INSTRUCTIONS[k // 2]["instruction"],
                                 INSTRUCTIONS[k // 2]["input"]) for k in range(8)]


def test_a_killed_collection_resumes_without_sending_an_answered_request_again(db_path):
    sent: Counter = Counter()
    lock = threading.Lock()

    def responder(text, seed):     # counts each request (both models send the same text)
        request = parsing.read_eval_answer_prompt(text)
        with lock:
            sent[request] += 1
        return eval_answer_text("B", request)

    instructions = [{"instruction": f"Explain idea number {k} in one line.", "input": ""} for k in range(30)]
    with OfflineServer(responder=responder, judge_answers=False, latency_s=0.03, model_names=("base", "tuned")) as srv:
        with Pool.open(db_path) as pool:
            evaluation_id = evaluate.create_evaluation(pool, http_models(srv), instructions)
        kill_cli_after(["evaluate", "collect", str(evaluation_id), "--db", str(db_path)], srv.base_url, 14)
        with Pool.open(db_path) as pool:
            answers = pool.evaluations.answers(evaluation_id)
            before = [a for a in answers if a["response"] is not None]
            total = len(answers)
            texts = {i["id"]: prompts.eval_request_text(i["instruction"], i["input"])
                     for i in pool.evaluations.instructions(evaluation_id)}
        assert 10 <= len(before) < total
        with lock:
            sent_before = sum(sent.values())
        resumed = run_cli("evaluate", "collect", str(evaluation_id), "--resume", "--db", str(db_path))
        assert resumed.returncode == 0, resumed.stderr
        assert f"Evaluation {evaluation_id} finished: {total}/{total} answers" in resumed.stdout
    with Pool.open(db_path) as pool:
        answers = pool.evaluations.answers(evaluation_id)
        assert all(a["response"] for a in answers) and len(answers) == total
        assert len({(a["instruction_id"], a["model_index"]) for a in answers}) == total
    done_before = Counter(a["instruction_id"] for a in before)
    for instruction_id, n in done_before.items():
        if n == 2:        # both answers stored before the kill: the request was never sent again
            assert sent[texts[instruction_id]] == 2
    assert sum(sent.values()) - total <= 4 + (sent_before - len(before))      # at most those in flight were lost


def test_a_failing_endpoint_ends_failed_with_exit_2_and_how_to_resume(db_path):
    from selfinstruct.offline import FaultPlan

    with OfflineServer(faults=FaultPlan(rates={"500": 1.0}), model_names=("base", "tuned")) as srv:
        with Pool.open(db_path) as pool:
            models = [EvalModel(backend="openai-compatible", base_url=srv.base_url, model=n, max_retries=0)
                      for n in ("base", "tuned")]
            evaluation_id = evaluate.create_evaluation(pool, models, INSTRUCTIONS[:3])
        done = run_cli("evaluate", "collect", str(evaluation_id), "--db", str(db_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Evaluation {evaluation_id} failed" in done.stderr
    assert f"Resume with: selfinstruct evaluate collect {evaluation_id}" in done.stderr
    assert "Traceback" not in done.stderr
    with Pool.open(db_path) as pool:
        assert pool.evaluations.get(evaluation_id)["status"] == "failed"
        assert pool.evaluations.progress(evaluation_id)["answered"] == 0


# -- rating, blind -------------------------------------------------------------------------------------------
def test_the_blind_order_is_stable_for_a_rater_and_differs_between_raters():
    orders = {r: [tuple(evaluate.blind_order(1, r, i, 3)) for i in range(40)] for r in ("ann", "bob")}
    assert orders["ann"] == [tuple(evaluate.blind_order(1, "ann", i, 3)) for i in range(40)]
    assert orders["ann"] != orders["bob"]
    assert all(sorted(o) == [0, 1, 2] for o in orders["ann"])
    assert len(set(orders["ann"])) > 3                       # not one fixed order for every instruction
    assert evaluate.blind_order(1, "Ann ", 0, 3) == evaluate.blind_order(1, "ann", 0, 3)


def test_a_blind_item_names_no_model_and_ratings_are_one_per_rater(pool):
    with OfflineServer(model_names=("base", "tuned")) as server:
        evaluation_id = collected(pool, server, INSTRUCTIONS[:3])
    first = pool.evaluations.instructions(evaluation_id)[0]["id"]
    item = evaluate.blind_item(pool, evaluation_id, "ann", first)
    assert [a.slot for a in item.answers] == [1, 2]
    assert "model" not in repr(item) and "base" not in repr(item) and "tuned" not in repr(item)
    assert [a.answer_id for a in item.answers] == [
        [a["id"] for a in pool.evaluations.answers(evaluation_id) if a["instruction_id"] == first][m]
        for m in evaluate.blind_order(evaluation_id, "ann", first, 2)]
    evaluate.rate(pool, evaluation_id, item.answers[0].answer_id, "ann", "C")
    evaluate.rate(pool, evaluation_id, item.answers[0].answer_id, "ann", "A")        # changes her rating
    evaluate.rate(pool, evaluation_id, item.answers[0].answer_id, "bob", "D")
    rows = pool.evaluations.ratings(evaluation_id)
    assert sorted((r["rater"], r["rating"]) for r in rows) == [("ann", "A"), ("bob", "D")]
    assert evaluate.blind_item(pool, evaluation_id, "ann", first).answers[0].rating == "A"
    queue = evaluate.rating_queue(pool, evaluation_id, "ann")
    assert queue["todo"][0] == first and queue["rated"] == 0
    evaluate.rate(pool, evaluation_id, item.answers[1].answer_id, "ann", "B")
    assert evaluate.rating_queue(pool, evaluation_id, "ann")["rated"] == 1
    with pytest.raises(ValueError):
        evaluate.rate(pool, evaluation_id, item.answers[1].answer_id, "ann", "E")


def test_concurrent_saves_keep_one_rating_per_rater_per_answer(pool):
    with OfflineServer(model_names=("base", "tuned")) as server:
        evaluation_id = collected(pool, server, INSTRUCTIONS[:1])
    answer_id = pool.evaluations.answers(evaluation_id)[0]["id"]
    threads = [threading.Thread(target=evaluate.rate, args=(pool, evaluation_id, answer_id, "ann", "ABCD"[k % 4]))
               for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pool.evaluations.ratings(evaluation_id, rater="ann")) == 1


# -- results ---------------------------------------------------------------------------------------------------
def rate_all(pool, evaluation_id, table: dict[str, list[str]]) -> None:
    """table: rater -> one rating per answer, in (instruction, model) order."""
    answers = pool.evaluations.answers(evaluation_id)
    for rater, ratings in table.items():
        for answer, rating in zip(answers, ratings):
            if rating:
                evaluate.rate(pool, evaluation_id, answer["id"], rater, rating)


def test_results_equal_hand_computed_shares_and_agreement_equals_calibrations(pool):
    with OfflineServer(model_names=("base", "tuned")) as server:
        evaluation_id = collected(pool, server, INSTRUCTIONS[:5])
    # answers in order: (i0 base, i0 tuned, i1 base, ...)
    ann = ["A", "B", "C", "A", "D", "A", "B", "B", "C", "A"]
    bob = ["B", "B", "C", "A", "D", "B", "A", "B", "D", "A"]
    rate_all(pool, evaluation_id, {"ann": ann, "bob": bob})
    res = evaluate.results(pool, evaluation_id)
    # two ratings: the worse of the two is the median ("the worse middle one")
    median = [max(a, b) for a, b in zip(ann, bob)]
    for index, model in enumerate(res.models):
        mine = median[index::2]
        assert model.rated == 5
        for level in "ABCD":
            share = model.levels[level]
            assert share.count == mine.count(level) and share.share == mine.count(level) / 5
            if share.count:
                assert (share.low, share.high) == wilson_interval(mine.count(level), 5)
        ab = sum(r in "AB" for r in mine)
        assert model.acceptable.count == ab and (model.acceptable.low, model.acceptable.high) == wilson_interval(ab, 5)
    assert res.raters == ["ann", "bob"]
    assert res.agreement == calibration.weighted_kappa(list(zip(ann, bob)))
    assert res.agreement.method == "weighted kappa (linear)"
    # a third rater: Krippendorff's alpha (ordinal) over every answer
    cat = ["A", "B", "B", "A", "D", "A", "B", "C", None, "A"]
    rate_all(pool, evaluation_id, {"cat": cat})
    res = evaluate.results(pool, evaluation_id)
    ids = [a["id"] for a in pool.evaluations.answers(evaluation_id)]
    expected = calibration.krippendorff_alpha(calibration.unit_ratings(
        {r: {i: v for i, v in zip(ids, t) if v} for r, t in (("ann", ann), ("bob", bob), ("cat", cat))}))
    assert res.agreement == expected and res.agreement.method == "Krippendorff's alpha (ordinal)"
    assert evaluate.people_rating(["A", "C", "B"]) == "B" and evaluate.people_rating(["A", "D"]) == "D"
    table = evaluate.results_table(res)
    assert {r["model"] for r in table} == {"base", "tuned"} and len(table) == 8


def test_the_judge_pre_rates_apart_from_people_and_is_calibrated_against_them(pool):
    with OfflineServer(model_names=("base", "tuned"), judge_error=0.3, judge_seed=5) as server:
        evaluation_id = collected(pool, server, INSTRUCTIONS)
        judge = JudgeConfig(backend="openai-compatible", base_url=server.base_url, model="base")
        assert evaluate.plan_prerating(pool, evaluation_id, judge) == 20
        outcome = EvalRunner(pool, evaluation_id, task=evaluate.PRERATE).run()
    assert outcome.status == "finished" and outcome.done == 20
    assert pool.evaluations.ratings(evaluation_id) == []                        # never a person's rating
    prerates = pool.evaluations.prerates(evaluation_id)
    answers = {a["id"]: a for a in pool.evaluations.answers(evaluation_id)}
    texts = {i["id"]: i for i in pool.evaluations.instructions(evaluation_id)}
    for p in prerates:
        a = answers[p["answer_id"]]
        i = texts[a["instruction_id"]]
        assert p["structured"] is True and p["prompt_version"] == prompts.EVAL_RATE_VERSIONS["json"]
        assert p["rating"] == eval_rating_answer(i["instruction"], i["input"], a["response"], error=0.3, seed=5)
    truth = {a_id: eval_answer_level(a["response"]) for a_id, a in answers.items()}
    rate_all(pool, evaluation_id, {"ann": [truth[a] for a in answers]})
    res = evaluate.results(pool, evaluation_id)
    assert res.raters == ["ann"] and res.agreement is None               # one person: the judge is not a rater
    assert sum(m.rated for m in res.models) == 20
    pairs = [(p["rating"], truth[p["answer_id"]]) for p in prerates]
    assert res.judge_agreement == calibration.weighted_kappa(pairs)
    assert res.judge_exact.count == sum(j == t for j, t in pairs)
    assert [m.levels["A"].count for m in res.judge_models] == [
        sum(p["rating"] == "A" for p in prerates if p["model_index"] == k) for k in (0, 1)]
    # planning again adds nothing for the same judge model
    assert evaluate.plan_prerating(pool, evaluation_id, judge) == 0


# -- jobs ------------------------------------------------------------------------------------------------------
def test_collection_is_a_job_under_the_one_job_per_pool_rule(db_path):
    from selfinstruct.jobs import JobManager

    instructions = [{"instruction": f"Explain idea number {k} in one line.", "input": ""} for k in range(40)]
    with OfflineServer(model_names=("base", "tuned"), latency_s=0.05) as srv, Pool.open(db_path) as pool:
        evaluation_id = evaluate.create_evaluation(pool, http_models(srv), instructions)
        manager = JobManager(pool)
        manager.collect_evaluation(evaluation_id)
        deadline = time.time() + 10
        while evaluate.active_evaluation(pool) is None and time.time() < deadline:
            time.sleep(0.01)
        assert manager.status().busy and manager.status().kind == "evaluate"
        with pytest.raises(RuntimeError, match="still running"):
            manager.start_judge(JudgeConfig(backend="openai-compatible", base_url=srv.base_url, model="base"),
                                "pool")
        other = JobManager(pool)
        with pytest.raises(RuntimeError, match=f"Evaluation {evaluation_id}"):
            other.collect_evaluation(evaluation_id)
        assert manager.wait(60)
        status = manager.status()
        assert status.outcome.status == "finished" and status.done == status.total == 80
        assert status.line().startswith(f"Evaluation {evaluation_id} finished: 80/80 answers")


# -- models, instructions and the CLI -----------------------------------------------------------------------------
def test_model_specs():
    m = evaluate.model_from_spec("http://localhost:8000/v1:llama3:8b")
    assert (m.backend, m.base_url, m.model) == ("openai-compatible", "http://localhost:8000/v1", "llama3:8b")
    m = evaluate.model_from_spec("https://api.openai.com/v1:gpt-4o-mini", label="gpt")
    assert (m.base_url, m.model, m.name) == ("https://api.openai.com/v1", "gpt-4o-mini", "gpt")
    assert evaluate.model_from_spec("offline:tuned").model == "tuned"
    for bad in ("gpt-4o", "http://localhost:8000", "ftp://x/v1:m"):
        with pytest.raises(ValueError, match="Cannot read the model"):
            evaluate.model_from_spec(bad)
    with pytest.raises(ValueError, match="at least 2 models"):
        evaluate.create_evaluation(None, [evaluate.model_from_spec("offline:a")], INSTRUCTIONS)
    with pytest.raises(ValueError, match="different name"):
        evaluate.create_evaluation(None, [evaluate.model_from_spec("offline:a")] * 2, INSTRUCTIONS)


def test_the_papers_user_oriented_instructions_are_read_with_their_inputs():
    path = shared_file("selfinstruct_user_oriented_instructions.jsonl")
    rows = evaluate.read_instruction_file(path)
    assert len(rows) == 252
    assert rows[0]["source"] == "user_oriented_task_0"
    assert rows[0]["input"].startswith("If you have any questions about my rate")
    assert all(r["instruction"] for r in rows) and sum(bool(r["input"]) for r in rows) > 150


def test_instruction_files_alpaca_csv_and_holdout(tmp_path, demo_pool):
    alpaca = tmp_path / "a.json"
    alpaca.write_text('[{"instruction": "Add them.", "input": "2, 3", "output": "5"}]')
    assert evaluate.read_instruction_file(alpaca) == [{"instruction": "Add them.", "input": "2, 3", "source": "a.json:1"}]
    table = tmp_path / "b.csv"
    table.write_text("instruction,input\nSay hi.,\n")
    assert evaluate.read_instruction_file(table)[0]["instruction"] == "Say hi."
    (tmp_path / "c.jsonl").write_text('{"text": "no instruction"}\n')
    with pytest.raises(ValueError, match="no instruction"):
        evaluate.read_instruction_file(tmp_path / "c.jsonl")
    held = evaluate.holdout_instructions(demo_pool, 5, seed=3)
    assert len(held) == 5 and held == evaluate.holdout_instructions(demo_pool, 5, seed=3)
    assert all(h["source"].startswith("pool:candidate ") for h in held)


def test_the_cli_creates_collects_prerates_and_reports(db_path, tmp_path):
    source = tmp_path / "tasks.jsonl"
    source.write_text("\n".join(f'{{"instruction": "Describe thing {k} briefly.", "instances": [{{"input": ""}}]}}'
                                for k in range(8)))
    helped = run_cli("evaluate", "--help")
    assert helped.returncode == 0 and "evaluate create" in helped.stdout and "URL:MODEL" in helped.stdout
    db = ["--db", str(db_path)]
    made = run_cli("evaluate", "create", "--name", "demo", "--instructions", str(source), "--model", "offline:base",
                   "--model", "offline:tuned", *db)
    assert made.returncode == 0, made.stderr
    assert "Evaluation 1: 8 instruction(s) x 2 models (base, tuned)" in made.stdout
    got = run_cli("evaluate", "collect", "1", *db)
    assert got.returncode == 0, got.stderr
    assert "Evaluation 1 finished: 16/16 answers" in got.stdout
    pre = run_cli("evaluate", "prerate", "1", "--offline", "--rate-limit-patience", "90s", *db)
    assert pre.returncode == 0, pre.stderr
    assert "16 answer(s) to pre-rate" in pre.stdout and "16/16 pre-ratings" in pre.stdout
    with Pool.open(db_path) as pool:     # the judge's patience is stored with it, as generation's is
        assert pool.evaluations.get(1)["judge_config"]["rate_limit_patience_s"] == 90
    shown = run_cli("evaluate", "results", "1", *db)
    assert shown.returncode == 0, shown.stderr
    assert "rated by 0 person(s)" in shown.stdout and "Judge selfinstruct-demo (not counted above)" in shown.stdout
    missing = run_cli("evaluate", "collect", "9", *db)
    assert missing.returncode == 2 and "There is no evaluation 9" in missing.stderr
    bad = run_cli("evaluate", "create", "--instructions", str(source), "--model", "offline:a", *db)
    assert bad.returncode == 2 and "at least 2 models" in bad.stderr


def test_ctrl_c_exits_130_with_the_resume_command(db_path):
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, served_completions

    instructions = [{"instruction": f"Explain idea number {k} in one line.", "input": ""} for k in range(40)]
    with OfflineServer(latency_s=0.05, model_names=("base", "tuned")) as srv:
        with Pool.open(db_path) as pool:
            evaluation_id = evaluate.create_evaluation(pool, http_models(srv), instructions)
        proc = subprocess.Popen([sys.executable, "-m", "selfinstruct", "evaluate", "collect", str(evaluation_id),
                                 "--db", str(db_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.time() + 30
        while served_completions(srv.base_url) < 5 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert f"Resume with: selfinstruct evaluate collect {evaluation_id}" in err
    with Pool.open(db_path) as pool:
        assert pool.evaluations.get(evaluation_id)["status"] == "interrupted"
        assert 1 <= pool.evaluations.progress(evaluation_id)["answered"] < 80


def test_the_estimate_counts_the_prompts_and_prices_each_model(pool):
    models = [EvalModel(backend="openai-compatible", base_url="http://127.0.0.1:9/v1", model="gpt-4o-mini"),
              EvalModel(backend="openai-compatible", base_url="http://127.0.0.1:9/v1", model="mine",
                        price_per_m=[1.0, 2.0])]
    evaluation_id = evaluate.create_evaluation(pool, models, INSTRUCTIONS[:3])
    estimate = evaluate.estimate_collection(pool, evaluation_id)
    per_model = sum(-(-len(prompts.build_eval_answer_prompt(i["instruction"], i["input"]).full_text()) // 4)
                    for i in INSTRUCTIONS[:3])
    assert estimate.answers == 6 and estimate.prompt_tokens == 2 * per_model
    assert estimate.completion_tokens == 6 * evaluate.ANSWER_TOKENS_GUESS
    expected = sum(m.price_table().cost(m.model, per_model, 3 * evaluate.ANSWER_TOKENS_GUESS) for m in models)
    assert estimate.cost_usd == pytest.approx(expected) and estimate.cost_usd > 0
    assert "guessed" in estimate.basis


def test_the_shipped_example_instructions_make_an_evaluation(db_path):
    """The README's evaluate example runs as written: the instruction file ships in data/."""
    from selfinstruct.datadir import DEFAULT_DATA_DIR
    from tests.conftest import run_cli

    example = DEFAULT_DATA_DIR / "eval_instructions.jsonl"
    assert len(evaluate.read_instruction_file(example)) == 12
    done = run_cli("evaluate", "create", "--name", "base-vs-tuned", "--instructions", "data/eval_instructions.jsonl",
                   "--model", "offline:offline-base", "--model", "offline:offline-tuned", "--db", str(db_path))
    assert done.returncode == 0, done.stderr
    assert "Evaluation 1: 12 instruction(s) x 2 models" in done.stdout
