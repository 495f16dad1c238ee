"""Attack metrics on toy scores whose values are worked out by hand; members are class 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import beta

from attacks.evaluation.metrics import (
    MEMBER, accuracy_at, attack_metrics, auc_interval, best_threshold, roc_auc, tpr_at_fpr,
)

# scikit-learn's ROC toy example: members score 0.35 and 0.8, non-members 0.1 and 0.4.
Y_TRUE = [0, 0, 1, 1]
Y_SCORE = [0.1, 0.4, 0.35, 0.8]


def test_members_are_the_positive_class():
    assert MEMBER == 1
    assert roc_auc([0, 1], [0.0, 1.0]) == 1.0  # members scoring higher is a perfect attack


def test_toy_auc_accuracy_and_threshold():
    # Pairs (member, non-member) ranked right: (0.35, 0.1), (0.8, 0.1), (0.8, 0.4) -> 3 of 4.
    assert roc_auc(Y_TRUE, Y_SCORE) == 0.75
    # At 0.5 only 0.8 is called a member: right, right, wrong, right.
    assert accuracy_at(Y_TRUE, Y_SCORE, threshold=0.5) == 0.75
    # Cuts: none (2 right), >=0.8 (3), >=0.4 (2), >=0.35 (3), all (2); the first best is
    # between 0.8 and 0.4, returned as their midpoint.
    assert best_threshold(Y_TRUE, Y_SCORE) == pytest.approx(0.6)
    assert best_threshold([0, 1], [0.0, 1.0]) == 0.5
    assert best_threshold([1, 0], [0.0, 1.0]) > 1.0  # nobody called a member beats everybody


def make_scores() -> tuple[np.ndarray, np.ndarray]:
    """200 non-members scoring 0..199 and 10 members: 198.5, 199.5, five at 250, three at 10.5."""
    nonmembers = np.arange(200.0)
    members = np.array([198.5, 199.5, 250, 250, 250, 250, 250, 10.5, 10.5, 10.5])
    return np.r_[np.zeros(200), np.ones(10)].astype(int), np.r_[nonmembers, members]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    alpha = 1 - confidence
    low = beta.ppf(alpha / 2, k, n - k + 1) if k > 0 else 0.0
    high = beta.ppf(1 - alpha / 2, k + 1, n - k) if k < n else 1.0
    return low, high


def upper_mixture(p0: float, k0: int, k1: int, n: int, confidence: float = 0.95) -> float:
    """x with p0 P(Beta(k0 + 1, n - k0) <= x) + (1 - p0) P(Beta(k1 + 1, n - k1) <= x) = (1 + confidence) / 2."""
    target = (1 + confidence) / 2
    return brentq(lambda x: p0 * beta.cdf(x, k0 + 1, n - k0) + (1 - p0) * beta.cdf(x, k1 + 1, n - k1) - target, 0, 1)


def test_tpr_at_a_resolvable_fpr():
    y_true, y_score = make_scores()
    # FPR 1% of 200 = 2 false positives: threshold 198 lets in 198 and 199, and 7 members.
    result = tpr_at_fpr(y_true, y_score, fpr=0.01)
    assert (result.tpr, result.fpr, result.threshold) == (0.7, 0.01, 198.0)
    assert (result.true_positives, result.false_positives) == (7, 2)
    assert (result.n_members, result.n_nonmembers) == (10, 200)
    # The interval is for the true TPR at 1% FPR: N ~ Bin(200, 1%) non-members score above that
    # threshold. N = 0 (chance 0.99^200 = 0.134 > 2.5%) leaves no lower bound; the upper bound mixes
    # Clopper-Pearson over the members at or above the (N+1)-th non-member: 6 (>= 199) or 7 (>= 198 ... 11).
    assert result.tpr_low == 0.0
    assert result.tpr_high == pytest.approx(upper_mixture(0.99**200, 6, 7, 10))
    assert clopper_pearson(7, 10)[1] > result.tpr_high > clopper_pearson(6, 10)[1]
    assert result.note is None
    assert "TPR 0.700 [0.000, 0.930] at FPR 0.01" in str(result)


def test_tpr_below_the_fpr_resolution_says_so():
    y_true, y_score = make_scores()
    # 1/200 = 0.5% > 0.1%: the only FPR <= 0.1% is 0, reached above 199 by 6 members.
    result = tpr_at_fpr(y_true, y_score, fpr=0.001)
    assert (result.tpr, result.fpr, result.false_positives) == (0.6, 0.0, 0)
    # N ~ Bin(200, 0.1%) is 0 with chance 0.999^200 = 0.82: then the threshold is above every
    # non-member and only its upper bound (6 members >= 199) is known; otherwise 7 members >= 198.
    assert result.tpr_low == 0.0
    assert result.tpr_high == pytest.approx(upper_mixture(0.999**200, 6, 7, 10))
    assert result.note == (
        "with 200 non-members the smallest non-zero FPR is 1/200 = 0.005 > 0.001, "
        "so this is the TPR at FPR 0; use at least 1000 non-members"
    )
    assert str(result).endswith(result.note)


def test_attack_metrics_bundle_everything_with_the_counts():
    y_true, y_score = make_scores()
    result = attack_metrics(y_true, y_score, threshold=198)
    assert result["accuracy"] == pytest.approx((198 + 7) / 210)
    assert result["auc"] == pytest.approx(roc_auc(y_true, y_score))
    assert (result["n_members"], result["n_nonmembers"]) == (10, 200)
    assert result["tpr@0.01"].tpr == 0.7 and result["tpr@0.001"].note is not None


def test_auc_interval_is_hanley_mcneil_and_narrows_with_the_sample():
    # Hanley & McNeil (1982), by hand for AUC 0.8 with 10 members and 200 non-members:
    # Q1 = 0.8 / 1.2, Q2 = 2 * 0.64 / 1.8, var = (0.16 + 9 (Q1 - 0.64) + 199 (Q2 - 0.64)) / 2000
    q1, q2 = 0.8 / 1.2, 1.28 / 1.8
    half = 1.959963985 * math.sqrt((0.16 + 9 * (q1 - 0.64) + 199 * (q2 - 0.64)) / 2000)
    assert auc_interval(0.8, 10, 200) == pytest.approx((0.8 - half, 0.8 + half))
    small, large = auc_interval(0.8, 127, 127), auc_interval(0.8, 1500, 1500)
    assert small[1] - small[0] > 3 * (large[1] - large[0])
    assert auc_interval(0.999, 5, 5)[1] == 1.0 and auc_interval(0.001, 5, 5)[0] == 0.0
    y_true, y_score = make_scores()
    result = attack_metrics(y_true, y_score, threshold=198)
    assert (result["auc_low"], result["auc_high"]) == pytest.approx(auc_interval(result["auc"], 10, 200))


def test_every_metric_ignores_monotone_rescaling_of_scores():
    y_true, y_score = make_scores()
    rescaled = np.exp(y_score / 50)
    assert roc_auc(y_true, rescaled) == roc_auc(y_true, y_score)
    assert tpr_at_fpr(y_true, rescaled, fpr=0.01).tpr == tpr_at_fpr(y_true, y_score, fpr=0.01).tpr
    assert accuracy_at(y_true, rescaled, threshold=math.exp(198 / 50)) == accuracy_at(y_true, y_score, threshold=198)



@pytest.mark.parametrize(
    ("y_true", "y_score", "message"),
    [
        ([1, 1], [0.2, 0.3], "both members"),
        ([0, 2], [0.2, 0.3], "must hold 1 .member. and 0"),
        ([0, 1, 1], [0.2, 0.3], "3 entries but y_score has 2"),
    ],
)
def test_degenerate_inputs_raise(y_true, y_score, message):
    with pytest.raises(ValueError, match=message):
        roc_auc(y_true, y_score)


def test_fpr_out_of_range_raises():
    with pytest.raises(ValueError, match=r"fpr must be in \(0, 1\)"):
        tpr_at_fpr(Y_TRUE, Y_SCORE, fpr=1.0)
