"""Feature and model inversion, one task per inversion: each layer × method, each model × target age.

Every inversion starts from the attacker's prior with its own seeded generator, and the learned inverse seeds
itself, so none depends on the driver's random state or on the inversions before it: each is a task of the
current executor (:mod:`attacks.execution`), in this process or a Ray task that rebuilds what it needs from the
run directory, with the same numbers either way. Its rows and its example are stored under a key of what they
were computed from (the snapshot's digest, the run's configuration, the attack's settings), so an interrupted
attack resumes without inverting a finished layer or age again.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.execution import TASKS_DIR, SerialExecutor, cached_map, content_key, current_executor
from attacks.reconstruction.features import activations, fit_inverse, invert_activations
from attacks.reconstruction.inversion import closeness, invert_model
from attacks.reconstruction.optimize import Inversion
from attacks.reconstruction.run import Example, Outcome, Progress, Scans, timed, conv_layers, victim_group
from attacks.target import Target, attacked_round, load_snapshot, open_run, snapshot_digest
from fedsim import snapshots
from fedsim.data.partition import UNSEEN, VAL
from fedsim.errors import FedsimError

__all__ = ["FEATURE_METHODS", "feature_attack", "model_attack"]

FEATURE_METHODS = ("white-box", "learned")
#: Bump when a task computes something else, so stored tasks are not reused.
TASK_VERSION = 1


def _keys(run_dir: Path, plan: Any, tasks: list[Any], example_of: Any = None) -> list[str]:
    """What each task's output is stored under: the plan (the snapshots' digests included), the run's
    configuration, the task, and whether it keeps the report's example."""
    common = {"version": TASK_VERSION, "config": snapshots.read_config(run_dir),
              "plan": {**dataclasses.asdict(plan), "run_dir": None}}
    return [content_key({**common, "task": task, "example": example_of in (None, task)}) for task in tasks]


def _example(label: str, truth: np.ndarray, image: np.ndarray) -> dict[str, Any]:
    return {"label": label, "truth": truth.tolist(), "image": image.tolist()}


def _examples(found: list[dict[str, Any]], prior: np.ndarray) -> list[Example]:
    return [Example(e["label"], np.asarray(e["truth"], dtype=np.float32), np.asarray(e["image"], dtype=np.float32),
                    prior) for result in found if (e := result.get("example"))]


@dataclass(frozen=True)
class _FeaturePlan:
    run_dir: Path
    rnd: int
    group: str
    subjects: int
    settings: Inversion
    epochs: int
    digest: str  # the attacked snapshot's: another model is another task


@functools.lru_cache(maxsize=1)
def _feature_context(plan: _FeaturePlan) -> tuple[Scans, torch.nn.Module, list[str], list[str], torch.Tensor]:
    scans = Scans(open_run(plan.run_dir))
    victims = scans.ids(plan.group)
    chosen = victims[:plan.subjects]
    return scans, load_snapshot(plan.run_dir, plan.rnd).model.to(scans.device), victims, chosen, scans.volumes(chosen)


@dataclass(frozen=True)
class _Features:
    """One task: invert one layer's activations of the chosen scans with one method."""

    plan: _FeaturePlan
    #: the inversion's own progress, in this process only (None on Ray)
    progress: Progress | None = dataclasses.field(default=None, compare=False)

    def __call__(self, task: tuple[str, str]) -> dict[str, Any]:
        layer, method = task
        plan = self.plan
        scans, model, victims, chosen, x = _feature_context(plan)
        with torch.no_grad():
            held = activations(model, layer, x)
        if held.shape[0] != len(x):  # the 2-D slice net: one row per slice, not per scan
            raise FedsimError(f"feature inversion needs a model whose layers keep one row per scan (cnn3d); "
                              f"{type(model).__name__}'s {layer} has {held.shape[0]} rows for {len(x)} scans")
        t0 = time.perf_counter()
        if method == "white-box":
            images = torch.cat([invert_activations(model, layer, held[i:i + 1], scans.prior, settings=plan.settings,
                                                   bounds=scans.bounds,
                                                   progress=timed(self.progress, f"features {layer} {i + 1}/{len(chosen)}"))
                                for i in range(len(chosen))])
        else:
            with torch.no_grad():
                own = scans.volumes(scans.own)
                train = activations(model, layer, own)
            net = fit_inverse(train, own, epochs=plan.epochs, progress=timed(self.progress, f"inverse net {layer}"))
            with torch.no_grad():
                images = net(held).clamp(*scans.bounds)
        seconds = (time.perf_counter() - t0) / len(chosen)
        rows = [{"attack": "features", "round": plan.rnd, "learner": plan.group, "setting": f"{layer} {method}",
                 "update": plan.settings.update if method == "white-box" else "", "labels": "",
                 "inversion": plan.settings.label if method == "white-box" else "", "layer": layer, "method": method,
                 "subjects": len(chosen), "image": i, **scans.score(images[i:i + 1], [sid], victims)[0],
                 "seconds": seconds} for i, sid in enumerate(chosen)]
        return {"rows": rows, "example": _example(f"features, {layer}, {method}", x[0, 0].cpu().numpy(),
                                                  images[0, 0].cpu().numpy())}


def feature_attack(target: Target, *, learner: str | None = None, rnd: int | None = None, subjects: int = 4,
                   layers: list[str] | tuple[str, ...] | None = None, methods: tuple[str, ...] = FEATURE_METHODS,
                   settings: Inversion = Inversion(), epochs: int = 20, progress: Progress | None = None) -> Outcome:
    """The holder of one layer's activations of ``subjects`` of the victim's scans reconstructs them: every layer
    × method a task."""
    bad = [m for m in methods if m not in FEATURE_METHODS]
    if bad:
        raise FedsimError(f"unknown feature-inversion method {bad[0]!r}; choose from: {', '.join(FEATURE_METHODS)}")
    group, rnd = victim_group(target, learner), attacked_round(target, rnd)
    run_dir = Path(target.run_dir).resolve()
    plan = _FeaturePlan(run_dir, rnd, group, subjects, settings, epochs, snapshot_digest(run_dir, rnd))
    serial = isinstance(current_executor(), SerialExecutor)
    try:
        scans, model = _feature_context(plan)[:2]
        tasks = [(layer, method) for layer in (layers or conv_layers(model)) for method in methods]
        found = cached_map(_Features(plan, progress if serial else None), tasks, keys=_keys(run_dir, plan, tasks),
                           folder=run_dir / TASKS_DIR / "feature-inversion", description="feature inversions",
                           progress=progress)
    finally:
        _feature_context.cache_clear()  # a later attack in this process reads the run anew
    return Outcome([row for result in found for row in result["rows"]], _examples(found, scans.prior_np))


@dataclass(frozen=True)
class _ModelPlan:
    run_dir: Path
    rnd: int
    window: float
    settings: Inversion
    digests: tuple[str, ...]  # the attacked snapshot's and round 0's


@functools.lru_cache(maxsize=1)
def _model_context(plan: _ModelPlan) -> tuple[Scans, list[str], np.ndarray, np.ndarray]:
    scans = Scans(target := open_run(plan.run_dir))
    parts = target.partitions
    members = sorted(parts.loc[~parts["group"].isin([UNSEEN, VAL]), "subject_id"])
    return scans, members, scans.ages(members).cpu().numpy(), scans.ages(scans.outsiders).cpu().numpy()


def _near(plan: _ModelPlan, age: float) -> tuple[list[str], list[str]]:
    """The members and the unseen subjects within the window of ``age``: whom the prototype is compared with."""
    scans, members, member_ages, outsider_ages = _model_context(plan)
    return ([s for s, a in zip(members, member_ages) if abs(a - age) <= plan.window],
            [s for s, a in zip(scans.outsiders, outsider_ages) if abs(a - age) <= plan.window])


@dataclass(frozen=True)
class _Model:
    """One task: the prototype of one target age from one round's model, and how member-like it is."""

    plan: _ModelPlan
    example_of: tuple[int, float]  # the (round, age) whose prototype the report shows
    progress: Progress | None = dataclasses.field(default=None, compare=False)

    def __call__(self, task: tuple[int, float]) -> dict[str, Any]:
        model_round, age = task
        plan = self.plan
        scans = _model_context(plan)[0]
        config = snapshots.read_config(plan.run_dir)
        model = load_snapshot(plan.run_dir, model_round).model.to(scans.device)
        near_m, near_o = _near(plan, age)
        t0 = time.perf_counter()
        proto, predicted = invert_model(model, age, scans.prior, loss=config["train"].get("loss", "mse"),
                                        target_scale=float(config["model"].get("target_scale", 1.0)),
                                        settings=plan.settings, bounds=scans.bounds,
                                        progress=timed(self.progress, f"model round {model_round}, age {age:g}"))
        m_vol, o_vol = scans.volumes(near_m)[:, 0].cpu().numpy(), scans.volumes(near_o)[:, 0].cpu().numpy()
        proto_np = proto[0, 0].cpu().numpy()
        row = {"attack": "model", "round": model_round, "learner": "", "setting": f"age {age:g}",
               "update": plan.settings.update, "labels": "", "inversion": plan.settings.label, "target_age": age,
               "predicted_age": predicted, "members": len(near_m), "non_members": len(near_o),
               "closeness_auc": closeness(proto_np, m_vol, o_vol),
               "closeness_auc_prior": closeness(scans.prior_np, m_vol, o_vol), "seconds": time.perf_counter() - t0}
        out: dict[str, Any] = {"rows": [row]}
        if task == self.example_of:
            out["example"] = _example(f"model inversion, round {model_round}, age {age:g} (truth: mean member of "
                                      "that age)", m_vol.mean(0), proto_np)
        return out


def model_attack(target: Target, *, rnd: int | None = None, ages: list[float] | None = None, window: float = 2.5,
                 settings: Inversion = Inversion(), progress: Progress | None = None) -> Outcome:
    """Prototypes of target ages from the community model of ``rnd`` and the untrained round-0 model; for
    each, how much closer it is to members of that age (±``window`` years) than to unseen subjects. Every
    round × age a task."""
    rnd = attacked_round(target, rnd)
    run_dir = Path(target.run_dir).resolve()
    rounds = list(dict.fromkeys([rnd, 0]))
    plan = _ModelPlan(run_dir, rnd, window, settings, tuple(snapshot_digest(run_dir, r) for r in rounds))
    serial = isinstance(current_executor(), SerialExecutor)
    try:
        scans, _, _, outsider_ages = _model_context(plan)
        ages = list(ages) if ages else [float(a) for a in np.percentile(outsider_ages, [25, 50, 75]).round()]
        for age in ages:  # before any task: every age needs members and unseen subjects to compare with
            if not all(_near(plan, age)):
                raise FedsimError(f"no members or no unseen subjects within {window:g} years of age {age:g}; "
                                  "choose other --ages")
        tasks = [(r, float(age)) for r in rounds for age in ages]
        example_of = (rnd, float(ages[len(ages) // 2]))
        found = cached_map(_Model(plan, example_of, progress if serial else None), tasks,
                           keys=_keys(run_dir, plan, tasks, example_of), folder=run_dir / TASKS_DIR / "model-inversion",
                           description="model inversions", progress=progress)
    finally:
        _model_context.cache_clear()
    return Outcome([row for result in found for row in result["rows"]], _examples(found, scans.prior_np))
