"""Device selection (CPU without CUDA, --device honoured, a missing GPU is one line) and reduced
precision: bf16 autocast and the float16 cache leave the error unchanged within seed noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedsim
from fedsim.cli import run_cli
from fedsim.cli.centralized import main as centralized_main
from fedsim.config import load_env, with_overrides
from fedsim.data.cache import VolumeDataset, build_cache
from fedsim.data.manifest import load_manifest
from fedsim.device import resolve_device, using_device
from fedsim.errors import FedsimError
from fedsim.models import build_model
from fedsim.training import evaluate, make_loader, make_optimizer, train_epochs


def test_auto_is_cuda_only_when_torch_sees_it(monkeypatch):
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("requested, match", [("cuda", "torch sees no CUDA device"), ("cuda:1", "no CUDA device"),
                                              ("tpu", "is not a device"), ("meta", "runs on cpu or cuda")])
def test_a_device_that_is_not_there_is_one_line(monkeypatch, requested, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FedsimError, match=match) as err:
        resolve_device(requested)
    assert "\n" not in str(err.value)


def test_using_device_is_the_default_inside_and_only_inside(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # auto would say cuda
    with using_device("cpu") as chosen:
        assert chosen == torch.device("cpu") and resolve_device() == torch.device("cpu")
        assert resolve_device("auto") == torch.device("cuda")  # an explicit request still wins
    assert resolve_device() == torch.device("cuda")


def test_device_flag_is_honoured_and_checked_before_any_work(tmp_path, tiny_manifest, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    args = ["--env", "tiny-centralized", "--cohort", str(tiny_manifest), "--out", str(out), "--epochs", "1"]
    assert run_cli(centralized_main, [*args, "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err and not out.exists()
    # a machine whose torch claims a GPU: --device cpu keeps every step on the CPU (cuda would fail here)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    run = fedsim.train("tiny-centralized", out, cohort=tiny_manifest, rounds=1, device="cpu")
    assert run.rounds == [0, 1]


def _unseen_mae(tiny_manifest, precision: str, seed: int, dtype: str = "float32") -> float:
    cfg = with_overrides(load_env("tiny-centralized"), seed=seed, train={"precision": precision})
    cohort = build_cache(load_manifest(tiny_manifest), (16, 20, 16), dtype=dtype)
    torch.manual_seed(seed)
    model = build_model(cfg.model.name, **cfg.model_kwargs())
    train, unseen = np.arange(36), np.arange(36, 48)
    optimizer = make_optimizer(model.parameters(), cfg.train)
    train_epochs(model, make_loader(VolumeDataset(cohort, train), 4, shuffle=True, seed=seed), optimizer,
                 loss="mse", target_scale=7.4, epochs=15, precision=precision)
    return evaluate(model, make_loader(VolumeDataset(cohort, unseen), 12, shuffle=False)).mae


@pytest.mark.slow
def test_bf16_autocast_leaves_the_error_unchanged_within_seed_noise(tiny_manifest):
    fp32 = [_unseen_mae(tiny_manifest, "fp32", seed) for seed in (0, 1, 2)]
    bf16 = [_unseen_mae(tiny_manifest, "bf16", seed) for seed in (0, 1, 2)]
    noise = np.ptp(fp32)  # what changing only the seed does
    assert abs(np.mean(bf16) - np.mean(fp32)) <= max(noise, 0.25), (fp32, bf16)
    assert bf16 != fp32  # autocast did run: bfloat16 rounds differently


@pytest.mark.slow
def test_a_float16_cache_leaves_the_error_unchanged_within_seed_noise(tiny_manifest):
    full = [_unseen_mae(tiny_manifest, "fp32", seed) for seed in (0, 1, 2)]
    half = [_unseen_mae(tiny_manifest, "fp32", seed, dtype="float16") for seed in (0, 1, 2)]
    assert abs(np.mean(half) - np.mean(full)) <= max(np.ptp(full), 0.25), (full, half)
