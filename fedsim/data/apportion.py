"""Integer tables with exact margins: how many subjects of each age bin each learner gets.

Iterative proportional fitting scales a learner x bin weight table to the required margins
(each learner's size, each bin's subject count); controlled rounding then turns it into integers
that meet both margins exactly, moving as few subjects as possible away from their fitted share.
"""

from __future__ import annotations

import numpy as np

# Penalties of the rounding repair (see _controlled_round), per subject: a cell leaving the
# floor/ceiling of its fitted target costs _BOX_PENALTY; a subject placed in a bin its learner's
# weights exclude costs _SUPPORT_PENALTY, far above any other cost, so exclusions are broken only
# when the cohort leaves no alternative, and then as few times as possible. _COST_TOL absorbs
# floating-point noise in path costs (zero-cost ties must not look like improvements).
_BOX_PENALTY = 1e3
_SUPPORT_PENALTY = 1e6
_COST_TOL = 1e-6
_IPF_MAX_ITER = 1000
_IPF_TOL = 1e-10
_SNAP = 1e-9


def _round_preserving_sum(quotas: np.ndarray, total: int) -> np.ndarray:
    """Largest-remainder rounding of non-negative ``quotas`` that sum to ``total``.

    Every entry becomes its floor or ceiling and the result sums to ``total`` exactly; ties go
    to the lower index so the result is deterministic.
    """
    quotas = np.asarray(quotas, dtype=float)
    snapped = np.round(quotas)
    quotas = np.where(np.abs(quotas - snapped) < _SNAP, snapped, quotas)
    counts = np.floor(quotas).astype(int)
    short = int(total) - int(counts.sum())
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` items in proportion to ``weights`` (largest-remainder method, exact sum)."""
    weights = np.asarray(weights, dtype=float)
    if total == 0:
        return np.zeros(weights.size, dtype=int)
    return _round_preserving_sum(total * weights / weights.sum(), total)


def _fit_proportions(seed: np.ndarray, row_totals: np.ndarray, col_totals: np.ndarray) -> np.ndarray:
    """Iterative proportional fitting of ``seed`` to the given row and column totals.

    Scales rows and columns alternately until the rows match (columns match after every sweep);
    zeros stay zeros, so a learner never receives an age its histogram excludes unless the
    rounding repair finds no other way. If the zero pattern makes the margins unreachable, the
    last sweep is returned and :func:`_controlled_round` resolves the rest.
    """
    fitted = seed.astype(float)
    rows = row_totals.astype(float)
    cols = col_totals.astype(float)
    for _ in range(_IPF_MAX_ITER):
        row_sums = fitted.sum(axis=1)
        fitted *= np.divide(rows, row_sums, out=np.zeros_like(rows), where=row_sums > 0)[:, None]
        col_sums = fitted.sum(axis=0)
        fitted *= np.divide(cols, col_sums, out=np.zeros_like(cols), where=col_sums > 0)[None, :]
        if np.abs(fitted.sum(axis=1) - rows).max() <= _IPF_TOL * max(1.0, rows.max()):
            break
    return fitted


def _marginal_costs(counts: np.ndarray, target: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Change in a cell's cost when it loses (``take``) or gains (``give``) one subject.

    A cell's cost is ``(count - target)**2``, plus ``_BOX_PENALTY`` per subject outside
    ``[floor(target), ceil(target)]``, plus ``_SUPPORT_PENALTY`` per subject if the learner's
    weights exclude the bin: convex in the count, which the shortest-path repair relies on.
    Computed in closed form so that large penalties do not cancel each other in floating point.
    """
    error = counts - target
    low, high = np.floor(target), np.ceil(target)
    excluded = _SUPPORT_PENALTY * ~support
    take = 1 - 2 * error + _BOX_PENALTY * ((counts <= low).astype(float) - (counts > high)) - excluded
    give = 1 + 2 * error + _BOX_PENALTY * ((counts >= high).astype(float) - (counts < low)) + excluded
    take[counts == 0] = np.inf
    return take, give


def _controlled_round(
    target: np.ndarray, row_totals: np.ndarray, col_totals: np.ndarray, support: np.ndarray
) -> np.ndarray:
    """Integer learner x bin counts with exact row and column totals, close to ``target``.

    Each column (age bin) is first rounded by largest remainder, which fixes the column totals.
    The row totals are then repaired by successive shortest paths (Bellman-Ford over learners):
    a path moves one subject of some bin from a learner with too many subjects to another
    learner, possibly through a chain of learners, choosing the chain that least increases the
    convex cell cost of :func:`_marginal_costs`. Largest-remainder rounding leaves no
    cost-reducing exchange, and augmenting along shortest paths keeps it so, so the result
    minimises that cost; in particular when ``target`` already has the right margins every cell
    ends at its floor or ceiling (a controlled rounding, which always exists for two-way
    tables). Should floating-point error ever close a loop of predecessors, that loop is a
    cost-reducing exchange between learners; it is applied and the search repeated.
    """
    n_learners = target.shape[0]
    snapped = np.round(target)
    target = np.where(np.abs(target - snapped) < _SNAP, snapped, target)
    counts = np.column_stack(
        [_round_preserving_sum(target[:, b], col_totals[b]) for b in range(target.shape[1])]
    )
    surplus = counts.sum(axis=1) - row_totals
    while (surplus > 0).any():
        take, give = _marginal_costs(counts, target, support)
        move = take[:, None, :] + give[None, :, :]  # [from learner, to learner, bin]
        move[np.arange(n_learners), np.arange(n_learners), :] = np.inf
        best_bin = move.argmin(axis=2)
        best = move.min(axis=2)

        dist = np.where(surplus > 0, 0.0, np.inf)
        pred = np.full(n_learners, -1)
        for _ in range(n_learners):  # Bellman-Ford from every learner with a surplus
            via = dist[:, None] + best
            origin = via.argmin(axis=0)
            reach = via[origin, np.arange(n_learners)]
            better = reach < dist - _COST_TOL
            if not better.any():
                break
            dist[better] = reach[better]
            pred[better] = origin[better]
        short = np.flatnonzero(surplus < 0)
        node = int(short[np.argmin(dist[short])])
        if not np.isfinite(dist[node]):
            raise AssertionError("rounding repair found no path although every cell may receive subjects")
        path = [node]
        while pred[path[-1]] >= 0 and int(pred[path[-1]]) not in path:
            path.append(int(pred[path[-1]]))
        if pred[path[-1]] >= 0:  # a loop: keep only the cycle, closed
            path = path[path.index(int(pred[path[-1]])) :] + [int(pred[path[-1]])]
        for dst, src in zip(path[:-1], path[1:]):
            b = best_bin[src, dst]
            counts[src, b] -= 1
            counts[dst, b] += 1
        surplus = counts.sum(axis=1) - row_totals
    return counts


def learner_bin_counts(
    pool_counts: np.ndarray,
    learner_sizes: np.ndarray,
    age_bin_weights: np.ndarray | None,
) -> np.ndarray:
    """Learner x bin subject counts for the pool: rows sum to ``learner_sizes``, columns to ``pool_counts``.

    IID (``age_bin_weights`` None): each learner's target in bin b is pool_b * size / pool size.
    Non-IID: the weights fitted to both margins by IPF; a bin the weights never cover but the
    pool does is seeded with the learner sizes (the IID column) before fitting.
    """
    if age_bin_weights is None:
        target = np.outer(learner_sizes, pool_counts) / pool_counts.sum()
        support = np.ones(target.shape, dtype=bool)
    else:
        seed = age_bin_weights.astype(float)
        uncovered = (seed.sum(axis=0) == 0) & (pool_counts > 0)
        seed[:, uncovered] = learner_sizes[:, None].astype(float)
        support = seed > 0
        target = _fit_proportions(seed, learner_sizes, pool_counts)
    return _controlled_round(target, learner_sizes, pool_counts, support)
