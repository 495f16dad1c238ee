"""Split one cohort into federated learners plus a held-out "unseen" set.

Why this module exists: the membership-inference attacks of Gupta et al. 2021 target the
federated brain-age models of Stripelis et al. 2021, whose four environments differ only in how
8356 training subjects are spread over 8 learners: equal ("Uniform") or geometric ("Skewed", each
learner ~1.35x the next) sizes, and the cohort's own age histogram ("IID") or a learner-specific
one ("non-IID"); see ``docs/environments.md`` (its sources) and ``environments/*.toml``. The attack also
needs subjects no model has seen. So the partitioner

1. holds out the unseen set first, stratified by age bin, so that unseen and member subjects are
   exchangeable apart from membership (like the paper's 2090-subject brain-age test set);
2. gives every remaining ("pool") subject to exactly one learner, with learner sizes and
   per-learner age-bin counts that equal the paper's tables when the cohort has the paper's size
   and histogram, and that keep their proportions at any other size.

Integer counts are made exact at both margins (each bin's pool count, each learner's size) by
iterative proportional fitting followed by controlled rounding (largest remainder per bin, then
a min-cost repair that moves single subjects between learners inside a bin). Which subject of a
bin goes where is decided by ``np.random.default_rng(seed)`` alone, so the split is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Integral, Real

import numpy as np

from fedsim.data.apportion import apportion, learner_bin_counts
from fedsim.data.partitioners import dirichlet_counts, site_learners
from fedsim.errors import FedsimError

UNSEEN = "unseen"
TRAIN = "train"
VAL = "val"


def learner_label(k: int) -> str:
    """Group label of learner ``k`` (1-based), as written to ``partitions.csv``: ``"L1"``, ``"L2"``, ..."""
    return f"L{k}"


def age_bins(ages: np.ndarray, n_bins: int, age_range: tuple[float, float] | None = None) -> np.ndarray:
    """Equal-width age-bin index (1..``n_bins``) of each subject.

    The paper's per-learner histograms are stated over 20 equal-width bins spanning the cohort's
    youngest to oldest subject, so by default the bins span ``[min(ages), max(ages)]``; the oldest
    subject falls in the last bin (the right edge is closed).

    Parameters
    ----------
    ages
        Ages in years, one per subject; must be finite.
    n_bins
        Number of bins, at least 1.
    age_range
        ``(low, high)`` to bin over instead of the ages' own range, e.g. the range a synthetic
        cohort was drawn from; every age must lie inside it.

    Returns
    -------
    np.ndarray
        Integer bin index per subject, 1-based.

    Raises
    ------
    FedsimError
        If ``n_bins`` < 1, an age is NaN or infinite, or ``age_range`` is empty or misses ages.
    """
    ages = np.asarray(ages, dtype=float)
    if isinstance(n_bins, bool) or not isinstance(n_bins, Integral) or n_bins < 1:
        raise FedsimError(f"n_bins={n_bins!r} is not a positive whole number; use e.g. n_bins=20")
    bad = np.flatnonzero(~np.isfinite(ages))
    if bad.size:
        raise FedsimError(
            f"ages has {bad.size} missing or non-finite value(s) (first at position {bad[0]}); "
            "drop those subjects or fill in their ages"
        )
    if ages.size == 0:
        return np.zeros(0, dtype=int)
    if age_range is None:
        low, high = float(ages.min()), float(ages.max())
    else:
        low, high = (float(a) for a in age_range)
        if not high > low:
            raise FedsimError(f"age_range={age_range!r} is empty; give (low, high) with low < high")
        if ages.min() < low or ages.max() > high:
            raise FedsimError(
                f"age_range={age_range!r} does not contain the ages {ages.min():.2f}..{ages.max():.2f}; "
                "widen it or pass age_range=None"
            )
    if high == low:
        return np.ones(ages.size, dtype=int)
    index = np.floor((ages - low) / (high - low) * n_bins).astype(int)
    return np.clip(index, 0, n_bins - 1) + 1


def _count_from(value: float | int, of: int) -> int:
    """A fraction ``value`` of ``of`` items, rounded up as scikit-learn's ``train_test_split`` does.

    Rounding up is why the paper's 20% of 10446 subjects is 2090, not 2089. The product is
    rounded to 9 decimals first so that e.g. 0.1 * 30 = 3.0000000000000004 stays 3.
    """
    return math.ceil(round(float(value) * of, 9))


def _check_unseen(unseen: float | int, n_subjects: int) -> int:
    """Number of subjects to hold out, from a fraction in (0, 1) or a whole count."""
    if isinstance(unseen, bool) or not isinstance(unseen, Real):
        raise FedsimError(f"unseen={unseen!r} is not a number; give a fraction in (0, 1) or a count >= 1")
    if isinstance(unseen, Integral) or (unseen >= 1 and float(unseen).is_integer()):
        count = int(unseen)
        if count < 1:
            raise FedsimError(
                f"unseen={unseen} must hold out at least 1 subject; give a count >= 1 or a fraction in (0, 1)"
            )
    elif 0 < unseen < 1:
        count = _count_from(unseen, n_subjects)
    else:
        raise FedsimError(
            f"unseen={unseen!r} is neither a fraction in (0, 1) nor a whole count >= 1; use e.g. unseen=0.2"
        )
    if count >= n_subjects:
        raise FedsimError(
            f"unseen={unseen!r} holds out {count} of the {n_subjects} subjects and leaves none for training; "
            "use a smaller unseen fraction or count"
        )
    return count


def centralized_sizes(n_subjects: int, unseen: float | int, val_fraction: float) -> tuple[int, int, int]:
    """How many of ``n_subjects`` :func:`assign_groups` holds out as unseen, then for validation (``val_fraction``
    of the rest, rounded up), and leaves for training: e.g. the sample rate of DP-SGD before any data is drawn."""
    n_unseen = _check_unseen(unseen, n_subjects)
    n_val = _count_from(val_fraction, n_subjects - n_unseen)
    return n_unseen, n_val, n_subjects - n_unseen - n_val


def _check_learner_weights(learner_weights: Sequence[float] | None, learners: int) -> np.ndarray:
    """Relative learner sizes as an array (equal sizes when None)."""
    if learner_weights is None:
        return np.ones(learners)
    try:
        weights = np.asarray(learner_weights, dtype=float)
    except (TypeError, ValueError):
        raise FedsimError(
            f"learner_weights={learner_weights!r} is not a list of numbers; give one weight per learner"
        ) from None
    if weights.shape != (learners,):
        raise FedsimError(
            f"learner_weights has {weights.size} entries but learners={learners}; give one weight per learner"
        )
    if not (np.isfinite(weights) & (weights > 0)).all():
        raise FedsimError(
            f"learner_weights={list(learner_weights)!r} has a non-positive or non-finite entry; "
            "every learner needs a weight > 0"
        )
    return weights


def _check_age_bin_weights(age_bin_weights: Sequence[Sequence[float]], learners: int, n_bins: int) -> np.ndarray:
    """The non-IID histogram matrix as a ``learners x n_bins`` array of non-negative floats."""
    try:
        weights = np.asarray(age_bin_weights, dtype=float)
    except (TypeError, ValueError) as err:
        raise FedsimError(
            f"age_bin_weights is not a rectangular table of numbers ({err}); give {learners} rows of {n_bins} weights"
        ) from None
    if weights.shape != (learners, n_bins):
        raise FedsimError(
            f"age_bin_weights has shape {weights.shape} but learners={learners} and n_bins={n_bins}; "
            f"give {learners} rows of {n_bins} weights"
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise FedsimError("age_bin_weights has a negative or non-finite entry; use counts or weights >= 0")
    empty = np.flatnonzero(weights.sum(axis=1) == 0)
    if empty.size:
        raise FedsimError(
            f"age_bin_weights row {empty[0] + 1} ({learner_label(empty[0] + 1)}) sums to 0; "
            "give every learner at least one positive weight"
        )
    return weights


def assign_groups(
    ages: np.ndarray,
    *,
    learners: int,
    unseen: float | int,
    n_bins: int = 20,
    learner_weights: Sequence[float] | None = None,
    age_bin_weights: Sequence[Sequence[float]] | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    by: str = "paper",
    alpha: float | None = None,
    sites: Sequence[str] | None = None,
) -> np.ndarray:
    """Assign every subject to one group: a learner, the unseen set, or train/val.

    Subjects are binned with :func:`age_bins` over the whole cohort's age range, so the bins are
    the same for the unseen set and every learner.

    1. Unseen hold-out, stratified by age bin: ``unseen`` subjects (a fraction is rounded up, as
       scikit-learn's ``train_test_split`` does) are apportioned over the bins by largest
       remainder, so the unseen set has the cohort's age histogram and an exact size.
    2. ``learners == 0`` (centralized): the remaining pool is split into ``"train"`` and
       ``"val"`` the same way, with ``val_fraction`` of the pool (rounded up) in ``"val"``.
    3. ``learners == K >= 1`` (federated): every pool subject goes to one of ``"L1"``..``"LK"``.
       Learner sizes are the pool size apportioned in proportion to ``learner_weights`` (IID)
       or to the row sums of ``age_bin_weights`` (non-IID), by largest remainder, so they are
       the weights themselves whenever the weights sum to the pool size.

       * IID (``age_bin_weights`` None): each learner gets the pool's age histogram; each
         learner's count in each bin is the floor or ceiling of its proportional share.
       * Non-IID: the per-learner histograms are fitted to the learner sizes and the pool's bin
         counts by iterative proportional fitting, then rounded keeping both exact, so weights
         that already match the pool (the paper's tables) are reproduced count for count.
         A bin the pool has but no learner's weights cover (a cohort with ages the histograms
         never saw) is seeded with every learner's size instead, i.e. shared in proportion to
         learner size as far as the sizes allow. If the cohort's ages make the sizes
         unreachable within the weights' non-zero bins, the fewest possible subjects are placed
         in bins their learner's weights exclude, so that nobody is dropped.

       * ``by = "dirichlet"``: each bin's pool subjects are shared in proportions drawn from
         Dirichlet(``alpha``) (:mod:`fedsim.data.partitioners`); ``by = "site"``: every pool
         subject goes to its site's learner (``sites``, sorted: the first site is ``L1``).

    Within a bin, subjects are shuffled with ``np.random.default_rng(seed)`` and handed out in
    group order (unseen, then L1..LK or val, train), so the same inputs and seed always give the
    same labels.

    Parameters
    ----------
    ages
        Age in years per subject.
    learners
        Number of federated learners, or 0 for centralized training.
    unseen
        Fraction in (0, 1) of all subjects, or a whole number >= 1 of subjects, to hold out.
    n_bins
        Number of equal-width age bins used for stratification (the paper uses 20).
    learner_weights
        Relative learner sizes for IID environments; None means equal sizes.
    age_bin_weights
        ``learners x n_bins`` non-negative relative weights (the paper's per-learner histograms)
        for non-IID environments; ``learner_weights`` must then be None.
    val_fraction
        Centralized only: fraction in [0, 1) of the pool used for validation.
    seed
        Seed of the generator that picks which subject of a bin goes where.

    Returns
    -------
    np.ndarray
        One ``str`` label per subject: ``"L1"``..``"LK"`` or ``"train"``/``"val"``, and ``"unseen"``.

    Raises
    ------
    FedsimError
        On NaN ages, a bad ``unseen``/``val_fraction``/``learners``/weights, or a cohort too
        small to give every learner at least one subject.
    """
    ages = np.asarray(ages, dtype=float)
    bins = age_bins(ages, n_bins)
    if isinstance(learners, bool) or not isinstance(learners, Integral) or learners < 0:
        raise FedsimError(f"learners={learners!r} is not a whole number >= 0; use 0 for centralized or e.g. 8")
    if not 0 <= val_fraction < 1:
        raise FedsimError(f"val_fraction={val_fraction!r} is outside [0, 1); use e.g. 0.1, or 0 for no validation set")
    if learners > 0 and val_fraction > 0:
        raise FedsimError(
            f"val_fraction={val_fraction!r} applies only to centralized training (learners=0); "
            "set it to 0 for a federated environment"
        )
    if age_bin_weights is not None and learner_weights is not None:
        raise FedsimError(
            "learner_weights was given together with age_bin_weights, whose row sums set the learner sizes; "
            "drop learner_weights"
        )
    if learners == 0 and (learner_weights is not None or age_bin_weights is not None):
        raise FedsimError(
            "learner_weights/age_bin_weights apply only to federated environments (learners >= 1); "
            "drop them for centralized training (learners=0)"
        )
    n_unseen, n_val, _ = centralized_sizes(ages.size, unseen, val_fraction)  # n_val: 0 for a federation (checked)

    bin_counts = np.bincount(bins, minlength=n_bins + 1)[1:]
    unseen_counts = apportion(n_unseen, bin_counts)
    pool_counts = bin_counts - unseen_counts
    n_pool = int(pool_counts.sum())

    if learners == 0:
        if n_val >= n_pool:
            raise FedsimError(
                f"val_fraction={val_fraction!r} puts all {n_pool} pool subjects in validation and leaves none "
                "for training; use a smaller val_fraction"
            )
        names = [VAL, TRAIN]
        counts = np.vstack([apportion(n_val, pool_counts), np.zeros(n_bins, dtype=int)])
        counts[1] = pool_counts - counts[0]
    elif by == "site":
        site_names, site_of = site_learners(sites, learners)
        names = [learner_label(k + 1) for k in range(learners)]
        counts = None
    elif by == "dirichlet":
        names = [learner_label(k + 1) for k in range(learners)]
        counts = dirichlet_counts(pool_counts, learners, alpha, seed)
        empty = np.flatnonzero(counts.sum(axis=1) == 0)
        if empty.size:
            raise FedsimError(f"learner {learner_label(empty[0] + 1)} would get 0 of the {n_pool} training subjects "
                              f"with alpha = {alpha:g}; use a larger alpha, fewer learners or another seed")
    else:
        if age_bin_weights is None:
            matrix = None
            size_weights = _check_learner_weights(learner_weights, learners)
        else:
            matrix = _check_age_bin_weights(age_bin_weights, learners, n_bins)
            size_weights = matrix.sum(axis=1)
        if n_pool < learners:
            raise FedsimError(
                f"cannot split {n_pool} training subjects among {learners} learners; "
                "use fewer learners or a larger cohort"
            )
        sizes = apportion(n_pool, size_weights)
        empty = np.flatnonzero(sizes == 0)
        if empty.size:
            raise FedsimError(
                f"learner {learner_label(empty[0] + 1)} would get 0 of the {n_pool} training subjects; "
                "use fewer learners, less skewed weights or a larger cohort"
            )
        names = [learner_label(k + 1) for k in range(learners)]
        counts = learner_bin_counts(pool_counts, sizes, matrix)

    labels = np.empty(ages.size, dtype=object)
    rng = np.random.default_rng(seed)
    for b in range(n_bins):
        members = rng.permutation(np.flatnonzero(bins == b + 1))
        if counts is None:  # by site: the unseen draw is the same; the rest go to their site
            labels[members[: unseen_counts[b]]] = UNSEEN
            rest = members[unseen_counts[b]:]
            labels[rest] = [names[k] for k in site_of[rest]]
            continue
        ends = np.cumsum(np.concatenate([[unseen_counts[b]], counts[:, b]]))
        labels[members[: ends[0]]] = UNSEEN
        for name, start, stop in zip(names, ends[:-1], ends[1:]):
            labels[members[start:stop]] = name
    if by == "site":
        held = {names[k] for k in site_of[labels != UNSEEN]}
        missing = [f"{names[k]} (site {site_names[k]!r})" for k in range(learners) if names[k] not in held]
        if missing:
            raise FedsimError(f"learner {missing[0]} has no training subjects once the unseen set is held out; "
                              "give it more scans or a smaller unseen_fraction")
    return labels.astype(str)


def learner_groups(groups: Iterable[str]) -> list[str]:
    """The learner groups (``L1``…``LK``) among ``groups``, once each, by number (L10 after L9)."""
    return sorted({g for g in groups if g.startswith("L") and g[1:].isdigit()}, key=lambda g: int(g[1:]))
