"""Intervals for aggregates over many attacks: a two-stage bootstrap over victims, then repeats.

The attacks of a federation are attacker × victim pairs × repeats, and they are not independent:
every attacker attacks the same victim's subjects, and the repeats of one pair share them too. The
mean of per-attack bounds is not an interval for the mean, and a standard error that treats the
pairs as independent is too small. :func:`cluster_bootstrap` resamples victims with replacement
and, within each drawn victim, its attacks; the percentile interval of the resampled means is the
interval for the mean (a centralized run has one victim: its repeats are resampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BOOTSTRAPS", "MeanInterval", "cluster_bootstrap"]

#: Bootstrap resamples of every aggregate.
BOOTSTRAPS = 2000


@dataclass(frozen=True)
class MeanInterval:
    """A mean over attacks, its percentile bootstrap interval and the bootstrap standard error."""

    mean: float
    low: float
    high: float
    se: float


def cluster_bootstrap(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = BOOTSTRAPS,
    seed: int = 0,
) -> MeanInterval:
    """The mean of ``values`` with a two-stage (cluster, then within-cluster) bootstrap interval.

    Parameters
    ----------
    values : array of shape (n,)
        One number per attack (NaNs are dropped).
    clusters : array of shape (n,)
        Each attack's cluster (its victim). One cluster: an ordinary bootstrap over the attacks.
    """
    values = np.asarray(values, dtype=np.float64)
    clusters = np.asarray(clusters)
    keep = np.isfinite(values)
    values, clusters = values[keep], clusters[keep]
    if len(values) == 0:
        return MeanInterval(float("nan"), float("nan"), float("nan"), float("nan"))
    mean = float(values.mean())
    if len(values) == 1:
        return MeanInterval(mean, float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    _, label = np.unique(clusters, return_inverse=True)
    groups = [values[label == k] for k in range(label.max() + 1)]
    # stage 1: which clusters (with replacement); stage 2: a resample of each drawn cluster's attacks
    drawn = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    sums = np.zeros(n_boot)
    counts = np.zeros(n_boot)
    for k, group in enumerate(groups):
        times = (drawn == k).sum(axis=1)  # how often cluster k was drawn in each resample
        if not times.any():
            continue
        picks = rng.integers(0, len(group), size=(n_boot, int(times.max()), len(group)))
        inner = group[picks].mean(axis=2)  # (n_boot, max times): each draw's within-cluster resample mean
        used = np.arange(inner.shape[1])[None, :] < times[:, None]
        sums += np.where(used, inner, 0.0).sum(axis=1) * len(group)
        counts += times * len(group)
    means = sums / counts
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return MeanInterval(mean, float(low), float(high), float(means.std(ddof=1)))
