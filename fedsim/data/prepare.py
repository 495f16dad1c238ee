"""From an environment to training-ready data: cohort → cache → partitions.

Every command that reads a cohort goes through :func:`prepare_data`, so ``--cohort
MANIFEST.csv`` (a user's data) and the embedded synthetic cohort take the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.config import EnvConfig
from fedsim.data.cache import CohortArray, build_cache
from fedsim.data.cohort import CohortSpec, default_cohort
from fedsim.data.manifest import load_manifest
from fedsim.data.partition import assign_groups, partition_table
from fedsim.errors import FedsimError
from fedsim.progress import Progress


@dataclass(frozen=True)
class PreparedData:
    """The cached cohort and who holds which subject."""

    manifest: Path
    cohort: CohortArray
    partitions: pd.DataFrame  # subject_id, age, age_bin, group

    def indices(self, group: str) -> np.ndarray:
        """Cohort row indices of one group (``L1``, ``train``, ``unseen``…), in manifest order."""
        ids = self.partitions.loc[self.partitions["group"] == group, "subject_id"].tolist()
        if not ids:
            raise FedsimError(f"no subjects in group {group!r}; groups: {', '.join(self.groups())}")
        return self.cohort.index_of(ids)

    def groups(self) -> list[str]:
        return sorted(self.partitions["group"].unique(), key=lambda g: (g[0] != "L", len(g), g))


def resolve_manifest(cfg: EnvConfig, cohort: str | Path | None, *, progress: Progress | None = None) -> Path:
    """The user's manifest, or the embedded synthetic cohort of ``cfg`` (generated once)."""
    if cohort is not None:
        return Path(cohort)
    spec = CohortSpec(subjects=cfg.cohort.subjects, shape=tuple(cfg.cohort.shape), seed=cfg.cohort.seed)
    return default_cohort(spec, progress=progress)


def prepare_data(cfg: EnvConfig, cohort: str | Path | None = None, *, progress: Progress | None = None) -> PreparedData:
    """Load (or generate), preprocess and partition the cohort of an environment."""
    manifest_path = resolve_manifest(cfg, cohort, progress=progress)
    manifest = load_manifest(manifest_path)
    cached = build_cache(manifest, tuple(cfg.data.shape), progress=progress)
    p = cfg.partition
    groups = assign_groups(
        cached.ages,
        learners=p.learners,
        unseen=p.unseen_fraction,
        n_bins=p.age_bins,
        learner_weights=p.learner_weights,
        age_bin_weights=p.age_bin_weights,
        val_fraction=p.val_fraction,
        seed=cfg.seed,
    )
    table = partition_table(cached.subject_ids, cached.ages, groups, p.age_bins)
    return PreparedData(manifest=manifest_path, cohort=cached, partitions=table)
