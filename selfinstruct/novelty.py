"""Exact ROUGE-L novelty checks, indexed.

Self-Instruct drops a candidate instruction when its ROUGE-L F-measure against
any instruction already in the pool is above 0.7, computed with the
``rouge-score`` package (``RougeScorer(["rougeL"], use_stemmer=False)``).
This module gives the same numbers, bit for bit, without scoring every pair.

Contract
--------
* :func:`tokenize` yields exactly the tokens of rouge-score's default tokenizer
  without stemming.
* :func:`rouge_l` returns exactly ``RougeScorer(["rougeL"]).score(a, b)
  ["rougeL"].fmeasure`` (as a float) for the token lists of ``a`` and ``b``.
* :class:`NoveltyIndex` returns, for any candidate, the same best score, the
  same accept/reject decision and the same top-k scores as scoring the
  candidate against every pooled instruction with rouge-score.

Who is target and who is prediction
-----------------------------------
rouge-score's ``score(target, prediction)`` computes
``precision = lcs / len(prediction)``, ``recall = lcs / len(target)`` and
``F = 2 * precision * recall / (precision + recall)`` (0 when the sum is 0).
The Self-Instruct scripts call ``scorer.score(pool_item, candidate)``, so the
pool item is the *target* and the candidate the *prediction*; the index
computes exactly that expression in that order.  (In IEEE arithmetic the
result does not depend on the order anyway: ``2*p*r`` is ``(2*p)*r`` and a
multiplication by two is exact, so swapping p and r gives the same bits.  It
does differ from the algebraically equal ``2*lcs/(len_a+len_b)`` in the last
bit for many inputs, which matters at the 0.7 boundary: lcs 7 with lengths 7
and 13 gives 0.7000000000000001, which rouge-score rejects.)

How the index is fast
---------------------
The LCS of two token lists is at most the size of their multiset
intersection, so ``F <= 2 * overlap / (len_a + len_b)``.  Each pooled item is
indexed under its (token, occurrence-number) features — "the" twice gives the
features (the, 1) and (the, 2) — so counting shared features over posting
lists gives the multiset overlap.  Frequent features ("a", "the", "of"...) are
left out of the count when that is provably safe: an item that shares none
of the rare features can share at most ``c`` features, where ``c`` is the
number of frequent ones left out, so it cannot score above
``2c / (len_candidate + c)``; ``c`` is chosen so that this ceiling stays
below the threshold (or below the k-th best score found so far).  Survivors
are then scored exactly, in descending order of their bound, with a
bit-parallel LCS (Allison-Dix / Hyyrö), stopping as soon as no remaining bound
can reach the current k-th best (less a 1e-12 rounding margin).  A handful of
items is scored one by one on Python integers; larger batches run in numpy,
all items advancing together in uint64 words.  Both give the same integers,
and the F-measure is then computed with rouge-score's operations in rouge-score's
order, so the floats are the same too.

Adding is amortised O(tokens): posting arrays double when full, and
``add_many`` appends every posting of a batch after one sort.

Tie and zero conventions
------------------------
* Ids are 0, 1, 2, ... in the order texts were added.
* ``most_similar`` lists only items with a score above 0 (an item scores
  above 0 exactly when it shares at least one token with the candidate),
  best first, equal scores by lower id.
* ``max_similarity`` returns ``(0.0, None)`` when nothing in the pool shares
  a token with the candidate (including an empty pool or a candidate with
  no tokens); otherwise the best score and the lowest id reaching it.
* ``is_novel(text, t)`` is True when the best score is ``<= t``: like the
  reference, a candidate is rejected only when some score is ``> t``.
  ``first_above(text, t)`` answers the same question but also names one item
  (``(id, score)``, the first found, not necessarily the best); it stops at
  the first hit, so it is what to call when only the decision is needed.
* rouge-score returns the int ``0`` for empty token lists; this module
  returns ``0.0`` (equal as numbers).

The index keeps everything in memory and is not thread-safe: guard it with a
lock if several threads query and add at once.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

from .model import ROUGE_THRESHOLD

__all__ = ["tokenize", "rouge_l", "lcs_length", "NoveltyIndex", "DEFAULT_THRESHOLD", "TOKEN_RUN"]

DEFAULT_THRESHOLD = ROUGE_THRESHOLD

# Runs of ASCII lower-case letters and digits, searched after Unicode lower-casing.
TOKEN_RUN = re.compile(r"[a-z0-9]+")

# Bounds are compared with scores only after allowing for this much rounding.
# Scores and bounds are each within a few ulps (~1e-16) of their exact values.
_EPS = 1e-12


def tokenize(text: str) -> list[str]:
    """Tokens as rouge-score's default tokenizer makes them (no stemming).

    The text is lower-cased with Python's Unicode rules, then every maximal run
    of ``[a-z0-9]`` is a token; everything else separates tokens.  So
    ``"café"`` gives ``["caf"]``, ``"don't"`` gives ``["don", "t"]``,
    ``"İstanbul"`` gives ``["i", "stanbul"]`` (its lower-case form has a
    combining dot), and text made only of CJK, emoji or punctuation gives
    no tokens at all.  rouge-score's trailing validity check on each token
    never removes anything from such runs.
    """
    if isinstance(text, (bytes, bytearray)):
        # rouge-score lower-cases bytes (ASCII only) and then decodes them.
        text = bytes(text).lower().decode("utf-8")
        return TOKEN_RUN.findall(text)
    return TOKEN_RUN.findall(text.lower())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of two sequences of hashables."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    # Bit i of masks[x] is set when b[i] == x (bits over the shorter sequence).
    masks: dict = {}
    bit = 1
    for x in b:
        masks[x] = masks.get(x, 0) | bit
        bit <<= 1
    return _lcs_with_masks(masks, len(b), a)


def _lcs_with_masks(masks: dict, m: int, seq: Iterable) -> int:
    """Bit-parallel LCS (Allison-Dix / Hyyrö): ``masks`` describes a sequence of
    length ``m``; ``seq`` is the other sequence.  A zero bit in ``v`` marks a
    position where the LCS so far grows; carries only move upwards, so bits at
    and above ``m`` never disturb the low ``m`` bits and are masked off at the
    end."""
    full = (1 << m) - 1
    v = full
    get = masks.get
    for x in seq:
        mx = get(x)
        if mx:
            u = v & mx
            v = (v + u) | (v - u)
    return m - (v & full).bit_count()


def _fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge-score's F-measure, with its operations in its order."""
    if lcs == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall)


def rouge_l(a_tokens: Sequence[str], b_tokens: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token lists, as rouge-score computes it.

    ``a_tokens`` plays rouge-score's *target* and ``b_tokens`` its
    *prediction*: the result equals
    ``RougeScorer(["rougeL"], use_stemmer=False).score(a, b)["rougeL"].fmeasure``
    where ``a``/``b`` are the texts the tokens came from.  The value does not
    depend on the argument order (see the module docstring).  An empty token
    list scores 0.0.
    """
    if not a_tokens or not b_tokens:
        return 0.0
    return _fmeasure(lcs_length(a_tokens, b_tokens), len(a_tokens), len(b_tokens))


class _Query:
    """A candidate prepared for searching."""

    __slots__ = ("length", "masks", "fids", "dfs")

    def __init__(self, length: int, masks: dict, fids: list[int], dfs: list[int]):
        self.length = length      # number of tokens (known to the pool or not)
        self.masks = masks        # token id -> bitmask over candidate positions
        self.fids = fids          # features shared with the pool, most frequent first
        self.dfs = dfs            # their posting-list lengths, same order


def _grow(arr: np.ndarray, used: int, need: int) -> np.ndarray:
    """``arr`` if it holds ``need`` items, else a copy with room for at least
    twice as many (amortised O(1) appends)."""
    if need <= len(arr):
        return arr
    grown = np.zeros(max(need, 2 * len(arr)), dtype=arr.dtype)
    grown[:used] = arr[:used]
    return grown


def _best_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score descending, id ascending) among positive scores."""
    order = np.lexsort((ids, -scores))[:k]
    order = order[scores[order] > 0]
    return scores[order], ids[order]


class NoveltyIndex:
    """A growing pool of instructions answering exact ROUGE-L questions.

    >>> index = NoveltyIndex()
    >>> index.add_many(["Write a poem about the sea.", "Summarise the article."])
    [0, 1]
    >>> index.max_similarity("Write a short poem about the sea.")
    (0.923076923076923, 0)
    >>> index.is_novel("Write a short poem about the sea.")
    False
    >>> index.most_similar("Summarise the poem.")
    [(1, 0.6666666666666666), (0, 0.2222222222222222)]
    """

    # Initial capacity of a feature's posting array; it doubles when full.
    _MIN_POSTING = 4
    # In the first top-k pass, leave out frequent features as long as an item
    # sharing none of the others could score at most this much (a guess at the
    # k-th best score; a wrong guess costs time, never exactness).  Tuned on the
    # benchmark's pools of 10K-200K for k=1 and for k=10.
    _FIRST_PASS_CEILING_BEST = 0.6
    _FIRST_PASS_CEILING_TOP = 0.35
    # Below this many items, exact scores are computed one by one on Python
    # integers; from this many on, all the items' LCS states advance together
    # in numpy uint64 words (fixed numpy overhead per step, tiny per item).
    _VECTOR_MIN = 48

    def __init__(self, texts: Iterable[str] = ()):
        self._texts: list[str] = []
        self._lengths = np.zeros(1024, dtype=np.int64)   # token count per item
        self._starts = np.zeros(1025, dtype=np.int64)    # item i's tokens: flat[starts[i]:starts[i+1]]
        self._flat = np.zeros(16384, dtype=np.int32)     # token ids of all items, back to back
        self._vocab: dict[str, int] = {}                 # token -> token id
        self._occurrence_fids: list[list[int]] = []      # token id -> fid of its k-th occurrence
        self._postings: list[np.ndarray] = []            # fid -> item ids, ascending
        self._posting_sizes: list[int] = []              # fid -> used length
        self._slot_buffer = np.zeros(1024, dtype=np.int32)  # scratch: token id -> candidate slot
        self.add_many(texts)

    # ------------------------------------------------------------------ adding

    def __len__(self) -> int:
        return len(self._texts)

    def text(self, item_id: int) -> str:
        """The text added under ``item_id``."""
        if item_id < 0:
            raise IndexError(item_id)
        return self._texts[item_id]

    def tokens(self, item_id: int) -> list[str]:
        """The tokens of item ``item_id`` (same as ``tokenize(index.text(item_id))``)."""
        return tokenize(self.text(item_id))

    def _token_ids(self, tokens: list[str]) -> list[int]:
        vocab = self._vocab
        ids = []
        for tok in tokens:
            tid = vocab.get(tok)
            if tid is None:
                tid = vocab[tok] = len(vocab)
                self._occurrence_fids.append([])
            ids.append(tid)
        return ids

    def _features(self, tids: list[int]) -> list[int]:
        """An item's feature ids, one per (token, occurrence number), creating
        features never seen before."""
        seen: dict[int, int] = {}
        occ = self._occurrence_fids
        fids = []
        for tid in tids:
            k = seen.get(tid, 0)
            seen[tid] = k + 1
            lst = occ[tid]
            if k == len(lst):
                lst.append(len(self._postings))
                self._postings.append(np.empty(self._MIN_POSTING, dtype=np.int32))
                self._posting_sizes.append(0)
            fids.append(lst[k])
        return fids

    def _append_posting(self, fid: int, ids, count: int) -> None:
        used = self._posting_sizes[fid]
        arr = self._postings[fid] = _grow(self._postings[fid], used, used + count)
        arr[used:used + count] = ids
        self._posting_sizes[fid] = used + count

    def _append_items(self, texts: list[str], token_rows: list[list[int]]) -> None:
        n0 = len(self._texts)
        n1 = n0 + len(texts)
        lengths = [len(r) for r in token_rows]
        self._lengths = _grow(self._lengths, n0, n1)
        self._lengths[n0:n1] = lengths
        self._starts = _grow(self._starts, n0 + 1, n1 + 1)
        first = int(self._starts[n0])
        ends = first + np.cumsum(lengths, dtype=np.int64)
        self._starts[n0 + 1:n1 + 1] = ends
        last = int(ends[-1]) if len(ends) else first
        self._flat = _grow(self._flat, first, last)
        if last > first:
            if len(token_rows) == 1:
                self._flat[first:last] = token_rows[0]
            else:
                self._flat[first:last] = np.fromiter(
                    (t for row in token_rows for t in row), dtype=np.int32, count=last - first)
        self._texts.extend(texts)

    def add(self, text: str) -> int:
        """Add one instruction; returns its id (0, 1, 2, ... in order)."""
        item_id = len(self._texts)
        tids = self._token_ids(tokenize(text))
        for fid in self._features(tids):
            self._append_posting(fid, item_id, 1)
        self._append_items([text], [tids])
        return item_id

    def add_many(self, texts: Iterable[str]) -> list[int]:
        """Add instructions in order; returns their ids.  Postings are appended
        in bulk (one sort), so rebuilding a 50K pool takes well under 2 s."""
        texts = list(texts)
        if len(texts) < 32:
            return [self.add(t) for t in texts]
        start = len(self._texts)
        all_fids: list[int] = []
        per_item: list[int] = []
        token_rows = []
        for text in texts:
            tids = self._token_ids(tokenize(text))
            fids = self._features(tids)
            all_fids.extend(fids)
            per_item.append(len(fids))
            token_rows.append(tids)
        if all_fids:
            fid_arr = np.asarray(all_fids, dtype=np.int64)
            item_arr = np.repeat(np.arange(start, start + len(texts), dtype=np.int32), per_item)
            order = np.argsort(fid_arr, kind="stable")   # ids stay ascending within a feature
            fid_sorted = fid_arr[order]
            item_sorted = item_arr[order]
            cuts = np.flatnonzero(np.diff(fid_sorted)) + 1
            begins = np.concatenate(([0], cuts))
            ends = np.concatenate((cuts, [len(fid_sorted)]))
            for fid, b, e in zip(fid_sorted[begins].tolist(), begins.tolist(), ends.tolist()):
                self._append_posting(fid, item_sorted[b:e], e - b)
        self._append_items(texts, token_rows)
        return list(range(start, start + len(texts)))

    # ------------------------------------------------------------ exact scores

    def _prepare(self, text: str) -> _Query:
        tokens = tokenize(text)
        vocab = self._vocab
        masks: dict[int, int] = {}
        counts: dict[int, int] = {}
        bit = 1
        for tok in tokens:
            tid = vocab.get(tok)
            if tid is not None:
                masks[tid] = masks.get(tid, 0) | bit
                counts[tid] = counts.get(tid, 0) + 1
            bit <<= 1
        sizes = self._posting_sizes
        occ = self._occurrence_fids
        feats = []
        for tid, cnt in counts.items():
            lst = occ[tid]
            for k in range(min(cnt, len(lst))):
                fid = lst[k]
                if sizes[fid]:
                    feats.append((sizes[fid], fid))
        feats.sort(reverse=True)
        return _Query(len(tokens), masks, [f for _, f in feats], [d for d, _ in feats])

    def _scores(self, q: _Query, items: np.ndarray) -> np.ndarray:
        """Exact scores of ``items``: rouge-score's F with the pool item as
        target and the candidate as prediction."""
        if q.length == 0 or len(items) == 0:
            return np.zeros(len(items), dtype=np.float64)
        if len(items) >= self._VECTOR_MIN:
            return self._scores_vectorised(q, items)
        flat, starts, lengths = self._flat, self._starts, self._lengths
        masks, qlen = q.masks, q.length
        out = []
        for i in items.tolist():
            lcs = _lcs_with_masks(masks, qlen, flat[starts[i]:starts[i + 1]].tolist())
            out.append(_fmeasure(lcs, int(lengths[i]), qlen))
        return np.array(out, dtype=np.float64)

    def _scores_vectorised(self, q: _Query, items: np.ndarray) -> np.ndarray:
        """The bit-parallel LCS of :func:`_lcs_with_masks`, run for many items
        at once: the state of each item is ``ceil(len(candidate) / 64)`` uint64
        words, additions carry from word to word, and wrap-around above the top
        word only drops carries that the low ``q.length`` bits never see.  Only
        the tokens of an item that occur in the candidate take part (the others
        leave the state unchanged), so the loop runs over at most
        ``len(candidate)`` steps whatever the items' lengths."""
        qlen = q.length
        words = (qlen + 63) // 64
        if len(self._slot_buffer) < len(self._vocab):
            self._slot_buffer = np.zeros(2 * len(self._vocab), dtype=np.int32)
        buf = self._slot_buffer
        # Slot s (1-based) of the candidate's distinct tokens -> its mask words.
        tids = np.fromiter(q.masks.keys(), dtype=np.int64, count=len(q.masks))
        table = np.zeros((len(tids) + 1, words), dtype=np.uint64)
        word_mask = (1 << 64) - 1
        for slot, mask in enumerate(q.masks.values(), start=1):
            for w in range(words):
                table[slot, w] = (mask >> (64 * w)) & word_mask
        buf[tids] = np.arange(1, len(tids) + 1, dtype=np.int32)
        try:
            lengths = self._lengths[items]
            starts = self._starts[items]
            total = int(lengths.sum())
            # Every token of every item, item by item, as its slot (0: not in candidate).
            row = np.repeat(np.arange(len(items)), lengths)
            first = np.cumsum(lengths) - lengths
            slots = buf[self._flat[np.arange(total) - np.repeat(first - starts, lengths)]]
        finally:
            buf[tids] = 0
        hit = np.flatnonzero(slots)
        row, slots = row[hit], slots[hit]
        # The j-th matching token of item r goes to matrix[j, r].
        counts = np.bincount(row, minlength=len(items))
        col = np.arange(len(hit)) - (np.cumsum(counts) - counts)[row]
        width = int(counts.max()) if len(items) else 0
        matrix = np.zeros((width, len(items)), dtype=np.int32)
        matrix[col, row] = slots
        top_bits = qlen - 64 * (words - 1)
        full = np.full(words, np.uint64(word_mask), dtype=np.uint64)
        full[-1] = np.uint64((1 << top_bits) - 1)
        if words == 1:
            masks1 = table[:, 0]
            v = np.full(len(items), full[0], dtype=np.uint64)
            for j in range(width):
                u = v & masks1[matrix[j]]
                v = (v + u) | (v - u)
            ones = np.bitwise_count(v & full[0]).astype(np.int64)
        else:
            v = np.tile(full, (len(items), 1))
            for j in range(width):
                u = v & table[matrix[j]]
                s = v + u
                carry = s < v
                for w in range(1, words):
                    cin = carry[:, w - 1]
                    s[:, w] += cin
                    carry[:, w] |= cin & (s[:, w] == 0)
                v = s | (v - u)
            ones = np.bitwise_count(v & full).sum(axis=1, dtype=np.int64)
        lcs = qlen - ones
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = lcs / qlen
            recall = lcs / lengths
            f = 2 * precision * recall / (precision + recall)
        return np.where(lcs > 0, f, 0.0)

    # ---------------------------------------------------------------- searching

    @staticmethod
    def _ceiling(c: int, qlen: int) -> float:
        """The most an item sharing only ``c`` left-out features can score."""
        return 2.0 * c / (qlen + c) if c else 0.0

    def _max_left_out(self, q: _Query, below: float) -> int:
        """How many of the most frequent features can be left out while an item
        sharing only those stays safely below ``below``."""
        c = 0
        while c < len(q.fids) and self._ceiling(c + 1, q.length) < below - 1e-9:
            c += 1
        return c

    def _candidates(self, q: _Query, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Items sharing at least one of the features ``q.fids[c:]``, and an
        upper bound on each one's score (counting the ``c`` left-out features as
        possibly shared)."""
        rare = q.fids[c:]
        if not rare:
            return np.empty(0, dtype=np.int64), np.empty(0)
        postings, sizes = self._postings, self._posting_sizes
        if len(rare) == 1:
            ids = postings[rare[0]][: sizes[rare[0]]].astype(np.int64)
            shared = np.ones(len(ids), dtype=np.int64)
        else:
            joined = np.concatenate([postings[f][: sizes[f]] for f in rare])
            n_items = len(self._texts)
            if len(joined) * 8 < n_items:
                joined.sort()
                firsts = np.flatnonzero(np.concatenate(([True], joined[1:] != joined[:-1])))
                ids = joined[firsts].astype(np.int64)
                shared = np.diff(np.append(firsts, len(joined)))
            else:
                counts = np.bincount(joined, minlength=n_items)
                ids = np.flatnonzero(counts)
                shared = counts[ids]
        lengths = self._lengths[ids]
        if c:
            shared = shared + np.minimum(c, lengths - shared)
        return ids, 2.0 * shared / (q.length + lengths)

    def _top(self, q: _Query, k: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (scores, ids) among the items sharing a feature of
        ``q.fids[c:]``; bounds prune the rest."""
        ids, bound = self._candidates(q, c)
        if len(ids) <= k:
            return _best_k(self._scores(q, ids), ids, k)
        # Score the k best bounds first; only items whose bound can still reach
        # the k-th best score are looked at after that, best bound first.
        seed = np.argpartition(-bound, k - 1)[:k]
        top_s, top_i = _best_k(self._scores(q, ids[seed]), ids[seed], k)
        floor = top_s[-1] - _EPS if len(top_s) == k else -1.0
        wanted = bound >= floor
        wanted[seed] = False
        rest = np.flatnonzero(wanted)
        rest = rest[np.argsort(-bound[rest], kind="stable")]
        neg_bounds = -bound[rest]            # ascending
        pos, chunk = 0, 32
        while pos < len(rest):
            floor = top_s[-1] - _EPS if len(top_s) == k else -1.0
            end = min(pos + chunk, int(np.searchsorted(neg_bounds, -floor, side="right")))
            if end <= pos:
                break
            items = ids[rest[pos:end]]
            top_s, top_i = _best_k(np.concatenate((top_s, self._scores(q, items))),
                                   np.concatenate((top_i, items)), k)
            pos, chunk = end, chunk * 4
        return top_s, top_i

    def most_similar(self, text: str, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` pool items most similar to ``text`` as ``(id, score)``,
        score descending, equal scores by lower id; exact.  Only items with a
        score above 0 are listed, so fewer than ``k`` may come back."""
        if k <= 0 or not self._texts:
            return []
        q = self._prepare(text)
        if not q.fids:
            return []
        c = self._max_left_out(
            q, self._FIRST_PASS_CEILING_BEST if k == 1 else self._FIRST_PASS_CEILING_TOP)
        while True:
            top_s, top_i = self._top(q, k, c)
            if c == 0:
                break
            full = len(top_s) == k
            if full and top_s[-1] > self._ceiling(c, q.length) + _EPS:
                break  # nothing sharing only left-out features can reach the k-th best
            # Leave out fewer: only as many as the k-th best found allows
            # (none if fewer than k items were found).
            c = self._max_left_out(q, float(top_s[-1])) if full else 0
        return list(zip(top_i.tolist(), top_s.tolist()))

    def max_similarity(self, text: str) -> tuple[float, int | None]:
        """Best score of ``text`` against the pool and the lowest id reaching
        it; ``(0.0, None)`` when no pool item shares a token with ``text``."""
        top = self.most_similar(text, k=1)
        if not top:
            return 0.0, None
        item, score = top[0]
        return score, item

    def first_above(self, text: str, threshold: float = DEFAULT_THRESHOLD) -> tuple[int, float] | None:
        """Some pool item scoring strictly above ``threshold`` as ``(id, score)``,
        or None when there is none.  Stops at the first one found (items are
        tried in descending order of their bound), so this is the cheapest way
        to decide; the item found is not necessarily the most similar one."""
        if math.isnan(threshold):
            raise ValueError("threshold is NaN")
        if not self._texts:
            return None
        q = self._prepare(text)
        if threshold < 0:
            # Every score is >= 0, so the first item already qualifies.
            return 0, float(self._scores(q, np.zeros(1, dtype=np.int64))[0])
        if not q.fids:
            return None
        c = self._max_left_out(q, threshold)
        ids, bound = self._candidates(q, c)
        keep = np.flatnonzero(bound > threshold - _EPS)
        order = keep[np.argsort(-bound[keep], kind="stable")]
        pos, chunk = 0, 16
        while pos < len(order):
            items = ids[order[pos:pos + chunk]]
            scores = self._scores(q, items)
            hit = np.flatnonzero(scores > threshold)
            if len(hit):
                return int(items[hit[0]]), float(scores[hit[0]])
            pos, chunk = pos + chunk, chunk * 4
        return None

    def is_novel(self, text: str, threshold: float = DEFAULT_THRESHOLD) -> bool:
        """True when no pool item scores above ``threshold`` (the reference
        rejects a candidate only when some score is > 0.7)."""
        return self.first_above(text, threshold) is None

    def similarity(self, text: str, item_id: int) -> float:
        """Exact score of ``text`` (prediction) against item ``item_id`` (target)."""
        self.text(item_id)  # IndexError for unknown ids
        return float(self._scores(self._prepare(text), np.array([item_id]))[0])
