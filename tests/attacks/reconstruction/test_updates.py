"""The sweep's updates are trained by fedsim's own loop, with each defense doing what it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.reconstruction.gradient import dead_parameters, simulate_update
from attacks.signals.updates import Defense, Recipe, epoch_orders, parse_defense, train_update
from fedsim.data.cache import build_cache
from fedsim.data.manifest import load_manifest
from fedsim.errors import FedsimError
from fedsim.models import build_model

CONFIG = {
    "name": "tiny", "description": "", "seed": 0,
    "cohort": {"subjects": 48, "shape": [16, 20, 16], "seed": 0},
    "data": {"shape": [16, 20, 16]},
    "partition": {"learners": 3, "unseen_fraction": 0.25, "age_bins": 20},
    "model": {"name": "cnn3d", "channels": [4, 8], "head_channels": 8, "dropout": 0.0, "target_scale": 7.4,
              "in_shape": [16, 20, 16]},
    "train": {"loss": "mse", "optimizer": "adam", "lr": 1e-3, "batch_size": 4},
    "federation": {"rounds": 1, "local_epochs": 1},
}


@pytest.fixture(scope="module")
def cohort(tiny_manifest):
    return build_cache(load_manifest(tiny_manifest), (16, 20, 16))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {k: v for k, v in CONFIG["model"].items() if k != "name"}
    return build_model("cnn3d", **{**kwargs, "in_shape": (16, 20, 16)}).eval()


def _norm(update: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((u.double() ** 2).sum() for u in update.values())))


RECIPE = Recipe(optimizer="sgd", lr=1e-2, batch_size=2, epochs=1, target_scale=7.4)


def test_an_undefended_one_step_update_is_the_replayed_step(cohort):
    model, rows = _model(), np.arange(2)
    update = train_update(CONFIG, model, cohort, rows, RECIPE)
    x = torch.from_numpy(np.array(cohort.volumes[rows], dtype=np.float32))[:, None]
    replayed = simulate_update(model, x, torch.from_numpy(cohort.ages[rows].astype(np.float32)), RECIPE)
    for name in replayed:
        torch.testing.assert_close(update[name], replayed[name], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_epoch_orders_are_the_shuffled_loaders(cohort, optimizer):
    model, rows = _model(), np.arange(6)
    recipe = Recipe(optimizer=optimizer, lr=1e-2, batch_size=2, epochs=2, target_scale=7.4)
    update = train_update(CONFIG, model, cohort, rows, recipe, seed=3)  # 2 epochs of 3 shuffled batches
    orders = epoch_orders(6, 2, 3, epochs=2)
    assert all(sorted(o) == list(range(6)) for o in orders) and orders[0] != list(range(6)) and orders[0] != orders[1]
    x = torch.from_numpy(np.array(cohort.volumes[rows], dtype=np.float32))[:, None]
    ages = torch.from_numpy(cohort.ages[rows].astype(np.float32))
    replayed = simulate_update(model, x, ages, recipe, orders=orders)
    dead = dead_parameters(model, x, ages, recipe)  # the conv biases InstanceNorm cancels: Adam steps on round-off
    assert dead and all(k.endswith("0.bias") for k in dead)
    for name in set(replayed) - dead:  # Adam's normalised steps: float32 round-off of 1e-7 on its tiniest entries
        torch.testing.assert_close(update[name], replayed[name], rtol=1e-4, atol=1e-7)
    unordered = simulate_update(model, x, ages, recipe)  # the subjects' own order is another update
    assert max(float((unordered[k] - update[k]).abs().max()) for k in update) > 1e-6


def test_each_defense_changes_the_update_as_it_says(cohort):
    model, rows = _model(), np.arange(2)
    plain = train_update(CONFIG, model, cohort, rows, RECIPE)
    clipped = train_update(CONFIG, model, cohort, rows, RECIPE, Defense("clip", 0.1 * _norm(plain)))
    assert _norm(clipped) == pytest.approx(0.1 * _norm(plain), rel=1e-4)
    noisy = train_update(CONFIG, model, cohort, rows, RECIPE, Defense("model_noise", 0.05))
    difference = torch.cat([(noisy[k] - plain[k]).flatten() for k in plain])
    assert float(difference.std()) == pytest.approx(0.05, rel=0.1)
    others = [np.arange(2, 4), np.arange(4, 6)]
    averaged = train_update(CONFIG, model, cohort, rows, RECIPE, Defense("secagg", 3), others=others)
    mates = [train_update(CONFIG, model, cohort, r, RECIPE) for r in others]
    for k in plain:
        torch.testing.assert_close(averaged[k], (plain[k] + mates[0][k] + mates[1][k]) / 3, rtol=1e-4, atol=1e-8)
    private = train_update(CONFIG, model, cohort, rows, RECIPE, Defense("dp_sgd", 1.0))
    assert set(private) == set(plain) and not all(torch.allclose(private[k], plain[k]) for k in plain)


def test_defense_specs_are_checked():
    assert parse_defense("model_noise:0.01") == Defense("model_noise", 0.01)
    assert parse_defense("secagg") == Defense("secagg", 4.0)
    for bad, message in [("noise", "unknown defense"), ("clip:x", "must be a number"), ("clip:0", "positive"),
                         ("secagg:1", "at least 2")]:
        with pytest.raises(FedsimError, match=message):
            parse_defense(bad)
