"""Model inversion of the community model: the scan it maps to a target age, under the prior.

Starting from the attacker's mean brain, the loop (:mod:`attacks.reconstruction.optimize`) moves the
volume until the model predicts the target age: an age-conditioned prototype. If training memorised
its members, the prototype should sit closer to members of that age than to unseen subjects of that age;
:func:`closeness` measures that (AUC of "closer is a member"; 0.5 = no membership in the prototype).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from attacks.reconstruction.optimize import Inversion, invert
from fedsim.training import model_ages, model_loss

__all__ = ["closeness", "invert_model"]


def invert_model(model: nn.Module, age: float, init: torch.Tensor, *, loss: str = "mse", target_scale: float = 1.0,
                 settings: Inversion = Inversion(), bounds: tuple[float, float] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, float]:
    """The prototype of ``age``: a volume from ``init`` that the model predicts as ``age``; returns it and
    the model's prediction for it."""
    model = model.eval()
    target = torch.full((len(init),), float(age), device=init.device)

    def fit(x: torch.Tensor, _extra: list[torch.Tensor]) -> torch.Tensor:
        return model_loss(model, model(x), target, loss=loss, target_scale=target_scale)

    x = invert(fit, init, settings=settings, bounds=bounds, progress=progress).x
    with torch.no_grad():
        return x, float(model_ages(model, model(x)).mean())


def closeness(prototype: np.ndarray, members: np.ndarray, non_members: np.ndarray) -> float:
    """AUC of ``-distance to the prototype`` separating ``members`` from ``non_members`` (each (N, *spatial))."""
    def distance(v: np.ndarray) -> np.ndarray:
        return ((v.reshape(len(v), -1) - prototype.reshape(1, -1)) ** 2).mean(axis=1)

    labels = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    return float(roc_auc_score(labels, -np.r_[distance(members), distance(non_members)]))
