"""The malicious learner at full strength: membership from a subject's error over every round it saw.

A learner receives the community model of every round, not only the last. A member's error falls as the
federation fits it; a non-member's falls only as far as the model generalises, so the *trajectory* can tell
them apart where one round cannot: a subject that is hard for every model (a large error at every round)
looks like a non-member to a single-round attack, but its error still fell. Each subject's features are its
absolute error at every round 1..R (one column per round), the drop |e_1| − |e_R|, and the signed error of round
R — everything the single-round ``error`` attack reads, so at equal data the trajectory can only add to it.

The error of each round comes from the content-keyed feature cache (one forward pass per round and subject,
computed once per snapshot and shared with every other attack). The plan is the malicious learner's
(:func:`attacks.threats.seats.plan`): the same attacker training subjects, victims and classifier as the
single-round attack, with the same controls, so its rows (``features`` = "error over rounds 1–R") flow through
:func:`attacks.evaluation.summary.controls_table` beside the single-round ones;
:func:`versus_single_round` pairs the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attacks.engine import run_plan, tasks
from attacks.evaluation.summary import summarise
from attacks.membership.classifiers import DEFAULT_CLASSIFIER
from attacks.membership.trained import ClassifierAttack
from attacks.signals.cache import FeatureCache
from attacks.target import Target, attacked_round, load_snapshot
from attacks.threats.seats import plan
from attacks.threats.splits import DEFAULT_REPEATS
from fedsim.errors import FedsimError

__all__ = ["trajectory_attacks", "trajectory_features", "trajectory_name", "versus_single_round"]

#: The basic feature read off every round's community model.
SIGNAL = "error"
_PREFIX = f"{SIGNAL} over rounds "


def trajectory_name(rounds: Sequence[int]) -> str:
    """What the results' ``features`` column calls the attack on ``rounds`` (its controls keep the name)."""
    return f"{_PREFIX}{rounds[0]}–{rounds[-1]}"


def trajectory_features(target: Target, rounds: Sequence[int], *, cache: FeatureCache | None = None) -> np.ndarray:
    """The (N, R + 2) trajectory of every cohort subject (cohort order) through the community models of
    ``rounds``: |error| at each round, the drop from the first to the last, the signed error of the last."""
    cache = cache or FeatureCache(target)
    by_round = {r: cache.get(load_snapshot(target.run_dir, r), [SIGNAL])[SIGNAL][:, 0] for r in dict.fromkeys(rounds)}
    errors = np.stack([by_round[r] for r in rounds], axis=1).astype(np.float64)
    size = np.abs(errors)
    return np.column_stack([size, size[:, 0] - size[:, -1], errors[:, -1]])


def trajectory_attacks(
    target: Target, *, rnd: int | None = None, classifier: str = DEFAULT_CLASSIFIER, repeats: int = DEFAULT_REPEATS,
    seed: int = 0, controls: bool = True, cache: FeatureCache | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """The malicious learner's attack on the error over rounds 1..``rnd`` (default: the last), one row per
    (attacker, victim, repeat), as :func:`attacks.membership.trained.run_attacks` gives them.

    ``controls`` adds the same attack on the untrained model's trajectory (round 0 as many times over:
    ``control`` = ``round-0``, round 0) and with age-matched non-members (``age-matched``).
    """
    rnd = attacked_round(target, rnd, first=1)
    rounds = [r for r in target.rounds if 1 <= r <= rnd]
    if len(rounds) < 2:
        raise FedsimError(f"the error over rounds needs at least 2 trained rounds; up to round {rnd} the run has "
                          f"{len(rounds)}: attack a later round")
    cache = cache or FeatureCache(target, progress=progress)
    attack = ClassifierAttack(trajectory_name(rounds), SIGNAL, classifier, seed)
    row_of = {sid: i for i, sid in enumerate(target.cohort.subject_ids)}
    # (control, rounds read, round reported, age-matched): the order of run_attacks' rows
    runs = [("none", rounds, rnd, False)]
    if controls:
        runs += [("round-0", [0] * len(rounds), 0, False), ("age-matched", rounds, rnd, True)]
    rows: list[dict[str, Any]] = []
    for control, seen, at, matched in runs:
        X = trajectory_features(target, seen, cache=cache)
        plan_ = tasks(plan("learner", target.partitions, repeats=repeats, seed=seed, age_matched=matched))
        columns = {"threat": "learner", "round": at, "stacked_rounds": ",".join(map(str, seen)),
                   "classifier": classifier, "control": control}
        report = None if progress is None else (lambda done, total: progress("fitting attacks", done, total))
        rows += run_plan(plan_, [attack], lambda _attack, _model, subjects, _task, X=X: X[subjects], row_of=row_of,
                         columns=columns, progress=report)
    return rows


def versus_single_round(results: pd.DataFrame, *, single: str = SIGNAL) -> pd.DataFrame:
    """Per control: the trajectory attack minus the single-round attack ``single`` at the same round on the same
    (attacker, victim, repeat) and classifier — the same attack-train subjects and victims — in accuracy and
    AUC, each with :func:`~attacks.evaluation.summary.summarise`'s bootstrap interval over victims."""
    keys = [k for k in ("seat", "classifier", "control", "round", "attacker", "victim", "repeat") if k in results]
    mine = results[results["features"].astype(str).str.startswith(_PREFIX)]
    paired = mine.merge(results[results["features"] == single], on=keys, suffixes=("", "_single"))
    gain = paired[keys].assign(accuracy=paired["accuracy"] - paired["accuracy_single"],
                               auc=paired["auc"] - paired["auc_single"])
    return summarise(gain, ["control"])
