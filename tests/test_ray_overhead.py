"""The Ray-overhead benchmark on a tiny run: it trains a target, times both sides and writes its row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_ray_overhead_benchmark_times_both_sides_and_finds_the_same_references(tmp_path: Path, fedsim_home: Path):
    out = tmp_path / "ray_overhead.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ray_overhead.py"), "--env", "tiny-centralized", "--epochs", "1",
         "--references", "2", "--repeats", "1", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "FEDSIM_HOME": str(fedsim_home)})
    assert result.returncode == 0, result.stderr[-3000:]
    row = out.read_text().splitlines()[-1].split(" | ")
    assert "2 references × 1 epochs, 16×20×16" in row[2] and row[-2] == "True"  # identical predictions
    assert float(row[7]) > 0  # the ratio Ray / serial of the medians
