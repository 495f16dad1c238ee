"""Gradient inversion over the settings that decide it: batch size, local steps, model width, defenses.

Each point trains the updates it needs (:mod:`attacks.signals.updates`) from the community
model of a round on the first ``subjects`` scans of a learner (one update per disjoint batch where
the local steps are one batch, so every point scores every one of those scans), then inverts each as the curious controller
would (:func:`attacks.reconstruction.gradient.invert_update`, labels known). Local steps are ``1`` (one
batch), ``epoch`` (one pass over the subjects) or ``run`` (the run's ``local_epochs`` passes). Defenses
are applied at the first batch size and local-steps value of the grid, where leakage is largest.

Every update of every point is a task of the current executor (:mod:`attacks.execution`): in this process, or a
Ray task that rebuilds what it needs from the run directory. Its rows are stored under a key of what they were
computed from (the community model, the run's configuration, the attack and the point), so an interrupted sweep
resumes without inverting a finished update again.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.execution import TASKS_DIR, SerialExecutor, cached_map, content_key, current_executor
from attacks.reconstruction.run import (Example, Outcome, Progress, Scans, control_columns, example, strength_columns,
                                        victim_group)
from attacks.reconstruction.settings import LOCAL_STEPS
from attacks.reconstruction.strength import GradientAttack
from attacks.signals.updates import Defense, Recipe, epoch_orders, train_update
from attacks.target import Target, attacked_round, load_snapshot, open_run, run_model, snapshot_digest
from fedsim import snapshots
from fedsim.config import load_env
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

__all__ = ["LOCAL_STEPS", "paper_recipe", "sweep"]

#: The environment whose [train] is the paper's federated recipe (plain SGD, batch 1).
PAPER_ENV = "paper-skewed-noniid"
#: Bump when a sweep task computes something else, so stored tasks are not reused.
TASK_VERSION = 1
Point = tuple[int, str, float, Defense]


def paper_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` with the optimizer, learning rate and momentum of the paper's federated training."""
    train = load_env(PAPER_ENV).train
    return dataclasses.replace(recipe, optimizer=train.optimizer, lr=train.lr, momentum=train.momentum,
                               weight_decay=train.weight_decay)


def _points(batch_sizes: Sequence[int], local_steps: Sequence[str], widths: Sequence[float],
            defenses: Sequence[Defense]) -> list[Point]:
    grid = [(b, s, w, Defense()) for w in widths for b in batch_sizes for s in local_steps]
    return grid + [(batch_sizes[0], local_steps[0], widths[0], d) for d in defenses if d.name != "none"]


@dataclass(frozen=True)
class _Plan:
    """What every task of one sweep shares, by value: a Ray worker rebuilds the rest from the run directory."""

    run_dir: Path
    rnd: int
    group: str
    subjects: int
    recipe: str
    attack: GradientAttack
    seed: int
    model: str  # the community model's digest: a retrained run is another plan


@dataclass(frozen=True)
class _Context:
    """What the tasks of one plan read (built once per process)."""

    scans: Scans
    config: dict[str, Any]
    base: Recipe
    community: torch.nn.Module
    run_width: float
    victims: list[str]
    chosen: list[str]
    others: list[np.ndarray]
    basis: torch.Tensor | None


@functools.lru_cache(maxsize=1)
def _context(plan: _Plan) -> _Context:
    target = open_run(plan.run_dir)
    scans = Scans(target)
    victims = scans.ids(plan.group)
    config = snapshots.read_config(plan.run_dir)
    base = Recipe.of_run(config)
    # secagg's other learners: the same number of scans as the victim, from each learner that has them
    mates = [scans.ids(g) for g in learner_groups(target.partitions["group"]) if g != plan.group]
    return _Context(scans=scans, config=config, base=paper_recipe(base) if plan.recipe == "paper" else base,
                    community=load_snapshot(plan.run_dir, plan.rnd).model.to(scans.device),
                    run_width=float(config["model"].get("width", 1.0)), victims=victims,
                    chosen=victims[:plan.subjects],
                    others=[target.cohort.index_of(ids[:plan.subjects]) for ids in mates if len(ids) >= plan.subjects],
                    basis=plan.attack.basis(lambda: scans.volumes(scans.own)))


def _groups(chosen: Sequence[str], batch: int, steps: str) -> list[list[str]]:
    """The scans of each update of a point: every disjoint batch where the local steps are one batch, else all."""
    return [list(chosen[i:i + batch]) for i in range(0, len(chosen) - batch + 1, batch)] if steps == "1" else [list(chosen)]


@dataclass(frozen=True)
class _Update:
    """One task: invert update ``j`` of a point and score it (the point's strength columns on its first update)."""

    plan: _Plan
    points: tuple[Point, ...]
    #: the inversion's own progress, in this process only (None on Ray)
    progress: Progress | None = dataclasses.field(default=None, compare=False)

    def __call__(self, task: tuple[int, int]) -> dict[str, Any]:
        k, j = task
        plan, ctx = self.plan, _context(self.plan)
        scans, batch, steps, width, defense = ctx.scans, *self.points[k]
        updates = len(_groups(ctx.chosen, batch, steps))
        if width == ctx.run_width:
            model = ctx.community
        else:  # another width has no trained snapshot: its round-0 model, seeded like the run
            torch.manual_seed(int(ctx.config.get("seed", 0)))
            model = run_model(ctx.config, width=width).to(scans.device).eval()
        trained_on = _groups(ctx.chosen, batch, steps)[j]
        point = dataclasses.replace(ctx.base, batch_size=batch, epochs=ctx.base.epochs if steps == "run" else 1)
        update = train_update(ctx.config, model, scans.target.cohort, scans.target.cohort.index_of(trained_on), point,
                              defense, others=[o[j * batch:(j + 1) * batch] if steps == "1" else o for o in ctx.others],
                              seed=plan.seed + j)
        # several batches: the replay visits the dummies in the learner's shuffled order, every epoch
        ids, orders = trained_on, epoch_orders(len(trained_on), batch, plan.seed + j, point.epochs)
        # a defended update is no longer one plain SGD step: its output layer gives no exact constraints
        used = plan.attack if defense.name == "none" else dataclasses.replace(plan.attack, constraints=False)
        label = f"sweep point {k + 1}/{len(self.points)}" + (f", update {j + 1}/{updates}" if updates > 1 else "")
        t0 = time.perf_counter()
        found, _ = used.invert(model, update, scans.prior.repeat(len(ids), 1, 1, 1, 1), point, ages=scans.ages(ids),
                               orders=orders, basis=ctx.basis, bounds=scans.bounds, seed=plan.seed,
                               progress=None if self.progress is None else
                               (lambda d, t: self.progress(label, d, t)))  # type: ignore[misc]
        seconds = time.perf_counter() - t0
        strength = {} if j else strength_columns(scans, used, model, update, point, ids, ages=scans.ages(ids),
                                                 basis=ctx.basis, seed=plan.seed, orders=orders)
        setting = {"attack": "gradient", "round": plan.rnd, "learner": plan.group, "recipe": plan.recipe,
                   "optimizer": point.optimizer, "batch_size": batch, "local_steps": steps,
                   "steps": point.steps(len(ids)), "width": width, "defense": defense.label,
                   "objective": point.objective(len(ids)), "update": plan.attack.settings.update,
                   "inversion": plan.attack.label, "inversion_steps": plan.attack.settings.iterations,
                   "restarts": plan.attack.settings.restarts, "subjects": len(ids), "group": j}
        out: dict[str, Any] = {"setting": setting, "objective_reached": float(found.value), "strength": strength,
                               "quality": scans.score(found.x, ids, ctx.victims), "seconds": seconds / len(ids)}
        if k == 0 and j == 0:  # the report's example: the first reconstruction beside the scan closest to it
            kept = example("", scans.volumes(ids), found.x, scans)
            out["example"] = {"truth": kept.truth.tolist(), "image": kept.image.tolist()}
        return out


def _keys(plan: _Plan, points: Sequence[Point], tasks: Sequence[tuple[int, int]]) -> list[str]:
    """What each task's output is stored under: the plan (the community model's digest included), the run's
    configuration, the point, the update, and whether the task keeps the report's example (the first one)."""
    common = {"version": TASK_VERSION, "config": snapshots.read_config(plan.run_dir),
              "plan": {**dataclasses.asdict(plan), "run_dir": None}}
    return [content_key({**common, "point": points[k], "update": j, "example": (k, j) == (0, 0)}) for k, j in tasks]


def _check(ctx: _Context, group: str, subjects: int, batch_sizes: Sequence[int], local_steps: Sequence[str],
           defenses: Sequence[Defense]) -> None:
    """The grid fits the learner's subjects, and secure aggregation has the other learners it averages."""
    if subjects > len(ctx.victims):
        raise FedsimError(f"--subjects {subjects} is more than learner {group}'s {len(ctx.victims)} subjects")
    too_big = [b for b in batch_sizes if b > subjects]
    if too_big:
        raise FedsimError(f"batch size {too_big[0]} is larger than the learner's {subjects} subjects (--subjects)")
    uneven = [b for b in batch_sizes if subjects % b]
    if uneven and "1" in local_steps:
        raise FedsimError(f"--subjects {subjects} is not a multiple of batch size {uneven[0]}: one-batch updates "
                          "would leave scans out")
    short = [d for d in defenses if d.name == "secagg" and len(ctx.others) < int(d.value) - 1]
    if short:
        raise FedsimError(f"{short[0].label} averages {int(short[0].value) - 1} other learners with at least "
                          f"{subjects} subjects; this run has {len(ctx.others)}")


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
    config = snapshots.read_config(target.run_dir)
    run_width = float(config["model"].get("width", 1.0))
    points = tuple(_points(list(batch_sizes), list(local_steps), list(widths or [run_width]), defenses))
    plan = _Plan(Path(target.run_dir).resolve(), rnd, group, subjects, recipe, attack, seed,
                 snapshot_digest(target.run_dir, rnd))
    serial = isinstance(current_executor(), SerialExecutor)
    try:
        # what every task reads (an imported run without a recipe fails here), then the checks on it, before any task
        ctx = _context(plan)
        _check(ctx, group, subjects, batch_sizes, local_steps, defenses)
        control = control_columns(ctx.scans, attack, ctx.basis)  # the attack's positive control, once
        tasks = [(k, j) for k, (batch, steps, _, _) in enumerate(points)
                 for j in range(len(_groups(ctx.chosen, batch, steps)))]
        found = cached_map(_Update(plan, points, progress if serial else None), tasks, keys=_keys(plan, points, tasks),
                           folder=plan.run_dir / TASKS_DIR / "reconstruction-sweep", description="sweep updates",
                           progress=progress)
    finally:
        _context.cache_clear()  # a later sweep in this process reads the run anew
    out, strength = Outcome(), {}
    for (k, j), result in zip(tasks, found):
        strength = result["strength"] or strength  # a point's first update carries the point's strength
        out.rows += [{**result["setting"], "image": i, "objective_reached": result["objective_reached"], **strength,
                      **control, **q, "seconds": result["seconds"]} for i, q in enumerate(result["quality"])]
        if "example" in result:
            batch, steps, _, defense = points[k]
            out.examples.append(Example(f"gradient, batch {batch}, {steps} local step(s), {defense.label}",
                                        np.asarray(result["example"]["truth"], dtype=np.float32),
                                        np.asarray(result["example"]["image"], dtype=np.float32), ctx.scans.prior_np))
    return out
