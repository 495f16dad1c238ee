"""One scan to one model input: read a T1 NIfTI, check it, resample it onto the grid, z-score it.

Torch-free on purpose: the preprocessing workers (:func:`fedsim.data.cache.build_cache`) import
only this, NumPy, SciPy and nibabel.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from fedsim.data.geometry import check_geometry, resample_world
from fedsim.errors import FedsimError


def zscore(volume: np.ndarray) -> np.ndarray:
    """Each scan on its own scale, as in the paper: ``(img - mean) / std`` over the whole volume."""
    std = float(volume.std())
    return (volume - volume.mean()) / (std if std > 0 else 1.0)


def load_volume(path: str | Path, shape: tuple[int, int, int], *, where: str = "") -> np.ndarray:
    """Load one T1 NIfTI and preprocess it to a float32 ``shape`` array on the MNI-box grid
    (:mod:`fedsim.data.geometry`); a file that is not a usable 3-D T1 is one-line error."""
    label = f"{where}: " if where else ""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as err:
        reason = " ".join(str(err).split())  # nibabel's messages span lines
        raise FedsimError(f"{label}cannot read NIfTI {str(path)!r} ({type(err).__name__}: {reason})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise FedsimError(f"{label}{str(path)!r} has shape {data.shape}; expected one 3-D T1 volume per subject")
    if not np.isfinite(data).all():
        raise FedsimError(f"{label}{str(path)!r} contains NaN or infinite voxels")
    if float(data.max()) - float(data.min()) <= 1e-6 * max(1.0, abs(float(data.max()))):
        raise FedsimError(f"{label}{str(path)!r} has no contrast: every voxel is {float(data.flat[0]):g}")
    check_geometry(data.shape, img.affine, where=f"{label}{str(path)!r}")
    resampled = resample_world(data, img.affine, shape)
    if float(resampled.std()) == 0.0:
        raise FedsimError(f"{label}{str(path)!r}: nothing of the scan falls inside the MNI box at {'x'.join(map(str, shape))}")
    return zscore(resampled).astype(np.float32)


def preprocess_into(array: Path, rows: list[tuple[int, str, str]], shape: tuple[int, int, int]) -> int:
    """Rows ``(i, path, where)`` of the ``.npy`` memory map ``array``, written by whichever process runs
    this (volumes never travel between processes: a 2 mm scan is 3.6 MB); returns how many."""
    out = np.load(array, mmap_mode="r+")
    for i, path, where in rows:
        out[i] = load_volume(path, shape, where=where)
    out.flush()
    return len(rows)
