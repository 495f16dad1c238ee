"""Every scan of a cohort preprocessed once (:mod:`fedsim.data.volumes`), cached as one memory map.

Epochs, learners and attacks all read the same ``(N, X, Y, Z)`` float32 array from disk, so no
NIfTI is decoded twice. The cache is keyed by a hash of the input files (path, size, mtime) and
the preprocessing settings, so changing either builds a new one and nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, cpu_count, delayed
from torch.utils.data import Dataset

from fedsim.data.geometry import METHOD
from fedsim.data.volumes import preprocess_into
from fedsim.paths import fedsim_home
from fedsim.progress import Progress

# Bump when the preprocessing below changes, so old caches are not reused.
PREPROCESS_VERSION = 3
_PARALLEL_FROM = 64  # subjects: below this, preprocessing (and cohort writing) runs in-process
_MAX_WORKERS = 16  # the default's cap: past it, a node's disk, not its cores, sets the pace
_BLOCK = 8  # subjects per preprocessing task: the memory map is opened once per block


@dataclass(frozen=True)
class CohortArray:
    """Preprocessed volumes (memory-mapped) with their subject ids and ages, in manifest order."""

    volumes: np.ndarray
    subject_ids: list[str]
    ages: np.ndarray

    def index_of(self, subject_ids: list[str]) -> np.ndarray:
        position = {s: i for i, s in enumerate(self.subject_ids)}
        return np.array([position[s] for s in subject_ids], dtype=np.int64)

    def __reduce__(self) -> tuple:
        """Pickled by its cache file's path where the volumes map one whole (as :func:`build_cache` opens it):
        a Ray task or another process maps the same file (shared storage on a cluster) instead of receiving
        every volume. In-memory volumes are pickled as they are."""
        volumes = self.volumes
        if isinstance(volumes, np.memmap) and volumes.filename and os.path.isfile(volumes.filename):
            whole = np.load(volumes.filename, mmap_mode="r")
            if whole.offset == volumes.offset and whole.shape == volumes.shape and whole.dtype == volumes.dtype:
                return _mapped, (volumes.filename, self.subject_ids, self.ages)
        return CohortArray, (np.asarray(volumes), self.subject_ids, self.ages)


def _mapped(path: str, subject_ids: list[str], ages: np.ndarray) -> CohortArray:
    return CohortArray(np.load(path, mmap_mode="r"), subject_ids, ages)


def _cache_key(manifest: pd.DataFrame, shape: tuple[int, int, int], dtype: str) -> str:
    settings = {"version": PREPROCESS_VERSION, "method": METHOD, "shape": list(shape), "dtype": dtype}
    h = hashlib.sha256(json.dumps(settings).encode())
    for sid, path in zip(manifest["subject_id"], manifest["path"]):
        st = os.stat(path)
        h.update(f"{sid}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _fill(array: Path, paths: list[str], ids: list[str], shape: tuple[int, int, int], workers: int) -> Iterator[int]:
    """Preprocess every row of ``array``, in ``workers`` processes (joblib) when more than one, a
    block of rows per task; yields the number of subjects each finished task did."""
    rows = [(i, path, f"subject {sid!r}") for i, (path, sid) in enumerate(zip(paths, ids))]
    blocks = [rows[k:k + _BLOCK] for k in range(0, len(rows), _BLOCK)]
    if workers == 1:
        return (preprocess_into(array, block, shape) for block in blocks)
    return Parallel(n_jobs=workers, return_as="generator_unordered")(
        delayed(preprocess_into)(array, block, shape) for block in blocks)


def preprocess_workers(requested: int, subjects: int) -> int:
    """``requested`` processes, or (0) one per CPU core — one only for a small cohort, where starting
    workers costs more than it saves."""
    if requested > 0:
        return requested
    return 1 if subjects < _PARALLEL_FROM else max(1, min(cpu_count(), _MAX_WORKERS))


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
