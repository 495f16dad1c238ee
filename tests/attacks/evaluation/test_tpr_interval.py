"""The interval of TPR at a low FPR: its coverage by simulation, a slow reference, and edge cases.

The interval (:func:`attacks.evaluation.metrics.tpr_interval`) is for the *population* TPR at FPR
exactly ``fpr``; for members ~ N(d, s^2) and non-members ~ N(0, 1) that is
1 - Phi((Phi^-1(1 - fpr) - d) / s).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import beta, binom, binomtest, norm
from sklearn.metrics import roc_curve

from attacks.evaluation.metrics import tpr_at_fpr, tpr_interval


def true_tpr(d: float, fpr: float, s: float = 1.0) -> float:
    return float(1 - norm.cdf((norm.ppf(1 - fpr) - d) / s))


def labelled(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[np.zeros(len(nonmembers)), np.ones(len(members))].astype(int), np.r_[nonmembers, members]


def simulate(n: int, d: float, fpr: float, reps: int, *, s: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Coverage and mean width of the interval, and of Clopper–Pearson over the members alone."""
    rng = np.random.default_rng(seed)
    truth = true_tpr(d, fpr, s)
    hits, widths, cp_hits, inside = [], [], [], []
    for _ in range(reps):
        members, nonmembers = s * rng.standard_normal(n) + d, rng.standard_normal(n)
        result = tpr_at_fpr(*labelled(members, nonmembers), fpr=fpr)
        hits.append(result.tpr_low <= truth <= result.tpr_high)
        widths.append(result.tpr_high - result.tpr_low)
        inside.append(result.tpr_low <= result.tpr <= result.tpr_high)
        cp = binomtest(result.true_positives, n).proportion_ci(0.95, method="exact")
        cp_hits.append(cp.low <= truth <= cp.high)
    return {"coverage": float(np.mean(hits)), "width": float(np.mean(widths)),
            "cp_coverage": float(np.mean(cp_hits)), "inside": float(np.mean(inside))}


# ------------------------------------------------------------------------------------------------
# 1. coverage


@pytest.mark.parametrize("n", [127, 500])
@pytest.mark.parametrize("d", [1.0, 2.0])
def test_nominal_95_covers_the_true_tpr_at_1pct_fpr(n, d):
    sim = simulate(n, d, 0.01, reps=250, seed=n + int(10 * d))
    assert sim["coverage"] >= 0.90, sim
    assert sim["inside"] == 1.0  # the point estimate always lies in its interval
    assert sim["width"] < {127: 0.75, 500: 0.40}[n], sim  # informative, not [0, 1]
    # The simulation can tell: the old interval, Clopper–Pearson over the members alone, misses.
    assert sim["cp_coverage"] < 0.80, sim


def test_the_fpr_0_case_still_covers_the_tpr_at_the_target():
    # 127 non-members cannot resolve 0.1% FPR: the operating point is FPR 0 (the note says so) and
    # the interval is for the TPR at 0.1% all the same, so its lower bound is 0.
    sim = simulate(127, 3.0, 0.001, reps=200, seed=3)
    assert sim["coverage"] >= 0.95 and sim["inside"] == 1.0, sim
    assert sim["width"] < 0.9, sim


SHIFTS = [(0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (2.0, 0.5), (1.0, 2.0)]  # (d, s) of the members
#: every (d, s) at both FPRs, with the sample sizes 127, 500, 1500 in turn: each size meets both FPRs and 4 shifts
REALISTIC = [((127, 500, 1500)[i % 3], fpr, d, s) for i, ((d, s), fpr) in enumerate(itertools.product(SHIFTS, (0.01, 0.001)))]


@pytest.mark.slow
@pytest.mark.parametrize(("n", "fpr", "d", "s"), REALISTIC)
def test_coverage_across_the_realistic_settings(n, fpr, d, s):
    sim = simulate(n, d, fpr, reps=200, s=s, seed=n + int(1e4 * fpr) + int(10 * d) + int(10 * s))
    assert sim["coverage"] >= 0.90, sim
    assert sim["inside"] == 1.0, sim


# ------------------------------------------------------------------------------------------------
# 2. the fast path against an obviously correct slow one


def slow_interval(members, nonmembers, fpr, confidence=0.95):
    """The same construction, literally: every N = 0..n0, counts by comparison, bisection on the CDFs."""
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    n1, n0, alpha = len(members), len(nonmembers), 1 - confidence
    ranked = sorted(nonmembers, reverse=True)
    lower_parts, upper_parts = [], []
    for N in range(n0 + 1):
        weight = binom.pmf(N, n0, fpr)
        k_lo = 0 if N == 0 else int(np.sum(members > ranked[N - 1]))
        k_hi = n1 if N == n0 else int(np.sum(members >= ranked[N]))
        lower_parts.append((weight, k_lo))
        upper_parts.append((weight, k_hi))

    w_lo, k_lo = np.array(lower_parts).T
    w_hi, k_hi = np.array(upper_parts).T

    def lower_cdf(x):  # Beta(0, .) is a point mass at 0
        return np.sum(w_lo * np.where(k_lo == 0, 1.0, beta.cdf(x, np.maximum(k_lo, 1), n1 - k_lo + 1)))

    def upper_cdf(x):  # Beta(., 0) is a point mass at 1
        return np.sum(w_hi * np.where(k_hi == n1, 0.0, beta.cdf(x, k_hi + 1, np.maximum(n1 - k_hi, 1))))

    def solve(cdf, level):  # smallest x with cdf(x) >= level
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if cdf(mid) >= level else (mid, hi)
        return hi

    low = 0.0 if lower_cdf(0.0) >= alpha / 2 else solve(lower_cdf, alpha / 2)
    high = 1.0 if upper_cdf(1 - 1e-15) <= 1 - alpha / 2 else solve(upper_cdf, 1 - alpha / 2)
    return low, high


@pytest.mark.parametrize("seed", range(6))
def test_fast_interval_equals_the_slow_reference(seed):
    rng = np.random.default_rng(seed)
    n1, n0 = int(rng.integers(5, 60)), int(rng.integers(5, 120))
    members, nonmembers = rng.standard_normal(n1) + rng.uniform(0, 3), rng.standard_normal(n0)
    if seed % 2:  # coarse scores: many ties within and across the classes
        members, nonmembers = np.round(members * 2) / 2, np.round(nonmembers * 2) / 2
    for fpr in (0.001, 0.01, 0.05, 0.2):
        for confidence in (0.9, 0.95):
            fast = tpr_interval(members, nonmembers, fpr=fpr, confidence=confidence)
            assert fast == pytest.approx(slow_interval(members, nonmembers, fpr, confidence), abs=1e-8)


@pytest.mark.parametrize("seed", range(4))
def test_point_estimate_is_the_sklearn_roc_reading(seed):
    rng = np.random.default_rng(seed)
    members, nonmembers = np.round(rng.standard_normal(300) + 1, 1), np.round(rng.standard_normal(400), 1)
    y_true, y_score = labelled(members, nonmembers)
    fprs, tprs, thresholds = roc_curve(y_true, y_score, drop_intermediate=False)
    for fpr in (0.001, 0.01, 0.1):
        i = np.flatnonzero(fprs <= fpr)[-1]
        result = tpr_at_fpr(y_true, y_score, fpr=fpr)
        assert (result.tpr, result.fpr, result.threshold) == (tprs[i], fprs[i], thresholds[i])
        assert result.true_positives == np.sum(members >= thresholds[i])
        assert result.false_positives == np.sum(nonmembers >= thresholds[i])
        assert result.tpr_low <= result.tpr <= result.tpr_high


def test_with_one_possible_rank_it_is_clopper_pearson():
    # fpr so small that N = 0 for sure: the threshold is above every non-member and the upper bound
    # is the Clopper–Pearson bound on the members at or above the highest non-member.
    members, nonmembers = np.arange(20.0), np.array([9.5, 3.0, 1.0])
    low, high = tpr_interval(members, nonmembers, fpr=1e-9)
    cp = binomtest(10, 20).proportion_ci(0.95, method="exact")  # 10..19 are >= 9.5
    assert low == 0.0 and high == pytest.approx(cp.high)


def test_deterministic_and_rank_based():
    rng = np.random.default_rng(11)
    members, nonmembers = rng.standard_normal(1500) + 1.5, rng.standard_normal(1500)
    y_true, y_score = labelled(members, nonmembers)
    first = tpr_at_fpr(y_true, y_score, fpr=0.01)
    assert tpr_at_fpr(y_true, y_score, fpr=0.01) == first
    order = rng.permutation(len(y_true))
    assert tpr_at_fpr(y_true[order], y_score[order], fpr=0.01) == first
    rescaled = tpr_at_fpr(y_true, np.exp(y_score), fpr=0.01)
    same = (first.tpr, first.tpr_low, first.tpr_high)
    assert (rescaled.tpr, rescaled.tpr_low, rescaled.tpr_high) == pytest.approx(same)
    wider = tpr_at_fpr(y_true, y_score, fpr=0.01, confidence=0.99)
    assert wider.confidence == 0.99 and wider.tpr_low < first.tpr_low < first.tpr_high < wider.tpr_high


# ------------------------------------------------------------------------------------------------
# 3. edge cases


def test_members_all_above_the_nonmembers():
    members, nonmembers = np.linspace(10, 11, 200), np.linspace(0, 1, 1000)
    result = tpr_at_fpr(*labelled(members, nonmembers), fpr=0.01)
    assert result.tpr == 1.0 and result.tpr_high == 1.0
    # With 1000 non-members N = 0 has chance p0 = 0.99^1000 = 4e-5; every other rank has all 200
    # members above it, so p0 + (1 - p0) P(Beta(200, 1) <= low) = p0 + (1 - p0) low^200 = 2.5%.
    p0 = 0.99**1000
    assert result.tpr_low == pytest.approx(((0.025 - p0) / (1 - p0)) ** (1 / 200))
    # 127 non-members leave a 28% chance that the 1% threshold is above them all: no lower bound.
    few = tpr_at_fpr(*labelled(members, nonmembers[:127]), fpr=0.01)
    assert (few.tpr, few.tpr_low, few.tpr_high) == (1.0, 0.0, 1.0)


def test_members_all_below_the_nonmembers():
    members, nonmembers = np.linspace(-5, -4, 200), np.linspace(0, 1, 1000)
    result = tpr_at_fpr(*labelled(members, nonmembers), fpr=0.01)
    assert (result.tpr, result.tpr_low) == (0.0, 0.0)
    assert result.tpr_high == pytest.approx(1 - 0.025 ** (1 / 200))  # Clopper–Pearson for 0 of 200


def test_all_scores_tied():
    # One score for everybody: the ROC is the diagonal, no threshold separates anybody, and ties
    # count against the lower bound and for the upper one, so nothing is claimed.
    result = tpr_at_fpr(*labelled(np.zeros(50), np.zeros(300)), fpr=0.01)
    assert (result.tpr, result.fpr, result.tpr_low, result.tpr_high) == (0.0, 0.0, 0.0, 1.0)


def test_ties_across_the_classes_only_widen_the_interval():
    # Scores on a 0.1 grid: many members tie with non-members. Ties count against the lower bound
    # and for the upper one, so the interval holds both intervals with the ties broken either way.
    rng = np.random.default_rng(5)
    members, nonmembers = np.round(rng.standard_normal(400) + 2, 1), np.round(rng.standard_normal(400), 1)
    assert np.isin(members, nonmembers).mean() > 0.5
    tied = tpr_interval(members, nonmembers, fpr=0.01)
    for_members = tpr_interval(members + 0.01, nonmembers, fpr=0.01)
    against_members = tpr_interval(members - 0.01, nonmembers, fpr=0.01)
    assert tied[0] == against_members[0] <= for_members[0]
    assert tied[1] == for_members[1] >= against_members[1]
    result = tpr_at_fpr(*labelled(members, nonmembers), fpr=0.01)
    assert result.tpr_low <= result.tpr <= result.tpr_high


def test_fpr_0_with_few_nonmembers():
    rng = np.random.default_rng(2)
    members, nonmembers = rng.standard_normal(50) + 3, rng.standard_normal(40)
    result = tpr_at_fpr(*labelled(members, nonmembers), fpr=0.001)
    assert result.fpr == 0.0 and result.note is not None and "TPR at FPR 0" in result.note
    assert result.tpr == np.mean(members > nonmembers.max())
    # (1 - 0.001)^40 = 0.96 chance that no non-member is above the true 0.1% threshold: no lower
    # bound; the upper bound is Clopper–Pearson on the members at or above the highest non-member,
    # widened by the 4% chance that the threshold lies below it.
    assert result.tpr_low == 0.0
    k = int(np.sum(members >= nonmembers.max()))
    assert result.tpr <= binomtest(k, 50).proportion_ci(0.95, method="exact").high < result.tpr_high < 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fpr": 0.0}, r"fpr must be in \(0, 1\)"),
    ({"fpr": 0.01, "confidence": 1.0}, r"confidence must be in \(0, 1\)"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tpr_interval(np.ones(3), np.zeros(3), **kwargs)


def test_an_empty_class_raises():
    with pytest.raises(ValueError, match="need members and non-members"):
        tpr_interval(np.ones(3), np.zeros(0), fpr=0.01)
