"""Gradient inversion: the curious controller reconstructs a learner's scans from the update it received.

Two objectives, both the cosine distance between what dummy scans would send and what was sent:

- ``gradient`` (Inverting Gradients, Geiping et al. 2020): the dummy batch's gradient at the community
  weights against the update's direction. Exact for one SGD step (the update is ``-lr * (gradient +
  weight_decay * weights)``);
  for several steps, or Adam, it treats the update as one averaged gradient.
- ``unrolled`` (Dimitrov et al. 2022 for FedAvg): replay the learner's local SGD on the dummy scans,
  in batches of the known size for the known number of epochs, differentiably (``torch.func``), and
  compare the simulated update with the real one. The dummies are replayed in batches in their
  order, every epoch; with known ages that order says which ages share a batch: the sweep gives the
  controller the learner's first-epoch batches (an upper bound on what it could know), an attack on
  a run's update takes the ages in subject order.

The controller knows what the run's ``config.toml`` says of local training (:class:`Recipe`); the ages
are known (a curious controller that sees the learner's reports) or estimated jointly. The model is
inverted in eval mode: a learner's dropout masks are random and unknown to the controller (the
paper profile's dropout 0.5 makes its updates harder to match than the CPU profile's, which has none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from attacks.reconstruction.optimize import Inversion, invert
from attacks.signals.updates import Recipe
from fedsim.errors import FedsimError
from fedsim.training import regression_loss

__all__ = ["OBJECTIVES", "invert_update", "simulate_update"]

OBJECTIVES = ("gradient", "unrolled")


def _loss(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
          x: torch.Tensor, ages: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    return regression_loss(recipe.loss, functional_call(model, (params, buffers), (x,)), ages, recipe.target_scale)


def simulate_update(model: nn.Module, x: torch.Tensor, ages: torch.Tensor, recipe: Recipe, *,
                    create_graph: bool = False) -> dict[str, torch.Tensor]:
    """The update (end weights - start weights) that local SGD of ``recipe`` on ``(x, ages)`` makes, in the
    dummy order; differentiable in ``x`` and ``ages`` with ``create_graph``."""
    if recipe.optimizer != "sgd":
        raise FedsimError(f"the unrolled objective replays plain SGD; this learner trained with {recipe.optimizer!r} "
                          "(use --objective gradient)")
    start = {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    params, velocity = dict(start), {k: torch.zeros_like(v) for k, v in start.items()}
    for _ in range(recipe.epochs):
        for i in range(0, len(x), recipe.batch_size):
            names = list(params)
            loss = _loss(model, params, buffers, x[i:i + recipe.batch_size], ages[i:i + recipe.batch_size], recipe)
            grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph)
            for k, g in zip(names, grads):
                g = g + recipe.weight_decay * params[k] if recipe.weight_decay else g
                velocity[k] = recipe.momentum * velocity[k] + g if recipe.momentum else g
                params[k] = params[k] - recipe.lr * velocity[k]
    update = {k: params[k] - start[k] for k in start}
    return update if create_graph else {k: u.detach() for k, u in update.items()}


def _cosine_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    dot = sum((u * v).sum() for u, v in zip(a, b))
    norm = torch.sqrt(sum((u * u).sum() for u in a)) * torch.sqrt(sum((v * v).sum() for v in b))
    return 1 - dot / norm.clamp_min(1e-30)


def invert_update(
    model: nn.Module,
    update: Mapping[str, torch.Tensor],
    init: torch.Tensor,
    recipe: Recipe,
    *,
    ages: torch.Tensor | None = None,
    age_guess: float = 62.68,
    objective: str | None = None,
    settings: Inversion = Inversion(),
    bounds: tuple[float, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Reconstruct ``len(init)`` scans from ``update`` (local - community weights, by parameter name) of
    ``model`` (the community model the learner started from). ``ages`` known, or estimated from
    ``age_guess``. Returns ``(scans, ages, cosine distance reached)``."""
    objective = objective or recipe.objective(len(init))
    if objective not in OBJECTIVES:
        raise FedsimError(f"unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    model = model.eval()  # dropout off; InstanceNorm has no running statistics to disturb
    names = [k for k, _ in model.named_parameters()]
    sent = [update[k].detach() for k in names]
    params = [p for _, p in model.named_parameters()]
    if objective == "gradient":  # the update points against the gradient
        sent = [-u for u in sent]
    scale = recipe.target_scale

    def fit(x: torch.Tensor, extra: list[torch.Tensor]) -> torch.Tensor:
        y = ages if ages is not None else extra[0] * scale + age_guess
        if objective == "gradient":
            loss = regression_loss(recipe.loss, model(x), y, scale)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            mine = [g + recipe.weight_decay * p.detach() for g, p in zip(grads, params)]  # what the optimizer steps on
        else:
            simulated = simulate_update(model, x, y, recipe, create_graph=True)
            mine = [simulated[k] for k in names]
        return _cosine_distance(mine, sent)

    extra = [] if ages is not None else [torch.zeros(len(init), device=init.device)]
    x, found, value = invert(fit, init, extra=extra, settings=settings, bounds=bounds, progress=progress)
    estimated = ages if ages is not None else found[0] * scale + age_guess
    return x, estimated.detach(), value
