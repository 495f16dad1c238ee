"""Trained-classifier attacks from each seat: which predictions each seat reads under prediction noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from federations import ENVIRONMENTS, federate

from attacks.membership.trained import run_attacks
from attacks.signals.cache import FeatureCache
from attacks.signals.features import compute_features
from attacks.target import load_snapshot, open_run
from attacks.threats.seats import sees_released

@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory) -> Path:
    """tiny-learners with [defense] prediction_noise = 3: released predicted ages carry N(0, 3²) years."""
    root = tmp_path_factory.mktemp("noisy")
    env = root / "tiny-learners-noisy.toml"
    env.write_text((ENVIRONMENTS / "tiny-learners.toml").read_text() + "\n[defense]\nprediction_noise = 3.0\n")
    return federate(root / "run", env=env)


def test_only_the_outsider_and_black_box_centralized_sets_see_released_predictions():
    assert sees_released("outsider", black_box=True)
    assert sees_released("centralized", black_box=True) and not sees_released("centralized", black_box=False)
    assert not any(sees_released(t, black_box=b) for t in ("learner", "controller") for b in (True, False))


def test_seats_that_hold_the_weights_attack_the_clean_predictions(noisy_run):
    target = open_run(noisy_run)
    cache = FeatureCache(target)
    community, local = load_snapshot(noisy_run, 2), load_snapshot(noisy_run, 2, name="L1")
    clean = compute_features(community.model, target.cohort, ["error"])["error"]
    released = compute_features(community.model, target.cohort, ["error"], release=community.release)["error"]
    assert np.abs(released - clean).mean() > 1.0  # the noise is there to be seen
    for threat in ("learner", "outsider", "controller"):
        run_attacks(target, threat=threat, rounds=[2], feature_sets=["error"], classifier="logreg", repeats=1, cache=cache)
    # what each seat attacked is what the cache holds for its view of the snapshot
    np.testing.assert_allclose(cache.read(community)["error"], clean, rtol=1e-6)
    np.testing.assert_allclose(cache.read(community, released=True)["error"], released, rtol=1e-6)
    local_clean = compute_features(local.model, target.cohort, ["error"])["error"]
    np.testing.assert_allclose(cache.read(local)["error"], local_clean, rtol=1e-6)
    assert not cache.folder(local, released=True).exists()  # the controller never read released predictions
