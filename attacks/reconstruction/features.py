"""Feature inversion: the holder of one layer's activations of a scan reconstructs the scan.

This is the collaborative-inference setting of Nguyen, Wu et al. (2020): an edge device sends a layer's
output to a server. Two attackers: a white-box one who knows the model up to that layer and optimises a
volume whose activations match (under the 3-D TV prior, :mod:`attacks.reconstruction.optimize`), and a
learned one who trains an inverse network (activations -> scan) on its own subjects' scans and applies
it to the victim's activations (model access is then only through the activations it collected).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from attacks.reconstruction.optimize import Inversion, invert
from fedsim.models import get_layer

__all__ = ["InverseNet", "activations", "fit_inverse", "invert_activations"]


def activations(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The full output of ``layer`` (a top-level child, e.g. ``conv2``) for ``x``, with its graph."""
    seen: list[torch.Tensor] = []
    handle = get_layer(model, layer).register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[0]


def invert_activations(model: nn.Module, layer: str, target: torch.Tensor, init: torch.Tensor, *,
                       settings: Inversion = Inversion(), bounds: tuple[float, float] | None = None,
                       progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """White-box: scans whose ``layer`` activations match ``target`` (relative squared error), from ``init``."""
    model = model.eval()
    target = target.detach()
    norm = (target ** 2).sum().clamp_min(1e-12)

    def fit(x: torch.Tensor, _extra: list[torch.Tensor]) -> torch.Tensor:
        return ((activations(model, layer, x) - target) ** 2).sum() / norm

    return invert(fit, init, settings=settings, bounds=bounds, progress=progress).x


class InverseNet(nn.Module):
    """Activations of one layer -> a volume: a 1x1 conv (or, for pooled activations, a linear map onto a
    coarse grid), trilinear upsampling in two stages, 3x3x3 convs in between."""

    def __init__(self, act_shape: Sequence[int], out_shape: Sequence[int], hidden: int = 16) -> None:
        super().__init__()
        channels, *spatial = act_shape
        self.out_shape = tuple(out_shape)
        self.half = tuple(max(1, s // 2) for s in out_shape)
        if math.prod(spatial) == 1:  # a pooled vector (conv6): spread it over a coarse grid
            self.coarse = tuple(max(1, s // 8) for s in out_shape)
            self.enter = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden * math.prod(self.coarse)),
                                       nn.Unflatten(1, (hidden, *self.coarse)))
        else:
            self.enter = nn.Conv3d(channels, hidden, kernel_size=1)
        self.mid = nn.Sequential(nn.ReLU(), nn.Conv3d(hidden, hidden, 3, padding=1), nn.ReLU())
        self.out = nn.Sequential(nn.Conv3d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.Conv3d(hidden, 1, 3, padding=1))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.mid(nn.functional.interpolate(self.enter(a), size=self.half, mode="trilinear"))
        return self.out(nn.functional.interpolate(h, size=self.out_shape, mode="trilinear"))


def fit_inverse(acts: torch.Tensor, volumes: torch.Tensor, *, epochs: int = 40, batch_size: int = 8, lr: float = 1e-3,
                seed: int = 0, progress: Callable[[int, int], None] | None = None) -> InverseNet:
    """Train an :class:`InverseNet` on the attacker's own (activations, scan) pairs (MSE)."""
    torch.manual_seed(seed)
    net = InverseNet(acts.shape[1:], volumes.shape[2:]).to(acts.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    order = np.random.default_rng(seed)
    for epoch in range(epochs):
        for idx in np.array_split(order.permutation(len(acts)), max(1, len(acts) // batch_size)):
            idx = torch.from_numpy(idx).to(acts.device)
            optimizer.zero_grad(set_to_none=True)
            nn.functional.mse_loss(net(acts[idx]), volumes[idx]).backward()
            optimizer.step()
        if progress is not None:
            progress(epoch + 1, epochs)
    return net.eval()
