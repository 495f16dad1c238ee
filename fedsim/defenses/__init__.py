"""Privacy defenses, switched on by the ``[defense]`` table of an environment file.

Each one is a wrapper around a piece the training code already has, never an edit of the loop
in :mod:`fedsim.training`:

============================  =====================================  ================================
defense (``[defense]`` keys)  wraps                                  where
============================  =====================================  ================================
DP-SGD (``dp_*``)             model + optimizer + loader (Opacus)    :func:`local_training`
central DP (``central_*``)    the FedAvg strategy (Flower's DP       :mod:`fedsim.defenses.central_dp`
                              fixed-clipping wrappers)
label noise                   the training dataset                   :func:`local_training`
model noise                   the weights a learner sends / a        :func:`release_weights`
                              centralized snapshot
prediction noise              the model's output when released       :func:`release_model`
early stopping                the centralized epoch loop             :class:`EarlyStopping`
============================  =====================================  ================================

Weight decay, the other "just regularise" baseline, is ``[train] weight_decay``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedsim.config import DefenseConfig, EnvConfig, from_resolved
from fedsim.defenses.perturbation import (
    NoisyLabels,
    PerturbedPredictions,
    perturb_predictions,
    perturb_state,
    prediction_noise,
)
from fedsim.training import loader_workers, make_loader, make_optimizer

__all__ = [
    "EarlyStopping",
    "LocalTraining",
    "NoisyLabels",
    "PerturbedPredictions",
    "defense_of",
    "local_training",
    "perturb_predictions",
    "perturb_state",
    "prediction_noise",
    "privacy_summary",
    "release_model",
    "release_weights",
]

_NONE = DefenseConfig()


def defense_of(config: EnvConfig | Mapping[str, Any]) -> DefenseConfig:
    """The ``[defense]`` of an environment, or of a run's ``config.toml`` as a dict; all-off if absent."""
    if not isinstance(config, EnvConfig):
        if not config.get("defense"):  # no [defense] table: nothing to validate (any run's config.toml)
            return _NONE
        config = from_resolved(dict(config))
    return config.defense or _NONE


@dataclass
class LocalTraining:
    """What :func:`fedsim.training.train_epochs` runs on: the model, loader and optimizer, wrapped
    by the defenses of the environment. ``private`` holds the DP-SGD accountant (or ``None``)."""

    model: nn.Module
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    private: Any = field(default=None)  # fedsim.defenses.dp_sgd.PrivateTraining

    def epsilon(self, delta: float) -> float | None:
        """ε spent so far (prior rounds included), or ``None`` without DP-SGD."""
        return None if self.private is None else self.private.epsilon(delta)


def local_training(
    cfg: EnvConfig, model: nn.Module, dataset: Dataset, *, seed: int, prior: Sequence[tuple[float, float, int]] = ()
) -> LocalTraining:
    """Loader and optimizer of ``cfg [train]`` for ``model`` on ``dataset``, with the defenses.

    Label noise wraps the dataset (noise fixed per subject by the environment's seed); DP-SGD
    wraps model, optimizer and loader (``prior``: accountant steps of earlier rounds). ``seed``
    drives shuffling (or Poisson sampling) and DP noise.
    """
    d = cfg.defense or _NONE
    if d.label_noise > 0:
        dataset = NoisyLabels(dataset, d.label_noise, cfg.seed)
    device = next(model.parameters()).device
    loader = make_loader(dataset, cfg.train.batch_size, shuffle=True, seed=seed, device=device,
                         workers=loader_workers(device))
    optimizer = make_optimizer(model.parameters(), cfg.train)
    if not d.dp_sgd:
        return LocalTraining(model, loader, optimizer)
    from fedsim.defenses.dp_sgd import make_private  # Opacus costs ~1.5 s to import

    private = make_private(model, optimizer, loader, noise_multiplier=d.dp_noise_multiplier,
                           max_grad_norm=d.dp_max_grad_norm, seed=seed, prior=tuple(prior))
    return LocalTraining(private.module, private.loader, private.optimizer, private)


def release_weights(cfg: EnvConfig, state: Mapping[str, torch.Tensor], *entropy: int) -> dict[str, torch.Tensor]:
    """Model perturbation: the weights as shared, ``N(0, model_noise²)`` on each (a copy);
    ``entropy`` (round, learner number) picks the draw together with the environment's seed."""
    return perturb_state(state, (cfg.defense or _NONE).model_noise, cfg.seed, *entropy)


def release_model(model: nn.Module, config: EnvConfig | Mapping[str, Any]) -> nn.Module:
    """Prediction perturbation: ``model`` as its predictions are released.

    With ``[defense] prediction_noise`` > 0 this is a :class:`PerturbedPredictions` around
    ``model`` (noise fixed per input volume and seed); otherwise ``model`` itself.
    """
    d = defense_of(config)
    if d.prediction_noise == 0:
        return model
    seed = config.seed if isinstance(config, EnvConfig) else int(config.get("seed", 0))
    return PerturbedPredictions(model, d.prediction_noise, seed)


class EarlyStopping:
    """Stop after ``patience`` epochs without a lower validation error (0 = never stop)."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.waited = patience, float("inf"), 0

    def step(self, val_error: float) -> bool:
        """Record one epoch's validation error; ``True`` when training should stop."""
        if val_error < self.best:
            self.best, self.waited = val_error, 0
        else:
            self.waited += 1
        return self.patience > 0 and self.waited >= self.patience


def privacy_summary(metrics: Mapping[str, Any], cfg: EnvConfig) -> dict[str, Any]:
    """The privacy part of a run's summary, from one ``metrics.jsonl`` line: every ε in it and δ."""
    eps = {k: v for k, v in metrics.items() if k.endswith("epsilon")}
    if not eps:
        return {}
    return {"epsilon": eps, "delta": (cfg.defense or _NONE).dp_delta}
