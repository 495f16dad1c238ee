"""A run directory as an attack target: its cohort, partitions, snapshots and the rounds to attack.

Every attack family starts here. :func:`open_run` checks that a directory is a run and loads what
every seat shares (the preprocessed cohort, ``partitions.csv``, the list of complete rounds);
:func:`load_snapshot` rebuilds one model (the community model of a round, or a learner's local
model) with the loss it was trained on, how the run releases its predictions, and the digest of
its file, which keys every cache computed from it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from fedsim import snapshots
from fedsim.data.cache import CohortArray, build_cache
from fedsim.data.manifest import load_manifest
from fedsim.data.partition import learner_groups
from fedsim.data.partition_table import read_partitions
from fedsim.defenses import PerturbedPredictions, perturb_predictions, release_model
from fedsim.errors import FedsimError
from fedsim.models import build_model

__all__ = [
    "Snapshot", "Target", "has_local_models", "is_centralized", "load_snapshot", "missing_local_models", "open_run", "resolve_rounds", "run_model",
    "snapshot_digest",
]


@dataclass(frozen=True)
class Target:
    """What an attack needs from a run directory: its cohort, partitions and snapshots."""

    run_dir: Path
    cohort: CohortArray
    partitions: pd.DataFrame
    rounds: list[int]
    best_round: int | None
    #: the cohort's manifest (``subject_id``, ``age`` and, where the cohort has them, ``sex``, ``site``…)
    manifest: pd.DataFrame | None = None


def open_run(run_dir: str | Path) -> Target:
    """Load a run directory's cohort cache, partitions and list of snapshots; clear errors if not one."""
    run_dir = Path(run_dir)
    config = snapshots.read_config(run_dir)
    rounds = snapshots.complete_rounds(run_dir)
    if not rounds:
        raise FedsimError(f"run {str(run_dir)!r} has no snapshots under {snapshots.ROUNDS_DIR}/")
    manifest = config.get("cohort", {}).get("manifest")
    if manifest is None:
        raise FedsimError(f"{str(run_dir)!r}: config.toml does not record the cohort manifest")
    table = load_manifest(manifest)
    cohort = build_cache(table, tuple(config["data"]["shape"]), dtype=config["data"].get("cache_dtype", "float32"))
    partitions = read_partitions(run_dir / snapshots.PARTITIONS_FILE)
    done = snapshots.read_done(run_dir) if snapshots.is_done(run_dir) else {}
    return Target(run_dir, cohort, partitions, rounds, done.get("best_round"), table)


def is_centralized(target: Target) -> bool:
    """Whether the run trained one model on a ``train`` group (else it is a federation of learners)."""
    return "train" in set(target.partitions["group"])


def resolve_rounds(spec: str, target: Target, *, centralized: bool) -> list[int]:
    """The rounds named by ``--rounds``: ``default`` (best epoch of a centralized run, else the last),
    ``last``, ``best``, ``all`` or a comma-separated list; a round not on disk is a one-line error."""
    if spec == "default":
        spec = "best" if centralized and target.best_round is not None else "last"
    if spec == "last":
        return [target.rounds[-1]]
    if spec == "best":
        if target.best_round is None:
            raise FedsimError("--rounds best needs a finished centralized run (its DONE names the best epoch)")
        return [target.best_round]
    if spec == "all":
        return list(target.rounds)
    try:
        wanted = [int(r) for r in spec.split(",")]
    except ValueError:
        raise FedsimError(f"--rounds must be last, best, all or a comma-separated list of integers, got {spec!r}") from None
    return [attacked_round(target, r) for r in wanted]


def attacked_round(target: Target, rnd: int | None = None, *, first: int = 0) -> int:
    """Round ``rnd`` (default: the last) if its model is on disk and it is at least ``first`` (1: a trained
    round, for attacks that read what training did); every attack's one message for a round it cannot attack."""
    rnd = target.rounds[-1] if rnd is None else rnd
    lo, hi = max(first, target.rounds[0]), target.rounds[-1]
    if rnd in target.rounds and rnd < first:
        raise FedsimError(f"round {rnd} is the untrained model: attack a trained round ({lo}..{hi})")
    if rnd not in target.rounds:
        raise FedsimError(f"round {rnd} does not exist in {str(target.run_dir)!r}; rounds on disk: {lo}..{hi}")
    return rnd


@dataclass(frozen=True)
class Snapshot:
    """A target model from a run directory, with the loss it was trained on.

    ``digest`` is the SHA-256 of the weights file: caches of anything computed from this model are
    keyed by it, so a snapshot that changed on disk is never attacked with stale features.
    """

    model: nn.Module
    loss: str
    round: int
    meta: dict[str, Any]
    #: ``release(pred, x)``: the run's prediction perturbation (``[defense] prediction_noise``), or None
    release: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    name: str = "model"
    digest: str = ""

    @property
    def released(self) -> dict[str, float] | None:
        """The prediction perturbation's settings (part of any cache key of released predictions)."""
        if self.release is None:
            return None
        return dict(self.release.keywords)  # a functools.partial of perturb_predictions


def missing_local_models(target: Target, rnd: int) -> list[str]:
    """The learners whose local model of round ``rnd`` is not on disk (all of them: a run made without
    ``--snapshot-local``); what every curious-controller attack checks first."""
    return [g for g in learner_groups(target.partitions["group"])
            if not (snapshots.round_dir(target.run_dir, rnd) / f"{g}.safetensors").is_file()]


def has_local_models(target: Target, rnd: int) -> bool:
    """Whether the run kept local models of round ``rnd`` (some learner's is on disk): the curious controller's seat."""
    return len(missing_local_models(target, rnd)) < len(learner_groups(target.partitions["group"]))


def run_model(config: dict[str, Any], **changes: Any) -> nn.Module:
    """A fresh model of a run's ``config.toml`` [model] (``changes`` override its arguments, e.g. ``width``)."""
    kwargs = {k: v for k, v in config["model"].items() if k != "name"}
    kwargs["in_shape"] = tuple(kwargs["in_shape"])
    return build_model(config["model"]["name"], **{**kwargs, **changes})


def snapshot_digest(run_dir: str | Path, rnd: int, *, name: str = "model") -> str:
    """SHA-256 of the weights file of round ``rnd`` (``name``: ``model`` or a learner id): what caches of anything
    computed from that model are keyed by."""
    return hashlib.sha256((snapshots.round_dir(run_dir, rnd) / f"{name}.safetensors").read_bytes()).hexdigest()


def load_snapshot(run_dir: str | Path, rnd: int, *, name: str = "model") -> Snapshot:
    """Rebuild the model of round ``rnd`` (``name`` = ``model`` or a learner id) in eval mode."""
    run_dir = Path(run_dir)
    config = snapshots.read_config(run_dir)
    model = run_model(config)
    state, meta = snapshots.load_round(run_dir, rnd, name=name)
    model.load_state_dict(state)
    digest = snapshot_digest(run_dir, rnd, name=name)
    released = release_model(model, config)  # [defense] prediction_noise: the predictions are released noisy
    release = (functools.partial(perturb_predictions, std=released.std, seed=released.seed)
               if isinstance(released, PerturbedPredictions) else None)
    return Snapshot(model.eval(), config.get("train", {}).get("loss", "mse"), rnd, meta, release, name, digest)
