"""The GPU check's CPU dry run: the script a GPU machine runs once works end to end, here, in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_dry_run_measures_every_item(tmp_path: Path, fedsim_home: Path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "FEDSIM_HOME": str(fedsim_home)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and report["shape"] == [16, 20, 16]
    steps = {(t["model"], t["precision"]) for t in report["training_step"]}
    assert steps == {(m, p) for m in ("cnn3d", "slice_mean2d") for p in ("fp32", "bf16")}
    for t in report["training_step"]:  # the ratio is of the two medians it reports
        assert t["fedsim_vs_plain"] == pytest.approx(t["plain_s"]["median"] / t["fedsim_s"]["median"])
        assert t["plain_s"]["min"] <= t["plain_s"]["median"] <= t["plain_s"]["max"]
    assert {g["method"] for g in report["per_sample_gradients"]} == {"loop", "vmap", "opacus"}
    round_ = report["federated_round"]
    assert round_["learners"] == 8 and round_["local_epochs"] == 4 and round_["projected_min"] > 0
    assert "the paper's federation projected" in (tmp_path / "gpu.md").read_text()
    inversions = {q["attack"]: q for q in report["reconstruction"]}
    assert set(inversions) == {"gradient, batch 1, 1 SGD step", "features, conv1, white-box"}
    assert all(q["steps"] == 3 and 0 < q["s_per_step"] * q["steps"] <= q["seconds"]["max"] for q in inversions.values())
    assert "a 500-step reconstruction" in (tmp_path / "gpu.md").read_text()
