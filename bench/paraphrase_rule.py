"""An experiment, not product code: a rule for reworded instructions on top of the bundled WordLlama
model, to see how far the static embedder can go past a single cosine (issue 24, item 5).

Run: .venv/bin/python bench/paraphrase_rule.py   (prints recall / false grouping on both halves)

Score of a pair (a, b), computed only for a candidate's few nearest neighbours by sentence cosine:

  1. Words: WordLlama's tokenizer, sub-word pieces joined into words (a word's vector is the SUM of
     its pieces' rows of `wl.embedding`), lower-cased, punctuation dropped.
  2. Content words: drop STOP words, and drop the leading imperative verb (the first non-stop word
     if it is in LEAD_VERBS: the 100 most frequent first words of shared/data/instructions_corpus,
     letters only; derived from the corpus, not from the test pairs).
  3. cc = cosine of the sums of the content-word vectors (a sentence vector without the task verb).
  4. sF = soft alignment F-score (BERTScore-like): each content word's best cosine (clipped at 0)
     with a content word of the other text; R_a = mean over a's words, R_b = mean over b's words;
     sF = 2 R_a R_b / (R_a + R_b).
  5. score = 0.2 * cc + 0.8 * sF;  duplicate  <=>  sentence cosine >= COS_FLOOR and score >= THRESHOLD.

Fitted on the "choose" half of tests/data/semantic_pairs.jsonl (a 0.1-step weight, the threshold
the lowest admitting <= 2 of 25 related-but-different pairs).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

WEIGHT_CC = 0.2
THRESHOLD = 0.7245
COS_FLOOR = 0.5      # sentence cosine a neighbour needs before the pair is scored at all
TOP_K = 5

STOP = frozenset("""a an the of to in on for and or with by from at as is are be this that these those it its
your you me my our we i what how why which who whose whether if into about following below above given some
any all do does can could would should will there their them they he she his her one up us not out own way
please every each able just also so than then more most very""".split())

LEAD_VERBS = frozenset("""write create generate describe what explain identify given rewrite name find design
develop provide give research list suggest come conduct how plan analyze classify summarize edit tell determine
can compare convert organize make imagine calculate construct compose you categorize in based translate share
brainstorm recommend add use evaluate extract help select change choose the practice which complete solve is think
predict draft learn if propose ask arrange read outline answer replace sort rank rearrange using paraphrase output
correct take discuss i please for transform a teach from reword insert who formulate as define compute perform
task assign fill""".split())

_WORDCHAR = re.compile(r"\w")
_NONWORD = re.compile(r"[^\w]")


def _words(wl, text: str):
    """(normalised word, summed piece vector) for each word of `text`, in order."""
    enc = wl.tokenizer.encode(text, add_special_tokens=False)
    groups, cur = [], None
    for tok, i in zip(enc.tokens, enc.ids):
        if tok.startswith("\u2581") or cur is None or not _WORDCHAR.match(tok) or not _WORDCHAR.search(cur[0]):
            if cur:
                groups.append(cur)
            cur = [tok.lstrip("\u2581"), [i]]
        else:
            cur[0] += tok
            cur[1].append(i)
    if cur:
        groups.append(cur)
    out = []
    for w, ids in groups:
        wn = _NONWORD.sub("", w.lower())
        if wn:
            out.append((wn, wl.embedding[ids].sum(0)))
    return out


def content(wl, text: str):
    """(unit word vectors [n x d], summed vector [d]) of the content words, or None if there are none."""
    vecs, first = [], True
    for w, v in _words(wl, text):
        if w in STOP:
            continue
        if first:
            first = False
            if w in LEAD_VERBS:
                continue
        vecs.append(v)
    if not vecs:
        return None
    m = np.asarray(vecs, dtype=np.float32)
    total = m.sum(0)
    m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    return m, total / max(float(np.linalg.norm(total)), 1e-9)


def pair_score_from(ca, cb) -> float:
    if ca is None or cb is None:
        return 0.0
    (ma, sa), (mb, sb) = ca, cb
    cc = float(sa @ sb)
    s = np.clip(ma @ mb.T, 0.0, 1.0)
    ra, rb = float(s.max(1).mean()), float(s.max(0).mean())
    sf = 2 * ra * rb / (ra + rb) if ra + rb > 0 else 0.0
    return WEIGHT_CC * cc + (1 - WEIGHT_CC) * sf


def pair_score(wl, a: str, b: str) -> float:
    return pair_score_from(content(wl, a), content(wl, b))


def sentence_vectors(wl, texts: Sequence[str]) -> np.ndarray:
    v = wl.embed(list(texts), norm=False)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


def same_task(wl, texts_a: Sequence[str], texts_b: Sequence[str], cosines=None) -> list[bool]:
    """Pairwise (a[i], b[i]): is it one task said twice? `cosines` (sentence cosines) if known."""
    if cosines is None:
        cosines = (sentence_vectors(wl, texts_a) * sentence_vectors(wl, texts_b)).sum(1)
    return [bool(c >= COS_FLOOR and pair_score(wl, a, b) >= THRESHOLD)
            for a, b, c in zip(texts_a, texts_b, cosines)]


def gate(wl, candidate: str, candidate_vec: np.ndarray, pool_matrix: np.ndarray, pool_texts: Sequence[str],
         k: int = TOP_K):
    """Against a pool (unit sentence vectors, one row per text): (duplicate?, pool index, score).
    One matrix-vector product for the cosines, then the alignment score on at most k neighbours
    with cosine >= COS_FLOOR, nearest first."""
    cos = pool_matrix @ candidate_vec
    if len(cos) == 0:
        return False, None, 0.0
    near = np.flatnonzero(cos >= COS_FLOOR)         # cheaper than a top-k over the whole pool
    if len(near) > k:
        near = near[np.argpartition(-cos[near], k - 1)[:k]]
    idx = near[np.argsort(-cos[near])]
    cc = content(wl, candidate)
    best = (False, None, 0.0)
    for i in idx:
        s = pair_score_from(cc, content(wl, pool_texts[i]))
        if s >= THRESHOLD:
            return True, int(i), s
        if s > best[2]:
            best = (False, int(i), s)
    return best


def main() -> None:
    import json
    import logging
    from pathlib import Path

    from selfinstruct.embed import Embedder  # noqa: F401  (the project's loader keeps logging quiet)
    import wordllama
    from wordllama import WordLlama

    logging.disable(logging.INFO)
    wl = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    pairs_file = Path(__file__).resolve().parents[1] / "tests" / "data" / "semantic_pairs.jsonl"
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines() if line.strip()]
    a, b = [r["a"] for r in rows], [r["b"] for r in rows]
    cos = (sentence_vectors(wl, a) * sentence_vectors(wl, b)).sum(1)
    dup = np.array(same_task(wl, a, b, cos))
    reworded = np.array([r["label"] == "reworded" for r in rows])
    choose = np.array([r["half"] == "choose" for r in rows])
    for name, half in (("choosing half", choose), ("held-out half", ~choose)):
        print(f"{name}: rewordings grouped {dup[half & reworded].sum()}/{(half & reworded).sum()}, "
              f"related-but-different grouped {dup[half & ~reworded].sum()}/{(half & ~reworded).sum()}")


if __name__ == "__main__":
    main()
