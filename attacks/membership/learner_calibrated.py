"""The malicious learner's calibrated membership attacks: LiRA and RMIA with references it trains itself.

The malicious learner A holds the community model of every round, its own subjects, the unseen scans it
uses as known non-members (:func:`attacks.threats.splits.learner_unseen`: one half of the unseen pool; its
victims' test non-members come from the other half) and the federation's recipe (``config.toml``). From
that alone it trains reference models and tests every victim's subjects against them, as the curious
controller does with the local models it sees (:mod:`attacks.membership.seats`).

**A reference is the federation replayed on the learner's data.** The target is the community model of
round R: every round, each learner trains ``local_epochs`` from the last community model on its own subjects
and the controller averages the local models weighted by sample count. A reference replays exactly that
with what A holds: a random half H of A's *population* (its own subjects ∪ its unseen half) is dealt into
one shard per learner, sized like the learners (the sample counts of round R's snapshot: FedAvg's weights,
no subject in them), and rounds 1 … R run from the community model of round 0 (the initial model every
learner received), each shard training with the run's local recipe (:func:`fedsim.defenses.local_training`:
optimizer, loss, batch size, learner-side defenses) and the shards averaged by size. So a subject of H is
trained on as a member of the target was — by one learner, every round, with that learner's weight — and a
subject outside H never. A reference costs R local trainings on H, |H| / N of the federation's own training
(N: the subjects all learners hold; |H| is half of A's subjects and unseen half); ``start_round`` = R − 1
replays one round from the community model of R − 1 instead (1 / R of that), which is cheaper but tests only
what round R added: that start already saw every victim's subjects,
as the curious controller's local-model references did. References come in complementary pairs over the
population (:mod:`attacks.membership.references`, which caches them under
``RUN_DIR/attacks/references/<key>/``, the key hashing the run's configuration, the population, the digest
of the start model and this recipe); the ids each trained on are in its ``meta.json``. They predict every
other subject of the cohort too (the victims' subjects and the other unseen half), and train on none of them.

**What this seat can run.** No reference can train on a victim's subject, so every victim subject is OUT
for every reference:

* offline LiRA (Carlini et al. 2022; OUT Gaussians, one-sided test; both statistics): runs;
* RMIA (Zarifzadeh et al. 2024) in its offline form: Pr(x) from the references that did not train on x,
  compared with the learner's own unseen scans as the population z: runs;
* online LiRA, and RMIA with IN references for the scored subject: impossible for a victim's subject (it
  would need models trained on that subject); they exist only for A's own subjects, which are no victim's.

The accuracy threshold of each attack is fitted on A's attack-train subjects scored the same way (their
OUT references: half as many), and the rows carry the TPR and FPR on the victim's subjects at the
threshold fixed at 1 % FPR on A's own non-members (``tpr@0.01_fixed``, ``fpr@0.01_fixed``): whether a
threshold A can set on its own data keeps its FPR on a victim's is measured, not assumed.

Not replayed in a reference: the update clipping of central DP and the controller-side DP noise (the
learner-side defenses — DP-SGD, label noise, model noise on what a learner sends — are); with
``[defense] prediction_noise`` the references' predictions are released ones while the learner reads the
community model's clean ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from attacks.engine import ScoreAttack, Task, run_plan, tasks
from attacks.membership.calibration import (
    LIKELIHOOD_OF_LOSS, STATISTICS, attack_names, lira_offline, regression_statistic, resolve_variance, rmia_scores,
)
from attacks.membership.references import ReferencePlan, ReferenceSet, Trainer, ensure_references, population_order
from attacks.membership.seats import CALIBRATED
from attacks.signals.cache import FeatureCache
from attacks.target import Target, attacked_round, load_snapshot
from attacks.threats.seats import plan
from attacks.threats.splits import learner_unseen
from fedsim import snapshots
from fedsim.config import EnvConfig
from fedsim.data.cache import CohortArray, VolumeDataset
from fedsim.data.partition import learner_groups
from fedsim.defenses import local_training, release_weights
from fedsim.errors import FedsimError
from fedsim.models import build_model
from fedsim.training import train_epochs

__all__ = [
    "LEARNER_METHODS", "LEARNER_STATISTICS", "MIN_REFERENCES", "NOT_FROM_THIS_SEAT", "federated_rounds",
    "learner_calibrated", "learner_population", "learner_references",
]

#: What the malicious learner can run on a victim's subjects (all its references are OUT for them).
LEARNER_METHODS = ("lira-offline", "rmia")
LEARNER_STATISTICS = ("residual", "log-abs")
#: What it cannot run, and why: for the report that lists what each seat did not run.
NOT_FROM_THIS_SEAT = {
    "online LiRA and online RMIA": "they need reference models trained on the victim's subject, and the "
                                   "malicious learner holds none of a victim's scans (offline LiRA and RMIA ran)",
}
#: Offline LiRA fits its OUT Gaussians from 2 references per subject; the learner's own subjects are OUT for
#: half of them.
MIN_REFERENCES = 4
#: Bump when a reference's recipe changes: it is part of the cache key.
RECIPE_VERSION = 1
_SHARD_STREAM = 104729  # SeedSequence stream of the shards' draws (fixed: it names cached references)


def learner_population(partitions: pd.DataFrame, attacker: str, cohort: CohortArray, *, repeat: int = 0,
                       seed: int = 0) -> tuple[str, ...]:
    """The subjects learner ``attacker`` may train references on: its own and its unseen half of ``repeat``
    (cohort order). Never another learner's."""
    own = partitions.loc[partitions["group"] == attacker, "subject_id"].to_numpy()
    if len(own) == 0:
        raise FedsimError(f"learner {attacker!r} holds no subjects in this run")
    return population_order(np.concatenate([own, learner_unseen(partitions, repeat=repeat, seed=seed)]), cohort)


def federated_rounds(cfg: EnvConfig, cohort: CohortArray, rows: np.ndarray, *, start: Mapping[str, torch.Tensor],
                     rounds: int, shares: Sequence[float], seed: int,
                     device: torch.device | str = "cpu") -> tuple[nn.Module, float]:
    """``rounds`` rounds of ``cfg``'s federation simulated on cohort ``rows`` from the weights ``start``: the rows
    are dealt once into one shard per learner, sized by ``shares``; every round each shard trains
    ``local_epochs`` from the current model with the learner's recipe and defenses, and the shards' models are
    averaged by size (FedAvg). Returns the last model (eval mode) and the size-weighted training MAE of its round."""
    if rounds < 1:
        raise FedsimError(f"a simulated federation needs at least 1 round, got {rounds}")
    shuffled = np.random.default_rng([seed, _SHARD_STREAM]).permutation(rows)
    cuts = np.round(np.cumsum(shares)[:-1] / np.sum(shares) * len(rows)).astype(int)
    parts = [p for p in np.split(shuffled, cuts) if len(p)]
    if not parts:
        raise FedsimError("a simulated federation needs at least one subject to train on")
    total = sum(len(p) for p in parts)
    state = {n: v.detach().cpu() for n, v in start.items()}
    for rnd in range(rounds):
        average: dict[str, torch.Tensor] = {}
        mae = 0.0
        for j, part in enumerate(parts):
            local_seed = int(np.random.SeedSequence([seed, _SHARD_STREAM, rnd, j]).generate_state(1)[0])
            local_cfg = dataclasses.replace(cfg, seed=local_seed)  # the defenses' draws are this shard's own
            torch.manual_seed(local_seed)
            model = build_model(cfg.model.name, **cfg.model_kwargs())
            model.load_state_dict(state)
            model.to(device)
            session = local_training(local_cfg, model, VolumeDataset(cohort, part), seed=local_seed)
            shard_mae = train_epochs(session.model, session.loader, session.optimizer, loss=cfg.train.loss,
                                     target_scale=cfg.model.target_scale, epochs=cfg.federation.local_epochs,
                                     device=device, precision=cfg.train.precision)
            sent = {n: v.detach().cpu() for n, v in model.state_dict().items()}
            if cfg.defense is not None and cfg.defense.model_noise > 0:
                sent = release_weights(local_cfg, sent, rnd, j)  # noise on what a learner sends
            weight = len(part) / total
            for name, value in sent.items():
                average[name] = average.get(name, 0.0) + weight * value.to(torch.float64)
            mae += weight * shard_mae
        state = {n: v.to(start[n].dtype) for n, v in average.items()}
    model = build_model(cfg.model.name, **cfg.model_kwargs())
    model.load_state_dict(state)
    return model.to(device).eval(), mae


def _federation_trainer(cohort: CohortArray, start: Mapping[str, torch.Tensor], rounds: int,
                        shares: Sequence[float]) -> Trainer:
    def train(cfg: EnvConfig, rows: np.ndarray, seed: int, device: torch.device | str) -> tuple[nn.Module, float]:
        return federated_rounds(cfg, cohort, rows, start=start, rounds=rounds, shares=shares, seed=seed, device=device)
    return train


def _scored(cohort: CohortArray, population: Sequence[str]) -> tuple[str, ...]:
    """Every subject of the cohort outside ``population``, in cohort order: what references predict, never train on."""
    inside = set(population)
    return tuple(s for s in cohort.subject_ids if s not in inside)


def learner_references(
    target: Target, attacker: str, *, rnd: int, start_round: int = 0, repeat: int = 0, references: int = 8,
    seed: int = 0, progress: Callable[[int, int], None] | None = None,
) -> ReferenceSet:
    """Learner ``attacker``'s reference models for the community model of round ``rnd``, on its population of
    ``repeat``: read from the cache, or trained. Each replays rounds ``start_round`` + 1 … ``rnd`` of the
    federation from the community model of ``start_round`` (0: the initial model, so the references never saw
    a victim's subject; ``rnd`` − 1: one round, what the last round added), with one shard per learner sized
    by the learners' sample counts of round ``rnd`` (FedAvg's weights).

    Their predictions cover the population, then every other cohort subject (:func:`_scored` order).
    """
    attacked_round(target, rnd, first=1)
    if not 0 <= start_round < rnd or start_round not in target.rounds:
        raise FedsimError(f"references start from a community model on disk before round {rnd}, "
                          f"got round {start_round}")
    if references < MIN_REFERENCES:
        raise FedsimError(f"the malicious learner's calibrated attacks need at least {MIN_REFERENCES} reference "
                          f"models (offline LiRA fits 2 OUT per subject), got {references}")
    config = snapshots.read_config(target.run_dir)
    population = learner_population(target.partitions, attacker, target.cohort, repeat=repeat, seed=seed)
    start = load_snapshot(target.run_dir, start_round)
    counts = load_snapshot(target.run_dir, rnd).meta.get("sample_counts", {})
    learners = learner_groups(target.partitions["group"])
    shares = [float(counts.get(g, 1)) for g in learners]  # a run without counts: equal shares
    recipe = {"recipe": "federation", "version": RECIPE_VERSION, "from_round": start_round, "rounds": rnd - start_round,
              "weights_sha256": start.digest, "shares": shares}
    reference_plan = ReferencePlan(config, population, int(config["federation"]["local_epochs"]), seed,
                                   scored=_scored(target.cohort, population), start=recipe)
    trainer = _federation_trainer(target.cohort, start.model.state_dict(), rnd - start_round, shares)
    return ensure_references(reference_plan, target.cohort, target.run_dir, references=references, progress=progress,
                             train=trainer)


def learner_calibrated(
    target: Target, *, rnd: int, references: int = 8, start_round: int = 0, repeats: int = 1, seed: int = 0,
    age_matched: bool = False, controls: bool = False, attackers: Sequence[str] | None = None,
    cache: FeatureCache | None = None, progress: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """The malicious learner's calibrated attacks on every pair A → B of round ``rnd`` (``attackers``: only
    these A), one row per attack, on the splits of its trained classifiers (:func:`attacks.threats.seats.plan`).

    Every subject is scored against the community model of round ``rnd`` with A's references of the repeat
    (:func:`learner_references`, replayed from ``start_round``); RMIA's population z: A's unseen half.
    ``controls``: also the round-0 control, the untrained model scored against the same references (as a
    centralized run's calibrated attacks do). Columns as the curious controller's calibrated rows
    (``classifier`` = ``"calibrated"``) plus ``references`` and ``reference_start_round``; the caller adds the
    ``seat``.
    """
    attacked_round(target, rnd, first=1)
    chosen = tasks(plan("learner", target.partitions, repeats=repeats, seed=seed, age_matched=age_matched))
    if attackers is not None:
        unknown = set(attackers) - set(learner_groups(target.partitions["group"]))
        if unknown:
            raise FedsimError(f"no learner {sorted(unknown)[0]!r} in this run")
        chosen = [t for t in chosen if t.attacker in set(attackers)]
    cache = cache or FeatureCache(target)
    config = snapshots.read_config(target.run_dir)
    likelihood = LIKELIHOOD_OF_LOSS.get(config.get("train", {}).get("loss", "mse"), "gaussian")
    cohort = target.cohort
    memo: dict[tuple[str, int], tuple[np.ndarray, ReferenceSet]] = {}

    def references_of(attacker: str, repeat: int) -> tuple[np.ndarray, ReferenceSet]:
        """Attacker's references of ``repeat`` and the cohort rows of their prediction columns."""
        if (attacker, repeat) not in memo:
            refs = learner_references(
                target, attacker, rnd=rnd, start_round=start_round, repeat=repeat, references=references, seed=seed,
                progress=None if progress is None else
                (lambda done, total: progress(f"{attacker}'s reference models (repeat {repeat})", done, total)))
            memo[attacker, repeat] = cohort.index_of(list(refs.population + _scored(cohort, refs.population))), refs
        return memo[attacker, repeat]

    def attacked(model_round: int) -> Callable[[ScoreAttack, str, np.ndarray, Task], np.ndarray]:
        """The view of the community model of ``model_round``: every attack's score of cohort rows."""
        # the learner holds the weights: the community model's clean predictions
        community = cache.get(load_snapshot(target.run_dir, model_round), ["prediction"])["prediction"][:, 0]
        community = community.astype(np.float64)
        scored: dict[tuple[str, int], np.ndarray] = {}

        def scores_of(attacker: str, repeat: int) -> np.ndarray:
            if (attacker, repeat) not in scored:
                columns, refs = references_of(attacker, repeat)
                keep = np.zeros(refs.predictions.shape, dtype=bool)
                keep[:, : len(refs.population)] = refs.keep
                age = cohort.ages[columns].astype(np.float64)
                variance = resolve_variance("auto", len(refs))
                found = [lira_offline(regression_statistic(community[columns], age, s),
                                      regression_statistic(refs.predictions, age[None, :], s), keep, variance=variance,
                                      alternative=STATISTICS[s].alternative) for s in LEARNER_STATISTICS]
                position = {c: i for i, c in enumerate(columns)}
                unseen = cohort.index_of(list(learner_unseen(target.partitions, repeat=repeat, seed=seed)))
                z = np.array([position[c] for c in unseen])
                found.append(rmia_scores(community[columns], refs.predictions, age, z, likelihood=likelihood,
                                         keep=keep))
                scores = np.full((len(found), len(cohort.subject_ids)), np.nan)
                scores[:, columns] = found
                scored[attacker, repeat] = scores
            return scored[attacker, repeat]

        return lambda attack, model, rows, task: scores_of(task.attacker, task.repeat)[attack.index, rows][:, None]

    attacks = [ScoreAttack(name, i) for i, name in enumerate(attack_names(LEARNER_METHODS, LEARNER_STATISTICS))]
    row_of = {s: i for i, s in enumerate(cohort.subject_ids)}
    settings = {"classifier": CALIBRATED, "references": references, "reference_start_round": start_round}
    rows = run_plan(chosen, attacks, attacked(rnd), row_of=row_of, columns={
        "threat": "learner", "round": rnd, "control": "age-matched" if age_matched else "none", **settings})
    if controls and not age_matched:
        rows += run_plan(chosen, attacks, attacked(0), row_of=row_of,
                         columns={"threat": "learner", "round": 0, "control": "round-0", **settings})
    return rows
