"""Calibrated attacks (LiRA, RMIA): scoring on synthetic statistics, tiny reference models, the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attacks.calibrated import main
from attacks.membership.calibration import Evidence, lira_offline, lira_online, loss_scores, rmia_scores, score_attacks
from attacks.evaluation.metrics import roc_auc
from attacks.membership.references import ReferencePlan, assign_halves, ensure_references, predict_rows, train_model
from commands import one_error_line
from fedsim.cli import run_cli
from fedsim.config import load_env, with_overrides
from fedsim.data.cache import CohortArray
from fedsim.errors import FedsimError

ENVS = Path(__file__).resolve().parents[3] / "environments"
ALL = ["loss", "lira-online", "lira-offline", "rmia"]


# --- reference halves ------------------------------------------------------------------------


def test_halves_are_complementary_pairs_that_extend():
    keep = assign_halves(11, 8, seed=3)
    assert (keep.sum(axis=0) == 4).all()  # every subject IN for exactly half the references
    assert (keep[0::2] ^ keep[1::2]).all()  # pairs are complements
    assert (assign_halves(11, 4, seed=3) == keep[:4]).all()  # 8 references extend 4
    assert (assign_halves(11, 8, seed=3) == keep).all() and not (assign_halves(11, 8, seed=4) == keep).all()
    with pytest.raises(FedsimError, match="even number of at least 2"):
        assign_halves(11, 3, seed=0)


# --- scoring functions on synthetic statistics ------------------------------------------------


def _synthetic(n: int = 2000, n_refs: int = 8, *, leak: bool, seed: int = 0):
    """Ages, predictions of a target and references, IN/OUT masks and target membership.

    Each subject has its own difficulty (a brain-age gap of sd 5 years, which an uncalibrated
    loss attack confuses with non-membership); a model that trained on it predicts 40% of the gap
    away. ``leak=False``: the target behaves the same on members and non-members (untrained).
    """
    rng = np.random.default_rng(seed)
    age = rng.normal(62.7, 7.4, n)
    gap = rng.normal(0, 5, n)
    keep = assign_halves(n, n_refs, seed=seed)
    member = rng.permutation(n) < n // 2

    def predict(trained_on: np.ndarray) -> np.ndarray:
        return age + gap * np.where(trained_on, 0.6, 1.0) + rng.normal(0, 0.5, trained_on.shape)

    references = predict(keep)
    target = predict(member if leak else np.zeros(n, dtype=bool))
    return Evidence(age, target, references, keep, np.flatnonzero(~member)), member.astype(int)


@pytest.mark.parametrize("variance", ["global", "per-subject"])
def test_scores_separate_members_only_when_the_target_leaks(variance):
    for leak in (True, False):
        evidence, member = _synthetic(leak=leak)
        aucs = {f"{s['method']}/{s['statistic']}": roc_auc(member, scores)
                for s, scores in score_attacks(evidence, ALL, statistics=["log-abs", "residual"], variance=variance)}
        for name, auc in aucs.items():
            if name.startswith("loss"):
                continue
            if leak:
                assert auc > 0.8, (name, auc)
            else:
                assert abs(auc - 0.5) < 0.05, (name, auc)
        if leak:  # calibration is the point: per-subject difficulty no longer hides membership
            assert aucs["lira-online/log-abs"] > aucs["loss/abs-error"] + 0.1


def test_lira_by_hand():
    # One subject; IN statistics 0 and 2 (mean 1, sd √2), OUT 4 and 6 (mean 5, sd √2).
    reference = np.array([[0.0], [4.0], [2.0], [6.0]])
    keep = np.array([[True], [False], [True], [False]])
    # log N(1; 1, 2) - log N(1; 5, 2) = (1 - 5)² / (2 * 2) = 4
    assert lira_online([1.0], reference, keep, variance="per-subject") == pytest.approx([4.0])
    assert lira_online([3.0], reference, keep, variance="global") == pytest.approx([0.0])
    # offline, members lower: log Pr_OUT[Z >= s], 1/2 at the OUT mean, Pr[N(0,1) >= -1] one sd below it
    assert lira_offline([5.0], reference, keep, variance="per-subject", alternative="less") == pytest.approx([np.log(0.5)])
    got = lira_offline([5.0 - np.sqrt(2)], reference, keep, variance="per-subject", alternative="less")
    assert got == pytest.approx([stats.norm.logcdf(1.0)])
    # toward zero from a negative OUT mean (-5): a residual of -5 + √2 is one sd closer to 0
    got = lira_offline([-5.0 + np.sqrt(2)], -reference, keep, variance="per-subject", alternative="toward-zero")
    assert got == pytest.approx([stats.norm.logcdf(1.0)])
    with pytest.raises(FedsimError, match="at least 2 IN and 2 OUT"):
        lira_online([1.0], reference[:2], keep[:2])


def test_rmia_by_hand():
    # Residuals: target 0, 2, -2, 2 (Laplace scale 1.5); both references ±2 everywhere (scale 2).
    age = np.array([60.0, 70.0, 50.0, 65.0])
    target = age + [0.0, 2.0, -2.0, 2.0]
    references = np.stack([age + [2.0, 2.0, -2.0, 2.0], age - [2.0, 2.0, -2.0, 2.0]])
    # log Pr(x|θ)/Pr(x) = (-|r|/1.5 - log 3) - (-2/2 - log 4): subject 0 gets 4/3 more than the others.
    z = np.array([1, 2, 3])
    assert rmia_scores(target, references, age, z, likelihood="laplace", gamma=1.01) == pytest.approx([1, 0, 0, 0])
    assert rmia_scores(target, references, age, z, likelihood="laplace", gamma=1.0) == pytest.approx([1, 1, 1, 1])
    assert rmia_scores(target, references, age, z, likelihood="laplace", gamma=np.exp(1.4)) == pytest.approx([0, 0, 0, 0])
    with pytest.raises(FedsimError, match="unknown likelihood 'cauchy'"):
        rmia_scores(target, references, age, z, likelihood="cauchy")
    assert loss_scores(target, age) == pytest.approx([0, -2, -2, -2])


# --- real reference models on a memorisable tiny cohort -------------------------------------


def test_lira_and_rmia_on_overfitted_and_untrained_models(tmp_path):
    """Tiny 3-D CNNs memorise noise volumes with random ages: members are then recognisable."""
    n, shape = 96, [8, 8, 8]
    cfg = load_env("tiny-centralized")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=shape))
    cfg = with_overrides(cfg, train={"lr": 3e-2, "batch_size": 2})
    rng = np.random.default_rng(0)
    ids = [f"s{i:03d}" for i in range(n)]
    cohort = CohortArray(rng.standard_normal((n, *shape)).astype(np.float32), ids, rng.normal(62.7, 7.4, n))
    rows = np.arange(n)
    member = np.random.default_rng(101).permutation(n) < n // 2
    refs = ensure_references(ReferencePlan(cfg.to_dict(), tuple(ids), 30, 1), cohort, tmp_path, references=8)
    for epochs, overfitted in ((30, True), (0, False)):
        model, _ = train_model(cfg, cohort, rows[member], epochs=epochs, seed=999)
        evidence = Evidence(cohort.ages, predict_rows(model, cohort, rows), refs.predictions, refs.keep,
                            np.flatnonzero(~member))
        for settings, scores in score_attacks(evidence, ["lira-online", "rmia"], statistics=["log-abs"]):
            auc = roc_auc(member.astype(int), scores)
            assert (auc > 0.8) if overfitted else (abs(auc - 0.5) < 0.2), (settings, epochs, auc)


def test_references_train_with_the_runs_defenses(tmp_path):
    """A DP-SGD run's references train with DP-SGD (and its other wrappers), not plainly."""
    n, shape = 16, [8, 8, 8]
    rng = np.random.default_rng(0)
    cohort = CohortArray(rng.standard_normal((n, *shape)).astype(np.float32), [f"s{i}" for i in range(n)],
                         rng.normal(62.7, 7.4, n))
    rows = np.arange(n)
    toml = tmp_path / "dp.toml"
    text = (ENVS / "tiny-centralized.toml").read_text().replace("[16, 20, 16]", str(shape))
    toml.write_text(text + "\n[defense]\ndp_noise_multiplier = 1.0\ndp_max_grad_norm = 0.1\nmodel_noise = 0.01\n")
    dp = load_env(toml)
    base = plain = dataclasses.replace(dp, defense=None)
    predictions = {}
    for name, cfg in (("plain", plain), ("dp", dp), ("dp again", dp)):
        model, _ = train_model(cfg, cohort, rows, epochs=2, seed=5)
        predictions[name] = predict_rows(model, cohort, rows)
    assert not np.allclose(predictions["plain"], predictions["dp"])
    np.testing.assert_array_equal(predictions["dp"], predictions["dp again"])  # seeded, DP noise included
    # without [defense] a reference trains exactly as the plain fedsim.training loop does (bit for bit)
    import torch

    from fedsim.data.cache import VolumeDataset
    from fedsim.models import build_model
    from fedsim.training import make_loader, make_optimizer, train_epochs

    torch.manual_seed(5)
    by_hand = build_model(base.model.name, **base.model_kwargs())
    train_epochs(by_hand, make_loader(VolumeDataset(cohort, rows), 4, shuffle=True, seed=5),
                 make_optimizer(by_hand.parameters(), base.train), loss="mse", target_scale=7.4, epochs=1)
    ours, _ = train_model(base, cohort, rows, epochs=1, seed=5)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in by_hand.state_dict().items())


# --- the command on a tiny centralized run ----------------------------------------------------


def test_command_writes_results_and_reuses_references(tiny_run, capsys):
    (tiny_run / "attacks").mkdir(exist_ok=True)  # as if attacks.run had run: its rows join the table
    pd.DataFrame([{"control": "none", "classifier": "logreg", "features": "error", "round": 2, "accuracy": 0.6,
                   "auc": 0.65, "tpr@0.01": 0.1}]).to_csv(tiny_run / "attacks" / "results.csv", index=False)
    assert main([str(tiny_run), "--references", "4"]) == 0
    printed = capsys.readouterr().out
    assert "4 trained now" in printed and "attacks.run" in printed  # the classifier's row is compared
    assert f"report: {tiny_run / 'attacks' / 'calibrated.html'}" in printed and "logreg" in (
        tiny_run / "attacks" / "calibrated.html").read_text()  # the page, with the classifier beside the attacks
    results = pd.read_csv(tiny_run / "attacks" / "calibrated.csv")
    # loss + 2 LiRA methods x 2 statistics + RMIA, on the best round and the round-0 control
    assert len(results) == 2 * 6
    assert set(results["control"]) == {"none", "round-0"}
    assert set(results["method"]) == {"loss", "lira-online", "lira-offline", "rmia"}
    assert results["auc"].between(0, 1).all() and (results["n_members"] == results["n_nonmembers"]).all()
    assert {"tpr@0.01", "tpr@0.01_low", "tpr@0.01_high", "tpr@0.001", "references", "reference_epochs"} <= set(results.columns)
    assert ((results["auc_low"] <= results["auc"]) & (results["auc"] <= results["auc_high"])).all()
    assert (results["auc_high"] - results["auc_low"] > 0.05).all()  # a few attack-test subjects pin the AUC down little
    assert (results["reference_epochs"] == json.loads((tiny_run / "DONE").read_text())["best_round"]).all()
    scores = pd.read_csv(tiny_run / "attacks" / "calibrated_scores.csv")
    assert set(scores["set"]) == {"attack-train", "attack-test"}

    weights = sorted((tiny_run / "attacks" / "references").rglob("*.safetensors"))
    assert len(weights) == 4
    meta = json.loads((weights[0].parent / "meta.json").read_text())
    assert meta["n_in"] == len(meta["in"]) > 0
    stamps = [p.stat().st_mtime_ns for p in weights]
    assert main([str(tiny_run), "--references", "4", "--method", "rmia", "--no-controls"]) == 0
    assert "0 trained now" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in weights] == stamps  # reused, not retrained
    assert main([str(tiny_run), "--references", "6", "--method", "lira-online", "--no-controls"]) == 0
    assert "2 trained now" in capsys.readouterr().out  # 6 references extend the cached 4
    assert [p.stat().st_mtime_ns for p in weights] == stamps


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "lira-online,shokri"], "error: unknown method 'shokri'; choose from: loss, lira-online"),
        (["--references", "2", "--method", "lira-online"], "error: lira-online needs at least 4 reference models"),
        (["--references", "5"], "error: --references must be an even number of at least 2"),
        (["--statistic", "squared"], "error: unknown statistic 'squared'; choose one of: residual, log-abs"),
        (["--epochs", "0"], "error: --epochs must be at least 1"),
        (["--round", "7"], "error: round 7 does not exist in"),
        (["--gamma", "0"], "error: --gamma must be a positive finite number, got 0.0"),
        (["--seed", "-1"], "error: --seed must be a non-negative integer, got -1"),
    ],
)
def test_bad_input_is_one_line(tiny_run, capsys, extra, message):
    assert one_error_line(capsys, main, [str(tiny_run), *extra]).startswith(message)


def test_not_a_run_dir_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "attacks.calibrated", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "is not a fedsim run directory" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_federated_run_is_refused_by_name(tmp_path, tiny_manifest, capsys):
    """Only centralized targets so far: the error says so (not "no best epoch")."""
    from federations import federate

    run_dir = federate(tmp_path / "fed", tiny_manifest, env="tiny", rounds=1)
    capsys.readouterr()  # Flower's logs of the federation
    assert run_cli(main, [str(run_dir), "--references", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a federated run; calibrated attacks support centralized runs" in err
    assert err.count("\n") == 1
