"""Loading and caching: orientation-independent, bad files refused in one line, cache reused."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from fedsim.data.cache import VolumeDataset, build_cache, load_volume, resample_to_shape
from fedsim.data.manifest import load_manifest
from fedsim.errors import FedsimError


@pytest.fixture
def ras_image():
    rng = np.random.default_rng(0)
    data = rng.random((12, 14, 10)).astype(np.float32) * 100
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-12, -14, -10]
    return nib.Nifti1Image(data, affine)


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("R", "P", "I"), ("A", "S", "R"), ("P", "L", "I")])
def test_any_orientation_loads_to_the_same_canonical_volume(tmp_path, ras_image, codes):
    target = axcodes2ornt(codes)
    other = ras_image.as_reoriented(ornt_transform(io_orientation(ras_image.affine), target))
    assert nib.aff2axcodes(other.affine) == codes
    nib.save(ras_image, tmp_path / "ras.nii.gz")
    nib.save(other, tmp_path / "other.nii.gz")
    a = load_volume(tmp_path / "ras.nii.gz", (12, 14, 10))
    b = load_volume(tmp_path / "other.nii.gz", (12, 14, 10))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert abs(a.mean()) < 1e-5 and abs(a.std() - 1) < 1e-4  # z-scored per scan


def test_resample_keeps_the_field_of_view():
    vol = np.zeros((20, 20, 20), dtype=np.float32)
    vol[:10] = 1.0  # left half bright
    small = resample_to_shape(vol, (10, 10, 10))
    assert small.shape == (10, 10, 10)
    assert small[:4].mean() > 0.95 and small[6:].mean() < 0.05


def test_bad_nifti_files_fail_with_one_sentence(tmp_path, ras_image):
    nib.save(ras_image, tmp_path / "ok.nii.gz")
    truncated = gzip.decompress((tmp_path / "ok.nii.gz").read_bytes())[:600]
    (tmp_path / "trunc.nii").write_bytes(truncated)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti at all")
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 3), np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    cases = {"trunc.nii": "cannot read NIfTI", "junk.nii.gz": "cannot read NIfTI", "4d.nii.gz": "expected one 3-D T1 volume"}
    for name, match in cases.items():
        with pytest.raises(FedsimError, match=match) as err:
            load_volume(tmp_path / name, (6, 6, 6), where="subject 's9'")
        assert str(err.value).startswith("subject 's9': ") and "\n" not in str(err.value)


def test_cache_is_built_once_and_rebuilt_when_inputs_change(tmp_path, tiny_manifest):
    manifest = load_manifest(tiny_manifest)
    first = build_cache(manifest, (16, 20, 16), cache_dir=tmp_path)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 1 and first.volumes.shape == (48, 16, 20, 16)
    again = build_cache(manifest, (16, 20, 16), cache_dir=tmp_path)
    assert sorted(tmp_path.glob("*.npy")) == files
    np.testing.assert_array_equal(first.volumes, again.volumes)
    np.testing.assert_array_equal(
        first.volumes[5], load_volume(manifest["path"][5], (16, 20, 16))
    )
    build_cache(manifest, (8, 10, 8), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2

    ds = VolumeDataset(first, np.array([3, 7]))
    x, age = ds[1]
    assert x.shape == (1, 16, 20, 16) and float(age) == pytest.approx(manifest["age"][7])
