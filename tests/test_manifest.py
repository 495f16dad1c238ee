"""Manifest validation: every bad row is one sentence naming the file and the line."""

from __future__ import annotations

import pytest

from fedsim.data.manifest import load_manifest
from fedsim.errors import FedsimError


@pytest.fixture
def image(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"scan a")
    (tmp_path / "b.nii.gz").write_bytes(b"scan b")
    (tmp_path / "copy-of-a.nii.gz").write_bytes(b"scan a")
    return tmp_path


def _write(dirpath, text):
    path = dirpath / "manifest.csv"
    path.write_text(text)
    return path


def test_valid_manifest_resolves_relative_paths(image):
    df = load_manifest(_write(image, "subject_id,path,age,sex\ns1,a.nii.gz,60.5,F\ns2,b.nii.gz,70,M\n"))
    assert list(df["subject_id"]) == ["s1", "s2"]
    assert df["path"][0] == str((image / "a.nii.gz").resolve())
    assert df["age"].tolist() == [60.5, 70.0]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "is empty"),
        ("subject_id,path,age\n", "has no subjects"),
        ("subject_id,path\ns1,a.nii.gz\n", "lacks column.*age"),
        ("subject_id,path,age\ns1,a.nii.gz,60\ns1,b.nii.gz,61\n", "line 3: duplicate subject_id 's1' \\(first on line 2\\)"),
        ("subject_id,path,age\ns1,a.nii.gz,sixty\n", "line 2 \\(subject 's1'\\): age 'sixty' is not a positive number"),
        ("subject_id,path,age\ns1,a.nii.gz,\n", "line 2 \\(subject 's1'\\): age .* is not a positive number"),
        ("subject_id,path,age\ns1,a.nii.gz,nan\n", "age .* is not a positive number"),
        ("subject_id,path,age\ns1,a.nii.gz,60\ns2,b.nii.gz,-4\n", "line 3 \\(subject 's2'\\): age .*-4"),
        ("subject_id,path,age\ns1,missing.nii.gz,60\n", "line 2 \\(subject 's1'\\): image file 'missing.nii.gz' not found"),
        ("subject_id,path,age\n,a.nii.gz,60\n", "line 2: empty subject_id"),
        ("subject_id,path,age\ns1,a.nii.gz,700\n", "line 2 \\(subject 's1'\\): age '?700'? is outside the human range"),
        ("subject_id,path,age\ns1,a.nii.gz,60\ns2,./a.nii.gz,61\n",
         "line 3 \\(subject 's2'\\): the same image file as subject 's1' \\(line 2\\); every row must be an independent"),
        ("subject_id,path,age\ns1,a.nii.gz,60\ns2,b.nii.gz,61\ns3,copy-of-a.nii.gz,62\n",
         "line 4 \\(subject 's3'\\): a copy of the image of subject 's1' \\(line 2\\)"),
    ],
)
def test_bad_manifests_fail_with_one_clear_sentence(image, text, match):
    path = _write(image, text)
    with pytest.raises(FedsimError, match=match) as err:
        load_manifest(path)
    assert "\n" not in str(err.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(FedsimError, match="manifest .*nope.csv' not found"):
        load_manifest(tmp_path / "nope.csv")


def test_distinct_uncompressed_scans_of_one_geometry_are_not_copies(tmp_path):
    import nibabel as nib
    import numpy as np

    for name, value in (("a.nii", 1.0), ("b.nii", 2.0)):  # same header and background, different brains
        data = np.zeros((91, 109, 91), np.float32)
        data[40:50, 40:50, 40:50] = value
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / name)
    df = load_manifest(_write(tmp_path, "subject_id,path,age\na,a.nii,60\nb,b.nii,61\n"))
    assert list(df["subject_id"]) == ["a", "b"]
