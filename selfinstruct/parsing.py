"""Parsers for each stage's model output: forgiving in, strict out.

Forgiving in: base models continue the prompt's layout mid-line; chat models add a
preamble, markdown (bold, headings, code fences), bullets, "Task 9:" labels, closing
remarks, restart the numbering or repeat the open label. Strict out: what comes back
is clean text (numbering, markdown and wrapping quotes removed, whitespace collapsed
for instructions), never empty, without duplicates, with a length-truncated last item
dropped. Pieces that look like an attempt but cannot be read go to `unparseable`, each
as ``"<reason>: <fragment>"``.

The layouts read best are the canonical ones written by `prompts` (see its docstring).

Structured answers (a request sent with a JSON schema, `Prompt.schema`) are read by the
``*_json`` parsers, which are strict: the answer must be one JSON value that matches the
schema, else the whole answer is unparseable with the reason (not JSON, cut off, or the
first way it breaks the schema). The items inside are then cleaned like text items.
`parse_answer` picks the parser a stored request needs, by stage and parser version
(`PARSERS`, `PARSER_VERSIONS`: see "parser versions" below).

Reading a rendered prompt back (`identify_stage`, `read_prompt`) lives here too: it is parsing
of our own prompts, and it needs `parse_batch`. This module imports `prompts`, never the reverse.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

import jsonschema

from .model import without_nul
from .prompts import (BATCH_HEAD, CLASSIFY_BODY, CLASSIFY_HEAD, CLASSIFY_QUESTION, INSTANCES_BODY, INSTANCES_HEAD,
                      INSTANCES_LABEL_HEAD, INSTRUCTIONS_HEAD, JSON_TAILS, JUDGE_BODY, JUDGE_HEAD, JUDGE_JSON_TAIL,
                      JUDGE_LABELS, LABEL_BODY, MAX_INSTANCES, NO_INPUT, STAGE_BATCH, STAGE_CLASSIFY, STAGE_INSTANCES,
                      STAGE_INSTRUCTIONS, STAGE_JUDGE, Prompt, one_line, response_schema)


@dataclass
class ParsedList:
    items: list[str] = field(default_factory=list)
    unparseable: list[str] = field(default_factory=list)
    # The answer numbered its list from 1 although the prompt asked it to go on from a later
    # number: it rewrote the list it was shown (see filters.find_echoes).
    restarted: bool = False


@dataclass
class ParsedInstances:
    instances: list[dict] = field(default_factory=list)   # {"input", "output"}
    unparseable: list[str] = field(default_factory=list)


@dataclass
class ParsedBatch:
    tasks: list[dict] = field(default_factory=list)       # {"instruction", "input", "output"}
    unparseable: list[str] = field(default_factory=list)


TRUNCATED = "cut off by the length limit"
NOT_JSON = "not JSON"
OFF_SCHEMA = "does not match the schema"

# --------------------------------------------------------------------------- shared helpers

_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_RULE_RE = re.compile(r"^\s*([-*_=#~])(\s*\1){2,}\s*$")      # ---, ***, ###, ===
_HEADING_RE = re.compile(r"^\s*#{1,6}\s")
_MD_EDGE = "*_`#> \t"

# Closing remarks addressed to the user. Kept narrow: a task's output may well end with
# "Note that ..." or "Enjoy!", and those must survive.
_CHATTER_RE = re.compile(
    r"^(?:let me know|i hope|hope (?:this|these|that|it) helps?|feel free|"
    r"these (?:tasks|examples|instructions|instances|ideas|prompts) (?:should|cover|are|were|"
    r"span|show|include)|if you(?:'d| would)? (?:like|need|want) (?:more|any|additional|me)|"
    r"happy to help|is there anything else|i can (?:also|generate|provide|create|make|add|"
    r"come up with) (?:more|additional|further|other)|would you like (?:me|more)|"
    r"do you want (?:me|more)|shall i (?:continue|add|generate|write))\b",
    re.I)
_PREAMBLE_RE = re.compile(
    r"^(?:sure|certainly|of course|absolutely|okay|ok|great|alright|here(?:'s| is| are)|"
    r"below (?:are|is)|as requested|continuing|happy to help|i'd be happy|no problem|"
    r"gladly|got it|understood)\b", re.I)
_FIRST_PERSON_RE = re.compile(
    r"^(?:i|i'm|i am|i'd|i'll|i've|as an ai|as a language model|sorry|unfortunately|my)\b",
    re.I)
_SENTENCE_END_RE = re.compile(r"[.!?](?:\s|$)")

_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`"}


def _demd(s: str) -> str:
    """A line without markdown decoration at its edges (for classifying it)."""
    return s.strip().strip(_MD_EDGE).strip()


def _is_chatter(s: str) -> bool:
    return bool(_CHATTER_RE.match(_demd(s)))


def _is_preamble(s: str) -> bool:
    t = _demd(s)
    return bool(t) and (t.endswith(":") or bool(_PREAMBLE_RE.match(t)) or _is_chatter(t))


def _lines(text: str) -> list[str]:
    """Lines with unified newlines, an outer code fence removed, no trailing blanks."""
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and _FENCE_RE.match(lines[0]):
        lines.pop(0)
        if lines and _FENCE_RE.match(lines[-1]) and lines[-1].strip().strip("`~") == "":
            lines.pop()
    return lines


def _unwrap_quotes(s: str) -> str:
    while len(s) >= 2 and s[0] in _QUOTES and s[-1] == _QUOTES[s[0]] \
            and s[0] not in s[1:-1] and _QUOTES[s[0]] not in s[1:-1]:
        s = s[1:-1].strip()
    return s


def _unwrap_bold(s: str) -> str:
    for mark in ("**", "__"):
        if s.startswith(mark) and s.endswith(mark) and len(s) > 2 * len(mark) \
                and mark not in s[len(mark):-len(mark)]:
            s = s[len(mark):-len(mark)].strip()
    return s


_BOLD_TITLE_RE = re.compile(
    r"^(?:\*\*|__)(?P<title>[^*_\n]{1,60}?)(?::(?:\*\*|__)|(?:\*\*|__)\s*[:\-\u2013\u2014])\s*(?P<rest>.+)$")
_ITEM_PREFIX_RE = re.compile(
    r"^(?:new\s+)?(?:task|instruction|prompt)\s*(?:\d{1,3})?\s*:\s*", re.I)


def clean_instruction(text: str) -> str:
    """Strict form of one instruction: one line, no numbering left-overs, markdown
    emphasis or wrapping quotes. Empty string when nothing is left."""
    s = one_line(text)
    m = _BOLD_TITLE_RE.match(s)
    if m and len(m.group("title").split()) <= 6 and len(m.group("rest").split()) >= 4:
        s = m.group("rest")                     # "**Haiku:** Write a haiku about ..."
    s = _ITEM_PREFIX_RE.sub("", s, count=1)     # "Instruction: Write ..."
    s = _unwrap_bold(s.replace("**", "").strip())    # keeps "__init__", drops "__x__" wraps
    s = s.strip("*").strip()
    s = _unwrap_quotes(s)
    return one_line(s)


# --------------------------------------------------------------------------- instructions

_NUM_ITEM_RE = re.compile(
    r"""^\s*(?:[-*+\u2022]\s+)?(?:\#{1,6}\s*)?(?:\*\*|__)?\s*
    (?:
        (?:task|instruction|item)\s*\#?\s*(?P<n1>\d{1,3})\s*(?:\*\*|__)?\s*(?:[.:)\-\u2013\u2014]|$)
      | \#?(?P<n2>\d{1,3})[.):](?=\s|$|\*|_)
      | \((?P<n3>\d{1,3})\)(?=\s|$)
    )
    (?:\*\*|__)?[ \t]*(?P<rest>.*)$""", re.I | re.X)
_BULLET_RE = re.compile(r"^(?P<indent>\s*)[-*+\u2022]\s+(?P<rest>.*)$")


def _list_bounds(prompt: Prompt | None) -> tuple[int, int | None, int | None]:
    """(start_index, stop_index, num_to_generate) of an instructions prompt."""
    meta = dict(getattr(prompt, "meta", None) or {})
    start = meta.get("start_index")
    num = meta.get("num_to_generate")
    if (start is None or num is None) and prompt is not None:
        payload = read_prompt(prompt.full_text())
        if payload is not None and payload.start_index is not None:
            start = start if start is not None else payload.start_index
            num = num if num is not None else payload.num_to_generate
    start = int(start) if start is not None else 1
    stop = meta.get("stop_index")
    if stop is None and num is not None:
        stop = start + int(num)
    return start, (int(stop) if stop is not None else None), (int(num) if num else None)


_WORD_RE = re.compile(r"^[(\"'\u201c]?[A-Za-z][A-Za-z'\u2019-]*[)\"'\u201d.,;:!?]*$")


def _looks_like_single_task(text: str) -> bool:
    """An unnumbered answer taken as one task: a few sentences of real words, not a
    first-person reply (refusal, musing) and not junk."""
    words = text.split()
    if not 0 < len(words) <= 150 or _FIRST_PERSON_RE.match(_demd(text)):
        return False
    if len(_SENTENCE_END_RE.findall(text)) > 3:
        return False
    return sum(bool(_WORD_RE.match(w)) for w in words) >= 0.7 * len(words)


def parse_instructions(text: str, prompt: Prompt | None = None, *,
                       finish_reason: str | None = None) -> ParsedList:
    """New instructions from a continuation of the numbered list in `prompt`.

    `finish_reason="length"` drops the last item (it was probably cut off) and records it
    in `unparseable`. Items numbered at or past the prompt's stop label end the list.
    """
    start, stop, num = _list_bounds(prompt)
    start_known = prompt is not None
    out = ParsedList()
    raw = [ln for ln in _lines(text) if not _FENCE_RE.match(ln)]
    has_numbers = any(_NUM_ITEM_RE.match(ln) for ln in raw)

    items: list[list] = []           # [number or None, [text lines]]
    leading: list[list[str]] = []    # paragraphs before the first item
    loose: list[list[str]] = []      # paragraphs between/after items that are not items
    cur = None                       # the item taking continuation lines
    loose_cur = None
    after_blank = False
    ended_in_item = False            # the text ran to its end inside an item
    for line in raw:
        if not line.strip() or _RULE_RE.match(line):
            after_blank = True
            loose_cur = None
            if cur is None and leading and leading[-1]:
                leading.append([])
            continue
        m = _NUM_ITEM_RE.match(line)
        b = _BULLET_RE.match(line) if m is None and not has_numbers else None
        if m is not None:
            n = int(m.group("n1") or m.group("n2") or m.group("n3"))
            if stop is not None and n >= stop:
                ended_in_item = False
                break                                  # past the stop label
            cur = [n, [m.group("rest")]]
            items.append(cur)
            after_blank, loose_cur, ended_in_item = False, None, True
            continue
        if b is not None:
            cur = [None, [b.group("rest")]]
            items.append(cur)
            after_blank, loose_cur, ended_in_item = False, None, True
            continue
        if _HEADING_RE.match(line) and not (cur is not None and not after_blank):
            loose_cur = None                           # "## More tasks"
            continue
        if _is_chatter(line):
            if items:
                ended_in_item = False
                break                                  # closing remarks: the list is over
            continue
        if cur is None:
            if not leading:
                leading.append([])
            leading[-1].append(line)
        elif not after_blank or not clean_instruction(" ".join(cur[1])):
            cur[1].append(line)                        # an item spanning lines, or the
            after_blank, ended_in_item = False, True   # text under a "**Task 9**" label
        else:
            if loose_cur is None:
                loose_cur = []
                loose.append(loose_cur)
            loose_cur.append(line)
            ended_in_item = False

    # Text before the first item: a preamble, or (completion mode: the prompt ended with
    # the open label) the first item itself. A list that goes on at start + 1 says which;
    # then even a task ending in ":" ("Summarize this email:") is taken as the item.
    first_number = next((it[0] for it in items), None)
    out.restarted = start_known and start > 1 and first_number == 1
    paragraphs = [" ".join(p) for p in leading if p]
    paragraphs = [p for p in paragraphs if not (_PREAMBLE_RE.match(_demd(p)) or _is_chatter(p))]
    if paragraphs:
        if not start_known and first_number is not None:
            start = first_number - 1
        if items and first_number is not None and first_number == start + 1:
            items.insert(0, [start, [paragraphs.pop()]])
        elif not items and len(paragraphs) == 1 and not _is_preamble(paragraphs[0]) \
                and _looks_like_single_task(paragraphs[0]):
            items.insert(0, [start, [paragraphs.pop()]])
            ended_in_item = not loose
        out.unparseable.extend(f"not a list item: {one_line(p)}"
                               for p in paragraphs if not _is_preamble(p))
    out.unparseable.extend(f"not a list item: {one_line(' '.join(p))}" for p in loose if p)

    if num and not has_numbers and len(items) > num:
        items = items[:num]                        # bullets: no numbers to stop at
        ended_in_item = False

    cleaned = [(clean_instruction(" ".join(lines)), " ".join(lines)) for _, lines in items]
    if finish_reason == "length" and ended_in_item and cleaned:
        _, raw_last = cleaned.pop()
        if one_line(raw_last):
            out.unparseable.append(f"{TRUNCATED}: {one_line(raw_last)}")
    seen = set()
    for item, _ in cleaned:
        key = item.casefold()
        if item and key not in seen:
            seen.add(key)
            out.items.append(item)
    return out


# --------------------------------------------------------------------------- classification

_YES = {"yes", "yep", "yeah", "true", "correct"}
_NO = {"no", "nope", "false", "incorrect"}
_ECHO_RE = re.compile(
    r"^(?:labeling task\??|labelling task\??|classification task\??|is it (?:a )?classification\??|"
    r"answer|final answer|classification|result|verdict|response|output)\s*[:?\-]*\s*", re.I)
_BOTH_RE = re.compile(r"\b(?:yes\s*(?:and|or|/)\s*no|no\s*(?:and|or|/)\s*yes)\b", re.I)
_IS_NOT_RE = re.compile(
    r"\b(?:is not|isn't|is no|not)\s+(?:a\s+)?(?:labeling|labelling|classification)\b", re.I)
_IS_RE = re.compile(r"\b(?:is|it's)\s+(?:a\s+)?(?:labeling|labelling|classification) task\b", re.I)


def parse_classification(text: str) -> bool | None:
    """Yes -> True, No -> False, anything unclear -> None."""
    lines = [_demd(ln) for ln in _lines(text)]
    lines = [ln for ln in lines if ln]
    for line in lines[:2]:
        s = _ECHO_RE.sub("", line.replace("*", "").replace("_", " ")).strip()
        if not s:
            continue
        first_sentence = re.split(r"(?<=[.!?])\s", s, maxsplit=1)[0]
        if _BOTH_RE.search(first_sentence):
            return None
        words = re.findall(r"[a-z]+", first_sentence.lower())
        if words and words[0] in _YES:
            return True
        if words and words[0] in _NO:
            return False
        has_yes = "yes" in words
        has_no = "no" in words
        if has_yes != has_no:
            return has_yes
    whole = " ".join(lines)
    if _IS_NOT_RE.search(whole):
        return False
    if _IS_RE.search(whole):
        return True
    return None


# --------------------------------------------------------------------------- field blocks

_FIELD_RE = re.compile(
    r"""^\s*(?:[-*+>]\s+)?(?:\#{1,6}\s*)?(?:\*\*|__)?\s*(?:\d{1,3}\s*[.)]\s*)?
    (?P<key>class\ label|label|input|output|instruction)
    \s*(?P<num>\d{1,3})?\s*(?:\*\*|__)?\s*:[ \t]*(?:\*\*|__)?(?P<rest>.*)$""", re.I | re.X)
_EXAMPLE_HEADER_RE = re.compile(
    r"""^\s*(?:[-*+]\s+)?(?:\#{1,6}\s*)?(?:\*\*|__)?\s*(?:example|instance|sample)\s*\#?\s*
    (?P<n>\d{1,3})\s*(?:\*\*|__)?\s*[:.)]?\s*(?:\*\*|__)?[ \t]*(?P<rest>.*)$""", re.I | re.X)
_TASK_HEADER_RE = re.compile(
    r"""^\s*(?:[-*+]\s+)?(?:\#{1,6}\s*)?(?:\*\*|__)?\s*
    (?:task\s*\#?\s*(?P<n>\d{1,3})\s*(?:\*\*|__)?\s*[:.)]?
      | (?P<m>\d{1,3})[.):]\s*(?:\*\*|__)?\s*(?=(?:instruction|input|output)\b|$)   # "4." alone
    )\s*(?:\*\*|__)?[ \t]*(?P<rest>.*)$""", re.I | re.X)
_TASK_LINE_RE = re.compile(
    r"^\s*(?:\#{1,6}\s*)?(?:\*\*|__)?\s*(?:task|instruction)\s*(?:\*\*|__)?\s*:", re.I)

_KEYS = {"class label": "label", "label": "label", "input": "input", "output": "output",
         "instruction": "instruction"}

_NONE_VALUES = {"", "none", "(none)", "[none]", "<none>", "n/a", "(n/a)", "na", "null", "nil",
                "-", "\u2014", "no input", "(no input)", "<noinput>", "<no input>", "(empty)",
                "empty", "nothing", "not applicable", "none required", "(none required)",
                "no input needed", "(no input needed)", "no input required"}


@dataclass
class _Block:
    fields: dict = field(default_factory=dict)    # key -> [first-line rest, more lines...]
    order: list = field(default_factory=list)
    number: int | None = None


def _value(lines: list[str]) -> str:
    """A field's value: one line stripped, or several lines with their layout kept."""
    first, more = lines[0], list(lines[1:])
    while more and (not more[-1].strip() or _RULE_RE.match(more[-1])):
        more.pop()                                 # a separator after the value
    if first.strip():
        body = [first.strip()] + more
    else:
        body = more
        while body and not body[0].strip():
            body.pop(0)
    value = "\n".join(body).rstrip()
    if "\n" not in value:
        value = _unwrap_bold(value.strip())
    return value


def _empty_input(value: str) -> bool:
    v = _unwrap_quotes(value.strip().strip("*_`").strip()).rstrip(".").strip().lower()
    return v in _NONE_VALUES


def _drop_trailing_chatter(lines: list[str]) -> list[str]:
    """Remove closing paragraphs that are remarks to the user."""
    lines = list(lines)
    while lines:
        i = len(lines)
        while i > 0 and lines[i - 1].strip():
            i -= 1
        para = lines[i:]
        if para and _is_chatter(para[0]) and i > 0:
            lines = lines[:i]
            while lines and not lines[-1].strip():
                lines.pop()
            continue
        # a closing remark glued to the last line of the text
        if lines and _is_chatter(lines[-1]) and len(lines) > 1 and not _FIELD_RE.match(lines[-1]):
            lines.pop()
            continue
        break
    return lines


def _read_blocks(text: str, *, header_re: re.Pattern, keys: set[str],
                 stop_index: int | None = None, header_rest_key: str | None = None,
                 ) -> tuple[list[_Block], list[str], bool]:
    """Split text into blocks of fields.

    A block starts at a header line ("Example 2", "### Task 5"), or at a field that the
    current block already has or that comes earlier in the answer's own field order (an
    "Input" after an "Output" in an input-first answer). Lines that are not fields continue the
    current field's value (so multi-line values keep their layout). Returns (blocks with
    at least one field, loose paragraphs that are not preambles, ended_in_field): the
    last flag says whether the text ran out inside a field, i.e. may have been cut.
    Text after a header on its own line ("Task 5: Write ...") goes to `header_rest_key`.
    """
    lines = _drop_trailing_chatter(_lines(text))
    blocks: list[_Block] = []
    loose: list[list[str]] = []
    cur: _Block | None = None
    cur_key: str | None = None
    loose_cur: list[str] | None = None
    echo = False                 # inside an echoed "Task: ..." (instances only)
    ended_in_field = False
    seen_order: list[str] = []   # field order as the answer uses it, e.g. input, output
    for line in lines:
        stripped = line.strip()
        if _RULE_RE.match(line) and cur_key is None:   # ---, ###: a separator
            cur, loose_cur, echo, ended_in_field = None, None, False, False
            continue                                   # (inside a value: kept, see _value)
        h = header_re.match(line)
        if h is not None:
            number = int(h.group("n") or h.groupdict().get("m"))
            if stop_index is not None and number >= stop_index:
                ended_in_field = False
                break                                   # past the stop label
            if cur is None or cur.number != number:     # "4. Input:" after "4. Instruction:"
                cur = _Block(number=number)
                blocks.append(cur)
            cur_key, loose_cur, echo, ended_in_field = None, None, False, False
            if not h.group("rest").strip():
                continue
            line = stripped = h.group("rest")
            if header_rest_key and not _FIELD_RE.match(line):
                if header_rest_key not in seen_order:
                    seen_order.append(header_rest_key)
                cur.fields[header_rest_key] = [line]
                cur.order.append(header_rest_key)
                cur_key, ended_in_field = header_rest_key, True
                continue
        f = _FIELD_RE.match(line)
        key = _KEYS[f.group("key").lower()] if f else None
        if (key is not None and key not in keys) or (
                key is None and "instruction" not in keys and _TASK_LINE_RE.match(line)):
            # "Task: ..." / "Instruction: ..." in an instances answer: the task echoed,
            # or (after some examples) the start of another task, where reading stops.
            if any(b.fields for b in blocks):
                ended_in_field = False
                break
            echo, cur_key, loose_cur = True, None, None
            continue
        if f is not None:
            if key not in seen_order:
                seen_order.append(key)
            if cur is None or key in cur.fields or (
                    cur.order and seen_order.index(key) < seen_order.index(cur.order[-1])):
                cur = _Block()                          # a field repeats: the next example
                blocks.append(cur)
            cur.fields[key] = [f.group("rest")]
            cur.order.append(key)
            cur_key, loose_cur, echo, ended_in_field = key, None, False, True
            continue
        if echo:
            echo = bool(stripped)
            continue
        if cur_key is not None:
            cur.fields[cur_key].append(line)
            ended_in_field = True
            continue
        ended_in_field = False
        if not stripped:
            loose_cur = None
            continue
        if _HEADING_RE.match(line):
            continue
        if loose_cur is None:
            loose_cur = []
            loose.append(loose_cur)
        loose_cur.append(stripped)
    loose_text = [one_line(" ".join(p)) for p in loose]
    loose_text = [p for p in loose_text if p and not _is_preamble(p)]
    return [b for b in blocks if b.fields], loose_text, ended_in_field


def _block_text(block: _Block) -> str:
    parts = [f"{k}: {one_line(' '.join(block.fields[k]))}" for k in block.order]
    return one_line(" | ".join(parts)) or "(empty example)"


# --------------------------------------------------------------------------- instances

def parse_instances(text: str, is_classification: bool, *,
                    finish_reason: str | None = None) -> ParsedInstances:
    """Instances (``{"input", "output"}``) for one instruction, at most 5.

    Reads input-first (``Input`` / ``Output``) and output-first (``Label`` / ``Input``)
    examples in any order of fields; for classification the label becomes the output.
    An input of "(none)", "None", "N/A" or nothing is returned as "".
    `finish_reason="length"` drops the last example if the text ended inside it.
    """
    out = ParsedInstances()
    blocks, loose, ended_in_field = _read_blocks(
        text, header_re=_EXAMPLE_HEADER_RE, keys={"input", "output", "label"})
    out.unparseable.extend(f"not an example: {p}" for p in loose)
    if finish_reason == "length" and ended_in_field and blocks:
        out.unparseable.append(f"{TRUNCATED}: {_block_text(blocks.pop())}")
    for block in blocks:
        f = block.fields
        if is_classification:
            answer_key = "label" if "label" in f else ("output" if "output" in f else None)
        else:
            answer_key = "output" if "output" in f else ("label" if "label" in f else None)
        if answer_key is None:
            what = "no label" if is_classification else "no output"
            out.unparseable.append(f"{what}: {_block_text(block)}")
            continue
        inp = _value(f["input"]) if "input" in f else ""
        if _empty_input(inp):
            inp = ""
        answer = _value(f[answer_key])
        if is_classification:
            answer = _unwrap_quotes(answer.strip())
        out.instances.append({"input": inp, "output": answer})
    out.instances = out.instances[:MAX_INSTANCES]
    return out


# --------------------------------------------------------------------------- batch

def parse_batch(text: str, prompt: Prompt | None = None, *,
                finish_reason: str | None = None) -> ParsedBatch:
    """Complete tasks (``{"instruction", "input", "output"}``) from a batch answer.

    With `prompt`, tasks numbered at or past its stop label are ignored and at most
    `num_to_generate` tasks are kept. `finish_reason="length"` drops the last task if
    the text ended inside it.
    """
    out = ParsedBatch()
    stop = num = None
    if prompt is not None:
        start, stop, num = _list_bounds(prompt)
    blocks, loose, ended_in_field = _read_blocks(
        text, header_re=_TASK_HEADER_RE, keys={"instruction", "input", "output"},
        stop_index=stop, header_rest_key="instruction")
    out.unparseable.extend(f"not a task: {p}" for p in loose)
    if finish_reason == "length" and ended_in_field and blocks:
        out.unparseable.append(f"{TRUNCATED}: {_block_text(blocks.pop())}")
    seen = set()
    for block in blocks:
        f = block.fields
        instruction = clean_instruction(" ".join(f.get("instruction", [""])))
        if not instruction or "output" not in f:
            what = "no instruction" if not instruction else "no output"
            out.unparseable.append(f"{what}: {_block_text(block)}")
            continue
        if instruction.casefold() in seen:
            continue
        seen.add(instruction.casefold())
        inp = _value(f["input"]) if "input" in f else ""
        if _empty_input(inp):
            inp = ""
        out.tasks.append({"instruction": instruction, "input": inp,
                          "output": _value(f["output"])})
    if num:
        out.tasks = out.tasks[:num]
    return out


# --------------------------------------------------------------------------- structured (JSON)

def schema_problem(value, schema: dict) -> str | None:
    """The first way `value` breaks `schema`, in words (None: it matches)."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message} (at {where})" if where else error.message


def read_json(text: str, schema: dict, *, finish_reason: str | None = None) -> tuple[object, str | None]:
    """(the value, None) when `text` is one JSON value matching `schema`; else (None, reason),
    the reason being ``"<kind>: <detail>"`` with a kind of TRUNCATED, NOT_JSON or OFF_SCHEMA."""
    try:
        value = json.loads(text or "")
    except ValueError as exc:
        if finish_reason == "length":
            return None, f"{TRUNCATED}: the JSON ends after {len(text or '')} characters"
        return None, f"{NOT_JSON}: {getattr(exc, 'msg', str(exc))} at character {getattr(exc, 'pos', 0)}"
    problem = schema_problem(value, schema)
    if problem is not None:
        return None, f"{OFF_SCHEMA}: {problem}"
    return value, None


def _schema(prompt: Prompt | None, stage: str, **kwargs) -> dict:
    return prompt.schema if prompt is not None and prompt.schema else response_schema(stage, **kwargs)


def _failed(reason: str, text: str) -> str:
    return f"{reason} | {one_line(text)[:300]}"


# A list number a model wrote inside a JSON string ("9. Write ..."): the array already numbers.
_LEADING_NUMBER_RE = re.compile(r"^\s*\(?\d{1,3}[.):]\s+")


def parse_instructions_json(text: str, prompt: Prompt | None = None, *,
                            finish_reason: str | None = None) -> ParsedList:
    """New instructions from a structured answer ``{"instructions": [...]}``."""
    out = ParsedList()
    value, reason = read_json(text, _schema(prompt, STAGE_INSTRUCTIONS), finish_reason=finish_reason)
    if reason is not None:
        out.unparseable.append(_failed(reason, text))
        return out
    seen = set()
    for raw in value["instructions"]:
        item = clean_instruction(_LEADING_NUMBER_RE.sub("", raw, count=1))
        if item and item.casefold() not in seen:
            seen.add(item.casefold())
            out.items.append(item)
    return out


def parse_classification_json(text: str) -> bool | None:
    """``{"labeling_task": "yes"}`` -> True, ``"no"`` -> False, anything else -> None."""
    value, reason = read_json(text, response_schema(STAGE_CLASSIFY))
    return None if reason is not None else value["labeling_task"] == "yes"


def parse_instances_json(text: str, is_classification: bool, *, prompt: Prompt | None = None,
                         finish_reason: str | None = None) -> ParsedInstances:
    """Instances from a structured answer ``{"examples": [{"input", "output"}, ...]}``."""
    out = ParsedInstances()
    schema = _schema(prompt, STAGE_INSTANCES, is_classification=is_classification)
    value, reason = read_json(text, schema, finish_reason=finish_reason)
    if reason is not None:
        out.unparseable.append(_failed(reason, text))
        return out
    for example in value["examples"]:
        inp = example["input"].strip("\n").rstrip()
        if _empty_input(inp):
            inp = ""
        output = example["output"].strip("\n").rstrip()
        if is_classification:
            output = _unwrap_quotes(output.strip())
        out.instances.append({"input": inp, "output": output})
    out.instances = out.instances[:MAX_INSTANCES]
    return out


def parse_batch_json(text: str, prompt: Prompt | None = None, *,
                     finish_reason: str | None = None) -> ParsedBatch:
    """Complete tasks from a structured answer ``{"tasks": [{"instruction", "input", "output"}]}``."""
    out = ParsedBatch()
    value, reason = read_json(text, _schema(prompt, STAGE_BATCH), finish_reason=finish_reason)
    if reason is not None:
        out.unparseable.append(_failed(reason, text))
        return out
    seen = set()
    for task in value["tasks"]:
        instruction = clean_instruction(_LEADING_NUMBER_RE.sub("", task["instruction"], count=1))
        if not instruction or not task["output"].strip():
            out.unparseable.append(f"{'no instruction' if not instruction else 'no output'}: "
                                   f"{one_line(json.dumps(task, ensure_ascii=False))}")
            continue
        if instruction.casefold() in seen:
            continue
        seen.add(instruction.casefold())
        inp = task["input"].strip("\n").rstrip()
        out.tasks.append({"instruction": instruction, "input": "" if _empty_input(inp) else inp,
                          "output": task["output"].strip("\n").rstrip()})
    return out


# --------------------------------------------------------------------------- judge

@dataclass
class JudgeVerdict:
    """A judge's answers to the three questions (model.QUESTIONS), each "yes", "no" or "unsure",
    and its reason; or, when the answer cannot be read, every answer None and `unparseable` saying
    why (never a guess)."""
    valid_task: str | None = None
    input_ok: str | None = None
    output_ok: str | None = None
    reason: str = ""
    unparseable: str | None = None

    @property
    def answers(self) -> dict:
        return {"valid_task": self.valid_task, "input_ok": self.input_ok, "output_ok": self.output_ok}

    @property
    def ok(self) -> bool:
        return self.unparseable is None


JUDGE_QUESTIONS = tuple(JUDGE_LABELS)   # valid_task, input_ok, output_ok (model.QUESTIONS' order)
# How people (and models) write each question's label: ours, the study's words, and short forms.
_JUDGE_LABEL_RE = re.compile(
    r"""^\s*(?:[-*+>]\s+)?(?:\#{1,6}\s*)?(?:\d[.)]\s*)?(?:\*\*|__)?\s*(?P<label>
        valid(?:\s+task)?\??|task\s+valid(?:ity)?\??|(?:is\s+(?:it|this|the\s+instruction)\s+a\s+)?valid\s+task\??
      | input\s+(?:appropriate|ok|okay|fine|suitable|valid|correct)\??|appropriate\s+input\??|input\??
      | output\s+(?:acceptable|ok|okay|correct|fine|valid)\??|acceptable\s+output\??|output\??
      | reason(?:ing)?|why|explanation|because
    )\s*(?:\*\*|__)?\s*[:=\-\u2013\u2014]\s*(?:\*\*|__)?(?P<rest>.*)$""", re.I | re.X)
_JUDGE_WORDS = {
    "yes": "yes", "y": "yes", "yeah": "yes", "yep": "yes", "true": "yes", "correct": "yes", "valid": "yes",
    "appropriate": "yes", "acceptable": "yes", "ok": "yes", "okay": "yes",
    "no": "no", "n": "no", "nope": "no", "false": "no", "incorrect": "no", "invalid": "no",
    "inappropriate": "no", "unacceptable": "no", "wrong": "no",
    "unsure": "unsure", "uncertain": "unsure", "unclear": "unsure", "maybe": "unsure", "unknown": "unsure",
    "partly": "unsure", "partially": "unsure",
}
_NOT_SURE_RE = re.compile(r"^(?:not\s+sure|can(?:no|')t\s+tell|hard\s+to\s+(?:say|tell)|don'?t\s+know)\b", re.I)


def _judge_word(text: str) -> str | None:
    """yes / no / unsure from the start of a value ("Yes.", "**No** - the list...", "not sure")."""
    value = text.replace("*", "").replace("`", "").strip().strip("\"'").strip()
    if _NOT_SURE_RE.match(value):
        return "unsure"
    m = re.match(r"[A-Za-z]+", value)
    return _JUDGE_WORDS.get(m.group(0).lower()) if m else None


def _judge_question(label: str) -> str | None:
    label = " ".join(label.lower().rstrip("?").split())
    if label in ("reason", "reasoning", "why", "explanation", "because"):
        return "reason"
    if "valid" in label and "input" not in label and "output" not in label:
        return "valid_task"
    if label.startswith("input") or label.endswith("input"):
        return "input_ok"
    if label.startswith("output") or label.endswith("output"):
        return "output_ok"
    return None


def _unreadable(why: str, text: str) -> JudgeVerdict:
    return JudgeVerdict(unparseable=_failed(why, text))


def parse_judge(text: str, *, finish_reason: str | None = None) -> JudgeVerdict:
    """A verdict from a text answer: three labeled lines (any of the usual spellings, markdown,
    bullets and numbering allowed) and an optional reason. Forgiving in: a completion that
    continues the prompt's open label (" yes" on its first line) answers "valid task". Strict
    out: all three answers or none (`unparseable` names what is missing or contradictory)."""
    found: dict[str, str] = {}
    reason: list[str] = []
    in_reason = False
    lines = [ln for ln in _lines(text) if not _FENCE_RE.match(ln)]
    for k, line in enumerate(lines):
        if not line.strip():
            in_reason = False
            continue
        m = _JUDGE_LABEL_RE.match(line)
        question = _judge_question(m.group("label")) if m else None
        if question is None and k == 0 and not found:
            word = _judge_word(line)      # a completion of "Valid task:"
            if word is not None:
                found["valid_task"] = word
            continue
        if question is None:
            if in_reason:
                reason.append(line.strip())
            continue
        if question == "reason":
            reason.append(m.group("rest").strip())
            in_reason = True
            continue
        in_reason = False
        word = _judge_word(m.group("rest"))
        if word is None:
            return _unreadable(f"no yes/no/unsure for {question}", text)
        if question in found and found[question] != word:
            return _unreadable(f"two different answers for {question}", text)
        found[question] = word
    missing = [q for q in JUDGE_QUESTIONS if q not in found]
    if missing:
        why = f"{TRUNCATED}: " if finish_reason == "length" else ""
        return _unreadable(f"{why}no answer for {', '.join(missing)}", text)
    return JudgeVerdict(**found, reason=one_line(" ".join(reason)))


def parse_judge_json(text: str, *, finish_reason: str | None = None) -> JudgeVerdict:
    """A verdict from a structured answer matching `response_schema("judge")`, strictly."""
    value, reason = read_json(text, response_schema(STAGE_JUDGE), finish_reason=finish_reason)
    if reason is not None:
        return _unreadable(reason, text)
    return JudgeVerdict(**{q: value[q] for q in JUDGE_QUESTIONS}, reason=one_line(value["reason"]))


# --------------------------------------------------------------------------- parser versions
# Like a prompt, each stage's parser has a version, stored with every request whose answer it
# read (`requests.parser_version`, set when the answer is applied), so re-filter reads an old
# run's answers with the parser that read them first. The rule: a change that could read any
# stored answer differently gets a new version. Register the new reader under it and make it
# the stage's current one in PARSER_VERSIONS; keep the old reader registered (a frozen copy of
# the old code if need be) for as long as runs parsed with it should re-filter. A version this
# code does not have is refused by name (`UnknownParserVersion`), never read by another parser.
# A version covers both layouts of its stage: the forgiving text parser and, for a request sent
# with a schema, the strict JSON one.

def _read_instructions_v1(text: str, prompt: Prompt | None, *, finish_reason: str | None = None,
                          is_classification: bool = False) -> ParsedList:
    if prompt is not None and prompt.structured:
        return parse_instructions_json(text, prompt, finish_reason=finish_reason)
    return parse_instructions(text, prompt, finish_reason=finish_reason)


def _read_classify_v1(text: str, prompt: Prompt | None, *, finish_reason: str | None = None,
                      is_classification: bool = False) -> bool | None:
    if prompt is not None and prompt.structured:
        return parse_classification_json(text)
    return parse_classification(text)


def _read_instances_v1(text: str, prompt: Prompt | None, *, finish_reason: str | None = None,
                       is_classification: bool = False) -> ParsedInstances:
    if prompt is not None and prompt.structured:
        return parse_instances_json(text, is_classification, prompt=prompt, finish_reason=finish_reason)
    return parse_instances(text, is_classification, finish_reason=finish_reason)


def _read_batch_v1(text: str, prompt: Prompt | None, *, finish_reason: str | None = None,
                   is_classification: bool = False) -> ParsedBatch:
    if prompt is not None and prompt.structured:
        return parse_batch_json(text, prompt, finish_reason=finish_reason)
    return parse_batch(text, prompt, finish_reason=finish_reason)


def _read_judge_v1(text: str, prompt: Prompt | None, *, finish_reason: str | None = None,
                   is_classification: bool = False) -> JudgeVerdict:
    if prompt is not None and prompt.structured:
        return parse_judge_json(text, finish_reason=finish_reason)
    return parse_judge(text, finish_reason=finish_reason)


def _nul_free(parsed):
    """What a parser read, with NUL as U+FFFD in every text (model.without_nul): a NUL from a
    model's answer would otherwise reach the pool and every export, and an exported file holding
    one cannot be imported as seeds."""
    def clean(value):
        if isinstance(value, str):
            return without_nul(value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    for name in ("items", "instances", "tasks", "unparseable"):
        if hasattr(parsed, name):
            setattr(parsed, name, clean(getattr(parsed, name)))
    return parsed


# v2: v1 with the NUL rule applied to what it read (answers without NUL read the same).
def _read_instructions_v2(text: str, prompt: Prompt | None, **kwargs) -> ParsedList:
    return _nul_free(_read_instructions_v1(text, prompt, **kwargs))


def _read_instances_v2(text: str, prompt: Prompt | None, **kwargs) -> ParsedInstances:
    return _nul_free(_read_instances_v1(text, prompt, **kwargs))


def _read_batch_v2(text: str, prompt: Prompt | None, **kwargs) -> ParsedBatch:
    return _nul_free(_read_batch_v1(text, prompt, **kwargs))


# version -> (stage, reader). Every reader takes (text, prompt, *, finish_reason, is_classification).
PARSERS: dict[str, tuple[str, Callable]] = {
    "instructions-parse-v1": (STAGE_INSTRUCTIONS, _read_instructions_v1),
    "instructions-parse-v2": (STAGE_INSTRUCTIONS, _read_instructions_v2),
    "classify-parse-v1": (STAGE_CLASSIFY, _read_classify_v1),
    "instances-parse-v1": (STAGE_INSTANCES, _read_instances_v1),
    "instances-parse-v2": (STAGE_INSTANCES, _read_instances_v2),
    "batch-parse-v1": (STAGE_BATCH, _read_batch_v1),
    "batch-parse-v2": (STAGE_BATCH, _read_batch_v2),
    "judge-parse-v1": (STAGE_JUDGE, _read_judge_v1),
}
# The version each stage's answers are read with today (and stored with). A classification is
# a yes/no and a verdict's reason is never exported: their readers need no NUL rule.
PARSER_VERSIONS: dict[str, str] = {
    STAGE_INSTRUCTIONS: "instructions-parse-v2",
    STAGE_CLASSIFY: "classify-parse-v1",
    STAGE_INSTANCES: "instances-parse-v2",
    STAGE_BATCH: "batch-parse-v2",
    STAGE_JUDGE: "judge-parse-v1",      # stored with every verdict (judge_verdicts.parser_version)
}
# Requests applied before versions were stored (parser_version NULL, pool files from before
# schema 6) were read by the parsers that became the first versions: v1 is that code, unchanged.
PRE_VERSION_PARSERS: dict[str, str] = {
    STAGE_INSTRUCTIONS: "instructions-parse-v1",
    STAGE_CLASSIFY: "classify-parse-v1",
    STAGE_INSTANCES: "instances-parse-v1",
    STAGE_BATCH: "batch-parse-v1",
}


class UnknownParserVersion(ValueError):
    """A stored parser version this code does not have (or one of another stage)."""

    def __init__(self, version: str, stage: str, message: str | None = None):
        self.version, self.stage = version, stage
        super().__init__(message or (
            f"The {stage} answer was read with parser {version}, which this version of selfinstruct "
            f"does not have (it has {', '.join(known_parser_versions(stage)) or 'none'})."))


def known_parser_versions(stage: str) -> list[str]:
    """The parser versions this code can read a stage's answers with, oldest first."""
    return [version for version, (st, _) in PARSERS.items() if st == stage]


def has_parser(stage: str, version: str) -> bool:
    entry = PARSERS.get(version)
    return entry is not None and entry[0] == stage


def parser_version_of(stage: str, stored: str | None, *, applied: bool) -> str:
    """The parser version that reads a stored request's answer: the one it was applied with
    (NULL: applied before versions were stored, see PRE_VERSION_PARSERS), or, for a request not
    applied yet, the stage's current one (which applying it then stores)."""
    if not applied:
        return PARSER_VERSIONS[stage]
    return stored or PRE_VERSION_PARSERS[stage]


def parse_answer(stage: str, text: str, prompt: Prompt | None = None, *, finish_reason: str | None = None,
                 is_classification: bool = False, version: str | None = None):
    """Read a request's answer with the parser `version` of its stage (default: the current one):
    strict JSON when the request was sent with a schema, else the forgiving text parser. Returns
    what that parser returns; `UnknownParserVersion` when this code has no such version."""
    if stage not in PARSER_VERSIONS:
        raise ValueError(f"unknown stage {stage!r}")
    version = version or PARSER_VERSIONS[stage]
    if not has_parser(stage, version):
        raise UnknownParserVersion(version, stage)
    reader = PARSERS[version][1]
    return reader(text, prompt, finish_reason=finish_reason, is_classification=is_classification)


# --------------------------------------------------------------------------- reading prompts back
# A rendered prompt (`Prompt.full_text()`, or a chat request's messages joined with a blank
# line) read back: which stage it is and what it asks for. The offline demo model answers from
# this, and `_list_bounds` falls back on it for stored requests without meta. It reads the
# wording `prompts` writes (its heads, bodies and JSON tails), and the batch examples with
# `parse_batch`, which is why it lives here: `prompts` never imports this module.

_HEADS = (
    (INSTRUCTIONS_HEAD, STAGE_INSTRUCTIONS),
    (CLASSIFY_HEAD, STAGE_CLASSIFY),
    (INSTANCES_HEAD, STAGE_INSTANCES),
    (INSTANCES_LABEL_HEAD, STAGE_INSTANCES),
    (BATCH_HEAD, STAGE_BATCH),
    (JUDGE_HEAD, STAGE_JUDGE),
)


@dataclass
class PromptPayload:
    """What a rendered prompt asks for."""
    stage: str
    instruction: str | None = None          # classify / instances: the target task
    is_classification: bool | None = None   # instances: output-first requested
    examples: list = field(default_factory=list)  # instructions: str; batch: dict
    start_index: int | None = None          # instructions / batch: first new number
    num_to_generate: int | None = None      # instructions / batch
    structured: bool = False                # the prompt asks for JSON (see JSON_TAILS)
    item: dict | None = None                # judge: {"instruction", "input", "output"} of the judged item


def _find_head(text: str) -> tuple[int, str, str] | None:
    best = None
    for head, stage in _HEADS:
        i = text.find(head)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, head, stage)
    return best


def identify_stage(text: str) -> str | None:
    """The stage of a rendered prompt (full text or chat messages joined), or None."""
    found = _find_head(text or "")
    return found[2] if found else None


_ADD_RE = re.compile(r"\bAdd (\d+) new tasks? to the list\b")
_WRITE_RE = re.compile(r"\bWrite (\d+) new tasks? \(")
_NUMBERED_LINE_RE = re.compile(r"^(\d+)\. (.*\S)\s*$")
_OPEN_LABEL_RE = re.compile(r"^(\d+)\.\s*$")
_BATCH_HEADER_RE = re.compile(r"^### Task (\d+)\s*$", re.M)


def _after_body(text: str, body: str, fallback_marker: str) -> str | None:
    """The text after a prompt's constant body, else after the last `fallback_marker`."""
    i = text.find(body)
    if i >= 0:
        return text[i + len(body):]
    j = text.rfind(fallback_marker)
    return text[j:].lstrip("\n") if j >= 0 else None


def _target_between(rest: str | None, tail: str) -> str | None:
    if rest is None or not rest.startswith("Task: "):
        return None
    rest = rest[len("Task: "):].rstrip()
    if rest.endswith(tail):
        rest = rest[: -len(tail)]
    rest = rest.strip()
    return rest or None


def read_prompt(text: str) -> PromptPayload | None:
    """Recognise a rendered prompt and pull out what it asks for; None if unknown."""
    text = (text or "").replace("\r\n", "\n")
    found = _find_head(text)
    if found is None:
        return None
    pos, head, stage = found
    region = text[pos:]
    if stage == STAGE_JUDGE:
        return _read_judge_prompt(region)
    structured = False
    for tail in JSON_TAILS:
        if region.rstrip().endswith(tail):
            region, structured = region.rstrip()[: -len(tail)].rstrip(), True
            break
    if stage == STAGE_INSTRUCTIONS:
        m = _ADD_RE.search(region)
        lines = region.split("\n")
        examples = [mm.group(2) for mm in map(_NUMBERED_LINE_RE.match, lines[1:]) if mm]
        start = None
        for line in reversed(lines):
            if line.strip():
                om = _OPEN_LABEL_RE.match(line.strip())
                start = int(om.group(1)) if om else None
                break
        return PromptPayload(stage, examples=examples,
                             start_index=start or len(examples) + 1,
                             num_to_generate=int(m.group(1)) if m else 8, structured=structured)
    if stage == STAGE_CLASSIFY:
        rest = _after_body(region, CLASSIFY_BODY, "\n\nTask: ")
        return PromptPayload(stage, instruction=_target_between(rest, CLASSIFY_QUESTION),
                             structured=structured)
    if stage == STAGE_INSTANCES:
        output_first = head == INSTANCES_LABEL_HEAD
        body = LABEL_BODY if output_first else INSTANCES_BODY
        rest = _after_body(region, body, "\n\nTask: ")
        return PromptPayload(stage, instruction=_target_between(rest, "\nExample 1"),
                             is_classification=output_first, structured=structured)
    # batch
    m = _WRITE_RE.search(region)
    headers = list(_BATCH_HEADER_RE.finditer(region))
    examples: list[dict] = []
    if structured:   # no open header: every task shown is an example
        start = None
        if headers:
            examples = parse_batch(region[headers[0].start():]).tasks
    else:
        start = int(headers[-1].group(1)) if headers else None
        if len(headers) >= 2:
            examples = parse_batch(region[headers[0].start(): headers[-1].start()]).tasks
    return PromptPayload(stage, examples=examples,
                         start_index=start or len(examples) + 1,
                         num_to_generate=int(m.group(1)) if m else 20, structured=structured)


_JUDGE_OPEN = f"\n{JUDGE_LABELS['valid_task']}:"


def _judge_field(block: str, name: str) -> str:
    value = block[len(name) + 1:]
    value = value[1:] if value.startswith(" ") else value.lstrip("\n")
    return "" if value.strip() == NO_INPUT else value


def _read_judge_prompt(region: str) -> PromptPayload:
    """The judged item of a judge prompt: the text after the worked examples, its three fields
    split at the first "\nInput:" and the first "\nOutput:" after it."""
    structured = region.rstrip().endswith(JUDGE_JSON_TAIL)
    rest = _after_body(region, JUDGE_BODY, "\n\nInstruction: ") or ""
    rest = rest.rstrip()
    if structured:
        rest = rest[: -len(JUDGE_JSON_TAIL)].rstrip()
    elif rest.endswith(_JUDGE_OPEN):
        rest = rest[: -len(_JUDGE_OPEN)]
    item = None
    i, j = rest.find("\nInput:"), -1
    if rest.startswith("Instruction:") and i >= 0:
        j = rest.find("\nOutput:", i + 1)
    if j >= 0:
        item = {"instruction": _judge_field(rest[:i], "Instruction").strip(),
                "input": _judge_field(rest[i + 1:j], "Input"), "output": _judge_field(rest[j + 1:], "Output")}
    return PromptPayload(STAGE_JUDGE, instruction=item["instruction"] if item else None, structured=structured,
                         item=item)


def prompt_examples(prompt: Prompt) -> list[str]:
    """The instructions an instructions or batch prompt shows as examples ([] for other stages)."""
    if prompt.stage not in (STAGE_INSTRUCTIONS, STAGE_BATCH):
        return []
    payload = read_prompt(prompt.full_text())
    if payload is None:
        return []
    return [e if isinstance(e, str) else e.get("instruction", "") for e in payload.examples]


def extract_target_instruction(text: str) -> str | None:
    """The task a classify or instances prompt asks about."""
    p = read_prompt(text)
    return p.instruction if p else None


def extract_instruction_examples(text: str) -> tuple[list[str], int] | None:
    """(in-context instructions, start index) of an instructions prompt."""
    p = read_prompt(text)
    if p is None or p.stage != STAGE_INSTRUCTIONS:
        return None
    return p.examples, p.start_index


def extract_batch_examples(text: str) -> list[dict] | None:
    """The example tasks ({"instruction", "input", "output"}) of a batch prompt."""
    p = read_prompt(text)
    if p is None or p.stage != STAGE_BATCH:
        return None
    return p.examples


def wants_output_first(text: str) -> bool | None:
    """For an instances prompt: True when it asks for label-first examples."""
    p = read_prompt(text)
    if p is None or p.stage != STAGE_INSTANCES:
        return None
    return p.is_classification


# --------------------------------------------------------------------------- evaluation ratings (A-D)
from .prompts import (EVAL_ANSWER_CLOSE, EVAL_ANSWER_OPEN, EVAL_COMPLETION_OPEN,  # noqa: E402
                      EVAL_RATE_BODY, EVAL_RATE_JSON_TAIL, EVAL_RATE_SCHEMA, EVAL_RATING_LABEL, JUDGE_REASON_LABEL,
                      SYSTEM_EVAL_ANSWER)

EVAL_RATE_PARSER = "eval-rate-parse-v1"     # stored with every pre-rating (eval_prerates.parser_version)


@dataclass
class EvalRating:
    """A judge's A-D rating of one answer and its reason; or `unparseable` saying why none could be
    read (never a guess)."""
    rating: str | None = None
    reason: str = ""
    unparseable: str | None = None

    @property
    def ok(self) -> bool:
        return self.unparseable is None


_RATING_LINE_RE = re.compile(r"^\s*\**\s*(?:rating|grade|level)\s*\**\s*[:=\-]\s*\**\s*\(?([ABCD])\b", re.I)
_BARE_RATING_RE = re.compile(r"^\s*\**\(?([ABCD])\)?\**\s*(?:$|[.:\-)])")
_REASON_RE = re.compile(rf"^\s*\**\s*{JUDGE_REASON_LABEL}\s*\**\s*:\s*(.*)$", re.I)


def parse_eval_rating(text: str, *, finish_reason: str | None = None) -> EvalRating:
    """A rating from the text layout: a ``Rating: B`` line (any case, markdown bold allowed) or, as
    a continuation of the open ``Rating:``, a first line that is one letter A-D; then an optional
    ``Reason:`` line. The letter must be upper case when it stands alone."""
    lines = (text or "").strip().splitlines()
    rating = None
    reason = ""
    for k, line in enumerate(lines):
        m = _RATING_LINE_RE.match(line)
        if m is None and k == 0:
            m = _BARE_RATING_RE.match(line)
        if m and rating is None:
            rating = m.group(1).upper()
            continue
        r = _REASON_RE.match(line)
        if r and not reason:
            reason = one_line(r.group(1))
    if rating is None:
        why = "cut off by the length limit" if finish_reason == "length" else "no rating A, B, C or D found"
        return EvalRating(unparseable=_failed(why, text or ""))
    return EvalRating(rating, reason)


def parse_eval_rating_json(text: str, *, finish_reason: str | None = None) -> EvalRating:
    """A rating from a structured answer matching `prompts.EVAL_RATE_SCHEMA`, strictly."""
    value, reason = read_json(text, EVAL_RATE_SCHEMA, finish_reason=finish_reason)
    if reason is not None:
        return EvalRating(unparseable=_failed(reason, text or ""))
    return EvalRating(value["rating"], one_line(value["reason"]))


def parse_eval_rate_answer(text: str, prompt: Prompt, *, finish_reason: str | None = None) -> EvalRating:
    """The strict or the forgiving parser, by the prompt's layout."""
    if prompt.structured:
        return parse_eval_rating_json(text, finish_reason=finish_reason)
    return parse_eval_rating(text, finish_reason=finish_reason)


def read_eval_answer_prompt(text: str) -> str | None:
    """The request of a rendered answer prompt (chat: system line, blank line, request; completion:
    the same and the open ``Response:``), or None for another prompt."""
    head = SYSTEM_EVAL_ANSWER + "\n\n"
    if not (text or "").startswith(head):
        return None
    request = text[len(head):]
    if request.endswith("\n\n" + EVAL_COMPLETION_OPEN):
        request = request[: -len(EVAL_COMPLETION_OPEN) - 2]
    return request


def read_eval_rate_prompt(text: str) -> dict | None:
    """The rated item of a rendered rating prompt: `instruction`, `input`, `answer`, `structured`."""
    i = (text or "").find(EVAL_RATE_BODY)
    if i < 0:
        return None
    rest = text[i + len(EVAL_RATE_BODY):]
    opened, closed = rest.find("\n" + EVAL_ANSWER_OPEN + "\n"), rest.rfind("\n" + EVAL_ANSWER_CLOSE)
    if opened < 0 or closed < opened:
        return None
    head = rest[:opened]
    answer = rest[opened + len(EVAL_ANSWER_OPEN) + 2: closed]
    instruction, _, input_text = head.partition("\nInput:")
    instruction = instruction.removeprefix("Instruction:").strip()
    input_text = input_text.strip()
    if input_text == NO_INPUT:
        input_text = ""
    tail = rest[closed + len(EVAL_ANSWER_CLOSE) + 1:]
    return {"instruction": instruction, "input": input_text, "answer": answer,
            "structured": tail.strip().endswith(EVAL_RATE_JSON_TAIL),
            "open": tail.strip() == f"{EVAL_RATING_LABEL}:"}

