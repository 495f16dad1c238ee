"""Calibrated membership attacks on a regression model: LiRA and RMIA with reference models.

A trained attack classifier (:mod:`attacks.run`) learns one decision rule for every subject.
The attacks here instead test each subject against models that did and did not train on it
(:mod:`attacks.membership.references`), so a subject whose age is simply hard to predict is not mistaken
for a non-member, and are judged by their TPR at low FPR (Carlini et al. 2022):

* **LiRA** (Carlini et al. 2022, "Membership inference attacks from first principles"): a
  per-subject statistic of each model (signed residual ŷ − y, or log |ŷ − y|); Gaussians fitted to
  the statistics of the reference models that trained on the subject (IN) and of those that did
  not (OUT). *Online*: the log likelihood ratio of the target's statistic, IN vs OUT. *Offline*:
  OUT only, a one-sided test in the direction membership moves the statistic (smaller log-error;
  a residual closer to zero). The variance is fitted per subject or, with few references, pooled
  over subjects (their "fixed variance").
* **RMIA** (Zarifzadeh et al. 2024, "Low-cost high-power membership inference attacks"):
  Pr(x | θ) is the likelihood of the subject's age under the model's prediction (Gaussian for an
  MSE-trained model, Laplace for L1, scale fitted to the model's residuals on the population);
  the ratio Pr(x | θ) / Pr(x), with Pr(x) averaged over all reference models, is compared with the
  same ratio for population subjects z (the known non-members); the score is the fraction of z
  the subject beats by a factor γ.
* **loss**: −|ŷ − y| of the target alone, the uncalibrated baseline these improve on.

Centralized runs: the target is the best-validation snapshot; the attacker knows the subjects of
one centralized split (:func:`attacks.threats.splits.centralized_splits`: members + unseen subjects,
balanced); references train on random halves of all of them. The attack is scored on the
split's attack-test subjects; its attack-train subjects (whose membership the attacker knows)
only set the accuracy threshold and, for RMIA, supply the population z (their non-members).
A round-0 control attacks the untrained model with the same references. Writes
``RUN_DIR/attacks/calibrated.csv`` + ``.json`` (one row per attack and control) and
``calibrated_scores.csv`` (every subject's score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attacks.engine import ScoreAttack, Task, run_plan
from attacks.membership.calibration import (
    DEFAULT_METHODS, DEFAULT_REFERENCES, DEFAULT_STATISTICS, LIKELIHOOD_OF_LOSS, LIKELIHOODS, STATISTICS, Evidence,
    attack_name, check_gamma, choice, parse_methods, resolve_variance, score_attacks,
)
from attacks.membership.references import ReferencePlan, ReferenceSet, ensure_references, population_order, predict_rows
from attacks.target import Target, attacked_round, load_snapshot
from attacks.threats.splits import AttackSplit, centralized_splits
from fedsim import snapshots
from fedsim.data.cache import CohortArray
from fedsim.defenses import release_model
from fedsim.errors import FedsimError

__all__ = ["centralized_population", "run_calibrated"]


def centralized_population(
    partitions: pd.DataFrame, cohort: CohortArray, *, seed: int, where: str = "this run",
) -> tuple[AttackSplit, tuple[str, ...]]:
    """The centralized split the attacker works with, and its subjects (the reference population)."""
    if "train" not in set(partitions["group"]):
        raise FedsimError(
            f"{where} is a federated run; calibrated attacks support centralized runs "
            "(a train group) only so far (a federation's curious controller: python -m attacks.seats)"
        )
    split = centralized_splits(partitions, repeats=1, seed=seed)[0]
    ids = np.concatenate([split.train_members, split.train_nonmembers, split.test_members, split.test_nonmembers])
    return split, population_order(ids, cohort)


def run_calibrated(
    target: Target,
    *,
    references: int = DEFAULT_REFERENCES,
    methods: Sequence[str] = DEFAULT_METHODS,
    statistics: Sequence[str] = DEFAULT_STATISTICS,
    variance: str = "auto",
    likelihood: str = "auto",
    gamma: float = 1.0,
    target_round: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    controls: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], pd.DataFrame, ReferenceSet]:
    """Calibrated attacks on a centralized run: result rows, every subject's scores, the references.

    ``target_round`` defaults to the best-validation epoch, ``epochs`` (of the references) to
    the target's round (epoch k = round k in a centralized run).
    """
    methods = parse_methods(methods, references)
    for s in statistics:
        choice(s, list(STATISTICS), "statistic")
    resolve_variance(variance, references)
    check_gamma(gamma)  # here, not after the references have trained
    if seed < 0:
        raise FedsimError(f"seed must be a non-negative integer, got {seed}")
    config = snapshots.read_config(target.run_dir)
    split, population = centralized_population(target.partitions, target.cohort, seed=seed,
                                               where=repr(str(target.run_dir)))  # refuses federated runs, by name
    if target_round is None:
        if target.best_round is None:
            raise FedsimError(
                f"{str(target.run_dir)!r} has no finished centralized run (its DONE names the best epoch); "
                "give the target round with --round"
            )
        target_round = target.best_round
    attacked_round(target, target_round)
    epochs = target_round if epochs is None else epochs
    if epochs < 1:
        raise FedsimError(f"reference models need at least 1 training epoch, got {epochs} (the target's round)")
    loss = config.get("train", {}).get("loss", "mse")
    likelihood = LIKELIHOOD_OF_LOSS.get(loss, "gaussian") if likelihood == "auto" else likelihood
    choice(likelihood, list(LIKELIHOODS), "likelihood")

    refs = ensure_references(ReferencePlan(config, population, epochs, seed), target.cohort, target.run_dir,
                             references=references, progress=progress)
    rows_of = target.cohort.index_of(list(population))
    age = target.cohort.ages[rows_of].astype(np.float64)
    position = {s: i for i, s in enumerate(population)}
    train_ids, y_train = split.train()
    test_ids, y_test = split.test()
    z = np.array([position[s] for s in split.train_nonmembers])
    member_of = dict(zip(np.concatenate([train_ids, test_ids]), np.concatenate([y_train, y_test])))
    subject_set = np.where(np.isin(population, test_ids), "attack-test", "attack-train")
    member = np.array([int(member_of[s]) for s in population])
    rounds = [("none", target_round)] + ([("round-0", 0)] if controls and target_round != 0 else [])
    rows: list[dict[str, Any]] = []
    scores_long: list[pd.DataFrame] = []
    for control, rnd in rounds:
        # the target's predictions as released ([defense] prediction_noise adds its noise): a black-box attack
        target_pred = predict_rows(release_model(load_snapshot(target.run_dir, rnd).model, config),
                                   target.cohort, rows_of)
        evidence = Evidence(age, target_pred, refs.predictions, refs.keep, z)
        found = score_attacks(evidence, methods, statistics=statistics, variance=variance, likelihood=likelihood,
                              gamma=gamma)
        attacks = [ScoreAttack(attack_name(settings["method"], settings["statistic"]), i)
                   for i, (settings, _) in enumerate(found)]
        results = run_plan([Task("adversary", "centralized", 0, split)], attacks,
                           lambda attack, model, pos, task: found[attack.index][1][pos][:, None], row_of=position)
        for (settings, scores), result in zip(found, results):
            metrics = {k: v for k, v in result.items() if k not in ("attacker", "victim", "repeat", "features", "n_train")}
            rows.append({"control": control, "round": rnd, **settings, "references": len(refs),
                         "reference_epochs": epochs, "n_population": len(population), "n_z": len(z), **metrics})
            scores_long.append(pd.DataFrame({
                "control": control, "round": rnd, "attack": attack_name(settings["method"], settings["statistic"]),
                "subject_id": population, "set": subject_set, "member": member, "score": scores,
            }))
    return rows, pd.concat(scores_long, ignore_index=True), refs
