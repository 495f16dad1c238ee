"""How a reconstruction is configured: the inversion loop's settings and the gradient attack's, their
names and defaults, without torch.

A command's parser shows these choices and defaults at Python's start-up cost; the modules that run
the attacks (:mod:`~attacks.reconstruction.optimize`, :mod:`~attacks.reconstruction.gradient`,
:mod:`~attacks.reconstruction.strength`, :mod:`~attacks.reconstruction.sweep`) import them from here,
and :class:`GradientAttack` loads them when it first runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedsim.errors import FedsimError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from attacks.reconstruction.gradient import UpdateMatch
    from attacks.reconstruction.optimize import Inverted
    from attacks.signals.updates import Recipe

__all__ = ["LOCAL_STEPS", "OBJECTIVES", "PRIORS", "PROJECTIONS", "STEP_SIZES", "UPDATES", "WEIGHTINGS",
           "GradientAttack", "Inversion"]

UPDATES = ("signed", "adam", "normalized", "lbfgs")
PROJECTIONS = ("box", "zscore")
#: The step size of each update rule when :attr:`Inversion.step_size` is not given.
STEP_SIZES = {"signed": 0.03, "adam": 0.01, "normalized": 0.03, "lbfgs": 1.0}
#: What gradient inversion matches: the update as one gradient, or the local SGD steps replayed.
OBJECTIVES = ("gradient", "unrolled")
#: How an update is compared: one cosine over the whole update, or the mean of each layer's.
WEIGHTINGS = ("global", "layer")
#: Where gradient inversion searches: every voxel from the mean brain, or a PCA span of the attacker's scans.
PRIORS = ("mean", "pca")
#: The sweep's local steps: one batch, one pass over the subjects, the run's ``local_epochs`` passes.
LOCAL_STEPS = ("1", "epoch", "run")


@dataclass(frozen=True)
class Inversion:
    """Settings of the loop; the defaults fit one 36x43x36 reconstruction in a few minutes on 2 cores."""

    iterations: int = 500
    #: ``None``: :data:`STEP_SIZES` of the update rule (signed 0.03: breaching's 0.1 is for 2-D images in
    #: [-2, 2], z-scored 3-D scans need smaller steps)
    step_size: float | None = None
    tv: float = 1e-3  # breaching: 0.2; z-scored brain scans have sharp tissue edges that a larger weight erases
    update: str = "signed"
    restarts: int = 1
    #: std of the noise on the start of each restart after the first (in a ``basis``, restarts start at
    #: standard-normal coefficients instead: a random brain of the attacker's distribution)
    jitter: float = 0.1
    project: str = "box"

    def __post_init__(self) -> None:
        if self.update not in UPDATES:
            raise FedsimError(f"unknown update {self.update!r}; choose one of: {', '.join(UPDATES)}")
        if self.project not in PROJECTIONS:
            raise FedsimError(f"unknown projection {self.project!r}; choose one of: {', '.join(PROJECTIONS)}")
        if self.iterations < 1 or self.restarts < 1:
            raise FedsimError("an inversion needs at least 1 step and 1 restart")
        if not self.tv >= 0:
            raise FedsimError(f"the TV weight must be 0 or more, got {self.tv:g}")

    @property
    def step(self) -> float:
        return STEP_SIZES[self.update] if self.step_size is None else self.step_size

    @property
    def label(self) -> str:
        """How a report names these settings: update rule, steps x restarts."""
        return f"{self.update}, {self.iterations} steps x {self.restarts} restart{'s' * (self.restarts > 1)}"


@dataclass(frozen=True)
class GradientAttack:
    """A gradient inversion: the loop's settings, how the update is matched, and where it searches.

    ``prior="pca"`` searches the span of the attacker's own scans' top ``components`` principal
    components around their mean (GIAS-style), ``"mean"`` every voxel from the mean brain. Its
    methods import the inversion code (torch) when they run."""

    #: chosen by measurement (``benchmarks/gradient_inversion.py``): plain Adam, a light TV, no constraints
    settings: Inversion = Inversion(update="adam", tv=1e-4)
    weighting: str = "global"
    constraints: bool = False
    prior: str = "mean"
    components: int = 60

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise FedsimError(f"unknown prior {self.prior!r}; choose one of: {', '.join(PRIORS)}")

    @property
    def label(self) -> str:
        """The attack as a report names it."""
        parts = [self.settings.label, f"{self.weighting} cosine",
                 "output constraints where exact" if self.constraints else "",
                 f"PCA-{self.components} prior" if self.prior == "pca" else "", f"{self.settings.project} projection",
                 f"TV {self.settings.tv:g}"]
        return ", ".join(p for p in parts if p)

    def basis(self, own: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        """The search space's basis, from the attacker's own scans (``own()``, read only for a PCA prior)."""
        from attacks.reconstruction.optimize import pca_basis

        return pca_basis(own(), self.components) if self.prior == "pca" else None

    def invert(self, model: nn.Module, update: Mapping[str, torch.Tensor], init: torch.Tensor, recipe: Recipe, *,
               basis: torch.Tensor | None, bounds: tuple[float, float] | None, settings: Inversion | None = None,
               **kwargs: Any) -> tuple[Inverted, torch.Tensor]:
        """:func:`~attacks.reconstruction.gradient.invert_update` with this attack's settings (or ``settings``
        in their place)."""
        from attacks.reconstruction.gradient import invert_update

        return invert_update(model, update, init, recipe, weighting=self.weighting, constraints=self.constraints,
                             settings=settings or self.settings, bounds=bounds, basis=basis, **kwargs)

    def match(self, model: nn.Module, update: Mapping[str, torch.Tensor], recipe: Recipe, probe: torch.Tensor,
              **kwargs: Any) -> UpdateMatch:
        from attacks.reconstruction.gradient import UpdateMatch

        return UpdateMatch(model, update, recipe, probe, weighting=self.weighting, constraints=self.constraints,
                           **kwargs)
