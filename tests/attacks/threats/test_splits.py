"""Attack splits: balanced, disjoint, scaled like the paper, and age-matched on request."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attacks.threats.splits import LEARNER_TRAIN_CAP, centralized_splits, learner_splits
from fedsim.data.partition import assign_groups
from fedsim.data.partition_table import partition_table
from fedsim.errors import FedsimError


def _partitions(n: int, **kwargs) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ages = rng.normal(62.6, 7.4, n).clip(45, 80)
    groups = assign_groups(ages, n_bins=20, seed=0, **kwargs)
    return partition_table([f"s{i}" for i in range(n)], ages, groups, 20)


def _check_disjoint_and_balanced(split, members: set[str], nonmembers: set[str]) -> None:
    parts = [split.train_members, split.train_nonmembers, split.test_members, split.test_nonmembers]
    flat = np.concatenate(parts)
    assert len(flat) == len(set(flat)), "a subject appears twice in one split"
    assert len(split.train_members) == len(split.train_nonmembers) > 0
    assert len(split.test_members) == len(split.test_nonmembers) > 0
    assert set(split.train_members) | set(split.test_members) <= members
    assert set(split.train_nonmembers) | set(split.test_nonmembers) <= nonmembers
    ids, y = split.train()
    assert y.tolist() == [1] * len(split.train_members) + [0] * len(split.train_nonmembers)


def test_centralized_keeps_the_paper_ratio_when_scaled_down():
    parts = _partitions(1000, learners=0, unseen=0.4, val_fraction=0.1)
    members = set(parts.loc[parts.group == "train", "subject_id"])
    unseen = set(parts.loc[parts.group == "unseen", "subject_id"])
    splits = centralized_splits(parts, repeats=3, seed=1)
    assert len(splits) == 3
    for s in splits:
        _check_disjoint_and_balanced(s, members, unseen)
        assert len(s.train_members) + len(s.test_members) == 400  # limited by the 400 unseen
        assert len(s.train_members) == round(400 * 1500 / 2194)
    assert not np.array_equal(splits[0].train_members, splits[1].train_members)  # fresh draws
    again = centralized_splits(parts, repeats=3, seed=1)
    assert all(np.array_equal(a.test_nonmembers, b.test_nonmembers) for a, b in zip(splits, again))


def test_learner_attack_uses_own_subjects_and_fresh_unseen_for_the_victim():
    parts = _partitions(3000, learners=3, unseen=0.3, learner_weights=[3, 2, 1])
    unseen = set(parts.loc[parts.group == "unseen", "subject_id"])
    l1 = set(parts.loc[parts.group == "L1", "subject_id"])
    l3 = set(parts.loc[parts.group == "L3", "subject_id"])
    (s,) = learner_splits(parts, "L1", "L3")
    _check_disjoint_and_balanced(s, l1 | l3, unseen)
    assert set(s.train_members) <= l1 and set(s.test_members) <= l3
    assert len(s.train_members) == min(len(l1), LEARNER_TRAIN_CAP, len(unseen) // 2)
    assert len(s.test_members) == min(len(l3), len(unseen) - len(unseen) // 2)


def test_age_matched_nonmembers_share_the_members_age_bins():
    parts = _partitions(
        2000, learners=2, unseen=0.3,
        age_bin_weights=[[0] * 10 + [1] * 10, [1] * 10 + [0] * 10],  # L1 old, L2 young
    )
    plain = learner_splits(parts, "L2", "L1")[0]
    matched = learner_splits(parts, "L2", "L1", age_matched=True)[0]
    age = parts.set_index("subject_id")["age"]
    bins = parts.set_index("subject_id")["age_bin"]
    gap = lambda m, n: abs(age[m].mean() - age[n].mean())  # noqa: E731
    assert gap(plain.test_members, plain.test_nonmembers) > 5  # old victims vs all-age unseen
    assert gap(matched.test_members, matched.test_nonmembers) < 0.6
    assert sorted(bins[matched.test_members]) == sorted(bins[matched.test_nonmembers])
    assert sorted(bins[matched.train_members]) == sorted(bins[matched.train_nonmembers])


def test_errors_are_one_sentence():
    parts = _partitions(200, learners=2, unseen=0.1)
    with pytest.raises(FedsimError, match="attacker and victim must differ"):
        learner_splits(parts, "L1", "L1")
    with pytest.raises(FedsimError, match="no subjects in group 'L9'; groups in this run: L1, L2, unseen"):
        learner_splits(parts, "L1", "L9")
    tiny = _partitions(40, learners=2, unseen=0.1)
    with pytest.raises(FedsimError, match="only .* pairs available; an attack needs at least 8"):
        learner_splits(tiny, "L1", "L2")


def test_pairs_too_small_to_attack_are_skipped_with_a_warning_not_an_error():
    from attacks.threats.seats import SkippedPairsWarning, plan

    parts = _partitions(400, learners=3, unseen=0.3, learner_weights=[30, 30, 1])  # L3: a handful of subjects
    with pytest.warns(SkippedPairsWarning, match="L3"):
        triples = list(plan("learner", parts, repeats=1, seed=0, age_matched=False))
    pairs = {(a, v) for a, v, _ in triples}
    assert pairs == {("L1", "L2"), ("L2", "L1")}
    tiny = _partitions(60, learners=2, unseen=0.2)
    with pytest.raises(FedsimError, match="no attacker/victim pair can be attacked"):
        list(plan("learner", tiny, repeats=1, seed=0, age_matched=False))
