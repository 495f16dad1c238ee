"""Gradient inversion recovers a single scan from a single-step update of a model whose gradient determines it,
finds nothing beyond the prior in an update averaged over many subjects and epochs, and its replay of local SGD
is the update torch's own SGD makes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from attacks.evaluation.images import quality
from attacks.reconstruction.gradient import UpdateMatch, invert_update, output_constraints, simulate_update
from attacks.reconstruction.optimize import Inversion
from attacks.signals.updates import Recipe
from fedsim.errors import FedsimError
from fedsim.training import make_optimizer, train_epochs
from fedsim.config import TrainConfig

from tiny_models import LinearThenConv


def _bounds(volumes: torch.Tensor) -> tuple[float, float]:
    return float(volumes.min()), float(volumes.max())


ONE_STEP = Recipe(optimizer="sgd", lr=1e-2, batch_size=1, epochs=1, target_scale=7.4)


@pytest.mark.parametrize("labels", ["known", "estimated"])
def test_a_single_scan_single_step_update_gives_the_scan_back(scans, labels):
    volumes, ages = scans
    torch.manual_seed(0)
    model = LinearThenConv()
    update = simulate_update(model, volumes[:1], ages[:1], ONE_STEP)
    prior = volumes[24:].mean(0, keepdim=True)  # the attacker's own scans, not the victim's
    known = ages[:1] if labels == "known" else None
    found, _ = invert_update(model, update, prior, ONE_STEP, ages=known, age_guess=float(ages[24:].mean()),
                             settings=Inversion(iterations=300), bounds=_bounds(volumes), constraints=False)
    image, distance = found.x, found.value
    (q,) = quality(image[:, 0].numpy(), volumes[:1, 0].numpy(), prior[0, 0].numpy(), volumes[:, 0].numpy(), np.array([0]))
    assert q.identified and q.chance == pytest.approx(1 / 48)
    if labels == "known":
        assert distance < 0.01
        assert q.ssim > 0.95 and q.ssim - q.ssim_prior > 0.1
    else:  # one more unknown: the scan still comes back, less sharp
        assert q.ssim - q.ssim_prior > 0.05


def test_an_update_averaged_over_many_subjects_and_epochs_does_not_beat_the_prior(scans):
    volumes, ages = scans
    torch.manual_seed(0)
    model = LinearThenConv()
    recipe = Recipe(optimizer="sgd", lr=1e-2, batch_size=8, epochs=4, target_scale=7.4)
    update = simulate_update(model, volumes[:24], ages[:24], recipe)  # 12 steps over 24 subjects
    prior = volumes[24:].mean(0, keepdim=True)
    found, _ = invert_update(model, update, prior.repeat(4, 1, 1, 1, 1), recipe, objective="gradient",
                             settings=Inversion(iterations=300), bounds=_bounds(volumes))
    images, reached = found.x, found.value
    at_prior = UpdateMatch(model, update, recipe, prior.repeat(4, 1, 1, 1, 1), objective="gradient").at(
        prior.repeat(4, 1, 1, 1, 1))
    assert reached < 0.5 * at_prior  # the inversion did its work: it matched the update...
    rows = quality(images[:, 0].numpy(), volumes[:24, 0].numpy(), prior[0, 0].numpy(), volumes[:, 0].numpy(), np.arange(24))
    assert np.mean([q.ssim - q.ssim_prior for q in rows]) < 0.02  # ...and found no scan in it


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 1e-2)])
def test_the_replayed_local_sgd_is_torch_sgd(scans, momentum, weight_decay):
    volumes, ages = scans
    torch.manual_seed(0)
    model = LinearThenConv()
    recipe = Recipe(optimizer="sgd", lr=1e-2, momentum=momentum, weight_decay=weight_decay, batch_size=3, epochs=2,
                    target_scale=7.4)
    replayed = simulate_update(model, volumes[:7], ages[:7], recipe)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    cfg = TrainConfig(loss="mse", optimizer="sgd", lr=recipe.lr, momentum=momentum, weight_decay=weight_decay, batch_size=3)
    loader = DataLoader(TensorDataset(volumes[:7], ages[:7]), batch_size=3, shuffle=False)
    train_epochs(model, loader, make_optimizer(model.parameters(), cfg), loss="mse", target_scale=7.4, epochs=2)
    for name, p in model.named_parameters():
        torch.testing.assert_close(replayed[name], p.detach() - start[name], rtol=1e-4, atol=1e-7)


def test_the_gradient_objective_includes_weight_decay():
    volumes = torch.randn(1, 1, 16, 20, 16)
    torch.manual_seed(0)
    model = LinearThenConv()
    recipe = Recipe(optimizer="sgd", lr=1e-2, weight_decay=0.5, batch_size=1, epochs=1, target_scale=7.4)
    update = simulate_update(model, volumes, torch.tensor([60.0]), recipe)
    distance = UpdateMatch(model, update, recipe, volumes, ages=torch.tensor([60.0]), constraints=True).at(volumes)
    assert distance < 1e-5  # the true scan matches its own update exactly (and its output constraints)


def test_the_recipe_comes_from_the_run_and_picks_its_objective():
    config = {"train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 8, "loss": "mse"},
              "federation": {"local_epochs": 4}, "model": {"target_scale": 7.4}}
    recipe = Recipe.of_run(config)
    assert (recipe.optimizer, recipe.epochs, recipe.batch_size, recipe.target_scale) == ("adam", 4, 8, 7.4)
    assert recipe.steps(20) == 12 and recipe.objective(20) == "unrolled"  # Adam is replayed, even one step
    sgd = Recipe.of_run(config, optimizer="sgd", batch_size=1, epochs=1)
    assert sgd.objective(1) == "gradient" and sgd.objective(2) == "unrolled"
    with pytest.raises(FedsimError, match="replays SGD or Adam"):
        simulate_update(LinearThenConv(), torch.zeros(1, 1, 16, 20, 16), torch.zeros(1), Recipe(optimizer="rmsprop"))


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_the_replayed_local_adam_is_torch_adam(scans, weight_decay):
    volumes, ages = scans
    torch.manual_seed(0)
    model = LinearThenConv()
    recipe = Recipe(optimizer="adam", lr=1e-3, weight_decay=weight_decay, batch_size=3, epochs=2, target_scale=7.4)
    replayed = simulate_update(model, volumes[:7], ages[:7], recipe)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    cfg = TrainConfig(loss="mse", optimizer="adam", lr=recipe.lr, weight_decay=weight_decay, batch_size=3)
    loader = DataLoader(TensorDataset(volumes[:7], ages[:7]), batch_size=3, shuffle=False)
    train_epochs(model, loader, make_optimizer(model.parameters(), cfg), loss="mse", target_scale=7.4, epochs=2)
    for name, p in model.named_parameters():  # 6 Adam steps; and the replay is differentiable in the scans
        torch.testing.assert_close(replayed[name], p.detach() - start[name], rtol=1e-4, atol=1e-8)
    x = volumes[:7].clone().requires_grad_(True)
    simulated = simulate_update(model, x, ages[:7], recipe, create_graph=True)
    (grad,) = torch.autograd.grad(sum((u ** 2).sum() for u in simulated.values()), x)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_the_output_bias_update_gives_the_prediction_and_the_pooled_features_exactly(scans, weight_decay):
    volumes, ages = scans
    torch.manual_seed(0)
    model = LinearThenConv()
    recipe = Recipe(optimizer="sgd", lr=1e-2, weight_decay=weight_decay, batch_size=1, epochs=1, target_scale=7.4)
    update = simulate_update(model, volumes[3:4], ages[3:4], recipe)
    known = output_constraints(model, update, recipe, volumes[30:31], ages[3:4])  # the probe is any scan
    seen = []
    model.output.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    with torch.no_grad():
        truth = float(model(volumes[3:4]))
    assert known.prediction == pytest.approx(truth, abs=1e-3)  # to 1/1000 of a year
    torch.testing.assert_close(known.features, seen[0][0], rtol=1e-4, atol=1e-5)
    # a batch of 4: the batch's mean prediction, no features; several steps, or Adam: nothing exact
    batch = dataclasses.replace(recipe, batch_size=4)
    update = simulate_update(model, volumes[:4], ages[:4], batch)
    known = output_constraints(model, update, batch, volumes[:4], ages[:4])
    with torch.no_grad():
        assert known.prediction == pytest.approx(float(model(volumes[:4]).mean()), abs=1e-3)
    assert known.features is None
    assert output_constraints(model, update, dataclasses.replace(batch, batch_size=2), volumes[:4], ages[:4]) is None
    assert output_constraints(model, update, dataclasses.replace(batch, optimizer="adam"), volumes[:4], ages[:4]) is None
