"""Who the attacker trains on and whom it attacks: balanced member / non-member subject sets.

The two threat models of Gupta et al. 2021 differ only in where the subjects come from:

* centralized: the adversary knows some training subjects (members) and some unseen ones;
  attack-train 1500 + 1500, attack-test the remaining 694 + 694 in the paper, scaled down here in
  the same ratio when the cohort is smaller, repeated with fresh draws;
* malicious learner A: trains on its own subjects (members) vs unseen subjects (≤ 1000 each),
  then attacks learner B's subjects vs *other* unseen subjects.

In non-IID federations a victim's members differ in age from the unseen pool, so an attack can
learn "old vs young" instead of membership. ``age_matched=True`` draws every non-member from the
same age bin as a member (both for attack-train and attack-test), which removes that shortcut:
the difference between the plain and the matched result is distribution shift, not membership.
Members are always the positive class (``y = 1``); the sets of one split never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from attacks.threats.names import DEFAULT_REPEATS
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

#: The positive class of every attack set, metric and classifier: members of the training set.
MEMBER = 1
NON_MEMBER = 0

# Gupta et al. 2021 §3.2: 1500 + 1500 subjects to train the attack, the remaining 694 + 694 to test it.
PAPER_TRAIN_PER_CLASS, PAPER_TEST_PER_CLASS = 1500, 694
# Malicious learner: at most this many of its own subjects (and as many unseen ones) to train on.
LEARNER_TRAIN_CAP = 1000
MIN_PER_CLASS = 8  # below this an attack's accuracy is noise


@dataclass(frozen=True)
class AttackSplit:
    """Subject ids of one attack: train and test sets, each balanced members vs non-members."""

    train_members: np.ndarray
    train_nonmembers: np.ndarray
    test_members: np.ndarray
    test_nonmembers: np.ndarray

    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """Subject ids and labels (1 = member) of the attack-training set."""
        return _labelled(self.train_members, self.train_nonmembers)

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """Subject ids and labels (1 = member) of the attack-test set."""
        return _labelled(self.test_members, self.test_nonmembers)


def _labelled(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([members, nonmembers])
    y = np.concatenate([np.full(len(members), MEMBER), np.full(len(nonmembers), NON_MEMBER)])
    return ids, y


def _group(partitions: pd.DataFrame, group: str) -> pd.DataFrame:
    rows = partitions[partitions["group"] == group]
    if rows.empty:
        groups = ", ".join(sorted(partitions["group"].unique()))
        raise FedsimError(f"no subjects in group {group!r}; groups in this run: {groups}")
    return rows


def _draw(rows: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    return rows.iloc[rng.permutation(len(rows))[:n]]


def _age_matched(
    members: pd.DataFrame, pool: pd.DataFrame, n: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Up to ``n`` (member, non-member) pairs from the same age bin, drawn at random."""
    chosen_m, chosen_n = [], []
    for age_bin, m_rows in members.groupby("age_bin"):
        p_rows = pool[pool["age_bin"] == age_bin]
        k = min(len(m_rows), len(p_rows))
        chosen_m.append(_draw(m_rows, k, rng))
        chosen_n.append(_draw(p_rows, k, rng))
    m_all, n_all = pd.concat(chosen_m), pd.concat(chosen_n)
    keep = rng.permutation(len(m_all))[:n]  # pairs stay aligned: same positions in both
    return m_all.iloc[keep], n_all.iloc[keep]


def _balanced(
    members: pd.DataFrame, pool: pd.DataFrame, n: int, rng: np.random.Generator, *, age_matched: bool, what: str
) -> tuple[np.ndarray, np.ndarray]:
    if age_matched:
        m, nm = _age_matched(members, pool, n, rng)
    else:
        n = min(n, len(members), len(pool))
        m, nm = _draw(members, n, rng), _draw(pool, n, rng)
    if len(m) < MIN_PER_CLASS:
        raise FedsimError(
            f"{what}: only {len(m)} member/non-member pairs available"
            f"{' in matching age bins' if age_matched else ''}; an attack needs at least {MIN_PER_CLASS}"
        )
    return m["subject_id"].to_numpy(), nm["subject_id"].to_numpy()


@dataclass(frozen=True)
class LabelledSplit:
    """Subject ids and binary labels of one attack's train and test sets, for any label (an attribute:
    1 = the sensitive value); the sets never overlap."""

    train_ids: np.ndarray
    train_labels: np.ndarray
    test_ids: np.ndarray
    test_labels: np.ndarray

    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.train_ids, self.train_labels

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.test_ids, self.test_labels


def labelled(ids: np.ndarray, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` and their labels (``labels``: subject id -> 0/1)."""
    ids = np.asarray(ids)
    return ids, labels.loc[ids].to_numpy(dtype=np.int64)


def attribute_splits(
    partitions: pd.DataFrame, labels: pd.Series, *, repeats: int = DEFAULT_REPEATS, seed: int = 0,
) -> list[tuple[str, str, LabelledSplit]]:
    """Who fits an attribute attack on whom and attacks whom: (attacker, victim, split) triples.

    A federation: learner A fits on its own subjects (at most :data:`LEARNER_TRAIN_CAP`; it knows their
    attribute) and attacks every other learner B's subjects (members of the model) and the unseen ones
    (non-members): the same fit scored on both, so their gap is what training added (Yeom et al. 2018).
    The draws are fixed, so one repeat. A centralized run: the adversary knows a random half of the
    training and of the unseen subjects and attacks the other halves, ``repeats`` fresh draws.
    """
    groups = partitions.set_index("subject_id")["group"]
    unseen = groups.index[groups == "unseen"].to_numpy()
    learners = learner_groups(groups)
    out: list[tuple[str, str, LabelledSplit]] = []
    if not learners:
        members = groups.index[groups == "train"].to_numpy()
        for r in range(repeats):
            rng = np.random.default_rng([seed, r])
            m, u = rng.permutation(members), rng.permutation(unseen)
            train = np.concatenate([m[: len(m) // 2], u[: len(u) // 2]])
            for victim, test in (("members", m[len(m) // 2:]), ("unseen", u[len(u) // 2:])):
                out.append(("adversary", victim, LabelledSplit(*labelled(train, labels), *labelled(test, labels))))
        return out
    rng = np.random.default_rng([seed, 0])
    for attacker in learners:
        own = groups.index[groups == attacker].to_numpy()
        train = rng.permutation(own)[:LEARNER_TRAIN_CAP] if len(own) > LEARNER_TRAIN_CAP else own
        for victim in [*(v for v in learners if v != attacker), "unseen"]:
            test = unseen if victim == "unseen" else groups.index[groups == victim].to_numpy()
            out.append((attacker, victim, LabelledSplit(*labelled(train, labels), *labelled(test, labels))))
    return out


def centralized_splits(
    partitions: pd.DataFrame, *, repeats: int = 5, seed: int = 0, age_matched: bool = False,
    members_group: str = "train",
) -> list[AttackSplit]:
    """``repeats`` independent draws of the centralized attack, the paper's 1500/694 ratio.

    With fewer subjects than the paper's 2194 per class, the per-class count is what the smaller
    of members and unseen allows, divided between train and test as 1500 : 694.
    """
    members, unseen = _group(partitions, members_group), _group(partitions, "unseen")
    paper_total = PAPER_TRAIN_PER_CLASS + PAPER_TEST_PER_CLASS
    splits = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        m_ids, n_ids = _balanced(members, unseen, paper_total, rng, age_matched=age_matched, what="centralized attack")
        k = round(len(m_ids) * PAPER_TRAIN_PER_CLASS / paper_total)
        splits.append(AttackSplit(m_ids[:k], n_ids[:k], m_ids[k:], n_ids[k:]))
    return splits


def learner_splits(
    partitions: pd.DataFrame, attacker: str, victim: str, *, repeats: int = 1, seed: int = 0,
    age_matched: bool = False, train_cap: int = LEARNER_TRAIN_CAP,
) -> list[AttackSplit]:
    """Malicious learner ``attacker`` trains on its own subjects vs unseen ones, attacks ``victim``.

    The unseen pool is halved at random in every repeat: the attacker's non-members come from
    one half and the victim's test non-members from the other, so no non-member is seen twice.
    """
    if attacker == victim:
        raise FedsimError(f"attacker and victim must differ, got {attacker!r} twice")
    own, victims, unseen = _group(partitions, attacker), _group(partitions, victim), _group(partitions, "unseen")
    splits = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        pool_train, pool_test = _unseen_halves(unseen, rng)
        tm, tn = _balanced(own, pool_train, train_cap, rng, age_matched=age_matched, what=f"attacker {attacker}")
        vm, vn = _balanced(victims, pool_test, len(victims), rng, age_matched=age_matched, what=f"victim {victim}")
        splits.append(AttackSplit(tm, tn, vm, vn))
    return splits


def _unseen_halves(unseen: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The unseen pool halved at random: the malicious learner's half and the half its victims' test
    non-members come from (the first draw of a repeat's ``rng``, so every attacker gets the same halves)."""
    shuffled = unseen.iloc[rng.permutation(len(unseen))]
    half = len(shuffled) // 2
    return shuffled.iloc[:half], shuffled.iloc[half:]


def learner_unseen(partitions: pd.DataFrame, *, repeat: int = 0, seed: int = 0) -> np.ndarray:
    """The unseen subjects a malicious learner holds in repeat ``repeat`` of :func:`learner_splits` (plain or
    age-matched: the same half): its attack-train non-members are drawn from them, its victims' test non-members
    never are. What it may train reference models on, beside its own subjects."""
    rng = np.random.default_rng([seed, repeat])
    return _unseen_halves(_group(partitions, "unseen"), rng)[0]["subject_id"].to_numpy()
