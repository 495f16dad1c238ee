"""Pieces shared by the 3D CNN and the 2D slice-mean net of Gupta et al. 2021.

Both nets are the same conv stack (``conv1`` … ``convK``, ``conv6``, ``drop``);
they differ only in spatial dimensionality and in what happens after ``drop``.
Keeping the stack, its argument checks and its input-size check here means the
two nets cannot drift apart.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from fedsim.errors import FedsimError

#: The paper's stack has five pooled conv blocks; ``conv6`` is the 1x1 head conv.
MAX_BLOCKS = 5

# Layer classes per spatial dimensionality: conv, instance norm, max pool,
# global average pool, dropout (the reference code uses Dropout3d in 3D and plain
# Dropout in the slice net).
_LAYERS: dict[int, tuple[type[nn.Module], ...]] = {
    2: (nn.Conv2d, nn.InstanceNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Dropout),
    3: (nn.Conv3d, nn.InstanceNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d, nn.Dropout3d),
}


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int, or raise FedsimError if it is not a positive integer.

    Sizes usually come from config files, so the message names the key.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise FedsimError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def finite_real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise FedsimError if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise FedsimError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _sizes(name: str, value: object) -> tuple[int, ...]:
    """Return a list-like of sizes as a tuple of positive ints (config files give lists)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise FedsimError(f"{name} must be a list of positive integers, got {value!r}")
    return tuple(positive_int(name, v) for v in value)


def check_in_shape(in_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``in_shape`` as a tuple of three positive ints (D, H, W).

    The nets store a tuple so that it can be compared and printed.
    """
    sizes = _sizes("in_shape", in_shape)
    if len(sizes) != 3:
        raise FedsimError(f"in_shape must have three sizes (D, H, W), got {sizes!r}")
    d, h, w = sizes
    return d, h, w


def _scaled_channels(
    channels: Sequence[int], head_channels: int, width: float
) -> tuple[list[int], int]:
    """Check the channel arguments and apply the ``width`` multiplier.

    ``width`` shrinks (or grows) every conv, including the ``conv6`` head, so a
    CPU profile can keep the paper's topology at a fraction of its cost; each
    count is ``max(1, round(c * width))``.
    """
    channels = _sizes("channels", channels)
    if not 1 <= len(channels) <= MAX_BLOCKS:
        raise FedsimError(
            f"channels must have 1 to {MAX_BLOCKS} entries (one per conv block), "
            f"got {len(channels)}"
        )
    if not finite_real("width", width) > 0:
        raise FedsimError(f"width must be positive, got {width!r}")
    positive_int("head_channels", head_channels)
    return [max(1, round(c * width)) for c in channels], max(1, round(head_channels * width))


def _check_scalars(dropout: float, target_scale: float) -> None:
    """Reject a dropout outside [0, 1) and a non-positive ``target_scale``."""
    if not 0 <= finite_real("dropout", dropout) < 1:
        raise FedsimError(f"dropout must be in [0, 1), got {dropout!r}")
    if not finite_real("target_scale", target_scale) > 0:
        raise FedsimError(f"target_scale must be positive, got {target_scale!r}")


def _fits(spatial: Sequence[int], n_blocks: int) -> bool:
    """Whether ``n_blocks`` pooled blocks plus ``conv6`` can run on ``spatial``.

    Every MaxPool needs each side >= 2 (a side of 1 pools to 0), which also gives
    each block's InstanceNorm more than one element; ``conv6``'s InstanceNorm then
    needs more than one element after the last pooling.
    """
    if any(s < 2**n_blocks for s in spatial):
        return False
    return math.prod(s // 2**n_blocks for s in spatial) > 1


def _check_spatial(spatial: Sequence[int], n_blocks: int, what: str) -> None:
    """Raise FedsimError if ``spatial`` is too small for ``n_blocks`` poolings.

    PyTorch would otherwise fail mid-forward with an InstanceNorm or MaxPool
    error that does not say which setting to change; this one says which.
    """
    if _fits(spatial, n_blocks):
        return
    unit = "voxel" if len(spatial) == 3 else "pixel"
    after = "x".join(str(s // 2**n_blocks) for s in spatial)
    best = max((k for k in range(n_blocks) if _fits(spatial, k)), default=0)
    thing = "volume" if len(spatial) == 3 else "slice"
    fix = f"a {thing} of at least {2 ** (n_blocks + 1)} {unit}s per side"
    if best > 0:
        fix = f"at most {best} blocks (channels of length {best}) or {fix}"
    raise FedsimError(
        f"{what} is too small for {n_blocks} blocks: after {n_blocks} poolings it is "
        f"{after} and InstanceNorm needs more than one {unit}; use {fix}"
    )


class ConvStack(nn.Module):
    """``conv1`` … ``convK``, ``conv6`` and ``drop`` of the paper, in 2D or 3D.

    The layers are direct children with the paper's names so that attacks can
    address them (``conv6`` keeps its name whatever K is). Subclasses check and
    pass their arguments here, add the layers after ``drop`` (the last one named
    ``output``), call :meth:`init_output_bias`, and use :meth:`features` and
    :meth:`to_years` in ``forward``.

    Parameters
    ----------
    dims
        2 for slices, 3 for volumes.
    spatial
        The size one input to the stack has (the volume, or one slice).
    what
        How to name ``spatial`` in a too-small error.
    channels, head_channels, width, dropout, age_mean, target_scale
        As in the nets' constructors.
    """

    def __init__(
        self,
        *,
        dims: int,
        spatial: Sequence[int],
        what: str,
        channels: Sequence[int],
        head_channels: int,
        width: float,
        dropout: float,
        age_mean: float,
        target_scale: float,
    ):
        block_channels, head = _scaled_channels(channels, head_channels, width)
        _check_scalars(dropout, target_scale)
        _check_spatial(spatial, len(block_channels), what)
        super().__init__()
        self.age_mean = finite_real("age_mean", age_mean)
        self.n_blocks = len(block_channels)
        self.head_channels = head
        self.target_scale = float(target_scale)
        conv, norm, pool, global_pool, drop = _LAYERS[dims]
        in_channels = 1
        for i, out_channels in enumerate(block_channels, start=1):
            block = nn.Sequential(
                conv(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
                norm(out_channels),
                pool(2, stride=2),
                nn.ReLU(),
            )
            self.add_module(f"conv{i}", block)
            in_channels = out_channels
        self.conv6 = nn.Sequential(
            conv(in_channels, head, kernel_size=1, stride=1), norm(head), nn.ReLU(), global_pool(1)
        )
        self.drop = drop(dropout) if dropout > 0 else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Run the stack: (N, 1, *spatial) -> (N, head, 1, ...)."""
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"conv{i}")(x)
        return self.drop(self.conv6(x))

    def init_output_bias(self) -> None:
        """Set ``output.bias`` so that the initial prediction is about ``age_mean`` years.

        Without it the net starts near 0 years and spends its first steps learning the mean.
        """
        nn.init.constant_(self.output.bias, self.age_mean / self.target_scale)

    def to_years(self, output: torch.Tensor) -> torch.Tensor:
        """Turn the (B, 1, ...) output layer result into (B,) ages in years.

        The output layer regresses age / ``target_scale`` so that a CPU profile
        can train on a roughly unit-scale target while predictions stay in years.
        """
        return self.target_scale * output.reshape(-1)
