"""Diversity analyses of a pool, after the Self-Instruct paper's section 3.2.

* Leading verb and its first noun. The paper parsed instructions with a
  constituency parser and took the verb closest to the root and its first direct
  object. This module uses a light heuristic instead (no parser, no model
  download): the verb is the first word when it is a common imperative verb, or
  else the first such word that starts a clause or sentence among the first 30
  words ("Given a list of numbers, *find* the largest"); the noun is the first word after the
  verb that is not a stopword, a pronoun, a number or a common adjective, looked
  for within the next few words. It is right for most short imperative
  instructions and wrong for some; the UI says so.
* ROUGE-L between each generated instruction and its most similar seed, with
  the exact `NoveltyIndex` (the paper's figure 3).
* Word counts (the lengths come from SQL, see `Pool.export_length_stats`).
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .novelty import NoveltyIndex

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["IMPERATIVE_VERBS", "content_words", "leading_verb_noun", "verb_noun_counts", "RougeVsSeeds", "edit_warnings",
           "rouge_vs_seeds", "rouge_histogram", "HEURISTIC_NOTE"]

HEURISTIC_NOTE = (
    "Leading verbs and nouns come from a word-list heuristic, not a parser: the verb is the "
    "first word (or the first word of a clause or sentence near the start) when it is a common "
    "imperative verb; the noun is the next word that is not a stopword, pronoun, number or "
    "common adjective. Instructions it cannot read are counted as \"(none)\".")

IMPERATIVE_VERBS: frozenset[str] = frozenset("""
add adjust analyze analyse answer apply arrange assess assign brainstorm break build calculate
categorize categorise change check choose cite classify combine come compare compile complete compose
compute condense construct convert correct count create critique decide decode define delete
derive describe design detect determine develop diagnose discuss divide draft edit elaborate
eliminate encode enumerate estimate evaluate examine explain expand express extract fill find fix
flag form format formulate generate give group guess highlight identify illustrate imagine improve
infer insert interpret invent judge justify label list locate make map match measure merge mention
modify name normalize note order organize organise outline paraphrase parse pick plan point predict
prepare present prioritize produce proofread propose provide rank rate read rearrange
recommend reduce refactor reformat rephrase replace reply report represent respond restate
restructure review revise rewrite schedule score select separate shorten show simplify solve sort
spell split state suggest summarize summarise swap tag take teach tell transform translate turn
underline update use verify write
""".split())

_STOPWORDS: frozenset[str] = frozenset("""
a an the this that these those some any each every all both either neither another other such
of to for in on at by with from into onto about as than like over under between through within
without per via and or but nor so yet if then when while where whether how what which who whom whose
why me my mine i you your yours he him his she her it its we us our they them their one ones
is are be been being was were do does did can could should would will shall may might must
up out off down back also just only not no more most less least very really please
following given below above next new short brief simple small large long good best better
detailed different main few several many two three four five ten first second last
possible appropriate relevant correct proper suitable creative interesting original own same
certain specific general whole entire full complete overall key top persuasive potential
personal professional hypothetical fictional informative catchy unique funny healthy positive negative
common important famous popular typical basic daily weekly monthly social quick clear concise
""".split())

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_CLAUSE_BREAK = re.compile(r"[,;:.?!]")
NOUN_WINDOW = 4     # how many words after the verb are looked at for its noun
CLAUSE_WINDOW = 30  # how many leading words are searched for a clause-initial verb
NONE = "(none)"


def _words(text: str) -> list[str]:
    return [w.lower().strip("'-") for w in _WORD.findall(text)]


def _noun_after(words: Sequence[str], start: int) -> str | None:
    for word in words[start:start + NOUN_WINDOW]:
        if word and word not in _STOPWORDS:
            return word
    return None


def content_words(text: str) -> list[str]:
    """The words of `text` the verb/noun heuristic would not skip (lower case, no stopwords,
    no leading imperative verbs, at least three letters): what names a topic (topics.py)."""
    return [w for w in _words(text or "") if len(w) >= 3 and w not in _STOPWORDS and w not in IMPERATIVE_VERBS]


def leading_verb_noun(instruction: str) -> tuple[str | None, str | None]:
    """(verb, noun) by the heuristic described in the module docstring; (None, None)
    when no leading imperative verb is found, (verb, None) when no noun follows."""
    text = (instruction or "").strip()
    if not text:
        return None, None
    words = _words(text)
    if words and words[0] == "please":
        words = words[1:]
    if words and words[0] in IMPERATIVE_VERBS:
        return words[0], _noun_after(words, 1)
    # A clause- or sentence-initial verb near the start: "Given X, find Y",
    # "In this task you get a review. Classify it."
    head = " ".join(text.split()[:CLAUSE_WINDOW])
    for clause in _CLAUSE_BREAK.split(head)[1:]:
        clause_words = _words(clause)
        if clause_words and clause_words[0] == "please":
            clause_words = clause_words[1:]
        if clause_words and clause_words[0] in IMPERATIVE_VERBS:
            return clause_words[0], _noun_after(clause_words, 1)
    return None, None


def verb_noun_counts(instructions: Iterable[str], *, top_verbs: int = 20,
                     nouns_per_verb: int = 4) -> pd.DataFrame:
    """The most common leading verbs and, for each, its most common first nouns.

    Columns: verb, noun, count, verb_total. Nouns beyond `nouns_per_verb` are
    summed as "(other)"; a verb with no noun counts under "(none)". Instructions
    with no recognised verb are one row with verb "(none)" (always last)."""
    import pandas as pd

    pairs: Counter = Counter()
    verbs: Counter = Counter()
    no_verb = 0
    for text in instructions:
        verb, noun = leading_verb_noun(text)
        if verb is None:
            no_verb += 1
            continue
        verbs[verb] += 1
        pairs[(verb, noun or NONE)] += 1
    rows = []
    for verb, total in verbs.most_common(top_verbs):
        nouns = Counter({n: c for (v, n), c in pairs.items() if v == verb})
        shown = nouns.most_common(nouns_per_verb)
        for noun, count in shown:
            rows.append({"verb": verb, "noun": noun, "count": count, "verb_total": total})
        rest = total - sum(c for _, c in shown)
        if rest:
            rows.append({"verb": verb, "noun": "(other)", "count": rest, "verb_total": total})
    if no_verb:
        rows.append({"verb": NONE, "noun": NONE, "count": no_verb, "verb_total": no_verb})
    return pd.DataFrame(rows, columns=["verb", "noun", "count", "verb_total"])


@dataclass(frozen=True)
class RougeVsSeeds:
    """ROUGE-L of generated instructions against their most similar seed."""
    scores: np.ndarray      # one per scored instruction
    total: int              # generated instructions in the pool
    sampled: bool           # True when `scores` covers a random sample of them
    seeds: int              # seed instructions compared against

    @property
    def mean(self) -> float:
        return float(self.scores.mean()) if len(self.scores) else 0.0

    @property
    def median(self) -> float:
        return float(np.median(self.scores)) if len(self.scores) else 0.0


def rouge_vs_seeds(seed_instructions: Sequence[str], instructions: Sequence[str], *,
                   max_items: int | None = 20_000, seed: int = 0) -> RougeVsSeeds:
    """For each instruction, the exact ROUGE-L F-measure against its most similar seed.
    O(len(instructions)); above `max_items` a seeded random sample is scored."""
    items = list(instructions)
    total = len(items)
    sampled = max_items is not None and total > max_items
    if sampled:
        items = random.Random(seed).sample(items, max_items)
    if not seed_instructions or not items:
        return RougeVsSeeds(np.zeros(0), total, sampled, len(seed_instructions))
    index = NoveltyIndex(seed_instructions)
    scores = np.fromiter((index.max_similarity(text)[0] for text in items), dtype=float, count=len(items))
    return RougeVsSeeds(scores, total, sampled, len(seed_instructions))


def rouge_histogram(scores: np.ndarray, *, bin_width: float = 0.05) -> pd.DataFrame:
    """Counts per ROUGE-L bin from 0 to 1: columns bin_start, bin_end, n."""
    import pandas as pd

    n_bins = int(round(1 / bin_width))
    counts, edges = np.histogram(np.clip(scores, 0, 1), bins=n_bins, range=(0.0, 1.0))
    return pd.DataFrame({"bin_start": edges[:-1].round(4), "bin_end": edges[1:].round(4),
                         "n": counts.astype(int)})


def edit_warnings(instruction: str) -> list[str]:
    """What the paper's heuristic filters would say about an edited instruction
    (default settings), as plain sentences. A person may keep it anyway."""
    from .filters import InstructionFilter

    return [f"The filters would reject this: {r.message}" for r in InstructionFilter().check_all(instruction)]
