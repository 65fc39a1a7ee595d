"""selfinstruct.novelty against rouge-score itself (the contract is exactness)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize
from rouge_score.rouge_scorer import _lcs_table

from selfinstruct.novelty import NoveltyIndex, lcs_length, rouge_l, tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
from tests.conftest import SHARED_DATA, shared_file  # noqa: E402

USER_ORIENTED = SHARED_DATA / "selfinstruct_user_oriented_instructions.jsonl"


def reference(target: str, prediction: str) -> float:
    """What the Self-Instruct scripts compute: scorer.score(pool_item, candidate)."""
    return SCORER.score(target, prediction)["rougeL"].fmeasure


def brute_force(pool: list[str], candidate: str) -> list[float]:
    return [reference(item, candidate) for item in pool]


def expected_top(scores: list[float], k: int) -> list[tuple[int, float]]:
    ranked = sorted(((i, s) for i, s in enumerate(scores) if s > 0), key=lambda x: (-x[1], x[0]))
    return ranked[:k]


def check_index(index: NoveltyIndex, pool: list[str], candidate: str, k: int = 10,
                thresholds: tuple[float, ...] = (0.7,)) -> None:
    scores = brute_force(pool, candidate)
    best = max(scores, default=0.0)
    top = expected_top(scores, k)
    got_best, got_id = index.max_similarity(candidate)
    assert got_best == best
    if best == 0:
        assert got_id is None
    else:
        assert got_id == scores.index(best)  # lowest id reaching the best
    assert index.most_similar(candidate, k) == top
    for t in thresholds:
        assert index.is_novel(candidate, t) == (best <= t)
        hit = index.first_above(candidate, t)
        if best <= t:
            assert hit is None
        else:
            assert hit is not None and hit[1] == scores[hit[0]] and hit[1] > t


@pytest.fixture(params=["default", "python-only", "numpy-only"])
def scoring_path(request, monkeypatch):
    """Run a test with the default switch between one-by-one (Python ints) and
    batched (numpy) LCS, and with each path forced for every batch size."""
    if request.param == "python-only":
        monkeypatch.setattr(NoveltyIndex, "_VECTOR_MIN", 10**9)
    elif request.param == "numpy-only":
        monkeypatch.setattr(NoveltyIndex, "_VECTOR_MIN", 1)
    return request.param


# ----------------------------------------------------------------- strategies

VOCAB = ["the", "a", "of", "write", "poem", "sea", "list", "given", "text", "cat", "dog",
         "2", "x9", "summarise"]
PIECES = (
    VOCAB
    + ["The", "WRITE", "Poem", "sea.", "cat,", "dog?", "(a)", "x9-2", "don't", "it's"]
    + ["!", ",", "...", "--", "\u2014", "\"", "'", ":", "#", "&"]
    + ["café", "İstanbul", "日本語", "😀", "straße", "ẞ", "\u212a", "ﬁsh", "Ǆ", "σς", "١٢", "ı"]
)
SEPARATORS = [" ", "  ", "\n", "\t", "", "\u00a0", "\u3000", "-", "_"]


@st.composite
def texts(draw, max_pieces: int = 30) -> str:
    n = draw(st.integers(0, max_pieces))
    out = []
    for _ in range(n):
        out.append(draw(st.sampled_from(PIECES)))
        out.append(draw(st.sampled_from(SEPARATORS)))
    return "".join(out)


long_texts = texts(max_pieces=180)
any_texts = st.one_of(texts(), texts(), st.text(max_size=60), long_texts)


def pool_strategy(max_size: int = 25):
    return st.lists(st.one_of(texts(), texts(), texts(max_pieces=8)), max_size=max_size)


# ------------------------------------------------------------------- tokenize

@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), texts(), long_texts))
def test_tokenize_matches_rouge_score(text):
    assert tokenize(text) == rouge_tokenize.tokenize(text, None)


@pytest.mark.parametrize("text, tokens", [
    ("café", ["caf"]),
    ("don't", ["don", "t"]),
    ("İstanbul", ["i", "stanbul"]),
    ("日本語 😀", []),
    ("", []),
    ("?!...", []),
    ("Write  a\tPOEM\n", ["write", "a", "poem"]),
    ("x9-2_b", ["x9", "2", "b"]),
    ("\u212aelvin", ["kelvin"]),   # KELVIN SIGN lower-cases to ASCII "k"
])
def test_tokenize_examples(text, tokens):
    assert tokenize(text) == tokens == rouge_tokenize.tokenize(text, None)


# --------------------------------------------------------------------- rouge_l

@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(VOCAB[:8]), max_size=40), st.lists(st.sampled_from(VOCAB[:8]), max_size=40))
def test_rouge_l_equals_rouge_score_both_orders(a, b):
    ta, tb = " ".join(a), " ".join(b)
    assert rouge_l(a, b) == reference(ta, tb)
    assert rouge_l(b, a) == reference(tb, ta)
    assert rouge_l(a, b) == rouge_l(b, a)


@settings(max_examples=300, deadline=None)
@given(any_texts, any_texts)
def test_rouge_l_on_tokenized_text(a, b):
    assert rouge_l(tokenize(a), tokenize(b)) == reference(a, b)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=150), st.lists(st.sampled_from("abcde"), max_size=150))
def test_lcs_length_matches_dp_table(a, b):
    assert lcs_length(a, b) == _lcs_table(a, b)[-1][-1]


def test_boundary_0_7_is_rejected_like_rouge_score():
    # LCS 7, lengths 7 and 13: exactly 0.7 on paper, 0.7000000000000001 in rouge-score.
    pooled = "one two three four five six seven"
    candidate = "one x two y three z four u five v six w seven"
    assert len(tokenize(candidate)) == 13
    expected = reference(pooled, candidate)
    assert expected == 0.7000000000000001 > 0.7
    assert 2 * 7 / (7 + 13) == 0.7            # the shortcut formula would accept it
    assert rouge_l(tokenize(pooled), tokenize(candidate)) == expected
    index = NoveltyIndex([pooled])
    assert index.max_similarity(candidate) == (expected, 0)
    assert not index.is_novel(candidate)
    assert index.first_above(candidate, 0.7) == (0, expected)
    # ... and the same pair the other way round.
    index2 = NoveltyIndex([candidate])
    assert index2.max_similarity(pooled) == (reference(candidate, pooled), 0)
    assert not index2.is_novel(pooled)


def test_empty_token_lists_score_zero():
    assert rouge_l([], ["a"]) == rouge_l(["a"], []) == rouge_l([], []) == 0.0
    assert reference("", "a") == 0


# ---------------------------------------------------------------- NoveltyIndex

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_strategy(), st.lists(any_texts, min_size=1, max_size=4), st.integers(1, 12))
def test_index_matches_brute_force(pool, candidates, k):
    index = NoveltyIndex(pool)
    assert len(index) == len(pool)
    for candidate in candidates:
        check_index(index, pool, candidate, k, thresholds=(0.0, 0.5, 0.7))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_strategy(), st.lists(any_texts, min_size=1, max_size=3), st.data())
def test_index_thresholds_at_exact_scores(pool, candidates, data):
    """Thresholds equal to scores that occur: the strict '>' must hold to the bit."""
    index = NoveltyIndex(pool)
    for candidate in candidates:
        scores = brute_force(pool, candidate)
        assume(scores)
        t = data.draw(st.sampled_from(scores))
        assert index.is_novel(candidate, t) == (max(scores) <= t)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), any_texts), min_size=1, max_size=30))
def test_alternating_add_and_query(ops):
    """The pipeline's loop: query, then add; every answer stays exact."""
    index = NoveltyIndex()
    pool: list[str] = []
    for is_add, text in ops:
        if is_add:
            assert index.add(text) == len(pool)
            pool.append(text)
        else:
            check_index(index, pool, text, k=5)
    assert [index.text(i) for i in range(len(index))] == pool


def test_pool_with_duplicates_and_empty_items(scoring_path):
    pool = ["Write a poem about the sea."] * 3 + ["", "!!!", "日本語", "write a poem", "Poem: the sea."] * 2
    index = NoveltyIndex(pool * 10)
    for candidate in ["Write a poem about the sea", "the sea", "a", "", "日本語", "sea poem write"]:
        check_index(index, pool * 10, candidate, k=12, thresholds=(0.0, 0.7, 1.0))


def test_empty_pool_and_tokenless_candidates():
    index = NoveltyIndex()
    assert len(index) == 0
    assert index.max_similarity("anything") == (0.0, None)
    assert index.most_similar("anything") == []
    assert index.is_novel("anything")
    assert index.first_above("anything", 0.7) is None
    index.add("Write a poem.")
    assert index.max_similarity("日本語 !!") == (0.0, None)
    assert index.max_similarity("Summarise the text.") == (0.0, None)
    assert index.most_similar("Write a poem.", k=0) == []
    assert index.first_above("unrelated words", -1.0) == (0, 0.0)
    with pytest.raises(IndexError):
        index.text(5)
    with pytest.raises(IndexError):
        index.text(-1)
    with pytest.raises(ValueError):
        index.first_above("x", float("nan"))


def test_add_many_equals_repeated_add(scoring_path):
    rng = random.Random(3)
    words = VOCAB + ["the"] * 10
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 25))) for _ in range(300)]
    bulk = NoveltyIndex()
    assert bulk.add_many(pool[:150]) == list(range(150))
    assert bulk.add_many(pool[150:]) == list(range(150, 300))
    single = NoveltyIndex()
    for text in pool:
        single.add(text)
    for _ in range(30):
        candidate = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
        assert bulk.most_similar(candidate, 10) == single.most_similar(candidate, 10)
        check_index(bulk, pool, candidate, k=10, thresholds=(0.3, 0.7))


@pytest.mark.parametrize("candidate_len", [5, 64, 65, 129])
def test_long_candidates_and_pool_items(scoring_path, candidate_len):
    """Candidates of 1, 2, 3 and 4 machine words of LCS state; long pool items."""
    rng = random.Random(candidate_len)
    words = ["a", "b", "c", "d", "e", "f", "the", "of"]
    pool = [" ".join(rng.choice(words) for _ in range(rng.choice([3, 10, 40, 70, 130])))
            for _ in range(80)]
    index = NoveltyIndex(pool)
    for _ in range(2):
        candidate = " ".join(rng.choice(words) for _ in range(candidate_len))
        check_index(index, pool, candidate, k=10, thresholds=(0.2, 0.5, 0.7))
    # A near-copy of a long pooled item.
    long_item = max(pool, key=len)
    check_index(index, pool, long_item + " extra", k=10)


def test_similarity_and_tokens():
    index = NoveltyIndex(["Write a poem about the sea.", "Summarise the article."])
    assert index.similarity("Write a short poem.", 0) == reference(index.text(0), "Write a short poem.")
    assert index.tokens(1) == ["summarise", "the", "article"]


# -------------------------------------------------------------- real instructions

def _instructions(path: Path) -> list[str]:
    """Instructions of a JSONL file; files of ../shared go through `shared_file`, which skips
    the test when shared/ is not beside the repository."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["instruction"] for line in fh if line.strip()]


def _perturb(rng: random.Random, text: str, words: list[str]) -> str:
    toks = text.split()
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.3 and len(toks) > 2:
            i = rng.randrange(len(toks) - 1)
            toks[i], toks[i + 1] = toks[i + 1], toks[i]
        elif op < 0.6 and len(toks) > 3:
            del toks[rng.randrange(len(toks))]
        else:
            toks.insert(rng.randrange(len(toks) + 1), rng.choice(words))
    return " ".join(toks)


def test_project_seeds_and_demo_corpus_against_rouge_score():
    """The project's own data, always present: starter seeds as the pool, the demo corpus
    (near-duplicates and keyword cases included) as candidates."""
    from selfinstruct.seeds import STARTER_SEEDS_PATH
    from selfinstruct.demo import DEFAULT_CORPUS_PATH

    seeds = _instructions(STARTER_SEEDS_PATH)
    index = NoveltyIndex(seeds)
    for candidate in _instructions(DEFAULT_CORPUS_PATH)[:120] + seeds[:20]:
        check_index(index, seeds, candidate, k=10)


def test_seed_tasks_against_each_other():
    seeds = _instructions(shared_file("selfinstruct_seed_tasks.jsonl"))
    index = NoveltyIndex(seeds)
    queries = seeds[:60]
    if USER_ORIENTED.exists():
        queries += _instructions(USER_ORIENTED)[:60]
    for candidate in queries:
        check_index(index, seeds, candidate, k=10)


def test_real_corpus_pool_of_2000_against_rouge_score():
    corpus = _instructions(shared_file("instructions_corpus.jsonl"))
    rng = random.Random(7)
    rng.shuffle(corpus)
    pool = corpus[:2000]
    words = [w for t in corpus[:500] for w in t.split()]
    queries = ([_perturb(rng, t, words) for t in rng.sample(pool, 80)]     # mostly rejects
               + corpus[2000:2090]                                          # mostly novel
               + [rng.choice(pool) for _ in range(10)]                      # exact copies
               + [corpus[3000 + i] + " " + corpus[4000 + i] for i in range(20)])  # long ones
    index = NoveltyIndex(pool)
    pool_tokens = [rouge_tokenize.tokenize(t, None) for t in pool]
    pool_sets = [set(t) for t in pool_tokens]
    rejects = 0
    for candidate in queries:
        ctoks = rouge_tokenize.tokenize(candidate, None)
        cset = set(ctoks)
        # rouge-score on every pair; a pair without a common token has LCS 0
        # and rouge-score's F is 0 for it, so those pairs are not run.
        scores = [rouge_scorer._score_lcs(pt, ctoks).fmeasure if ps & cset else 0.0
                  for pt, ps in zip(pool_tokens, pool_sets)]
        best = max(scores)
        rejects += best > 0.7
        assert index.max_similarity(candidate)[0] == best
        assert index.is_novel(candidate) == (best <= 0.7)
        assert index.most_similar(candidate, 10) == expected_top(scores, 10)
    assert rejects >= 60  # the sample does exercise rejections


def test_carry_ripples_through_a_word_without_matches(scoring_path):
    """A candidate whose middle 64 tokens match nothing: additions carry from
    the first machine word of LCS state through an untouched all-ones word."""
    rng = random.Random(11)
    words = ["a", "b", "c", "d"]
    head = [rng.choice(words) for _ in range(64)]
    tail = [rng.choice(words) for _ in range(40)]
    candidate = " ".join(head + [f"zz{i}" for i in range(64)] + tail)
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 120))) for _ in range(100)]
    pool += [" ".join(head[-10:] + tail[:10]), " ".join(head + tail)]
    index = NoveltyIndex(pool)
    check_index(index, pool, candidate, k=20, thresholds=(0.3, 0.6))


def test_degenerate_inputs_on_every_path(scoring_path):
    index = NoveltyIndex(["", "a b", "!!!", "a"])
    assert index.first_above("", -1.0) == (0, 0.0)
    assert index.first_above("日本", -0.5) == (0, 0.0)
    assert index.similarity("a", 0) == 0.0 == reference("", "a")
    assert index.similarity("a", 1) == reference("a b", "a")
    assert index.max_similarity("") == (0.0, None)
    check_index(index, ["", "a b", "!!!", "a"], "a a b", k=4, thresholds=(0.0, 0.5))
