"""Prompt builders for every stage of the Self-Instruct loop (our own wording).

A `Prompt` is mode-agnostic: `llm.LLMClient` sends `text` as the prompt of the
completions endpoint, or as one user message (after `system`, when set) to the
chat completions endpoint.

Every prompt's `text` works on its own as a completion prompt for a base model: it
ends exactly where the model should carry on (an open list number, an open example,
an open answer). `system` only adds a "reply with the continuation only" request for
chat models. `stop` holds the stop sequences meant for completion mode.

Canonical layouts (what the parsers in `parsing` read best, and what `demo` writes):

instructions   one task per line, ``N. text``; the prompt ends with the open label
               ``N.`` of the first new item; stop at a blank line or at the label of
               item ``len(examples) + num_to_generate + 1``.
classify       ``Task: ...`` then ``Labeling task? Yes`` / ``Labeling task? No``; the
               prompt ends with ``Labeling task?``.
instances      ``Task: ...`` then ``Example 1``, ``Example 2``... each followed by
               ``Input: ...`` and ``Output: ...`` (input-first) or ``Label: ...`` and
               ``Input: ...`` (output-first, for classification tasks). ``Input: (none)``
               marks a task that needs no input. A value spanning several lines starts
               on the line after its label. The prompt ends with ``Example 1``.
batch          ``### Task N`` then ``Instruction: ...``, ``Input: ...``, ``Output: ...``;
               the prompt ends with the header of the first new task.

Structured output (chat mode only, where the server supports it): each stage also has a
JSON schema (`response_schema`) and a prompt variant (``structured=True``) that shows the
same examples but asks for one JSON object instead of a continuation; `llm.request_body`
sends the schema as ``response_format``, and `parsing` reads such answers strictly. The
variant's text is the text prompt's, with the open label left out and a constant request
for JSON (`JSON_TAILS`) appended, so `parsing.read_prompt` reads both.

Reading a rendered prompt back (which stage, which examples, which numbers) is parsing, and
lives in `parsing` (`identify_stage`, `read_prompt`): this module builds prompts and never
imports `parsing`; `parsing` imports the constants it reads prompts by (the heads, the
bodies, `JSON_TAILS`) from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Stage names, stored with every request.
STAGE_INSTRUCTIONS = "instructions"   # continue a numbered list of tasks
STAGE_CLASSIFY = "classify"           # is this a classification task? yes/no
STAGE_INSTANCES = "instances"         # write input/output examples for one task
STAGE_BATCH = "batch"                 # Alpaca-style: complete tasks in one go
STAGES = (STAGE_INSTRUCTIONS, STAGE_CLASSIFY, STAGE_INSTANCES, STAGE_BATCH)


@dataclass(frozen=True)
class Prompt:
    stage: str
    version: str          # e.g. "instructions-v1"; stored with every request
    text: str             # the prompt body
    system: str | None = None          # chat mode only
    stop: tuple[str, ...] | None = None  # stop sequences (completion mode)
    meta: dict = field(default_factory=dict, compare=False)  # e.g. {"start_index": 9}
    schema: dict | None = field(default=None, compare=False)  # structured output: the answer's JSON schema

    @property
    def structured(self) -> bool:
        return bool(self.schema)

    def response_format(self) -> dict | None:
        """The chat request's ``response_format`` (OpenAI structured outputs, which vLLM,
        llama.cpp's server and Ollama's OpenAI endpoint read too), or None."""
        if not self.schema:
            return None
        return {"type": "json_schema",
                "json_schema": {"name": f"selfinstruct_{self.stage}", "strict": True, "schema": self.schema}}

    def as_messages(self) -> list[dict]:
        messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.text})
        return messages

    def full_text(self) -> str:
        """Everything the model sees, as one string (what is stored and what the
        offline server answers from)."""
        return f"{self.system}\n\n{self.text}" if self.system else self.text


# --------------------------------------------------------------------------- versions

PROMPT_VERSIONS: dict[str, str] = {
    STAGE_INSTRUCTIONS: "instructions-v1",
    STAGE_CLASSIFY: "classify-v1",
    STAGE_INSTANCES: "instances-v1",
    STAGE_BATCH: "batch-v1",
}
# The structured variants (a request for JSON instead of a continuation) version on their own.
STRUCTURED_VERSIONS: dict[str, str] = {
    STAGE_INSTRUCTIONS: "instructions-json-v1",
    STAGE_CLASSIFY: "classify-json-v1",
    STAGE_INSTANCES: "instances-json-v1",
    STAGE_BATCH: "batch-json-v1",
}


def version_table() -> dict[str, str]:
    """Every prompt version a run may send (stored with the run's settings)."""
    return {**PROMPT_VERSIONS, **{f"{stage} (structured)": v for stage, v in STRUCTURED_VERSIONS.items()}}

MAX_INSTANCES = 5            # instances asked for per instruction (the paper's limit)
NO_INPUT = "(none)"          # how a prompt writes an empty input

# The first sentence of each prompt: constant, unique per stage, used to recognise it.
INSTRUCTIONS_HEAD = "Below is a numbered list of tasks that people might ask an AI assistant to do."
CLASSIFY_HEAD = "Decide whether each task below is a labeling task."
INSTANCES_HEAD = "Each task below is followed by worked examples."
INSTANCES_LABEL_HEAD = "Each task below is a labeling task, followed by worked examples."
BATCH_HEAD = "We are collecting tasks to teach an AI assistant to follow instructions."

SYSTEM_INSTRUCTIONS = (
    "You extend numbered lists of tasks. Answer with the continuation only: begin at the "
    "next number, put one task on each line, and add no introduction or closing remarks.")
SYSTEM_CLASSIFY = "Answer with a single word, Yes or No."
SYSTEM_INSTANCES = (
    "Answer with the examples only, laid out the way the worked examples are, with no "
    "introduction or closing remarks.")
SYSTEM_BATCH = (
    "Answer with the new tasks only, in the layout of the examples, with no introduction or "
    "closing remarks.")

CLASSIFY_QUESTION = "Labeling task?"

# -- structured output -------------------------------------------------------------------
SYSTEM_JSON = "Reply with a single JSON object in the requested shape and nothing else."

# What a structured prompt asks for in place of the open label (constant per stage and layout,
# so `parsing.read_prompt` can take it off again).
INSTRUCTIONS_JSON_TAIL = (
    'Reply with a JSON object whose "instructions" array holds only the new tasks, each one '
    "written out in full as a single string, without its number. Do not copy, shorten or extend "
    "any task from the list above: every new task must be about something else.")
CLASSIFY_JSON_TAIL = (
    'Is the last task a labeling task? Reply with the JSON object {"labeling_task": "yes"} or '
    '{"labeling_task": "no"}.')
INSTANCES_JSON_TAIL = (
    'Now write examples for the last task. Reply with a JSON object whose "examples" array holds '
    f'1 to {MAX_INSTANCES} of them, each with an "input" (an empty string when the task needs no '
    'material) and an "output" that carries the task out for that input.')
LABEL_JSON_TAIL = (
    'Now write examples for the last task. Reply with a JSON object whose "examples" array holds '
    f'1 to {MAX_INSTANCES} of them, each with an "output" (one of the task\'s labels) and an '
    '"input" for which that label is the right answer (an empty string when none is needed).')
BATCH_JSON_TAIL = (
    'Reply with a JSON object whose "tasks" array holds only the new tasks, each with an '
    '"instruction", an "input" (an empty string when the task needs none) and an "output".')
JSON_TAILS = (INSTRUCTIONS_JSON_TAIL, CLASSIFY_JSON_TAIL, INSTANCES_JSON_TAIL, LABEL_JSON_TAIL,
              BATCH_JSON_TAIL)
# (the judge's tail, JUDGE_JSON_TAIL, is defined with its prompt at the end of this module)


def _strings(n: int | None = None) -> dict:
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    if n:
        schema["maxItems"] = n
    return schema


def _object(properties: dict) -> dict:
    """A closed object with every property required (what OpenAI's strict mode asks for)."""
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def response_schema(stage: str, *, num_to_generate: int | None = None,
                    is_classification: bool = False) -> dict:
    """The JSON schema of a stage's structured answer (the one home of these shapes).

    instructions  {"instructions": [str, ...]}            (1 to num_to_generate)
    classify      {"labeling_task": "yes" | "no"}
    instances     {"examples": [{"input", "output"}, ...]} (1 to MAX_INSTANCES; for a labeling
                  task "output" comes first, so a grammar-bound model picks the label first)
    batch         {"tasks": [{"instruction", "input", "output"}, ...]}
    judge         {"valid_task", "input_ok", "output_ok": "yes" | "no" | "unsure", "reason": str}
    """
    text = {"type": "string"}
    if stage == STAGE_INSTRUCTIONS:
        return _object({"instructions": _strings(num_to_generate)})
    if stage == STAGE_CLASSIFY:
        return _object({"labeling_task": {"type": "string", "enum": ["yes", "no"]}})
    if stage == STAGE_INSTANCES:
        fields = ({"output": text, "input": text} if is_classification
                  else {"input": text, "output": text})
        return _object({"examples": {"type": "array", "items": _object(fields), "minItems": 1,
                                     "maxItems": MAX_INSTANCES}})
    if stage == STAGE_BATCH:
        task = _object({"instruction": text, "input": text, "output": text})
        schema = {"type": "array", "items": task, "minItems": 1}
        if num_to_generate:
            schema["maxItems"] = num_to_generate
        return _object({"tasks": schema})
    if stage == STAGE_JUDGE:
        answer = {"type": "string", "enum": list(JUDGE_ANSWERS)}
        return _object({"valid_task": answer, "input_ok": answer, "output_ok": answer, "reason": text})
    raise ValueError(f"unknown stage {stage!r}")


# The probe: one tiny structured request per run tells whether the server honours
# response_format (see pipeline.probe_structured).
STAGE_PROBE = "probe"
PROBE_SCHEMA = _object({"ready": {"type": "boolean"}, "colour": {"type": "string", "enum": ["green"]}})


def build_probe_prompt() -> Prompt:
    return Prompt(stage=STAGE_PROBE, version="probe-v1", system=SYSTEM_JSON, schema=PROBE_SCHEMA,
                  text='Reply with the JSON object {"ready": true, "colour": "green"}.')


def _structured(stage: str, body: str, tail: str, schema: dict, meta: dict) -> Prompt:
    """The structured variant of a stage's prompt: its body without the open label, then the
    request for JSON."""
    return Prompt(stage=stage, version=STRUCTURED_VERSIONS[stage], text=body + "\n\n" + tail,
                  system=SYSTEM_JSON, stop=None, meta={**meta, "structured": True}, schema=schema)


def one_line(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space."""
    return " ".join(str(text).split())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def render_field(name: str, value: str, *, empty: str | None = None) -> str:
    """``Name: value``; a value of several lines starts on the next line."""
    value = (value or "").strip("\n").rstrip()
    if not value.strip():
        value = empty if empty is not None else ""
        return f"{name}: {value}".rstrip()
    if "\n" in value:
        return f"{name}:\n{value}"
    return f"{name}: {value.strip()}"


# --------------------------------------------------------------------------- instructions

def instruction_stop_label(n: int) -> str:
    return f"\n{n}."


def _numbers(start: int, last: int) -> str:
    """The item numbers the model is asked to write, in words: "number 9" or "numbers 9 to 16"."""
    return f"number {start}" if start == last else f"numbers {start} to {last}"


def build_instruction_prompt(examples: list[str], *, num_to_generate: int = 8,
                             structured: bool = False) -> Prompt:
    """Continue a numbered list of tasks (the paper's 8 in-context tasks, new ones
    up to item 16 by default); `structured`: ask for the new tasks as JSON instead."""
    if num_to_generate < 1:
        raise ValueError("num_to_generate must be at least 1")
    items = [one_line(e) for e in examples]
    if any(not e for e in items):
        raise ValueError("instruction examples must not be empty")
    start = len(items) + 1
    last = start + num_to_generate - 1
    numbers = _numbers(start, last)
    header = (
        f"{INSTRUCTIONS_HEAD} Add {_plural(num_to_generate, 'new task')} to the list "
        f"({numbers}). Make the new tasks differ from the ones shown and from each other: "
        "change the topic, the main verb, the length and the kind of work (answering a "
        "question, rewriting, classifying, planning, explaining, writing code, creative "
        "writing). Some tasks may ask the reader to supply material, such as a paragraph to "
        "shorten or a list to sort. Every task must be possible with text alone and fit on a "
        "single line.")
    lines = [f"{i}. {e}" for i, e in enumerate(items, 1)]
    meta = {"start_index": start, "stop_index": last + 1,
            "num_to_generate": num_to_generate, "num_examples": len(items)}
    if structured:
        return _structured(STAGE_INSTRUCTIONS, header + "\n\n" + "\n".join(lines), INSTRUCTIONS_JSON_TAIL,
                           response_schema(STAGE_INSTRUCTIONS, num_to_generate=num_to_generate), meta)
    text = header + "\n\n" + "\n".join(lines + [f"{start}."])
    return Prompt(
        stage=STAGE_INSTRUCTIONS,
        version=PROMPT_VERSIONS[STAGE_INSTRUCTIONS],
        text=text,
        system=SYSTEM_INSTRUCTIONS,
        stop=("\n\n", instruction_stop_label(last + 1)),
        meta=meta,
    )


# --------------------------------------------------------------------------- classify

# Our own few-shot examples: 7 labeling tasks, 7 open-ended ones.
CLASSIFY_EXAMPLES: tuple[tuple[str, bool], ...] = (
    ("Tell whether the following email is spam or not spam.", True),
    ("Write a short poem about leaves falling in autumn.", False),
    ("Summarize the paragraph in a single sentence.", False),
    ("Read the product review and say whether the customer was satisfied.", True),
    ("Decide if the statement is true or false.", True),
    ("Translate the sentence into Spanish.", False),
    ("Which section does the news headline belong in: sports, politics, business or science?",
     True),
    ("Give three tips for staying focused while studying at home.", False),
    ("Work out the average of the numbers in the list.", False),
    ("Identify the language of the text: English, French, Spanish or German.", True),
    ("Fix the bugs in the following Python function.", False),
    ("Rate how formal the message is on a scale from 1 to 5.", True),
    ("Check whether the two sentences mean the same thing. Answer yes or no.", True),
    ("Explain why the sky looks blue during the day.", False),
)

_CLASSIFY_INTRO = (
    f"{CLASSIFY_HEAD} A labeling task is one where every correct answer is picked from a "
    "small, fixed set of options, such as yes/no, true/false, positive/negative, or a short "
    "list of named categories. Tasks whose answers are free-form text, calculations, rewrites, "
    "lists or anything else open-ended are not labeling tasks. Answer Yes or No.")

_CLASSIFY_SHOTS = "\n\n".join(
    f"Task: {task}\n{CLASSIFY_QUESTION} {'Yes' if yes else 'No'}"
    for task, yes in CLASSIFY_EXAMPLES)

CLASSIFY_BODY = _CLASSIFY_INTRO + "\n\n" + _CLASSIFY_SHOTS + "\n\n"


def build_classify_prompt(instruction: str, *, structured: bool = False) -> Prompt:
    """Few-shot: is the task a classification task with a small, finite label set?"""
    target = instruction.strip()
    if not target:
        raise ValueError("instruction must not be empty")
    if structured:
        return _structured(STAGE_CLASSIFY, f"{CLASSIFY_BODY}Task: {target}", CLASSIFY_JSON_TAIL,
                           response_schema(STAGE_CLASSIFY), {"instruction": instruction})
    return Prompt(
        stage=STAGE_CLASSIFY,
        version=PROMPT_VERSIONS[STAGE_CLASSIFY],
        text=f"{CLASSIFY_BODY}Task: {target}\n{CLASSIFY_QUESTION}",
        system=SYSTEM_CLASSIFY,
        stop=("\n\n", "\nTask:"),
        meta={"instruction": instruction},
    )


# --------------------------------------------------------------------------- instances

# Worked demonstrations of our own. Input-first: (task, [(input, output), ...]).
INSTANCE_DEMOS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Put the numbers in order from smallest to largest.",
     (("14, 3, 27, 8", "3, 8, 14, 27"),
      ("-2, 0, -9, 5", "-9, -2, 0, 5"))),
    ("Suggest a name for a small neighborhood bakery.",
     (("", "Rise & Shine Bakehouse"),)),
    ("Write a Python function that adds up the even numbers in a list.",
     (("", "def sum_of_evens(numbers):\n    return sum(n for n in numbers if n % 2 == 0)"),)),
    ("Rewrite the sentence so that it sounds more polite.",
     (("Send me the report now.",
       "Could you please send me the report when you have a moment?"),
      ("Move your car, it's blocking mine.",
       "Would you mind moving your car? It is blocking mine."))),
)

# Output-first (classification): (task, [(label, input), ...]).
LABEL_DEMOS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Say whether the movie review is positive or negative.",
     (("Positive", "I laughed all the way through and would happily watch it again."),
      ("Negative", "The plot dragged, and I checked my phone every ten minutes."))),
    ("Is the given number prime? Answer yes or no.",
     (("Yes", "13"), ("No", "21"), ("Yes", "2"))),
    ("Which planet is the largest in the solar system: Mars, Jupiter or Venus?",
     (("Jupiter", ""),)),
    ("Sort the customer message into one of these topics: billing, delivery or technical "
     "problem.",
     (("Delivery", "My parcel was due on Monday and it still hasn't arrived."),
      ("Billing", "I was charged twice for the same order last week."),
      ("Technical problem", "The app closes every time I open my basket."))),
)

_INSTANCES_INTRO = (
    f"{INSTANCES_HEAD} An example gives an Input, the material the task works on, and then "
    "an Output, a correct and complete response to the task for that input. When a task "
    f'needs no extra material, write "Input: {NO_INPUT}" and go straight to the output. Give '
    f"up to {MAX_INSTANCES} examples per task, and make them differ from one another.")

_LABEL_INTRO = (
    f"{INSTANCES_LABEL_HEAD} Its answer is always one of a few fixed labels. For each "
    "example, first pick a label, then write an input for which that label is the correct "
    "answer. Cover the different labels rather than repeating one. When a task needs no "
    f'extra material, write "Input: {NO_INPUT}". Give up to {MAX_INSTANCES} examples per task.')


def render_instances(instances: list[dict], *, output_first: bool, first: int = 1) -> str:
    """Examples in the canonical layout (the part after ``Task: ...``)."""
    blocks = []
    for k, inst in enumerate(instances, first):
        inp = render_field("Input", inst.get("input", ""), empty=NO_INPUT)
        if output_first:
            body = render_field("Label", inst.get("output", "")) + "\n" + inp
        else:
            body = inp + "\n" + render_field("Output", inst.get("output", ""))
        blocks.append(f"Example {k}\n{body}")
    return "\n".join(blocks)


def _demo_block(task: str, pairs, output_first: bool) -> str:
    if output_first:
        instances = [{"input": inp, "output": label} for label, inp in pairs]
    else:
        instances = [{"input": inp, "output": out} for inp, out in pairs]
    return f"Task: {task}\n" + render_instances(instances, output_first=output_first)


INSTANCES_BODY = (_INSTANCES_INTRO + "\n\n"
                   + "\n\n".join(_demo_block(t, p, False) for t, p in INSTANCE_DEMOS) + "\n\n")
LABEL_BODY = (_LABEL_INTRO + "\n\n"
               + "\n\n".join(_demo_block(t, p, True) for t, p in LABEL_DEMOS) + "\n\n")


def build_instance_prompt(instruction: str, is_classification: bool, *,
                          structured: bool = False) -> Prompt:
    """Ask for up to 5 instances: input-first, or output-first (label, then an input
    with that label) for classification tasks."""
    target = instruction.strip()
    if not target:
        raise ValueError("instruction must not be empty")
    body = LABEL_BODY if is_classification else INSTANCES_BODY
    meta = {"instruction": instruction, "is_classification": bool(is_classification),
            "max_instances": MAX_INSTANCES,
            "order": "output-first" if is_classification else "input-first"}
    if structured:
        return _structured(STAGE_INSTANCES, f"{body}Task: {target}",
                           LABEL_JSON_TAIL if is_classification else INSTANCES_JSON_TAIL,
                           response_schema(STAGE_INSTANCES, is_classification=bool(is_classification)), meta)
    return Prompt(
        stage=STAGE_INSTANCES,
        version=PROMPT_VERSIONS[STAGE_INSTANCES],
        text=f"{body}Task: {target}\nExample 1",
        system=SYSTEM_INSTANCES,
        stop=(f"Example {MAX_INSTANCES + 1}", "\nTask:"),
        meta=meta,
    )


# --------------------------------------------------------------------------- batch (Alpaca)

def batch_header_label(n: int) -> str:
    return f"### Task {n}"


def render_batch_task(n: int | None, task: dict) -> str:
    """One task in the batch layout; ``n=None`` leaves the header out."""
    body = "\n".join([
        render_field("Instruction", one_line(task.get("instruction", ""))),
        render_field("Input", task.get("input", ""), empty=NO_INPUT),
        render_field("Output", task.get("output", "")),
    ])
    return body if n is None else f"{batch_header_label(n)}\n{body}"


def build_batch_prompt(examples: list[dict], *, num_to_generate: int = 20,
                       structured: bool = False) -> Prompt:
    """Alpaca-style: a few complete example tasks, then up to `num_to_generate` new ones."""
    if num_to_generate < 1:
        raise ValueError("num_to_generate must be at least 1")
    for ex in examples:
        if not one_line(ex.get("instruction", "")):
            raise ValueError("every batch example needs an instruction")
    start = len(examples) + 1
    last = start + num_to_generate - 1
    numbers = _numbers(start, last)
    header = (
        f"{BATCH_HEAD} Write {_plural(num_to_generate, 'new task')} ({numbers}), laid out "
        "exactly like the examples below. Requirements:\n"
        "1. Use a different main verb in each instruction.\n"
        "2. Mix the kinds of work: open questions, rewriting, classification, brainstorming, "
        "step-by-step reasoning, short creative writing, simple code, and more.\n"
        "3. Phrase the instructions in different ways: some as questions, some as commands, "
        "some short, some a little longer. Keep each one to one or two sentences.\n"
        "4. Every task must be something a text-only assistant can do. Do not ask it to look "
        "at or produce pictures, sound or video, to browse the web, or to act in the physical "
        "world (for example, setting an alarm).\n"
        "5. Write everything in English.\n"
        "6. Give an Input only when the task needs material to work on, such as a paragraph "
        "to summarise or a list to sort. Make it concrete and realistic, never a placeholder, "
        f'and keep it under about 100 words. Otherwise write "Input: {NO_INPUT}".\n'
        "7. The Output must be a correct, complete response to the instruction and input, in "
        "under about 100 words.")
    blocks = [render_batch_task(i, ex) for i, ex in enumerate(examples, 1)]
    meta = {"start_index": start, "stop_index": last + 1,
            "num_to_generate": num_to_generate, "num_examples": len(examples)}
    if structured:
        return _structured(STAGE_BATCH, header + "\n\n" + "\n\n".join(blocks), BATCH_JSON_TAIL,
                           response_schema(STAGE_BATCH, num_to_generate=num_to_generate), meta)
    text = header + "\n\n" + "\n\n".join(blocks + [batch_header_label(start)])
    return Prompt(
        stage=STAGE_BATCH,
        version=PROMPT_VERSIONS[STAGE_BATCH],
        text=text,
        system=SYSTEM_BATCH,
        stop=(batch_header_label(last + 1),),
        meta=meta,
    )


# --------------------------------------------------------------------------- judge (quality study)
# A model answers the quality study's three questions (model.QUESTIONS) about one item: an
# instruction, one of its instances' input and output. Layout (what `parsing.parse_judge` reads
# best and the offline server writes): one line per question, ``Valid task: yes``, ``Input
# appropriate: no``, ``Output acceptable: unsure``, then ``Reason: ...``; the prompt ends with the
# open label ``Valid task:``. Its versions are its own (the judge is not a generation stage):
# `JUDGE_VERSIONS`.

STAGE_JUDGE = "judge"
JUDGE_VERSIONS = {"text": "judge-v1", "json": "judge-json-v1"}
JUDGE_HEAD = "You are reviewing one item of a dataset that teaches an AI assistant to follow instructions."
# The answer's labels, in order, per question of model.QUESTIONS (the parser reads these and more).
JUDGE_LABELS = {"valid_task": "Valid task", "input_ok": "Input appropriate", "output_ok": "Output acceptable"}
JUDGE_REASON_LABEL = "Reason"
JUDGE_ANSWERS = ("yes", "no", "unsure")   # the same words as model.ANSWERS (prompts imports nothing)
SYSTEM_JUDGE = ("Answer with the four lines asked for (three answers and a reason), in the layout of the "
                "examples, and nothing else.")

_JUDGE_INTRO = (
    f"{JUDGE_HEAD} An item is an instruction, an optional input, and an output written for them. "
    "Answer three questions about it, each with yes, no or unsure:\n"
    f"{JUDGE_LABELS['valid_task']}: is the instruction a clear request that a text-only assistant "
    "could carry out? Say no for nonsense, for a request that needs pictures, sound, files or the "
    "physical world, or for one too vague to act on.\n"
    f"{JUDGE_LABELS['input_ok']}: does the input suit the instruction? It should supply the material "
    f"the task works on; when the task needs none, an empty input ({NO_INPUT}) is right. Say no for "
    "an input that is missing when needed, off-topic, or a placeholder.\n"
    f"{JUDGE_LABELS['output_ok']}: is the output a correct and complete response to the instruction "
    "and its input? Say no for a wrong, unfinished or unrelated answer.\n"
    "Use unsure only when you cannot tell. After the three answers, give the main reason in one "
    f"sentence on a line starting with \"{JUDGE_REASON_LABEL}:\".")

# Our own worked examples: (instruction, input, output, answers, reason).
JUDGE_EXAMPLES: tuple[tuple[str, str, str, tuple[str, str, str], str], ...] = (
    ("Turn the temperature into degrees Fahrenheit.", "25 degrees Celsius", "77 degrees Fahrenheit",
     ("yes", "yes", "yes"), "The conversion is right and the input is what the task needs."),
    ("Describe the photo attached to this message.", "", "A dog playing on a beach at sunset.",
     ("no", "no", "no"), "A text-only assistant cannot see a photo, so the task and its answer are invented."),
    ("List three prime numbers greater than 10.", NO_INPUT, "11, 13, 15",
     ("yes", "yes", "no"), "15 is not a prime number."),
)


def render_judge_item(instruction: str, input_text: str, output: str) -> str:
    """An item in the judge layout: ``Instruction:``, ``Input:`` (``(none)`` when empty), ``Output:``."""
    return "\n".join([render_field("Instruction", one_line(instruction)),
                      render_field("Input", input_text if input_text != NO_INPUT else "", empty=NO_INPUT),
                      render_field("Output", output)])


def render_judge_answer(answers: dict, reason: str = "") -> str:
    """A verdict in the text layout (the worked examples and the offline judge write it)."""
    lines = [f"{JUDGE_LABELS[q]}: {answers[q]}" for q in JUDGE_LABELS]
    return "\n".join(lines + [f"{JUDGE_REASON_LABEL}: {one_line(reason)}"]) if reason else "\n".join(lines)


JUDGE_BODY = (_JUDGE_INTRO + "\n\n" + "\n\n".join(
    f"{render_judge_item(i, n, o)}\n{render_judge_answer(dict(zip(JUDGE_LABELS, a)), r)}"
    for i, n, o, a, r in JUDGE_EXAMPLES) + "\n\n")
JUDGE_JSON_TAIL = (
    'Judge the last item. Reply with a JSON object with "valid_task", "input_ok" and "output_ok" (each '
    '"yes", "no" or "unsure") and "reason" (one sentence).')


def build_judge_prompt(instruction: str, input: str, output: str, *, structured: bool = False) -> Prompt:  # noqa: A002
    """Ask a model the quality study's three questions about one item (instruction, input, output);
    `structured`: ask for the JSON object of `response_schema("judge")` instead of the four lines."""
    if not one_line(instruction or ""):
        raise ValueError("instruction must not be empty")
    item = render_judge_item(instruction, input or "", output or "")
    meta = {"instruction": instruction, "input": input or "", "output": output or ""}
    if structured:
        return Prompt(stage=STAGE_JUDGE, version=JUDGE_VERSIONS["json"], text=f"{JUDGE_BODY}{item}\n\n{JUDGE_JSON_TAIL}",
                      system=SYSTEM_JSON, stop=None, meta={**meta, "structured": True},
                      schema=response_schema(STAGE_JUDGE))
    return Prompt(stage=STAGE_JUDGE, version=JUDGE_VERSIONS["text"],
                  text=f"{JUDGE_BODY}{item}\n{JUDGE_LABELS['valid_task']}:", system=SYSTEM_JUDGE,
                  stop=("\n\n",), meta=meta)


# --------------------------------------------------------------------------- evaluation of models (A-D)
# The paper's evaluation: each model answers a plain request (the instruction, and its input when
# there is one, as the user's turn), and a rater, a person or a judge model, puts each answer on the
# paper's four levels. Sampling for answers: `llm.Sampling` at temperature 0 (evaluate.py). The
# rating prompt's layout: ``Rating: B`` then ``Reason: ...``; the prompt ends with the open label
# ``Rating:``. Versions: `EVAL_ANSWER_VERSION`, `EVAL_RATE_VERSIONS`.

STAGE_EVAL_ANSWER = "eval_answer"
STAGE_EVAL_RATE = "eval_rate"
EVAL_ANSWER_VERSION = "eval-answer-v1"
EVAL_RATE_VERSIONS = {"text": "eval-rate-v1", "json": "eval-rate-json-v1"}
SYSTEM_EVAL_ANSWER = "You are a helpful assistant. Do what the user asks as well as you can."
EVAL_COMPLETION_OPEN = "Response:"
# The paper's four levels, best first, with what each means (the page shows the same words).
EVAL_LEVELS = {
    "A": "valid and satisfying: a correct, complete response",
    "B": "acceptable, with minor flaws or imperfections",
    "C": "responds to the instruction but has significant errors",
    "D": "irrelevant or invalid",
}
EVAL_RATE_HEAD = "You are grading how well an AI assistant answered one request."
EVAL_ANSWER_OPEN = "----- answer to grade -----"
EVAL_ANSWER_CLOSE = "----- end of answer -----"
EVAL_RATING_LABEL = "Rating"
SYSTEM_EVAL_RATE = ("Reply with the two lines asked for (a rating A, B, C or D, then a reason) and "
                    "nothing else.")
EVAL_RATE_BODY = (
    f"{EVAL_RATE_HEAD} Read the request (an instruction and, when given, its input) and the answer "
    "between the marker lines, then put the answer on one of four levels:\n"
    + "\n".join(f"{level}: {words}." for level, words in EVAL_LEVELS.items())
    + f"\nJudge the answer alone, not how hard the request is. Write \"{EVAL_RATING_LABEL}:\" and one "
    f"letter, then \"{JUDGE_REASON_LABEL}:\" and the main reason in one sentence.\n\n")
EVAL_RATE_JSON_TAIL = ('Reply with a JSON object with "rating" (one of "A", "B", "C", "D") and "reason" '
                       '(one sentence).')
EVAL_RATE_SCHEMA = {
    "type": "object",
    "properties": {"rating": {"type": "string", "enum": list(EVAL_LEVELS)}, "reason": {"type": "string"}},
    "required": ["rating", "reason"],
    "additionalProperties": False,
}


def eval_request_text(instruction: str, input_text: str = "") -> str:
    """The user's turn of an answer prompt: the instruction, then its input after a blank line."""
    instruction, input_text = (instruction or "").strip(), (input_text or "").strip()
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def build_eval_answer_prompt(instruction: str, input: str = "", *, completion: bool = False) -> Prompt:  # noqa: A002
    """Ask a model to answer one evaluation instruction. Chat: our short system line and the
    request as the user's turn. Completion mode: the same words as one text ending in an open
    ``Response:`` (a base model has no turns)."""
    if not one_line(instruction or ""):
        raise ValueError("instruction must not be empty")
    request = eval_request_text(instruction, input)
    meta = {"instruction": instruction, "input": input or ""}
    if completion:
        return Prompt(stage=STAGE_EVAL_ANSWER, version=EVAL_ANSWER_VERSION,
                      text=f"{SYSTEM_EVAL_ANSWER}\n\n{request}\n\n{EVAL_COMPLETION_OPEN}", meta=meta)
    return Prompt(stage=STAGE_EVAL_ANSWER, version=EVAL_ANSWER_VERSION, text=request, system=SYSTEM_EVAL_ANSWER,
                  meta=meta)


def build_eval_rate_prompt(instruction: str, input: str, answer: str, *, structured: bool = False) -> Prompt:  # noqa: A002
    """Ask a judge model to rate one answer A-D (never told which model wrote it)."""
    if not one_line(instruction or ""):
        raise ValueError("instruction must not be empty")
    item = "\n".join([render_field("Instruction", instruction.strip()),
                      render_field("Input", (input or "").strip(), empty=NO_INPUT),
                      EVAL_ANSWER_OPEN, (answer or "").strip(), EVAL_ANSWER_CLOSE])
    meta = {"instruction": instruction, "input": input or "", "answer": answer or ""}
    if structured:
        return Prompt(stage=STAGE_EVAL_RATE, version=EVAL_RATE_VERSIONS["json"],
                      text=f"{EVAL_RATE_BODY}{item}\n\n{EVAL_RATE_JSON_TAIL}", system=SYSTEM_JSON,
                      meta={**meta, "structured": True}, schema=EVAL_RATE_SCHEMA)
    return Prompt(stage=STAGE_EVAL_RATE, version=EVAL_RATE_VERSIONS["text"],
                  text=f"{EVAL_RATE_BODY}{item}\n{EVAL_RATING_LABEL}:", system=SYSTEM_EVAL_RATE,
                  stop=("\n\n",), meta=meta)


# ---------------------------------------------------------------------------
# Topic names (topics.name_with_model): one short name for a group of the pool's tasks
# ---------------------------------------------------------------------------
STAGE_TOPIC_NAME = "topic_name"
TOPIC_NAME_VERSION = "topic-name-v1"
TOPIC_NAME_LABEL = "Name"


def build_topic_name_prompt(examples: list[str], words: list[str] = (), *, mode: str = "chat") -> Prompt:
    """Ask for a name of two to five words for one topic, from a few of its tasks and the words
    that set it apart from the rest of the pool. Completion mode ends on "Name:" and stops at the
    line's end."""
    listed = "\n".join(f"- {' '.join(e.split())}" for e in examples)
    hint = f"\nWords that are common here and rare elsewhere: {', '.join(words)}.\n" if words else "\n"
    body = ("The tasks below were grouped together because they are about the same kind of thing.\n"
            f"{listed}\n{hint}"
            "Give the group a short name of two to five words that says what its tasks share, "
            "like a shelf label in a library. Answer with the name alone.")
    if mode == "completion":
        return Prompt(stage=STAGE_TOPIC_NAME, version=TOPIC_NAME_VERSION, text=f"{body}\n\n{TOPIC_NAME_LABEL}:",
                      stop=("\n",))
    return Prompt(stage=STAGE_TOPIC_NAME, version=TOPIC_NAME_VERSION, text=body,
                  system="You label groups of tasks with short, plain names.")
