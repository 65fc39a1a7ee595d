"""Structured output (JSON with a schema per stage), the probe that detects it, the echo guard
and parse health: against the offline server over loopback HTTP with the real openai client,
and on answers recorded from a real small chat model (tests/data)."""
import json
from pathlib import Path

import openai
import pytest

from selfinstruct import monitor, parsing, prompts
from selfinstruct.backend import Backend
from selfinstruct.decisions import decide_round, stored_prompt
from selfinstruct.filters import REASON_LABELS, PIPELINE_REASONS, InstructionFilter, find_echoes
from selfinstruct.llm import LLMConfig, Sampling, request_body
from selfinstruct.novelty import NoveltyIndex
from selfinstruct.offline import OfflineServer
from selfinstruct.settings import RunConfig
from selfinstruct.pipeline import Runner, start_run
from selfinstruct.engine import planned_request

DATA = Path(__file__).parent / "data"
FAST = {"requests_per_round": 2, "concurrency": 4, "max_retries": 1, "timeout_s": 20}
EXAMPLES = ["Write a limerick about a forgetful cat.", "Sort the numbers from largest to smallest.",
            "Explain what a leap year is to a child."]


def stage_prompts(structured: bool) -> list[prompts.Prompt]:
    return [prompts.build_instruction_prompt(EXAMPLES, num_to_generate=4, structured=structured),
            prompts.build_classify_prompt("Say whether the email is spam.", structured=structured),
            prompts.build_instance_prompt("Write a haiku about rain.", False, structured=structured),
            prompts.build_instance_prompt("Say whether the email is spam.", True, structured=structured),
            prompts.build_batch_prompt([{"instruction": "Name a red fruit.", "input": "", "output": "A cherry."}],
                                       num_to_generate=3, structured=structured)]


# -- prompts and request bodies ------------------------------------------------------------------
def test_structured_prompts_carry_their_schema_and_read_back():
    for text_prompt, json_prompt in zip(stage_prompts(False), stage_prompts(True)):
        assert not text_prompt.structured and json_prompt.structured
        assert json_prompt.version == prompts.STRUCTURED_VERSIONS[json_prompt.stage] != text_prompt.version
        assert json_prompt.stop is None   # a stop sequence could cut the JSON
        back, plain = parsing.read_prompt(json_prompt.full_text()), parsing.read_prompt(text_prompt.full_text())
        assert back.structured and not plain.structured
        assert (back.stage, back.instruction, back.is_classification, back.examples, back.start_index) == \
            (plain.stage, plain.instruction, plain.is_classification, plain.examples, plain.start_index)
    # a label task's examples put the label first, as the text layout does
    label = prompts.response_schema("instances", is_classification=True)
    assert list(label["properties"]["examples"]["items"]["properties"]) == ["output", "input"]
    assert set(prompts.version_table()) >= set(prompts.PROMPT_VERSIONS)


def test_request_body_adds_response_format_in_chat_mode_only():
    prompt = stage_prompts(True)[0]
    chat = request_body(LLMConfig(base_url="http://x/v1", model="m"), prompt, Sampling())
    assert chat["response_format"]["type"] == "json_schema"
    assert chat["response_format"]["json_schema"]["schema"] == prompt.schema
    assert chat["response_format"]["json_schema"]["strict"] is True
    completion = request_body(LLMConfig(base_url="http://x/v1", model="m", mode="completion"), prompt, Sampling())
    assert "response_format" not in completion
    assert "response_format" not in request_body(LLMConfig(base_url="http://x/v1", model="m"),
                                                 stage_prompts(False)[0], Sampling())


def test_a_stored_request_rebuilds_the_same_body():
    prompt = stage_prompts(True)[2]
    item = planned_request(0, prompt, RunConfig())
    assert item["structured"] is True and planned_request(0, stage_prompts(False)[2], RunConfig())["structured"] is None
    row = {"stage": prompt.stage, "prompt_version": item["prompt_version"], "prompt": item["prompt"],
           "meta": json.loads(json.dumps(item["meta"]))}   # as stored: through JSON
    config = LLMConfig(base_url="http://x/v1", model="m")
    assert request_body(config, stored_prompt(row), Sampling()) == request_body(config, prompt, Sampling())


# -- strict parsers ----------------------------------------------------------------------------
def test_strict_json_parsers_accept_the_schema_and_nothing_else():
    instr = stage_prompts(True)[0]
    ok = parsing.parse_answer("instructions", json.dumps({"instructions": ["9. Plan a picnic for six friends.",
                                                                          "Name three uses of a paperclip."]}), instr)
    assert ok.items == ["Plan a picnic for six friends.", "Name three uses of a paperclip."] and not ok.unparseable
    for text, kind in (("Sure! 1. Plan a picnic.", parsing.NOT_JSON),
                       ('{"instructions": "Plan a picnic."}', parsing.OFF_SCHEMA),
                       ('{"instructions": ["a", "b", "c", "d", "e"]}', parsing.OFF_SCHEMA),   # maxItems 4
                       ('{"tasks": ["Plan a picnic."]}', parsing.OFF_SCHEMA),
                       ('```json\n{"instructions": ["Plan a picnic."]}\n```', parsing.NOT_JSON)):
        bad = parsing.parse_answer("instructions", text, instr)
        assert bad.items == [] and len(bad.unparseable) == 1 and bad.unparseable[0].startswith(kind), (text, bad)
    cut = parsing.parse_answer("instructions", '{"instructions": ["Plan a pic', instr, finish_reason="length")
    assert cut.unparseable[0].startswith(parsing.TRUNCATED)
    assert parsing.parse_classification_json('{"labeling_task": "yes"}') is True
    assert parsing.parse_classification_json('{\n  "labeling_task": "no"\n}') is False
    assert parsing.parse_classification_json('{"labeling_task": "maybe"}') is None
    assert parsing.parse_classification_json("Yes") is None   # strict: the text parser would say True
    inst = parsing.parse_instances_json('{"examples": [{"output": "Spam", "input": "WIN A PRIZE"},'
                                        ' {"output": "Not spam", "input": "(none)"}]}', True)
    assert inst.instances == [{"input": "WIN A PRIZE", "output": "Spam"}, {"input": "", "output": "Not spam"}]
    assert parsing.parse_instances_json('{"examples": [{"input": "x"}]}', False).unparseable
    batch = parsing.parse_batch_json('{"tasks": [{"instruction": "Name a fruit.", "input": "", "output": "Kiwi"},'
                                     ' {"instruction": "", "input": "", "output": "x"}]}')
    assert batch.tasks == [{"instruction": "Name a fruit.", "input": "", "output": "Kiwi"}]
    assert batch.unparseable[0].startswith("no instruction")


# -- the offline server speaks the protocol --------------------------------------------------
def test_offline_server_answers_each_schema_with_matching_json():
    with OfflineServer(seed=3) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        config = LLMConfig(base_url=srv.base_url, model="selfinstruct-demo")
        for prompt in stage_prompts(True) + [prompts.build_probe_prompt()]:
            body = request_body(config, prompt, Sampling(max_tokens=2000))
            text = client.chat.completions.create(**body).choices[0].message.content
            assert parsing.schema_problem(json.loads(text), prompt.schema) is None, (prompt.stage, text)
            if prompt.stage != prompts.STAGE_PROBE:
                parsed = parsing.parse_answer(prompt.stage, text, prompt,
                                              is_classification=bool(prompt.meta.get("is_classification")))
                assert parsed is not None and not getattr(parsed, "unparseable", [])
        assert json.loads(client.chat.completions.create(**request_body(
            config, prompts.build_probe_prompt(), Sampling())).choices[0].message.content) == \
            {"ready": True, "colour": "green"}


def test_offline_server_can_refuse_or_ignore_response_format():
    body = request_body(LLMConfig(base_url="http://x/v1", model="selfinstruct-demo"), stage_prompts(True)[1],
                        Sampling())
    with OfflineServer(structured_output=False) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**body)
        assert "response_format" in str(refused.value)
        plain = {k: v for k, v in body.items() if k != "response_format"}
        assert client.chat.completions.create(**plain).choices[0].message.content   # the rest still works
    with OfflineServer(structured_output="ignore") as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        text = client.chat.completions.create(**body).choices[0].message.content
        with pytest.raises(ValueError):
            json.loads(text)


# -- runs: probe, stored decisions, parse health -------------------------------------------------
def run_against(pool, srv, **settings):
    config = RunConfig(base_url=srv.base_url, backend="openai-compatible", seed=4, rounds=1, **{**FAST, **settings})
    run_id = start_run(pool, config)
    outcome = Runner(pool, run_id, backend=Backend(kind="openai-compatible", base_url=srv.base_url)).run()
    assert outcome.status == "finished", outcome
    return run_id


def stored_health(pool, run_id) -> dict:
    """Parse health computed again from the rows the answers led to (not from requests.items)."""
    cur = pool.cursor()
    figures = {}
    for stage, in cur.execute("SELECT DISTINCT stage FROM requests WHERE run_id = ?", [run_id]).fetchall():
        answers, structured, nul = cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE structured), count(*) FILTER (WHERE contains(response, chr(0))) "
            "FROM requests WHERE run_id = ? AND stage = ? "
            "AND response IS NOT NULL AND applied_at IS NOT NULL", [run_id, stage]).fetchone()
        if stage == "classify":
            per_request = [int(parsing.parse_answer(stage, r[0], stored_prompt(
                {"stage": stage, "prompt_version": r[1], "prompt": r[2], "meta": json.loads(r[3])})) is not None)
                for r in cur.execute("SELECT response, prompt_version, prompt, meta FROM requests WHERE run_id = ? "
                                     "AND stage = ? AND response IS NOT NULL", [run_id, stage]).fetchall()]
        elif stage == "instances":
            per_request = [r[0] for r in cur.execute(
                "SELECT (SELECT count(*) FROM instances i WHERE i.request_id = q.id "
                "AND coalesce(i.reason, '') NOT IN ('unparseable', 'oversize')) FROM requests q "
                "WHERE q.run_id = ? AND q.stage = ? AND q.response IS NOT NULL", [run_id, stage]).fetchall()]
        else:
            per_request = [r[0] for r in cur.execute(
                "SELECT (SELECT count(*) FROM candidates c WHERE c.request_id = q.id "
                "AND coalesce(c.reason, '') NOT IN ('unparseable', 'oversize')) FROM requests q "
                "WHERE q.run_id = ? AND q.stage = ? AND q.response IS NOT NULL", [run_id, stage]).fetchall()]
        figures[stage] = {"stage": stage, "answers": answers, "parsed": sum(n > 0 for n in per_request),
                          "items": sum(per_request), "structured": structured, "nul": nul}
    return figures


def test_auto_probe_finds_support_and_every_request_goes_structured(seeded):
    with OfflineServer(seed=5) as srv:
        run_id = run_against(seeded, srv, structured="auto")
        chat_requests = srv.stats["by_endpoint"]["chat/completions"]
    run = seeded.runs.get(run_id)
    assert run["structured"] is True and run["structured_note"].startswith("auto: on")
    rows = seeded.cursor().execute("SELECT structured, response FROM requests WHERE run_id = ?", [run_id]).fetchall()
    assert rows and all(s is True for s, _ in rows)
    assert all(isinstance(json.loads(r), dict) for _, r in rows)
    assert chat_requests == len(rows) + 1   # exactly one probe
    health = seeded.runs.parse_health(run_id)
    assert {h["stage"] for h in health} == {"instructions", "classify", "instances"}
    assert {h["stage"]: h for h in health} == stored_health(seeded, run_id)
    assert all(h["structured"] == h["answers"] > 0 for h in health)
    instances = seeded.cursor().execute(
        "SELECT count(*) FROM instances i JOIN candidates c ON c.id = i.candidate_id WHERE c.run_id = ? "
        "AND i.status = 'kept'", [run_id]).fetchone()[0]
    assert instances > 0
    # a resume does not probe again: the new server sees only the new round's requests
    before = len(rows)
    with OfflineServer(seed=5) as srv:
        outcome = Runner(seeded, run_id, backend=Backend(kind="openai-compatible", base_url=srv.base_url),
                         overrides={"rounds": 2}).run()
        sent = srv.stats["by_endpoint"]["chat/completions"]
    after = seeded.cursor().execute("SELECT count(*) FROM requests WHERE run_id = ?", [run_id]).fetchone()[0]
    assert outcome.status == "finished" and after > before and sent == after - before


@pytest.mark.parametrize("server_kind", [False, "ignore"])
def test_auto_probe_falls_back_to_the_text_layout(seeded, server_kind):
    with OfflineServer(seed=5, structured_output=server_kind) as srv:
        run_id = run_against(seeded, srv, structured="auto")
    run = seeded.runs.get(run_id)
    assert run["structured"] is False and run["structured_note"].startswith("auto: off")
    assert ("HTTP 400" in run["structured_note"]) == (server_kind is False)
    assert seeded.cursor().execute("SELECT count(*) FROM requests WHERE run_id = ? AND structured IS NOT NULL",
                                   [run_id]).fetchone()[0] == 0
    health = seeded.runs.parse_health(run_id)
    assert {h["stage"]: h for h in health} == stored_health(seeded, run_id)
    assert all(h["structured"] == 0 for h in health)


def test_structured_off_sends_no_probe_and_on_against_a_refusing_server_fails_plainly(seeded):
    with OfflineServer(seed=5) as srv:
        run_id = run_against(seeded, srv, structured="off")
        assert srv.stats["by_endpoint"]["chat/completions"] == seeded.cursor().execute(
            "SELECT count(*) FROM requests WHERE run_id = ?", [run_id]).fetchone()[0]
    assert seeded.runs.get(run_id)["structured"] is False
    with OfflineServer(seed=5, structured_output=False) as srv:
        config = RunConfig(base_url=srv.base_url, backend="openai-compatible", rounds=1, structured="on", **FAST)
        run_id = start_run(seeded, config)
        outcome = Runner(seeded, run_id, backend=Backend(kind="openai-compatible", base_url=srv.base_url)).run()
    assert outcome.status == "failed" and outcome.stop_reason == "bad_request"
    assert "response_format" in outcome.error
    with pytest.raises(ValueError, match="Structured output"):
        RunConfig(structured="yes").validate()


def test_alpaca_batch_api_run_goes_structured(seeded):
    with OfflineServer(seed=5, batch_delay_s=0.05) as srv:
        run_id = run_against(seeded, srv, structured="on", generation="alpaca", batch=True, batch_poll_s=0.05,
                             batch_size=5)
    health = {h["stage"]: h for h in seeded.runs.parse_health(run_id)}
    assert health["batch"]["structured"] == health["batch"]["answers"] == 2
    assert health["batch"]["parsed"] == 2 and health["batch"]["items"] > 0
    assert health == stored_health(seeded, run_id)


# -- echo guard -------------------------------------------------------------------------------
def recorded():
    return json.loads((DATA / "smollm2_instruction_answers.json").read_text())["answers"]


def decide_recorded(answer: dict) -> list[dict]:
    prompt = prompts.build_instruction_prompt(answer["examples"], num_to_generate=answer["num_to_generate"])
    item = planned_request(0, prompt, RunConfig())
    request = {"id": 1, "stage": prompt.stage, "prompt_version": prompt.version, "prompt": item["prompt"],
               "meta": item["meta"], "response": answer["answer"], "finish_reason": answer["finish_reason"]}
    return decide_round([request], InstructionFilter(), NoveltyIndex(answer["examples"]), 0.7, batch=False)


def test_echo_guard_rejects_real_chat_answers_that_rewrite_the_list():
    chat = [a for a in recorded() if a["mode"] == "chat"]
    assert len(chat) >= 3
    for answer in chat:
        rows = decide_recorded(answer)
        assert rows and all(r["reason"] == "echo" for r in rows), [(r["reason"], r["instruction"]) for r in rows]
        assert all(r["details"]["restarted_from"] == 9 for r in rows)
    # the answer that appended text to the examples: without the guard, those passed the filters
    appended = next(a for a in chat if "20% off" in a["answer"])
    rows = decide_recorded(appended)
    extended = [r for r in rows if r["details"].get("copy") == "extended"]
    assert len(extended) >= 3
    index = NoveltyIndex(appended["examples"])
    assert any(InstructionFilter().check(r["instruction"]) is None and index.is_novel(r["instruction"])
               for r in extended)
    for r in extended:
        start, end = r["details"]["span"]
        assert r["details"]["example"].rstrip(".").lower() in r["instruction"][start:end + 1].lower()


def test_echo_guard_leaves_real_completion_answers_alone():
    completion = [a for a in recorded() if a["mode"] == "completion"]
    assert completion
    for answer in completion:
        rows = decide_recorded(answer)
        assert len(rows) >= 7 and not any(r["reason"] == "echo" for r in rows)


def test_find_echoes_rules():
    examples = ["Sort the list.", "Give three tips for sleeping well at night."]
    found = find_echoes(["Give three tips for sleeping well at night, for a nurse on night shifts.",
                         "give three tips for sleeping well at night",
                         "Sort the list.",
                         "Sort the list of groceries by aisle.",   # a short example counts only exactly
                         "Give two tips for cooking rice."], examples)
    assert {i: f.evidence["copy"] for i, f in found.items()} == {0: "extended", 1: "exact", 2: "exact"}
    restarted = find_echoes(["Plan a picnic.", "Sort the list."], examples, restarted=True, start_index=3)
    assert set(restarted) == {0, 1} and "again at 1" in restarted[0].message
    assert "echo" in PIPELINE_REASONS and "echo" in REASON_LABELS


def test_a_text_answer_that_continues_the_numbering_is_not_a_restart():
    prompt = prompts.build_instruction_prompt(EXAMPLES, num_to_generate=3)
    cont = parsing.parse_instructions("Plan a picnic for six.\n5. Name a bird that swims.", prompt)
    assert not cont.restarted and len(cont.items) == 2
    again = parsing.parse_instructions("1. Plan a picnic for six.\n2. Name a bird that swims.", prompt)
    assert again.restarted


# -- hints -------------------------------------------------------------------------------------
def test_parse_hints_name_the_failing_stage_in_plain_words():
    health = [{"stage": "instructions", "answers": 8, "parsed": 8, "items": 40, "structured": 0},
              {"stage": "classify", "answers": 18, "parsed": 17, "items": 17, "structured": 0},
              {"stage": "instances", "answers": 18, "parsed": 1, "items": 2, "structured": 0}]
    hints = monitor.parse_hints(health, mode="chat")
    assert hints == ["instances: 1 of 18 answers could be read; this model does not follow the example layout; "
                     "try completion mode or structured output"]
    assert "bigger model" in monitor.parse_hints(health, mode="completion")[0]
    health[2]["structured"] = 18
    assert "JSON" in monitor.parse_hints(health)[0]
    assert monitor.parse_hints(health[:2]) == []
    assert "echo" in monitor.parse_hints(health[:2], echo=30, candidates=40)[0]
    table = monitor.health_table(health)
    assert list(table["parsed %"]) == [100, 94, 6]


def test_run_view_and_cli_show_parse_health(seeded, tmp_path):
    from tests.conftest import run_cli

    with OfflineServer(seed=5) as srv:
        run_id = run_against(seeded, srv, structured="on")
    view = monitor.run_view(seeded, run_id)
    assert view.health == seeded.runs.parse_health(run_id) and view.hints == []
    db = tmp_path / "cli.duckdb"
    done = run_cli("generate", "--offline", "--structured", "on", "--rounds", "1", "--requests-per-round", "2",
                   "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "Structured output: on (set for the run)." in done.stdout
    lines = done.stdout.splitlines()
    at = lines.index("Parse health (answers read / parsed / items / structured):")
    stages = [line.split()[0] for line in lines[at + 1: at + 4]]
    assert stages == ["instructions", "classify", "instances"]
    answers, parsed, items, structured = map(int, lines[at + 1].split()[1:])
    assert answers == structured == 2 and parsed == 2 and items > 0


def test_an_echo_reject_is_explained_with_the_copied_span_and_the_example():
    from selfinstruct.review import explain_candidate

    answer = next(a for a in recorded() if "20% off" in a["answer"])
    row = next(r for r in decide_recorded(answer) if r["details"].get("copy") == "extended")
    exp = explain_candidate({**row, "status": "rejected"})
    assert exp.kind == "echo" and exp.facts["example"] == row["details"]["example"]
    (start, end), = exp.spans
    assert row["instruction"][start:end].lower().startswith(row["details"]["example"][:20].lower())


def test_generate_page_sets_structured_output_and_shows_parse_health(app_env):
    from tests.conftest import app_pool
    from tests.test_page_generate import manager, open_generate, table_with, wait_for

    at = open_generate(app_env)
    at.segmented_control(key="gen_backend").set_value("offline").run()
    at.segmented_control(key="gen_structured").set_value("on").run()
    at.number_input(key="gen_rounds").set_value(1).run()
    at.button(key="gen_start").click().run()
    wait_for(at, lambda: not manager(app_env).status().busy)
    assert not at.exception
    pool = app_pool(app_env)
    run = pool.runs.get(1)
    assert run["config"]["structured"] == "on" and run["structured"] is True
    table = table_with(at, "parsed %")
    health = [{k: v for k, v in h.items() if k != "nul"} for h in pool.runs.parse_health(1)]   # NUL: a hint, not a column
    assert table[["stage", "answers", "parsed", "items", "structured"]].to_dict("records") == health
    assert any("Structured output: on" in t.value for t in at.text)
    assert any("rejects" in str(link.proto) for link in at.get("page_link"))


def test_cli_probe_falls_back_against_a_served_offline_server_that_refuses(tmp_path):
    from tests.conftest import run_cli, served_offline

    with served_offline("--structured-output", "no") as url:
        done = run_cli("generate", "--base-url", url, "--model", "selfinstruct-demo", "--rounds", "1",
                       "--requests-per-round", "2", "--db", str(tmp_path / "p.duckdb"))
    assert done.returncode == 0, done.stderr
    assert "Structured output: auto: off, the server refused a JSON-schema request (HTTP 400)." in done.stdout
    line = next(ln for ln in done.stdout.splitlines() if ln.strip().startswith("instructions"))
    answers, parsed, items, structured = map(int, line.split()[1:])
    assert answers == 2 and structured == 0 and items > 0
