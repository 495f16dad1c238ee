"""Attack classifiers: the estimator contract, the registry, and attacks on an overfitted vs an untrained net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from attacks.membership.classifiers import (
    CLASSIFIERS, GradientConvAttack, LossThresholdAttack, MLPAttack, attack_scores, make_classifier,
)
from attacks.signals.features import assemble, compute_features
from attacks.signals.layout import Block, feature_layout
from attacks.evaluation.metrics import attack_metrics
from fedsim.errors import FedsimError
from fedsim.models import build_model
from fedsim.training import regression_loss


@parametrize_with_checks([
    MLPAttack(max_epochs=10, lr=1e-2, random_state=0), GradientConvAttack(max_epochs=10, lr=1e-2, random_state=0),
])
def test_torch_attacks_follow_the_sklearn_estimator_contract(estimator, check):
    check(estimator)


def separable(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(int)
    return rng.normal(size=(n, 3)) + 3 * y[:, None], y


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_every_registered_classifier_fits_and_scores(name):
    X, y = separable()
    X = X[:, :1] if name == "loss_threshold" else X
    if name == "loss_threshold":
        X = np.where(y[:, None] == 1, 0.1, 5.0) * X  # members: small errors
    clf = make_classifier(name, random_state=0)
    assert clf.fit(X, y) is clf
    scores, threshold = attack_scores(clf, X)
    assert scores.shape == (60,)
    assert attack_metrics(y, scores, threshold=threshold)["accuracy"] > 0.9
    np.testing.assert_array_equal((scores >= threshold).astype(int), clf.predict(X))


def test_registry_errors_list_the_choices():
    with pytest.raises(FedsimError, match="unknown attack classifier 'svm'; choose one of: mlp, conv, logreg, hgb, loss_threshold"):
        make_classifier("svm")
    with pytest.raises(FedsimError, match="'mlp' got unexpected parameter.s. 'hidden'; allowed: hidden_sizes"):
        make_classifier("mlp", hidden=(8,))


def test_mlp_is_deterministic_by_random_state_and_leaves_global_rngs_alone():
    X, y = separable()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = MLPAttack(max_epochs=20, random_state=1).fit(X, y).predict_proba(X)
    assert torch.equal(torch.get_rng_state(), before)
    b = clone(MLPAttack(max_epochs=20, random_state=1)).fit(X, y).predict_proba(X)
    c = MLPAttack(max_epochs=20, random_state=2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def gradient_toy(n: int = 200, spike: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[Block, ...]]:
    """Two noise columns and a 12-filter gradient block of noise where, for members, one random
    filter's row is ``spike`` times larger: a set-level signal (1 = pure noise).

    Columns are flattened as the gradient code does: every filter's weights, then every bias.
    """
    rng = np.random.default_rng(seed)
    filters, per_filter = 12, 6
    layout = (Block("prediction", 1), Block("label", 1), Block("grad:conv", filters * per_filter, filters, (5, 1)))
    y = np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(int)
    rows = rng.normal(size=(n, filters, per_filter))
    rows[np.arange(n), rng.integers(filters, size=n)] *= np.where(y == 1, spike, 1.0)[:, None]
    grad = np.c_[rows[:, :, :5].reshape(n, -1), rows[:, :, 5]]
    return np.c_[rng.normal(size=(n, 2)), grad], y, layout


def toy_attack(spike: float) -> dict:
    X, y, layout = gradient_toy(spike=spike)
    train = np.r_[0:50, 100:150]
    test = np.setdiff1d(np.arange(200), train)
    clf = make_classifier("conv", random_state=0, layout=layout).fit(X[train], y[train])
    scores, threshold = attack_scores(clf, X[test])
    return attack_metrics(y[test], scores, threshold=threshold)


def test_conv_head_finds_a_per_filter_signal_and_nothing_in_noise():
    result = toy_attack(spike=4.0)  # an MLP on the flat columns stays near chance here (100 training rows)
    assert result["accuracy"] >= 0.8 and result["auc"] >= 0.9
    noise = toy_attack(spike=1.0)
    # 50 + 50 test subjects: chance accuracy has a standard deviation of 0.05.
    assert 0.3 <= noise["accuracy"] <= 0.7 and 0.3 <= noise["auc"] <= 0.7


def test_conv_head_clones_is_deterministic_and_without_gradients_is_the_mlp():
    X, y, layout = gradient_toy(n=80)
    a = GradientConvAttack(layout=layout, max_epochs=20, random_state=1)
    b = clone(a)
    assert b.get_params()["layout"] == layout
    np.testing.assert_array_equal(a.fit(X, y).predict_proba(X), b.fit(X, y).predict_proba(X))
    c = GradientConvAttack(layout=layout, max_epochs=20, random_state=2).fit(X, y).predict_proba(X)
    assert not np.array_equal(a.predict_proba(X), c)
    # Vector blocks only: the same net, weights and training as MLPAttack.
    vectors = (Block("prediction", 1), Block("label", 1), Block("grad_norm", 72))
    mlp = MLPAttack(max_epochs=20, random_state=1).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(GradientConvAttack(layout=vectors, max_epochs=20, random_state=1).fit(X, y).predict_proba(X), mlp)
    with pytest.raises(ValueError, match="layout of GradientConvAttack covers 74 columns but X has 3; build it with"):
        GradientConvAttack(layout=layout).fit(X[:, :3], y)
    # make_classifier hands the layout only to classifiers that take one.
    assert make_classifier("conv", layout=layout).layout is layout
    assert "layout" not in make_classifier("mlp", layout=layout).get_params()


def test_loss_threshold_picks_the_training_accuracy_optimum():
    errors = np.array([[0.5], [-1.0], [2.0], [1.5], [-4.0], [6.0]])  # years
    y = np.array([1, 1, 1, 0, 0, 0])
    attack = LossThresholdAttack().fit(errors, y)
    # Scores -error**2 in descending order: -0.25 m, -1 m, -2.25 n, -4 m, -16 n, -36 n. Cuts after
    # -1 and after -4 both get 5 of 6 right; the tie goes to the higher cut, midway to -2.25.
    assert attack.threshold_ == pytest.approx(-1.625)
    np.testing.assert_array_equal(attack.predict(errors), [1, 1, 0, 0, 0, 0])
    # -|error|: -0.5 m, -1 m, -1.5 n, -2 m, -4 n, -6 n -> midway between -1 and -1.5.
    assert LossThresholdAttack(loss="l1").fit(errors, y).threshold_ == pytest.approx(-1.25)
    with pytest.raises(ValueError, match="expects one column, the 'error' feature"):
        attack.fit(np.c_[errors, errors], y)


# One tiny 3D CNN overfitted on 16 members, attacked with 16 non-members; and the same net
# untrained, where "members" are an arbitrary half of 128 subjects (more subjects, so that
# chance is pinned down). Each attack trains on half of each class and is tested on the rest.
MEMBERS, N = 16, 128
SHAPE = (8, 10, 8)  # small enough to memorise in a second or two
SPEC = "error+pred+label+grad_norm+grad:conv6+grad:output"
ATTACKS = [
    ("loss_threshold", "error"), ("mlp", "grad_norm"), ("mlp", "pred+label+grad:output"),
    ("conv", "pred+label+grad:conv6+grad:output"),
]


@pytest.fixture(scope="module")
def cohort() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, 1, *SHAPE, generator=g), 45 + 35 * torch.rand(N, generator=g)


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn3d", in_shape=SHAPE, channels=(8, 16), head_channels=16, dropout=0.0, target_scale=7.4)


@pytest.fixture(scope="module")
def overfitted(cohort) -> dict[str, np.ndarray]:
    x, age = cohort
    net = tiny_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-2)
    for _ in range(80):  # full-batch steps on the members until their loss is ~0
        optimizer.zero_grad()
        regression_loss("mse", net(x[:MEMBERS]), age[:MEMBERS], 7.4).backward()
        optimizer.step()
    return compute_features(net, x[: 2 * MEMBERS], SPEC, ages=age[: 2 * MEMBERS])


def attack(features: dict[str, np.ndarray], name: str, spec: str) -> dict:
    """Members are the first half of the rows; train on the first half of each class."""
    n = len(features["error"]) // 2
    member = (np.arange(2 * n) < n).astype(int)
    train = np.r_[0 : n // 2, n : n + n // 2]
    test = np.setdiff1d(np.arange(2 * n), train)
    X = assemble(features, spec)
    clf = make_classifier(name, random_state=0, layout=feature_layout(spec, tiny_net()))
    clf.fit(X[train], member[train])
    scores, threshold = attack_scores(clf, X[test])
    return attack_metrics(member[test], scores, threshold=threshold)


@pytest.mark.parametrize(("name", "spec"), ATTACKS)
def test_attacks_beat_chance_on_an_overfitted_net(overfitted, name, spec):
    error = np.abs(overfitted["error"][:, 0])
    assert error[:MEMBERS].max() < 0.5 < np.median(error[MEMBERS:])  # the net memorised its members
    result = attack(overfitted, name, spec)
    assert result["accuracy"] >= 0.8 and result["auc"] >= 0.85


@pytest.mark.parametrize(("name", "spec"), ATTACKS)
def test_attacks_are_near_chance_on_an_untrained_net(cohort, name, spec):
    x, age = cohort
    result = attack(compute_features(tiny_net(), x, SPEC, ages=age), name, spec)
    # 32 + 32 test subjects: chance accuracy has a standard deviation of about 0.06.
    assert 0.3 <= result["accuracy"] <= 0.7 and 0.3 <= result["auc"] <= 0.7
