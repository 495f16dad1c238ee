"""The privacy–utility sweep: input checks, derived environments, and one end-to-end run on tiny-centralized."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attacks import sweep
from attacks.experiments import sweep as experiment
from attacks.reporting import sweep as outputs
from commands import one_error_line
from fedsim import snapshots
from fedsim.config import load_env, tomllib
from fedsim.errors import FedsimError

BAD_INPUTS = {
    "unknown environment": (["--env", "centralised", "--defense", "label_noise", "--values", "0,1"], "centralised"),
    "unknown defense key": (["--env", "tiny-centralized", "--defense", "dp_noise", "--values", "0,1"], "dp_noise"),
    "not a number": (["--env", "tiny-centralized", "--defense", "label_noise", "--values", "0,lots"], "lots"),
    "negative": (["--env", "tiny-centralized", "--defense", "label_noise", "--values", "0.5,-1"], "-1"),
    "one value": (["--env", "tiny-centralized", "--defense", "label_noise", "--values", "1"], "at least 2"),
    "duplicate": (["--env", "tiny-centralized", "--defense", "label_noise", "--values", "0,1,1.0"], "1 is given twice"),
    "fractional patience": (["--env", "tiny-centralized", "--defense", "early_stopping_patience", "--values", "0,1.5"],
                            "whole number"),
    "zero clip norm": (["--env", "tiny-dp", "--defense", "dp_max_grad_norm", "--values", "0,1"], "dp_max_grad_norm"),
    "feature typo": (["--env", "tiny-centralized", "--defense", "label_noise", "--values", "0,1", "--features", "eror"],
                     "eror"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_in_one_line_before_anything_is_written(case: str, tmp_path: Path, capsys):
    args, named = BAD_INPUTS[case]
    assert named in one_error_line(capsys, sweep.main, [*args, "--out", str(tmp_path / "s")])
    assert not (tmp_path / "s").exists()


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path: Path):
    args, named = BAD_INPUTS["unknown defense key"]  # the module's own entry point, once: the cases above run its handler
    result = subprocess.run([sys.executable, "-m", "attacks.sweep", *args, "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error:") and named in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s").exists()


def test_derived_environment_carries_exactly_the_requested_defense(tmp_path: Path):
    settings = experiment.plan_settings("tiny-dp", "dp_noise_multiplier", [0.0, 1.0], {}, tmp_path)
    assert [s.label for s in settings] == ["0", "1"]
    for s in settings:
        s.env_file.parent.mkdir(parents=True)
        s.env_file.write_text(s.text)
    off, on = (load_env(s.env_file) for s in settings)
    assert not off.defense.dp_sgd and off.defense.dp_max_grad_norm is None  # 0 drops DP-SGD with its clip
    assert off.defense.dp_delta == 1e-3  # the base environment's other [defense] keys stay
    assert (on.defense.dp_noise_multiplier, on.defense.dp_max_grad_norm, on.defense.dp_delta) == (1.0, 1.0, 1e-3)
    assert off.train == load_env("tiny-dp").train and on.partition == load_env("tiny-dp").partition


def test_set_adds_fixed_defense_keys_and_a_changed_environment_is_refused(tmp_path: Path):
    fixed = experiment.parse_settings(["dp_max_grad_norm=0.5"], "dp_noise_multiplier")
    settings = experiment.plan_settings("tiny-centralized", "dp_noise_multiplier", [0.0, 2.0], fixed, tmp_path)
    for s in settings:
        s.env_file.parent.mkdir(parents=True)
        s.env_file.write_text(s.text)
    off, on = (load_env(s.env_file) for s in settings)
    assert off.defense is None  # tiny-centralized has no [defense]: 0 leaves none
    assert (on.defense.dp_noise_multiplier, on.defense.dp_max_grad_norm) == (2.0, 0.5)
    settings[1].run_dir.mkdir()
    with pytest.raises(FedsimError, match="another version"):
        experiment.plan_settings("tiny-centralized", "dp_noise_multiplier", [0.0, 2.0], {"dp_max_grad_norm": 1.0}, tmp_path)
    with pytest.raises(FedsimError, match="swept key"):
        experiment.parse_settings(["dp_noise_multiplier=1"], "dp_noise_multiplier")


def test_privacy_spent_reads_the_done_of_centralized_and_federated_dp_runs():
    # DONE of `fedsim.centralized` on tiny-centralized + DP-SGD, and of `fedsim.run --env tiny-dp`
    assert experiment.privacy_spent({"epsilon": {"epsilon": 3.26}, "delta": 1e-3}) == {
        "epsilon": 3.26, "central_epsilon": pytest.approx(math.nan, nan_ok=True), "delta": 1e-3}
    federated = experiment.privacy_spent({"epsilon": {"L1_epsilon": 3.8, "L2_epsilon": 4.7, "central_epsilon": 2.0},
                                     "delta": 1e-3})
    assert (federated["epsilon"], federated["central_epsilon"]) == (4.7, 2.0)  # the weakest learner's guarantee
    assert all(math.isnan(v) for v in experiment.privacy_spent({"unseen_mae": 6.0}).values())


@pytest.mark.slow
def test_prediction_noise_sweep_end_to_end_and_rerun_redoes_nothing(tmp_path: Path):
    out = tmp_path / "sweep"
    args = ["--env", "tiny-centralized", "--defense", "prediction_noise", "--values", "0,20", "--out", str(out),
            "--classifier", "logreg", "--repeats", "2"]
    assert sweep.main(args) == 0
    frame = pd.read_csv(out / outputs.SWEEP_CSV)
    assert len(frame) == 2 * 3 and set(frame["features"]) == {"error", "pred+label", "grad_norm"}
    assert frame[["unseen_mae", "members_mae", "auc", "accuracy"]].notna().all().all()
    assert frame["epsilon"].isna().all()  # no DP: no ε
    by = {v: rows.set_index("features") for v, rows in frame.groupby("value")}
    done = {v: snapshots.read_done(out / experiment.value_label(v) / "run") for v in by}
    # prediction noise changes only what is released: the model trains identically ...
    assert done[0]["unseen_mae"] == done[20]["unseen_mae"]
    assert by[0].loc["grad_norm", "auc"] == by[20].loc["grad_norm", "auc"]  # gradients are the clean model's
    # ... while the released predictions, their MAE and the prediction-based attacks change
    assert by[0].loc["error", "unseen_mae"] == pytest.approx(done[0]["unseen_mae"], abs=1e-4)
    assert by[20].loc["error", "unseen_mae"] > done[20]["unseen_mae"] + 1
    assert list(by[0].loc[["error", "pred+label"], "auc"]) != list(by[20].loc[["error", "pred+label"], "auc"])
    assert tomllib.loads(next((out / "20").glob("*.toml")).read_text())["defense"] == {"prediction_noise": 20.0}
    assert snapshots.read_config(out / "20" / "run")["defense"]["prediction_noise"] == 20.0
    assert "python -m attacks.sweep --env tiny-centralized" in (out / outputs.SWEEP_MD).read_text()
    assert "data:image/png;base64," in (out / outputs.SWEEP_HTML).read_text()
    assert (out / outputs.SWEEP_PNG).read_bytes()[:4] == b"\x89PNG"
    # the attribute family on every value: the holder reads activations (the same model), the outsider the released ages
    attribute = pd.read_csv(out / outputs.ATTRIBUTE_CSV)
    assert {"outsider", "feature holder", "centralized adversary"} == set(attribute["seat"]) and set(attribute["value"]) == {0, 20}
    by = {v: rows.set_index(["seat", "features"]) for v, rows in attribute.groupby("value")}
    assert by[0].loc[("feature holder", "activation:conv1"), "auc"] == by[20].loc[("feature holder", "activation:conv1"), "auc"]
    assert by[0].loc[("outsider", "error"), "auc"] != by[20].loc[("outsider", "error"), "auc"]
    assert "Attribute inference" in (out / outputs.SWEEP_HTML).read_text() and (out / outputs.ATTRIBUTE_PNG).is_file()
    written = {outputs.SWEEP_CSV, outputs.SWEEP_MD, outputs.SWEEP_PNG, outputs.SWEEP_HTML, outputs.ATTRIBUTE_CSV,
               outputs.ATTRIBUTE_PNG}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name not in written}
    assert sweep.main(args) == 0  # everything on disk: nothing retrained, nothing re-attacked
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
