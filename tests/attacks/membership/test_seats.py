"""Every seat at the table on a tiny 3-learner federation that kept its local models."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from attacks import seats
from attacks.membership import seats as seat_attacks
from attacks.membership.classifiers import attack_scores, make_classifier
from attacks.signals.features import is_black_box
from attacks.evaluation.metrics import accuracy_at, best_threshold
from attacks.threats.splits import learner_splits
from attacks.membership.trained import run_attacks
from attacks.signals.cache import FeatureCache
from attacks.target import load_snapshot, open_run
from commands import one_error_line
from federations import federate
from fedsim import snapshots
from fedsim.errors import FedsimError

LEARNERS = ("L1", "L2", "L3")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """tiny-learners (snapshot_local = true), 2 rounds, in-process: community and local models on disk."""
    return federate(tmp_path_factory.mktemp("seats") / "run", env="tiny-learners")


def test_black_box_sets_need_no_activation_or_gradient():
    assert is_black_box("pred+label") and is_black_box("error")
    assert not is_black_box("pred+label+grad:conv6") and not is_black_box("grad_norm")
    assert not is_black_box("activation:conv6")


def test_controller_fits_on_the_attackers_local_model_and_scores_on_the_victims(local_run):
    target = open_run(local_run)
    rows = run_attacks(target, threat="controller", rounds=[2], feature_sets=["error"], classifier="logreg", repeats=1)
    assert {(r["attacker"], r["victim"]) for r in rows} == {(a, v) for a in LEARNERS for v in LEARNERS if a != v}
    cache = FeatureCache(target)
    error = {g: cache.read(load_snapshot(local_run, 2, name=g))["error"] for g in LEARNERS}
    assert not np.allclose(error["L1"], error["L2"])  # two local models, two sets of errors
    row_of = {s: i for i, s in enumerate(target.cohort.subject_ids)}
    (split,) = learner_splits(target.partitions, "L1", "L2", repeats=1)
    (train_ids, y_train), (test_ids, y_test) = split.train(), split.test()
    clf = make_classifier("logreg", random_state=0).fit(error["L1"][[row_of[s] for s in train_ids]], y_train)
    scores, threshold = attack_scores(clf, error["L2"][[row_of[s] for s in test_ids]])
    (row,) = [r for r in rows if (r["attacker"], r["victim"]) == ("L1", "L2")]
    assert row["accuracy"] == pytest.approx(accuracy_at(y_test, scores, threshold=threshold))


def test_controller_refuses_round_zero(local_run):
    with pytest.raises(FedsimError, match="round 0 has no local models"):
        run_attacks(open_run(local_run), threat="controller", rounds=[0], feature_sets=["error"], classifier="logreg")


def test_seats_attack_the_same_victims_and_write_a_comparison(local_run):
    assert seats.main([str(local_run), "--features", "error,pred+label,grad_norm", "--classifier", "logreg",
                       "--repeats", "2", "--round", "1"]) == 0
    out = seat_attacks.seats_dir(local_run, 1)
    results = pd.read_csv(out / "results.csv")
    assert set(results["seat"]) == set(seat_attacks.SEATS)
    assert set(results["control"]) == {"none", "age-matched"}
    by_seat = {s: g for s, g in results.groupby("seat")}
    # the learner and the controller attack round 1; the outsider the final community model, black box only
    assert set(by_seat[seat_attacks.LEARNER]["round"]) == set(by_seat[seat_attacks.CONTROLLER]["round"]) == {1}
    assert set(by_seat[seat_attacks.OUTSIDER]["round"]) == {2}
    assert set(by_seat[seat_attacks.OUTSIDER]["features"]) == {"error", "pred+label"}
    classifier_rows = by_seat[seat_attacks.CONTROLLER]["classifier"] == "logreg"
    assert set(by_seat[seat_attacks.CONTROLLER].loc[classifier_rows, "features"]) == {"error", "pred+label", "grad_norm"}
    assert set(by_seat[seat_attacks.CONTROLLER].loc[~classifier_rows, "features"]) == {
        "lira-offline/residual", "lira-offline/log-abs", "rmia"}
    keys_ = ["attacker", "victim", "repeat", "control", "n_members", "n_nonmembers"]
    pairs = {s: set(map(tuple, g[keys_].drop_duplicates().to_numpy())) for s, g in by_seat.items()}
    assert pairs[seat_attacks.LEARNER] == pairs[seat_attacks.CONTROLLER] == pairs[seat_attacks.OUTSIDER]
    assert "error" in FeatureCache(open_run(local_run)).read(load_snapshot(local_run, 1, name="L1"))
    table = pd.read_csv(out / "seats.csv")
    assert len(table) == 3 + (3 + 3) + 2 and table[["attack", "auc", "matched"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["auc_low"] <= table["auc"]).all() and (table["auc"] <= table["auc_high"]).all()
    page = (out / "report.html").read_text()
    assert "curious controller" in page and page.count("data:image/png;base64,") == 2


def test_seats_need_local_models(local_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(local_run, copy, ignore=shutil.ignore_patterns("attacks"))
    for path in (copy / snapshots.ROUNDS_DIR).rglob("L*.safetensors"):
        path.unlink()
    result = subprocess.run([sys.executable, "-m", "attacks.seats", str(copy)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "--snapshot-local" in result.stderr
    assert "Traceback" not in result.stderr


def test_calibrated_controller_scores_a_victim_against_the_other_local_models(local_run):
    target = open_run(local_run)
    rows = seat_attacks.controller_calibrated(target, rnd=2, repeats=1)
    assert {(r["attacker"], r["victim"]) for r in rows} == {(a, v) for a in LEARNERS for v in LEARNERS if a != v}
    assert {r["classifier"] for r in rows} == {seat_attacks.CALIBRATED}
    # by hand, L1 → L2, offline LiRA on log |error|: L2's subjects against L2's local model with L1's and
    # L3's as references, the threshold from L1's attack-train subjects against L1's model (L2's, L3's)
    predictions = {g: FeatureCache(target).read(load_snapshot(local_run, 2, name=g))["prediction"][:, 0]
                   for g in LEARNERS}
    row_of = {s: i for i, s in enumerate(target.cohort.subject_ids)}
    (split,) = learner_splits(target.partitions, "L1", "L2", repeats=1)
    (train_ids, y_train), (test_ids, y_test) = split.train(), split.test()
    unseen = target.partitions.loc[target.partitions["group"] == "unseen", "subject_id"]
    z = sorted(set(unseen) - set(test_ids))  # RMIA's population; LiRA pools its variance over it too

    def offline_lira(model: str, ids: np.ndarray) -> np.ndarray:
        cols = [row_of[s] for s in ids] + [row_of[s] for s in z if s not in set(ids)]
        age = target.cohort.ages[cols].astype(np.float64)

        def stat(g: str) -> np.ndarray:
            return np.log(np.maximum(np.abs(predictions[g][cols].astype(np.float64) - age), 1e-6))

        refs = np.stack([stat(g) for g in LEARNERS if g != model])
        mean = refs.mean(axis=0)
        std = np.sqrt(((refs - mean) ** 2).sum() / len(cols))  # pooled: 2 references, 1 dof per subject
        return stats.norm.logsf(stat(model), mean, std)[: len(ids)]

    theirs = offline_lira("L2", test_ids)
    threshold = best_threshold(y_train, offline_lira("L1", train_ids))
    (row,) = [r for r in rows if (r["attacker"], r["victim"], r["features"]) == ("L1", "L2", "lira-offline/log-abs")]
    assert row["auc"] == pytest.approx(roc_auc_score(y_test, theirs))
    assert row["accuracy"] == pytest.approx(accuracy_at(y_test, theirs, threshold=threshold))


def test_seat_table_orders_seats_and_picks_each_seats_best_by_its_age_matched_control():
    rows = [{"seat": seat, "features": f, "control": c, "attacker": a, "victim": v, "round": 3, "repeat": 0,
             "accuracy": acc, "auc": acc, "auc_low": acc - 0.1, "auc_high": acc + 0.1, "tpr@0.01": 0.1,
             "tpr@0.01_low": 0.0, "tpr@0.01_high": 0.2}
            for seat, f, c, acc in [
                (seat_attacks.OUTSIDER, "error", "none", 0.52), (seat_attacks.OUTSIDER, "error", "age-matched", 0.5),
                (seat_attacks.CONTROLLER, "error", "none", 0.8), (seat_attacks.CONTROLLER, "error", "age-matched", 0.55),  # shift
                (seat_attacks.CONTROLLER, "grad_norm", "none", 0.7), (seat_attacks.CONTROLLER, "grad_norm", "age-matched", 0.7),
                (seat_attacks.LEARNER, "error", "none", 0.6), (seat_attacks.LEARNER, "error", "age-matched", 0.6)]
            for a, v, acc in (("L1", "L2", acc), ("L2", "L1", acc - 0.1))]
    results = pd.DataFrame(rows)
    table = seat_attacks.seat_table(results)
    assert list(table["seat"]) == [seat_attacks.LEARNER, seat_attacks.CONTROLLER, seat_attacks.CONTROLLER, seat_attacks.OUTSIDER]
    controller_error = table[(table["seat"] == seat_attacks.CONTROLLER) & (table["features"] == "error")].iloc[0]
    assert controller_error["attack"] == pytest.approx(0.75) and controller_error["matched"] == pytest.approx(0.5)
    # its interval is a bootstrap over the two victims (0.8 on L2, 0.7 on L1), not a mean of per-attack bounds
    assert (controller_error["attack_low"], controller_error["attack_high"]) == pytest.approx((0.7, 0.8))
    assert controller_error["kind"] == "shift"  # plain 75 % vs age-matched 50 % (chance): distribution shift
    best = seat_attacks.best_sets(table)
    assert best == {seat_attacks.LEARNER: "error", seat_attacks.CONTROLLER: "grad_norm", seat_attacks.OUTSIDER: "error"}
    victims = seat_attacks.victim_table(results, best)
    assert list(victims.index) == ["L1", "L2"]
    assert victims.loc["L2", seat_attacks.CONTROLLER] == pytest.approx(0.7) and victims.loc["L1", seat_attacks.CONTROLLER] == pytest.approx(0.6)


def test_calibrated_controller_needs_three_learners(local_run, tmp_path):
    """With 2 learners a victim's subjects have 1 other local model: too few to fit LiRA; the seats run without it."""
    copy = tmp_path / "run"
    shutil.copytree(local_run, copy, ignore=shutil.ignore_patterns("attacks"))
    parts = pd.read_csv(copy / snapshots.PARTITIONS_FILE)
    parts.loc[parts["group"] == "L3", "group"] = "unseen"  # L3's subjects become unseen: a 2-learner run
    parts.to_csv(copy / snapshots.PARTITIONS_FILE, index=False)
    results = seat_attacks.run_seats(open_run(copy), rnd=2, feature_sets=["error"], classifier="logreg", repeats=1)
    assert seat_attacks.CALIBRATED not in set(results["classifier"]) and set(results["seat"]) == set(seat_attacks.SEATS)


def test_a_learner_without_a_local_model_that_round_and_a_negative_seed_are_one_line_errors(local_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(local_run, copy, ignore=shutil.ignore_patterns("attacks"))
    (snapshots.round_dir(copy, 2) / "L3.safetensors").unlink()  # as if L3 failed in round 2
    for args, message in ((["--round", "2"], "has no local model of L3 (did it fail that round?"),
                          (["--round", "1", "--seed", "-1"], "--seed must be a non-negative integer"),
                          (["--round", "0"], "round 0 is the untrained model: attack a trained round (1..2)")):
        assert message in one_error_line(capsys, seats.main, [str(copy), *args])  # python -m: test_seats_need_local_models
