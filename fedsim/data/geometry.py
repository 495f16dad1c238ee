"""Where a voxel is: the environment's grid over the MNI box, and one world-space resampler onto it.

Every scan, synthetic or a user's, is resampled through its own affine (voxel size, origin,
orientation) onto the grid ``grid_affine(shape)`` spanning the FSL MNI152 box, so the same
anatomy lands on the same voxels whatever grid it was stored on. Resampling in voxel-index space
instead — stretching whatever array a file holds onto ``shape`` — puts different anatomy in the
same voxel as soon as two scans differ in field of view (``benchmarks/geometry.py`` shows it).
fedsim does not register: a scan must already be in MNI space (UK Biobank's preprocessed T1s,
a BIDS derivative ``space-MNI152…``); one that does not cover the box is refused.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from fedsim.errors import FedsimError

# The FSL MNI152 field of view, the box UK Biobank's preprocessed T1s live in (Lam et al. 2020):
# FSL's 1 mm (182 x 218 x 182) and 2 mm (91 x 109 x 91) templates are stored LAS with voxel 0 at
# world (90, -126, -72) mm. Every grid here keeps that anchor, so those two grids are FSL's own
# (a scan on them is only flipped, never interpolated); the box is the 1 mm grid's voxel edges.
FSL_FIRST_VOXEL_MM = np.array([90.0, -126.0, -72.0])
MNI_BOX_EXTENT_MM = np.array([182.0, 218.0, 182.0])
MNI_BOX_ORIGIN_MM = np.array([-91.5, -126.5, -72.5])
METHOD = "world-linear-antialiased-fsl-grid"  # part of the preprocessing cache key
MIN_EXTENT_MM = 60.0  # thinner than this along any axis is a slab or a slice, not a brain
MIN_VOXELS = 8
MIN_BOX_COVERAGE = 0.25  # the scan's field of view must cover this share of the MNI box


def grid_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """RAS affine of a ``shape`` grid over the MNI152 FSL box, anchored on FSL's first voxel: for
    182x218x182 and 91x109x91 it is FSL's 1 mm and 2 mm template grid, reflected to RAS."""
    n = np.asarray(shape, dtype=float)
    voxel = MNI_BOX_EXTENT_MM / n
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = FSL_FIRST_VOXEL_MM
    affine[0, 3] = FSL_FIRST_VOXEL_MM[0] - voxel[0] * (n[0] - 1)  # LAS voxel 0 is RAS voxel n-1
    return affine


def check_geometry(shape: tuple[int, ...], affine: np.ndarray, *, where: str = "") -> None:
    """Refuse, in one line, geometry that cannot be resampled onto the MNI box: a non-finite or
    singular affine, a slab or single slice, or a field of view that misses most of the box."""
    label = f"{where}: " if where else ""
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise FedsimError(f"{label}its affine (voxel-to-world matrix) is not finite or not invertible; "
                          "the header's sform/qform is broken")
    voxel_mm = np.linalg.norm(affine[:3, :3], axis=0)
    extent_mm = np.asarray(shape[:3], dtype=float) * voxel_mm
    if min(shape[:3]) < MIN_VOXELS or extent_mm.min() < MIN_EXTENT_MM:
        dims = "x".join(str(s) for s in shape[:3])
        mm = "x".join(f"{e:.0f}" for e in extent_mm)
        raise FedsimError(f"{label}a {dims}-voxel volume ({mm} mm) is too thin to be a brain "
                          f"(a slab or a single slice); fedsim needs whole-head 3-D T1s")
    coverage = _box_coverage(shape[:3], affine)
    if coverage < MIN_BOX_COVERAGE:
        raise FedsimError(f"{label}its field of view covers {100 * coverage:.0f} % of the MNI box in world coordinates; "
                          "fedsim does not register scans: give T1s in MNI space (e.g. a BIDS space-MNI152 derivative)")


def _box_coverage(shape: tuple[int, ...], affine: np.ndarray) -> float:
    """Share of the MNI box inside the axis-aligned world bounds of the scan's field of view."""
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    world = (affine @ corners.T).T[:, :3]
    low = np.maximum(world.min(axis=0), MNI_BOX_ORIGIN_MM)
    high = np.minimum(world.max(axis=0), MNI_BOX_ORIGIN_MM + MNI_BOX_EXTENT_MM)
    return float(np.prod(np.clip(high - low, 0.0, None)) / np.prod(MNI_BOX_EXTENT_MM))


def resample_world(volume: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``volume`` (voxel-to-world ``affine``) resampled onto ``grid_affine(shape)``: linear
    interpolation after a Gaussian anti-aliasing filter sized by how many source voxels one target
    voxel spans along each source axis; outside the scan's field of view is background (0)."""
    shape = tuple(int(s) for s in shape)
    target = grid_affine(shape)
    if volume.shape == shape and np.allclose(affine, target, atol=1e-4):
        return np.asarray(volume, dtype=np.float32)
    to_source = np.linalg.inv(affine) @ target  # target voxel index -> world -> source voxel index
    # headers store affines in float32: snap what is an integer up to that rounding, so that a grid
    # that is the target's up to a flip or shift samples voxel centres exactly
    nearest = np.round(to_source)
    to_source = np.where(np.abs(to_source - nearest) < 1e-4, nearest, to_source)
    step = np.abs(to_source[:3, :3]).sum(axis=1)  # source voxels one target voxel spans, per source axis
    sigma = np.maximum(0.0, 0.5 * (step - 1.0))  # scikit-image's anti-aliasing sigma for that factor
    smoothed = ndi.gaussian_filter(volume, sigma=sigma) if sigma.any() else volume
    # grid-constant: interpolate towards background beyond the edge voxels, instead of dropping them
    return ndi.affine_transform(smoothed, to_source[:3, :3], offset=to_source[:3, 3], output_shape=shape,
                                order=1, mode="grid-constant", cval=0.0).astype(np.float32)
