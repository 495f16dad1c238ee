"""The HTML attack report on synthetic results and a fake feature cache: no training, no gradients."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.evaluation.summary import controls_table
from attacks.reporting.membership import write_report
from attacks.signals.cache import FeatureCache
from attacks.target import Target, load_snapshot
from fedsim import snapshots
from fedsim.data.cache import CohortArray
from fedsim.models import build_model

NOTE = "with 4 non-members the smallest non-zero FPR is 1/4 = 0.25 > 0.01, so this is the TPR at FPR 0"
# feature set -> (attack, round-0 control, age-matched control) accuracy
CASES = {
    "error": (0.80, 0.50, 0.78),  # survives both controls: membership
    "pred+label": (0.75, 0.50, 0.50),  # gone once ages are matched: distribution shift
    "grad_norm": (0.85, 0.50, 0.70),  # both
}


def _fake_run(tmp_path: Path, groups: dict[str, int], rounds: list[int]) -> Target:
    """A run directory with config, tiny snapshots and a feature cache in which members have smaller errors."""
    rng = np.random.default_rng(0)
    group = [g for g, n in groups.items() for _ in range(n)]
    ids = [f"sub-{i:03d}" for i in range(len(group))]
    ages = rng.uniform(45, 80, len(ids))
    partitions = pd.DataFrame({"subject_id": ids, "age": ages, "age_bin": (ages // 5).astype(int), "group": group})
    (tmp_path / "config.toml").write_text(
        'name = "fake-env"\ndescription = "Synthetic run for report tests."\n[train]\nloss = "mse"\n'
        '[model]\nname = "cnn3d"\nin_shape = [16, 20, 16]\nchannels = [4, 8]\nhead_channels = 8\n')
    (tmp_path / "metrics.jsonl").write_text("".join(f'{{"round": {r}, "train_mae": 2.0, "unseen_mae": 5.0}}\n' for r in rounds))
    cohort = CohortArray(np.zeros((len(ids), 1), np.float32), ids, ages)
    target = Target(tmp_path, cohort, partitions, [0, *rounds], rounds[-1])
    member = np.array([g != "unseen" for g in group])
    for rnd in [0, *rounds]:
        torch.manual_seed(rnd)
        model = build_model("cnn3d", in_shape=(16, 20, 16), channels=(4, 8), head_channels=8)
        snapshots.save_round(tmp_path, rnd, model.state_dict(), {})
        if rnd == 0:
            continue
        folder = FeatureCache(target).folder(load_snapshot(tmp_path, rnd))
        folder.mkdir(parents=True)
        scale = np.where(member, 1.0, 4.0)[:, None]
        np.save(folder / "error.npy", (rng.normal(size=(len(ids), 1)) * scale).astype(np.float32))
        np.save(folder / "grad_norm.npy", (np.abs(rng.normal(size=(len(ids), 3))) * scale).astype(np.float32))
    return target


def _row(threat: str, attacker: str, victim: str, rnd: int, spec: str, repeat: int, control: str, acc: float) -> dict:
    jitter = 0.01 * (repeat - 1)  # std 0.01 over 3 repeats
    return {"threat": threat, "attacker": attacker, "victim": victim, "round": rnd, "features": spec,
            "classifier": "logreg", "repeat": repeat, "control": control, "n_train": 16, "accuracy": acc + jitter,
            "auc": acc + jitter, "n_members": 4, "n_nonmembers": 4, "tpr@0.01": 0.25, "tpr@0.01_low": 0.01,
            "tpr@0.01_high": 0.8, "tpr@0.01_fpr": 0.0, "tpr@0.01_note": NOTE}


def _results(threat: str, pairs: list[tuple[str, str]], rounds: list[int]) -> pd.DataFrame:
    rows = []
    for attacker, victim in pairs:
        for spec, (attack, round0, matched) in CASES.items():
            for repeat in range(3):
                rows.append(_row(threat, attacker, victim, 0, spec, repeat, "round-0", round0))
                for i, rnd in enumerate(rounds):
                    rows.append(_row(threat, attacker, victim, rnd, spec, repeat, "none", attack - 0.1 * (len(rounds) - 1 - i)))
                    rows.append(_row(threat, attacker, victim, rnd, spec, repeat, "age-matched", matched))
    return pd.DataFrame(rows)


def _assert_self_contained(page: str) -> None:
    assert 'src="http' not in page and "src='http" not in page
    assert "<link" not in page and "<script" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"src=[\"']([^\"']*)[\"']", page))


def test_controls_verdicts():
    table = controls_table(_results("centralized", [("adversary", "centralized")], [2]), 2).set_index("features")
    assert table.loc["error", "verdict"] == "leak detected, large"
    assert table.loc["pred+label", "verdict"] == "distribution shift"
    assert table.loc["grad_norm", "verdict"] == "leak detected, large — inflated by distribution shift"
    assert table.loc["grad_norm", "shift"] and not table.loc["error", "shift"]
    assert table.loc["error", "matched"] == pytest.approx(0.78)


def test_controls_without_age_matching_say_so():
    results = _results("centralized", [("adversary", "centralized")], [2])
    table = controls_table(results[results["control"] != "age-matched"], 2).set_index("features")
    assert table.loc["error", "verdict"] == "leak detected, large — age-matched control not run"


def test_centralized_report(tmp_path):
    target = _fake_run(tmp_path, {"train": 40, "val": 4, "unseen": 40}, [2])
    results = _results("centralized", [("adversary", "centralized")], [2])
    path = write_report(tmp_path, results, target)
    page = path.read_text()
    assert path == tmp_path / "attacks" / "report.html"
    _assert_self_contained(page)
    assert "fake-env" in page and "Synthetic run for report tests." in page
    # Table-1 rows in the paper's order with its names and 3D-CNN values
    assert page.index(">error<") < page.index(">gradient magnitude<") < page.index(">prediction + label<")
    assert "80.0 ± 1.0" in page and "59.90" in page and "72.60" in page and "76.45" in page
    assert "Leak detected</b> in 2 of 3 feature sets: error, gradient magnitude." in page
    assert "What the verdicts mean" in page and "leak detected, large" in page
    assert "Distribution shift</b> in 2: gradient magnitude, prediction + label." in page
    assert "TPR at FPR 0" in page and "†" in page
    assert 'alt="ROC curve"' in page and "differ from results.csv" in page  # synthetic accuracies are not a refit's
    assert page.count("data:image/png;base64,") == 2  # ROC + member distributions
    summary = pd.read_csv(tmp_path / "attacks" / "summary.csv")
    assert len(summary) == 3 * 3  # feature sets x (attack, round-0, age-matched)
    assert summary.loc[(summary.control == "none") & (summary.features == "error"), "accuracy"].item() == pytest.approx(0.80)


def test_learner_report(tmp_path):
    target = _fake_run(tmp_path, {"L1": 20, "L2": 20, "L3": 20, "unseen": 40}, [1, 2])
    learners = ["L1", "L2", "L3"]
    results = _results("learner", [(a, v) for a in learners for v in learners if a != v], [1, 2])
    page = write_report(tmp_path, results, target).read_text()
    _assert_self_contained(page)
    assert "Malicious learner threat (round 2)" in page
    assert 'alt="attacker × victim heat-map"' in page
    for attacker in learners:
        assert f"<h3>Attacker {attacker}</h3>" in page
        assert f'alt="accuracy vs round, {attacker}"' in page
        assert f"{attacker}&#39;s own subjects vs unseen" in page
    assert "victim L2" in page and "AUC 0.850" in page
    assert "Distribution shift</b> in 2: gradient magnitude, prediction + label." in page
    assert "ROC curve" not in page and "ROC of the best" not in page  # the ROC refit is centralized only
    # heat-map + per attacker (accuracy vs round + distributions)
    assert page.count("data:image/png;base64,") == 1 + 2 * len(learners)


def test_missing_features_and_controls_are_explained(tmp_path):
    target = _fake_run(tmp_path, {"train": 40, "unseen": 40}, [2])
    for f in FeatureCache(target).folder(load_snapshot(tmp_path, 2)).iterdir():
        f.unlink()
    results = _results("centralized", [("adversary", "centralized")], [2])
    page = write_report(tmp_path, results[results["control"] == "none"], target).read_text()
    assert "No controls were run" in page
    assert "No ROC curve" in page and "--features error,grad_norm" in page
