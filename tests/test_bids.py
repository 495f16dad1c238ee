"""BIDS datasets as cohorts: raw and derivatives, one T1 per subject (and which, when there are several)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fedsim.data.bids import CHOICES, is_bids, write_bids_manifest
from fedsim.data.geometry import grid_affine
from fedsim.data.manifest import load_manifest
from fedsim.errors import FedsimError

SHAPE = (16, 20, 16)


def _t1(path: Path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(int(value)).random(SHAPE).astype(np.float32) + value
    nib.save(nib.Nifti1Image(data, grid_affine(SHAPE)), path)


def _dataset(root: Path, *, derivative: bool = False) -> Path:
    root.mkdir()
    kind = {"DatasetType": "derivative"} if derivative else {}
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0", **kind}))
    pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03", "sub-04"], "age": [61.5, 70, 55, 80],
                  "sex": ["F", "M", "F", "M"], "site": ["a", "a", "b", "b"]}).to_csv(root / "participants.tsv",
                                                                                  sep="\t", index=False)
    space = "_space-MNI152NLin2009cAsym" if derivative else ""
    _t1(root / "sub-01" / "anat" / f"sub-01{space}_T1w.nii.gz", 1)
    _t1(root / "sub-02" / "ses-2" / "anat" / f"sub-02_ses-2{space}_T1w.nii.gz", 2)  # two sessions:
    _t1(root / "sub-02" / "ses-1" / "anat" / f"sub-02_ses-1{space}_T1w.nii.gz", 3)  # ses-1 is taken
    _t1(root / "sub-03" / "anat" / f"sub-03_run-2{space}_T1w.nii.gz", 4)  # two runs: run-1 is taken
    _t1(root / "sub-03" / "anat" / f"sub-03_run-1{space}_T1w.nii.gz", 5)
    if derivative:  # a derivative also holds native-space T1s: the MNI ones are preferred
        _t1(root / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz", 6)
    return root  # sub-04 has no T1 at all


@pytest.mark.parametrize("derivative", [False, True], ids=["raw", "derivatives"])
def test_bids_dataset_becomes_a_manifest_with_one_t1_per_subject(tmp_path: Path, derivative: bool):
    root = _dataset(tmp_path / "ds", derivative=derivative)
    assert is_bids(root) and not is_bids(tmp_path)
    written = write_bids_manifest(root)
    manifest = load_manifest(written.path)
    assert list(manifest["subject_id"]) == ["sub-01", "sub-02", "sub-03"]
    assert (written.subjects, written.chosen, written.skipped) == (3, 2, 1)
    assert written.native == (0 if derivative else 3)  # _t1 writes sform code 0 (unknown space)
    names = [Path(p).name for p in manifest["path"]]
    space = "_space-MNI152NLin2009cAsym" if derivative else ""
    assert names == [f"sub-01{space}_T1w.nii.gz", f"sub-02_ses-1{space}_T1w.nii.gz", f"sub-03_run-1{space}_T1w.nii.gz"]
    assert list(manifest["age"]) == [61.5, 70.0, 55.0] and list(manifest["site"]) == ["a", "a", "b"]
    choices = pd.read_csv(written.path.parent / CHOICES)
    assert list(choices["subject_id"]) == ["sub-02", "sub-03"] and "ses-2" in choices["others"][0]
    assert write_bids_manifest(root) == written  # keyed by content: the same folder, read back, again


@pytest.mark.parametrize("change, match", [
    (lambda r: (r / "participants.tsv").unlink(), "has no participants.tsv"),
    (lambda r: (r / "participants.tsv").write_text("participant_id\tsex\nsub-01\tF\n"), "lacks the column 'age'"),
    (lambda r: (r / "participants.tsv").write_text("participant_id\tage\n01\t60\n"), "does not start with 'sub-'"),
    (lambda r: (r / "participants.tsv").write_text("participant_id\tage\nsub-04\t60\n"), "no participant has a T1"),
    (lambda r: (r / "participants.tsv").write_text("participant_id\tage\nsub-01\tn/a\n"), "age 'n/a' is not a positive"),
])
def test_bad_bids_datasets_are_one_line(tmp_path: Path, change, match):
    root = _dataset(tmp_path / "ds")
    change(root)
    with pytest.raises(FedsimError, match=match) as err:
        load_manifest(write_bids_manifest(root).path)
    assert "\n" not in str(err.value)


def test_the_synthetic_cohort_is_a_bids_dataset_read_like_a_users(tiny_manifest: Path):
    from fedsim.config import load_env
    from fedsim.data.prepare import prepare_data

    root = tiny_manifest.parent
    assert is_bids(root) and (root / "sub-00001" / "anat" / "sub-00001_T1w.nii.gz").is_file()
    cfg = load_env("tiny")
    as_bids, as_csv = prepare_data(cfg, root), prepare_data(cfg, tiny_manifest)
    assert as_bids.bids is not None and as_csv.bids is None
    assert as_bids.bids.native == 0  # its headers say MNI space
    assert as_bids.cohort.subject_ids == as_csv.cohort.subject_ids
    np.testing.assert_array_equal(as_bids.cohort.volumes, as_csv.cohort.volumes)
    pd.testing.assert_frame_equal(as_bids.partitions, as_csv.partitions)


def test_a_federation_by_site_from_a_bids_dataset(tmp_path: Path, tiny_manifest: Path):
    import shutil

    from federations import federate
    from fedsim.config import env_path
    from fedsim.data.partition_table import read_partitions

    root = tmp_path / "sites"
    shutil.copytree(tiny_manifest.parent, root)
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    participants["site"] = ["berlin", "oslo", "lyon"] * (len(participants) // 3)
    participants.to_csv(root / "participants.tsv", sep="\t", index=False)
    env = tmp_path / "by-site.toml"
    env.write_text(env_path("tiny").read_text().replace("learner_weights = [3, 2, 1]", 'by = "site"'))
    run = federate(tmp_path / "run", root, env=env, rounds=1)
    groups = read_partitions(run / "partitions.csv").merge(
        participants.rename(columns={"participant_id": "subject_id"})[["subject_id", "site"]], on="subject_id")
    held = groups[groups["group"] != "unseen"].groupby("group")["site"].agg(set).to_dict()
    assert held == {"L1": {"berlin"}, "L2": {"lyon"}, "L3": {"oslo"}}  # sites in sorted order


def test_sessions_and_runs_are_ordered_as_numbers_and_derivatives_read_the_raw_participants(tmp_path: Path):
    from fedsim.data.bids import describe

    raw = _dataset(tmp_path / "study")
    _t1(raw / "sub-04" / "ses-10" / "anat" / "sub-04_ses-10_T1w.nii.gz", 7)
    _t1(raw / "sub-04" / "ses-2" / "anat" / "sub-04_ses-2_T1w.nii.gz", 8)  # ses-2 comes before ses-10
    assert Path(load_manifest(write_bids_manifest(raw).path)["path"][3]).name == "sub-04_ses-2_T1w.nii.gz"
    fmriprep = raw / "derivatives" / "fmriprep"  # no participants.tsv of its own, as fMRIPrep writes it
    fmriprep.mkdir(parents=True)
    (fmriprep / "dataset_description.json").write_text(json.dumps({"Name": "fmriprep", "DatasetType": "derivative"}))
    _t1(fmriprep / "sub-01" / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz", 9)
    written = write_bids_manifest(fmriprep)
    assert list(load_manifest(written.path)["age"]) == [61.5] and written.native == 0
    assert "not in a space-MNI file" in describe(write_bids_manifest(raw).path)
