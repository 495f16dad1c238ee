"""Reference ("shadow") models for calibrated membership attacks, trained by fedsim itself.

A calibrated attack (:mod:`attacks.calibrated`) asks, for every subject, how the target's
prediction compares with those of models that did and did not train on that subject. Those
reference models are trained here with the run's own resolved configuration (``config.toml``:
model, optimizer, loss, batch size, seed handling) and the same ``fedsim.training`` loop, on random
halves of the *population* the attacker knows, for as many epochs as the target trained.

The halves come in complementary pairs (Carlini et al. 2022's "each example IN for exactly half
of the models"): reference ``2j`` trains on a random half ``H_j`` of the population and
reference ``2j + 1`` on the rest, so with ``n`` references every subject is IN for exactly
``n / 2`` of them and every reference trains on half the population. A pair depends only on the
seed and its index, so asking for 16 references after 8 trains 8 more and reuses the first 8.

Cache, one folder per (run configuration, population, epochs, seed)::

    RUN_DIR/attacks/references/<key>/
      plan.json                 what the key hashes: config hash, seed, epochs, population
      ref-00/model.safetensors  weights
      ref-00/predictions.npy    predicted ages of the whole population, in plan order
      ref-00/meta.json          written last (a reference counts once it exists): its IN subject
                                ids, seed, epochs, train MAE, seconds
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from attacks.execution import current_executor
from fedsim import snapshots
from fedsim.config import EnvConfig, from_resolved
from fedsim.data.cache import CohortArray, VolumeDataset
from fedsim.defenses import local_training, release_model, release_weights
from fedsim.device import resolve_device
from fedsim.errors import FedsimError
from fedsim.pretrained import initial_model
from fedsim.training import make_loader, predict, train_epochs

__all__ = [
    "REFERENCES_DIR", "ReferencePlan", "ReferenceSet", "Trainer", "assign_halves", "ensure_references",
    "reference_seed", "train_model",
]

#: Where reference models live inside a run directory.
REFERENCES_DIR = Path("attacks") / "references"
#: Bump when reference training changes, so old caches are not reused (2: the run's [defense] applies).
REFERENCES_VERSION = 2
_PLAN_FILE = "plan.json"
_PREDICTIONS_FILE = "predictions.npy"
#: SeedSequence stream of the references' torch seeds (a fixed value: it names cached references).
SEED_STREAM = 7919


#: ``train(cfg, rows, seed, device) -> (model in eval mode, training MAE)``: how one reference trains on cohort rows.
Trainer = Callable[[EnvConfig, np.ndarray, int, "torch.device | str"], tuple[nn.Module, float]]


def reference_seed(seed: int, index: int) -> int:
    """The torch seed of reference ``index`` (initialisation and shuffling), from the attack seed."""
    return int(np.random.SeedSequence([seed, SEED_STREAM, index]).generate_state(1)[0])


def assign_halves(n_population: int, n_references: int, *, seed: int) -> np.ndarray:
    """Which subject each reference trains on: a boolean ``(n_references, n_population)`` matrix.

    References come in complementary pairs: row ``2j`` is a random half of the population drawn
    from ``(seed, j)`` alone, row ``2j + 1`` its complement. Every subject is therefore IN for
    exactly ``n_references / 2`` references, and the first rows do not depend on how many follow.
    """
    if n_references < 2 or n_references % 2:
        raise FedsimError(
            f"the number of reference models must be an even number of at least 2 (they come in "
            f"complementary pairs), got {n_references}"
        )
    if n_population < 2:
        raise FedsimError(f"reference models need a population of at least 2 subjects, got {n_population}")
    keep = np.zeros((n_references, n_population), dtype=bool)
    for j in range(n_references // 2):
        rng = np.random.default_rng([seed, j])
        half = rng.permutation(n_population)[: n_population // 2]
        keep[2 * j, half] = True
        keep[2 * j + 1] = ~keep[2 * j]
    return keep


def train_model(
    cfg: EnvConfig,
    cohort: CohortArray,
    rows: np.ndarray,
    *,
    epochs: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, float]:
    """Train a fresh model of ``cfg`` on cohort ``rows`` for ``epochs``, as a centralized run does.

    Same constructor, optimizer, loss, batch size and ``fedsim.training`` loop as the target, and the
    same ``[defense]`` wrappers (:func:`fedsim.defenses.local_training`: DP-SGD, label noise; then
    model noise on the weights), so that references behave like the target they calibrate: the
    attacker knows the training algorithm, not its random draws. The seed sets the
    initialisation, the shuffle (or Poisson sampling) order and every defense draw (label noise
    included: the attacker does not know the target's). Returns the model (eval mode) and the training
    MAE (years) of the last epoch (nan with 0 epochs).
    """
    cfg = dataclasses.replace(cfg, seed=seed)  # the defenses' draws are this reference's own
    torch.manual_seed(seed)
    # from the same public start as the target ([train] init): the attacker knows the training algorithm
    model = initial_model(cfg).to(device)
    session = local_training(cfg, model, VolumeDataset(cohort, rows), seed=seed)
    mae = float("nan")
    if epochs > 0:
        mae = train_epochs(session.model, session.loader, session.optimizer, loss=cfg.train.loss, precision=cfg.train.precision,
                           target_scale=cfg.model.target_scale, epochs=epochs, device=device)
    if cfg.defense is not None and cfg.defense.model_noise > 0:
        model.load_state_dict(release_weights(cfg, model.state_dict(), epochs, seed))
    return model.eval(), mae


def predict_rows(model: nn.Module, cohort: CohortArray, rows: np.ndarray, *, batch_size: int = 32,
                 device: torch.device | str | None = None) -> np.ndarray:
    """Predicted ages (years, float64) of cohort ``rows``, in that order, on ``device`` (default: the
    command's, :func:`fedsim.device.resolve_device`); ``model`` is moved there."""
    device = resolve_device(device)
    loader = make_loader(VolumeDataset(cohort, rows), batch_size, shuffle=False)
    return predict(model.to(device), loader, device)[0]


@dataclass(frozen=True)
class ReferencePlan:
    """What determines a set of reference models, and so names its cache folder.

    ``config`` is the run's resolved configuration (``config.toml`` as a dict), ``population``
    the subject ids the references split into halves (in a fixed order), ``epochs`` how long each
    trains and ``seed`` the attack seed. The number of references is not part of it: the pairs
    are drawn one by one, so a larger set extends a smaller one.

    A plan may also name ``scored`` subjects outside the population, which every reference predicts
    and none trains on, and, for references that do not start from scratch, ``start``: the digest of
    the weights they start from and how they train from there (e.g. one simulated federation round,
    :mod:`attacks.membership.learner_calibrated`); both change the key, and a plan without them keeps
    the key it always had.
    """

    config: dict[str, Any]
    population: tuple[str, ...]
    epochs: int
    seed: int
    scored: tuple[str, ...] = ()
    start: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(set(self.population)) != len(self.population):
            raise FedsimError("the reference population lists a subject twice")
        if set(self.scored) & set(self.population) or len(set(self.scored)) != len(self.scored):
            raise FedsimError("a reference plan's scored subjects must be outside its population, each once")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise FedsimError(f"reference models need at least 1 training epoch, got {self.epochs!r}")

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        described = {
            "version": REFERENCES_VERSION, "config_sha256": self.config_hash(), "seed": self.seed,
            "epochs": self.epochs, "population": list(self.population),
        }
        if self.scored:
            described["scored"] = list(self.scored)
        if self.start is not None:
            described["start"] = self.start
        return described

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:12]

    def env(self) -> EnvConfig:
        return from_resolved(self.config)


@dataclass(frozen=True)
class ReferenceSet:
    """The reference models of a plan, as the attack uses them.

    ``keep[k, i]`` says whether reference ``k`` trained on population subject ``i``;
    ``predictions[k, i]`` is its predicted age of that subject (then of the plan's ``scored`` subjects, in
    their order: ``predictions`` has ``len(population) + len(scored)`` columns); ``trained`` lists the references
    trained by this call (the others were read from the cache) and ``seconds`` their training time.
    """

    folder: Path
    population: tuple[str, ...]
    keep: np.ndarray
    predictions: np.ndarray
    train_mae: np.ndarray
    trained: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.keep)


def _save_npy(path: str, values: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, values)


def _ref_dir(folder: Path, index: int) -> Path:
    return folder / f"ref-{index:02d}"


@dataclass(frozen=True)
class _ReferenceJob:
    """What one reference's task needs besides its index: a picklable callable, run in process or as a Ray task."""

    plan: ReferencePlan
    cohort: CohortArray
    folder: Path
    keep: np.ndarray
    train: Trainer | None
    device: torch.device | str | None

    def __call__(self, k: int) -> float:
        """Train reference ``k``, predict, write its files (``meta.json`` last); returns its seconds."""
        cfg = self.plan.env()
        start = time.perf_counter()
        seed = reference_seed(self.plan.seed, k)
        device = resolve_device(self.device)
        trained_rows = self.cohort.index_of(list(self.plan.population))[self.keep[k]]
        if self.train is None:
            model, mae = train_model(cfg, self.cohort, trained_rows, epochs=self.plan.epochs, seed=seed, device=device)
        else:
            model, mae = self.train(cfg, trained_rows, seed, device)
        # released predictions, as the target's are ([defense] prediction_noise: own draws)
        released = release_model(model, dataclasses.replace(cfg, seed=seed))
        predicted = self.cohort.index_of(list(self.plan.population + self.plan.scored))
        preds = predict_rows(released, self.cohort, predicted, batch_size=max(cfg.train.batch_size, 16), device=device)
        took = time.perf_counter() - start
        d = _ref_dir(self.folder, k)
        tensors = {n: v.detach().cpu().contiguous() for n, v in model.state_dict().items()}
        snapshots.atomic_write(d / snapshots.MODEL_FILE, lambda tmp: save_file(tensors, tmp))
        snapshots.atomic_write(d / _PREDICTIONS_FILE, lambda tmp: _save_npy(tmp, preds))
        meta = {
            "index": k, "seed": seed, "epochs": self.plan.epochs, "train_mae": mae, "seconds": round(took, 3),
            "n_in": len(trained_rows), "in": [str(self.cohort.subject_ids[i]) for i in trained_rows],
        }
        snapshots.write_text(d / snapshots.META_FILE, json.dumps(meta, indent=1))
        return took


def ensure_references(
    plan: ReferencePlan,
    cohort: CohortArray,
    run_dir: str | Path,
    *,
    references: int,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    train: Trainer | None = None,
) -> ReferenceSet:
    """The first ``references`` reference models of ``plan``: read from the cache, or trained.

    ``train(cfg, rows, seed, device)`` trains one reference on cohort ``rows`` (default: from scratch for
    ``plan.epochs``, :func:`train_model`); a plan with a ``start`` needs its own, which ``start`` describes.
    The references not on disk are tasks of the current executor (:func:`attacks.execution.current_executor`:
    in this process, or Ray tasks that write to the same run directory); each seeds itself from the plan's seed
    and its index alone, so both give the same references. ``progress(done, total)`` is called for those found,
    then after each one trained. A reference is on disk once its ``meta.json`` exists (weights and predictions
    are written first, each atomically), so an interrupted call resumes where it stopped.
    """
    if plan.start is not None and train is None:
        raise FedsimError("a reference plan with a start model needs the trainer its start describes")
    keep = assign_halves(len(plan.population), references, seed=plan.seed)
    folder = Path(run_dir) / REFERENCES_DIR / plan.key()
    snapshots.write_text(folder / _PLAN_FILE, json.dumps(plan.describe(), indent=1))
    missing = [k for k in range(references) if not (_ref_dir(folder, k) / snapshots.META_FILE).is_file()]
    finished = references - len(missing)
    if progress is not None and finished:
        progress(finished, references)
    took: dict[int, float] = {}

    def arrived(i: int, seconds: float) -> None:
        nonlocal finished
        took[missing[i]] = seconds
        finished += 1
        if progress is not None:
            progress(finished, references)

    # the folder absolute: a Ray worker's working directory is its own
    current_executor().map(_ReferenceJob(plan, cohort, folder.resolve(), keep, train, device), missing, done=arrived)
    predictions = np.empty((references, len(plan.population) + len(plan.scored)), dtype=np.float64)
    train_mae = np.empty(len(keep), dtype=np.float64)
    for k in range(references):
        d = _ref_dir(folder, k)
        meta = json.loads((d / snapshots.META_FILE).read_text())
        expected = [s for s, m in zip(plan.population, keep[k]) if m]
        if meta["in"] != expected:
            raise FedsimError(f"{str(d)!r} trained on other subjects than its plan says; delete {str(folder)!r} and rerun")
        predictions[k] = np.load(d / _PREDICTIONS_FILE)
        train_mae[k] = meta["train_mae"]
    return ReferenceSet(folder, plan.population, keep, predictions, train_mae, sorted(took), sum(took.values()))


def population_order(subject_ids: Sequence[str], cohort: CohortArray) -> tuple[str, ...]:
    """``subject_ids`` in cohort (manifest) order: the canonical order of a plan's population."""
    rows = np.sort(cohort.index_of(list(subject_ids)))
    return tuple(cohort.subject_ids[i] for i in rows)
