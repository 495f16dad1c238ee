"""The one loop every reconstruction runs: find volumes that make an objective small under a 3-D TV prior.

Four ways to step (``update``), because which one recovers a scan is a measured question, not a given:

- ``signed``: Inverting Gradients' recipe (Geiping et al. 2020; breaching's ``invertinggradients``): Adam on
  the *sign* of the gradient. Every voxel moves by the full step whatever its gradient, so voxels the
  objective does not constrain take a random walk.
- ``adam``: Adam on the gradient itself (breaching's default ``optim.signed = None``); its per-voxel scale
  still evens out, but a voxel with no gradient stays where it started.
- ``normalized``: plain descent on the gradient scaled to a largest entry of 1.
- ``lbfgs``: L-BFGS with a strong-Wolfe line search (Zhu et al. 2019's Deep Leakage), no step size to tune.

The step size is cut tenfold at 3/8, 5/8 and 7/8 of the iterations (not L-BFGS). After every step the
volumes are projected: boxed to the range the scans take and, with ``project="zscore"``, each re-z-scored
as preprocessing z-scores every scan (the attacker knows it). ``restarts`` runs the loop from the start
and from ``restarts - 1`` jittered copies of it; of all iterates of all restarts the one with the least
objective (fit + TV) is returned: the choice reads the objective only, never the truth. ``basis``
optimises in a low-dimensional description of brains (GIAS, Jeon et al. 2021: the attacker's own scans'
principal components, :func:`pca_basis`) instead of in voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from attacks.reconstruction.settings import PROJECTIONS, UPDATES, Inversion
from fedsim.errors import FedsimError

__all__ = ["PROJECTIONS", "UPDATES", "Inversion", "Inverted", "invert", "pca_basis", "total_variation"]


@dataclass
class Inverted:
    """What :func:`invert` found: the volumes, the other unknowns, the objective's fit term there, and
    the final objective (fit + TV) of every restart."""

    x: torch.Tensor
    extra: list[torch.Tensor]
    value: float
    restart: int = 0
    restart_values: list[float] = field(default_factory=list)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring voxels along each spatial axis of ``(N, C, *spatial)``."""
    return sum(x.diff(dim=d).abs().mean() for d in range(2, x.dim()))


def pca_basis(scans: torch.Tensor, components: int) -> torch.Tensor:
    """The top ``components`` principal directions of ``scans`` (N, 1, *spatial), each scaled by its
    standard deviation, as (components, voxels): a unit coefficient is a typical brain's deviation."""
    if components > len(scans) - 1:
        raise FedsimError(f"a PCA prior of {components} components needs at least {components + 1} of the attacker's "
                          f"own scans; it has {len(scans)} (choose --components {max(len(scans) - 1, 1)} or fewer)")
    flat = scans.reshape(len(scans), -1).double()
    centred = flat - flat.mean(0, keepdim=True)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    return (vt[:components] * (s[:components, None] / (len(scans) - 1) ** 0.5)).to(scans.dtype)


def _projected(x: torch.Tensor, settings: Inversion, bounds: tuple[float, float] | None) -> torch.Tensor:
    """``x`` re-z-scored per volume (``project="zscore"``), then boxed: differentiable, so volumes decoded from
    a basis obey it inside the map; :func:`_project` applies it in place after a step."""
    if settings.project == "zscore":
        flat = x.reshape(len(x), -1)
        x = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-12)).view_as(x)
    return x if bounds is None else x.clamp(*bounds)


def _project(x: torch.Tensor, settings: Inversion, bounds: tuple[float, float] | None) -> None:
    with torch.no_grad():
        x.copy_(_projected(x, settings, bounds))


class _Best:
    """The iterate of least objective seen so far (across restarts)."""

    def __init__(self) -> None:
        self.total, self.fit, self.x, self.extra, self.restart = float("inf"), float("nan"), None, [], 0

    def see(self, total: float, fit: float, x: torch.Tensor, extra: Sequence[torch.Tensor], restart: int) -> None:
        if total < self.total:
            self.total, self.fit, self.restart = total, fit, restart
            self.x, self.extra = x.detach().clone(), [e.detach().clone() for e in extra]


def invert(
    objective: Callable[[torch.Tensor, Sequence[torch.Tensor]], torch.Tensor],
    init: torch.Tensor,
    *,
    extra: Sequence[torch.Tensor] = (),
    settings: Inversion = Inversion(),
    bounds: tuple[float, float] | None = None,
    basis: torch.Tensor | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Inverted:
    """Minimise ``objective(x, extra) + tv * TV(x)`` from ``init``; ``extra`` are further unknowns optimised
    jointly (e.g. the ages of a batch). With ``basis`` (k, voxels), ``x = init + coefficients @ basis``."""
    best, total_steps, done = _Best(), settings.iterations * settings.restarts, 0
    restart_values = []
    generator = torch.Generator().manual_seed(seed)
    for restart in range(settings.restarts):
        if basis is None:
            start = init.detach().clone()
            if restart:
                start += settings.jitter * torch.randn(start.shape, generator=generator).to(start.device)
            _project(start, settings, bounds)
            latent = start.requires_grad_(True)
        else:
            latent = torch.zeros(len(init), len(basis), device=init.device)
            if restart:
                latent += torch.randn(latent.shape, generator=generator).to(init.device)  # a random plausible brain
            latent.requires_grad_(True)
        unknowns = [latent] + [e.detach().clone().requires_grad_(True) for e in extra]

        def volumes() -> torch.Tensor:  # in a basis the projection is part of the map, so every iterate obeys it
            return latent if basis is None else _projected(init + (latent @ basis).view_as(init), settings, bounds)

        def evaluate() -> torch.Tensor:
            x = volumes()
            fit = objective(x, unknowns[1:])
            total = fit + settings.tv * total_variation(x)
            best.see(float(total.detach()), float(fit.detach()), x, unknowns[1:], restart)
            return total

        _run(evaluate, unknowns, settings, lambda: _project(latent, settings, bounds) if basis is None else None,
                    progress=None if progress is None else (lambda i, done=done: progress(done + i, total_steps)))
        done += settings.iterations
        restart_values.append(float(evaluate().detach()))  # the final iterate is a candidate too
    if best.x is None:
        raise FedsimError("the inversion's objective was not a number from the start (NaN): nothing to return")
    x, extra, fit = best.x.clone(), best.extra, best.fit
    _project(x, settings, bounds)  # a line search's trial point may lie outside the projection's set...
    if not torch.equal(x, best.x):  # ...and then the value reported is the fit at the volumes returned
        fit = float(objective(x, extra).detach())
    return Inverted(x, extra, fit, best.restart, restart_values)


def _run(evaluate: Callable[[], torch.Tensor], unknowns: list[torch.Tensor], settings: Inversion,
         project: Callable[[], None], *, progress: Callable[[int], None] | None) -> None:
    n = settings.iterations
    if settings.update == "lbfgs":
        optimizer = torch.optim.LBFGS(unknowns, lr=settings.step, max_iter=1, history_size=20,
                                      line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            total = evaluate()
            total.backward()
            return total

        for it in range(n):
            optimizer.step(closure)
            project()
            if progress is not None:
                progress(it + 1)
        return
    optimizer = (torch.optim.SGD(unknowns, lr=settings.step) if settings.update == "normalized"
                 else torch.optim.Adam(unknowns, lr=settings.step))
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(n * f) for f in (3 / 8, 5 / 8, 7 / 8)], 0.1)
    for it in range(n):
        optimizer.zero_grad(set_to_none=True)
        evaluate().backward()
        for u in unknowns:
            if u.grad is None:
                continue
            if settings.update == "signed":
                u.grad.copy_(u.grad.sign())
            elif settings.update == "normalized":
                u.grad.div_(u.grad.abs().amax().clamp_min(1e-30))
        optimizer.step()
        schedule.step()
        project()
        if progress is not None:
            progress(it + 1)
