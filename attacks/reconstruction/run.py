"""Each reconstruction attack on a run directory: who holds what, which subjects, one row per reconstruction.

The seats: gradient inversion is the curious controller's (a learner's
update of one round: its local model minus the community model it started from, so the run must have
been trained with ``--snapshot-local``); feature inversion is the holder of one layer's activations;
model inversion is anyone with the community model. Every attacker holds scans of its own: the first
half of the unseen group (by subject id order), whose mean is the prior every reconstruction starts
from and is scored against. Identifiability is among the victim's subjects and the other half of the
unseen group, so a reconstruction that names its subject does it among scans the attacker never saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attacks.evaluation.images import quality
from attacks.reconstruction.strength import (CONTROL_GAIN, GradientAttack, baselines, positive_control,
                                             return_test)
from attacks.signals.updates import Recipe, epoch_orders
from attacks.target import Target, attacked_round, is_centralized, load_snapshot
from fedsim import snapshots
from fedsim.data.partition import TRAIN, UNSEEN, learner_groups
from fedsim.device import resolve_device
from fedsim.errors import FedsimError
from fedsim.federation.run_setup import learner_seed
from fedsim.models import layer_parameters

__all__ = ["Example", "Outcome", "Scans", "attacked_round", "control_columns", "conv_layers", "example",
           "gradient_attack", "strength_columns", "timed", "victim_group"]

Progress = Callable[[str, int, int], None]


@dataclass
class Example:
    """One reconstruction kept for the report's mid-slice grid."""

    label: str
    truth: np.ndarray
    image: np.ndarray
    prior: np.ndarray


@dataclass
class Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)


class Scans:
    """The cohort's volumes as tensors, the attacker's own subjects, the prior and the candidates."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.device = resolve_device()  # the command's --device
        unseen = self.ids(UNSEEN)
        if len(unseen) < 4:
            raise FedsimError("reconstruction needs at least 4 unseen subjects (the attacker's own scans and outsiders)")
        self.own, self.outsiders = unseen[: len(unseen) // 2], unseen[len(unseen) // 2:]
        own = self.volumes(self.own)
        self.prior = own.mean(0, keepdim=True)
        self.bounds = (float(own.min()), float(own.max()))

    def ids(self, group: str) -> list[str]:
        parts = self.target.partitions
        return sorted(parts.loc[parts["group"] == group, "subject_id"])

    def volumes(self, ids: Sequence[str]) -> torch.Tensor:
        """The scans of ``ids``, in that order, as (N, 1, *shape) on the command's device."""
        rows = _Rows(self.target.cohort, self.target.cohort.index_of(list(ids)))
        return torch.from_numpy(rows[:])[:, None].to(self.device)

    def ages(self, ids: Sequence[str]) -> torch.Tensor:
        ages = self.target.cohort.ages[self.target.cohort.index_of(list(ids))].astype(np.float32)
        return torch.from_numpy(ages).to(self.device)

    def score(self, images: torch.Tensor, truth_ids: Sequence[str], victim_ids: Sequence[str]) -> list[dict[str, float]]:
        """Quality rows of ``images`` reconstructed from ``truth_ids`` (identified among the victim's + outsiders)."""
        candidates = list(victim_ids) + [s for s in self.outsiders if s not in set(victim_ids)]
        position = {s: i for i, s in enumerate(candidates)}
        truths = self.volumes(truth_ids)[:, 0].cpu().numpy()
        sources = np.array([position[s] for s in truth_ids])
        return [q.row() for q in quality(images[:, 0].cpu().numpy(), truths, self.prior_np,
                                         _Rows(self.target.cohort, self.target.cohort.index_of(candidates)), sources)]

    @property
    def prior_np(self) -> np.ndarray:
        return self.prior[0, 0].cpu().numpy()


class _Rows:
    """Cohort rows read on demand (slices of the memory map), so candidates need not fit in memory."""

    def __init__(self, cohort: Any, rows: np.ndarray) -> None:
        self.cohort, self.rows = cohort, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> np.ndarray:
        rows = self.rows[part]
        order = np.argsort(rows)
        out = np.empty((len(rows), *self.cohort.volumes.shape[1:]), dtype=np.float32)
        out[order] = self.cohort.volumes[rows[order]]
        return out


def victim_group(target: Target, learner: str | None) -> str:
    """The group whose subjects are attacked: ``learner`` (checked), else the first learner (or ``train``)."""
    groups = [TRAIN] if is_centralized(target) else learner_groups(target.partitions["group"])
    if learner is None:
        return groups[0]
    if learner not in groups:
        raise FedsimError(f"learner {learner!r} does not exist in this run; choose one of: {', '.join(groups)}")
    return learner


def timed(progress: Progress | None, what: str) -> Callable[[int, int], None] | None:
    """An inversion's ``progress(done, total)`` reported as ``progress(what, done, total)``."""
    return None if progress is None else (lambda done, total: progress(what, done, total))


def strength_columns(scans: Scans, attack: GradientAttack, model: torch.nn.Module, update: dict[str, torch.Tensor],
                     recipe: Recipe, ids: Sequence[str], *, ages: torch.Tensor | None, basis: torch.Tensor | None,
                     seed: int = 0, **kwargs: Any) -> dict[str, float]:
    """The objective at the truth (``ids``' scans: where fewer scans are reconstructed than the update came from,
    the first of them), the prior and as many outsiders, and the return test."""
    truths = scans.volumes(ids)
    others = scans.volumes(scans.outsiders[:len(ids)])
    if len(others) < len(ids):
        others = scans.volumes(scans.outsiders)[torch.arange(len(ids)) % len(others)]
    match = attack.match(model, update, recipe, truths, ages=ages, **kwargs)
    return {**baselines(match, truths, scans.prior, others),
            **return_test(attack, model, update, truths, recipe, ages=ages, bounds=scans.bounds, basis=basis,
                          seed=seed, **kwargs)}


def control_columns(scans: Scans, attack: GradientAttack, basis: torch.Tensor | None) -> dict[str, float]:
    """The attack's positive control (:func:`positive_control`) on the first outsider: a scan outside the
    attacker's prior (and its PCA basis), as a victim's is, but no victim's."""
    scan = scans.outsiders[:1]
    image = positive_control(attack, scans.volumes(scan), scans.ages(scan), scans.prior, bounds=scans.bounds, basis=basis)
    q = scans.score(image, scan, scans.own)[0]
    return {"control_ssim_gain": q["ssim_gain"], "control_identified": q["identified"],
            "control_recovered": float(q["identified"] > 0 and q["ssim_gain"] >= CONTROL_GAIN)}


def gradient_attack(target: Target, *, learner: str | None = None, rnd: int | None = None, subjects: int | None = None,
                    labels: str = "known", objective: str | None = None, attack: GradientAttack = GradientAttack(),
                    progress: Progress | None = None) -> Outcome:
    """The curious controller inverts ``learner``'s update of round ``rnd`` (default: the last), with one dummy
    per scan of the learner (``subjects``: fewer, matched as one averaged gradient)."""
    if is_centralized(target):
        raise FedsimError("gradient inversion attacks a learner's update: this is a centralized run (no learners)")
    group = victim_group(target, learner)
    rnd = attacked_round(target, rnd, first=1)
    local = snapshots.round_dir(target.run_dir, rnd) / f"{group}.safetensors"
    if not local.exists():
        raise FedsimError(f"{str(target.run_dir)!r} has no local models (round {rnd} has no {group}.safetensors); "
                          "train with --snapshot-local")
    scans = Scans(target)
    community, trained = load_snapshot(target.run_dir, rnd - 1), load_snapshot(target.run_dir, rnd, name=group)
    community.model.to(scans.device)
    trained.model.to(scans.device)
    start = dict(community.model.named_parameters())
    update = {k: (p.detach() - start[k].detach()) for k, p in trained.model.named_parameters()}
    config = snapshots.read_config(target.run_dir)
    recipe = Recipe.of_run(config)
    victims = scans.ids(group)
    n = len(victims) if subjects is None else min(subjects, len(victims))
    whole = n == len(victims)  # the whole update reconstructed: the batches and ages can be replayed
    if objective == "unrolled" and not whole:
        raise FedsimError(f"--objective unrolled replays all of {group}'s {len(victims)} scans' steps: "
                          f"use --subjects {len(victims)} (or the gradient objective)")
    objective = objective or (recipe.objective(n) if whole else "gradient")
    orders = None
    if whole:  # in the learner's own order, shuffled as its loader did: the seed scheme is in fedsim's code
        parts = target.partitions
        victims = parts.loc[parts["group"] == group, "subject_id"].tolist()
        orders = epoch_orders(n, recipe.batch_size, learner_seed(int(config.get("seed", 0)), rnd, group), recipe.epochs)
    known = scans.ages(victims) if whole and labels == "known" else None
    basis = attack.basis(lambda: scans.volumes(scans.own))
    guess = float(scans.ages(scans.own).mean())
    t0 = time.perf_counter()
    found, _ = attack.invert(community.model, update, scans.prior.repeat(n, 1, 1, 1, 1), recipe, ages=known,
                             age_guess=guess, objective=objective, orders=orders, subjects=len(victims),
                             basis=basis, bounds=scans.bounds,
                             progress=timed(progress, f"gradient {group}"))
    seconds = time.perf_counter() - t0
    if progress is not None:
        progress("return test and positive control", 0, 1)
    strength = {"objective_reached": found.value,
                **strength_columns(scans, attack, community.model, update, recipe, victims[:n], ages=known,
                                   basis=basis, age_guess=guess, objective=objective, orders=orders,
                                   subjects=len(victims)),
                **control_columns(scans, attack, basis)}
    if progress is not None:
        progress("return test and positive control", 1, 1)
    out = Outcome()
    for i, q in enumerate(scans.score(found.x, victims, victims)):
        out.rows.append({"attack": "gradient", "round": rnd, "learner": group, "setting": objective,
                         "update": attack.settings.update, "inversion": attack.label, "inversion_steps": attack.settings.iterations,
                         "restarts": attack.settings.restarts,
                         "subjects": len(victims), "reconstructed": n, "batch_size": recipe.batch_size,
                         "local_steps": recipe.steps(len(victims)), "labels": "known" if known is not None else "estimated",
                         "image": i, **strength, **q, "seconds": seconds / n})
    out.examples.append(example(f"gradient, {group}, round {rnd}, {attack.settings.update} steps",
                                scans.volumes(victims), found.x, scans))
    return out


def example(label: str, truths: torch.Tensor, images: torch.Tensor, scans: Scans) -> Example:
    """The first reconstruction beside the scan it is closest to (a batch comes back in no order)."""
    truth, image = truths[:, 0].cpu().numpy(), images[0, 0].cpu().numpy()
    j = int(np.argmin(((truth - image) ** 2).mean(axis=(1, 2, 3))))
    return Example(label, truth[j], image, scans.prior_np)


def conv_layers(model: torch.nn.Module) -> list[str]:
    """The model's convolution layers, in order: the layers a feature inversion attacks by default."""
    return [name for name in layer_parameters(model) if name.startswith("conv")]
