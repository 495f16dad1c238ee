"""Noise defenses of Nguyen, Wu et al. 2020 (arXiv 2011.00177): on training labels, on released
predictions and on shared weights — each a wrapper (dataset, module, state dict), never an edit
of the training loop.

Every draw comes from its own ``np.random.SeedSequence([seed, stream, key...])``, so noise is
deterministic by seed and independent of batch order, Ray actors and the global RNGs. Labels and
predictions are keyed by *what* they belong to (a subject, an input volume), so the same subject
always gets the same noise: repeating a query cannot average it away.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fedsim.training import model_ages

# One stream per defense, so their draws never coincide for equal keys.
LABEL_STREAM, PREDICTION_STREAM, WEIGHT_STREAM = 0x1ABE1, 0x9BED, 0x3E16


def _normal(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


class NoisyLabels(Dataset):
    """``(x, age + n_subject)`` with ``n_subject ~ N(0, std²)`` drawn once per subject.

    Parameters
    ----------
    dataset : Dataset
        Yields ``(x, age)``; if it has ``indices`` (a :class:`~fedsim.data.cache.VolumeDataset`),
        those cohort indices key the noise, so a subject keeps its noisy label in every round and
        whichever learner or set holds it.
    std : float
        Standard deviation in years.
    seed : int
        The environment's seed.
    """

    def __init__(self, dataset: Dataset, std: float, seed: int) -> None:
        self.dataset = dataset
        self.std = float(std)
        keys = getattr(dataset, "indices", range(len(dataset)))
        self.noise = np.array([_normal(LABEL_STREAM, seed, k).normal(0.0, std) for k in keys], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, age = self.dataset[i]
        return x, age + torch.tensor(self.noise[i], dtype=age.dtype)


def _input_keys(x: torch.Tensor) -> list[int]:
    """A 64-bit key per sample from the bytes of its float32 input (same volume ⇒ same key)."""
    flat = x.detach().to("cpu", torch.float32).reshape(len(x), -1).contiguous().numpy()
    return [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in flat]


def prediction_noise(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """The noise (years, shape ``(len(x),)``) that :class:`PerturbedPredictions` adds for inputs ``x``."""
    noise = [_normal(PREDICTION_STREAM, seed, k).normal(0.0, std) for k in _input_keys(x)]
    return torch.tensor(noise, dtype=torch.float32)


def perturb_predictions(
    pred: torch.Tensor | np.ndarray, x: torch.Tensor, std: float, seed: int
) -> torch.Tensor | np.ndarray:
    """Released predictions: clean ``pred`` (years, one per row of ``x``) + :func:`prediction_noise`.

    Returns the type it was given (tensor on ``pred``'s device, or a NumPy array).
    """
    if std == 0:
        return pred
    noise = prediction_noise(x, std, seed)
    if isinstance(pred, np.ndarray):
        return pred + noise.numpy().astype(pred.dtype)
    return pred + noise.to(pred.device, pred.dtype)


class PerturbedPredictions(nn.Module):
    """A model whose released predictions carry Gaussian noise: its predicted ages + ``N(0, std²)``.

    The noise of a volume is fixed by its content and ``seed`` (querying twice returns the same
    answer). The wrapped model stays reachable as ``.model`` (its layers, for white-box features,
    are the clean ones: an attacker holding the weights is not affected by this defense).
    """

    def __init__(self, model: nn.Module, std: float, seed: int) -> None:
        super().__init__()
        self.model, self.std, self.seed = model, float(std), int(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Released ages in years, (B,): a model with its own output (SFCN) releases its predicted age."""
        return perturb_predictions(model_ages(self.model, self.model(x)), x, self.std, self.seed)


def perturb_state(state: Mapping[str, torch.Tensor], std: float, *entropy: int) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with ``N(0, std²)`` added to every floating-point tensor.

    ``entropy`` (e.g. seed, round, learner) seeds one generator, drawn from tensor by tensor in
    the state's order, so the same call always returns the same weights.
    """
    rng = _normal(WEIGHT_STREAM, *entropy)
    out = {}
    for name, value in state.items():
        if std > 0 and value.is_floating_point():
            noise = torch.from_numpy(rng.normal(0.0, std, tuple(value.shape)))
            value = value + noise.to(value.device, value.dtype)
        out[name] = value
    return out
