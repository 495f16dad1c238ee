"""Run directories that cannot lie: no overwritten epochs, no fake rounds, no repeated round 0, and a
record of what produced them; every snapshot rebuilds its model from its own file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from federations import federate
from fedsim import snapshots
from fedsim.cli.centralized import main as centralized_main
from fedsim.config import from_resolved
from fedsim.errors import FedsimError
from fedsim.federation import keys
from fedsim.federation.strategy import LearnerFailure
from fedsim.models import build_model
from fedsim.provenance import PACKAGES


def test_centralized_refuses_a_directory_that_holds_epochs(tmp_path, tiny_manifest):
    out = tmp_path / "run"
    args = ["--env", "tiny-centralized", "--cohort", str(tiny_manifest), "--out", str(out), "--epochs", "2"]
    assert centralized_main(args) == 0
    before = (out / snapshots.METRICS_FILE).read_text(), snapshots.complete_rounds(out)
    with pytest.raises(FedsimError, match="already holds a finished run"):
        centralized_main([*args[:-1], "1"])
    (out / snapshots.DONE_FILE).unlink()  # interrupted: its epochs are still not to be overwritten
    with pytest.raises(FedsimError, match="already holds epochs of a run"):
        centralized_main([*args[:-1], "1"])
    assert ((out / snapshots.METRICS_FILE).read_text(), snapshots.complete_rounds(out)) == before


def test_a_round_in_which_every_learner_failed_fails_the_run(tmp_path, tiny_manifest, monkeypatch):
    monkeypatch.setenv(keys.ENV_FAIL_LEARNER, "L1@2,L2@2,L3@2")
    with pytest.raises(LearnerFailure, match=r"every learner failed in round 2 \(L1, L2, L3; .*rounds 0\.\.1 are on disk"):
        federate(tmp_path / "run", tiny_manifest, max_failures=3)  # tolerance for all three: still no round
    assert snapshots.complete_rounds(tmp_path / "run") == [0, 1]
    assert [m["round"] for m in snapshots.read_metrics(tmp_path / "run")] == [0, 1]


def test_resuming_from_round_0_alone_writes_round_0_once(tmp_path, tiny_manifest):
    run = federate(tmp_path / "run", tiny_manifest)
    full = snapshots.read_metrics(run)
    for rnd in (1, 2):  # as if the run had crashed right after round 0
        for f in snapshots.round_dir(run, rnd).iterdir():
            f.unlink()
    (run / snapshots.DONE_FILE).unlink()
    (run / snapshots.METRICS_FILE).write_text(json.dumps(full[0]) + "\n")
    federate(run)
    again = snapshots.read_metrics(run)
    assert [m["round"] for m in again] == [0, 1, 2]
    assert [m["unseen_mae"] for m in again] == pytest.approx([m["unseen_mae"] for m in full])  # same run, replayed


def test_config_records_what_produced_the_run_and_snapshots_rebuild_their_model(tmp_path, tiny_manifest):
    run = federate(tmp_path / "run", tiny_manifest, snapshot_local=True)
    config = snapshots.read_config(run)
    record = config["provenance"]
    assert set(PACKAGES) <= set(record) and record["torch"] == torch.__version__ and record["python"]
    assert len(record["git_commit"].removesuffix("+dirty")) == 40  # the tests run from a git checkout
    from_resolved(config)  # the record is not configuration: the run still resumes
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 1, 16, 20, 16)).astype(np.float32))
    cfg = from_resolved(config)
    for name in ("model", "L2"):
        path = snapshots.round_dir(run, 2) / f"{name}.safetensors"
        rebuilt = snapshots.load_model(path).eval()
        reference = build_model(cfg.model.name, **cfg.model_kwargs())
        reference.load_state_dict(snapshots.load_round(run, 2, name=name)[0])
        torch.testing.assert_close(rebuilt(x), reference.eval()(x))
