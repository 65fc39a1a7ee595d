"""DemoModel: answers every builder's prompt in the layout its parser reads."""
import json

import pytest

from selfinstruct.demo import (
    DEFAULT_CORPUS_PATH, NO_EXAMPLE_LABEL, NO_EXAMPLE_OUTPUT, UNKNOWN_STAGE_ANSWER, DemoModel,
    guess_is_classification, load_corpus,
)
from selfinstruct.parsing import (
    clean_instruction, parse_batch, parse_classification, parse_instances, parse_instructions,
)
from tests.conftest import shared_file
from selfinstruct.prompts import (
    Prompt, build_batch_prompt, build_classify_prompt, build_instance_prompt,
    build_instruction_prompt, one_line,
)

FIXTURE = [
    {"instruction": "Write a haiku about morning coffee.", "is_classification": False,
     "instances": [{"input": "", "output": "Steam curls from the cup\nbitter warmth wakes the "
                                           "slow mind\nthe day starts to hum"}], "tag": "ok"},
    {"instruction": "Classify the sentiment of the tweet as positive or negative.",
     "is_classification": True,
     "instances": [{"input": "Best concert ever!", "output": "Positive"},
                   {"input": "My flight got cancelled again.", "output": "Negative"}],
     "tag": "ok"},
    {"instruction": "Write a Python function that reverses a string.", "is_classification": False,
     "instances": [{"input": "", "output": "def reverse(s):\n    # slice backwards\n\n"
                                           "    return s[::-1]"}], "tag": "write_a_program"},
    {"instruction": "Draw a picture of a cat sitting on a fence.", "is_classification": False,
     "instances": [{"input": "", "output": "I can only describe it in words."}],
     "tag": "keyword"},
    {"instruction": "Summarize the paragraph in one sentence.", "is_classification": False,
     "instances": [{"input": "The council met on Tuesday. They agreed to fix the bridge.\n\n"
                             "Work starts next month.",
                    "output": "The council will fix the bridge, starting next month."}],
     "tag": "ok"},
    {"instruction": "Summarise the paragraph in a single sentence.", "is_classification": False,
     "instances": [{"input": "Rain fell all day.", "output": "It rained all day."}],
     "tag": "rouge", "of": "Summarize the paragraph in one sentence."},
    {"instruction": "Sing.", "is_classification": False, "instances": [], "tag": "too_short"},
    {"instruction": "Is the number even or odd?", "is_classification": True,
     "instances": [{"input": "7", "output": "Odd"}, {"input": "12", "output": "Even"},
                   {"input": "0", "output": "Even"}, {"input": "3", "output": "Odd"},
                   {"input": "10", "output": "Even"}, {"input": "5", "output": "Odd"}],
     "tag": "ok"},
    {"instruction": "Suggest three names for a hiking club.", "is_classification": False,
     "instances": [{"input": "", "output": "Trail Blazers, Summit Seekers, Pine Path Crew"}],
     "tag": "ok"},
    {"instruction": "Rewrite the sentence in the past tense.", "is_classification": False,
     "instances": [{"input": "She walks to work.", "output": "She walked to work."},
                   {"input": "They eat lunch at noon.", "output": "They ate lunch at noon."}],
     "tag": "ok"},
    {"instruction": "Explain what a leap year is.", "is_classification": False,
     "instances": [{"input": "", "output": "A year with 366 days."}], "tag": "ok",
     "breaks": []},
    {"instruction": "Tell me whether the email is spam.", "is_classification": True,
     "instances": [{"input": "You won a free cruise! Click now.", "output": "Spam"},
                   {"input": "Lunch at 1pm tomorrow?", "output": "Not spam"}], "tag": "ok"},
]
SEEDS = ["Write a limerick about a forgetful robot.", "Sort the words alphabetically.",
         "Explain the difference between weather and climate.", "Plan a day in Rome.",
         "Convert 20 degrees Celsius to Fahrenheit.", "Suggest a name for a bakery.",
         "Translate the phrase into German.", "Write a Python function that reverses a string."]
BATCH_SEEDS = [{"instruction": "Give the opposite of the word.", "input": "ancient",
                "output": "modern"},
               {"instruction": "Explain what a leap year is.", "input": "",
                "output": "A year with 366 days."},
               {"instruction": "Name a primary colour.", "input": "", "output": "Red."}]


@pytest.fixture
def corpus_path(tmp_path):
    path = tmp_path / "demo_corpus.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in FIXTURE) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture
def model(corpus_path):
    return DemoModel(corpus_path, seed=3, chatty_rate=0, malformed_rate=0)


def chat_joined(p: Prompt) -> str:
    return "\n\n".join(m["content"] for m in p.as_messages())


CORPUS_TEXTS = {one_line(e["instruction"]) for e in FIXTURE}


# --------------------------------------------------------------------------- loading

def test_corpus_and_lookup(model):
    assert len(model.corpus) == len(FIXTURE)
    assert model.lookup("Write a haiku about morning coffee.")["tag"] == "ok"
    assert model.lookup("  write a HAIKU about\nmorning coffee. ")["tag"] == "ok"
    assert model.lookup("Something the corpus never saw.") is None
    assert model.corpus[6]["instances"] == []


def test_load_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok", "instances": []}\n{not json}\n')
    with pytest.raises(ValueError, match="line 2"):
        load_corpus(bad)
    bad.write_text('{"instruction": "  "}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_corpus(bad)
    bad.write_text('{"instruction": "ok", "instances": "nope"}\n')
    with pytest.raises(ValueError, match="instances"):
        load_corpus(bad)


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("request_seed", range(6))
@pytest.mark.parametrize("render", [lambda p: p.text, Prompt.full_text, chat_joined],
                         ids=["text", "full_text", "chat_joined"])
def test_instructions_round_trip(model, request_seed, render):
    p = build_instruction_prompt(SEEDS)
    answer = model.respond(render(p), request_seed=request_seed)
    assert answer.startswith(" ") and "\n10. " in answer and "\n\n" not in answer
    got = parse_instructions(answer, p)
    assert got.unparseable == []
    assert len(got.items) == 8 and len(set(got.items)) == 8
    assert set(got.items) <= CORPUS_TEXTS
    assert "Write a Python function that reverses a string." not in got.items  # an example


def test_instructions_with_fewer_corpus_entries_than_asked(model):
    p = build_instruction_prompt(SEEDS[:2], num_to_generate=40)
    got = parse_instructions(model.respond(p.full_text()), p)
    assert sorted(got.items) == sorted(CORPUS_TEXTS)


def test_classify_round_trip(model):
    for entry in FIXTURE:
        for p_text in (build_classify_prompt(entry["instruction"]).full_text(),
                       chat_joined(build_classify_prompt(entry["instruction"]))):
            assert parse_classification(model.respond(p_text)) is entry["is_classification"]


@pytest.mark.parametrize("instruction, expected", [
    ("Decide whether the review is positive or negative.", True),
    ("Which of the following animals can fly?", True),
    ("Label each sentence as formal or informal.", True),
    ("Is it going to rain tomorrow, given the forecast?", True),
    ("True or false: the sun is a star.", True),
    ("Write a story about a dragon who loves tea.", False),
    ("What is the capital of Peru?", False),
])
def test_classify_unknown_uses_keywords(model, instruction, expected):
    assert guess_is_classification(instruction) is expected
    answer = model.respond(build_classify_prompt(instruction).full_text())
    assert parse_classification(answer) is expected


def test_instances_round_trip_both_orders(model):
    for entry in FIXTURE:
        for output_first in (False, True):
            p = build_instance_prompt(entry["instruction"], output_first)
            answer = model.respond(chat_joined(p))
            got = parse_instances(answer, output_first)
            if entry["instances"]:
                assert got.instances == entry["instances"][:5], (entry, output_first, answer)
                assert got.unparseable == []
            else:
                marker = NO_EXAMPLE_LABEL if output_first else NO_EXAMPLE_OUTPUT
                assert got.instances == [{"input": "", "output": marker}]


def test_instances_formats(model):
    p = build_instance_prompt("Classify the sentiment of the tweet as positive or negative.", True)
    answer = model.respond(p.full_text())
    assert answer == ("\nLabel: Positive\nInput: Best concert ever!\nExample 2\nLabel: Negative\n"
                      "Input: My flight got cancelled again.")
    p = build_instance_prompt("Write a haiku about morning coffee.", False)
    assert model.respond(p.full_text()).startswith("\nInput: (none)\nOutput:\nSteam curls")
    # five at most, even when the corpus has more
    p = build_instance_prompt("Is the number even or odd?", True)
    answer = model.respond(p.full_text())
    assert "Example 5" in answer and "Example 6" not in answer


def test_instances_unknown_instruction_is_marked(model):
    p = build_instance_prompt("Compose a sea shanty about spreadsheets.", False)
    answer = model.respond(p.full_text())
    assert "(demo)" in answer
    assert parse_instances(answer, False).instances == [{"input": "", "output": NO_EXAMPLE_OUTPUT}]


@pytest.mark.parametrize("request_seed", range(4))
def test_batch_round_trip(model, request_seed):
    p = build_batch_prompt(BATCH_SEEDS, num_to_generate=5)
    answer = model.respond(chat_joined(p), request_seed=request_seed)
    assert answer.startswith("\nInstruction: ") and "### Task 5\n" in answer
    got = parse_batch(answer, p)
    assert got.unparseable == [] and len(got.tasks) == 5
    for task in got.tasks:
        entry = model.lookup(task["instruction"])
        assert entry is not None and entry["instances"]
        assert {"input": task["input"], "output": task["output"]} in entry["instances"]
        assert task["instruction"] != "Explain what a leap year is."      # an example


def test_unknown_stage(model):
    assert model.respond("What is the capital of France?") == UNKNOWN_STAGE_ANSWER
    assert model.respond("") == UNKNOWN_STAGE_ANSWER


# --------------------------------------------------------------------------- styles and rates

def all_prompts():
    return [build_instruction_prompt(SEEDS), build_classify_prompt(FIXTURE[1]["instruction"]),
            build_instance_prompt(FIXTURE[2]["instruction"], False),
            build_instance_prompt(FIXTURE[1]["instruction"], True),
            build_batch_prompt(BATCH_SEEDS, num_to_generate=4)]


def parsed(p: Prompt, answer: str):
    if p.stage == "instructions":
        return parse_instructions(answer, p).items
    if p.stage == "classify":
        return parse_classification(answer)
    if p.stage == "instances":
        return parse_instances(answer, p.meta["is_classification"]).instances
    return parse_batch(answer, p).tasks


def test_chatty_answers_parse_to_the_same_content(corpus_path):
    plain = DemoModel(corpus_path, seed=1, chatty_rate=0, malformed_rate=0)
    chatty = DemoModel(corpus_path, seed=1, chatty_rate=1, malformed_rate=0)
    styles = set()
    for p in all_prompts():
        for rs in range(6):
            a, b = plain.respond(p.full_text(), request_seed=rs), chatty.respond(
                p.full_text(), request_seed=rs)
            assert a != b
            assert parsed(p, b) == parsed(p, a), (p.stage, b)
            if p.stage == "instructions":
                styles.add(b.split("\n")[1][:2])
    assert styles == {"**", "Ta", "- "}          # all three chat styles seen


def test_malformed_answers_are_caught_by_the_parsers(corpus_path):
    bad = DemoModel(corpus_path, seed=1, chatty_rate=0, malformed_rate=1)
    good = DemoModel(corpus_path, seed=1, chatty_rate=0, malformed_rate=0)
    for p in all_prompts():
        outcomes = []
        for rs in range(12):
            answer = bad.respond(p.full_text(), request_seed=rs)
            outcomes.append(parsed(p, answer) != parsed(p, good.respond(p.full_text(),
                                                                         request_seed=rs)))
        assert any(outcomes), p.stage
    p = build_instruction_prompt(SEEDS)
    kinds = {("rambling" if not parse_instructions(bad.respond(p.text, request_seed=rs), p).items
              else "cut") for rs in range(20)}
    assert kinds == {"rambling", "cut"}
    assert parse_classification(bad.respond(build_classify_prompt("Sing.").text)) is None


def test_default_rates(corpus_path):
    m = DemoModel(corpus_path, seed=0)
    assert (m.chatty_rate, m.malformed_rate) == (1 / 8, 1 / 25)
    p = build_instruction_prompt(SEEDS, num_to_generate=3)
    chatty = malformed = 0
    n = 600
    for rs in range(n):
        answer = m.respond(p.full_text(), request_seed=rs)
        got = parse_instructions(answer, p)
        if len(got.items) != 3 or not set(got.items) <= CORPUS_TEXTS:
            malformed += 1                      # rambling, or cut mid-item
        elif not answer.startswith(" "):
            chatty += 1                         # a preamble: chat style
    assert 0.08 < chatty / n < 0.17
    assert 0.01 < malformed / n < 0.07


# --------------------------------------------------------------------------- determinism

def test_deterministic_for_seed_text_and_request_seed(corpus_path):
    a = DemoModel(corpus_path, seed=5)
    b = DemoModel(corpus_path, seed=5)
    for p in all_prompts():
        for rs in (0, 1, 99):
            assert a.respond(p.full_text(), request_seed=rs) == b.respond(p.full_text(),
                                                                          request_seed=rs)


def test_request_seed_and_model_seed_change_the_answer(corpus_path):
    m = DemoModel(corpus_path, seed=5, chatty_rate=0, malformed_rate=0)
    p = build_instruction_prompt(SEEDS, num_to_generate=4)
    answers = {m.respond(p.full_text(), request_seed=rs) for rs in range(8)}
    assert len(answers) >= 6
    other = DemoModel(corpus_path, seed=6, chatty_rate=0, malformed_rate=0)
    assert [other.respond(p.full_text(), request_seed=rs) for rs in range(8)] != [
        m.respond(p.full_text(), request_seed=rs) for rs in range(8)]


def test_callable_like_a_responder(model):
    p = build_classify_prompt("Write a haiku about morning coffee.")
    assert model(p.full_text(), 4) == model.respond(p.full_text(), request_seed=4)


# --------------------------------------------------------------------------- real task files

def _stripped(instances):
    return [{"input": i["input"].strip(), "output": i["output"].strip()} for i in instances]


def test_paper_seed_tasks_round_trip():
    """The paper's 175 seed tasks as a corpus: multi-line inputs, code, lists, colons."""
    path = shared_file("selfinstruct_seed_tasks.jsonl")
    plain = DemoModel(path, chatty_rate=0, malformed_rate=0)
    chatty = DemoModel(path, chatty_rate=1, malformed_rate=0)
    for entry in plain.corpus:
        for m in (plain, chatty):
            assert parse_classification(m.respond(build_classify_prompt(
                entry["instruction"]).full_text())) is entry["is_classification"]
            for output_first in (entry["is_classification"], not entry["is_classification"]):
                p = build_instance_prompt(entry["instruction"], output_first)
                got = parse_instances(m.respond(p.full_text()), output_first)
                assert _stripped(got.instances) == _stripped(entry["instances"][:5])
                assert got.unparseable == []
    texts = {clean_instruction(e["instruction"]) for e in plain.corpus}
    p = build_instruction_prompt([e["instruction"] for e in plain.corpus[:8]])
    b = build_batch_prompt([{"instruction": e["instruction"], **e["instances"][0]}
                            for e in plain.corpus[:3]])
    for rs in range(25):
        for m in (plain, chatty):
            got = parse_instructions(m.respond(p.full_text(), request_seed=rs), p)
            assert len(got.items) == 8 and set(got.items) <= texts and not got.unparseable
            got = parse_batch(m.respond(b.full_text(), request_seed=rs), b)
            assert len(got.tasks) == 20 and not got.unparseable
            for task in got.tasks:
                entry = m.lookup(task["instruction"])
                assert _stripped([task])[0] in _stripped(entry["instances"])


# --------------------------------------------------------------------------- the bundled corpus

def test_bundled_corpus_round_trips():
    """The bundled data/demo_corpus.jsonl (it ships with the project: no skip)."""
    m = DemoModel(seed=0, chatty_rate=0, malformed_rate=0)
    assert m.corpus_path == DEFAULT_CORPUS_PATH and len(m.corpus) > 0
    texts = {clean_instruction(e["instruction"]) for e in m.corpus}
    assert len({e.get("tag") for e in m.corpus}) > 1
    p = build_instruction_prompt(SEEDS)
    for rs in range(20):
        got = parse_instructions(m.respond(chat_joined(p), request_seed=rs), p)
        assert got.unparseable == [] and set(got.items) <= texts
        assert len(got.items) == min(8, len(texts))
    for entry in m.corpus:
        cls = entry["is_classification"]
        answer = m.respond(build_classify_prompt(entry["instruction"]).full_text())
        assert parse_classification(answer) is m.lookup(entry["instruction"])["is_classification"]
        if not entry["instances"] or m.lookup(entry["instruction"]) is not entry:
            continue
        answer = m.respond(build_instance_prompt(entry["instruction"], cls).full_text())
        got = parse_instances(answer, cls)
        assert _stripped(got.instances) == _stripped(entry["instances"][:5]), entry["instruction"]


def test_synthetic_model_keeps_producing_new_tasks():
    from selfinstruct.demo import SyntheticModel
    from selfinstruct.filters import InstructionFilter
    from selfinstruct.novelty import NoveltyIndex

    model = SyntheticModel(seed=3, chatty_rate=0.0, malformed_rate=0.0)
    prompt = build_instruction_prompt(SEEDS)
    index, accepted = NoveltyIndex(), 0
    for request_seed in range(200):
        items = parse_instructions(model.respond(prompt.full_text(), request_seed=request_seed), prompt).items
        assert len(items) == 8
        for item in items:
            if InstructionFilter().check(item) is not None:   # e.g. "map reading": as a real model, now and then
                continue
            if index.max_similarity(item)[0] <= 0.7:
                index.add(item)
                accepted += 1
    # 1,600 candidates (the bundled corpus has 338 tasks in all): hundreds stay new
    assert accepted > 500
    assert model.respond(prompt.full_text(), request_seed=5) == model.respond(prompt.full_text(), request_seed=5)
