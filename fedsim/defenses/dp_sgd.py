"""DP-SGD with Opacus around a model, its optimizer and its loader, and the privacy ledger that
carries a learner's accountant from round to round.

Opacus' ``PrivacyEngine.make_private`` wraps the three objects (per-sample gradients through
hooks, clipping to ``max_grad_norm`` and Gaussian noise in the optimizer, Poisson sampling in
the loader); ``fedsim.training.train_epochs`` then runs on the wrapped ones unchanged. The fedsim
models pass Opacus' validator as they are: InstanceNorm without running statistics (no
BatchNorm), Conv3d and pooling all have per-sample gradients.

ClientApps are rebuilt every round (and a run can be resumed), so a learner's accountant history
lives in the run directory, ``privacy/<learner>.json``, keyed by round: round ``r`` composes the
history of rounds ``< r`` with its own steps, and a replayed round overwrites its entry.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fedsim import snapshots

PRIVACY_DIR = "privacy"
NOISE_STREAM = 0xD9  # SeedSequence stream of DP-SGD's Gaussian noise

#: One accountant step kind: (noise multiplier, sample rate, number of steps), as Opacus' RDP history.
Step = tuple[float, float, int]


def import_opacus() -> ModuleType:
    """Opacus, imported without its import-time ``logging.basicConfig`` (``opacus/utils/module_utils.py``
    adds a handler to the root logger): fedsim leaves the user's logging configuration alone."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    import opacus
    import opacus.accountants  # noqa: F401 - the submodules fedsim uses, while the root logger is watched
    import opacus.grad_sample  # noqa: F401

    root.handlers[:] = handlers
    root.setLevel(level)
    return opacus


def epsilon(history: Iterable[Sequence[float]], delta: float) -> float:
    """ε at ``delta`` of a composed history of sampled Gaussian mechanisms (RDP accountant)."""
    accountant = import_opacus().accountants.RDPAccountant()  # Opacus is imported only where DP is on (~1.5 s)
    accountant.history = [(float(z), float(q), int(n)) for z, q, n in history]
    return float(accountant.get_epsilon(delta)) if accountant.history else 0.0


@dataclass
class PrivateTraining:
    """The model, optimizer and loader as Opacus wrapped them, plus their accountant.

    ``module`` shares its parameters with the model it wraps: read weights from the original.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    engine: Any  # opacus.PrivacyEngine
    prior: list[Step]

    def steps(self) -> list[Step]:
        """The accountant steps taken by this object (not the prior history)."""
        return [(float(z), float(q), int(n)) for z, q, n in self.engine.accountant.history]

    def epsilon(self, delta: float) -> float:
        """ε of the prior history composed with the steps taken so far."""
        return epsilon([*self.prior, *self.steps()], delta)


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    seed: int,
    prior: Sequence[Step] = (),
) -> PrivateTraining:
    """Wrap for DP-SGD; deterministic by ``seed`` (Poisson sampling uses ``loader``'s generator).

    The loss must be a batch mean (``fedsim.training.model_loss`` is), and ``prior`` is the
    history already spent on the same data (earlier rounds).
    """
    PrivacyEngine = import_opacus().PrivacyEngine

    device = next(model.parameters()).device
    noise = torch.Generator(device=device).manual_seed(
        int(np.random.SeedSequence([seed, NOISE_STREAM]).generate_state(1)[0])
    )
    with warnings.catch_warnings():
        # "Secure RNG turned off": fedsim wants reproducible noise (seeded), and says so
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        engine = PrivacyEngine(accountant="rdp")
        module, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            loss_reduction="mean",
            poisson_sampling=True,
            noise_generator=noise,
        )
    return PrivateTraining(module, optimizer, loader, engine, list(prior))


class PrivacyLedger:
    """One learner's DP-SGD accountant history by round, in ``RUN_DIR/privacy/<learner>.json``."""

    def __init__(self, run_dir: str | Path, learner: str) -> None:
        self.path = Path(run_dir) / PRIVACY_DIR / f"{learner}.json"
        self.learner = learner

    def _rounds(self) -> dict[int, dict]:
        if not self.path.is_file():
            return {}
        return {int(r): v for r, v in json.loads(self.path.read_text())["rounds"].items()}

    def before(self, rnd: int) -> list[Step]:
        """The steps of every recorded round before ``rnd``, in round order."""
        rounds = self._rounds()
        return [tuple(s) for r in sorted(rounds) if r < rnd for s in rounds[r]["steps"]]

    def record(self, rnd: int, steps: Sequence[Step], eps: float, delta: float) -> None:
        """Store round ``rnd``'s steps and ε (overwriting a replayed round's entry)."""
        rounds = {r: v for r, v in self._rounds().items() if r < rnd}
        rounds[rnd] = {"steps": [list(s) for s in steps], "epsilon": eps}
        body = {"learner": self.learner, "delta": delta, "rounds": {str(r): rounds[r] for r in sorted(rounds)}}
        snapshots.write_text(self.path, json.dumps(body, indent=1) + "\n")
