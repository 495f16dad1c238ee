"""What the controller and every learner read from a run directory, and nothing else.

The launcher writes ``config.toml`` (the resolved environment plus a ``[run]`` table with the
cache folder and learner resources) and ``partitions.csv`` before Flower starts; both apps then
rebuild their whole view of the run from those files. That keeps the apps thin, makes ``flwr
run`` (which passes only ``run-dir``) and a resumed run see exactly what the original run saw,
and works on a Ray cluster where the run dir lives on shared storage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim import snapshots
from fedsim.config import EnvConfig, from_resolved
from fedsim.data.cache import VolumeDataset, build_cache
from fedsim.data.manifest import load_manifest
from fedsim.data.partition import learner_label
from fedsim.data.partition_table import read_partitions, write_partitions
from fedsim.data.prepare import PreparedData
from fedsim.errors import FedsimError
from fedsim.federation import keys
from fedsim.federation.malicious import write_attack_record
from fedsim.paths import fedsim_home
from fedsim.plots import plot_partitions
from fedsim.provenance import PROVENANCE_TABLE, provenance

RUN_TABLE = "run"  # the [run] table of config.toml: facts of this run, not of the environment


def resolve_run_dir(run_config: Mapping[str, Any]) -> Path:
    """``run-dir`` from ``flwr run``'s run config, else ``$FEDSIM_RUN_DIR`` (set by the launcher,
    because ``run_simulation`` leaves the run config empty)."""
    value = run_config.get(keys.RUN_DIR) or os.environ.get(keys.ENV_RUN_DIR)
    if not value:
        raise FedsimError(
            f"no run directory: pass --run-config \"{keys.RUN_DIR}='runs/x'\" to flwr run "
            f"or set {keys.ENV_RUN_DIR} (python -m fedsim.run does this)"
        )
    return Path(str(value))


def learner_seed(seed: int, rnd: int, learner: str) -> int:
    """Shuffle/initialisation seed of one learner in one round.

    It depends only on (environment seed, absolute round, learner), never on which actor or in
    which order a learner runs, so a resumed run replays an uninterrupted one exactly.
    """
    k = int(learner.removeprefix("L"))
    return int(np.random.SeedSequence([seed, rnd, k]).generate_state(1)[0])


def write_run_setup(run_dir: Path, cfg: EnvConfig, data: PreparedData, run: dict[str, Any]) -> None:
    """What the apps (and the attacks) read: ``config.toml`` (+ ``[run]`` and ``[provenance]``: what
    produced the run), ``partitions.csv`` and its figure. Centralized runs write the same."""
    config = cfg.to_dict(manifest=data.manifest)
    config[RUN_TABLE] = {"cache_dir": str(fedsim_home().resolve() / "cache"), **run}
    config[PROVENANCE_TABLE] = provenance()
    snapshots.write_config(run_dir, config)
    write_partitions(data.partitions, run_dir / snapshots.PARTITIONS_FILE)
    if cfg.attack is not None and cfg.attack.active:
        write_attack_record(run_dir, cfg, data.partitions)
    plot_partitions(data.partitions, run_dir / "partitions.png")


def update_config(run_dir: Path, table: str, **values: Any) -> None:
    """Change what a resume may change (resources in ``[run]``, ``[federation] rounds``)."""
    config = snapshots.read_config(run_dir)
    config.setdefault(table, {}).update(values)
    snapshots.write_config(run_dir, config)


@dataclass(frozen=True)
class RunSetup:
    """A run directory, read back: configuration, partitions and (lazily) the cached cohort."""

    run_dir: Path
    cfg: EnvConfig
    partitions: pd.DataFrame
    manifest: Path
    cache_dir: Path
    run: dict[str, Any]

    @classmethod
    def load(cls, run_dir: str | Path) -> RunSetup:
        """Read ``config.toml`` and ``partitions.csv``; a clear error if ``run_dir`` is not a run."""
        run_dir = Path(run_dir)
        raw = snapshots.read_config(run_dir)
        where = str(run_dir / snapshots.CONFIG_FILE)
        cfg = from_resolved(raw, where=where)
        if cfg.federation is None or cfg.partition.learners < 1:
            raise FedsimError(f"{where}: not a federated run (no learners); use python -m fedsim.centralized")
        run = raw.get(RUN_TABLE, {})
        if "manifest" not in raw.get("cohort", {}) or "cache_dir" not in run:
            raise FedsimError(f"{where}: lacks [cohort] manifest or [run] cache_dir; it was not written by fedsim.run")
        partitions = read_partitions(run_dir / snapshots.PARTITIONS_FILE)
        return cls(run_dir, cfg, partitions, Path(raw["cohort"]["manifest"]), Path(run["cache_dir"]), run)

    @property
    def learners(self) -> list[str]:
        """``L1..LK`` in order; partition id ``i`` is learner ``L{i+1}``."""
        return [learner_label(k + 1) for k in range(self.cfg.partition.learners)]

    def sample_counts(self) -> dict[str, int]:
        """Subjects per group (learners and unseen), from ``partitions.csv``."""
        counts = self.partitions["group"].value_counts()
        return {g: int(counts.get(g, 0)) for g in [*self.learners, "unseen"]}

    @cached_property
    def data(self) -> PreparedData:
        """The cached cohort (memory-mapped), built once by the launcher and only opened here."""
        manifest = load_manifest(self.manifest)
        cohort = build_cache(manifest, tuple(self.cfg.data.shape), cache_dir=self.cache_dir, dtype=self.cfg.data.cache_dtype)
        return PreparedData(manifest=self.manifest, cohort=cohort, partitions=self.partitions)

    def dataset(self, group: str) -> VolumeDataset:
        """One learner's (or the unseen set's) subjects."""
        return VolumeDataset(self.data.cohort, self.data.indices(group))

    def dataset_of(self, subject_ids: list[str]) -> VolumeDataset:
        """The named subjects, in that order (an active attacker's targets)."""
        return VolumeDataset(self.data.cohort, self.data.cohort.index_of(subject_ids))
