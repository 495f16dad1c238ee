"""The malicious learner's calibrated attacks: references on what the seat holds, a planted over-fitted
learner found at 1 % FPR where the trained classifiers miss it, the fixed threshold's FPR, the audit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from attacks.evaluation.summary import controls_table
from attacks.experiments.audit import BUDGETS, run_audit
from attacks.membership.calibration import rmia_scores
from attacks.membership.learner_calibrated import learner_calibrated, learner_population, learner_references
from attacks.membership.trained import run_attacks
from attacks.target import load_snapshot, open_run
from attacks.threats.splits import learner_unseen
from federations import federate
from fedsim import snapshots
from fedsim.data.geometry import grid_affine
from fedsim.errors import FedsimError

SHAPE = (8, 8, 8)
REFERENCES = 8
ATTACKERS, VICTIM = ("L1", "L3"), "L2"
#: Noise scans with random ages (memorisable in seconds); L2 holds 4 / 6 of the members and trains 15 local
#: epochs at a high learning rate, so the community model memorises L2's subjects and barely learns L1's or L3's.
ENV = f"""description = "a planted over-fitted learner: noise scans, L2 dominates FedAvg and memorises"
seed = 0
[cohort]
subjects = 160
shape = {list(SHAPE)}
seed = 0
[data]
shape = {list(SHAPE)}
[partition]
learners = 3
unseen_fraction = 0.4
age_bins = 4
learner_weights = [1, 4, 1]
[model]
name = "cnn3d"
channels = [8, 16]
head_channels = 16
dropout = 0.0
target_scale = 7.4
[train]
loss = "mse"
optimizer = "adam"
lr = 3e-2
weight_decay = 0.0
momentum = 0.0
batch_size = 2
epochs = 2
[federation]
rounds = 2
local_epochs = 15
snapshot_local = false
"""


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """The planted federation, 2 rounds in-process, on 160 noise scans written as NIfTI."""
    root = tmp_path_factory.mktemp("learner-calibrated")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(160):
        path = root / f"s{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(rng.standard_normal(SHAPE).astype(np.float32), grid_affine(SHAPE)), path)
        age = float(np.clip(rng.normal(62.7, 7.4), 45, 80))
        rows.append({"subject_id": f"s{i:03d}", "path": path.name, "age": age})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "planted.toml").write_text(ENV)
    return federate(root / "run", root / "manifest.csv", env=root / "planted.toml")


@pytest.fixture(scope="module")
def calibrated(planted) -> pd.DataFrame:
    """L1's and L3's calibrated attacks on round 2 (their references are cached in the run for the other tests)."""
    return pd.DataFrame(learner_calibrated(open_run(planted), rnd=2, references=REFERENCES, attackers=ATTACKERS))


def test_references_train_only_on_the_learners_own_subjects_and_its_unseen_half(planted, calibrated):
    target = open_run(planted)
    groups = target.partitions.set_index("subject_id")["group"]
    for attacker in ATTACKERS:
        refs = learner_references(target, attacker, rnd=2, references=REFERENCES)
        assert not refs.trained  # the attack trained them: read back from the cache
        held = set(groups.index[groups == attacker]) | set(learner_unseen(target.partitions, repeat=0))
        assert set(refs.population) == held == set(learner_population(target.partitions, attacker, target.cohort))
        others = set(groups.index[(groups != attacker) & (groups != "unseen")])
        seen: list[str] = []
        for k in range(REFERENCES):
            trained_on = json.loads((refs.folder / f"ref-{k:02d}" / snapshots.META_FILE).read_text())["in"]
            assert set(trained_on) <= held and not set(trained_on) & others, (attacker, k)
            seen += trained_on
        # complementary pairs: each subject the learner holds is IN for exactly half of them
        assert pd.Series(seen).value_counts().eq(REFERENCES // 2).all() and set(seen) == held
        plan = json.loads((refs.folder / "plan.json").read_text())
        assert plan["start"]["weights_sha256"] == load_snapshot(planted, 0).digest and plan["start"]["rounds"] == 2
        assert not set(plan["scored"]) & held  # predicted, never trained on: the victims' and the other unseen half
    with pytest.raises(FedsimError, match="start from a community model on disk before round 2"):
        learner_references(target, "L1", rnd=2, start_round=2)


def test_the_calibrated_attack_beats_the_trained_classifiers_at_one_percent_fpr(planted, calibrated):
    trained = pd.DataFrame(run_attacks(open_run(planted), threat="learner", rounds=[2],
                                       feature_sets=["error", "pred+label"], classifier="logreg", repeats=1))
    on_victim = lambda rows: rows[rows["attacker"].isin(ATTACKERS) & (rows["victim"] == VICTIM)]  # noqa: E731
    mine = on_victim(calibrated).groupby("features")[["auc", "tpr@0.01"]].mean()
    theirs = on_victim(trained).groupby("features")[["auc", "tpr@0.01"]].mean()
    assert set(mine.index) == {"lira-offline/residual", "lira-offline/log-abs", "rmia"}
    assert mine["tpr@0.01"].max() > theirs["tpr@0.01"].max() + 0.1, (mine, theirs)
    assert mine["auc"].max() > 0.8 > theirs["auc"].max()


def test_the_fixed_threshold_fpr_on_victims_is_reported(calibrated):
    assert set(calibrated["control"]) == {"none"} and set(calibrated["classifier"]) == {"calibrated"}
    for column in ("fpr@0.01_fixed", "tpr@0.01_fixed"):
        assert calibrated[column].between(0, 1).all(), column
    table = controls_table(calibrated.assign(seat="malicious learner"), 2, by=["seat"])
    assert set(table["seat"]) == {"malicious learner"} and table["fpr_at_1pct_fixed"].notna().all()
    assert table["verdict"].str.len().gt(0).all()


def test_the_audit_runs_it_at_the_full_budget_only(planted, calibrated):
    cheap = dataclasses.replace(BUDGETS["quick"], name="tiny", classifier="logreg", features="error")
    quick = run_audit(planted, families="membership", budget=cheap)
    assert quick.calibrated is None
    assert any(s.seat == "malicious learner" and "calibrated attacks (offline LiRA, RMIA)" in s.why
               for s in quick.skipped)
    # 4 references: the first 4 of the 8 the attack above trained for the smallest learner, reused
    full = run_audit(planted, families="membership", budget=dataclasses.replace(cheap, references=4))
    rows = full.calibrated
    assert set(rows["seat"]) == {"malicious learner"} and len(set(rows["attacker"])) == 1
    assert set(rows["control"]) == {"none", "age-matched", "round-0"} and set(rows["references"]) == {4}
    assert set(rows.loc[rows["control"] == "round-0", "round"]) == {0}
    assert any("online LiRA" in s.why for s in full.skipped)


def test_offline_rmia_leaves_out_the_references_that_trained_on_the_subject():
    age = np.array([60.0, 70.0, 50.0, 65.0])
    target = age + [0.0, 2.0, -2.0, 2.0]
    references = np.stack([age + [0.0, 2.0, -2.0, 2.0], age - [2.0, 2.0, -2.0, 2.0]])
    z = np.array([1, 2, 3])
    none_in = np.zeros(references.shape, dtype=bool)
    unmasked = rmia_scores(target, references, age, z)
    assert rmia_scores(target, references, age, z, keep=none_in) == pytest.approx(unmasked)
    # subject 0 is IN for the first reference, which fits it as the target does: left out, its Pr(x) falls, so
    # its ratio rises and it beats the population z by a larger factor γ
    keep = none_in.copy()
    keep[0, 0] = True
    gammas = np.exp(np.linspace(0, 3, 31))
    offline = np.array([rmia_scores(target, references, age, z, keep=keep, gamma=g)[0] for g in gammas])
    online = np.array([rmia_scores(target, references, age, z, gamma=g)[0] for g in gammas])
    assert (offline >= online).all() and (offline > online).any()
    with pytest.raises(FedsimError, match="a reference that did not train on it"):
        rmia_scores(target, references, age, z, keep=np.ones(references.shape, dtype=bool))
