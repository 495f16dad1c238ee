"""Gradient inversion over the settings that decide it: batch size, local steps, model width, defenses.

Each point trains the updates it needs (:mod:`attacks.signals.updates`) from the community
model of a round on the first ``subjects`` scans of a learner (one update per disjoint batch where
the local steps are one batch, so every point scores every one of those scans), then inverts each as the curious controller
would (:func:`attacks.reconstruction.gradient.invert_update`, labels known). Local steps are ``1`` (one
batch), ``epoch`` (one pass over the subjects) or ``run`` (the run's ``local_epochs`` passes). Defenses
are applied at the first batch size and local-steps value of the grid, where leakage is largest.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch

from attacks.reconstruction.run import Outcome, Progress, Scans, control_columns, example, strength_columns, victim_group
from attacks.reconstruction.settings import LOCAL_STEPS
from attacks.reconstruction.strength import GradientAttack
from attacks.signals.updates import Defense, Recipe, epoch_orders, train_update
from attacks.target import Target, attacked_round, load_snapshot, run_model
from fedsim import snapshots
from fedsim.config import load_env
from fedsim.errors import FedsimError
from fedsim.data.partition import learner_groups

__all__ = ["LOCAL_STEPS", "paper_recipe", "sweep"]

#: The environment whose [train] is the paper's federated recipe (plain SGD, batch 1).
PAPER_ENV = "paper-skewed-noniid"


def paper_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` with the optimizer, learning rate and momentum of the paper's federated training."""
    train = load_env(PAPER_ENV).train
    return dataclasses.replace(recipe, optimizer=train.optimizer, lr=train.lr, momentum=train.momentum,
                               weight_decay=train.weight_decay)


def _points(batch_sizes: Sequence[int], local_steps: Sequence[str], widths: Sequence[float],
            defenses: Sequence[Defense]) -> list[tuple[int, str, float, Defense]]:
    grid = [(b, s, w, Defense()) for w in widths for b in batch_sizes for s in local_steps]
    return grid + [(batch_sizes[0], local_steps[0], widths[0], d) for d in defenses if d.name != "none"]


def sweep(target: Target, *, batch_sizes: Sequence[int] = (1, 2, 4, 8), local_steps: Sequence[str] = ("1", "epoch"),
          widths: Sequence[float] | None = None, defenses: Sequence[Defense] = (), learner: str | None = None,
          rnd: int | None = None, subjects: int = 8, recipe: str = "paper", attack: GradientAttack = GradientAttack(),
          seed: int = 0, progress: Progress | None = None) -> Outcome:
    """One row per reconstructed scan of every point of the grid, each with the attack's strength: the
    objective at the truth, the prior and other subjects, the return test (on the point's first update) and
    the positive control (once: it depends on the attack only)."""
    group = victim_group(target, learner)
    rnd = attacked_round(target, rnd)
    bad = [s for s in local_steps if s not in LOCAL_STEPS]
    if bad:
        raise FedsimError(f"unknown local steps {bad[0]!r}; choose from: {', '.join(LOCAL_STEPS)}")
    scans = Scans(target)
    victims = scans.ids(group)
    if subjects > len(victims):
        raise FedsimError(f"--subjects {subjects} is more than learner {group}'s {len(victims)} subjects")
    too_big = [b for b in batch_sizes if b > subjects]
    if too_big:
        raise FedsimError(f"batch size {too_big[0]} is larger than the learner's {subjects} subjects (--subjects)")
    uneven = [b for b in batch_sizes if subjects % b]
    if uneven and "1" in local_steps:
        raise FedsimError(f"--subjects {subjects} is not a multiple of batch size {uneven[0]}: one-batch updates "
                          "would leave scans out")
    chosen = victims[:subjects]
    config = snapshots.read_config(target.run_dir)
    base = Recipe.of_run(config)
    base = paper_recipe(base) if recipe == "paper" else base
    community = load_snapshot(target.run_dir, rnd).model.to(scans.device)
    run_width = float(config["model"].get("width", 1.0))
    widths = list(widths or [run_width])
    # secagg's other learners: the same number of scans as the victim, from each learner that has them
    mates = [scans.ids(g) for g in learner_groups(target.partitions["group"]) if g != group]
    others = [target.cohort.index_of(ids[:subjects]) for ids in mates if len(ids) >= subjects]
    short = [d for d in defenses if d.name == "secagg" and len(others) < int(d.value) - 1]
    if short:
        raise FedsimError(f"{short[0].label} averages {int(short[0].value) - 1} other learners with at least "
                          f"{subjects} subjects; this run has {len(others)}")
    out = Outcome()
    basis = attack.basis(lambda: scans.volumes(scans.own))
    control = control_columns(scans, attack, basis)
    points = _points(list(batch_sizes), list(local_steps), widths, defenses)
    for k, (batch, steps, width, defense) in enumerate(points):
        if width == run_width:
            model = community
        else:  # another width has no trained snapshot: its round-0 model, seeded like the run
            torch.manual_seed(int(config.get("seed", 0)))
            model = run_model(config, width=width).to(scans.device).eval()
        # one batch: every disjoint batch of the subjects is its own update, so each point scores all of them
        groups = [chosen[i:i + batch] for i in range(0, len(chosen) - batch + 1, batch)] if steps == "1" else [chosen]
        point = dataclasses.replace(base, batch_size=batch, epochs=base.epochs if steps == "run" else 1)
        for j, trained_on in enumerate(groups):
            update = train_update(config, model, target.cohort, target.cohort.index_of(trained_on), point, defense,
                                  others=[o[j * batch:(j + 1) * batch] if steps == "1" else o for o in others],
                                  seed=seed + j)
            # several batches: the replay visits the dummies in the learner's shuffled order, every epoch
            ids, orders = trained_on, epoch_orders(len(trained_on), batch, seed + j, point.epochs)
            # a defended update is no longer one plain SGD step: its output layer gives no exact constraints
            used = attack if defense.name == "none" else dataclasses.replace(attack, constraints=False)
            t0 = time.perf_counter()
            label = f"sweep point {k + 1}/{len(points)}" + (f", update {j + 1}/{len(groups)}" if len(groups) > 1 else "")
            found, _ = used.invert(model, update, scans.prior.repeat(len(ids), 1, 1, 1, 1), point,
                                     ages=scans.ages(ids), orders=orders, basis=basis, bounds=scans.bounds, seed=seed,
                                     progress=None if progress is None else
                                     (lambda d, t, label=label: progress(label, d, t)))
            seconds = time.perf_counter() - t0
            if j == 0:  # the point's strength, on its first update
                strength = strength_columns(scans, used, model, update, point, ids, ages=scans.ages(ids),
                                            basis=basis, seed=seed, orders=orders)
            setting: dict[str, Any] = {"attack": "gradient", "round": rnd, "learner": group, "recipe": recipe,
                                       "optimizer": point.optimizer, "batch_size": batch, "local_steps": steps,
                                       "steps": point.steps(len(ids)), "width": width, "defense": defense.label,
                                       "objective": point.objective(len(ids)), "update": attack.settings.update,
                                       "inversion": attack.label, "inversion_steps": attack.settings.iterations,
                                       "restarts": attack.settings.restarts,
                                       "subjects": len(ids), "group": j}
            for i, q in enumerate(scans.score(found.x, ids, victims)):
                out.rows.append({**setting, "image": i, "objective_reached": found.value, **strength, **control, **q,
                                 "seconds": seconds / len(ids)})
            if k == 0 and j == 0:
                out.examples.append(example(f"gradient, batch {batch}, {steps} local step(s), {defense.label}",
                                            scans.volumes(ids), found.x, scans))
    return out
