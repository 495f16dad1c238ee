"""How strong a gradient inversion was: the yardsticks every result is reported beside.

A reconstruction that stays at the prior says nothing unless the attack could have done better. So
beside each one:

- **objective baselines**: the objective at the truth, at the prior and at other subjects' scans, so
  the value the attack reached means something (a cosine any brain scores is no match);
- **the return test**: the same attack started at the truth plus noise (:data:`RETURN_NOISE` of the
  scans' unit std) on the attacked model and update: does it come back towards the truth? It passes
  when it closes at least :data:`RETURN_SHARE` of the distance; if not, the truth is no attractor of
  the optimisation as run, and a reconstruction that stays at the prior says nothing;
- **the positive control**: the same settings on a scan outside the attacker's prior (no victim's) through
  a model whose one-scan update determines the scan (:class:`ControlNet`, a linear first layer): a failure
  there is a broken attack, not a private update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from attacks.evaluation.images import ssim
from attacks.reconstruction.gradient import UpdateMatch, simulate_update
from attacks.reconstruction.settings import PRIORS, GradientAttack
from attacks.signals.updates import Recipe

__all__ = ["CONTROL_GAIN", "PRIORS", "RETURN_NOISE", "RETURN_SHARE", "ControlNet", "GradientAttack", "baselines", "positive_control", "return_test"]

RETURN_NOISE = 0.3  # std of the noise on the truth where the return test starts (scans are z-scored)
RETURN_SHARE = 0.25  # the return test passes when the attack closes this share of the distance to the truth
#: the positive control recovers its scan when it is named among the candidates and gains this much SSIM
CONTROL_GAIN = 0.05


def baselines(match: UpdateMatch, truths: torch.Tensor, prior: torch.Tensor, others: torch.Tensor) -> dict[str, float]:
    """The objective at the true scans, at the prior (one per scan) and at ``others``' scans."""
    return {"objective_truth": match.at(truths), "objective_prior": match.at(prior.expand_as(truths)),
            "objective_other": match.at(others)}


def _noisy(truths: torch.Tensor, bounds: tuple[float, float] | None, seed: int) -> torch.Tensor:
    noise = torch.randn(truths.shape, generator=torch.Generator().manual_seed(seed)).to(truths.device)
    start = truths + RETURN_NOISE * noise
    return start if bounds is None else start.clamp(*bounds)


def _mean_ssim(truths: torch.Tensor, images: torch.Tensor) -> float:
    t, x = truths[:, 0].cpu().numpy(), images[:, 0].cpu().numpy()
    return float(np.mean([ssim(a, b) for a, b in zip(t, x)]))


def return_test(attack: GradientAttack, model: nn.Module, update: Mapping[str, torch.Tensor], truths: torch.Tensor,
                recipe: Recipe, *, ages: torch.Tensor | None, bounds: tuple[float, float] | None,
                basis: torch.Tensor | None, seed: int = 0, **kwargs) -> dict[str, float]:
    """The attack (one restart) from the truth plus noise: the SSIM to the truth where it started and ended, and
    the share of the distance to the truth it closed (negative: it went further away)."""
    start = _noisy(truths, bounds, seed)
    found, _ = attack.invert(model, update, start, recipe, ages=ages, basis=basis, bounds=bounds,
                             settings=replace(attack.settings, restarts=1), **kwargs)
    closed = 1 - float((found.x - truths).norm() / (start - truths).norm().clamp_min(1e-30))
    return {"return_ssim_start": _mean_ssim(truths, start), "return_ssim_end": _mean_ssim(truths, found.x),
            "return_closed": closed, "return_passed": float(closed >= RETURN_SHARE)}


class ControlNet(nn.Module):
    """A brain-age regressor whose first layer is linear on the voxels: its weight gradient for one scan is
    the scan times the back-propagated error, so one scan's update determines the scan."""

    def __init__(self, shape: Sequence[int], hidden: int = 8, age_mean: float = 62.68) -> None:
        super().__init__()
        self.first = nn.Linear(math.prod(shape), hidden)
        self.output = nn.Linear(hidden, 1)
        self.age_mean = age_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.first(x.flatten(1)))).squeeze(1) + self.age_mean


def positive_control(attack: GradientAttack, scan: torch.Tensor, age: torch.Tensor, prior: torch.Tensor, *,
                     bounds: tuple[float, float] | None, basis: torch.Tensor | None, seed: int = 0) -> torch.Tensor:
    """The attack's reconstruction of ``scan`` (1, 1, *spatial; no victim's) from the one-step SGD
    update of a :class:`ControlNet`, started at ``prior``, the ages known."""
    torch.manual_seed(seed)
    model = ControlNet(scan.shape[2:], age_mean=float(age.mean())).to(scan.device)
    recipe = Recipe(optimizer="sgd", lr=1e-2, batch_size=1, epochs=1, target_scale=7.4)
    update = simulate_update(model, scan, age, recipe)
    found, _ = attack.invert(model, update, prior, recipe, ages=age, basis=basis, bounds=bounds, seed=seed)
    return found.x
