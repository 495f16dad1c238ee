"""Write the synthetic cohort as a BIDS dataset of real NIfTI files (plus ``manifest.csv``), and
find the default one.

The default run and a user's real data take the same code path: the default cohort is read
through the BIDS reader (:mod:`fedsim.data.bids`) that reads a user's dataset, and the CSV
manifest beside it is the other input format. ``python -m fedsim.data.cohort --out DIR --subjects N --shape 36 43 36 --seed S`` writes one.
"""

from __future__ import annotations

# ``python -m fedsim.data.cohort`` is the command (fedsim.cli.cohort): it takes over before this
# module's own imports, so that --help loads none of them and the command imports this module once, by its name.
if __name__ == "__main__":
    from fedsim.cli import run_cli
    from fedsim.cli.cohort import main

    raise SystemExit(run_cli(main))

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from fedsim.config import tomllib
from fedsim.errors import FedsimError
from fedsim.paths import fedsim_home
from fedsim.progress import Progress, counted
from fedsim.data.bids import DESCRIPTION, PARTICIPANTS
from fedsim.data.cache import preprocess_workers
from fedsim.data.geometry import grid_affine
from fedsim.data.synthetic import AgeDistribution, AnatomyParams, make_subject, site_name

_DEFAULTS = tomllib.loads((Path(__file__).parent / "cohort_defaults.toml").read_text())
DEFAULT_AGES = AgeDistribution(tuple(_DEFAULTS["age_range"]), tuple(_DEFAULTS["age_bin_weights"]))
MANIFEST = "manifest.csv"
_SPEC_FILE = "cohort.json"
# int16 storage with this slope: 0.001 intensity units per step, as scanners store T1s.
_INTENSITY_SLOPE = 1e-3
# Bump when what the generator writes changes (2: the BIDS layout; 3: FSL-anchored grids; 4: sex
# effects and sites), so no stale cohort is reused.
GENERATOR_VERSION = 4


@dataclass(frozen=True)
class CohortSpec:
    """Everything that determines a synthetic cohort; its hash names the cached copy."""

    subjects: int
    shape: tuple[int, int, int]
    seed: int = 0
    ages: AgeDistribution = DEFAULT_AGES
    anatomy: AnatomyParams = field(default_factory=AnatomyParams)
    sites: int = 1
    generator_version: int = GENERATOR_VERSION

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def write_cohort(spec: CohortSpec, out: Path, *, progress: Progress | None = None) -> Path:
    """Generate ``spec`` into ``out`` as a BIDS dataset and return the path of its ``manifest.csv``.

    Files are written to ``out.partial`` and renamed at the end, so an interrupted run never
    leaves a half cohort that looks complete. An existing cohort with the same spec is reused.
    """
    if spec.subjects < 1:
        raise FedsimError(f"--subjects must be at least 1, got {spec.subjects}")
    if spec.sites < 1:
        raise FedsimError(f"--sites must be at least 1, got {spec.sites}")
    if not 0 <= spec.anatomy.sex_gm_difference < 1:
        raise FedsimError(f"--sex-gm-difference must be in [0, 1), got {spec.anatomy.sex_gm_difference}")
    if not spec.anatomy.male_atrophy_ratio > 0:
        raise FedsimError(f"--male-atrophy-ratio must be positive, got {spec.anatomy.male_atrophy_ratio}")
    if min(spec.shape) < 8:
        raise FedsimError(f"--shape must be at least 8 voxels per side, got {list(spec.shape)}")
    out = Path(out)
    if (out / MANIFEST).is_file():
        existing = json.loads((out / _SPEC_FILE).read_text()) if (out / _SPEC_FILE).is_file() else None
        if existing == json.loads(json.dumps(asdict(spec))):
            return out / MANIFEST
        raise FedsimError(f"{out} already holds a different cohort; choose another --out or delete it")
    if out.exists() and any(out.iterdir()):
        raise FedsimError(f"{out} exists and is not empty; choose another --out or delete it")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    workers = preprocess_workers(0, spec.subjects)
    if workers == 1:
        written = (_write_subject(spec, i, partial) for i in range(spec.subjects))
    else:  # subject i depends on [seed, i] alone: the same files whichever process writes them
        written = Parallel(n_jobs=workers, return_as="generator", batch_size=2)(
            delayed(_write_subject)(spec, i, partial) for i in range(spec.subjects))
    rows = list(counted(written, spec.subjects, "writing synthetic T1s", progress))
    table = pd.DataFrame(rows)
    table.to_csv(partial / MANIFEST, index=False)
    participants = table.drop(columns="path").rename(columns={"subject_id": "participant_id"})
    participants.to_csv(partial / PARTICIPANTS, sep="\t", index=False)
    (partial / DESCRIPTION).write_text(json.dumps(
        {"Name": f"fedsim synthetic cohort {spec.key()}", "BIDSVersion": "1.9.0", "DatasetType": "raw",
         "GeneratedBy": [{"Name": "fedsim", "Description": "deformed nilearn MNI152 templates (fedsim.data.synthetic)"}]},
        indent=2))
    (partial / _SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2))
    write_preview(partial / MANIFEST, partial / "preview.png")
    if out.exists():
        out.rmdir()
    os.replace(partial, out)
    return out / MANIFEST


def _write_subject(spec: CohortSpec, i: int, folder: Path) -> dict[str, object]:
    """Subject ``i`` of ``spec`` as ``folder/sub-…/anat/sub-…_T1w.nii.gz``; its manifest row. Drawn from
    ``[seed, i]`` alone, so the cohort is the same whichever process writes which subject."""
    subject = make_subject(i, shape=spec.shape, seed=spec.seed, ages=spec.ages, anatomy=spec.anatomy, sites=spec.sites)
    sid = f"sub-{i + 1:05d}"
    rel = f"{sid}/anat/{sid}_T1w.nii.gz"
    (folder / sid / "anat").mkdir(parents=True)
    img = nib.Nifti1Image(np.round(subject.image / _INTENSITY_SLOPE).astype(np.int16), grid_affine(spec.shape))
    img.header.set_slope_inter(_INTENSITY_SLOPE, 0.0)
    img.header.set_xyzt_units("mm")
    img.set_sform(img.affine, code="mni")  # the header says: MNI space (NIfTI xform code 4)
    img.set_qform(img.affine, code="mni")
    nib.save(img, folder / rel)
    return {"subject_id": sid, "path": rel, "age": round(subject.age, 2), "sex": subject.sex,
            "site": site_name(subject.site, spec.sites), "bio_age": round(subject.bio_age, 2)}


def write_preview(manifest: Path, png: Path) -> None:
    """Mid-slices of the youngest and oldest subject, to check atrophy by eye (no pyplot state)."""
    from matplotlib.figure import Figure

    df = pd.read_csv(manifest)
    picks = [df.loc[df["age"].idxmin()], df.loc[df["age"].idxmax()]]
    fig = Figure(figsize=(9, 6))
    axes = fig.subplots(2, 3)
    for row_axes, row in zip(axes, picks):
        vol = np.asarray(nib.load(manifest.parent / row["path"]).dataobj, dtype=np.float32)
        mid = [s // 2 for s in vol.shape]
        views = [vol[mid[0]], vol[:, mid[1]], vol[:, :, mid[2]]]
        for ax, view, title in zip(row_axes, views, ["sagittal", "coronal", "axial"]):
            ax.imshow(view.T, origin="lower", cmap="gray")
            ax.set_axis_off()
            ax.set_title(f"{row['subject_id']} age {row['age']:.1f}: {title}", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def default_cohort(spec: CohortSpec, *, progress: Progress | None = None) -> Path:
    """The embedded synthetic cohort for ``spec``: generated on first use, reused afterwards."""
    out = fedsim_home() / "cohorts" / f"synthetic-{spec.key()}"
    return write_cohort(spec, out, progress=progress)

