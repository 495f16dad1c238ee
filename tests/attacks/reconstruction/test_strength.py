"""The yardsticks beside every gradient inversion: restarts are chosen by the objective alone, the return test
tells an attack that comes back to the truth from one that does not (a tiny InstanceNorm CNN's update, the
case fedsim's models are), the positive control is recovered at these settings, and the verdict words follow
the intervals and the yardsticks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from attacks.evaluation.images import quality
from attacks.reconstruction.gradient import simulate_update
from attacks.reconstruction.optimize import Inversion, invert
from attacks.reconstruction.strength import ControlNet, GradientAttack, positive_control, return_test
from attacks.reporting.reconstruction import verdict
from attacks.signals.updates import Recipe
from fedsim.models import build_model

from tiny_models import SHAPE

ONE_STEP = Recipe(optimizer="sgd", lr=1e-2, batch_size=1, epochs=1, target_scale=7.4)
ATTACK = GradientAttack(Inversion(iterations=60, update="lbfgs", tv=1e-4), weighting="layer")


def _bounds(volumes: torch.Tensor) -> tuple[float, float]:
    return float(volumes.min()), float(volumes.max())


def test_restarts_are_chosen_by_the_objective_never_by_the_truth():
    # two basins: the start sits in the shallower one, at b (the "truth" a scorer would prefer); the deeper
    # one, a, is reached only from a jittered restart, and it is the one returned
    a, b = torch.zeros(1, 1, 2), torch.full((1, 1, 2), 2.0)

    def objective(x: torch.Tensor, _extra) -> torch.Tensor:
        return torch.minimum(((x - a) ** 2).sum(), ((x - b) ** 2).sum() + 0.5)

    settings = Inversion(iterations=200, update="adam", step_size=0.05, tv=0.0, restarts=6, jitter=2.0)
    found = invert(objective, b + 0.1, settings=settings, seed=0)
    assert min(found.restart_values) < 0.01 < 0.49 < found.restart_values[0]  # restart 0 stayed at b, another found a
    assert found.restart == int(np.argmin(found.restart_values)) != 0
    assert found.value == pytest.approx(min(found.restart_values), abs=1e-6)
    torch.testing.assert_close(found.x, a, atol=0.05, rtol=0)
    one = invert(objective, b + 0.1, settings=Inversion(iterations=200, update="adam", step_size=0.05, tv=0.0))
    assert one.restart == 0 and one.value == pytest.approx(0.5, abs=0.01)  # without restarts: the shallow basin


def test_the_best_iterate_is_returned_not_the_last():
    target = torch.ones(1, 1, 2, 2, 2)
    steps: list[tuple[float, torch.Tensor]] = []

    def objective(x: torch.Tensor, _extra) -> torch.Tensor:
        value = ((x - target) ** 2).sum()
        steps.append((float(value), x.detach().clone()))
        return value + (10.0 if len(steps) > 21 else 0.0)  # every iterate after the 21st is worse

    found = invert(objective, torch.zeros_like(target), settings=Inversion(iterations=40, update="adam", tv=0.0))
    best_value, best_x = min(steps[:21], key=lambda s: s[0])
    torch.testing.assert_close(found.x, best_x)  # the iterate itself, and the value reported is its own
    assert found.value == pytest.approx(best_value) and found.value < found.restart_values[0]  # the last is worse


def test_the_return_test_passes_where_the_update_determines_the_scan_and_fails_on_a_tiny_instancenorm_cnn(scans):
    volumes, ages = scans
    bounds = _bounds(volumes)
    torch.manual_seed(0)
    control = ControlNet(SHAPE)
    update = simulate_update(control, volumes[:1], ages[:1], ONE_STEP)
    came_back = return_test(ATTACK, control, update, volumes[:1], ONE_STEP, ages=ages[:1], bounds=bounds, basis=None)
    assert came_back["return_passed"] == 1 and came_back["return_closed"] > 0.5  # more than halfway back
    assert came_back["return_ssim_end"] > came_back["return_ssim_start"]
    # fedsim's own architecture (InstanceNorm, ReLU, max pooling), tiny: the truth does not draw the attack back
    cnn = build_model("cnn3d", in_shape=SHAPE, channels=[4, 8], head_channels=8, dropout=0.0, target_scale=7.4).eval()
    update = simulate_update(cnn, volumes[:1], ages[:1], ONE_STEP)
    stayed = return_test(ATTACK, cnn, update, volumes[:1], ONE_STEP, ages=ages[:1], bounds=bounds, basis=None)
    assert stayed["return_passed"] == 0 and stayed["return_closed"] < 0.1


def test_the_positive_control_is_recovered_at_these_settings(scans):
    volumes, ages = scans
    prior = volumes[24:].mean(0, keepdim=True)
    image = positive_control(ATTACK, volumes[30:31], ages[30:31], prior, bounds=_bounds(volumes), basis=None)
    (q,) = quality(image[:, 0].numpy(), volumes[30:31, 0].numpy(), prior[0, 0].numpy(), volumes[:, 0].numpy(),
                   np.array([30]))
    assert q.identified and q.ssim - q.ssim_prior > 0.05
    assert q.residual_corr > 0.5 > abs(q.residual_corr_others)


def _point(**changes) -> pd.Series:
    row = {"ssim_gain_low": -0.01, "identified_low": 0.0, "identified_corr_low": 0.0, "chance": 0.01, "inversion": "adam, 500 steps x 4 restarts, global cosine", "control_recovered": 1.0, "return_passed": 1.0}
    return pd.Series({**row, **changes})


def test_the_verdict_words_follow_the_intervals_and_the_yardsticks():
    assert verdict(_point(ssim_gain_low=0.02, identified_low=0.2, identified=0.3)).startswith("leak detected, large")
    assert verdict(_point(identified_low=0.2, identified=0.3)).startswith("leak detected, small — identified 0.30")
    assert verdict(_point(identified_corr_low=0.2, identified_corr=0.6)).startswith(
        "leak detected, large — identified by correlation 0.60")  # by correlation alone
    assert verdict(_point(identified_high=0.37, identified_corr_high=0.31)) == (
        "not detected: at most 0.37 of scans identified (95 % upper bound) — return test and positive control passed; "
        "adam, 500 steps x 4 restarts, global cosine")
    assert verdict(_point(return_passed=0.0)) == ("attack too weak to tell — it did not come back to the truth from noise "
                                                  "(return test failed); adam, 500 steps x 4 restarts, global cosine")
    assert "did not recover its positive control" in verdict(_point(control_recovered=0.0, return_passed=0.0))
    # a recovery is a recovery whatever the yardsticks say; a row without them (features) names its setting
    assert verdict(_point(ssim_gain_low=0.02, identified_low=0.2, control_recovered=0.0)).startswith("leak detected, large")
    assert verdict(pd.Series({"ssim_gain_low": -0.1, "identified_low": 0.0, "chance": 0.01, "inversion": "",
                              "setting": "conv6 learned"})) == "not detected; conv6 learned"
