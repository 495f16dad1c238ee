"""Geometry: the same anatomy on two grids lands on the same voxels; what cannot be resampled is refused."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nilearn import datasets
from nilearn.image import resample_img

from fedsim.data.volumes import load_volume
from fedsim.data.geometry import MNI_BOX_EXTENT_MM, check_geometry, grid_affine, resample_world
from fedsim.errors import FedsimError

SHAPE = (36, 43, 36)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """nilearn's MNI152 T1 (1 mm), and the same anatomy on a scanner-like 2 mm grid with a 256 mm
    field of view centred on the origin: two files, two affines, one brain."""
    mni = datasets.load_mni152_template(resolution=1)
    scanner = np.diag([2.0, 2.0, 2.0, 1.0])
    scanner[:3, 3] = -128.0
    native = resample_img(mni, target_affine=scanner, target_shape=(128, 128, 128), interpolation="linear",
                          force_resample=True, copy_header=True)
    return mni, native


def test_the_same_anatomy_on_two_grids_lands_on_the_same_voxels(tmp_path, template):
    mni, native = template
    nib.save(mni, tmp_path / "mni.nii.gz")
    nib.save(native, tmp_path / "native.nii.gz")
    a = load_volume(tmp_path / "mni.nii.gz", SHAPE)
    b = load_volume(tmp_path / "native.nii.gz", SHAPE)
    assert _corr(a, b) >= 0.98
    # what voxel-index resampling did: stretch each file's array onto SHAPE, whatever it spans
    from scipy import ndimage as ndi

    def stretched(img: nib.Nifti1Image) -> np.ndarray:
        data = np.asarray(img.dataobj, dtype=np.float32)
        return ndi.zoom(data, np.asarray(SHAPE) / np.asarray(data.shape), order=1)

    assert _corr(stretched(mni), stretched(native)) < 0.9


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("R", "P", "I"), ("A", "S", "R")])
def test_orientation_is_read_from_the_affine(tmp_path, codes):
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    rng = np.random.default_rng(0)
    shape = (46, 55, 46)  # 4 mm over the MNI box
    ras = nib.Nifti1Image(rng.random(shape).astype(np.float32) * 100, grid_affine(shape))
    other = ras.as_reoriented(ornt_transform(io_orientation(ras.affine), axcodes2ornt(codes)))
    assert nib.aff2axcodes(other.affine) == codes
    nib.save(ras, tmp_path / "ras.nii.gz")
    nib.save(other, tmp_path / "other.nii.gz")
    a = load_volume(tmp_path / "ras.nii.gz", (23, 27, 23))
    b = load_volume(tmp_path / "other.nii.gz", (23, 27, 23))
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert abs(a.mean()) < 1e-5 and abs(a.std() - 1) < 1e-4  # z-scored per scan


def test_resampling_onto_its_own_grid_is_the_identity_and_a_coarser_grid_is_anti_aliased():
    rng = np.random.default_rng(1)
    vol = rng.random(SHAPE).astype(np.float32)
    np.testing.assert_array_equal(resample_world(vol, grid_affine(SHAPE), SHAPE), vol)
    half = (18, 21, 18)
    coarse = resample_world(vol, grid_affine(SHAPE), half)
    assert coarse.shape == half and coarse.std() < 0.5 * vol.std()  # noise averaged away, not aliased
    # a left/right split stays left/right: world x grows along axis 0
    split = np.zeros(SHAPE, np.float32)
    split[: SHAPE[0] // 2] = 1.0
    down = resample_world(split, grid_affine(SHAPE), half)
    assert down[:7].mean() > 0.95 and down[11:].mean() < 0.05


@pytest.mark.parametrize("shape, affine, match", [
    ((64, 64, 1), np.diag([3.0, 3.0, 3.0, 1.0]), "too thin to be a brain"),
    ((180, 216, 12), np.diag([1.0, 1.0, 1.0, 1.0]), "too thin"),
    ((64, 64, 64), np.diag([3.0, 3.0, 0.0, 1.0]), "not finite or not invertible"),
    ((64, 64, 64), np.full((4, 4), np.nan), "not finite"),
])
def test_geometry_that_cannot_be_resampled_is_refused_in_one_line(shape, affine, match):
    with pytest.raises(FedsimError, match=match) as err:
        check_geometry(shape, affine, where="subject 's1'")
    assert str(err.value).startswith("subject 's1': ") and "\n" not in str(err.value)


def test_a_scan_outside_the_mni_box_is_refused():
    shifted = grid_affine(SHAPE)
    shifted[:3, 3] += MNI_BOX_EXTENT_MM * 0.9  # a field of view that misses 90 % of the box on every axis
    with pytest.raises(FedsimError, match="covers 0 % of the MNI box"):
        check_geometry(SHAPE, shifted)
    check_geometry(SHAPE, grid_affine(SHAPE))  # the box itself passes


@pytest.mark.parametrize("voxel, shape", [(2.0, (91, 109, 91)), (1.0, (182, 218, 182))])
def test_fsl_template_grids_are_only_flipped_never_interpolated(tmp_path, voxel, shape):
    """UK Biobank's preprocessed T1s are on FSL's MNI152 grids (LAS, voxel 0 at (90, -126, -72) mm):
    on those grids preprocessing must reflect x, not interpolate a shifted grid."""
    fsl = np.diag([-voxel, voxel, voxel, 1.0])
    fsl[:3, 3] = [90.0, -126.0, -72.0]
    data = np.random.default_rng(2).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, fsl), tmp_path / "fsl.nii.gz")
    out = load_volume(tmp_path / "fsl.nii.gz", shape)
    flipped = data[::-1]
    np.testing.assert_allclose(out, (flipped - flipped.mean()) / flipped.std(), atol=1e-4)
