"""Partitioners by name: Dirichlet over age bins and one learner per site, beside the paper's counts."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.config import env_path, load_env
from fedsim.data.partition import UNSEEN, age_bins, assign_groups
from fedsim.errors import FedsimError

AGES = np.random.default_rng(0).uniform(45, 80, size=600)
COMMON = dict(learners=4, unseen=0.2, n_bins=10, seed=3)


def _histograms(labels: np.ndarray, learners: int = 4, n_bins: int = 10) -> np.ndarray:
    bins = age_bins(AGES, n_bins)
    return np.array([np.bincount(bins[labels == f"L{k + 1}"], minlength=n_bins + 1)[1:] for k in range(learners)])


def _skew(labels: np.ndarray) -> float:
    """Mean total-variation distance of each learner's age histogram from the pool's."""
    h = _histograms(labels).astype(float)
    pool = h.sum(axis=0) / h.sum()
    return float(np.mean([0.5 * np.abs(row / row.sum() - pool).sum() for row in h]))


def test_dirichlet_is_deterministic_keeps_the_unseen_set_and_alpha_sets_the_skew():
    paper = assign_groups(AGES, **COMMON)
    low = assign_groups(AGES, by="dirichlet", alpha=0.1, **COMMON)
    high = assign_groups(AGES, by="dirichlet", alpha=1000.0, **COMMON)
    np.testing.assert_array_equal(low, assign_groups(AGES, by="dirichlet", alpha=0.1, **COMMON))
    assert not np.array_equal(low, assign_groups(AGES, by="dirichlet", alpha=0.1, **{**COMMON, "seed": 4}))
    for labels in (low, high):
        np.testing.assert_array_equal(labels == UNSEEN, paper == UNSEEN)  # one hold-out for every partitioner
        assert set(labels) == {UNSEEN, "L1", "L2", "L3", "L4"}
    assert _skew(low) > 0.4 > 0.05 > _skew(high)  # alpha -> infinity is IID


def test_dirichlet_that_empties_a_learner_is_one_line():
    with pytest.raises(FedsimError, match="would get 0 .* alpha = 0.001"):
        assign_groups(AGES[:40], by="dirichlet", alpha=0.001, learners=12, unseen=0.2, n_bins=2, seed=0)


def test_by_site_each_learner_is_one_site_and_the_unseen_set_is_shared():
    sites = np.array(["hospital-b", "hospital-a", "scanner-c"])[np.arange(AGES.size) % 3]
    labels = assign_groups(AGES, by="site", sites=list(sites), learners=3, unseen=0.2, n_bins=10, seed=3)
    np.testing.assert_array_equal(labels == UNSEEN, assign_groups(AGES, learners=3, unseen=0.2, n_bins=10, seed=3) == UNSEEN)
    for learner, site in (("L1", "hospital-a"), ("L2", "hospital-b"), ("L3", "scanner-c")):  # sorted site names
        held = labels == learner
        assert held.any() and set(sites[held]) == {site}
        assert (labels[sites == site] != UNSEEN).sum() == held.sum()


@pytest.mark.parametrize("sites, learners, match", [
    (None, 3, "needs a site column"),
    (["a", "b"] * 300, 3, "the cohort has 2 site\\(s\\) \\(a, b\\); set \\[partition\\] learners = 2"),
    (["a", "", "b"] * 200, 2, "some subjects have no site"),
])
def test_by_site_errors(sites, learners, match):
    with pytest.raises(FedsimError, match=match):
        assign_groups(AGES, by="site", sites=sites, learners=learners, unseen=0.2, n_bins=10, seed=0)


@pytest.mark.parametrize("partition, match", [
    ('by = "dirichlet"', "alpha goes with by = \"dirichlet\""),
    ('alpha = 0.5', "alpha goes with by = \"dirichlet\""),
    ('by = "dirichlet"\nalpha = 0.5\nlearner_weights = [1, 1, 1]', "belong to by = \"paper\""),
    ('by = "random"', "one of paper, dirichlet, site"),
    ('by = "dirichlet"\nalpha = -1', "alpha .* a positive number"),
])
def test_partition_keys_are_validated(tmp_path, partition, match):
    raw = env_path("tiny").read_text().replace("learner_weights = [3, 2, 1]\n", "")
    raw = raw.replace("[partition]\n", f"[partition]\n{partition}\n")
    path = tmp_path / "env.toml"
    path.write_text(raw)
    with pytest.raises(FedsimError, match=match):
        load_env(path)


def test_a_dirichlet_environment_loads(tmp_path):
    raw = env_path("tiny").read_text().replace("learner_weights = [3, 2, 1]\n", 'by = "dirichlet"\nalpha = 0.5\n')
    (tmp_path / "env.toml").write_text(raw)
    cfg = load_env(tmp_path / "env.toml")
    assert (cfg.partition.by, cfg.partition.alpha) == ("dirichlet", 0.5)
