"""NIfTI → world-space resampling onto the MNI-box grid → per-scan z-score, cached as one memory map.

Epochs, learners and attacks all read the same ``(N, X, Y, Z)`` float32 array from disk, so no
NIfTI is decoded twice. The cache is keyed by a hash of the input files (path, size, mtime) and
the preprocessing settings, so changing either builds a new one and nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from nibabel.filebasedimages import ImageFileError
from torch.utils.data import Dataset

from fedsim.data.geometry import METHOD, check_geometry, resample_world
from fedsim.errors import FedsimError
from fedsim.paths import fedsim_home
from fedsim.progress import Progress

# Bump when the preprocessing below changes, so old caches are not reused.
PREPROCESS_VERSION = 3
_PARALLEL_FROM = 64  # subjects: below this, preprocessing runs in-process
_BLOCK = 8  # subjects per preprocessing task: the memory map is opened once per block


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


@dataclass(frozen=True)
class CohortArray:
    """Preprocessed volumes (memory-mapped) with their subject ids and ages, in manifest order."""

    volumes: np.ndarray
    subject_ids: list[str]
    ages: np.ndarray

    def index_of(self, subject_ids: list[str]) -> np.ndarray:
        position = {s: i for i, s in enumerate(self.subject_ids)}
        return np.array([position[s] for s in subject_ids], dtype=np.int64)


def _cache_key(manifest: pd.DataFrame, shape: tuple[int, int, int], dtype: str) -> str:
    settings = {"version": PREPROCESS_VERSION, "method": METHOD, "shape": list(shape), "dtype": dtype}
    h = hashlib.sha256(json.dumps(settings).encode())
    for sid, path in zip(manifest["subject_id"], manifest["path"]):
        st = os.stat(path)
        h.update(f"{sid}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _preprocess_into(array: Path, rows: list[tuple[int, str, str]], shape: tuple[int, int, int]) -> int:
    """Rows ``(i, path, where)`` of the ``.npy`` memory map ``array``, written by whichever process runs
    this (volumes never travel between processes: a 2 mm scan is 3.6 MB); returns how many."""
    out = np.load(array, mmap_mode="r+")
    for i, path, where in rows:
        out[i] = load_volume(path, shape, where=where)
    out.flush()
    return len(rows)


def _fill(array: Path, paths: list[str], ids: list[str], shape: tuple[int, int, int], workers: int) -> Iterator[int]:
    """Preprocess every row of ``array``, in ``workers`` processes (joblib) when more than one, a
    block of rows per task; yields the number of subjects each finished task did."""
    rows = [(i, path, f"subject {sid!r}") for i, (path, sid) in enumerate(zip(paths, ids))]
    blocks = [rows[k:k + _BLOCK] for k in range(0, len(rows), _BLOCK)]
    if workers == 1:
        return (_preprocess_into(array, block, shape) for block in blocks)
    return Parallel(n_jobs=workers, return_as="generator_unordered")(
        delayed(_preprocess_into)(array, block, shape) for block in blocks)


def preprocess_workers(requested: int, subjects: int) -> int:
    """``requested`` processes, or (0) one per CPU core — one only for a small cohort, where starting
    workers costs more than it saves."""
    if requested > 0:
        return requested
    return 1 if subjects < _PARALLEL_FROM else max(1, os.cpu_count() or 1)


def build_cache(
    manifest: pd.DataFrame, shape: tuple[int, int, int], *, cache_dir: Path | None = None,
    progress: Progress | None = None, dtype: str = "float32", workers: int = 1,
) -> CohortArray:
    """Preprocess every subject of a validated manifest once (in ``workers`` processes), stored as
    ``dtype`` (float16: half the disk and I/O; read back as float32); later calls just map the file."""
    shape = tuple(int(s) for s in shape)
    cache_dir = Path(cache_dir) if cache_dir is not None else fedsim_home() / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(manifest, shape, dtype)
    array_path = cache_dir / f"{key}.npy"
    ages = manifest["age"].to_numpy(dtype=np.float64)
    ids = list(manifest["subject_id"])
    if not array_path.is_file():
        partial = cache_dir / f"{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial.npy"  # concurrent builds: one each
        try:
            np.lib.format.open_memmap(partial, mode="w+", dtype=np.dtype(dtype), shape=(len(manifest), *shape)).flush()
            done = 0
            for count in _fill(partial, list(manifest["path"]), ids, shape, workers):
                done += count
                if progress is not None:
                    progress("preprocessing", done, len(manifest))
        except BaseException:
            partial.unlink(missing_ok=True)  # a bad scan leaves nothing half-written behind
            raise
        os.replace(partial, array_path)
    volumes = np.load(array_path, mmap_mode="r")
    return CohortArray(volumes=volumes, subject_ids=ids, ages=ages)


class VolumeDataset(Dataset):
    """``(volume[1, X, Y, Z], age)`` pairs for a subset of a cached cohort."""

    def __init__(self, cohort: CohortArray, indices: np.ndarray) -> None:
        self.cohort = cohort
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.indices[i]
        x = torch.from_numpy(np.array(self.cohort.volumes[j], dtype=np.float32))[None]
        return x, torch.tensor(self.cohort.ages[j], dtype=torch.float32)
