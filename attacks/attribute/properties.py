"""Property inference on learners (Melis et al. 2019; Ganju et al. 2018): a cohort's make-up from its update.

The curious controller sees every learner's update of a round: its local model minus the community model
it started from. It trains *shadow updates* the same way (:func:`attacks.reconstruction.updates.train_update`:
fedsim's own local loop, the run's recipe, from the same community model) on subsets of its own subjects
— the unseen pool, whose sex and age it knows — with planted properties (a share of women, a mean age,
drawn over a wide range), fits a ridge regression from update to property, and applies it to each
learner's real update. The baseline is the federation's average (every learner predicted at the mean of
the learners' true values: what the controller would guess knowing the population but not the updates);
an attack that does not beat it has learned nothing about any one learner.

What the regression reads of an update is what it does (:func:`behaviour`): how the model it makes moves
the predicted ages of the attacker's *probe* subjects (half of its own, never in a shadow) — the mean change
for women and for men, its slope with age, and the change in each sex's absolute error. A model trained on
more women moves women's predictions towards their ages more than men's. These few numbers generalise from
the shadows to the learners; a regression on every weight of the update would learn which of the attacker's
few subjects a shadow holds (they recur across shadows) and say nothing about anyone else's cohort, and the
update's direction alone is drowned by the batch order of local SGD.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attacks.attribute.labels import POSITIVE_SEX, values
from attacks.attribute.names import DEFAULT_SHADOWS, MIN_SHADOWS
from attacks.evaluation.images import mean_interval
from attacks.execution import TASKS_DIR, cached_map, content_key
from attacks.signals.cache import Progress
from attacks.signals.features import compute_features
from attacks.signals.updates import Recipe, train_update
from attacks.target import Target, attacked_round, load_snapshot, missing_local_models
from fedsim import snapshots
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

__all__ = ["PROPERTIES", "behaviour", "property_attack", "property_summary"]

#: property -> what it is
PROPERTIES = {"women": "share of women", "age": "mean age (years)"}
_BOUNDS = {"women": (0.0, 1.0), "age": (-np.inf, np.inf)}  # an estimate outside them is clipped: a share is a share
MIN_SHADOW_SUBJECTS = 8
_ALPHAS = np.logspace(-2, 5, 15)
#: Bump when a shadow update's training or reading changes: it is part of every cached shadow's key.
SHADOW_VERSION = 1


def _predictions(model: torch.nn.Module, target: Target, rows: np.ndarray) -> np.ndarray:
    return compute_features(model, target.cohort, ["prediction"], indices=rows)["prediction"][:, 0].astype(np.float64)


def behaviour(model: torch.nn.Module, target: Target, probe: np.ndarray, women: np.ndarray,
              before: np.ndarray) -> np.ndarray:
    """How ``model`` moved the predictions of cohort rows ``probe`` (``women``: which are) from ``before`` (the
    starting model's): mean change for women and for men, its covariance with z-scored age, and the change in
    each sex's mean absolute error."""
    ages = np.asarray(target.cohort.ages, dtype=np.float64)[probe]
    after = _predictions(model, target, probe)
    change, gained = after - before, np.abs(after - ages) - np.abs(before - ages)
    z = (ages - ages.mean()) / max(ages.std(), 1e-9)
    return np.array([change[women].mean(), change[~women].mean(), float(np.mean(z * change)),
                     gained[women].mean(), gained[~women].mean()])


def _moved(model: torch.nn.Module, update: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A copy of ``model`` with ``update`` added to its parameters."""
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.add_(update[name].to(p.device, p.dtype))
    return moved.eval()


def _properties(women: np.ndarray, ages: np.ndarray) -> dict[str, float]:
    return {"women": float(np.mean(women)), "age": float(np.mean(ages))}


def _shadow_rows(rng: np.random.Generator, women: np.ndarray, ages: np.ndarray, size: int) -> np.ndarray:
    """Pool rows of one shadow cohort of ``size``: a share of women drawn uniformly over [0.05, 0.95] and an
    age tilt (subjects drawn with weight exp(t · z-age), t uniform in [-1.5, 1.5]), so both properties vary."""
    tilt = rng.uniform(-1.5, 1.5)
    weight = np.exp(tilt * (ages - ages.mean()) / max(ages.std(), 1e-9))
    n_women = int(np.clip(round(rng.uniform(0.05, 0.95) * size), 0, women.sum()))
    n_women = max(n_women, size - int((~women).sum()))
    picked = []
    for mask, count in ((women, n_women), (~women, size - n_women)):
        rows = np.flatnonzero(mask)
        if count:
            picked.append(rng.choice(rows, size=count, replace=False, p=weight[rows] / weight[rows].sum()))
    return np.concatenate(picked)


@dataclass(frozen=True)
class _Shadow:
    """One shadow update's task (in process or a Ray task): train it from ``start`` on cohort rows with its
    seed, and return how the model it makes moves the probes (:func:`behaviour`)."""

    config: dict[str, Any]
    start: torch.nn.Module
    target: Target
    recipe: Recipe
    probe: np.ndarray
    women: np.ndarray
    before: np.ndarray

    def __call__(self, job: tuple[np.ndarray, int]) -> list[float]:
        rows, seed = job
        update = train_update(self.config, self.start, self.target.cohort, rows, self.recipe, seed=seed)
        return behaviour(_moved(self.start, update), self.target, self.probe, self.women, self.before).tolist()


def property_attack(
    target: Target, *, rnd: int, shadows: int = DEFAULT_SHADOWS, seed: int = 0, progress: Progress | None = None,
) -> pd.DataFrame:
    """The controller's estimate of every learner's share of women and mean age from its round-``rnd`` update.

    One row per (learner, property): the truth, the attack's estimate, the federation-average baseline, and
    ``shadow_mae`` (leave-one-out error on the shadows themselves: how well the regression works where it was fitted).
    """
    learners = learner_groups(target.partitions["group"])
    if len(learners) < 2:
        raise FedsimError("property inference attacks the learners of a federation: this run has fewer than 2")
    attacked_round(target, rnd, first=1)
    missing = missing_local_models(target, rnd)
    if missing:
        raise FedsimError(f"round {rnd} has no local model of {', '.join(missing)}: property inference reads each "
                          "learner's update (a run made with --snapshot-local)")
    if shadows < MIN_SHADOWS:
        raise FedsimError(f"--shadows must be at least {MIN_SHADOWS}, got {shadows}")
    config = snapshots.read_config(target.run_dir)
    recipe = Recipe.of_run(config)
    start = load_snapshot(target.run_dir, rnd - 1)
    women_of = (values(target, "sex") == POSITIVE_SEX).reindex(target.cohort.subject_ids).to_numpy()
    ages = np.asarray(target.cohort.ages, dtype=np.float64)
    groups = target.partitions.set_index("subject_id")["group"].reindex(target.cohort.subject_ids).to_numpy()
    unseen = np.random.default_rng([seed, 12]).permutation(np.flatnonzero(groups == "unseen"))
    # probes from one half of the attacker's subjects, shadows from the other: no shadow trains on a probe
    probe, pool = np.sort(unseen[: len(unseen) // 2]), unseen[len(unseen) // 2:]
    sizes = np.array([int((groups == g).sum()) for g in learners])
    largest = len(pool) // 2
    if largest < MIN_SHADOW_SUBJECTS:
        raise FedsimError(f"property inference needs at least {4 * MIN_SHADOW_SUBJECTS} unseen subjects for its "
                          f"probes and shadow cohorts; this run has {len(unseen)}")
    before = _predictions(start.model, target, probe)

    def read(model: torch.nn.Module) -> np.ndarray:
        return behaviour(model, target, probe, women_of[probe], before)
    rng = np.random.default_rng([seed, 13])
    cohorts = [pool[_shadow_rows(rng, women_of[pool], ages[pool], int(np.clip(sizes[s % len(sizes)],
                                                                             MIN_SHADOW_SUBJECTS, largest)))]
               for s in range(shadows)]
    shadow = _Shadow(config, start.model, target, recipe, probe, women_of[probe], before)
    ids = target.cohort.subject_ids
    # what a shadow's output is computed from: the start model, the recipe, the cohort's scans, the probes (their
    # sex and age), its own subjects and seed
    setting = {"version": SHADOW_VERSION, "start": start.digest, "config": content_key(config),
               "recipe": dataclasses.asdict(recipe), "cohort": Path(str(getattr(target.cohort.volumes, "filename", "")
                                                                          or "in-memory")).name,
               "probe": [[ids[i], bool(women_of[i]), float(ages[i])] for i in probe]}
    keys = [content_key({**setting, "seed": seed + s, "rows": [ids[i] for i in rows]}) for s, rows in enumerate(cohorts)]
    X = cached_map(shadow, [(rows, seed + s) for s, rows in enumerate(cohorts)], keys=keys,
                   folder=target.run_dir / TASKS_DIR / "shadows", description="shadow updates", progress=progress)
    y = [_properties(women_of[rows], ages[rows]) for rows in cohorts]
    truth, real = [], []
    for g in learners:
        real.append(read(load_snapshot(target.run_dir, rnd, name=g).model))
        mine = groups == g
        truth.append(_properties(women_of[mine], ages[mine]))
    X_shadow, X_real = np.stack(X), np.stack(real)
    rows_out: list[dict[str, Any]] = []
    for prop in PROPERTIES:
        target_values = np.array([t[prop] for t in y])
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=_ALPHAS))
        loo = cross_val_predict(model, X_shadow, target_values, cv=LeaveOneOut())
        model.fit(X_shadow, target_values)
        estimate = np.clip(model.predict(X_real), *_BOUNDS[prop])
        loo = np.clip(loo, *_BOUNDS[prop])
        true = np.array([t[prop] for t in truth])
        average = float(true.mean())
        for g, n, t, e in zip(learners, sizes, true, estimate):
            rows_out.append({"round": rnd, "learner": g, "subjects": int(n), "property": prop, "true": float(t),
                             "estimate": float(e), "baseline": average, "error": abs(float(e) - t),
                             "baseline_error": abs(average - t), "shadows": shadows,
                             "shadow_mae": float(np.mean(np.abs(loo - target_values)))})
    return pd.DataFrame(rows_out)


def property_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per property: the attack's and the baseline's mean absolute error over learners, and the gain
    (baseline − attack error) with its Student-t interval over learners."""
    out = []
    for prop, part in rows.groupby("property", sort=False):
        gain, low, high = mean_interval(part["baseline_error"].to_numpy() - part["error"].to_numpy())
        out.append({"round": int(part["round"].iloc[0]), "property": prop, "what": PROPERTIES[prop],
                    "learners": len(part), "mae": part["error"].mean(), "baseline_mae": part["baseline_error"].mean(),
                    "gain": gain, "gain_low": low, "gain_high": high, "shadow_mae": part["shadow_mae"].iloc[0]})
    return pd.DataFrame(out)

