"""Federation on tiny cohorts through the in-process LocalGrid: the very ServerApp and ClientApp
that Ray runs, in about a second per federation. Real Ray is in test_federation_ray.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedsim import snapshots
from fedsim.config import from_resolved, load_env, tomllib, with_overrides  # tomli before Python 3.11
from fedsim.data.prepare import prepare_data
from fedsim.errors import FedsimError
from fedsim.federation import keys
from fedsim.federation.client_app import app as client_app
from fedsim.federation.local_grid import run_local
from fedsim.federation.run_setup import RunSetup, learner_seed, write_run_setup
from fedsim.federation.server_app import app as server_app
from fedsim.federation.strategy import LearnerFailure

from federations import TINY, federate


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Learners set torch's thread count (1 per Ray actor); LocalGrid runs them in this process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def community(run_dir: Path, rnd: int) -> dict[str, torch.Tensor]:
    return load_file(snapshots.round_dir(run_dir, rnd) / snapshots.MODEL_FILE)


def test_every_round_is_snapshotted_without_pickle(tmp_path, tiny_manifest):
    run = federate(tmp_path / "run", tiny_manifest)
    assert snapshots.complete_rounds(run) == [0, 1, 2]
    models = [community(run, r) for r in range(3)]  # safetensors: no pickle involved
    for before, after in zip(models, models[1:]):
        assert any(not torch.equal(before[k], after[k]) for k in before)
    meta = json.loads((snapshots.round_dir(run, 2) / snapshots.META_FILE).read_text())
    assert meta["round"] == 2 and meta["env"] == "tiny"
    assert meta["sample_counts"] == {"L1": 18, "L2": 12, "L3": 6, "unseen": 12}
    assert set(meta["learners"]) == {"L1", "L2", "L3"} and meta["failed"] == {}
    lines = snapshots.read_metrics(run)
    assert [m["round"] for m in lines] == [0, 1, 2]
    assert all(0 < m["unseen_mae"] < 30 for m in lines) and "L3_train_mae" in lines[2]
    assert not (snapshots.round_dir(run, 1) / "L1.safetensors").exists()  # snapshot_local is off
    # the ServerApp itself finishes the run (as under `flwr run`): learning curve and DONE
    assert snapshots.read_done(run)["final_round"] == 2 and (run / "learning_curve.png").is_file()


def test_community_model_is_the_sample_weighted_mean_of_local_models(tmp_path, tiny_manifest):
    run = federate(tmp_path / "run", tiny_manifest, rounds=1, snapshot_local=True)
    counts = {"L1": 18, "L2": 12, "L3": 6}
    local = {name: load_file(snapshots.round_dir(run, 1) / f"{name}.safetensors") for name in counts}
    aggregate = community(run, 1)
    for key, value in aggregate.items():
        expected = sum(n * local[name][key].double() for name, n in counts.items()) / sum(counts.values())
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6)
    assert not torch.equal(local["L1"]["output.weight"], local["L2"]["output.weight"])


def test_noniid_learners_see_different_age_ranges(tmp_path, tiny_manifest):
    raw = tomllib.loads(TINY.read_text())
    young, middle, old = ([1.0 if lo <= b < hi else 0.0 for b in range(20)] for lo, hi in ((0, 7), (7, 13), (13, 20)))
    env = tmp_path / "tiny-noniid.toml"
    env.write_text(TINY.read_text().replace(
        f"learner_weights = {raw['partition']['learner_weights']}",
        f"age_bin_weights = [{young}, {middle}, {old}]",
    ))
    run = federate(tmp_path / "run", tiny_manifest, env=env, rounds=1)
    setup = RunSetup.load(run)
    ages = {g: setup.data.cohort.ages[setup.dataset(g).indices] for g in setup.learners}
    # 36 subjects cannot meet three disjoint histograms exactly; the partitioner bends as little as it can
    assert ages["L1"].mean() + 5 < ages["L2"].mean() < ages["L3"].mean() - 5
    assert ages["L1"].max() < ages["L3"].min()
    trained_on = json.loads((snapshots.round_dir(run, 1) / snapshots.META_FILE).read_text())["learners"]
    assert {g: trained_on[g]["num_examples"] for g in ages} == {g: len(a) for g, a in ages.items()}


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tiny_manifest):
    straight = federate(tmp_path / "straight", tiny_manifest)
    interrupted = federate(tmp_path / "resumed", tiny_manifest, rounds=1)  # stops after round 1
    assert snapshots.complete_rounds(interrupted) == [0, 1] and not snapshots.is_done(interrupted)
    snapshots.append_metrics(interrupted, {"round": 2, "unseen_mae": -1.0})  # a round cut off mid-way
    federate(interrupted, tiny_manifest)  # continues to [federation] rounds = 2
    assert snapshots.complete_rounds(interrupted) == [0, 1, 2]
    for key, value in community(straight, 2).items():
        assert torch.equal(value, community(interrupted, 2)[key]), key
    assert [m["round"] for m in snapshots.read_metrics(interrupted)] == [0, 1, 2]


def test_same_seed_same_partitions_and_round_one(tmp_path, tiny_manifest):
    a = federate(tmp_path / "a", tiny_manifest, seed=7, rounds=1)
    b = federate(tmp_path / "b", tiny_manifest, seed=7, rounds=1)
    c = federate(tmp_path / "c", tiny_manifest, seed=8, rounds=1)
    partitions = snapshots.PARTITIONS_FILE
    assert (a / partitions).read_text() == (b / partitions).read_text() != (c / partitions).read_text()
    assert all(torch.equal(v, community(b, 1)[k]) for k, v in community(a, 1).items())
    assert not all(torch.equal(v, community(c, 1)[k]) for k, v in community(a, 1).items())


def test_a_failing_learner_within_tolerance_is_left_out(tmp_path, tiny_manifest, monkeypatch):
    monkeypatch.setenv(keys.ENV_FAIL_LEARNER, "L2")
    run = federate(tmp_path / "run", tiny_manifest, rounds=1, snapshot_local=True, max_failures=1)
    meta = json.loads((snapshots.round_dir(run, 1) / snapshots.META_FILE).read_text())
    assert set(meta["learners"]) == {"L1", "L3"}
    assert meta["failed"]["L2"].startswith("L2: RuntimeError: injected failure")
    assert snapshots.read_metrics(run)[1]["failed"] == ["L2"]
    l1, l3, aggregate = (load_file(snapshots.round_dir(run, 1) / f"{n}.safetensors") for n in ("L1", "L3", "model"))
    for key, value in aggregate.items():
        torch.testing.assert_close(value.double(), (18 * l1[key].double() + 6 * l3[key].double()) / 24, rtol=0, atol=1e-6)


def test_too_many_failures_stop_the_run_and_keep_complete_rounds(tmp_path, tiny_manifest, monkeypatch):
    monkeypatch.setenv(keys.ENV_FAIL_LEARNER, "L2@2")
    with pytest.raises(LearnerFailure, match=r"1 learner\(s\) failed in round 2 \(L2; first: L2: RuntimeError.*"
                       r"max_failures = 0; rounds 0\.\.1 are on disk"):
        federate(tmp_path / "run", tiny_manifest)
    assert snapshots.complete_rounds(tmp_path / "run") == [0, 1]
    monkeypatch.delenv(keys.ENV_FAIL_LEARNER)
    federate(tmp_path / "run", tiny_manifest)  # the fixed learner rejoins on resume
    assert snapshots.complete_rounds(tmp_path / "run") == [0, 1, 2]


def test_learner_seeds_depend_on_round_and_learner_only():
    assert learner_seed(0, 3, "L2") == learner_seed(0, 3, "L2")
    assert len({learner_seed(0, r, f"L{k}") for r in range(1, 4) for k in range(1, 4)}) == 9
    assert learner_seed(1, 3, "L2") != learner_seed(0, 3, "L2")


def test_run_config_round_trips_through_config_toml(tmp_path, tiny_manifest):
    cfg = with_overrides(load_env(TINY), seed=3, federation={"rounds": 5, "max_failures": 1})
    write_run_setup(tmp_path, cfg, prepare_data(cfg, tiny_manifest), {"cpus_per_learner": 1})
    raw = snapshots.read_config(tmp_path)
    assert raw["run"]["cpus_per_learner"] == 1 and Path(raw["cohort"]["manifest"]) == tiny_manifest.resolve()
    back = from_resolved(raw)
    assert (back.name, back.seed, back.federation, back.model, back.train) == (
        cfg.name, 3, cfg.federation, cfg.model, cfg.train)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_max_failures_is_validated(tmp_path, value):
    env = tmp_path / "bad.toml"
    env.write_text(TINY.read_text().replace("snapshot_local = false", f"snapshot_local = false\nmax_failures = {str(value).lower()}"))
    with pytest.raises(FedsimError, match="max_failures must be a non-negative integer"):
        load_env(env)


def test_a_run_dir_without_run_dir_setting_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(keys.ENV_RUN_DIR, raising=False)
    with pytest.raises(FedsimError, match="no run directory"):
        run_local(server_app, client_app, 1, {})
