"""Prompt builders, prompt recognition, and the forgiving parsers of every stage."""
from pathlib import Path

import pytest

from selfinstruct import parsing, prompts
from selfinstruct.parsing import (
    TRUNCATED, clean_instruction, extract_batch_examples, extract_instruction_examples,
    extract_target_instruction, identify_stage, parse_batch, parse_classification, parse_instances,
    parse_instructions, read_prompt, wants_output_first,
)
from selfinstruct.prompts import (
    PROMPT_VERSIONS, STAGE_BATCH, STAGE_CLASSIFY, STAGE_INSTANCES, STAGE_INSTRUCTIONS, Prompt,
    build_batch_prompt, build_classify_prompt, build_instance_prompt, build_instruction_prompt,
)

EIGHT = [
    "Write a limerick about a forgetful robot.",
    "Explain the difference between weather and climate to a ten-year-old.",
    "Sort the given words in alphabetical order.",
    "Is the following sentence written in the passive voice?",
    "Plan a three-day trip to Lisbon on a small budget.",
    "Convert the temperature from Celsius to Fahrenheit.",
    "Suggest five names for a podcast about\n  urban gardening.",   # spans lines
    "Rewrite the email so that it sounds friendlier.",
]
BATCH_EXAMPLES = [
    {"instruction": "Give the opposite of the word.", "input": "ancient", "output": "modern"},
    {"instruction": "Name three fruits that are rich in vitamin C.", "input": "",
     "output": "Oranges, kiwis and strawberries."},
    {"instruction": "Format the list as a bulleted list.", "input": "milk, eggs\nbread",
     "output": "- milk\n- eggs\n- bread"},
]


def all_prompts() -> list[Prompt]:
    return [
        build_instruction_prompt(EIGHT),
        build_classify_prompt("Decide whether the tweet is sarcastic."),
        build_instance_prompt("Translate the phrase into French.", False),
        build_instance_prompt("Decide whether the tweet is sarcastic.", True),
        build_batch_prompt(BATCH_EXAMPLES),
    ]


def chat_joined(p: Prompt) -> str:
    """What the offline server hands the responder for a chat request."""
    return "\n\n".join(m["content"] for m in p.as_messages())


def ip(n_examples=8, num=8) -> Prompt:
    return build_instruction_prompt(EIGHT[:n_examples], num_to_generate=num)


# --------------------------------------------------------------------------- builders

def test_instruction_prompt_layout():
    p = build_instruction_prompt(EIGHT)
    assert p.stage == STAGE_INSTRUCTIONS and p.version == PROMPT_VERSIONS[p.stage]
    assert p.meta["start_index"] == 9 and p.meta["stop_index"] == 17
    assert p.stop == ("\n\n", "\n17.")
    lines = p.text.split("\n")
    assert lines[-1] == "9."                                       # left open for the model
    assert lines[-9] == "1. Write a limerick about a forgetful robot."
    assert "7. Suggest five names for a podcast about urban gardening." in lines
    assert "Add 8 new tasks to the list (numbers 9 to 16)." in p.text
    assert p.system and "no introduction" in p.system
    assert p.full_text() == p.system + "\n\n" + p.text


def test_instruction_prompt_counts_generalise():
    p = build_instruction_prompt(EIGHT[:3], num_to_generate=5)
    assert p.meta["start_index"] == 4 and p.stop == ("\n\n", "\n9.")
    assert p.text.endswith("\n4.")
    one = build_instruction_prompt(EIGHT[:2], num_to_generate=1)
    assert "Add 1 new task to the list (number 3)." in one.text
    empty = build_instruction_prompt([], num_to_generate=2)
    assert empty.text.endswith("\n\n1.") and empty.meta["start_index"] == 1
    with pytest.raises(ValueError):
        build_instruction_prompt(["ok", "   "])
    with pytest.raises(ValueError):
        build_instruction_prompt(EIGHT, num_to_generate=0)


def test_classify_prompt_layout():
    p = build_classify_prompt("  Decide whether the tweet is sarcastic.  ")
    assert p.stage == STAGE_CLASSIFY and p.version == "classify-v1"
    assert p.text.endswith("Task: Decide whether the tweet is sarcastic.\nLabeling task?")
    answers = [ln.rsplit(" ", 1)[1] for ln in p.text.split("\n")
               if ln.startswith("Labeling task? ")]
    assert 12 <= len(answers) <= 16
    assert answers.count("Yes") == answers.count("No") == len(answers) // 2
    assert p.text.count("Task: ") == len(answers) + 1                # target last
    with pytest.raises(ValueError):
        build_classify_prompt(" ")


def test_instance_prompts_input_first_and_output_first():
    plain = build_instance_prompt("Translate the phrase into French.", False)
    label = build_instance_prompt("Decide whether the tweet is sarcastic.", True)
    for p in (plain, label):
        assert p.stage == STAGE_INSTANCES and p.version == "instances-v1"
        assert p.text.endswith("\nExample 1")
        assert p.stop == ("Example 6", "\nTask:")
        assert "up to 5 examples" in p.text
        assert "Input: (none)" in p.text                       # the no-input convention
    assert plain.text.endswith("Task: Translate the phrase into French.\nExample 1")
    assert "Label:" not in plain.text and "Output:" in plain.text
    # output-first: every demo example gives the label before the input
    demo = label.text.split("\n")
    label_lines = [i for i, ln in enumerate(demo) if ln.startswith("Label:")]
    assert label_lines and all(demo[i + 1].startswith("Input:") for i in label_lines)
    assert "Output:" not in label.text
    assert plain.meta["order"] == "input-first" and label.meta["order"] == "output-first"


def test_batch_prompt_layout():
    p = build_batch_prompt(BATCH_EXAMPLES)
    assert p.stage == STAGE_BATCH and p.version == "batch-v1"
    assert p.text.endswith("\n\n### Task 4")
    assert p.stop == ("### Task 24",)
    assert p.meta == {"start_index": 4, "stop_index": 24, "num_to_generate": 20,
                      "num_examples": 3}
    assert "Write 20 new tasks (numbers 4 to 23)" in p.text
    assert "100 words" in p.text and "pictures" in p.text
    assert "### Task 3\nInstruction: Format the list as a bulleted list.\nInput:\nmilk, eggs\n" \
           "bread\nOutput:\n- milk\n- eggs\n- bread" in p.text
    assert "### Task 2\nInstruction: Name three fruits that are rich in vitamin C.\n" \
           "Input: (none)\n" in p.text
    with pytest.raises(ValueError):
        build_batch_prompt([{"instruction": " "}])


def test_prompt_versions_cover_every_stage():
    assert set(PROMPT_VERSIONS) == set(prompts.STAGES)
    for p in all_prompts():
        assert p.version == PROMPT_VERSIONS[p.stage]


def test_prompts_are_our_own_wording():
    """No sentence of the Self-Instruct or Alpaca templates (fragments checked, lower-case)."""
    borrowed = [
        "come up with a series of tasks", "regarded as a classification task",
        "finite output labels", "is it classification?", "come up with examples for the",
        "try to generate multiple examples", "generate the output directly",
        "given the classification task definition", "corresponds to each of the class labels",
        "you are asked to come up with", "here are the requirements",
        "try not to repeat the verb", "maximize diversity", "gpt language model",
        "list of 20 tasks", "should not contain simple placeholders",
    ]
    for p in all_prompts():
        text = p.full_text().lower()
        for phrase in borrowed:
            assert phrase not in text, (p.stage, phrase)


def test_library_modules_do_not_import_streamlit():
    root = Path(prompts.__file__).parent
    for name in ("prompts.py", "parsing.py", "demo.py"):
        source = (root / name).read_text()
        assert "import streamlit" not in source and "from streamlit" not in source


# --------------------------------------------------------------------------- reading prompts back

@pytest.mark.parametrize("render", [lambda p: p.text, Prompt.full_text, chat_joined],
                         ids=["text", "full_text", "chat_joined"])
def test_identify_stage_on_every_builder(render):
    got = [identify_stage(render(p)) for p in all_prompts()]
    assert got == [STAGE_INSTRUCTIONS, STAGE_CLASSIFY, STAGE_INSTANCES, STAGE_INSTANCES,
                   STAGE_BATCH]


def test_identify_stage_unknown():
    assert identify_stage("What is the capital of France?") is None
    assert identify_stage("") is None
    assert read_prompt("hello") is None
    assert extract_target_instruction("hello") is None


@pytest.mark.parametrize("render", [Prompt.full_text, chat_joined])
def test_payloads_round_trip(render):
    ins, cls, inst, lab, batch = (render(p) for p in all_prompts())
    examples, start = extract_instruction_examples(ins)
    assert examples == [" ".join(e.split()) for e in EIGHT] and start == 9
    assert read_prompt(ins).num_to_generate == 8
    assert extract_target_instruction(cls) == "Decide whether the tweet is sarcastic."
    assert extract_target_instruction(inst) == "Translate the phrase into French."
    assert wants_output_first(inst) is False and wants_output_first(lab) is True
    assert extract_batch_examples(batch) == BATCH_EXAMPLES
    payload = read_prompt(batch)
    assert payload.start_index == 4 and payload.num_to_generate == 20
    assert extract_batch_examples(ins) is None and extract_instruction_examples(batch) is None


def test_target_instruction_with_line_breaks_and_labels_inside():
    tricky = "Question: in which year did the bridge open?\nAnswer:"
    for p in (build_classify_prompt(tricky), build_instance_prompt(tricky, True),
              build_instance_prompt("Task: explain the word.\nExample 1 is not needed", False)):
        assert extract_target_instruction(p.full_text()) == p.meta["instruction"].strip()


def test_payload_with_other_counts():
    p = build_instruction_prompt(EIGHT[:5], num_to_generate=3)
    payload = read_prompt(p.full_text())
    assert payload.start_index == 6 and payload.num_to_generate == 3
    b = build_batch_prompt(BATCH_EXAMPLES[:1], num_to_generate=2)
    payload = read_prompt(b.text)
    assert payload.examples == BATCH_EXAMPLES[:1] and payload.start_index == 2
    assert payload.num_to_generate == 2
    assert read_prompt(build_batch_prompt([], num_to_generate=2).text).examples == []


# --------------------------------------------------------------------------- parse_instructions

A, B, C = ("Describe the water cycle in three sentences.",
           "Create a packing list for a weekend camping trip.",
           "Classify the animal as a mammal, bird or reptile.")


@pytest.mark.parametrize("answer", [
    f" {A}\n10. {B}\n11. {C}",                                         # completion mode
    f"9. {A}\n10. {B}\n11. {C}",                                       # label repeated
    f"Sure! Here are some more tasks:\n\n9. {A}\n10. {B}\n11. {C}\n\nLet me know if you need more!",
    f"Here you go:\n**9.** {A}\n**10.** {B}\n**11.** {C}",
    f"**9. {A}**\n**10. {B}**\n**11. {C}**",
    f"Task 9: {A}\nTask 10: {B}\nTask 11: {C}",
    f"**Task 9:** {A}\n**Task 10:** {B}\n**Task 11:** {C}",
    f"### 9. {A}\n### 10. {B}\n### 11. {C}",
    f"9) {A}\n10) {B}\n11) {C}",
    f"(9) {A}\n(10) {B}\n(11) {C}",
    f"Certainly! Continuing the list:\n- {A}\n- {B}\n* {C}\nHope this helps!",
    f"```\n9. {A}\n10. {B}\n11. {C}\n```",
    f"## New tasks\n\n9. {A}\n\n10. {B}\n\n11. {C}\n\nThese tasks cover a range of skills.",
    f"1. {A}\n2. {B}\n3. {C}",                                         # numbering restarted
    f"9. \"{A}\"\n10. \u201c{B}\u201d\n11. '{C}'",
    f"9. **Science:** {A}\n10. **Travel** - {B}\n11. **Biology:** {C}",
    f"9. Instruction: {A}\n10. Task: {B}\n11. {C}",
    f"**Task 9**\n{A}\n\n**Task 10**\n{B}\n\n**Task 11**\n{C}",
    f"9.   {A}\n10.\t{B}   \n11. {C}",
    f" {A}\n10. {B}\n11. {C}\n12. {A}\n13. {B.upper()}",                 # duplicates
    f" {A}\n10. {B}\n11. {C}\n17. Write a song.\n18. Count to ten.",      # past the stop label
    f"9. {A}\n10. {B}\n11. {C}\nLet me know if you would like more ideas!\n12. Extra task here.",
])
def test_parse_instructions_styles(answer):
    got = parse_instructions(answer, ip())
    assert got.items == [A, B, C], answer
    assert got.unparseable == []


def test_parse_instructions_items_spanning_lines():
    answer = " Write a short story about a lighthouse keeper\nwho finds a message in a bottle.\n" \
             "10. Explain how vaccines\n    train the immune system.\n11. " + C
    got = parse_instructions(answer, ip())
    assert got.items == [
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
        "Explain how vaccines train the immune system.", C]


def test_parse_instructions_sub_bullets_stay_inside_numbered_item():
    answer = "9. Compare the two options below and pick one:\n   - renting a flat\n" \
             "   - buying a house\n10. " + B
    got = parse_instructions(answer, ip())
    assert got.items == ["Compare the two options below and pick one: - renting a flat "
                         "- buying a house", B]


def test_parse_instructions_truncated_last_item():
    answer = f" {A}\n10. {B}\n11. Classify the animal as a mam"
    kept = parse_instructions(answer, ip())
    assert kept.items == [A, B, "Classify the animal as a mam"]
    cut = parse_instructions(answer, ip(), finish_reason="length")
    assert cut.items == [A, B]
    assert cut.unparseable == [f"{TRUNCATED}: Classify the animal as a mam"]
    # a complete answer that stopped normally loses nothing
    assert parse_instructions(answer, ip(), finish_reason="stop").items == kept.items
    # truncated inside the only item of a completion
    single = parse_instructions(" Describe the rules of", ip(), finish_reason="length")
    assert single.items == [] and single.unparseable[0].startswith(TRUNCATED)


def test_parse_instructions_length_after_closing_remark_keeps_last_item():
    answer = f"9. {A}\n10. {B}\nLet me know if you need more tasks, I can also"
    got = parse_instructions(answer, ip(), finish_reason="length")
    assert got.items == [A, B]


def test_parse_instructions_first_completion_item_ending_with_colon():
    answer = f" Summarize this email into a single sentence:\n10. {B}"
    assert parse_instructions(answer, ip()).items == [
        "Summarize this email into a single sentence:", B]
    # without a list going on at 10, a lone line ending with ":" reads as a preamble
    assert parse_instructions("Below you will find new tasks:", ip()).items == []


def test_parse_instructions_labels_on_their_own_lines():
    answer = f"**Task 9**\n\n{A}\n\n**Task 10**\n\n{B}\n\n---\n\n**Task 11**\n\n{C}"
    assert parse_instructions(answer, ip()).items == [A, B, C]


def test_parse_instructions_single_completion_item():
    assert parse_instructions(" Name the largest desert on Earth.", ip()).items == [
        "Name the largest desert on Earth."]


@pytest.mark.parametrize("answer", [
    "I could suggest many more tasks, but it depends on what the assistant is for. Maybe some "
    "about cooking. Maybe some about travel. It is hard to say which would help most.",
    "As an AI language model, I cannot continue this list.",
    "%$#@!! 7x\n\t;;; ((((\nqq9 ~~~ &&& ^^^ zz$",
    "asdkj123 ;;; ::: @@ ## $$ %% ^^ && ** (( ))",
])
def test_parse_instructions_garbage(answer):
    got = parse_instructions(answer, ip())
    assert got.items == []
    assert got.unparseable and all(u.startswith("not a list item: ") for u in got.unparseable)


def test_parse_instructions_empty_and_blank():
    assert parse_instructions("", ip()).items == []
    assert parse_instructions("   \n\n ", ip()).unparseable == []
    got = parse_instructions(f"9. {A}\n10.\n11. **  **\n12. {B}", ip())
    assert got.items == [A, B]


def test_parse_instructions_stray_paragraph_is_unparseable():
    got = parse_instructions(f"9. {A}\n\nThis one is tricky because it needs data.\n\n10. {B}",
                             ip())
    assert got.items == [A, B]
    assert got.unparseable == ["not a list item: This one is tricky because it needs data."]


def test_parse_instructions_reads_bounds_from_text_without_meta():
    built = ip(n_examples=3, num=2)                  # start 4, stop at 6
    bare = Prompt(stage=built.stage, version=built.version, text=built.text)
    answer = f" {A}\n5. {B}\n6. {C}"
    assert parse_instructions(answer, bare).items == [A, B]
    assert parse_instructions(answer, built).items == [A, B]
    assert parse_instructions(answer, None).items == [A, B, C]       # no prompt: no stop


def test_parse_instructions_bullets_capped_to_requested_count():
    p = ip(num=2)
    got = parse_instructions(f"- {A}\n- {B}\n- {C}", p)
    assert got.items == [A, B]


def test_clean_instruction():
    assert clean_instruction("  **Write**   a  poem\n about cats.  ") == "Write a poem about cats."
    assert clean_instruction('"Quoted task here."') == "Quoted task here."
    assert clean_instruction('"Hello" is a greeting. Explain why it is "polite".') == \
        '"Hello" is a greeting. Explain why it is "polite".'
    assert clean_instruction("**Poetry:** Write a poem about the moon.") == \
        "Write a poem about the moon."
    assert clean_instruction("**") == ""
    assert clean_instruction("Explain what __init__ does.") == "Explain what __init__ does."
    assert clean_instruction("Instruction-tuned models: explain them.") == \
        "Instruction-tuned models: explain them."


# --------------------------------------------------------------------------- parse_classification

@pytest.mark.parametrize("answer, expected", [
    (" Yes", True), ("Yes", True), ("yes.", True), ("YES!", True), ("**Yes**", True),
    ("Answer: Yes", True), ("Yes, because the output is one of two labels.", True),
    ("Labeling task? Yes", True), ("The answer is yes.", True), ("  \n\nyes\n", True),
    ("True", True), ("It is a classification task.", True), ("**Answer:** yes", True),
    (" No", False), ("no", False), ("No.", False), ("**No**", False), ("Answer: No", False),
    ("No, the answer is free text.", False), ("nope", False),
    ("This is not a labeling task.", False), ("It isn't a classification task.", False),
    ("Labeling task? No\n\nTask: something else\nLabeling task? Yes", False),
    ("Yes/No", None), ("Yes and no.", None), ("It depends on the inputs.", None), ("", None),
    ("N/A", None), ("Maybe", None), ("%%$#", None),
])
def test_parse_classification(answer, expected):
    assert parse_classification(answer) is expected


# --------------------------------------------------------------------------- parse_instances

CODE = "def area(r):\n    import math\n\n    return math.pi * r ** 2"


@pytest.mark.parametrize("answer", [
    "\nInput: 3\nOutput: 9\nExample 2\nInput: (none)\nOutput: 0\nExample 3\nInput: -4\nOutput: 16",
    "Example 1\nInput: 3\nOutput: 9\n\nExample 2\nInput: None\nOutput: 0\n\nExample 3\n"
    "Input: -4\nOutput: 16",
    "Here are some examples:\n\n**Example 1**\n**Input:** 3\n**Output:** 9\n\n**Example 2**\n"
    "**Input:** N/A\n**Output:** 0\n\n**Example 3**\n**Input:** -4\n**Output:** 16\n\n"
    "I hope these examples help!",
    "### Example 1:\n- Input: 3\n- Output: 9\n### Example 2:\n- Input: <noinput>\n- Output: 0\n"
    "### Example 3:\n- Input: -4\n- Output: 16",
    "Input 1: 3\nOutput 1: 9\nInput 2:\nOutput 2: 0\nInput 3: -4\nOutput 3: 16",
    "Input: 3\nOutput: 9\n\nOutput: 0\n\nInput: -4\nOutput: 16",
    "Task: Square the number.\nExample 1\nInput: 3\nOutput: 9\nExample 2\nInput: -\nOutput: 0\n"
    "Example 3\nInput: -4\nOutput: 16\n\nTask: Another task that was not asked for.\nExample 1\n"
    "Input: 1\nOutput: 2",
    "```\nExample 1\nInput: 3\nOutput: 9\nExample 2\nInput: (No input)\nOutput: 0\nExample 3\n"
    "Input: -4\nOutput: 16\n```",
    "**Input**: 3\n**Output**: 9\n---\n**Input**: none.\n**Output**: 0\n---\n**Input**: -4\n"
    "**Output**: 16",
])
def test_parse_instances_input_first_styles(answer):
    got = parse_instances(answer, False)
    assert got.instances == [{"input": "3", "output": "9"}, {"input": "", "output": "0"},
                             {"input": "-4", "output": "16"}], answer
    assert got.unparseable == []


def test_parse_instances_multiline_code_and_inputs():
    answer = (f"\nInput: (none)\nOutput:\n{CODE}\nExample 2\nInput:\nline one\n  line two\n"
              "Output: two lines\nExample 3\nInput: x\nOutput:\n```python\nprint('x')\n\n"
              "print('y')\n```")
    got = parse_instances(answer, False)
    assert got.instances == [
        {"input": "", "output": CODE},
        {"input": "line one\n  line two", "output": "two lines"},
        {"input": "x", "output": "```python\nprint('x')\n\nprint('y')\n```"},
    ]


def test_parse_instances_rule_lines_inside_and_between_values():
    answer = "Input: a\nOutput:\nTitle\n-----\nbody text\n---\nInput: c\nOutput: d\n***"
    assert parse_instances(answer, False).instances == [
        {"input": "a", "output": "Title\n-----\nbody text"}, {"input": "c", "output": "d"}]


def test_parse_instances_output_with_chatter_like_words_is_kept():
    answer = "\nInput: a recipe\nOutput:\nMix and bake.\n\nEnjoy your cake!\n\nNote that ovens vary."
    assert parse_instances(answer, False).instances == [
        {"input": "a recipe", "output": "Mix and bake.\n\nEnjoy your cake!\n\nNote that ovens vary."}]


@pytest.mark.parametrize("answer", [
    "\nLabel: Positive\nInput: Loved it.\nExample 2\nLabel: Negative\nInput: Hated it.",
    "Example 1\nClass label: Positive\nInput: Loved it.\nExample 2\nClass label: Negative\n"
    "Input: Hated it.",
    "**Example 1**\n**Label:** **Positive**\n**Input:** Loved it.\n\n**Example 2**\n"
    "**Label:** Negative\n**Input:** Hated it.\n\nLet me know if you need more!",
    "Input: Loved it.\nOutput: Positive\nInput: Hated it.\nOutput: Negative",   # input-first order
    "Label: \"Positive\"\nInput: Loved it.\nLabel: Negative\nInput: Hated it.",
])
def test_parse_instances_output_first_styles(answer):
    got = parse_instances(answer, True)
    assert got.instances == [{"input": "Loved it.", "output": "Positive"},
                             {"input": "Hated it.", "output": "Negative"}], answer


def test_parse_instances_label_without_input():
    got = parse_instances("\nLabel: Jupiter\nInput: (none)", True)
    assert got.instances == [{"input": "", "output": "Jupiter"}]


def test_parse_instances_at_most_five():
    answer = "\n".join(f"Example {k}\nInput: {k}\nOutput: {k * k}" for k in range(1, 9))
    got = parse_instances(answer, False)
    assert [i["input"] for i in got.instances] == ["1", "2", "3", "4", "5"]


def test_parse_instances_truncated_and_missing_output():
    answer = "\nInput: 3\nOutput: 9\nExample 2\nInput: 5\nOutput: 2"
    assert len(parse_instances(answer, False).instances) == 2
    cut = parse_instances(answer, False, finish_reason="length")
    assert cut.instances == [{"input": "3", "output": "9"}]
    assert cut.unparseable == [f"{TRUNCATED}: input: 5 | output: 2"]
    missing = parse_instances("\nInput: 3\nOutput: 9\nExample 2\nInput: 5", False)
    assert missing.instances == [{"input": "3", "output": "9"}]
    assert missing.unparseable == ["no output: input: 5"]
    empty_out = parse_instances("\nInput: 3\nOutput:", False)
    assert empty_out.instances == [{"input": "3", "output": ""}]   # filters reject empty_output


@pytest.mark.parametrize("answer", [
    "This is a good task. One could imagine many different inputs for it.",
    "%$#@!! 7x\n\t;;; ((((\nqq9 ~~~",
])
def test_parse_instances_garbage(answer):
    for cls in (False, True):
        got = parse_instances(answer, cls)
        assert got.instances == [] and got.unparseable


def test_parse_instances_nothing():
    assert parse_instances("", False).instances == []
    assert parse_instances("", False).unparseable == []


# --------------------------------------------------------------------------- parse_batch

T1 = {"instruction": "List three uses for baking soda.", "input": "",
      "output": "Cleaning, baking and deodorising."}
T2 = {"instruction": "Fix the grammar in the sentence.", "input": "She go to school.",
      "output": "She goes to school."}
T3 = {"instruction": "Explain how to boil an egg.", "input": "",
      "output": "1. Boil water.\n2. Add the egg.\n\n3. Wait nine minutes."}


@pytest.mark.parametrize("answer", [
    # completion mode: the prompt ended with "### Task 4"
    f"\nInstruction: {T1['instruction']}\nInput: (none)\nOutput: {T1['output']}\n\n### Task 5\n"
    f"Instruction: {T2['instruction']}\nInput: {T2['input']}\nOutput: {T2['output']}\n\n"
    f"### Task 6\nInstruction: {T3['instruction']}\nInput: (none)\nOutput:\n{T3['output']}",
    # chat, markdown
    f"Sure! Here are the new tasks:\n\n**Task 4**\n**Instruction:** {T1['instruction']}\n"
    f"**Input:** None\n**Output:** {T1['output']}\n\n**Task 5**\n**Instruction:** "
    f"{T2['instruction']}\n**Input:** {T2['input']}\n**Output:** {T2['output']}\n\n**Task 6**\n"
    f"**Instruction:** {T3['instruction']}\n**Input:** N/A\n**Output:**\n{T3['output']}\n\n"
    "Let me know if you need more tasks.",
    # Alpaca-like numbering with ### separators
    f"###\n4. Instruction: {T1['instruction']}\n4. Input:\n<noinput>\n4. Output:\n{T1['output']}\n"
    f"###\n5. Instruction: {T2['instruction']}\n5. Input:\n{T2['input']}\n5. Output:\n"
    f"{T2['output']}\n###\n6. Instruction: {T3['instruction']}\n6. Input:\n<noinput>\n"
    f"6. Output:\n{T3['output']}",
    # "Task N: instruction" headers
    f"Task 4: {T1['instruction']}\nInput: (none)\nOutput: {T1['output']}\n\nTask 5: "
    f"{T2['instruction']}\nInput: {T2['input']}\nOutput: {T2['output']}\n\nTask 6: "
    f"{T3['instruction']}\nOutput:\n{T3['output']}",
])
def test_parse_batch_styles(answer):
    got = parse_batch(answer, build_batch_prompt(BATCH_EXAMPLES))
    assert got.tasks == [T1, T2, T3], answer
    assert got.unparseable == []


def test_parse_batch_stop_cap_dedupe_and_truncation():
    p = build_batch_prompt(BATCH_EXAMPLES, num_to_generate=2)      # tasks 4 and 5; stop at 6
    answer = (f"\nInstruction: {T1['instruction']}\nInput: (none)\nOutput: {T1['output']}\n\n"
              f"### Task 5\nInstruction: {T1['instruction']}\nOutput: again\n\n"
              f"### Task 6\nInstruction: {T2['instruction']}\nInput: x\nOutput: y")
    assert parse_batch(answer, p).tasks == [T1]                    # duplicate dropped, 6 ignored
    assert [t["instruction"] for t in parse_batch(answer).tasks] == [T1["instruction"],
                                                                     T2["instruction"]]
    cut = parse_batch(f"\nInstruction: {T1['instruction']}\nInput: (none)\nOutput: {T1['output']}"
                      f"\n\n### Task 5\nInstruction: {T2['instruction']}\nInput: She go",
                      p, finish_reason="length")
    assert cut.tasks == [T1] and cut.unparseable[0].startswith(TRUNCATED)
    no_output = parse_batch(f"### Task 4\nInstruction: {T2['instruction']}\nInput: x\n\n"
                            f"### Task 5\nInput: only input\nOutput: y")
    assert no_output.tasks == []
    assert no_output.unparseable == [f"no output: instruction: {T2['instruction']} | input: x",
                                     "no instruction: input: only input | output: y"]


def test_parse_batch_garbage():
    got = parse_batch("I am not able to write more tasks right now, sorry about that.")
    assert got.tasks == [] and got.unparseable


def test_parsed_types_are_simple():
    assert parsing.ParsedList().items == [] and parsing.ParsedBatch().tasks == []
    assert parsing.ParsedInstances().instances == []
