"""selfinstruct.calibration (issue 17): the judge against people, prediction-powered pool rates,
and ordinal agreement on A-D ratings. Hand-computed cases carry their arithmetic in comments."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from selfinstruct import calibration
from selfinstruct.calibration import (calibrate, kappa_interval, krippendorff_alpha, pool_rate, ppi_mean,
                                      unit_ratings, weighted_kappa)
from selfinstruct.model import NO, PAPER_RATES, UNSURE, YES
from selfinstruct.quality import Z95, cohen_kappa, wilson_interval


# ---------------------------------------------------------------------------
# 1. Judge against people
# ---------------------------------------------------------------------------
def small_study():
    """12 compared items and 6 left out. Judge (rows) against the human majority (columns):

                   human yes   human no
        judge yes      5           2
        judge no       1           3
        judge unsure   1           0
    """
    judge = [YES] * 5 + [YES] * 2 + [NO] + [NO] * 3 + [UNSURE]
    human = [[YES, YES]] * 5 + [[NO, NO, YES]] * 2 + [[YES]] + [[NO]] * 3 + [[YES, YES]]
    # Left out: two split items (yes/no), one whose majority is unsure, one whose two labels are
    # unanswered (None counts as unsure: majority unsure), one with no label, one not judged.
    judge += [YES, NO, YES, NO, YES, None]
    human += [[YES, NO], [NO, YES, UNSURE, YES], [UNSURE, UNSURE, YES], [None, None], [], [YES]]
    return judge, human


def test_calibration_equals_the_hand_computed_figures():
    judge, human = small_study()
    c = calibrate(judge, human, question="output_ok")
    assert c.confusion == {YES: {YES: 5, NO: 2}, NO: {YES: 1, NO: 3}, UNSURE: {YES: 1, NO: 0}}
    assert c.items == 12
    assert c.left_out == {"split": 2, "unsure": 2, "unlabeled": 1, "unjudged": 1}
    assert c.left_out_total == 6
    # Kappa over yes / no / unsure, n = 12.
    # Row (judge) shares r: yes 7/12, no 4/12, unsure 1/12. Column (human) shares c: yes 7/12,
    # no 5/12, unsure 0.  p_o = (5 + 3) / 12 = 2/3.  p_e = (7*7 + 4*5 + 1*0) / 144 = 69/144.
    # kappa = (96/144 - 69/144) / (75/144) = 27/75 = 0.36.
    k = c.kappa
    assert k.observed == pytest.approx(2 / 3)
    assert k.expected == pytest.approx(69 / 144)
    assert k.value == pytest.approx(0.36)
    # Fleiss-Cohen-Everitt variance, 1 - kappa = 0.64:
    #  diagonal yes:  5/12 * (1 - (7/12 + 7/12) * 0.64)^2 = 5/12 * 0.253333^2 = 0.0267407
    #  diagonal no:   3/12 * (1 - (4/12 + 5/12) * 0.64)^2 = 0.25 * 0.52^2     = 0.0676
    #  off-diagonal cell (i, j) weighs (c_i + r_j)^2:
    #    (judge yes, human no):   2/12 * (c_yes + r_no)^2 = 2/12 * (11/12)^2 = 0.1400463
    #    (judge no, human yes):   1/12 * (c_no + r_yes)^2 = 1/12 * 1^2       = 0.0833333
    #    (judge unsure, human yes): 1/12 * (c_unsure + r_yes)^2 = 1/12 * (7/12)^2 = 0.0283565
    #    sum 0.2517361, times 0.64^2 = 0.1031111
    #  minus (kappa - p_e (1 - kappa))^2 = (0.36 - 0.3066667)^2 = 0.0028444
    #  numerator 0.0267407 + 0.0676 + 0.1031111 - 0.0028444 = 0.1946074
    #  denominator n (1 - p_e)^2 = 12 * (75/144)^2 = 3.2552083;  var = 0.0597838, se = 0.244507
    assert k.se == pytest.approx(0.244507, abs=1e-6)
    table = [[5, 2, 0], [1, 3, 0], [1, 0, 0]]
    plain = kappa_interval(table)
    assert plain.low == pytest.approx(0.36 - Z95 * 0.2445064, abs=1e-6)
    assert plain.high == pytest.approx(0.36 + Z95 * 0.2445064, abs=1e-6)
    # calibrate's interval: the same formula on the table with one item added to each cell of the
    # categories in use (all three: the judge said unsure once), widened to hold 0.36
    added = kappa_interval(np.array(table) + 1)
    assert (k.low, k.high) == pytest.approx((min(added.low, 0.36), max(added.high, 0.36)))
    # Finding invalid items: judge "no" 4 times, 3 of them human "no" -> precision 3/4;
    # human "no" 5 times (3 + 2 the judge called yes), 3 found -> recall 3/5.
    assert (c.precision.hits, c.precision.n, c.precision.estimate) == (3, 4, 0.75)
    assert (c.precision.low, c.precision.high) == wilson_interval(3, 4)
    assert (c.recall.hits, c.recall.n, c.recall.estimate) == (3, 5, 0.6)
    assert (c.recall.low, c.recall.high) == wilson_interval(3, 5)


def test_calibration_kappa_equals_cohen_kappa_of_the_pairs():
    judge, human = small_study()
    c = calibrate(judge, human)
    pairs = [(YES, YES)] * 5 + [(YES, NO)] * 2 + [(NO, YES)] + [(NO, NO)] * 3 + [(UNSURE, YES)]
    assert c.kappa.value == pytest.approx(cohen_kappa(pairs).value)


def test_fce_standard_error_matches_the_spread_of_kappa_in_simulation():
    # An independent check of the formula: resample a 3x3 table's cells 20,000 times and
    # compare the standard deviation of kappa with the large-sample standard error.
    table = np.array([[40, 8, 2], [6, 30, 4], [1, 3, 6]])
    k = kappa_interval(table)
    rng = np.random.default_rng(1969)
    draws = rng.multinomial(table.sum(), (table / table.sum()).ravel(), size=20_000).reshape(-1, 3, 3)
    p = draws / table.sum()
    p_o = np.trace(p, axis1=1, axis2=2)
    p_e = (p.sum(axis=2) * p.sum(axis=1)).sum(axis=1)
    spread = ((p_o - p_e) / (1 - p_e)).std()
    assert k.se == pytest.approx(spread, rel=0.03)          # measured: 0.0706 against 0.0709


def test_calibration_edge_cases():
    empty = calibrate([], [])
    assert empty.items == 0 and empty.kappa.value is None and empty.precision.estimate is None
    # The judge says yes to everything and people agree: kappa undefined, no "no" to find.
    same = calibrate([YES] * 3, [[YES]] * 3)
    assert same.kappa.value is None and "undefined" in same.kappa.why_undefined
    assert same.recall.n == 0 and same.recall.estimate is None
    perfect = calibrate([YES, NO, YES, NO], [[YES], [NO], [YES], [NO]])
    assert perfect.kappa.value == 1.0 and perfect.kappa.se == 0.0
    with pytest.raises(ValueError):
        calibrate([YES], [])
    with pytest.raises(ValueError):
        calibrate(["maybe"], [[YES]])


# ---------------------------------------------------------------------------
# 2. Prediction-powered pool rates
# ---------------------------------------------------------------------------
def test_ppi_equals_the_hand_computed_estimate_and_interval():
    # Judge on N = 4 unlabeled: 1 1 0 1 (mean 0.75, variance with n - 1: 0.75 / 3 = 0.25).
    # Labeled: judge 1 0 1, human 1 0 0; rectifier judge - human = 0 0 1 (mean 1/3, variance 1/3).
    # theta = 0.75 - 1/3 = 5/12; var = 0.25 / 4 + (1/3) / 3 = 0.0625 + 0.1111 = 0.1736, se = 5/12.
    r = ppi_mean([1, 1, 0, 1], [1, 0, 1], [1, 0, 0], method="ppi")
    assert r.estimate == pytest.approx(5 / 12)
    assert r.se == pytest.approx(5 / 12)
    assert r.lam == 1.0
    assert (r.low, r.high) == (0.0, 1.0)       # 5/12 -+ 1.96 * 5/12, clipped to [0, 1]
    assert (r.n_human, r.n_judge, r.method) == (3, 4, "ppi")
    assert r.human_estimate == pytest.approx(1 / 3)
    assert (r.human_low, r.human_high) == wilson_interval(1, 3)
    assert r.human == (r.human_estimate, r.human_low, r.human_high)


def test_ppi_plus_plus_equals_the_hand_computed_lambda():
    # cov(human, judge) on the labeled items: human 1 0 0 (mean 1/3), judge 1 0 1 (mean 2/3):
    #   [(2/3)(1/3) + (-1/3)(-2/3) + (-1/3)(1/3)] / 2 = 1/6.
    # var of all 7 judge verdicts 1 1 0 1 1 0 1 (mean 5/7): (5 (2/7)^2 + 2 (5/7)^2) / 6 = 5/21.
    # lambda = (1/6) / ((1 + 3/4) * 5/21) = (1/6) / (5/12) = 0.4.
    # theta = 0.4 * 0.75 - mean(0.4 judge - human) = 0.3 - mean(-0.6, 0, 0.4) = 0.3 + 0.2/3 = 0.366667.
    # var = 0.16 * 0.25 / 4 + var(-0.6, 0, 0.4) / 3 = 0.01 + 0.253333 / 3 = 0.094444; se = 0.307318.
    r = ppi_mean([1, 1, 0, 1], [1, 0, 1], [1, 0, 0], method="ppi++")
    assert r.lam == pytest.approx(0.4)
    assert r.estimate == pytest.approx(0.3 + 0.2 / 3)
    assert r.se == pytest.approx(math.sqrt(0.01 + 0.76 / 9), abs=1e-9)
    assert r.low == 0.0 and r.high == pytest.approx(0.366667 + Z95 * 0.307318, abs=1e-5)


def test_pool_rate_reads_words_and_the_majority_rule():
    # Human truths: yes, no, split (not-yes), unsure (not-yes); the unjudged labeled item is dropped.
    r = pool_rate([YES, NO, UNSURE, None, YES], [YES, NO, YES, NO, None],
                  [[YES], [NO, NO], [YES, NO], [UNSURE], [YES]], question="valid_task", method="ppi")
    assert (r.n_judge, r.n_human) == (4, 4)
    assert r.paper_rate == PAPER_RATES["valid_task"]
    assert r.human_estimate == 0.25
    # judge over the 4 judged unlabeled: 2/4; rectifier (1-1, 0-0, 1-0, 0-0) mean 1/4.
    assert r.estimate == pytest.approx(0.5 - 0.25)
    with pytest.raises(ValueError):
        ppi_mean([1, 0], [1], [1, 0])
    with pytest.raises(ValueError):
        ppi_mean([1, 0], [1, 0], [1, 0], method="bayes")


def simulate(rng, sims, accuracy_yes, accuracy_no, rate=0.6, human=200, judged=10_000):
    """`sims` pools at once: human truths and judge verdicts on `human` labeled items, and judge
    verdicts on `judged` others (drawn with the judge's own rate, which is what they are)."""
    truth = rng.random((sims, human)) < rate
    u = rng.random((sims, human))
    judge_small = np.where(truth, u < accuracy_yes, u >= accuracy_no)
    judge_rate = rate * accuracy_yes + (1 - rate) * (1 - accuracy_no)
    judge_big = rng.random((sims, judged)) < judge_rate
    return truth, judge_small, judge_big


def test_ppi_interval_covers_the_true_rate():
    """True rate 0.6; a biased judge flips yes -> no with probability 0.1 and no -> yes with 0.25
    (accuracy 0.84, its own rate 0.64); 200 human labels and 10,000 judged items; 500 seeded
    simulations at nominal 95%. Measured coverage: classic PPI 95.8%, PPI++ 94.8%, human-only
    Wilson 95.0%; median widths 0.111 (PPI), 0.102 (PPI++, mean lambda 0.67), 0.135 (human-only).
    The judge's mean alone would miss: its rate is 0.64, four points off."""
    rng = np.random.default_rng(2023)
    truth, small, big = simulate(rng, 500, accuracy_yes=0.9, accuracy_no=0.75)
    for method, measured in (("ppi", 0.958), ("ppi++", 0.948)):
        covered = [ppi_mean(big[s], small[s], truth[s], method=method) for s in range(500)]
        coverage = np.mean([r.low <= 0.6 <= r.high for r in covered])
        assert coverage >= 0.90, (method, coverage)
        assert coverage == pytest.approx(measured)     # the figure the docstring states
        assert all(abs(r.estimate - 0.6) < 0.2 for r in covered)
        assert np.median([r.width for r in covered]) < np.median([r.human_width for r in covered])
    assert np.mean(big) == pytest.approx(0.64, abs=0.005)


def test_ppi_is_narrower_than_human_only_from_accuracy_077():
    """Judge accuracy swept from 0.60 to 0.99 in steps of 0.01 (symmetric errors), true rate 0.6,
    200 human labels, 10,000 judged items, median widths of 200 seeded simulations each.
    Classic PPI is narrower than the human-only Wilson interval from accuracy 0.77 on (ratio
    1.016 at 0.76, 0.988 at 0.77, 0.83 at 0.84, 0.67 at 0.90, 0.25 at 0.99; 1.30 at 0.60). PPI++
    is never wider: 0.99 of human-only at 0.60, 0.85 at 0.77, 0.25 at 0.99."""
    rng = np.random.default_rng(7)
    accuracies = np.round(np.arange(0.60, 0.9951, 0.01), 2)
    ratios, ratios_pp = {}, {}
    for a in accuracies:
        truth, small, big = simulate(rng, 200, accuracy_yes=a, accuracy_no=a)
        classic = [ppi_mean(big[s], small[s], truth[s], method="ppi") for s in range(200)]
        human = np.median([r.human_width for r in classic])
        ratios[a] = np.median([r.width for r in classic]) / human
        if a in (0.6, 0.77, 0.99):
            ratios_pp[a] = np.median([ppi_mean(big[s], small[s], truth[s]).width for s in range(200)]) / human
    crossover = min(a for a in accuracies if all(ratios[b] < 1 for b in accuracies if b >= a))
    assert crossover == 0.77
    assert ratios[0.6] > 1.2 and ratios[0.99] < 0.3
    assert ratios_pp[0.6] < 1.0 and ratios_pp[0.77] < 0.9 and ratios_pp[0.99] < 0.3


# ---------------------------------------------------------------------------
# 3. Ordinal agreement
# ---------------------------------------------------------------------------
def test_weighted_kappa_equals_the_hand_computed_values():
    # Pairs (A,A) (B,C) (C,C) (D,B) on A-D (indices 0-3). Rater 1 uses each level once (1/4 each);
    # rater 2: A 1/4, B 1/4, C 1/2, D 0.
    # Linear disagreement |i - j| / 3. Observed: (0 + 1/3 + 0 + 2/3) / 4 = 1/4.
    # Expected: 1/4 * 1/3 * sum over rater 1's levels of sum_j c_j |i - j|:
    #   A: 1/4*1 + 1/2*2 = 1.25; B: 1/4*1 + 1/2*1 = 0.75; C: 1/4*2 + 1/4*1 = 0.75;
    #   D: 1/4*3 + 1/4*2 + 1/2*1 = 1.75; total 4.5 -> 4.5 / 12 = 0.375. kappa = 1 - 0.25/0.375 = 1/3.
    # Quadratic (i - j)^2 / 9. Observed: (1/9 + 4/9) / 4 = 5/36. Expected: 1/4 * 1/9 * (2.25 + 0.75
    #   + 1.25 + 3.75) = 8/36. kappa = 1 - 5/8 = 3/8.
    pairs = [("A", "A"), ("B", "C"), ("C", "C"), ("D", "B")]
    linear = weighted_kappa(pairs)
    assert linear.value == pytest.approx(1 / 3) and linear.items == 4
    assert weighted_kappa(pairs, weights="quadratic").value == pytest.approx(3 / 8)


def test_weighted_kappa_properties():
    assert weighted_kappa([("A", "A"), ("B", "B"), ("D", "D")]).value == pytest.approx(1.0)
    assert weighted_kappa([("A", "A"), ("B", "B"), ("D", "D")], weights="quadratic").value == pytest.approx(1.0)
    # With two categories every weighting is Cohen's kappa.
    pairs = [("A", "A"), ("A", "B"), ("B", "B"), ("B", "B"), ("B", "A"), ("A", "A"), ("A", "A")]
    for weights in calibration.KAPPA_WEIGHTS:
        assert weighted_kappa(pairs, weights=weights, categories=("A", "B")).value == pytest.approx(
            cohen_kappa(pairs).value)
    assert weighted_kappa([]).value is None
    assert weighted_kappa([("B", "B")] * 3).value is None
    with pytest.raises(ValueError):
        weighted_kappa([("A", "E")])


def test_krippendorff_alpha_equals_the_hand_computed_values():
    # Units (levels A < B < C): [A, A], [A, B], [B, B, C], [C, missing] (one rating: not pairable).
    # Coincidences, each ordered pair of a unit with m ratings adding 1/(m - 1):
    #   [A, A] -> o_AA += 2;  [A, B] -> o_AB += 1, o_BA += 1;
    #   [B, B, C] -> o_BB += 2 * 1/2 = 1, o_BC += 1/2 + 1/2 = 1, o_CB += 1.
    #   n_A = 3, n_B = 3, n_C = 1, n = 7.
    # alpha = 1 - (n - 1) * sum o_ck d_ck / sum n_c n_k d_ck:
    #   nominal:  observed 4 (o_AB + o_BA + o_BC + o_CB); expected 2 (9 + 3 + 3) = 30; 1 - 6*4/30 = 0.2
    #   interval: d = (c - k)^2: observed 4 * 1 = 4; expected 2 (9*1 + 3*4 + 3*1) = 48; 1 - 24/48 = 0.5
    #   ordinal:  d_AB = (3/2 + 3/2)^2 = 9, d_BC = (3/2 + 1/2)^2 = 4, d_AC = (3/2 + 3 + 1/2)^2 = 25;
    #             observed 2*9 + 2*4 = 26; expected 2 (9*9 + 3*25 + 3*4) = 336; 1 - 6*26/336 = 15/28
    units = [["A", "A"], ["A", "B"], ["B", "B", "C"], ["C", None]]
    abc = ("A", "B", "C")
    nominal = krippendorff_alpha(units, metric="nominal", categories=abc)
    assert nominal.value == pytest.approx(0.2) and (nominal.items, nominal.ratings) == (3, 7)
    assert krippendorff_alpha(units, metric="interval", categories=abc).value == pytest.approx(0.5)
    assert krippendorff_alpha(units, categories=abc).value == pytest.approx(15 / 28)


def test_krippendorff_alpha_on_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units,
    # values 1-5, missing ratings; published alphas: nominal 0.743, ordinal 0.815, interval 0.849.
    coders = ["1 2 3 3 2 1 4 1 2 . . .", "1 2 3 3 2 2 4 1 2 5 . 3",
              ". 3 3 3 2 3 4 2 2 5 1 .", "1 2 3 3 2 4 4 1 2 5 1 ."]
    units = [[None if v == "." else v for v in unit] for unit in zip(*(c.split() for c in coders))]
    levels = ("1", "2", "3", "4", "5")
    for metric, published in (("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)):
        assert krippendorff_alpha(units, metric=metric, categories=levels).value == pytest.approx(published, abs=5e-4)


def test_ordinal_alpha_equals_interval_alpha_only_with_equal_category_use():
    # The ordinal distance between levels c < k is (n_c/2 + n_(c+1) + ... + n_(k-1) + n_k/2)^2: with
    # every level used m times it is m^2 (k - c)^2, the interval distance times a constant, and
    # alpha (a ratio of distances) is the same. Equally spaced levels alone are not enough.
    equal_use = [["A", "B"], ["B", "C"], ["C", "A"], ["D", "D"], ["A", "B", "C", "D"]]
    ordinal = krippendorff_alpha(equal_use).value
    assert ordinal == pytest.approx(krippendorff_alpha(equal_use, metric="interval").value)
    units = [["A", "A"], ["A", "B"], ["B", "B", "C"], ["C", None]]   # A, B used 3 times, C once
    assert krippendorff_alpha(units, categories="ABC").value != pytest.approx(
        krippendorff_alpha(units, metric="interval", categories="ABC").value)


def test_krippendorff_alpha_properties():
    perfect = [["A", "A", "A"], ["B", "B", None], ["D", "D"], ["C", None, "C"]]
    for metric in calibration.ALPHA_METRICS:
        assert krippendorff_alpha(perfect, metric=metric).value == pytest.approx(1.0)
    assert krippendorff_alpha([["A"], [None, "B"]]).value is None                 # nothing pairable
    assert krippendorff_alpha([["B", "B"], ["B", "B", "B"]]).value is None        # one level only
    # Two raters, no missing value: nominal alpha is Scott's pi, close to Cohen's kappa.
    pairs = [("A", "A"), ("B", "C"), ("C", "C"), ("D", "B"), ("A", "B"), ("D", "D")]
    alpha = krippendorff_alpha([list(p) for p in pairs], metric="nominal").value
    assert alpha == pytest.approx(cohen_kappa(pairs).value, abs=0.1)
    # Rater -> item -> rating, as the evaluation stores it.
    assert unit_ratings({"ann": {1: "A", 2: "B"}, "bob": {2: "C", 3: "D"}}) == [["A", None], ["B", "C"], [None, "D"]]


# ---------------------------------------------------------------------------
# Issue 23: intervals that keep their promise at the sizes people label
# ---------------------------------------------------------------------------
REFERENCE = Path(__file__).parent / "data" / "ppi_reference.json"


def _bench():
    """bench/calibration.py, imported by path (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_calibration", Path(__file__).parents[1] / "bench" / "calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", json.loads(REFERENCE.read_text())["cases"], ids=lambda c: c["name"])
def test_ppi_equals_the_authors_package(case):
    """Values computed by ppi_py 0.2.3 (tests/data/make_ppi_fixture.py). It divides the interval's
    variances and lambda's covariance by n (ddof 0): with ddof=0 the figures are equal; ours
    clips a 0/1 rate's estimate and interval to [0, 1], ppi_py does not."""
    y, f, big = case["human"], case["judge_labeled"], case["judge_unlabeled"]
    binary = all(v in (0.0, 1.0) for v in [*y, *f, *big])

    def clip(v):
        return min(1.0, max(0.0, v)) if binary else v

    classic = ppi_mean(big, f, y, method="ppi", ddof=0)
    assert classic.estimate == pytest.approx(clip(case["ppi_estimate"]), abs=1e-12)
    assert (classic.low, classic.high) == pytest.approx((clip(case["ppi_low"]), clip(case["ppi_high"])), abs=1e-12)
    tuned = ppi_mean(big, f, y, method="ppi++", ddof=0)
    assert tuned.lam == pytest.approx(case["lam"], abs=1e-12)
    assert tuned.estimate == pytest.approx(clip(case["ppipp_estimate"]), abs=1e-12)
    assert (tuned.low, tuned.high) == pytest.approx((clip(case["ppipp_low"]), clip(case["ppipp_high"])), abs=1e-12)
    # ddof 1 (the default) only rescales lambda's covariance by n / (n - 1), then clips
    n = len(y)
    assert ppi_mean(big, f, y).lam == pytest.approx(min(1, max(0, case["lam_unclipped"] * n / (n - 1))), abs=1e-12)


def test_ppi_plus_plus_clips_lambda_and_its_estimate_stays_inside_its_interval():
    """The issue's case: 30 labels (28 yes, 2 no) on which the judge agrees with people, a pool
    with 2% "no". Unclipped, lambda was 3.25 and the estimate 1.085, outside [0.881, 1.0]."""
    r = ppi_mean([1] * 9800 + [0] * 200, [1] * 28 + [0] * 2, [1] * 28 + [0] * 2, method="ppi++")
    assert r.lam == 1.0
    assert 0 <= r.low <= r.estimate <= r.high <= 1
    # and over 2,000 simulated pools at a 2% "no" rate and 30 labels
    rng = np.random.default_rng(23)
    for _ in range(2000):
        y = (rng.random(30) < 0.98).astype(float)
        f = np.where(rng.random(30) < 0.9, y, 1 - y)
        r = ppi_mean((rng.random(2000) < 0.98 * 0.9 + 0.02 * 0.1).astype(float), f, y, method="ppi++")
        assert 0 <= r.lam <= 1 and 0 <= r.low <= r.estimate <= r.high <= 1


def test_the_pages_interval_is_never_empty_where_ppi_collapsed():
    """Every labeled truth "yes": PPI++ had covariance 0, lambda 0, se 0 and the interval [1, 1]
    (55% of pools at a 2% "no" rate and 30 labels). By verdict it keeps Clopper-Pearson's width."""
    r = pool_rate([YES] * 9800 + [NO] * 200, [YES] * 30, [[YES]] * 30)
    assert r.method == calibration.STRATA == calibration.DEFAULT_METHOD
    assert r.estimate == 1.0 and r.high == 1.0 and r.low < 0.9
    assert r.low <= r.estimate <= r.high
    old_way = pool_rate([YES] * 9800 + [NO] * 200, [YES] * 30, [[YES]] * 30, method="ppi++")
    assert old_way.width == 0.0       # why PPI++ is kept for reference only


def test_strata_interval_is_clopper_pearson_in_one_cell_and_mover_across_cells():
    # one cell known exactly: the exact interval of that cell
    est, low, high = calibration.strata_interval([3], [20], [1.0])
    assert (float(low), float(high)) == pytest.approx(calibration.clopper_pearson(3, 20))
    assert float(est) == pytest.approx(0.15)
    # two cells, 70 / 30: estimate 0.7 * 18/20 + 0.3 * 2/10 = 0.69; each side adds the cells'
    # exact half-widths in quadrature, weighed by the cells' shares
    est, low, high = calibration.strata_interval([18, 2], [20, 10], [0.7, 0.3])
    (l1, u1), (l2, u2) = calibration.clopper_pearson(18, 20), calibration.clopper_pearson(2, 10)
    assert float(est) == pytest.approx(0.69)
    assert float(low) == pytest.approx(0.69 - math.hypot(0.7 * (0.9 - l1), 0.3 * (0.2 - l2)))
    assert float(high) == pytest.approx(0.69 + math.hypot(0.7 * (u1 - 0.9), 0.3 * (u2 - 0.2)))
    # a cell nobody labeled counts with the labeled mean and the whole of [0, 1]
    est, low, high = calibration.strata_interval([5, 0], [10, 0], [0.9, 0.1])
    assert float(est) == pytest.approx(0.5) and float(high - low) > 0.1


def test_strata_rate_uses_the_judges_cells_and_the_studys_strata_weights():
    """Two rounds, the second four times the first in the pool, but sampled equally (a
    stratified study with known weights): weighing by the rounds' sizes gives the pool's rate,
    the unweighted mean does not."""
    judged = [YES] * 1000 + [NO] * 4000          # round 1: 1,000 items, round 2: 4,000
    strata = [1] * 1000 + [2] * 4000
    labeled = [YES] * 50 + [NO] * 50
    human = [True] * 50 + [False] * 50           # round 1 all yes, round 2 all no
    lab_strata = [1] * 50 + [2] * 50
    weighted = calibration.strata_rate(judged, labeled, human, unlabeled_strata=strata, labeled_strata=lab_strata,
                                       strata_weights={1: 1000, 2: 4000})
    assert weighted.estimate == pytest.approx(0.2) and weighted.low <= 0.2 <= weighted.high
    assert weighted.human_estimate == 0.5       # people alone, unweighted: the study's own mix
    with pytest.raises(ValueError, match="no weight"):
        calibration.strata_rate(judged, labeled, human, unlabeled_strata=strata, labeled_strata=lab_strata,
                                strata_weights={1: 1.0})
    # the bench's vectorised cells are the same computation as strata_rate's
    cells = np.array([[40, 5, 3, 12]])            # yes-yes, yes-no, no-yes, no-no (truth-verdict)
    est, low, high = _bench().by_verdict(cells, np.array([700]), 1000)
    r = calibration.strata_rate([YES] * 700 + [NO] * 300, [YES] * 40 + [NO] * 5 + [YES] * 3 + [NO] * 12,
                                [True] * 45 + [False] * 15)
    assert (r.estimate, r.low, r.high) == pytest.approx((float(est[0]), float(low[0]), float(high[0])))


def test_the_coverage_grid_holds_on_a_seeded_subset():
    """Cells of bench/calibration.py's grid where PPI++ failed worst (30-50 labels, 2% and 98%
    rates, accurate and lenient judges) and one where the judge helps: coverage of the pages'
    interval >= 0.93 minus two Monte Carlo standard errors, never zero width; narrower than
    people alone at 200 labels, a 58% rate and a 90%-accurate judge (measured: 0.68)."""
    bench = _bench()
    cells = [(30, 0.02, "accuracy 0.99"), (50, 0.98, "harsh"), (30, 0.05, "lenient"), (100, 0.92, "accuracy 0.90"),
             (200, 0.58, "accuracy 0.90")]
    for i, (n, rate, judge) in enumerate(cells):
        row = bench.grid_cell(n, rate, judge, judged=10_000, sims=1500, ppi_sims=0, seed=100 + i)
        assert row["cover"] >= bench.TARGET - 2 * row["se"], row
        assert row["zero_width"] == 0
    assert row["width_ratio"] < 0.75, row


def test_the_judges_kappa_interval_covers_where_the_plain_one_collapsed():
    """A 99%-accurate judge at 30 compared items: usually no disagreement at all, and the plain
    Fleiss-Cohen-Everitt interval shrinks to a point (coverage 24% in bench/calibration.py
    --kappa); calibrate's interval (one item added per used cell) covers, here and for a lenient
    judge at a 95% yes-rate (plain: 61-77% at 30 items)."""
    bench = _bench()
    for i, (n, rate, judge) in enumerate([(30, 0.58, "accuracy 0.99"), (30, 0.92, "lenient"),
                                          (50, 0.05, "harsh")]):
        plain = bench.kappa_cell(n, rate, judge, sims=600, seed=40 + i, add=0.0)
        added = bench.kappa_cell(n, rate, judge, sims=600, seed=40 + i, add=calibration.KAPPA_ADD)
        assert added["cover"] >= bench.TARGET - 2 * added["se"], added
        assert plain["cover"] < added["cover"]
    perfect = calibrate([YES] * 28 + [NO] * 2, [[YES]] * 28 + [[NO]] * 2)
    assert perfect.kappa.value == 1.0 and perfect.kappa.low < 0.9 and perfect.kappa.high == 1.0


def test_krippendorff_alpha_equals_the_krippendorff_package():
    """The reference implementation (krippendorff 0.9.0, test-only): random A-D ratings by four
    raters with missing ratings, every metric, equal to 1e-12."""
    import krippendorff     # pinned in requirements.txt (Tests)
    rng = np.random.default_rng(11)
    for trial in range(30):
        units = rng.integers(0, 4, size=(int(rng.integers(5, 40)), 4)).astype(float)
        units[rng.random(units.shape) < 0.3] = np.nan
        words = [[None if np.isnan(v) else "ABCD"[int(v)] for v in unit] for unit in units]
        for metric in ("ordinal", "interval", "nominal"):
            ours = krippendorff_alpha(words, metric=metric)
            if ours.value is None:
                continue
            theirs = krippendorff.alpha(reliability_data=units.T, level_of_measurement=metric, value_domain=[0, 1, 2, 3])
            assert ours.value == pytest.approx(theirs, abs=1e-12), (trial, metric)
