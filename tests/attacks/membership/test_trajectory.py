"""The malicious learner over every round it saw: trajectory features, who the attack fits on, a planted leak."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.evaluation.summary import controls_table
from attacks.experiments.audit import BUDGETS, run_audit
from attacks.membership.trained import ClassifierAttack, run_attacks
from attacks.membership.trajectory import trajectory_attacks, trajectory_features, versus_single_round
from attacks.signals.cache import FeatureCache
from attacks.target import load_snapshot, open_run, run_model
from attacks.threats.splits import learner_splits
from federations import federate
from fedsim import snapshots
from fedsim.errors import FedsimError

LEARNERS = ("L1", "L2", "L3")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """tiny-learners: 3 learners, 2 rounds, in-process."""
    return federate(tmp_path_factory.mktemp("trajectory") / "run", env="tiny-learners")


def test_one_column_per_round_each_read_off_that_rounds_snapshot(run):
    target = open_run(run)
    X = trajectory_features(target, [1, 2])
    # the slow path: rebuild each round's community model from its file and predict every scan
    config, n = snapshots.read_config(run), len(target.cohort.subject_ids)
    volumes = torch.from_numpy(np.array(target.cohort.volumes, dtype=np.float32))
    volumes = volumes.reshape(n, 1, *config["data"]["shape"])
    errors = []
    for rnd in (1, 2):
        model = run_model(config)
        model.load_state_dict(snapshots.load_round(run, rnd)[0])
        with torch.no_grad():
            errors.append(model.eval()(volumes).numpy().astype(np.float64) - target.cohort.ages)
    e1, e2 = errors
    assert X.shape == (n, 2 + 2)
    np.testing.assert_allclose(X[:, :2], np.abs(np.stack(errors, axis=1)), atol=1e-3)
    np.testing.assert_allclose(X[:, 2], np.abs(e1) - np.abs(e2), atol=1e-3)
    np.testing.assert_allclose(X[:, 3], e2, atol=1e-3)
    assert not np.allclose(e1, e2)  # two rounds, two models


def test_the_classifier_fits_on_the_attackers_subjects_and_unseen_scans_only(run, monkeypatch):
    target = open_run(run)
    X = trajectory_features(target, [1, 2])
    row_of = {tuple(x): i for i, x in enumerate(X)}
    assert len(row_of) == len(X)  # every subject's trajectory is its own: rows identify subjects
    fits, fit = [], ClassifierAttack.fit

    def recorded(self, X_, y, *, repeat):
        fits.append((X_, y))
        return fit(self, X_, y, repeat=repeat)

    monkeypatch.setattr(ClassifierAttack, "fit", recorded)
    rows = trajectory_attacks(target, classifier="logreg", repeats=1, controls=False)
    assert {(r["attacker"], r["victim"]) for r in rows} == {(a, v) for a in LEARNERS for v in LEARNERS if a != v}
    assert {r["features"] for r in rows} == {"error over rounds 1–2"} and {r["round"] for r in rows} == {2}
    groups = target.partitions.set_index("subject_id")["group"]
    assert len(fits) == len(LEARNERS)  # one fit per attacker, reused for each of its victims
    for attacker, (X_train, y) in zip(LEARNERS, fits):
        ids = np.asarray(target.cohort.subject_ids)[[row_of[tuple(x)] for x in X_train]]
        assert set(groups[ids[y == 1]]) == {attacker} and set(groups[ids[y == 0]]) == {"unseen"}
        # the single-round attack's training subjects, exactly: equal data
        (split,) = learner_splits(target.partitions, attacker, LEARNERS[LEARNERS.index(attacker) - 1], repeats=1)
        assert list(ids) == list(split.train()[0])


def _planted(run: Path, tmp: Path) -> Path:
    """A copy of ``run`` whose cached errors are planted: every subject has its own difficulty (the same
    |error| at round 1, members or not); by round 2 the members' error has fallen by 3 years, the others' not."""
    planted = Path(shutil.copytree(run, tmp / "planted"))
    target = open_run(planted)
    groups = target.partitions.set_index("subject_id")["group"]
    member = (groups[list(target.cohort.subject_ids)] != "unseen").to_numpy()
    rng = np.random.default_rng(0)
    n = len(member)
    difficulty, sign = rng.uniform(4, 20, n), rng.choice([-1.0, 1.0], n)
    errors = {1: sign * difficulty, 2: sign * (difficulty - 3 * member + rng.normal(0, 0.3, n))}
    cache = FeatureCache(target)
    for rnd, error in errors.items():
        folder = cache.folder(load_snapshot(planted, rnd))
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "error.npy", error.astype(np.float32)[:, None])
    return planted


def test_a_planted_fall_in_the_members_error_is_found_by_the_trajectory_not_by_round_one(run, tmp_path):
    target = open_run(_planted(run, tmp_path))
    rows = pd.DataFrame(trajectory_attacks(target, classifier="logreg", repeats=1))
    single = pd.DataFrame(run_attacks(target, threat="learner", rounds=[1, 2], feature_sets=["error"],
                                      classifier="logreg", repeats=1))
    plain = rows[rows["control"] == "none"]
    assert plain["accuracy"].mean() > 0.9 and plain["auc"].mean() > 0.95
    assert single.loc[single["round"] == 1, "accuracy"].mean() < 0.65  # the same scans, one round: chance
    assert set(rows["control"]) == {"none", "round-0", "age-matched"}
    # its rows go through the seat's table and verdicts unchanged, beside the single-round attack
    results = pd.concat([single, rows], ignore_index=True).assign(seat="malicious learner")
    table = controls_table(results, 2, by=["seat"]).set_index("features")
    assert table.loc["error over rounds 1–2", "attack"] > table.loc["error", "attack"]
    assert table.loc["error over rounds 1–2", "verdict"]
    gain = versus_single_round(results).set_index("control")
    assert gain.loc["none", "accuracy_low"] > 0  # paired with the round-2 attack on the same pairs


def test_the_audit_runs_it_for_the_malicious_learner_at_the_full_budget_only(run):
    cheap = dataclasses.replace(BUDGETS["quick"], name="tiny", classifier="logreg", features="error")
    skipped = run_audit(run, families="membership", budget=cheap)
    assert any(s.seat == "malicious learner" and "error over rounds 1–2" in s.why for s in skipped.skipped)
    assert not skipped.membership["features"].str.startswith("error over").any()
    audited = run_audit(run, families="membership", budget=dataclasses.replace(cheap, trajectory=True))
    mine = audited.membership[audited.membership["features"] == "error over rounds 1–2"]
    assert set(mine["seat"]) == {"malicious learner"} and set(mine["control"]) == {"none", "round-0", "age-matched"}
    with pytest.raises(FedsimError, match="at least 2 trained rounds"):
        trajectory_attacks(open_run(run), rnd=1)
