"""Preprocessing at the paper's scale: ``python benchmarks/preprocessing.py [--subjects 200] [--repeats 3]``.

Writes ``--subjects`` synthetic T1s at 91x109x91 (the paper's 2 mm grid; generated once under
``$FEDSIM_HOME``), then builds the preprocessing cache from them serially and with one worker per
core (:func:`fedsim.data.cache.build_cache`, joblib), each ``--repeats`` times after an untimed
warm-up of both (the page cache then holds the files for both sides alike), onto two grids: the
scans' own 91x109x91 (no resampling: decoding, z-scoring and writing 3.6 MB per scan, bound by
memory and disk bandwidth) and the CPU profile's 36x43x36 (world-space resampling: bound by
compute, as a user's 1 mm scans are). Reports files/s (median and range), the parallel/serial
ratio, the cache size float32 / float16 and its projection to the paper's 10,446 subjects.
Appends a row per grid to ``benchmarks/results/preprocessing.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from results_table import append_row, machine

from fedsim.data.cache import build_cache
from fedsim.data.cohort import CohortSpec, default_cohort
from fedsim.data.manifest import load_manifest

RESULTS = Path(__file__).resolve().parent / "results" / "preprocessing.md"
PAPER_SHAPE = (91, 109, 91)
CPU_SHAPE = (36, 43, 36)  # environments/*.toml's CPU profile
PAPER_SUBJECTS = 10_446  # 8,356 training + 2,090 unseen (Gupta et al. 2021)


def _timed(manifest, shape, workers: int, dtype: str = "float32") -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cohort = build_cache(manifest, shape, cache_dir=Path(tmp), workers=workers, dtype=dtype)
        return time.perf_counter() - start, int(cohort.volumes.nbytes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    manifest = load_manifest(default_cohort(CohortSpec(args.subjects, PAPER_SHAPE, seed=0)))
    for shape in (PAPER_SHAPE, CPU_SHAPE):
        measure(manifest, shape, args)


def measure(manifest, shape: tuple[int, int, int], args: argparse.Namespace) -> None:
    n = len(manifest)
    for workers in (1, args.workers):  # warm-up: worker start-up paths, the files in the page cache
        _timed(manifest, shape, workers)
    serial = [n / _timed(manifest, shape, 1)[0] for _ in range(args.repeats)]
    parallel = [n / _timed(manifest, shape, args.workers)[0] for _ in range(args.repeats)]
    _, full_bytes = _timed(manifest, shape, args.workers)
    _, half_bytes = _timed(manifest, shape, args.workers, "float16")
    ratio = statistics.median(parallel) / statistics.median(serial)
    project = PAPER_SUBJECTS / n
    row = [
        machine(), "x".join(map(str, PAPER_SHAPE)) + " → " + "x".join(map(str, shape)), n, args.workers,
        f"{statistics.median(serial):.1f} ({min(serial):.1f}–{max(serial):.1f})",
        f"{statistics.median(parallel):.1f} ({min(parallel):.1f}–{max(parallel):.1f})",
        f"{ratio:.2f}",
        f"{full_bytes / 2**20:.0f} / {half_bytes / 2**20:.0f}",
        f"{full_bytes * project / 2**30:.1f} / {half_bytes * project / 2**30:.1f}",
        f"{PAPER_SUBJECTS / statistics.median(parallel) / 60:.1f}",
    ]
    columns = ["machine", "scans → cache grid", "subjects", "workers", "serial files/s (median, range)",
               "parallel files/s", "parallel / serial", "cache MiB f32 / f16", "paper's 10,446: GiB f32 / f16",
               "paper's 10,446: min (parallel)"]
    append_row(RESULTS, f"Preprocessing ({args.repeats} repeats after a warm-up; "
               "`python benchmarks/preprocessing.py`)", columns, row)
    for c, v in zip(columns, row):
        print(f"{c}: {v}")


if __name__ == "__main__":
    main()
