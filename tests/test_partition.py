"""Tests for fedsim.data.partition: the paper's tables exactly at full size, their shape at any size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsim.config import tomllib
from fedsim.data.partition import age_bins, assign_groups, centralized_sizes
from fedsim.data.partition_table import partition_table, read_partitions, write_partitions
from fedsim.plots import plot_partitions
from fedsim.errors import FedsimError

ENVIRONMENTS = Path(__file__).resolve().parents[1] / "environments"
PAPER_RANGE = (44.58, 80.67)  # youngest and oldest UK Biobank subject of the paper's split (notes §5)
PAPER_UNSEEN = 2090


def partition_config(env: str) -> dict:
    with open(ENVIRONMENTS / f"{env}.toml", "rb") as fh:
        return tomllib.load(fh)["partition"]


def pooled_histogram() -> np.ndarray:
    """The paper's 8356 training subjects per age bin (column sums of any non-IID table)."""
    return np.asarray(partition_config("skewed-noniid")["age_bin_weights"]).sum(axis=0)


def stratified_share(total: int, counts: np.ndarray) -> np.ndarray:
    """Largest-remainder apportionment, written out independently of the module under test."""
    quotas = total * counts / counts.sum()
    share = np.floor(quotas).astype(int)
    order = np.argsort(-(quotas - share), kind="stable")
    share[order[: total - share.sum()]] += 1
    return share


def ages_with_histogram(counts: np.ndarray, age_range: tuple[float, float]) -> np.ndarray:
    """Ages whose equal-width histogram over ``age_range`` is ``counts``, with both ends pinned."""
    low, high = age_range
    width = (high - low) / counts.size
    ages = np.concatenate([low + width * (b + np.linspace(0.1, 0.9, n)) for b, n in enumerate(counts)])
    ages[0], ages[-1] = low, high  # bin 1 and bin 20 are non-empty in the paper's cohort
    return ages


def paper_cohort() -> np.ndarray:
    """8356 + 2090 ages such that the stratified hold-out of 2090 leaves exactly the paper's pool."""
    pool = pooled_histogram()
    return ages_with_histogram(pool + stratified_share(PAPER_UNSEEN, pool), PAPER_RANGE)


def sampled_cohort(n: int, seed: int = 123) -> np.ndarray:
    """``n`` ages drawn from the paper's pooled histogram, uniform inside bins, range pinned."""
    rng = np.random.default_rng(seed)
    pool = pooled_histogram()
    edges = np.linspace(*PAPER_RANGE, pool.size + 1)
    b = rng.choice(pool.size, size=n, p=pool / pool.sum())
    ages = rng.uniform(edges[b], edges[b + 1])
    ages[:2] = PAPER_RANGE
    return ages


def bin_table(ages: np.ndarray, groups: np.ndarray, names: list[str], n_bins: int = 20) -> np.ndarray:
    bins = age_bins(ages, n_bins)
    return np.array([np.bincount(bins[groups == g], minlength=n_bins + 1)[1:] for g in names])


def learner_names(k: int) -> list[str]:
    return [f"L{i}" for i in range(1, k + 1)]


def federated_groups(env: str, ages: np.ndarray, seed: int = 0) -> np.ndarray:
    cfg = partition_config(env)
    return assign_groups(
        ages,
        learners=cfg["learners"],
        unseen=cfg["unseen_fraction"],
        n_bins=cfg["age_bins"],
        learner_weights=cfg.get("learner_weights"),
        age_bin_weights=cfg.get("age_bin_weights"),
        seed=seed,
    )


# --- age_bins ---------------------------------------------------------------------------------


def test_age_bins_equal_width_with_max_in_last_bin():
    ages = np.array([40.0, 44.9, 45.0, 59.99, 60.0])
    assert age_bins(ages, 4).tolist() == [1, 1, 2, 4, 4]
    assert age_bins(ages, 2, age_range=(40.0, 80.0)).tolist() == [1, 1, 1, 1, 2]
    assert age_bins(np.array([50.0, 50.0]), 20).tolist() == [1, 1]


@pytest.mark.parametrize(
    ("ages", "kwargs", "match"),
    [
        (np.array([50.0, np.nan]), {}, "ages has 1 missing"),
        (np.array([50.0, 60.0]), {"age_range": (55.0, 80.0)}, "does not contain the ages"),
        (np.array([50.0, 60.0]), {"age_range": (80.0, 55.0)}, "is empty"),
    ],
)
def test_age_bins_errors(ages, kwargs, match):
    with pytest.raises(FedsimError, match=match):
        age_bins(ages, 20, **kwargs)


# --- exact reproduction of the paper's tables ---------------------------------------------------


def test_paper_cohort_hold_out_leaves_the_paper_pool():
    ages = paper_cohort()
    assert ages.size == 8356 + PAPER_UNSEEN
    groups = federated_groups("skewed-noniid", ages)
    # unseen_fraction = 0.2 of 10446 rounds up to 2090, as scikit-learn's train_test_split does
    assert (groups == "unseen").sum() == PAPER_UNSEEN
    pool_hist = np.bincount(age_bins(ages, 20)[groups != "unseen"], minlength=21)[1:]
    assert pool_hist.tolist() == pooled_histogram().tolist()


@pytest.mark.parametrize("env", ["skewed-noniid", "uniform-noniid"])
def test_noniid_reproduces_paper_per_learner_per_bin_counts(env):
    ages = paper_cohort()
    groups = federated_groups(env, ages)
    expected = np.asarray(partition_config(env)["age_bin_weights"])
    assert bin_table(ages, groups, learner_names(8)).tolist() == expected.tolist()


@pytest.mark.parametrize("env", ["uniform-iid", "skewed-iid"])
def test_iid_reproduces_paper_learner_sizes(env):
    ages = paper_cohort()
    groups = federated_groups(env, ages)
    weights = partition_config(env)["learner_weights"]
    sizes = [(groups == g).sum() for g in learner_names(8)]
    assert sizes == weights
    # every learner has the pool's histogram up to rounding: each cell is floor or ceil of its share
    table = bin_table(ages, groups, learner_names(8))
    share = np.outer(weights, pooled_histogram()) / sum(weights)
    assert ((table >= np.floor(share)) & (table <= np.ceil(share))).all()


# --- shape at a small size ----------------------------------------------------------------------


def test_skewed_noniid_shape_at_1000_subjects():
    ages = sampled_cohort(1000)
    groups = federated_groups("skewed-noniid", ages)
    weights = np.asarray(partition_config("skewed-noniid")["age_bin_weights"]).sum(axis=1)
    names = learner_names(8)

    # Guarantee: 200 unseen (ceil(0.2 * 1000)), the 800 others all placed, and each learner's
    # size is the floor or ceiling of its proportional share of 800.
    assert (groups == "unseen").sum() == 200
    assert set(groups) == set(names) | {"unseen"}
    sizes = np.array([(groups == g).sum() for g in names])
    assert sizes.sum() == 800
    assert (np.abs(sizes - 800 * weights / weights.sum()) < 1).all()

    means = {g: ages[groups == g].mean() for g in names}
    assert means["L5"] - means["L8"] > 10  # paper: 70.8 vs 51.6
    assert means["L1"] > means["L4"]  # paper: 66.5 vs 53.5


def test_unseen_is_a_stratified_disjoint_hold_out():
    ages = sampled_cohort(1000)
    groups = federated_groups("skewed-noniid", ages)
    unseen = groups == "unseen"
    # labels are one per subject, so disjointness and coverage are about the label set
    assert groups.shape == ages.shape and unseen.sum() == 200
    bins = age_bins(ages, 20)
    cohort_hist = np.bincount(bins, minlength=21)[1:]
    unseen_hist = np.bincount(bins[unseen], minlength=21)[1:]
    assert (np.abs(unseen_hist - 200 * cohort_hist / 1000) < 1).all()


@pytest.mark.parametrize("env", ["uniform-iid", "skewed-iid"])
def test_iid_learners_share_the_age_distribution_at_1000_subjects(env):
    ages = sampled_cohort(1000)
    groups = federated_groups(env, ages)
    names = learner_names(8)
    means = [ages[groups == g].mean() for g in names]
    assert max(means) - min(means) < 1.5
    pool_hist = np.bincount(age_bins(ages, 20)[groups != "unseen"], minlength=21)[1:]
    sizes = np.array([(groups == g).sum() for g in names])
    share = np.outer(sizes, pool_hist) / sizes.sum()
    table = bin_table(ages, groups, names)
    assert ((table >= np.floor(share)) & (table <= np.ceil(share))).all()


def test_bins_no_learner_covers_are_shared_by_size():
    ages = np.concatenate([np.linspace(40, 49, 40), np.linspace(70, 79, 60)])  # bins 1-5 and 16-20 of 20
    weights = np.zeros((2, 20))
    weights[:, :5] = [[2], [1]]  # both learners young only (sizes 2:1); nobody covers bins 16-20
    groups = assign_groups(ages, learners=2, unseen=10, age_bin_weights=weights)
    assert [(groups == g).sum() for g in ["L1", "L2", "unseen"]] == [60, 30, 10]  # all 90 placed
    old_pool = ((ages >= 70) & (groups != "unseen")).sum()
    assert abs(((ages >= 70) & (groups == "L1")).sum() - old_pool * 2 / 3) < 1  # old ones shared 2:1


def test_exclusions_are_broken_only_as_far_as_the_cohort_forces():
    ages = np.concatenate([np.linspace(40, 49, 40), np.linspace(70, 79, 60)])
    weights = np.zeros((2, 20))
    weights[0, :5] = 2  # L1: young only, 40% of the pool
    weights[1, 15:] = 3  # L2: old only, 60% of the pool
    groups = assign_groups(ages, learners=2, unseen=10, age_bin_weights=weights)
    young_pool = ((ages < 50) & (groups != "unseen")).sum()  # 35: the stratified hold-out took 5 young
    assert (groups == "L1").sum() == 36
    assert ((ages >= 70) & (groups == "L1")).sum() == 36 - young_pool
    assert not ((ages < 50) & (groups == "L2")).any()


def test_histograms_that_cannot_hold_the_cohort_break_exclusions_minimally():
    # a cohort of old subjects plus one young outlier: skewed-noniid L8 (ages up to bin 13) still
    # gets its share, from the few young-enough subjects first
    ages = np.concatenate([[44.58], np.full(499, 79.0), [80.67]])
    groups = federated_groups("skewed-noniid", ages)
    weights = np.asarray(partition_config("skewed-noniid")["age_bin_weights"]).sum(axis=1)
    sizes = np.array([(groups == g).sum() for g in learner_names(8)])
    assert sizes.sum() == 400 and (np.abs(sizes - 400 * weights / weights.sum()) < 1).all()


# --- determinism, centralized -------------------------------------------------------------------


def test_same_seed_same_labels_other_seed_other_labels():
    ages = sampled_cohort(1000)
    first = federated_groups("skewed-noniid", ages, seed=7)
    again = federated_groups("skewed-noniid", ages, seed=7)
    other = federated_groups("skewed-noniid", ages, seed=8)
    assert (first == again).all()
    assert (first != other).any()
    # the seed changes who goes where, not how many of each bin
    assert (bin_table(ages, first, learner_names(8)) == bin_table(ages, other, learner_names(8))).all()


def test_uses_its_own_generator_not_global_state():
    ages = sampled_cohort(300)
    np.random.seed(1)
    first = assign_groups(ages, learners=3, unseen=0.25, seed=5)
    np.random.seed(2)
    assert (assign_groups(ages, learners=3, unseen=0.25, seed=5) == first).all()


def test_centralized_train_val_unseen():
    cfg = partition_config("centralized")
    ages = sampled_cohort(1000)
    groups = assign_groups(
        ages, learners=cfg["learners"], unseen=cfg["unseen_fraction"], n_bins=cfg["age_bins"],
        val_fraction=cfg["val_fraction"],
    )
    assert set(groups) == {"train", "val", "unseen"}
    assert (groups == "unseen").sum() == 400
    assert (groups == "val").sum() == 60  # ceil(0.1 * 600)
    assert (groups == "train").sum() == 540
    for n in (1000, 4000, 37):  # the counts before any draw are the draw's
        drawn = assign_groups(sampled_cohort(n), learners=0, unseen=cfg["unseen_fraction"], n_bins=cfg["age_bins"],
                              val_fraction=cfg["val_fraction"])
        assert centralized_sizes(n, cfg["unseen_fraction"], cfg["val_fraction"]) == tuple(
            int((drawn == g).sum()) for g in ("unseen", "val", "train"))
    no_val = assign_groups(ages, learners=0, unseen=0.4)
    assert set(no_val) == {"train", "unseen"}


def test_unseen_as_count_and_tiny_environment():
    cfg = partition_config("tiny")
    ages = sampled_cohort(48)
    groups = assign_groups(ages, learners=3, unseen=12, learner_weights=cfg["learner_weights"])
    assert [(groups == g).sum() for g in ["L1", "L2", "L3", "unseen"]] == [18, 12, 6, 12]
    assert (assign_groups(ages, learners=3, unseen=12.0, learner_weights=cfg["learner_weights"]) == groups).all()
    fraction = assign_groups(ages, learners=3, unseen=cfg["unseen_fraction"], learner_weights=cfg["learner_weights"])
    assert (fraction == "unseen").sum() == 12  # 0.25 * 48


# --- errors -------------------------------------------------------------------------------------

SMALL = np.linspace(45, 80, 13)
MATRIX = np.ones((2, 20))


@pytest.mark.parametrize(
    ("ages", "kwargs", "match"),
    [
        (SMALL, {"learners": 8, "unseen": 8}, "cannot split 5 training subjects among 8 learners"),
        (SMALL, {"learners": 2, "unseen": 3, "learner_weights": [1, 2, 3]}, "learner_weights has 3 entries"),
        (SMALL, {"learners": 2, "unseen": 3, "learner_weights": [1, 0]}, "non-positive"),
        (SMALL, {"learners": 2, "unseen": 3, "age_bin_weights": np.ones((2, 19))}, r"shape \(2, 19\)"),
        (SMALL, {"learners": 2, "unseen": 3, "age_bin_weights": -MATRIX}, "negative"),
        (SMALL, {"learners": 2, "unseen": 3, "age_bin_weights": [[0] * 20, [1] * 20]}, "row 1 \\(L1\\) sums to 0"),
        (SMALL, {"learners": 2, "unseen": 3, "age_bin_weights": MATRIX, "learner_weights": [1, 1]},
         "drop learner_weights"),
        (SMALL, {"learners": 2, "unseen": 1.5}, "neither a fraction"),
        (SMALL, {"learners": 2, "unseen": 0}, "at least 1 subject"),
        (SMALL, {"learners": 2, "unseen": 13}, "leaves none for training"),
        (SMALL, {"learners": 2, "unseen": 0.99}, "leaves none for training"),
        (np.array([50.0, np.nan, 60.0]), {"learners": 1, "unseen": 1}, "missing or non-finite"),
        (SMALL, {"learners": 0, "unseen": 3, "val_fraction": 1.0}, r"outside \[0, 1\)"),
        (SMALL, {"learners": 0, "unseen": 11, "val_fraction": 0.6}, "leaves none"),
        (SMALL, {"learners": 2, "unseen": 3, "val_fraction": 0.1}, "only to centralized"),
        (SMALL, {"learners": -1, "unseen": 3}, "learners=-1"),
        (SMALL, {"learners": 0, "unseen": 3, "learner_weights": [1]}, "only to federated"),
        (SMALL, {"learners": 2, "unseen": 3, "n_bins": 0}, "n_bins=0"),
        (SMALL, {"learners": 2, "unseen": 3, "learner_weights": ["a", "b"]}, "not a list of numbers"),
        (SMALL, {"learners": 3, "unseen": 3, "learner_weights": [100, 100, 1]}, "learner L3 would get 0"),
    ],
)
def test_errors_name_the_parameter(ages, kwargs, match):
    with pytest.raises(FedsimError, match=match):
        assign_groups(ages, **kwargs)


# --- table, CSV, plot ---------------------------------------------------------------------------


def test_partition_table_round_trips_through_csv(tmp_path):
    ages = sampled_cohort(60)
    groups = assign_groups(ages, learners=2, unseen=0.25)
    ids = [f"sub-{i:03d}" for i in range(60)]
    df = partition_table(ids, ages, groups, 20)
    assert list(df.columns) == ["subject_id", "age", "age_bin", "group"]
    path = write_partitions(df, tmp_path / "run" / "partitions.csv")
    back = read_partitions(path)
    pd.testing.assert_frame_equal(back, df)


def test_partition_table_rejects_mismatched_or_duplicate_ids():
    with pytest.raises(FedsimError, match="2 subject_ids, 3 ages"):
        partition_table(["a", "b"], np.array([50.0, 60.0, 70.0]), np.array(["L1", "L1", "unseen"]), 20)
    with pytest.raises(FedsimError, match="'a' appears more than once"):
        partition_table(["a", "a"], np.array([50.0, 60.0]), np.array(["L1", "unseen"]), 20)


def test_read_partitions_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FedsimError, match="nope.csv does not exist"):
        read_partitions(missing)
    bad = tmp_path / "partitions.csv"
    bad.write_text("subject_id,age,group\ns1,50,L1\n")
    with pytest.raises(FedsimError, match="partitions.csv lacks column\\(s\\) age_bin"):
        read_partitions(bad)
    bad.write_text("subject_id,age,age_bin,group\ns1,old,3,L1\n")
    with pytest.raises(FedsimError, match="row 2 has age='old'"):
        read_partitions(bad)


def test_plot_partitions_writes_png(tmp_path):
    ages = sampled_cohort(200)
    groups = federated_groups("skewed-noniid", ages)
    df = partition_table([f"s{i}" for i in range(200)], ages, groups, 20)
    out = tmp_path / "partitions.png"
    plot_partitions(df, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_figures_of_many_learners_summarise_them(tmp_path):
    from matplotlib.image import imread

    from fedsim.plots import plot_learning_curve

    ages = np.random.default_rng(0).uniform(45, 80, 500)
    labels = assign_groups(ages, learners=200, unseen=0.2, n_bins=10, seed=0)
    plot_partitions(partition_table([f"s{i}" for i in range(500)], ages, labels, 10), tmp_path / "parts.png")
    metrics = [{"round": r, "unseen_mae": 6.0 - r, **{f"L{k}_train_mae": 5.0 + k / 200 for k in range(1, 201)}}
               for r in range(3)]
    plot_learning_curve(metrics, tmp_path / "curve.png", xlabel="round")
    assert imread(tmp_path / "parts.png").shape[0] <= 600  # one heat map, not 200 panels
    assert imread(tmp_path / "curve.png").shape[0] <= 400
