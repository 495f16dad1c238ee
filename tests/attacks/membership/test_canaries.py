"""The one-run canary audit on tiny centralized runs of noise scans: a memorising model fails it, a DP-SGD model
passes it, and ``fedsim audit`` reports both bounds beside the accountant's ε; a DP-SGD federation is replayed, and
central DP refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from attacks.cli.audit import parser as audit_parser
from attacks.experiments.audit import BUDGETS, run_audit
from attacks.membership.canaries import canary_audit
from attacks.reporting.audit import write_audit
from attacks.target import open_run
from fedsim import snapshots
from fedsim.cli import centralized
from fedsim.errors import FedsimError
from federations import ENVIRONMENTS, federate
from memorising import noise_cohort

#: 400 noise scans: 180 train, 20 validation, 200 unseen (the canaries); 2 epochs of a one-hidden-layer memoriser.
ENV = """
description = "centralized, memorising noise scans (canary audit tests)"
seed = 0
[cohort]
subjects = 400
shape = [8, 8, 8]
[data]
shape = [8, 8, 8]
[partition]
learners = 0
unseen_fraction = 0.5
age_bins = 4
val_fraction = 0.1
[model]
name = "memoriser"
channels = [1]
head_channels = 64
target_scale = 7.4
[train]
loss = "mse"
optimizer = "adam"
lr = 1e-3
batch_size = 4
epochs = 2
"""
#: The same with a tiny 3-D CNN (DP-SGD needs per-subject gradients) and DP-SGD at a high noise multiplier.
DP_ENV = ENV.replace('"memoriser"', '"cnn3d"').replace("channels = [1]", "channels = [4, 8]").replace(
    "head_channels = 64", "head_channels = 8") + """
[defense]
dp_noise_multiplier = 5.0
dp_max_grad_norm = 1.0
dp_delta = 1e-3
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return noise_cohort(tmp_path_factory.mktemp("canaries") / "cohort", n=400)


def _train(root: Path, manifest: Path, name: str, text: str) -> Path:
    (root / f"{name}.toml").write_text(text)
    centralized.main(["--env", str(root / f"{name}.toml"), "--cohort", str(manifest), "--out", str(root / name)])
    return root / name


def test_a_memorising_model_fails_the_audit_and_a_rerun_reads_the_cache(manifest, tmp_path):
    target = open_run(_train(tmp_path, manifest, "plain", ENV))
    audit = canary_audit(target, rnd=2)
    assert audit.trained and audit.accountant_epsilon is None  # no DP-SGD: no accountant
    assert audit.bound.canaries == 200 and 60 < audit.bound.included < 140  # each canary in with probability 1/2
    assert audit.shift_years == pytest.approx(3 * target.cohort.ages[target.partitions["group"] == "train"].std(),
                                              rel=0.05)
    assert audit.bound.epsilon > 1.0, audit.as_dict()  # mislabeled canaries memorised: the model is far from private
    trained = audit.scores[audit.scores["included"] == 1]["score"]
    assert trained.median() > audit.scores[audit.scores["included"] == 0]["score"].median()
    again = canary_audit(open_run(target.run_dir), rnd=2)
    assert not again.trained and again.bound == audit.bound and again.folder == audit.folder  # not retrained
    with pytest.raises(FedsimError, match="2 to 200 canaries from the run's unseen subjects, got 201"):
        canary_audit(target, rnd=2, canaries=201)
    with pytest.raises(FedsimError, match="label shift must be a non-negative"):
        canary_audit(target, rnd=2, shift=-1.0)


def test_a_dp_sgd_model_passes_and_the_audit_reports_both_bounds_beside_the_accountant(manifest, tmp_path):
    run = _train(tmp_path, manifest, "dp", DP_ENV)
    audit = canary_audit(open_run(run), rnd=2)
    assert audit.accountant_epsilon is not None and audit.accountant_epsilon > 0  # the canary model's own accountant
    assert audit.bound.epsilon <= audit.accountant_epsilon, audit.as_dict()

    budget = dataclasses.replace(BUDGETS["quick"], name="tiny", features="error,pred+label", classifier="logreg",
                                 canaries=True)
    result = run_audit(run, families="membership", budget=budget)
    write_audit(result, command="test")
    epsilon = json.loads((run / "audit" / "summary.json").read_text())["epsilon"]
    spent = {m["round"]: m["epsilon"] for m in snapshots.read_metrics(run)}
    assert epsilon["dp_sgd"] == pytest.approx(spent[result.round]) and epsilon["delta"] == 1e-3
    assert epsilon["attack"]["tests"] >= 2 and epsilon["attack"]["epsilon"] <= epsilon["dp_sgd"]
    assert epsilon["canaries"]["epsilon"] <= epsilon["canaries"]["canary_model_accountant_epsilon"]
    index = (run / "audit" / "index.html").read_text()
    assert "Is the reported ε honest?" in index and "one-run canary audit" in index and "Clopper" in index
    quick = run_audit(run, families="membership", budget=dataclasses.replace(budget, canaries=False))
    assert quick.epsilon["canaries"] is None and any("canary audit" in s.why for s in quick.skipped)
    asked = run_audit(run, families="membership", budget=dataclasses.replace(budget, canaries=False), canaries=True)
    assert json.loads(json.dumps(asked.epsilon["canaries"])) == epsilon["canaries"]  # --canaries at a budget without them: the same audit
    assert not any("canary audit" in s.why for s in asked.skipped) and asked.budget.canaries
    assert audit_parser().parse_args([str(run), "--canaries"]).canaries


def test_a_federation_with_dp_sgd_is_replayed_and_central_dp_is_refused(tmp_path):
    run = federate(tmp_path / "dp", env=ENVIRONMENTS / "tiny-dp.toml")  # 3 learners, DP-SGD on each, 2 rounds
    audit = canary_audit(open_run(run))
    assert audit.rounds == 2 and audit.bound.canaries == 12  # every unseen subject of the 48
    assert audit.accountant_epsilon is None  # the learners' accountants: the run's, in metrics.jsonl
    spent = max(v for k, v in snapshots.read_metrics(run)[-1].items() if k.endswith("_epsilon"))
    assert audit.bound.epsilon <= spent
    text = (ENVIRONMENTS / "tiny.toml").read_text()
    (tmp_path / "central.toml").write_text(
        text + '\n[defense]\ncentral_dp = "server"\ncentral_noise_multiplier = 0.001\ncentral_clipping_norm = 1.0\n')
    central = federate(tmp_path / "central", env=tmp_path / "central.toml", rounds=1)
    with pytest.raises(FedsimError, match="central DP .* is out of scope for now"):
        canary_audit(open_run(central))
