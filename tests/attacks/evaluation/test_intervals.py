"""The two-stage bootstrap over victims: exact against a slow loop, and its coverage by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.evaluation.intervals import cluster_bootstrap


def _slow(values: np.ndarray, clusters: np.ndarray, n_boot: int, seed: int, confidence: float = 0.95) -> tuple:
    """The same resamples, drawn in the same order, averaged one by one: obviously correct, slow."""
    rng = np.random.default_rng(seed)
    labels = sorted(set(clusters))
    groups = [values[clusters == k] for k in labels]
    drawn = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    picks = {}
    for k, group in enumerate(groups):
        times = (drawn == k).sum(axis=1)
        if times.any():
            picks[k] = rng.integers(0, len(group), size=(n_boot, int(times.max()), len(group)))
    means = []
    for b in range(n_boot):
        chosen = []
        for k, group in enumerate(groups):
            for j in range((drawn[b] == k).sum()):
                chosen.extend(group[picks[k][b, j]])
        means.append(np.mean(chosen))
    alpha = (1 - confidence) / 2
    return tuple(np.quantile(means, [alpha, 1 - alpha]))


def test_matches_the_slow_loop_and_is_deterministic():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.array(["L1", "L2", "L3", "L4"]), [3, 5, 2, 4])
    values = rng.normal(0.6, 0.1, len(clusters))
    fast = cluster_bootstrap(values, clusters, n_boot=300, seed=7)
    assert (fast.low, fast.high) == pytest.approx(_slow(values, clusters, 300, 7))
    assert fast.mean == pytest.approx(values.mean())
    assert cluster_bootstrap(values, clusters, n_boot=300, seed=7) == fast


def test_one_value_has_no_interval_and_nans_are_dropped():
    one = cluster_bootstrap([0.7], ["L1"])
    assert one.mean == 0.7 and np.isnan(one.low) and np.isnan(one.high)
    some = cluster_bootstrap([0.6, np.nan, 0.8], ["L1", "L2", "L2"])
    assert some.mean == pytest.approx(0.7) and some.low <= 0.7 <= some.high


def test_coverage_of_the_mean_over_correlated_attacks():
    """8 victims × 35 attacks (7 attackers × 5 repeats) sharing a victim effect: the interval covers the
    true mean ≥ 85 % of the time at nominal 95 %; treating the 280 attacks as independent covers far less."""
    rng = np.random.default_rng(1)
    victims = np.repeat(np.arange(8), 35)
    covered = naive = 0
    trials = 200
    for trial in range(trials):
        values = 0.6 + rng.normal(0, 0.05, 8)[victims] + rng.normal(0, 0.05, len(victims))
        interval = cluster_bootstrap(values, victims, n_boot=1000, seed=trial)
        covered += interval.low <= 0.6 <= interval.high
        naive += abs(values.mean() - 0.6) <= 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert covered / trials >= 0.85
    assert naive / trials < 0.6
