"""Training loop and the centralized command: loss goes down, the run dir is complete, errors are one line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from commands import one_error_line
from fedsim import snapshots
from fedsim.cli.centralized import main
from fedsim.config import load_env
from fedsim.data.cache import VolumeDataset, build_cache
from fedsim.data.manifest import load_manifest
from fedsim.models import build_model
from fedsim.training import evaluate, make_loader, make_optimizer, train_epochs


def test_training_lowers_the_error_on_its_own_subjects(tiny_manifest):
    cfg = load_env("tiny-centralized")
    cohort = build_cache(load_manifest(tiny_manifest), (16, 20, 16))
    subset = VolumeDataset(cohort, np.arange(8))
    torch.manual_seed(0)
    model = build_model(cfg.model.name, **cfg.model_kwargs())
    before = evaluate(model, make_loader(subset, 8, shuffle=False)).mae
    optimizer = make_optimizer(model.parameters(), dataclasses.replace(cfg.train, lr=1e-2))
    train_epochs(model, make_loader(subset, 4, shuffle=True), optimizer, loss="mse", target_scale=7.4, epochs=60)
    after = evaluate(model, make_loader(subset, 8, shuffle=False)).mae
    assert after < 0.8 * before, (before, after)  # a loop that never steps stays at `before`


def test_centralized_run_writes_a_complete_run_dir(tmp_path, tiny_manifest, capsys):
    out = tmp_path / "run"
    assert main(["--env", "tiny-centralized", "--cohort", str(tiny_manifest), "--out", str(out), "--epochs", "2"]) == 0
    config = snapshots.read_config(out)
    assert config["cohort"]["manifest"] == str(tiny_manifest.resolve())
    assert config["model"]["in_shape"] == [16, 20, 16]
    parts = pd.read_csv(out / "partitions.csv")
    assert set(parts["group"]) == {"train", "val", "unseen"} and len(parts) == 48
    assert snapshots.complete_rounds(out) == [0, 1, 2]
    weights = [load_file(out / "rounds" / f"{r:04d}" / "model.safetensors") for r in (0, 1, 2)]
    assert not torch.equal(weights[0]["conv1.0.weight"], weights[2]["conv1.0.weight"])
    model = build_model("cnn3d", **{k: v for k, v in config["model"].items() if k != "name"})
    model.load_state_dict(weights[2])  # snapshots rebuild the model without pickle
    summary = json.loads((out / "DONE").read_text())
    assert summary["best_round"] in (1, 2) and summary["unseen_n"] == 12
    assert [m["round"] for m in snapshots.read_metrics(out)] == [0, 1, 2]
    assert (out / "learning_curve.png").stat().st_size > 0 and (out / "partitions.png").stat().st_size > 0
    assert "best validation epoch" in capsys.readouterr().out


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fedsim.centralized", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "nope"], "error: unknown environment 'nope'"),
        (["--env", "tiny"], "error: environment 'tiny' is federated"),
        (["--env", "tiny-centralized", "--cohort", "missing.csv"], "error: manifest 'missing.csv' not found"),
        (["--env", "tiny-centralized", "--epochs", "0"], "error: --epochs must be at least 1"),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default runs/<env>-<time> would go
    assert one_error_line(capsys, main, args).startswith(message)  # the truncated-scan test below runs python -m
    assert not list(tmp_path.glob("runs/*"))  # no empty run directory left behind


def test_truncated_nifti_in_a_cohort_names_the_subject(tmp_path, tiny_manifest):
    df = pd.read_csv(tiny_manifest)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes((tiny_manifest.parent / df["path"][3]).read_bytes()[:200])
    df["path"] = [str((tiny_manifest.parent / p).resolve()) for p in df["path"]]
    df.loc[3, "path"] = str(broken)
    df.to_csv(tmp_path / "manifest.csv", index=False)
    result = _cli("--env", "tiny-centralized", "--cohort", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: subject '{df['subject_id'][3]}': cannot read NIfTI" in result.stderr
