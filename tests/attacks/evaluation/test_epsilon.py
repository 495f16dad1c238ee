"""Empirical lower bounds on ε: the Clopper–Pearson bound and the one-run bound against cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from attacks.evaluation.epsilon import (
    GUESS_FRACTIONS, attacks_epsilon, canary_epsilon, counts_epsilon, one_run_epsilon, one_run_p_value,
    strongest_counts_epsilon,
)
from fedsim.errors import FedsimError

DELTA = 1e-5


def test_a_perfect_attack_on_100_plus_100_by_hand():
    # tp = n: Beta(100, 1) has cdf x^100, so TPR_low = 0.025^(1/100); fp = 0: FPR_high = 1 - 0.025^(1/100).
    bound = counts_epsilon(100, 100, 0, 100, delta=DELTA)
    tpr_low = 0.025 ** (1 / 100)  # = exp(ln 0.025 / 100) = 0.963783
    assert bound.tpr_low == pytest.approx(0.9637833073548235, abs=1e-12) == tpr_low
    assert bound.fpr_high == pytest.approx(1 - tpr_low, abs=1e-12)
    assert bound.epsilon == pytest.approx(math.log((0.9637833073548235 - DELTA) / 0.0362166926451765), abs=1e-9)
    assert bound.epsilon == pytest.approx(3.28134, abs=1e-5)


def test_the_members_form_from_beta_quantiles():
    # 40/100 members and 2/100 non-members called members, 95 % for both bounds together (each at 97.5 %):
    # TPR_low = beta.ppf(0.025, 40, 61) = 0.3032947687028774, FPR_high = beta.ppf(0.975, 3, 98) = 0.07038393247107011
    bound = counts_epsilon(40, 100, 2, 100, delta=DELTA, confidence=0.95)
    assert bound.tpr_low == pytest.approx(0.3032947687028774, abs=1e-12)
    assert bound.fpr_high == pytest.approx(0.07038393247107011, abs=1e-12)
    assert bound.form == "members"
    assert bound.epsilon == pytest.approx(math.log((0.3032947687028774 - DELTA) / 0.07038393247107011), abs=1e-9)
    assert bound.epsilon == pytest.approx(1.46071, abs=1e-5)


def test_the_non_members_form_wins_when_members_are_almost_all_found():
    # 99/100 members, 50/100 non-members: TPR_low = beta.ppf(0.025, 99, 2) = 0.9455406146079194,
    # FPR_high = beta.ppf(0.975, 51, 50) = 0.601678870496699; ln(TPR_low / FPR_high) = 0.452 only, but
    # ln((1 - FPR_high - δ) / (1 - TPR_low)) = ln(0.398311 / 0.054459) = 1.98978.
    bound = counts_epsilon(99, 100, 50, 100, delta=DELTA)
    assert bound.form == "non-members"
    assert bound.epsilon == pytest.approx(math.log((1 - 0.601678870496699 - DELTA) / (1 - 0.9455406146079194)), abs=1e-9)
    assert bound.epsilon == pytest.approx(1.98978, abs=1e-5)


def test_no_evidence_gives_zero_and_bad_counts_are_one_line_errors():
    assert counts_epsilon(0, 50, 0, 50, delta=DELTA).epsilon == 0.0  # nothing found: TPR_low = 0
    assert counts_epsilon(25, 50, 25, 50, delta=DELTA).epsilon == 0.0  # chance
    with pytest.raises(FedsimError, match="0 <= tp <= positives"):
        counts_epsilon(5, 4, 0, 10, delta=DELTA)
    with pytest.raises(FedsimError, match="confidence must be in"):
        counts_epsilon(1, 4, 0, 10, delta=DELTA, confidence=1.0)


def test_the_best_of_several_attacks_pays_for_the_choice():
    alone = counts_epsilon(40, 100, 2, 100, delta=DELTA)
    i, best = strongest_counts_epsilon([(10, 100, 5, 100), (40, 100, 2, 100)], delta=DELTA)
    assert i == 1 and best.confidence == pytest.approx(0.975)  # Bonferroni: each at 1 - 0.05 / 2
    assert 0 < best.epsilon < alone.epsilon


def test_one_run_bound_with_pure_dp_by_hand():
    # δ = 0, all 20 guesses right: the p-value is P[Binomial(20, q) >= 20] = q^20, so the bound solves q^20 = 0.05:
    # q = 0.05^(1/20) = 0.8608917, ε = ln(q / (1 - q)) = 1.8227156.
    assert one_run_p_value(20, 20, 20, 1.0, 0.0) == pytest.approx((math.e / (1 + math.e)) ** 20)
    q = 0.05 ** (1 / 20)
    assert one_run_epsilon(20, 20, 20, delta=0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-7)
    assert one_run_epsilon(20, 20, 20, delta=0.0) == pytest.approx(1.8227156, abs=1e-6)
    assert one_run_epsilon(20, 20, 10, delta=0.0) == 0.0  # half right: no evidence
    assert one_run_epsilon(20, 0, 0, delta=DELTA) == 0.0  # no guess


def test_one_run_p_value_with_delta_is_the_papers_sum():
    # Steinke et al.'s p-value term by term: P[W >= v] + 2 m δ max_i P[v - i <= W < v] / i, W ~ Binomial(r, q)
    m, r, v, eps, delta = 200, 50, 40, 1.0, 1e-3
    q = 1 / (1 + math.exp(-eps))
    tail = sum(binom.pmf(k, r, q) for k in range(v, r + 1))
    alpha = max(sum(binom.pmf(v - j, r, q) for j in range(1, i + 1)) / i for i in range(1, v + 1))
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(tail + 2 * m * delta * alpha, rel=1e-9)
    assert one_run_p_value(m, r, v, eps, 0.0) == pytest.approx(tail, rel=1e-9)
    assert one_run_epsilon(m, r, v, delta=delta) < one_run_epsilon(m, r, v, delta=0.0)  # δ buys the algorithm room
    with pytest.raises(FedsimError, match="0 <= right <= guesses <= canaries"):
        one_run_p_value(10, 5, 6, 1.0, 0.0)


def test_canary_guesses_separate_only_when_the_scores_do():
    rng = np.random.default_rng(0)
    included = rng.random(200) < 0.5
    perfect = canary_epsilon(included + rng.normal(0, 0.01, 200), included, delta=DELTA)
    k_in, k_out = 50, 50  # the largest balanced guess: all right
    assert (perfect.k_in, perfect.k_out, perfect.right, perfect.tried) == (k_in, k_out, 100, len(GUESS_FRACTIONS))
    each = 1 - 0.05 / len(GUESS_FRACTIONS)
    assert perfect.epsilon == pytest.approx(one_run_epsilon(200, 100, 100, delta=DELTA, confidence=each))
    assert perfect.epsilon > 2.5
    assert canary_epsilon(rng.normal(size=200), included, delta=DELTA).epsilon == 0.0
    with pytest.raises(FedsimError, match="one inclusion bit per score"):
        canary_epsilon([1.0, 2.0], [True], delta=DELTA)


def test_attack_rows_use_the_judged_control_and_the_fixed_threshold():
    base = {"round": 3, "n_members": 100, "n_nonmembers": 100, "classifier": "logreg", "features": "error"}
    rows = pd.DataFrame([
        {**base, "seat": "outsider", "control": "none", "tpr@0.01_fixed": 0.9, "fpr@0.01_fixed": 0.0},  # shifted
        {**base, "seat": "outsider", "control": "age-matched", "tpr@0.01_fixed": 0.4, "fpr@0.01_fixed": 0.02},
        {**base, "seat": "controller", "control": "none", "tpr@0.01_fixed": 0.1, "fpr@0.01_fixed": 0.05},
        {**base, "seat": "controller", "control": "round-0", "tpr@0.01_fixed": 1.0, "fpr@0.01_fixed": 0.0},
        {**base, "round": 2, "seat": "controller", "control": "none", "tpr@0.01_fixed": 1.0, "fpr@0.01_fixed": 0.0},
    ])
    found = attacks_epsilon(rows, rnd=3, delta=DELTA)
    assert found["tests"] == 2  # the outsider's age-matched row and the controller's plain one
    assert (found["tp"], found["fp"], found["control"]) == (40, 2, "age-matched")
    assert found["attack"].startswith("outsider")
    assert found["epsilon"] == strongest_counts_epsilon([(40, 100, 2, 100), (10, 100, 5, 100)], delta=DELTA)[1].epsilon
    assert attacks_epsilon(rows.drop(columns="tpr@0.01_fixed"), rnd=3, delta=DELTA) is None
