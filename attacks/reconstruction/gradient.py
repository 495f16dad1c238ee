"""Gradient inversion: the curious controller reconstructs a learner's scans from the update it received.

Two objectives, both the cosine distance between what dummy scans would send and what was sent:

- ``gradient`` (Inverting Gradients, Geiping et al. 2020): the dummy batch's gradient at the community
  weights against the update's direction. Exact for one SGD step (the update is ``-lr * (gradient +
  weight_decay * weights)``); for several steps, or Adam, it treats the update as one averaged gradient.
- ``unrolled`` (Dimitrov et al. 2022 for FedAvg): replay the learner's local SGD *or Adam* on the dummy
  scans, in batches of the known size for the known number of epochs, differentiably (``torch.func``),
  and compare the simulated update with the real one. The dummies are replayed in the learner's own
  shuffled batch order of every epoch (its loader's seed follows from the run's seed, round and learner:
  an upper bound on what a controller knows); with known ages that order says which ages share a batch.

``weighting="layer"`` averages the cosine over parameter tensors instead of taking one global cosine,
so the first convolution (a few per cent of the update's norm, and the layer that sees the scan most
directly) counts as much as the deep layers. For a regression model one SGD step also says more than a
direction (:func:`output_constraints`): the output bias's gradient is proportional to the prediction
error, so with the ages known it gives the learner's own prediction for its batch, and for one scan the
output layer's weight gradient divided by it is the exact input of that layer (the pooled features).
Both are added to the objective as constraints.

The controller knows what the run's ``config.toml`` says of local training (:class:`Recipe`); the ages
are known (a curious controller that sees the learner's reports) or estimated jointly. The model is
inverted in eval mode: a learner's dropout masks are random and unknown to the controller (the
paper profile's dropout 0.5 makes its updates harder to match than the CPU profile's, which has none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from attacks.reconstruction.optimize import Inverted, invert
from attacks.reconstruction.settings import OBJECTIVES, WEIGHTINGS, Inversion
from attacks.signals.updates import Recipe
from fedsim.errors import FedsimError
from fedsim.training import model_ages, model_loss

__all__ = ["OBJECTIVES", "WEIGHTINGS", "Known", "UpdateMatch", "dead_parameters", "invert_update", "output_constraints",
           "simulate_update"]

#: torch.optim.Adam's defaults, which fedsim's learners use (:func:`fedsim.training.make_optimizer`)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def _loss(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
          x: torch.Tensor, ages: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    output = functional_call(model, (params, buffers), (x,))
    return model_loss(model, output, ages, loss=recipe.loss, target_scale=recipe.target_scale)


def simulate_update(model: nn.Module, x: torch.Tensor, ages: torch.Tensor, recipe: Recipe, *,
                    orders: Sequence[Sequence[int]] | None = None, create_graph: bool = False) -> dict[str, torch.Tensor]:
    """The update (end weights - start weights) that local SGD or Adam of ``recipe`` on ``(x, ages)``
    makes, visiting the scans in ``orders[e]`` in epoch ``e`` (default: their order), the optimizer's
    state fresh as a learner's is every round; differentiable in ``x`` and ``ages`` with ``create_graph``."""
    if recipe.optimizer not in ("sgd", "adam"):
        raise FedsimError(f"the unrolled objective replays SGD or Adam; this learner trained with {recipe.optimizer!r} "
                          "(use --objective gradient)")
    start = {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    params = dict(start)
    first = {k: torch.zeros_like(v) for k, v in start.items()}  # SGD's velocity, Adam's first moment
    second = {k: torch.zeros_like(v) for k, v in start.items()}
    (beta1, beta2), t = ADAM_BETAS, 0
    for epoch in range(recipe.epochs):
        order = torch.as_tensor(orders[epoch], device=x.device) if orders is not None else None
        xs, ys = (x, ages) if order is None else (x[order], ages[order])
        for i in range(0, len(x), recipe.batch_size):
            t += 1
            names = list(params)
            loss = _loss(model, params, buffers, xs[i:i + recipe.batch_size], ys[i:i + recipe.batch_size], recipe)
            grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph)
            for k, g in zip(names, grads):
                g = g + recipe.weight_decay * params[k] if recipe.weight_decay else g
                if recipe.optimizer == "sgd":
                    first[k] = recipe.momentum * first[k] + g if recipe.momentum else g
                    params[k] = params[k] - recipe.lr * first[k]
                    continue
                first[k] = beta1 * first[k] + (1 - beta1) * g
                second[k] = beta2 * second[k] + (1 - beta2) * g * g
                # torch's formula; the 1e-30 keeps sqrt differentiable where a gradient is exactly 0
                denom = torch.sqrt(second[k] + 1e-30) / (1 - beta2 ** t) ** 0.5 + ADAM_EPS
                params[k] = params[k] - recipe.lr / (1 - beta1 ** t) * first[k] / denom
    update = {k: params[k] - start[k] for k in start}
    return update if create_graph else {k: u.detach() for k, u in update.items()}


def dead_parameters(model: nn.Module, x: torch.Tensor, ages: torch.Tensor, recipe: Recipe) -> set[str]:
    """Parameters whose loss gradient at ``(x, ages)`` is round-off (below 1e-6 of the largest entry): a conv
    bias that the InstanceNorm after it cancels. Adam turns round-off into full-size steps, so their updates
    carry no information and are left out of the match."""
    params = dict(model.named_parameters())
    with torch.enable_grad():
        loss = model_loss(model, model(x.detach()), ages, loss=recipe.loss, target_scale=recipe.target_scale)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    size = {k: 0.0 if g is None else float(g.abs().max()) for k, g in zip(params, grads)}
    largest = max(size.values())
    return {k for k, v in size.items() if v <= 1e-6 * largest}


@dataclass(frozen=True)
class Known:
    """What one SGD step's output layer gives away: the batch's mean prediction (years; needs the ages)
    and, for a single scan, the exact input of the output layer."""

    prediction: float | None
    features: torch.Tensor | None


def _output_input(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's predictions for ``x`` and the input of its ``output`` layer, flattened per scan."""
    seen: list[torch.Tensor] = []
    handle = model.output.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    try:
        prediction = model_ages(model, model(x))
    finally:
        handle.remove()
    return prediction, seen[0].reshape(len(x), -1)


def output_constraints(model: nn.Module, update: Mapping[str, torch.Tensor], recipe: Recipe, probe: torch.Tensor,
                       ages: torch.Tensor | None, *, subjects: int | None = None) -> Known | None:
    """Read :class:`Known` off ``update`` of ``subjects`` scans (default ``len(probe)``) where it is exact: one
    plain SGD step on the squared error of a model without dropout (the learner's masks are unknown) whose
    ``output`` layer has one output and a bias; else ``None``. With ``g``
    the gradient (``-update / lr - weight_decay * weights``) and ``c`` the prediction's slope in the bias
    (read off the model at ``probe``, any volumes: the model is affine in the bias),
    ``g_bias = 2 c / (B s^2) * sum(prediction - age)``, and for one scan ``g_weight = g_bias * features``."""
    out = getattr(model, "output", None)
    subjects = len(probe) if subjects is None else subjects
    dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())
    if (recipe.optimizer != "sgd" or recipe.loss != "mse" or recipe.steps(subjects) != 1 or out is None or dropout
            or getattr(out, "bias", None) is None or out.bias.numel() != 1 or "output.bias" not in update):
        return None
    grad = {k: -update[f"output.{k}"].detach() / recipe.lr - recipe.weight_decay * p.detach()
            for k, p in (("weight", out.weight), ("bias", out.bias))}
    with torch.enable_grad():
        slope = float(torch.autograd.grad(model(probe.detach()).sum(), out.bias)[0].sum()) / len(probe)
    prediction = None
    if ages is not None:
        prediction = float(ages.float().mean()) + float(grad["bias"].sum()) * recipe.target_scale ** 2 / (2 * slope)
    features = grad["weight"].reshape(-1) / grad["bias"].sum() if subjects == 1 else None
    return Known(prediction, features)


def _cosine_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    dot = sum((u * v).sum() for u, v in zip(a, b))
    norm = torch.sqrt(sum((u * u).sum() for u in a)) * torch.sqrt(sum((v * v).sum() for v in b))
    return 1 - dot / norm.clamp_min(1e-30)


class UpdateMatch:
    """The objective of gradient inversion: how far the update dummy scans ``x`` would make is from the
    update that was sent (cosine distance, global or averaged over parameter tensors), plus the
    :func:`output_constraints` where one SGD step gives them. Callable as :func:`invert`'s objective, and
    :meth:`at` any volumes, so a report can put the value reached beside the truth's and the prior's."""

    def __init__(self, model: nn.Module, update: Mapping[str, torch.Tensor], recipe: Recipe, probe: torch.Tensor, *,
                 ages: torch.Tensor | None = None, age_guess: float = 62.68, objective: str | None = None,
                 weighting: str = "global", constraints: bool = False,
                 orders: Sequence[Sequence[int]] | None = None, subjects: int | None = None) -> None:
        self.objective = objective or recipe.objective(len(probe))
        if self.objective not in OBJECTIVES:
            raise FedsimError(f"unknown objective {self.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        if weighting not in WEIGHTINGS:
            raise FedsimError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")
        self.model = model.eval()  # dropout off; InstanceNorm has no running statistics to disturb
        self.recipe, self.ages, self.age_guess, self.weighting, self.orders = recipe, ages, age_guess, weighting, orders
        self.params = [p for _, p in model.named_parameters()]
        dead = dead_parameters(model, probe, self.labels([torch.zeros(len(probe), device=probe.device)]), recipe)
        self.live = [k not in dead for k, _ in model.named_parameters()]
        self.names = [k for k, _ in model.named_parameters()]
        sent = [update[k].detach() for k, live in zip(self.names, self.live) if live]
        self.sent = [-u for u in sent] if self.objective == "gradient" else sent  # the update points against the gradient
        self.known = output_constraints(model, update, recipe, probe, ages, subjects=subjects) if constraints else None

    def labels(self, extra: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ages the objective uses: known, or the jointly estimated ``extra[0]`` (in scaled units)."""
        return self.ages if self.ages is not None else extra[0] * self.recipe.target_scale + self.age_guess

    def __call__(self, x: torch.Tensor, extra: Sequence[torch.Tensor]) -> torch.Tensor:
        recipe, y = self.recipe, self.labels(extra)
        if self.objective == "gradient":
            loss = model_loss(self.model, self.model(x), y, loss=recipe.loss, target_scale=recipe.target_scale)
            grads = torch.autograd.grad(loss, self.params, create_graph=True)
            mine = [g + recipe.weight_decay * p.detach()  # what the optimizer steps on
                    for g, p, live in zip(grads, self.params, self.live) if live]
        else:
            simulated = simulate_update(self.model, x, y, recipe, orders=self.orders, create_graph=True)
            mine = [simulated[k] for k, live in zip(self.names, self.live) if live]
        if self.weighting == "global":
            fit = _cosine_distance(mine, self.sent)
        else:
            pairs = [(u, v) for u, v in zip(mine, self.sent) if v.numel() and float(v.abs().max()) > 0]
            if not pairs:
                raise FedsimError("the update is zero in every layer: there is nothing to match")
            fit = sum(_cosine_distance([u], [v]) for u, v in pairs) / len(pairs)
        if self.known is not None:
            prediction, features = _output_input(self.model, x)
            if self.known.prediction is not None:
                fit = fit + ((prediction.mean() - self.known.prediction) / recipe.target_scale) ** 2
            if self.known.features is not None:
                target = self.known.features
                fit = fit + ((features[0] - target) ** 2).sum() / (target ** 2).sum().clamp_min(1e-30)
        return fit

    def at(self, x: torch.Tensor) -> float:
        """The objective at volumes ``x`` (the truth, the prior, another subject), the ages as the attack has them."""
        extra = [] if self.ages is not None else [torch.zeros(len(x), device=x.device)]
        with torch.enable_grad():
            return float(self(x.detach(), extra).detach())


def invert_update(
    model: nn.Module,
    update: Mapping[str, torch.Tensor],
    init: torch.Tensor,
    recipe: Recipe,
    *,
    ages: torch.Tensor | None = None,
    age_guess: float = 62.68,
    objective: str | None = None,
    weighting: str = "global",
    constraints: bool = False,
    orders: Sequence[Sequence[int]] | None = None,
    subjects: int | None = None,
    settings: Inversion = Inversion(),
    bounds: tuple[float, float] | None = None,
    basis: torch.Tensor | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Inverted, torch.Tensor]:
    """Reconstruct ``len(init)`` scans from ``update`` (local - community weights, by parameter name) of
    ``model`` (the community model the learner started from). ``ages`` known, or estimated from
    ``age_guess``; ``orders``: the learner's batch order in each epoch (:func:`simulate_update`);
    ``subjects``: how many scans the update came from (default ``len(init)``). Returns
    what :func:`invert` found (its ``value`` is the objective reached) and the ages."""
    match = UpdateMatch(model, update, recipe, init, ages=ages, age_guess=age_guess, objective=objective,
                        weighting=weighting, constraints=constraints, orders=orders, subjects=subjects)
    extra = [] if ages is not None else [torch.zeros(len(init), device=init.device)]
    found = invert(match, init, extra=extra, settings=settings, bounds=bounds, basis=basis, seed=seed,
                   progress=progress)
    return found, match.labels(found.extra).detach()
