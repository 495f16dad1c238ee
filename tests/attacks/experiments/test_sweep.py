"""The privacy–utility sweep: input checks, derived environments, one end-to-end run on tiny-centralized (trained and
calibrated attacks), the calibrated family on federations, and the strongest attack that judges each value."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attacks import sweep
from attacks.evaluation import verdicts
from attacks.execution import using_executor
from attacks.experiments import study
from attacks.experiments import sweep as experiment
from attacks.reporting import sweep as outputs
from commands import one_error_line
from executors import AsFreshWorkers
from federations import federate
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
    "odd references": (["--env", "tiny-centralized", "--defense", "label_noise", "--values", "0,1", "--references", "5"],
                       "even"),
    "too few references for LiRA": (["--env", "tiny-centralized", "--defense", "label_noise", "--values", "0,1",
                                     "--references", "2"], "at least 4"),
    "unknown family": (["--env", "tiny-centralized", "--defense", "label_noise", "--values", "0,1", "--families", "lira"],
                       "lira"),
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
    everything = pd.read_csv(out / outputs.SWEEP_CSV)
    frame = everything[everything["family"] == experiment.TRAINED]
    assert len(frame) == 2 * 3 and set(frame["features"]) == {"error", "pred+label", "grad_norm"}
    assert frame[["unseen_mae", "members_mae", "auc", "accuracy"]].notna().all().all()
    # the calibrated family (a default): LiRA, RMIA and the loss baseline on every value, each with its verdict
    calibrated = everything[everything["family"] == experiment.CALIBRATED]
    attacks = {"loss", "lira-online/log-abs", "lira-online/residual", "lira-offline/log-abs", "lira-offline/residual", "rmia"}
    assert {v: set(rows["features"]) for v, rows in calibrated.groupby("value")} == {0: attacks, 20: attacks}
    assert calibrated["kind"].isin(list(verdicts.KINDS)).all() and calibrated["verdict"].str.len().gt(0).all()
    assert calibrated[["auc", "auc_low", "auc_high", "round0", "unseen_mae"]].notna().all().all()
    assert calibrated["age_matched"].isna().all()  # a centralized calibrated attack has no age-matched control
    assert len(list((out / "0" / "run" / "attacks" / "references").glob("*/ref-03/meta.json"))) == 1  # 4 references
    page = (out / outputs.SWEEP_HTML).read_text()
    assert "Judged by the strongest attack" in page and "calibrated: lira-online/residual" in page
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

    # every value as a task of another executor (as Ray runs them: pickled, in any order): the same numbers
    tasks = shutil.copytree(out, tmp_path / "tasks", ignore=shutil.ignore_patterns("attacks", "sweep*", "attribute*"))
    workers = AsFreshWorkers()
    with using_executor(workers):
        assert sweep.main([str(tasks) if a == str(out) else a for a in args]) == 0
    assert sorted(str(job[1]) for job in workers.ran) == [str(tasks / "0" / "run"), str(tasks / "20" / "run")]
    again = pd.read_csv(tasks / outputs.SWEEP_CSV)
    pd.testing.assert_frame_equal(everything, again, check_exact=True)


def _row(value: float, family: str, features: str, kind: str, auc: float, high: float) -> dict:
    """A sweep.csv row with the numbers a report shows (utility and privacy made up)."""
    return {"defense": "label_noise", "value": value, "epsilon": math.nan, "central_epsilon": math.nan, "delta": math.nan,
            "round": 2, "unseen_mae": 6.0, "members_mae": 5.0, "gap": 1.0, "family": family, "features": features,
            "accuracy": auc, "accuracy_low": math.nan, "accuracy_high": math.nan, "auc": auc, "auc_low": 2 * auc - high,
            "auc_high": high, "tpr_at_1pct": 0.02, "tpr_at_1pct_low": 0.0, "tpr_at_1pct_high": 0.1, "age_matched": math.nan,
            "round0": 0.5, "kind": kind, "verdict": verdicts.KINDS[kind]}


def test_a_federation_without_local_models_is_skipped_and_the_report_says_why(tmp_path: Path):
    run_dir = federate(tmp_path / "run", env="tiny-learners", snapshot_local=False)
    why = study.calibrated_skipped(run_dir)
    assert "kept no local models" in why and "--snapshot-local" in why
    with pytest.raises(FedsimError, match="kept no local models"):
        study.calibrated_cached(run_dir, say=print)
    out = tmp_path / "sweep"
    frame = pd.DataFrame([_row(v, experiment.TRAINED, "error", verdicts.NOT_DETECTED, 0.52, 0.6) for v in (0, 1)])
    notes = [f"label_noise = {v}: calibrated attacks skipped: {why}." for v in (0, 1)]  # as the command words them
    outputs.write_outputs(out, frame, "python -m attacks.sweep …", "a sweep", None, notes)
    for written in (outputs.SWEEP_MD, outputs.SWEEP_HTML):
        text = (out / written).read_text()
        assert "label_noise = 0: calibrated attacks skipped: the run kept no local models" in text
        assert "label_noise = 1: calibrated attacks skipped" in text


def test_a_federation_that_kept_its_local_models_gets_the_controllers_calibrated_attacks(tmp_path: Path):
    run_dir = federate(tmp_path / "run", env="tiny-learners")
    assert study.calibrated_skipped(run_dir) == ""
    said: list[str] = []
    results = study.calibrated_cached(run_dir, repeats=1, say=said.append)
    assert set(results["classifier"]) == {"calibrated"} and set(results["control"]) == {"none", "age-matched"}
    assert set(results["round"]) == {2} and len(set(zip(results["attacker"], results["victim"]))) == 6
    setting = experiment.Setting(0.0, "0", tmp_path / "unused.toml", run_dir, "")
    rows = experiment.calibrated_sweep_rows("label_noise", setting, results)
    assert {r["family"] for r in rows} == {experiment.CALIBRATED}
    assert {r["features"] for r in rows} == {"lira-offline/residual", "lira-offline/log-abs", "rmia"}
    assert all(r["kind"] in verdicts.KINDS and r["verdict"] and r["age_matched"] == r["age_matched"] for r in rows)
    stamp = run_dir / "attacks" / study.CALIBRATED_STAMP
    before = stamp.stat().st_mtime_ns
    assert study.calibrated_cached(run_dir, repeats=1, say=said.append).equals(results)  # stamped: not attacked again
    assert stamp.stat().st_mtime_ns == before and "calibrated attack results found" in said[-1]


def test_each_value_is_judged_by_its_strongest_attack():
    frame = pd.DataFrame([
        _row(0, "trained", "error", verdicts.DETECTED, 0.80, 0.84),
        _row(0, "calibrated", "lira-online/residual", verdicts.DETECTED, 0.84, 0.89),
        _row(0, "calibrated", "rmia", verdicts.NOT_DETECTED, 0.55, 0.62),
        _row(1, "trained", "error", verdicts.NOT_DETECTED, 0.52, 0.55),
        _row(1, "trained", "grad_norm", verdicts.SHIFT, 0.50, 0.53),
        _row(2, "trained", "error", verdicts.NOT_DETECTED, 0.52, 0.55),
        _row(2, "calibrated", "rmia", verdicts.NOT_DETECTED, 0.49, 0.58),  # a wider interval: the bound that holds
    ])
    picked = experiment.strongest_rows(frame)
    assert list(picked["features"]) == ["lira-online/residual", "grad_norm", "rmia"]
