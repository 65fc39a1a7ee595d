"""Heuristic filters for generated instructions and their instances.

Every rule that drops something says why, as a :class:`Rejection` with a
stable ``reason`` code, one plain sentence for the UI and JSON-serialisable
``evidence`` (character spans point into the text exactly as it was given, so
the UI can mark them).

Instruction rules (:class:`InstructionFilter`), checked in this order; ``check``
returns the first that fails, ``check_all`` every one that fails:

==========================  ==================================================
``empty``                   nothing but whitespace
``non_ascii_start``         first non-blank character is not ASCII
``starts_with_punctuation`` first non-blank character is ASCII punctuation
                            (``string.punctuation``)
``too_short``               fewer than ``min_words`` words (default 4: the paper
                            drops "3 words or fewer"); words are
                            ``text.split()``
``too_long``                more than ``max_words`` words (default 150)
``write_a_program``         starts with "Write a program" — any case, any run
                            of whitespace between the words, and, as in the
                            reference's ``startswith``, no word boundary after
                            it ("Write a programming ..." is caught too)
``keyword``                 contains a keyword as a whole word, any case;
                            a keyword of several words ("go to") matches across
                            any run of whitespace.  "Whole word" means not
                            preceded or followed by a letter, digit or
                            underscore, as ``\\b`` in the reference's regex
==========================  ==================================================

Instance rules (:func:`filter_instances`) are described there.  Pipeline-level
reasons (``rouge``, ``unparseable``, ``echo``, ...) are produced by the pipeline; their labels
live in :data:`REASON_LABELS` with all the others.  The echo guard (:func:`find_echoes`)
lives here too: it judges an answer's items against the prompt that asked for them.
"""
from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from .model import ALPACA_EXTRA_KEYWORDS, ALPACA_KEYWORDS, MAX_WORDS, MIN_WORDS, PAPER_KEYWORDS

__all__ = [
    "Rejection", "InstructionFilter", "filter_instances", "find_echoes",
    "PAPER_KEYWORDS", "ALPACA_EXTRA_KEYWORDS", "ALPACA_KEYWORDS",
    "REASON_LABELS", "reason_label", "INSTRUCTION_REASONS", "INSTANCE_REASONS", "PIPELINE_REASONS",
]


INSTRUCTION_REASONS: tuple[str, ...] = (
    "empty", "non_ascii_start", "starts_with_punctuation", "too_short", "too_long",
    "write_a_program", "keyword",
)
INSTANCE_REASONS: tuple[str, ...] = (
    "same_input_different_output", "duplicate_instance", "empty_output",
    "input_equals_output", "truncated",
)
PIPELINE_REASONS: tuple[str, ...] = ("rouge", "semantic_dup", "echo", "unparseable", "oversize", "removed")

REASON_LABELS: dict[str, str] = {
    "empty": "Empty",
    "non_ascii_start": "Starts with a non-ASCII character",
    "starts_with_punctuation": "Starts with punctuation",
    "too_short": "Too short",
    "too_long": "Too long",
    "write_a_program": "Starts with \"Write a program\"",
    "keyword": "Unsuitable keyword",
    "rouge": "Too similar (ROUGE-L)",
    "semantic_dup": "Same task reworded (cosine)",
    "echo": "Echoes the prompt's examples",
    "unparseable": "Could not be parsed",
    "oversize": "Answer over the size limit",
    "removed": "Removed by a person",
    "same_input_different_output": "Same input, different outputs",
    "duplicate_instance": "Duplicate instance",
    "empty_output": "Empty output",
    "input_equals_output": "Input equals output",
    "truncated": "Truncated (ends with \":\")",
}


def reason_label(reason: str | None) -> str:
    """A reason code in plain words for the pages ("(none)" when there is none)."""
    if not reason:
        return "(none)"
    return REASON_LABELS.get(reason, reason.replace("_", " ").capitalize())


@dataclass(frozen=True)
class Rejection:
    """Why something was dropped.

    ``reason`` is a stable code (a key of :data:`REASON_LABELS`), ``message``
    one plain sentence for people, ``evidence`` JSON-serialisable details.
    """

    reason: str
    message: str
    evidence: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return REASON_LABELS.get(self.reason, self.reason)

    def to_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message, "evidence": self.evidence}


def _normalise_keywords(keywords: Iterable[str]) -> tuple[str, ...]:
    if isinstance(keywords, str):
        raise TypeError("keywords must be a list of strings, not one string")
    out: list[str] = []
    for kw in keywords:
        if not isinstance(kw, str):
            raise TypeError(f"keyword {kw!r} is not a string")
        kw = " ".join(kw.lower().split())
        if kw and kw not in out:
            out.append(kw)
    return tuple(out)


def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern | None:
    if not keywords:
        return None
    # Longest first, so "go to" wins over a shorter keyword at the same spot.
    parts = [r"\s+".join(re.escape(w) for w in kw.split())
             for kw in sorted(keywords, key=len, reverse=True)]
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


_PROGRAM_PREFIX = re.compile(r"\s*(write\s+a\s+program)", re.IGNORECASE)
_PUNCTUATION = frozenset(string.punctuation)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class InstructionFilter:
    """The Self-Instruct heuristic filter for one generated instruction."""

    def __init__(self, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS,
                 keywords: Iterable[str] = PAPER_KEYWORDS):
        if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words < 0:
            raise ValueError(f"min_words must be a whole number >= 0, not {min_words!r}")
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < min_words:
            raise ValueError(f"max_words must be a whole number >= min_words, not {max_words!r}")
        self.min_words = min_words
        self.max_words = max_words
        self.keywords = _normalise_keywords(keywords)
        self._pattern = _keyword_pattern(self.keywords)

    def __repr__(self) -> str:
        return (f"InstructionFilter(min_words={self.min_words}, max_words={self.max_words}, "
                f"keywords={self.keywords!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstructionFilter) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash((self.min_words, self.max_words, self.keywords))

    # -- settings, stored with each run

    def config(self) -> dict:
        """The settings as a JSON-serialisable dict (``from_config`` reverses it)."""
        return {"min_words": self.min_words, "max_words": self.max_words,
                "keywords": list(self.keywords)}

    @classmethod
    def from_config(cls, config: dict) -> InstructionFilter:
        """Rebuild a filter from :meth:`config` output.  Missing keys take the
        defaults; unknown keys are an error (silently ignoring a setting would
        change which instructions pass)."""
        unknown = set(config) - {"min_words", "max_words", "keywords"}
        if unknown:
            raise ValueError(f"unknown filter settings: {', '.join(sorted(unknown))}")
        return cls(**config)

    # -- rules

    def _rules(self, text: str, stop_at_first: bool) -> list[Rejection]:
        found: list[Rejection] = []
        stripped = text.strip()
        if not stripped:
            return [Rejection("empty", "The instruction is empty.", {})]
        start = len(text) - len(text.lstrip())
        first = text[start]
        if not first.isascii():
            found.append(Rejection(
                "non_ascii_start",
                f"The instruction starts with the non-ASCII character {first!r}.",
                {"char": first, "span": [start, start + 1]}))
        elif first in _PUNCTUATION:
            found.append(Rejection(
                "starts_with_punctuation",
                f"The instruction starts with the punctuation mark {first!r}.",
                {"char": first, "span": [start, start + 1]}))
        if found and stop_at_first:
            return found
        words = len(text.split())
        if words < self.min_words:
            found.append(Rejection(
                "too_short",
                f"The instruction has {_plural(words, 'word')}; at least "
                f"{self.min_words} are needed.",
                {"words": words, "limit": self.min_words}))
        elif words > self.max_words:
            found.append(Rejection(
                "too_long",
                f"The instruction has {words} words; at most {self.max_words} are allowed.",
                {"words": words, "limit": self.max_words}))
        if found and stop_at_first:
            return found
        m = _PROGRAM_PREFIX.match(text)
        if m:
            found.append(Rejection(
                "write_a_program",
                "The instruction starts with \"Write a program\".",
                {"prefix": m.group(1), "span": [m.start(1), m.end(1)]}))
            if stop_at_first:
                return found
        if self._pattern is not None:
            matches = [
                {"keyword": " ".join(m.group(0).lower().split()), "span": [m.start(), m.end()]}
                for m in self._pattern.finditer(text)
            ]
            if matches:
                kws = list(dict.fromkeys(x["keyword"] for x in matches))
                found.append(Rejection(
                    "keyword",
                    "The instruction mentions "
                    + ", ".join(f"\"{k}\"" for k in kws)
                    + ", which a text-only model cannot handle.",
                    {"keyword": matches[0]["keyword"], "span": matches[0]["span"],
                     "matches": matches}))
        return found

    def check(self, text: str) -> Rejection | None:
        """The first rule ``text`` fails, in the documented order, or None."""
        found = self._rules(text, stop_at_first=True)
        return found[0] if found else None

    def check_all(self, text: str) -> list[Rejection]:
        """Every rule ``text`` fails, in the documented order (``empty`` alone
        for blank text; at most one of the two start rules and of the two
        length rules)."""
        return self._rules(text, stop_at_first=False)

    def accepts(self, text: str) -> bool:
        return self.check(text) is None


# --------------------------------------------------------------------- instances

def _field(instance: dict, name: str) -> str:
    value = instance.get(name)
    return "" if value is None else str(value).strip()


def filter_instances(
    instances: list[dict], *, conflict_scope: str = "instruction",
) -> tuple[list[dict], list[tuple[dict, Rejection]]]:
    """Split one instruction's instances into kept and rejected.

    Instances are ``{"input": str, "output": str}`` (a missing or None field
    counts as ""); every comparison uses the fields with leading and trailing
    whitespace stripped.  Kept instances are the same dict objects, in their
    original order; each rejected one comes with the first rule it failed,
    checked in this order:

    1. ``same_input_different_output`` — some non-empty input appears with
       different outputs.  As in the reference, the whole instruction's
       instances are then unreliable and all of them are dropped
       (``conflict_scope="instruction"``, the default); with
       ``conflict_scope="input"`` only the instances with a conflicting input
       are dropped.
    2. ``duplicate_instance`` — same input and output as an earlier instance;
       the first copy stays, later copies go.
    3. ``empty_output`` — the output is empty.
    4. ``input_equals_output`` — the input equals the output.
    5. ``truncated`` — the input or the output ends with ":".
    """
    if conflict_scope not in ("instruction", "input"):
        raise ValueError("conflict_scope must be 'instruction' or 'input'")
    fields = [(_field(inst, "input"), _field(inst, "output")) for inst in instances]

    outputs_by_input: dict[str, list[str]] = {}
    for inp, out in fields:
        if inp:
            seen = outputs_by_input.setdefault(inp, [])
            if out not in seen:
                seen.append(out)
    conflicts = {inp: outs for inp, outs in outputs_by_input.items() if len(outs) > 1}
    first_conflict = next(iter(conflicts), None)

    kept: list[dict] = []
    rejected: list[tuple[dict, Rejection]] = []
    first_index: dict[tuple[str, str], int] = {}
    for index, (inst, (inp, out)) in enumerate(zip(instances, fields)):
        rejection = None
        if inp in conflicts:
            rejection = Rejection(
                "same_input_different_output",
                "The same input is given different outputs, so its instances cannot be trusted.",
                {"input": inp, "outputs": conflicts[inp], "scope": conflict_scope})
        elif conflicts and conflict_scope == "instruction":
            rejection = Rejection(
                "same_input_different_output",
                "Another input of this instruction is given different outputs, "
                "so none of its instances can be trusted.",
                {"input": first_conflict, "outputs": conflicts[first_conflict],
                 "scope": conflict_scope})
        elif (inp, out) in first_index:
            rejection = Rejection(
                "duplicate_instance",
                f"Duplicate of instance {first_index[(inp, out)] + 1}.",
                {"first_index": first_index[(inp, out)]})
        elif not out:
            rejection = Rejection("empty_output", "The output is empty.", {})
        elif inp == out:
            rejection = Rejection("input_equals_output", "The input and the output are the same.", {})
        elif inp.endswith(":") or out.endswith(":"):
            which = "input" if inp.endswith(":") else "output"
            rejection = Rejection(
                "truncated",
                f"The {which} ends with \":\", so it was probably cut off.",
                {"field": which})
        first_index.setdefault((inp, out), index)
        if rejection is None:
            kept.append(inst)
        else:
            rejected.append((inst, rejection))
    return kept, rejected


# --------------------------------------------------------------------------- echo guard

_ECHO_WORD_RE = re.compile(r"[0-9a-z]+(?:'[0-9a-z]+)*")
ECHO_MIN_WORDS = 5   # a shorter example ("Sort the list.") is an echo only when repeated exactly


def _echo_words(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(0), m.start(), m.end()) for m in _ECHO_WORD_RE.finditer(text.lower())]


def _copied_span(item: str, example: str) -> tuple[int, int] | None:
    """Where `item` holds all of `example`'s words in a row (any case and punctuation), or None."""
    words = _echo_words(item)
    target = [w for w, _, _ in _echo_words(example)]
    if not target or (len(target) < ECHO_MIN_WORDS and len(words) != len(target)):
        return None
    n = len(target)
    for i in range(len(words) - n + 1):
        if [w for w, _, _ in words[i:i + n]] == target:
            return words[i][1], words[i + n - 1][2]
    return None


def find_echoes(items: list[str], examples: list[str], *, restarted: bool = False,
                start_index: int | None = None) -> dict[int, Rejection]:
    """The echo guard: which of an answer's items (by index) only repeat the prompt.

    An item that holds an in-context example whole (word for word, or with text added before
    or after it) is an echo: it passes the novelty filter as soon as enough words are added,
    yet adds nothing new. An answer that starts the list again at 1 when the prompt asked it
    to go on from `start_index` (``restarted``) is rewriting the list it was shown: a small chat
    model does this and appends text to each example, so every item of such an answer is an
    echo. Items without an echo are left to the other filters.
    """
    found: dict[int, Rejection] = {}
    for index, item in enumerate(items):
        hit = None
        for example in examples:
            span = _copied_span(item, example)
            if span is not None:
                hit = (example, span)
                break
        evidence: dict = {}
        if hit is not None:
            example, span = hit
            exact = span == (0, len(item)) or len(_echo_words(item)) == len(_echo_words(example))
            evidence = {"example": example, "span": list(span), "copy": "exact" if exact else "extended"}
            message = ("It repeats an example from the prompt word for word." if exact else
                       "It repeats an example from the prompt with text added, so it is not a new task.")
        if restarted:
            evidence["restarted_from"] = start_index
            message = (f"The answer started the list again at 1 instead of going on from {start_index}: "
                       "it rewrote the examples it was shown rather than adding new tasks.")
        elif hit is None:
            continue
        found[index] = Rejection("echo", message, evidence)
    return found
