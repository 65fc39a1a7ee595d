"""selfinstruct.filters: instruction rules, instance rules, their evidence."""
from __future__ import annotations

import json

import pytest

from selfinstruct.filters import (
    ALPACA_EXTRA_KEYWORDS,
    ALPACA_KEYWORDS,
    INSTANCE_REASONS,
    INSTRUCTION_REASONS,
    PAPER_KEYWORDS,
    PIPELINE_REASONS,
    REASON_LABELS,
    InstructionFilter,
    Rejection,
    filter_instances,
)

F = InstructionFilter()


def reason(text: str, flt: InstructionFilter = F) -> str | None:
    r = flt.check(text)
    return None if r is None else r.reason


def test_keyword_lists():
    assert PAPER_KEYWORDS == ("image", "images", "graph", "graphs", "picture", "pictures",
                              "file", "files", "map", "maps", "draw", "plot", "go to")
    assert ALPACA_EXTRA_KEYWORDS == ("video", "audio", "music", "flowchart", "diagram")
    assert ALPACA_KEYWORDS == PAPER_KEYWORDS + ALPACA_EXTRA_KEYWORDS


def test_every_reason_has_a_label():
    for r in INSTRUCTION_REASONS + INSTANCE_REASONS + PIPELINE_REASONS:
        assert REASON_LABELS[r]
    assert REASON_LABELS["rouge"] == "Too similar (ROUGE-L)"
    assert set(REASON_LABELS) == set(INSTRUCTION_REASONS + INSTANCE_REASONS + PIPELINE_REASONS)


def test_good_instruction_passes():
    for text in ["Write a short poem about the sea.",
                 "Give three tips for staying healthy.",
                 "  Summarise the following article in two sentences.  "]:
        assert F.check(text) is None
        assert F.check_all(text) == []
        assert F.accepts(text)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty(text):
    r = F.check(text)
    assert r == Rejection("empty", "The instruction is empty.", {})
    assert F.check_all(text) == [r]


def test_too_short_and_too_long():
    r = F.check("Write a poem.")
    assert r.reason == "too_short"
    assert r.evidence == {"words": 3, "limit": 4}
    assert reason("Write a short poem.") is None            # 4 words pass
    assert reason(" ".join(["word"] * 150)) is None
    r = F.check(" ".join(["word"] * 151))
    assert r.reason == "too_long" and r.evidence == {"words": 151, "limit": 150}
    custom = InstructionFilter(min_words=2, max_words=5)
    assert reason("Summarise this.", custom) is None
    assert reason("Summarise.", custom) == "too_short"
    assert reason("one two three four five six", custom) == "too_long"


def test_start_rules():
    r = F.check("\u201cWrite a poem about the sea.\u201d")
    assert r.reason == "non_ascii_start"
    assert r.evidence == {"char": "\u201c", "span": [0, 1]}
    assert reason("Écris un poème sur la mer.") == "non_ascii_start"
    r = F.check("  - Write a poem about the sea.")
    assert r.reason == "starts_with_punctuation"
    assert r.evidence == {"char": "-", "span": [2, 3]}
    assert reason("1. Write a poem about the sea.") is None   # digits are not punctuation


def test_write_a_program():
    r = F.check("Write a program that sorts a list of numbers.")
    assert r.reason == "write_a_program"
    assert r.evidence == {"prefix": "Write a program", "span": [0, 15]}
    text = "  write  A PROGRAM to add two numbers together."
    r = F.check(text)
    assert r.reason == "write_a_program"
    assert text[slice(*r.evidence["span"])] == "write  A PROGRAM"
    assert reason("Write a programming joke for developers.") == "write_a_program"  # prefix rule
    assert reason("Write a Python program that sorts a list.") is None


@pytest.mark.parametrize("text, keyword", [
    ("Describe the image in three sentences.", "image"),
    ("Look at these Maps and name the countries.", "maps"),
    ("Please GO TO the store and buy some milk.", "go to"),
    ("Tell me where to go  to find good pizza.", "go to"),
    ("Tell me where to go\nto find good pizza.", "go to"),
    ("Plot the data from the table above.", "plot"),
    ("Draw a cat using only ASCII characters.", "draw"),
    ("Summarise the attached file, briefly please.", "file"),
    ("Make a mind-map of your weekly tasks.", "map"),
])
def test_keyword_rejects(text, keyword):
    r = F.check(text)
    assert r.reason == "keyword"
    assert r.evidence["keyword"] == keyword
    start, end = r.evidence["span"]
    assert " ".join(text[start:end].lower().split()) == keyword
    json.dumps(r.evidence)


@pytest.mark.parametrize("text", [
    "Explain what mapping a network means.",
    "Describe a famous photograph from history.",
    "Write a paragraph about imagery in poetry.",
    "Explain what a profile is on social media.",
    "Describe the plotline of a famous novel.",
    "Name a good place to go for a holiday.",
    "Explain how to tell a story well.",
    "List the files_count variable's uses in code.",
])
def test_keyword_whole_words_only(text):
    assert F.check(text) is None


def test_keyword_all_matches_and_custom_lists():
    text = "Draw a map, then plot the graph."
    r = F.check(text)
    assert [m["keyword"] for m in r.evidence["matches"]] == ["draw", "map", "plot", "graph"]
    assert r.evidence["keyword"] == "draw" and r.evidence["span"] == [0, 4]
    for m in r.evidence["matches"]:
        s, e = m["span"]
        assert text[s:e].lower() == m["keyword"]
    alpaca = InstructionFilter(keywords=ALPACA_KEYWORDS)
    assert reason("Compose music for a short film.", alpaca) == "keyword"
    assert reason("Compose music for a short film.") is None
    custom = InstructionFilter(keywords=["Spread  Sheet", "c++", "spread sheet", ""])
    assert custom.keywords == ("spread sheet", "c++")
    assert reason("Build a spread sheet for my budget.", custom) == "keyword"
    assert reason("Explain pointers in C++ to a beginner.", custom) == "keyword"
    assert reason("Describe the image in three sentences.", custom) is None
    none = InstructionFilter(keywords=())
    assert reason("Describe the image in three sentences.", none) is None
    with pytest.raises(TypeError):
        InstructionFilter(keywords="image")


def test_check_order_and_check_all():
    text = "Write a program"            # short, program prefix
    assert reason(text) == "too_short"
    assert [r.reason for r in F.check_all(text)] == ["too_short", "write_a_program"]
    text = "Write a program to draw an image of a map."
    assert [r.reason for r in F.check_all(text)] == ["write_a_program", "keyword"]
    text = "#image"
    assert [r.reason for r in F.check_all(text)] == ["starts_with_punctuation", "too_short", "keyword"]
    assert reason("\u00bfDraw a map of the city?") == "non_ascii_start"


def test_messages_and_evidence_are_plain_and_serialisable():
    texts = ["", "\u00e9l", "?why", "Hi there", " ".join(["w"] * 200),
             "Write a program to do it.", "Describe the image in detail now."]
    for text in texts:
        for r in F.check_all(text):
            assert r.message.endswith(".") and "\n" not in r.message
            json.dumps(r.evidence)
            assert r.label == REASON_LABELS[r.reason]
            assert json.loads(json.dumps(r.to_dict()))["reason"] == r.reason


def test_rejection_is_frozen():
    r = Rejection("empty", "The instruction is empty.", {})
    with pytest.raises(AttributeError):
        r.reason = "other"


def test_config_round_trip():
    flt = InstructionFilter(min_words=3, max_words=100, keywords=ALPACA_KEYWORDS)
    cfg = flt.config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg == {"min_words": 3, "max_words": 100, "keywords": list(ALPACA_KEYWORDS)}
    again = InstructionFilter.from_config(cfg)
    assert again == flt and again.config() == cfg
    assert InstructionFilter.from_config({}) == InstructionFilter()
    with pytest.raises(ValueError):
        InstructionFilter.from_config({"min_word": 3})
    with pytest.raises(ValueError):
        InstructionFilter(min_words=5, max_words=4)
    with pytest.raises(ValueError):
        InstructionFilter(min_words=-1)


# ------------------------------------------------------------------- instances

def reasons(rejected):
    return [r.reason for _, r in rejected]


def test_clean_instances_are_kept_as_is():
    instances = [{"input": "2 + 2", "output": "4"}, {"input": "", "output": "Hello."},
                 {"input": "3 + 3", "output": "6", "extra": 1}]
    kept, rejected = filter_instances(instances)
    assert kept == instances and all(a is b for a, b in zip(kept, instances))
    assert rejected == []
    assert filter_instances([]) == ([], [])


def test_duplicates_keep_the_first_copy():
    a = {"input": "2 + 2", "output": "4"}
    b = {"input": " 2 + 2 ", "output": "4\n"}       # same after stripping
    c = {"input": "3 + 3", "output": "6"}
    kept, rejected = filter_instances([a, c, b, dict(a)])
    assert kept == [a, c]
    assert reasons(rejected) == ["duplicate_instance", "duplicate_instance"]
    assert rejected[0][0] is b
    assert rejected[0][1].evidence == {"first_index": 0}


def test_same_input_different_output_drops_the_instruction_like_the_reference():
    instances = [{"input": "2 + 2", "output": "4"}, {"input": "3 + 3", "output": "6"},
                 {"input": "2 + 2", "output": "5"}]
    kept, rejected = filter_instances(instances)
    assert kept == []
    assert reasons(rejected) == ["same_input_different_output"] * 3
    ev = rejected[0][1].evidence
    assert ev["input"] == "2 + 2" and ev["outputs"] == ["4", "5"]
    assert rejected[1][1].evidence["input"] == "2 + 2"     # the other instance: why it goes
    # Narrower scope on request: only the conflicting input's instances go.
    kept, rejected = filter_instances(instances, conflict_scope="input")
    assert kept == [instances[1]]
    assert reasons(rejected) == ["same_input_different_output"] * 2
    with pytest.raises(ValueError):
        filter_instances(instances, conflict_scope="everything")


def test_empty_inputs_never_conflict():
    instances = [{"input": "", "output": "A haiku."}, {"input": "  ", "output": "Another haiku."}]
    kept, rejected = filter_instances(instances)
    assert kept == instances and rejected == []


@pytest.mark.parametrize("instance, why, evidence", [
    ({"input": "x", "output": ""}, "empty_output", {}),
    ({"input": "x", "output": "   "}, "empty_output", {}),
    ({"input": "x"}, "empty_output", {}),
    ({"input": "x", "output": None}, "empty_output", {}),
    ({"input": "", "output": ""}, "empty_output", {}),
    ({"input": "same", "output": " same "}, "input_equals_output", {}),
    ({"input": "List three fruits:", "output": "apple"}, "truncated", {"field": "input"}),
    ({"input": "x", "output": "The answer is: \n"}, "truncated", {"field": "output"}),
    ({"output": "Here they are:"}, "truncated", {"field": "output"}),
])
def test_invalid_instances(instance, why, evidence):
    good = {"input": "2 + 2", "output": "4"}
    kept, rejected = filter_instances([good, instance])
    assert kept == [good]
    assert len(rejected) == 1
    inst, r = rejected[0]
    assert inst is instance and r.reason == why and r.evidence == evidence
    json.dumps(r.evidence)


def test_kept_order_is_preserved():
    instances = [{"input": str(i), "output": str(i * 2)} for i in range(1, 8)]
    instances.insert(3, {"input": "z", "output": ""})
    kept, rejected = filter_instances(instances)
    assert kept == [x for x in instances if x["output"]]
    assert reasons(rejected) == ["empty_output"]
