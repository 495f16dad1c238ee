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
from fedsim.data.bids import DESCRIPTION, BidsManifest, is_bids, write_bids_manifest
from fedsim.data.cache import CohortArray, build_cache, preprocess_workers
from fedsim.data.cohort import DEFAULT_AGES, CohortSpec, default_cohort
from fedsim.data.synthetic import AgeDistribution, AnatomyParams
from fedsim.data.manifest import load_manifest
from fedsim.data.partition import assign_groups
from fedsim.data.partition_table import partition_table
from fedsim.errors import FedsimError
from fedsim.models.sfcn import check_cohort_ages
from fedsim.progress import Progress


@dataclass(frozen=True)
class PreparedData:
    """The cached cohort and who holds which subject."""

    manifest: Path
    cohort: CohortArray
    partitions: pd.DataFrame  # subject_id, age, age_bin, group
    bids: BidsManifest | None = None  # when the cohort was a BIDS dataset: what was chosen from it

    def indices(self, group: str) -> np.ndarray:
        """Cohort row indices of one group (``L1``, ``train``, ``unseen``…), in manifest order."""
        ids = self.partitions.loc[self.partitions["group"] == group, "subject_id"].tolist()
        if not ids:
            raise FedsimError(f"no subjects in group {group!r}; groups: {', '.join(self.groups())}")
        return self.cohort.index_of(ids)

    def groups(self) -> list[str]:
        return sorted(self.partitions["group"].unique(), key=lambda g: (g[0] != "L", len(g), g))


def resolve_manifest(cfg: EnvConfig, cohort: str | Path | None, *,
                     progress: Progress | None = None) -> tuple[Path, BidsManifest | None]:
    """The manifest to train on: the user's CSV manifest, the manifest written for the user's BIDS
    dataset, or that of the embedded synthetic cohort of ``cfg`` (generated once, read as BIDS)."""
    if cohort is None:
        c = cfg.cohort
        ages = DEFAULT_AGES if c.age_range is None else AgeDistribution(tuple(c.age_range), DEFAULT_AGES.bin_weights)
        spec = CohortSpec(subjects=c.subjects, shape=tuple(c.shape), seed=c.seed, ages=ages, sites=c.sites,
                          anatomy=AnatomyParams(sex_gm_difference=c.sex_gm_difference,
                                                male_atrophy_ratio=c.male_atrophy_ratio))
        cohort = default_cohort(spec, progress=progress).parent
    cohort = Path(cohort)
    if cohort.is_dir():
        if not is_bids(cohort):
            raise FedsimError(f"--cohort {str(cohort)!r} is a directory without {DESCRIPTION}: "
                              "give a BIDS dataset or a manifest.csv")
        bids = write_bids_manifest(cohort)
        return bids.path, bids
    return cohort, None


def prepare_data(cfg: EnvConfig, cohort: str | Path | None = None, *, progress: Progress | None = None) -> PreparedData:
    """Load (or generate), preprocess and partition the cohort of an environment."""
    manifest_path, bids = resolve_manifest(cfg, cohort, progress=progress)
    manifest = load_manifest(manifest_path)
    cached = build_cache(manifest, tuple(cfg.data.shape), progress=progress, dtype=cfg.data.cache_dtype,
                         workers=preprocess_workers(cfg.data.workers, len(manifest)))
    if cfg.model.name == "sfcn":  # a classifier of age bins: the cohort must lie inside them
        check_cohort_ages(cached.ages, cfg.model.age_range)
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
        by=p.by,
        alpha=p.alpha,
        sites=list(manifest["site"].astype(str)) if p.by == "site" and "site" in manifest.columns else None,
    )
    table = partition_table(cached.subject_ids, cached.ages, groups, p.age_bins)
    return PreparedData(manifest=manifest_path, cohort=cached, partitions=table, bids=bids)
