"""A learner's update (local minus community weights), trained by fedsim's own local loop without a federation.

What the curious controller reads: the gradient-inversion sweep attacks one such update per point
(``subjects`` scans, batch size, local epochs, optimizer, and a defense, from the community model of a
round), property inference trains its shadow models' updates the same way. It is trained exactly as a learner trains
(:func:`fedsim.defenses.local_training` + :func:`fedsim.training.train_epochs`, so DP-SGD is Opacus and
model noise is the learner's own release), without running a federation per point. Clipping scales the
update to an L2 bound (Flower's client-side fixed clipping); ``secagg`` stands for secure aggregation:
the controller sees only the mean of this update and those of other learners.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from attacks.signals.names import DEFENSES
from fedsim.config import from_resolved
from fedsim.data.cache import CohortArray, VolumeDataset
from fedsim.defenses import local_training, release_weights
from fedsim.errors import FedsimError
from fedsim.training import make_loader, train_epochs

__all__ = ["DEFENSES", "Defense", "Recipe", "epoch_orders", "parse_defense", "train_update"]

@dataclass(frozen=True)
class Recipe:
    """How a learner trained locally, as the controller knows it from the run's configuration."""

    optimizer: str = "sgd"
    lr: float = 5e-5
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 1
    epochs: int = 1
    loss: str = "mse"
    target_scale: float = 1.0

    @classmethod
    def of_run(cls, config: Mapping[str, Any], **changes: Any) -> Recipe:
        """The recipe of a run's ``config.toml`` ([train], [federation] local_epochs, [model] target_scale)."""
        train = config["train"]
        missing = [key for key in ("optimizer", "lr", "batch_size") if key not in train]
        if missing:  # an imported run (fedsim import, a recorded Flower app): fedsim did not train it
            raise FedsimError(f"the run records no training recipe ([train] {', '.join(missing)}): it was imported, and "
                              "fedsim cannot replay training it did not do")
        recipe = cls(optimizer=train["optimizer"], lr=float(train["lr"]), momentum=float(train.get("momentum", 0.0)),
                     weight_decay=float(train.get("weight_decay", 0.0)), batch_size=int(train["batch_size"]),
                     epochs=int(config.get("federation", {}).get("local_epochs", train.get("epochs", 1))),
                     loss=train.get("loss", "mse"), target_scale=float(config["model"].get("target_scale", 1.0)))
        return replace(recipe, **changes)

    def steps(self, subjects: int) -> int:
        """Optimizer steps the learner takes on ``subjects`` scans."""
        return self.epochs * -(-subjects // self.batch_size)

    def objective(self, subjects: int) -> str:
        """``unrolled`` where replaying the local steps is needed: SGD over more than one step, and Adam (even its
        first step is about the gradient's sign, not the gradient); else ``gradient``, exact for one SGD step."""
        if self.optimizer == "adam" or (self.optimizer == "sgd" and self.steps(subjects) > 1):
            return "unrolled"
        return "gradient"


@dataclass(frozen=True)
class Defense:
    name: str = "none"
    value: float = 0.0

    @property
    def label(self) -> str:
        return self.name if self.name == "none" else f"{self.name} {self.value:g}"


def parse_defense(spec: str) -> Defense:
    """``none``, ``dp_sgd``, ``model_noise:0.01``, ``clip:1e-3``, ``secagg:8`` -> :class:`Defense`."""
    name, _, value = spec.partition(":")
    if name not in DEFENSES:
        raise FedsimError(f"unknown defense {name!r}; choose from: {', '.join(DEFENSES)} (optionally NAME:VALUE)")
    try:
        number = float(value) if value else DEFENSES[name][1]
    except ValueError:
        raise FedsimError(f"defense {spec!r}: the value after ':' must be a number") from None
    if name != "none" and not number > 0:
        raise FedsimError(f"defense {spec!r}: the value must be positive")
    if name == "secagg" and (number != int(number) or number < 2):
        raise FedsimError(f"defense {spec!r}: secagg averages at least 2 learners")
    return Defense(name, number)


def epoch_orders(n: int, batch_size: int, seed: int, epochs: int = 1) -> list[list[int]]:
    """The order in which a learner's loader (:func:`fedsim.training.make_loader`, shuffled by ``seed``)
    visits ``n`` subjects in each of ``epochs`` epochs: the same loader over their indices."""
    loader = make_loader(TensorDataset(torch.arange(n)), batch_size, shuffle=True, seed=seed)
    return [[int(i) for (batch,) in loader for i in batch] for _ in range(epochs)]


def _environment(config: Mapping[str, Any], recipe: Recipe, defense: Defense):
    raw = copy.deepcopy(dict(config))
    raw["train"] = {**raw["train"], "optimizer": recipe.optimizer, "lr": recipe.lr, "momentum": recipe.momentum,
                    "weight_decay": recipe.weight_decay, "batch_size": recipe.batch_size, "loss": recipe.loss}
    table: dict[str, Any] = {}
    if defense.name == "dp_sgd":
        table = {"dp_noise_multiplier": defense.value, "dp_max_grad_norm": 1.0}
    elif defense.name == "model_noise":
        table = {"model_noise": defense.value}
    raw["defense"] = table
    return from_resolved(raw)


def _one_update(cfg, model: nn.Module, cohort: CohortArray, rows: np.ndarray, recipe: Recipe, seed: int,
                learner: int) -> dict[str, torch.Tensor]:
    local = copy.deepcopy(model).train()  # a snapshot comes in eval mode; Opacus wants training mode
    start = {k: v.detach().clone() for k, v in local.state_dict().items()}
    torch.manual_seed(seed)
    session = local_training(cfg, local, VolumeDataset(cohort, rows), seed=seed)
    device = next(local.parameters()).device
    train_epochs(session.model, session.loader, session.optimizer, loss=recipe.loss,
                 target_scale=recipe.target_scale, epochs=recipe.epochs, device=device, precision=cfg.train.precision)
    released = release_weights(cfg, {k: v.cpu() for k, v in local.state_dict().items()}, seed, learner)
    names = [k for k, _ in model.named_parameters()]
    return {k: released[k].to(device) - start[k] for k in names}


def train_update(config: Mapping[str, Any], model: nn.Module, cohort: CohortArray, rows: np.ndarray, recipe: Recipe,
                 defense: Defense = Defense(), *, others: Sequence[np.ndarray] = (), seed: int = 0) -> dict[str, torch.Tensor]:
    """The update (local - ``model`` weights, by parameter name) a learner holding cohort ``rows`` sends after
    ``recipe``'s local training under ``defense``; ``others`` are the rows of the learners a ``secagg``
    update is averaged with."""
    cfg = _environment(config, recipe, defense)
    update = _one_update(cfg, model, cohort, rows, recipe, seed, 0)
    if defense.name == "clip":
        norm = torch.sqrt(sum((u.double() ** 2).sum() for u in update.values()))
        update = {k: u * min(1.0, defense.value / max(float(norm), 1e-30)) for k, u in update.items()}
    if defense.name == "secagg":
        if len(others) < int(defense.value) - 1:
            raise FedsimError(f"secagg {defense.value:g} needs {int(defense.value) - 1} other learners' subjects")
        mates = [_one_update(cfg, model, cohort, r, recipe, seed, i + 1) for i, r in enumerate(others[:int(defense.value) - 1])]
        update = {k: (update[k] + sum(m[k] for m in mates)) / (len(mates) + 1) for k in update}
    return update
