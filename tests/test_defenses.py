"""Defenses (``[defense]``): each changes what it claims to, by the configured amount, and only
through its wrapper; DP-SGD and central DP run end to end in tiny federations (LocalGrid)."""

from __future__ import annotations

import federations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fedsim import snapshots
from fedsim.cli.centralized import main as centralized_main
from fedsim.config import from_resolved, load_env
from fedsim.data.cache import VolumeDataset, build_cache
from fedsim.data.manifest import load_manifest
from fedsim.defenses import (
    EarlyStopping,
    NoisyLabels,
    PerturbedPredictions,
    local_training,
    perturb_state,
    release_model,
)
from fedsim.defenses.central_dp import effective_noise_multiplier
from fedsim.defenses.dp_sgd import PrivacyLedger, epsilon
from fedsim.errors import FedsimError
from fedsim.federation.run_setup import RunSetup
from fedsim.federation.server_app import summarize
from fedsim.models import build_model
from fedsim.training import regression_loss

ENVS = Path(__file__).resolve().parents[1] / "environments"
TINY = (ENVS / "tiny.toml").read_text()
SHAPE = (16, 20, 16)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Learners set torch's thread count; LocalGrid runs them in this process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def env_file(tmp_path: Path, defense: str, base: str = TINY, name: str = "tiny-defended") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(base + "\n[defense]\n" + defense + "\n")
    return path


def federate(run_dir: Path, env: Path, manifest: Path, rounds: int | None = None) -> Path:
    """Prepare (once) and run or continue a tiny federation in-process."""
    return federations.federate(run_dir, manifest, env=env, rounds=rounds)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn3d", in_shape=SHAPE, channels=[4, 8], head_channels=8, target_scale=7.4, dropout=0.0)


# ---------------------------------------------------------------- prediction perturbation


def test_released_predictions_carry_noise_of_the_configured_std_fixed_per_volume():
    model = tiny_model().eval()
    x = torch.randn(400, 1, *SHAPE, generator=torch.Generator().manual_seed(1))
    released = PerturbedPredictions(model, std=3.0, seed=0)
    with torch.no_grad():
        clean, noisy = model(x), released(x)
        again = torch.cat([released(x[200:]), released(x[:200])])  # other batches, other order
    noise = (noisy - clean).numpy()
    assert noise.std() == pytest.approx(3.0, rel=0.1) and abs(noise.mean()) < 0.4
    torch.testing.assert_close(torch.cat([again[200:], again[:200]]), noisy)  # a repeated query cannot average it out
    with torch.no_grad():
        other_seed = PerturbedPredictions(model, std=3.0, seed=1)(x)
    assert not torch.allclose(other_seed, noisy)


def test_release_model_follows_the_run_config(tmp_path):
    model = tiny_model()
    assert release_model(model, load_env("tiny").to_dict()) is model
    cfg = load_env(env_file(tmp_path, "prediction_noise = 2.5"))
    wrapped = release_model(model, cfg.to_dict())  # a run's config.toml, as the attacks read it
    assert isinstance(wrapped, PerturbedPredictions) and wrapped.std == 2.5 and wrapped.model is model


def test_attacks_read_the_released_predictions_of_a_run(tmp_path, tiny_manifest):
    """A run with prediction_noise: the attack's prediction features carry exactly the noise of
    each volume, while gradients (white-box: the weights are known) stay the clean model's."""
    from attacks.signals.features import compute_features
    from attacks.target import load_snapshot
    from fedsim.defenses import prediction_noise

    clean_run = federate(tmp_path / "clean", ENVS / "tiny.toml", tiny_manifest, rounds=1)
    noisy_run = federate(tmp_path / "noisy", env_file(tmp_path, "prediction_noise = 2.5"), tiny_manifest, rounds=1)
    assert load_snapshot(clean_run, 1).release is None
    snap = load_snapshot(noisy_run, 1)
    cohort = build_cache(load_manifest(tiny_manifest), SHAPE)
    rows = np.arange(12)
    plain = compute_features(snap.model, cohort, ["prediction", "grad_norm"], indices=rows)
    released = compute_features(snap.model, cohort, ["prediction", "grad_norm"], indices=rows, release=snap.release)
    x = torch.from_numpy(np.asarray(cohort.volumes[rows], dtype=np.float32)).reshape(len(rows), 1, *SHAPE)
    np.testing.assert_allclose(released["prediction"][:, 0] - plain["prediction"][:, 0],
                               prediction_noise(x, 2.5, 0).numpy(), atol=1e-4)
    np.testing.assert_array_equal(released["grad_norm"], plain["grad_norm"])


# ---------------------------------------------------------------- label perturbation


def test_label_noise_has_the_configured_std_and_is_fixed_per_subject(tiny_manifest):
    cohort = build_cache(load_manifest(tiny_manifest), SHAPE)
    noisy = NoisyLabels(VolumeDataset(cohort, np.arange(48)), std=2.0, seed=0)
    noise = np.array([float(noisy[i][1]) - cohort.ages[i] for i in range(48)])
    np.testing.assert_allclose(noise, noisy.noise, atol=1e-4)
    many = NoisyLabels(VolumeDataset(cohort, np.arange(4000)), std=2.0, seed=0)  # noise is drawn at construction
    assert many.noise.std() == pytest.approx(2.0, rel=0.05) and abs(many.noise.mean()) < 0.1
    # the same subject gets the same noise in any subset (every round, any learner)
    subset = NoisyLabels(VolumeDataset(cohort, np.array([7, 3])), std=2.0, seed=0)
    np.testing.assert_array_equal(subset.noise, noisy.noise[[7, 3]])


def test_local_training_wraps_the_dataset_only_when_label_noise_is_set(tmp_path, tiny_manifest):
    cohort = build_cache(load_manifest(tiny_manifest), SHAPE)
    data = VolumeDataset(cohort, np.arange(12))
    plain = local_training(load_env("tiny"), tiny_model(), data, seed=0)
    noisy = local_training(load_env(env_file(tmp_path, "label_noise = 1.5")), tiny_model(), data, seed=0)
    assert plain.loader.dataset is data and isinstance(noisy.loader.dataset, NoisyLabels)
    assert noisy.loader.dataset.std == 1.5 and plain.private is None


# ---------------------------------------------------------------- model perturbation


def test_perturb_state_adds_noise_of_the_configured_std_and_is_seeded():
    state = tiny_model().state_dict()
    out = perturb_state(state, 0.01, 0, 1, 2)
    diff = torch.cat([(out[k] - state[k]).flatten() for k in state])
    assert diff.std().item() == pytest.approx(0.01, rel=0.05)
    assert all(out[k].dtype == state[k].dtype for k in state)
    assert all(torch.equal(v, perturb_state(state, 0.01, 0, 1, 2)[k]) for k, v in out.items())
    assert not torch.equal(out["output.weight"], perturb_state(state, 0.01, 0, 1, 3)["output.weight"])
    assert all(torch.equal(v, state[k]) for k, v in perturb_state(state, 0.0, 0).items())


def test_model_noise_changes_the_weights_a_learner_sends_by_its_std(tmp_path, tiny_manifest):
    sent = {}
    for name, defense in (("clean", "model_noise = 0.0"), ("noisy", "model_noise = 0.02")):
        env = env_file(tmp_path, defense, base=TINY.replace("snapshot_local = false", "snapshot_local = true"), name=name)
        run = federate(tmp_path / name, env, tiny_manifest, rounds=1)
        sent[name] = load_file(snapshots.round_dir(run, 1) / "L2.safetensors")
    diff = torch.cat([(sent["noisy"][k] - sent["clean"][k]).flatten() for k in sent["clean"]])
    assert diff.std().item() == pytest.approx(0.02, rel=0.05) and abs(diff.mean().item()) < 0.002


# ---------------------------------------------------------------- DP-SGD


def test_dp_sgd_clips_every_per_sample_gradient(tiny_manifest):
    base = load_env("tiny-dp")
    clip = 0.01
    cfg = dataclasses.replace(base, defense=dataclasses.replace(base.defense, dp_max_grad_norm=clip))
    cohort = build_cache(load_manifest(tiny_manifest), SHAPE)
    model = tiny_model()
    session = local_training(cfg, model, VolumeDataset(cohort, np.arange(16)), seed=0)
    assert session.model is not model and len(session.loader) == 4  # Poisson batches, rate 4/16
    x, age = next(iter(session.loader))
    regression_loss("mse", session.model(x), age, 7.4).backward()
    per_sample = torch.cat([p.grad_sample.reshape(len(x), -1) for p in model.parameters()], dim=1).norm(dim=1)
    assert per_sample.min() > 10 * clip  # every raw per-subject gradient is far above the bound
    session.optimizer.noise_multiplier = 0.0  # look at the clipped sum alone
    session.optimizer.step()
    summed = torch.cat([p.summed_grad.flatten() for p in model.parameters()]).norm()
    assert 0.5 * clip < summed <= len(x) * clip * (1 + 1e-4)


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    assert epsilon([], 1e-5) == 0.0
    e1, e2 = epsilon([(1.0, 0.1, 10)], 1e-5), epsilon([(1.0, 0.1, 20)], 1e-5)
    assert 0 < e1 < e2 < math.inf
    assert epsilon([(1.0, 0.1, 10), (1.0, 0.1, 10)], 1e-5) == pytest.approx(e2)  # rounds compose
    assert epsilon([(2.0, 0.1, 20)], 1e-5) < e2
    assert effective_noise_multiplier(1.0, [1, 1, 1]) == 1.0
    assert effective_noise_multiplier(1.0, [3, 2, 1]) == pytest.approx(6 / 9)  # largest learner: sensitivity 3/6


def test_privacy_ledger_replays_a_round_without_double_counting(tmp_path):
    ledger = PrivacyLedger(tmp_path, "L1")
    ledger.record(1, [(1.0, 0.2, 5)], 3.0, 1e-5)
    ledger.record(2, [(1.0, 0.2, 5)], 4.0, 1e-5)
    assert ledger.before(2) == [(1.0, 0.2, 5)] and ledger.before(3) == [(1.0, 0.2, 5)] * 2
    ledger.record(2, [(1.0, 0.2, 5)], 4.0, 1e-5)  # round 2 replayed after a resume
    assert ledger.before(3) == [(1.0, 0.2, 5)] * 2


def test_tiny_federation_with_dp_sgd_reports_growing_epsilon_per_learner(tmp_path, tiny_manifest):
    run = federate(tmp_path / "run", ENVS / "tiny-dp.toml", tiny_manifest)
    lines = snapshots.read_metrics(run)
    assert [m["round"] for m in lines] == [0, 1, 2] and "L1_epsilon" not in lines[0]
    for learner in ("L1", "L2", "L3"):
        assert 0 < lines[1][f"{learner}_epsilon"] < lines[2][f"{learner}_epsilon"] < math.inf
    # the smallest learner (6 subjects) samples at a higher rate: it spends more
    assert lines[2]["L3_epsilon"] > lines[2]["L1_epsilon"]
    ledger = json.loads((run / "privacy" / "L2.json").read_text())
    assert list(ledger["rounds"]) == ["1", "2"] and ledger["rounds"]["2"]["epsilon"] == lines[2]["L2_epsilon"]
    summary = summarize(RunSetup.load(run))
    assert summary["epsilon"]["L2_epsilon"] == lines[2]["L2_epsilon"] and summary["delta"] == 1e-3
    assert snapshots.read_done(run)["epsilon"] == summary["epsilon"]  # the ServerApp's DONE carries ε too
    assert all(0 < m["unseen_mae"] < 40 for m in lines)
    assert from_resolved(snapshots.read_config(run)).defense == load_env("tiny-dp").defense
    # resumed after round 1: the ledger carries the accountant, so ε and weights match the straight run
    resumed = federate(tmp_path / "resumed", ENVS / "tiny-dp.toml", tiny_manifest, rounds=1)
    federate(resumed, ENVS / "tiny-dp.toml", tiny_manifest)
    assert snapshots.read_metrics(resumed)[2]["L3_epsilon"] == lines[2]["L3_epsilon"]
    straight, again = (load_file(snapshots.round_dir(r, 2) / snapshots.MODEL_FILE) for r in (run, resumed))
    assert all(torch.equal(v, again[k]) for k, v in straight.items())


def test_centralized_dp_sgd_reports_epsilon_per_epoch(tmp_path, tiny_manifest):
    env = env_file(tmp_path, "dp_noise_multiplier = 1.0\ndp_max_grad_norm = 1.0\ndp_delta = 1e-3",
                   base=(ENVS / "tiny-centralized.toml").read_text())
    out = tmp_path / "run"
    assert centralized_main(["--env", str(env), "--cohort", str(tiny_manifest), "--out", str(out), "--epochs", "2"]) == 0
    lines = snapshots.read_metrics(out)
    assert lines[0]["epsilon"] == 0 < lines[1]["epsilon"] < lines[2]["epsilon"] < math.inf
    done = json.loads((out / snapshots.DONE_FILE).read_text())
    assert done["epsilon"]["epsilon"] == lines[done["best_round"]]["epsilon"]


# ---------------------------------------------------------------- central DP (Flower's wrappers)


@pytest.mark.parametrize("side", ["server", "client"])
def test_central_dp_clips_each_update_and_is_deterministic(tmp_path, tiny_manifest, side):
    clip = 0.05
    env = env_file(tmp_path, f'central_dp = "{side}"\ncentral_noise_multiplier = 0.001\ncentral_clipping_norm = {clip}')
    runs = [federate(tmp_path / f"run{i}", env, tiny_manifest, rounds=1) for i in range(2)]
    before, after = (load_file(snapshots.round_dir(runs[0], r) / snapshots.MODEL_FILE) for r in (0, 1))
    step = torch.cat([(after[k].double() - before[k].double()).flatten() for k in before]).norm()
    assert 0.5 * clip < step <= clip * 1.05  # the average of updates clipped to `clip` (+ tiny noise)
    again = load_file(snapshots.round_dir(runs[1], 1) / snapshots.MODEL_FILE)
    assert all(torch.equal(v, again[k]) for k, v in after.items())  # seeded noise
    line = snapshots.read_metrics(runs[0])[1]
    assert line["central_noise_multiplier"] == pytest.approx(0.001 * 36 / (3 * 18))
    assert 0 < line["central_epsilon"] < math.inf


# ---------------------------------------------------------------- early stopping and config


def test_early_stopping_waits_patience_epochs_without_improvement():
    stop = EarlyStopping(2)
    assert [stop.step(v) for v in (5.0, 4.0, 4.5, 4.2, 3.9, 4.0, 4.0)] == [False, False, False, True, False, False, True]
    assert not any(EarlyStopping(0).step(v) for v in (1.0, 2.0, 3.0))


def test_centralized_early_stopping_ends_training(tmp_path, tiny_manifest):
    env = env_file(tmp_path, "early_stopping_patience = 1", base=(ENVS / "tiny-centralized.toml").read_text()
                   .replace("lr = 1e-3", "lr = 1e-1"))  # diverges: validation stops improving at once
    out = tmp_path / "run"
    assert centralized_main(["--env", str(env), "--cohort", str(tiny_manifest), "--out", str(out), "--epochs", "8"]) == 0
    assert len(snapshots.read_metrics(out)) < 9


@pytest.mark.parametrize(
    "defense, match",
    [
        ("label_noise = -1", r"bad.toml: \[defense\] label_noise must be a non-negative number of years \(std\), got -1"),
        ("dp_noise_multiplier = 1.0", r"\[defense\] DP-SGD needs both dp_noise_multiplier and dp_max_grad_norm"),
        ("dp_noise_multiplier = 0\ndp_max_grad_norm = 1.0", r"dp_noise_multiplier must be a positive number"),
        ("dp_noise_multiplier = 1.0\ndp_max_grad_norm = 1.0\ndp_delta = 1", r"dp_delta must be a number in \(0, 1\)"),
        ('central_dp = "both"', r"central_dp must be one of 'server', 'client'"),
        ('central_dp = "server"\ncentral_clipping_norm = 1.0', r"central_dp = 'server' needs central_noise_multiplier"),
        ("central_clipping_norm = 1.0", r"need central_dp = 'server' or 'client'"),
        ("early_stopping_patience = 3", r"early_stopping_patience needs a validation set"),
        ("model_nois = 0.1", r"unknown key 'model_nois' in \[defense\]; allowed keys: dp_noise_multiplier"),
        ("prediction_noise = true", r"prediction_noise must be a non-negative number"),
    ],
)
def test_bad_defense_values_are_one_line_errors(tmp_path, defense, match):
    with pytest.raises(FedsimError, match=match) as err:
        load_env(env_file(tmp_path, defense, name="bad"))
    assert "\n" not in str(err.value)


def test_dp_sgd_refuses_the_slice_model_and_central_dp_a_centralized_env(tmp_path):
    slice_env = TINY.replace('name = "cnn3d"', 'name = "slice_mean2d"')
    with pytest.raises(FedsimError, match="DP-SGD needs per-subject gradients, but model 'slice_mean2d'"):
        load_env(env_file(tmp_path, "dp_noise_multiplier = 1.0\ndp_max_grad_norm = 1.0", base=slice_env))
    central = (ENVS / "tiny-centralized.toml").read_text()
    with pytest.raises(FedsimError, match="central_dp needs learners; this environment is centralized"):
        load_env(env_file(tmp_path, 'central_dp = "server"\ncentral_noise_multiplier = 1.0\ncentral_clipping_norm = 1.0',
                          base=central))


def test_no_defense_table_means_no_defense_and_round_trips(tmp_path):
    assert load_env("tiny").defense is None and "defense" not in load_env("tiny").to_dict()
    cfg = load_env(env_file(tmp_path, "label_noise = 1.0\nprediction_noise = 2.0"))
    assert from_resolved(cfg.to_dict()).defense == cfg.defense


def test_the_shipped_central_dp_spends_epsilon_8_over_its_rounds_for_its_largest_learner():
    """skewed-noniid-central-dp's noise is what its description promises: learner-level ε 8 (δ 1e-5) after its
    rounds, for the learner whose weight in the average is largest (the learners' sizes follow the environment's
    per-learner weights)."""
    cfg = load_env("skewed-noniid-central-dp")
    sizes = [sum(row) for row in cfg.partition.age_bin_weights]
    z = effective_noise_multiplier(cfg.defense.central_noise_multiplier, sizes)
    spent = epsilon([(z, 1.0, 1)] * cfg.federation.rounds, cfg.defense.dp_delta)
    assert 7.9 <= spent <= 8.05
    assert cfg.train.init and cfg.defense.central_dp == "server"
