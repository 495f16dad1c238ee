"""The ``auto`` attack classifier: chosen by cross-validation on the attack-train split only, at least
as accurate as a loss threshold where members' losses are smaller, deterministic by seed."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from attacks.engine import run_plan, tasks
from attacks.evaluation.metrics import attack_metrics
from attacks.membership.classifiers import (
    CLASSIFIERS, DEFAULT_CLASSIFIER, LossThresholdAttack, attack_scores, make_classifier,
)
from attacks.membership.selection import QUICK_ZOO, ColumnThreshold, SelectedAttack
from attacks.membership.trained import ClassifierAttack
from attacks.threats.splits import AttackSplit


@parametrize_with_checks([SelectedAttack(candidates=("threshold", "logreg"), random_state=0)])
def test_selected_attack_follows_the_sklearn_estimator_contract(estimator, check):
    check(estimator)


def errors(n: int, seed: int, *, member_sd: float = 1.5, nonmember_sd: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Signed errors (years) of n members and n non-members; members' errors, so their losses, are smaller."""
    rng = np.random.default_rng(seed)
    member = np.r_[np.ones(n), np.zeros(n)].astype(int)
    return (rng.normal(size=2 * n) * np.where(member == 1, member_sd, nonmember_sd))[:, None], member


def accuracy(estimator, X: np.ndarray, y: np.ndarray) -> float:
    scores, threshold = attack_scores(estimator, X)
    return attack_metrics(y, scores, threshold=threshold)["accuracy"]


def test_auto_is_the_default():
    assert DEFAULT_CLASSIFIER == "auto" and CLASSIFIERS["auto"] is SelectedAttack


class Spy(LogisticRegression):
    """Logistic regression that records every matrix it is fitted on (cross-validation folds and refit)."""

    seen: list[np.ndarray] = []

    def fit(self, X, y, sample_weight=None):
        Spy.seen.append(np.array(X))
        return super().fit(X, y, sample_weight)


def test_the_choice_never_reads_the_attack_test_split(monkeypatch):
    # Prepare: 200 subjects with distinct losses; a split of 50 + 50 to train on and 50 + 50 to test.
    monkeypatch.setitem(CLASSIFIERS, "spy", Spy)
    monkeypatch.setitem(CLASSIFIERS, "auto", partial(SelectedAttack, candidates=("threshold", "spy", "hgb")))
    error, _ = errors(100, seed=0)
    loss = error**2
    ids = np.array([f"s{i}" for i in range(200)])
    train, test = np.r_[0:50, 100:150], np.r_[50:100, 150:200]
    split = AttackSplit(ids[0:50], ids[100:150], ids[50:100], ids[150:200])
    plan, attack = tasks([("adversary", "centralized", split)]), ClassifierAttack("loss", "loss", "auto", seed=0)
    # A victim whose test subjects look the other way round: members' and non-members' losses swapped.
    swapped = loss.copy()
    swapped[test] = loss[np.r_[150:200, 50:100]]

    def attacked(features: np.ndarray) -> tuple[dict, list[np.ndarray]]:
        Spy.seen.clear()
        rows = run_plan(plan, [attack], lambda a, model, rows, task: features[rows],
                        row_of={s: i for i, s in enumerate(ids)})
        return rows[0], list(Spy.seen)

    # Execute
    honest, honest_fits = attacked(loss)
    flipped, flipped_fits = attacked(swapped)
    # Assert: every fit of the selection (5 folds at least) saw attack-train subjects only ...
    assert len(honest_fits) >= 5
    seen = np.concatenate(honest_fits)[:, 0]
    assert np.isin(seen, loss[train]).all() and not np.isin(seen, loss[test]).any()
    # ... so the test split changes the attack's score, not its choice or what it was fitted on.
    assert honest["chosen"] == flipped["chosen"]
    assert all(np.array_equal(a, b) for a, b in zip(honest_fits, flipped_fits, strict=True))
    assert honest["auc"] > 0.6 > flipped["auc"]


def test_the_chosen_attack_is_as_accurate_as_a_loss_threshold_where_members_losses_are_smaller():
    gaps = []
    for seed in range(3):
        (error, member), (test_error, test_member) = errors(100, seed), errors(100, seed + 100)
        threshold = LossThresholdAttack().fit(error, member)
        chosen = SelectedAttack(random_state=seed).fit(error**2, member)  # the loss feature, the whole zoo
        gaps.append(accuracy(chosen, test_error**2, test_member) - accuracy(threshold, test_error, test_member))
    # 100 + 100 test subjects: an accuracy has a standard deviation of about 0.035.
    assert np.mean(gaps) >= -0.01 and min(gaps) >= -0.04


def test_the_quick_audits_selection_is_the_zoo_without_the_net_and_as_accurate_as_a_threshold():
    error, member = errors(100, 0)
    test_error, test_member = errors(100, 100)
    quick = make_classifier("auto-quick", random_state=0).fit(error**2, member)
    assert set(quick.cv_scores_) == set(QUICK_ZOO) and "conv" not in QUICK_ZOO and quick.cv == 3
    threshold = LossThresholdAttack().fit(error, member)
    assert accuracy(quick, test_error**2, test_member) >= accuracy(threshold, test_error, test_member) - 0.04


def test_selection_is_deterministic_by_random_state():
    error, member = errors(60, seed=1)
    X = np.c_[error, np.random.default_rng(2).normal(size=len(error))]  # two columns: no threshold candidate
    fit = partial(SelectedAttack, candidates=("logreg", "hgb"))
    a, b, c = fit(random_state=0).fit(X, member), fit(random_state=0).fit(X, member), fit(random_state=1).fit(X, member)
    assert list(a.cv_scores_) == ["logreg", "hgb"] and a.chosen_ in a.cv_scores_
    assert a.cv_scores_ == b.cv_scores_ and a.chosen_ == b.chosen_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.cv_scores_ != c.cv_scores_  # other folds


def test_column_threshold_reads_the_column_or_its_magnitude_in_the_better_direction():
    error, member = errors(100, seed=3)
    assert (ColumnThreshold().fit(error, member).sign_, ColumnThreshold().fit(error, member).magnitude_) == (-1.0, True)
    assert ColumnThreshold().fit(error**2, member).sign_ == -1.0  # a small loss: a member
    assert ColumnThreshold().fit(-(error**2), member).sign_ == 1.0
    with pytest.raises(ValueError, match="ColumnThreshold reads one column; got 2 columns"):
        ColumnThreshold().fit(np.c_[error, error], member)


def test_unknown_or_inapplicable_candidates_say_what_to_choose():
    error, member = errors(20, seed=0)
    choices = "choose from: threshold, shallow_hgb, mlp"
    with pytest.raises(ValueError, match=f"unknown candidate.s. 'svm', 'auto' of SelectedAttack; {choices}"):
        SelectedAttack(candidates=("svm", "auto")).fit(error, member)
    with pytest.raises(ValueError, match="no candidate of SelectedAttack applies to 2 columns"):
        SelectedAttack(candidates=("threshold",)).fit(np.c_[error, error], member)
