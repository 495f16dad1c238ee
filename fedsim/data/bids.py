"""A BIDS dataset (raw, or a derivatives dataset with ``space-MNI…`` T1s) as a fedsim manifest.

``participants.tsv`` gives age (required), sex and site; each subject contributes one T1: a
``space-MNI…`` image when the dataset has them, else the plain ``_T1w``, from the first session
and the lowest run. Which file was taken, and why, is written beside the manifest
(``choices.csv``) whenever a subject had more than one, so nothing is chosen silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import pandas as pd

from fedsim.errors import FedsimError
from fedsim.paths import fedsim_home

DESCRIPTION = "dataset_description.json"
PARTICIPANTS = "participants.tsv"
CHOICES = "choices.csv"
SOURCE = "source.json"
MNI_XFORM_CODE = 4  # NIfTI's xform code for MNI 152 space
_ENTITY = re.compile(r"_(ses|run|space)-([A-Za-z0-9]+)")


@dataclass(frozen=True)
class BidsManifest:
    """The manifest written for a BIDS dataset, and the subjects for whom a T1 had to be chosen."""

    path: Path
    subjects: int
    chosen: int  # subjects with several T1s (see choices.csv)
    skipped: int  # participants without any T1
    native: int  # T1s neither named space-MNI… nor marked MNI in their header: fedsim does not register them


def is_bids(path: Path) -> bool:
    return path.is_dir() and (path / DESCRIPTION).is_file()


def _entities(name: str) -> dict[str, str]:
    return dict(_ENTITY.findall(name))


def _natural(label: str) -> tuple:
    """``2`` before ``10``; labels that are not numbers after those that are, alphabetically."""
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def _rank(path: Path) -> tuple:
    """First session, lowest run (numerically), then the name: the order in which T1s are preferred."""
    e = _entities(path.name)
    return (_natural(e.get("ses", "")), _natural(e.get("run", "")), path.name)


def _t1_images(subject_dir: Path) -> list[Path]:
    found = [p for pattern in ("anat/*_T1w.nii*", "ses-*/anat/*_T1w.nii*") for p in subject_dir.glob(pattern)]
    mni = [p for p in found if _entities(p.name).get("space", "").startswith("MNI")]
    return sorted(mni or [p for p in found if "space" not in _entities(p.name)], key=_rank)


def _participants_path(root: Path) -> Path:
    """``participants.tsv`` of the dataset, or — a derivatives dataset such as ``derivatives/fmriprep``
    usually has none — of the raw dataset two levels up."""
    candidates = [root / PARTICIPANTS]
    if root.parent.name == "derivatives":
        candidates.append(root.parent.parent / PARTICIPANTS)
    return next((p for p in candidates if p.is_file()), candidates[0])


def _in_mni(path: Path) -> bool:
    """A ``space-MNI…`` file, or one whose header says MNI space (sform or qform code 4)."""
    if _entities(path.name).get("space", "").startswith("MNI"):
        return True
    header = nib.load(str(path)).header
    return MNI_XFORM_CODE in (int(header["sform_code"]), int(header["qform_code"]))


def _read_participants(root: Path) -> pd.DataFrame:
    path = _participants_path(root)
    if not path.is_file():
        raise FedsimError(f"BIDS dataset {str(root)!r} has no {PARTICIPANTS}; fedsim needs each participant's age there")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise FedsimError(f"{str(path)!r} is not a readable TSV ({err})") from None
    for column in ("participant_id", "age"):
        if column not in table.columns:
            raise FedsimError(f"{str(path)!r} lacks the column {column!r}")
    return table


def bids_rows(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Manifest rows (absolute paths), the choices made for subjects with several T1s, and how many
    participants had none. Ages are checked by :func:`fedsim.data.manifest.load_manifest` afterwards."""
    root = Path(root).resolve()
    participants = _read_participants(root)
    rows, choices, skipped = [], [], 0
    for i, p in enumerate(participants.itertuples(index=False)):
        sid = str(p.participant_id).strip()
        if not sid.startswith("sub-"):
            raise FedsimError(f"{str(root / PARTICIPANTS)!r} line {i + 2}: participant_id {sid!r} does not start with 'sub-'")
        images = _t1_images(root / sid)
        if not images:
            skipped += 1
            continue
        row = {"subject_id": sid, "path": str(images[0]), "age": p.age}
        for column in ("sex", "site"):
            if column in participants.columns:
                row[column] = getattr(p, column)
        rows.append(row)
        if len(images) > 1:
            choices.append({"subject_id": sid, "taken": images[0].relative_to(root).as_posix(),
                            "others": " ".join(x.relative_to(root).as_posix() for x in images[1:])})
    if not rows:
        raise FedsimError(f"BIDS dataset {str(root)!r}: no participant has a T1 (sub-*/[ses-*/]anat/*_T1w.nii[.gz])")
    return pd.DataFrame(rows), pd.DataFrame(choices, columns=["subject_id", "taken", "others"]), skipped


def write_bids_manifest(root: Path) -> BidsManifest:
    """The manifest of a BIDS dataset, written once under ``$FEDSIM_HOME/bids/`` and keyed by the
    dataset's participants table and chosen files (path, size, modification time)."""
    rows, choices, skipped = bids_rows(root)
    h = hashlib.sha256(_participants_path(Path(root).resolve()).read_bytes())
    for path in rows["path"]:
        st = Path(path).stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    out = fedsim_home() / "bids" / h.hexdigest()[:16]
    if (out / "manifest.csv").is_file():  # the same dataset again: no header reads, nothing rewritten
        s = json.loads((out / SOURCE).read_text())
        return BidsManifest(out / "manifest.csv", s["subjects"], s["chosen"], s["skipped"], s["native"])
    out.mkdir(parents=True, exist_ok=True)
    choices.to_csv(out / CHOICES, index=False)
    native = sum(not _in_mni(Path(p)) for p in rows["path"])
    written = BidsManifest(out / "manifest.csv", len(rows), len(choices), skipped, native)
    (out / SOURCE).write_text(json.dumps({"bids_root": str(Path(root).resolve()), "subjects": written.subjects,
                                          "chosen": written.chosen, "skipped": written.skipped, "native": native}))
    partial = out / "manifest.csv.partial"
    rows.to_csv(partial, index=False)
    os.replace(partial, out / "manifest.csv")  # last, and atomic: a manifest means the folder is complete
    return written


def describe(manifest: Path) -> str | None:
    """One line on what was taken from the BIDS dataset behind ``manifest`` (None for a CSV manifest)."""
    source = Path(manifest).parent / SOURCE
    if not source.is_file():
        return None
    s = json.loads(source.read_text())
    line = f"BIDS dataset {s['bids_root']}: {s['subjects']} subjects"
    if s["chosen"]:
        line += f"; {s['chosen']} had several T1s, took the first session and run ({Path(manifest).parent / CHOICES})"
    if s["skipped"]:
        line += f"; {s['skipped']} participant(s) without a T1 left out"
    if s.get("native"):
        line += (f"; {s['native']} T1(s) not in a space-MNI file: fedsim resamples but does not register, so these must "
                 "already be in MNI space (else give an MNI-space derivative)")
    return line
