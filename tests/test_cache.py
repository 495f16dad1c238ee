"""Loading and caching: bad files refused in one line, nothing half-written, cache reused (geometry: test_geometry)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from fedsim.data.cache import VolumeDataset, build_cache
from fedsim.data.volumes import load_volume
from fedsim.data.geometry import grid_affine
from fedsim.data.manifest import load_manifest
from fedsim.errors import FedsimError


@pytest.fixture
def ras_image():
    rng = np.random.default_rng(0)
    data = rng.random((12, 14, 10)).astype(np.float32) * 100
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-12, -14, -10]
    return nib.Nifti1Image(data, affine)


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


def test_a_volume_without_contrast_or_too_thin_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((16, 20, 16), np.float32), grid_affine((16, 20, 16))), tmp_path / "blank.nii.gz")
    nib.save(nib.Nifti1Image(np.full((16, 20, 16), 7.0, np.float32), grid_affine((16, 20, 16))), tmp_path / "flat.nii.gz")
    slab = np.random.default_rng(0).random((182, 218, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(slab, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "slice.nii.gz")
    cases = {"blank.nii.gz": "has no contrast: every voxel is 0", "flat.nii.gz": "every voxel is 7",
             "slice.nii.gz": "182x218x1-voxel volume .* too thin to be a brain"}
    for name, match in cases.items():
        with pytest.raises(FedsimError, match=match) as err:
            load_volume(tmp_path / name, (16, 20, 16), where="subject 's1'")
        assert "\n" not in str(err.value)


def test_a_bad_scan_leaves_no_half_written_cache(tmp_path, tiny_manifest):
    manifest = load_manifest(tiny_manifest)
    blank = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 20, 16), np.float32), grid_affine((16, 20, 16))), blank)
    manifest.loc[3, "path"] = str(blank)
    cache = tmp_path / "cache"
    with pytest.raises(FedsimError, match="subject 'sub-00004'.*no contrast"):
        build_cache(manifest, (16, 20, 16), cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_parallel_preprocessing_gives_the_serial_array(tmp_path, tiny_manifest):
    manifest = load_manifest(tiny_manifest)
    serial = build_cache(manifest, (16, 20, 16), cache_dir=tmp_path / "serial", workers=1)
    parallel = build_cache(manifest, (16, 20, 16), cache_dir=tmp_path / "parallel", workers=2)
    np.testing.assert_array_equal(serial.volumes, parallel.volumes)
    assert [p.name for p in (tmp_path / "serial").iterdir()] == [p.name for p in (tmp_path / "parallel").iterdir()]


def test_a_bad_scan_in_a_worker_is_the_same_one_line(tmp_path, tiny_manifest):
    manifest = load_manifest(tiny_manifest)
    blank = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 20, 16), np.float32), grid_affine((16, 20, 16))), blank)
    manifest.loc[30, "path"] = str(blank)
    with pytest.raises(FedsimError, match="subject 'sub-00031'.*no contrast"):
        build_cache(manifest, (16, 20, 16), cache_dir=tmp_path / "cache", workers=2)
    assert list((tmp_path / "cache").iterdir()) == []


def test_float16_cache_round_trips_within_half_precision(tmp_path, tiny_manifest):
    manifest = load_manifest(tiny_manifest)
    full = build_cache(manifest, (16, 20, 16), cache_dir=tmp_path)
    half = build_cache(manifest, (16, 20, 16), cache_dir=tmp_path, dtype="float16")
    assert half.volumes.dtype == np.float16 and len(list(tmp_path.glob("*.npy"))) == 2  # its own key
    assert half.volumes.nbytes * 2 == full.volumes.nbytes
    np.testing.assert_allclose(half.volumes.astype(np.float32), full.volumes, rtol=1e-3, atol=2e-3)
    x, _ = VolumeDataset(half, np.array([4]))[0]
    assert x.dtype == torch.float32  # models always see float32
