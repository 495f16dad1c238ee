"""The attack command on a tiny centralized run: results layout, cached features, one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from attacks.membership import trained
from attacks.membership.classifiers import make_classifier
from attacks.run import main
from attacks.signals.features import compute_features
from attacks.target import attacked_round, load_snapshot, open_run
from commands import one_error_line
from fedsim.errors import FedsimError


def test_attack_writes_one_row_per_attack_and_reuses_features(tiny_run):
    args = [str(tiny_run), "--features", "error,pred+label", "--classifier", "logreg", "--repeats", "2"]
    assert main(args) == 0
    results = pd.read_csv(tiny_run / "attacks" / "results.csv")
    # 2 feature sets x 2 repeats, for the attack itself and each of its two controls
    assert len(results) == 2 * 2 * 3
    assert set(results["control"]) == {"none", "round-0", "age-matched"}
    assert set(results.loc[results.control == "round-0", "round"]) == {0}
    assert set(results.loc[results.control == "none", "round"]) == {results["round"].max()}
    assert results["accuracy"].between(0, 1).all() and results["auc"].between(0, 1).all()
    assert {"tpr@0.01", "tpr@0.01_low", "tpr@0.01_high", "n_members", "n_nonmembers"} <= set(results.columns)
    assert (results["n_members"] == results["n_nonmembers"]).all()
    cached = sorted((tiny_run / "attacks" / "features").rglob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert main(args) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # no feature recomputed


def test_a_snapshot_that_changed_on_disk_is_attacked_with_fresh_features(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = [str(run), "--rounds", "2", "--features", "error", "--classifier", "logreg", "--repeats", "1", "--no-controls"]
    assert main(args) == 0
    before = pd.read_csv(run / "attacks" / "results.csv")
    folders = {p.parent for p in (run / "attacks" / "features").rglob("error.npy")}
    # The run is retrained (here: round 2's weights replaced by round 1's) under the same round number.
    shutil.copy(run / "rounds" / "0001" / "model.safetensors", run / "rounds" / "0002" / "model.safetensors")
    assert main(args) == 0
    after = pd.read_csv(run / "attacks" / "results.csv")
    fresh = {p.parent for p in (run / "attacks" / "features").rglob("error.npy")} - folders
    assert len(fresh) == 1  # a new cache entry, keyed by the new weights
    new, old = fresh.pop(), folders.pop()
    source = json.loads((new / "source.json").read_text())
    assert source["round"] == 2 and source["weights_sha256"] != json.loads((old / "source.json").read_text())["weights_sha256"]
    # the features attacked now are round 1's (the weights on disk), not the stale ones of the old round 2
    target = open_run(run)
    expected = compute_features(load_snapshot(run, 1).model, target.cohort, ["error"])["error"]
    np.testing.assert_allclose(np.load(new / "error.npy"), expected, rtol=1e-6)
    assert not np.allclose(np.load(old / "error.npy"), expected)
    assert len(after) == len(before)


def test_stacked_rounds_are_one_attack_on_every_rounds_features_side_by_side(tiny_run, monkeypatch):
    widths = []

    def spy(name, **kwargs):
        clf = make_classifier(name, **kwargs)
        fit = clf.fit
        clf.fit = lambda X, y: (widths.append((sum(b.width for b in kwargs["layout"]), X.shape[1])), fit(X, y))[1]
        return clf

    monkeypatch.setattr(trained, "make_classifier", spy)
    assert main([str(tiny_run), "--rounds", "1,2", "--stack", "--features", "error", "--classifier", "conv",
                 "--repeats", "1"]) == 0
    results = pd.read_csv(tiny_run / "attacks" / "results.csv")
    stacked = results[results["features"] == "error stacked"]
    assert set(stacked["control"]) == {"none", "round-0", "age-matched"}
    assert set(stacked.loc[stacked.control == "none", "stacked_rounds"]) == {"1,2"}
    assert set(stacked.loc[stacked.control == "round-0", "stacked_rounds"]) == {"0,0"}
    assert set(stacked.loc[stacked.control == "none", "round"]) == {2}
    # per-round attacks still run beside it; a stacked attack sees one error column per round
    assert set(results.loc[(results.features == "error") & (results.control == "none"), "round"]) == {1, 2}
    assert (1, 1) in widths and (2, 2) in widths and all(layout == cols for layout, cols in widths)


def test_stack_needs_two_rounds(tiny_run, capsys):
    assert one_error_line(capsys, main, [str(tiny_run), "--rounds", "2", "--stack"]).startswith(
        "error: --stack needs at least 2 rounds")


def test_conv_classifier_gets_each_feature_sets_layout(tiny_run, monkeypatch):
    layouts = []

    def spy(name, **kwargs):
        layouts.append(kwargs["layout"])
        return make_classifier(name, **kwargs)

    monkeypatch.setattr(trained, "make_classifier", spy)
    spec = "pred+label+grad:conv6+grad:output"
    assert main([str(tiny_run), "--features", spec, "--classifier", "conv", "--repeats", "1", "--no-controls"]) == 0
    assert layouts and all([b.name for b in layout] == spec.replace("pred", "prediction").split("+") for layout in layouts)
    # The report refits the attack for its ROC curve: with the same layout, it gets the same accuracies.
    assert "its accuracies match results.csv" in (tiny_run / "attacks" / "report.html").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rounds", "99"], "error: round 99 does not exist in"),
        (["--features", "error,grad:conv9"], "error: BrainAgeCNN3D has no layer 'conv9'"),
        (["--features", "pred+wobble"], "error: unknown feature"),
        (["--threat", "learner"], "error: the malicious learner threat needs a federated run"),
        (["--classifier", "loss_threshold", "--features", "pred"], "error: the loss_threshold attack scores the error alone"),
    ],
)
def test_bad_input_is_one_line(tiny_run, capsys, extra, message):
    assert one_error_line(capsys, main, [str(tiny_run), "--repeats", "1", "--no-controls", *extra]).startswith(message)


def test_every_attack_checks_a_round_with_one_message(tiny_run):
    target = open_run(tiny_run)
    last = target.rounds[-1]
    assert attacked_round(target) == last and attacked_round(target, 0) == 0
    assert attacked_round(target, 1, first=1) == 1
    with pytest.raises(FedsimError, match=rf"^round 0 is the untrained model: attack a trained round \(1\.\.{last}\)$"):
        attacked_round(target, 0, first=1)
    with pytest.raises(FedsimError, match=rf"round {last + 1} does not exist in .*; rounds on disk: 0\.\.{last}$"):
        attacked_round(target, last + 1)


def test_not_a_run_dir_and_no_snapshots(tmp_path, tiny_run, capsys):
    assert "is not a fedsim run directory" in one_error_line(capsys, main, [str(tmp_path)])
    (tmp_path / "config.toml").write_text((tiny_run / "config.toml").read_text())
    assert "has no snapshots" in one_error_line(capsys, main, [str(tmp_path)])
