"""The Python entry points for notebooks: write a cohort, train an environment, read a run.

>>> import fedsim
>>> run = fedsim.train("skewed-iid", out="runs/skewed-iid", snapshot_local=True)
>>> run.metrics[["round", "unseen_mae"]]
>>> run.summary["memorisation_gap"]

The same functions as the commands (``fedsim train`` / ``python -m fedsim.run``, ``fedsim
centralized``, ``fedsim cohort``), with the same defaults and the same run directory; nothing
here prints. :func:`resume` continues an interrupted run. Pass ``on_round`` to see each round's metrics as it finishes, ``progress`` for the
long data steps, ``tensorboard`` for event files. The attacks read a run with :func:`attacks.audit`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fedsim import snapshots
from fedsim.config import load_env, with_overrides
from fedsim.data.cohort import CohortSpec, write_cohort
from fedsim.data.synthetic import AnatomyParams
from fedsim.device import resolve_device
from fedsim.errors import FedsimError
from fedsim.progress import Progress, on_rounds
from fedsim.tracking import require_tensorboard
from fedsim.tracking import tensorboard as tensorboard_writer

__all__ = ["RunDir", "cohort", "open_run", "resume", "train"]


@dataclass(frozen=True)
class RunDir:
    """A run directory on disk, as training left it: what was trained, its metrics and summary.

    It is a path-like (``os.fspath(run)``), so it goes wherever a run directory does.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> dict[str, Any]:
        """The resolved environment the run was trained with (``config.toml``)."""
        return snapshots.read_config(self.path)

    @property
    def rounds(self) -> list[int]:
        """The complete rounds (epochs, for a centralized run) on disk."""
        return snapshots.complete_rounds(self.path)

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per round or epoch (``metrics.jsonl``): MAEs, seconds, ε…"""
        return pd.DataFrame(snapshots.read_metrics(self.path))

    @property
    def done(self) -> bool:
        return snapshots.is_done(self.path)

    @property
    def summary(self) -> dict[str, Any]:
        """The final summary (``DONE``): the errors of the last round (best epoch) and ε; a federation's
    also has its memorisation gap (unseen − members' MAE)."""
        if not self.done:
            raise FedsimError(f"run {str(self.path)!r} is not finished (no {snapshots.DONE_FILE})")
        return snapshots.read_done(self.path)


def open_run(path: str | os.PathLike[str]) -> RunDir:
    """An existing run directory (one written by :func:`train` or a training command)."""
    run = RunDir(Path(path))
    if not (run.path / snapshots.CONFIG_FILE).is_file():
        raise FedsimError(f"{str(run.path)!r} is not a fedsim run directory (no {snapshots.CONFIG_FILE})")
    return run


def cohort(out: str | os.PathLike[str], *, subjects: int = 1000, shape: tuple[int, int, int] = (36, 43, 36),
           seed: int = 0, sites: int = 1, sex_gm_difference: float = 0.0, male_atrophy_ratio: float = 1.0,
           progress: Progress | None = None) -> Path:
    """Write a synthetic cohort (NIfTI files + ``manifest.csv``) to ``out``; returns the manifest,
    which ``train(..., cohort=…)`` takes. Reuses ``out`` if it already holds the same cohort. ``sites``,
    ``sex_gm_difference`` and ``male_atrophy_ratio`` are the ``[cohort]`` keys of the same names."""
    anatomy = AnatomyParams(sex_gm_difference=sex_gm_difference, male_atrophy_ratio=male_atrophy_ratio)
    return write_cohort(CohortSpec(subjects, tuple(shape), seed, anatomy=anatomy, sites=sites), Path(out), progress=progress)


def train(
    env: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, cohort: str | os.PathLike[str] | None = None,
    seed: int | None = None, rounds: int | None = None, snapshot_local: bool = False, ray_address: str | None = None,
    cpus_per_learner: float = 1.0, gpus_per_learner: float | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None, progress: Progress | None = None,
    tensorboard: str | os.PathLike[str] | None = None, verbose: bool = False, device: str = "auto",
) -> RunDir:
    """Train environment ``env`` into ``out`` (default ``runs/<env>-<timestamp>``) and return the run.

    A federated environment runs FedAvg on Flower + Ray as ``fedsim train`` does (``rounds``
    overrides ``[federation] rounds``; ``snapshot_local`` keeps every local model, ``ray_address``
    attaches to a cluster); a centralized one (``learners = 0``) trains as ``fedsim centralized``
    does (``rounds`` overrides ``[train] epochs``; the Ray options do not apply; ``device`` is its
    ``--device``: CUDA when torch sees it). ``on_round(metrics)`` is called after every round or
    epoch. The caller's torch random state is left as it was.
    """
    from fedsim.centralized import new_centralized_run, train_centralized  # torch: only when training
    from fedsim.federation import runs
    from fedsim.federation.simulation import ray_address as resolve_address

    cfg = load_env(env)
    resolve_device(device)  # a device that is not there fails now
    centralized = cfg.partition.learners == 0
    if not centralized and device != "auto":
        raise FedsimError(f"environment {cfg.name!r} is federated: its learners' device is gpus_per_learner's, not device")
    if centralized and (snapshot_local or ray_address or cpus_per_learner != 1.0 or gpus_per_learner is not None):
        raise FedsimError(f"environment {cfg.name!r} is centralized: snapshot_local and the Ray options do not apply")
    address = resolve_address(ray_address)
    runs.check_options(rounds=rounds, address=address, cpus=cpus_per_learner, gpus=gpus_per_learner)
    if tensorboard is not None:
        require_tensorboard()
    out = None if out is None else Path(out)
    with torch.random.fork_rng(devices=[]), on_rounds(on_round), _tensorboard(tensorboard):
        if centralized:
            cfg = with_overrides(cfg, seed=seed, train={"epochs": rounds})
            data, run_dir = new_centralized_run(cfg, cohort, out, progress=progress)
            train_centralized(cfg, data, run_dir, device=resolve_device(device))
        else:
            cfg = with_overrides(cfg, seed=seed, federation={"rounds": rounds, "snapshot_local": snapshot_local or None})
            run_dir = runs.new_run(cfg, cohort, out, progress=progress)
            runs.place_learners(run_dir, address=address, cpus=cpus_per_learner, gpus=gpus_per_learner)
            runs.federate(run_dir, address=address, verbose=verbose)
    return RunDir(run_dir)


def resume(
    run: str | os.PathLike[str], *, rounds: int | None = None, ray_address: str | None = None,
    cpus_per_learner: float = 1.0, gpus_per_learner: float | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None, tensorboard: str | os.PathLike[str] | None = None,
    verbose: bool = False,
) -> RunDir:
    """Continue an interrupted federated run from its last complete round (``rounds``: extend a
    finished one), as ``fedsim train --resume`` does; it reproduces the uninterrupted run."""
    from fedsim.federation import runs
    from fedsim.federation.simulation import ray_address as resolve_address

    run_dir = open_run(run).path
    address = resolve_address(ray_address)
    runs.check_options(rounds=rounds, address=address, cpus=cpus_per_learner, gpus=gpus_per_learner)
    if tensorboard is not None:
        require_tensorboard()
    runs.resume_run(run_dir, rounds)
    runs.place_learners(run_dir, address=address, cpus=cpus_per_learner, gpus=gpus_per_learner)
    with torch.random.fork_rng(devices=[]), on_rounds(on_round), _tensorboard(tensorboard):
        runs.federate(run_dir, address=address, verbose=verbose)
    return RunDir(run_dir)


def _tensorboard(log_dir: str | os.PathLike[str] | None):
    return tensorboard_writer(None if log_dir is None else Path(log_dir))
