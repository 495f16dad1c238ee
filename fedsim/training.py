"""The local training and evaluation loop, shared by centralized training and federated learners.

Targets are ages in years. A regressor's output is the age and its loss is computed on
``(prediction - age) / target_scale``, so a CPU-profile model (``target_scale`` 7.4) effectively
regresses a z-scored age while the paper's profile (``target_scale`` 1) is exactly the paper's MSE
in years². A model whose output is something else (SFCN's age-bin log-probabilities) is an
:class:`OwnOutput`: it says how its output is trained and read, and :func:`model_loss` and
:func:`model_ages` ask it, here and in every attack.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedsim.config import TrainConfig

_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": nn.functional.mse_loss,
    "l1": nn.functional.l1_loss,
}


# Opacus' per-sample hooks on a first layer whose input needs no gradient: expected, and harmless
OPACUS_HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect to module outputs"


@contextlib.contextmanager
def _opacus_hooks_quiet(model: nn.Module) -> Iterator[None]:
    """Silence :data:`OPACUS_HOOK_WARNING` for an Opacus-wrapped model (DP-SGD) only; other models
    train without touching the warning filters."""
    if not type(model).__module__.startswith("opacus"):
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=OPACUS_HOOK_WARNING)
        yield


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD as the environment says."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)


def regression_loss(name: str, pred: torch.Tensor, age: torch.Tensor, target_scale: float) -> torch.Tensor:
    """Batch-mean loss on the scaled error; one definition for training and attacks (through :func:`model_loss`)."""
    return _LOSSES[name](pred / target_scale, age / target_scale)


@runtime_checkable
class OwnOutput(Protocol):
    """A model whose output is not the age in years, so it carries its own loss and reading of it."""

    def output_loss(self, output: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """Each subject's training loss, shape (B,), of ``output`` for ages (B,) in years."""

    def output_ages(self, output: torch.Tensor) -> torch.Tensor:
        """The predicted ages in years, shape (B,)."""


def own_output(model: nn.Module) -> OwnOutput | None:
    """``model`` (or the model Opacus' ``GradSampleModule`` wraps, its ``_module``) if it is an
    :class:`OwnOutput`; ``None`` for a regressor, whose output is the age."""
    inner = getattr(model, "_module", model)
    return inner if isinstance(inner, OwnOutput) else None


def model_loss(model: nn.Module, output: torch.Tensor, age: torch.Tensor, *, loss: str,
               target_scale: float) -> torch.Tensor:
    """The batch-mean loss of ``model``'s ``output``: what training minimises and every gradient attack
    differentiates. The model's own (:class:`OwnOutput`) if it has one, else :func:`regression_loss`
    with the run's ``loss`` and ``target_scale``."""
    own = own_output(model)
    if own is not None:
        return own.output_loss(output, age).mean()
    return regression_loss(loss, output, age, target_scale)


def model_ages(model: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """The ages in years that ``model``'s ``output`` predicts (a regressor's output is the age)."""
    own = own_output(model)
    return output if own is None else own.output_ages(output)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                device: torch.device | str = "cpu", workers: int = 0) -> DataLoader:
    """A deterministic loader: the shuffle order depends only on ``seed``. Feeding a GPU, batches go
    through pinned memory, assembled by ``workers`` processes (:func:`loader_workers`); on the CPU the
    memory-mapped cache is read in-process, which is faster for small volumes."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    cuda = torch.device(device).type == "cuda"
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=workers if cuda else 0, pin_memory=cuda)


def loader_workers(device: torch.device | str) -> int:
    """Loader processes for a training loader on ``device``: on a GPU, the CPU threads this process
    was given (``torch.get_num_threads()``: a learner's ``--cpus-per-learner``) less one, at most 4."""
    return min(4, max(0, torch.get_num_threads() - 1)) if torch.device(device).type == "cuda" else 0


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    loss: str,
    target_scale: float,
    epochs: int = 1,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> float:
    """Train ``epochs`` passes over ``loader``; returns the mean training MAE (years) of the last.

    ``precision="bf16"`` runs the forward pass under bfloat16 autocast (the paper-scale models on
    a GPU); the loss, gradients and weights stay float32."""
    model.train()
    device = torch.device(device)
    with _opacus_hooks_quiet(model):
        for _ in range(epochs):
            abs_err, n = torch.zeros((), dtype=torch.float64, device=device), 0  # on the device: no sync per batch
            for x, age in loader:
                x, age = x.to(device, non_blocking=True), age.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    output = model(x)
                output = output.float()
                model_loss(model, output, age, loss=loss, target_scale=target_scale).backward()
                optimizer.step()
                pred = model_ages(model, output)
                abs_err += (pred.detach() - age).abs().sum().double()
                n += len(age)
    return float(abs_err) / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true ages (years) in loader order, in eval mode."""
    model.eval()
    preds, ages = [], []
    for x, age in loader:
        preds.append(model_ages(model, model(x.to(device))).cpu())
        ages.append(age)
    return torch.cat(preds).numpy().astype(np.float64), torch.cat(ages).numpy().astype(np.float64)


@dataclass(frozen=True)
class Evaluation:
    """Errors of one model on one subject set."""

    mae: float
    rmse: float
    n: int

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_mae": self.mae, f"{prefix}_rmse": self.rmse, f"{prefix}_n": self.n}


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> Evaluation:
    """MAE and RMSE in years."""
    pred, age = predict(model, loader, device)
    err = pred - age
    return Evaluation(mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err**2).mean())), n=len(err))
