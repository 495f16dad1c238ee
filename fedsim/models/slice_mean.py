"""The 2D slice-set brain-age regressor of Gupta et al. 2021 with mean aggregation.

Reference: ``umgupta/2d-slice-set-networks``, ``src/arch/brain_age_slice_set.py``
(class ``MRI_ATTN`` with ``agg_fn="mean"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedsim.errors import FedsimError
from fedsim.models import register_model
from fedsim.models.blocks import ConvStack, check_in_shape, positive_int


@register_model("slice_mean2d")
class SliceMean2D(ConvStack):
    """A shared 2D encoder applied to every slice, averaged over slices, then an MLP.

    Each slice becomes an ``embed_dim`` vector (``conv1`` … ``convK``, ``conv6``,
    ``drop``, ``proj``); the mean over slices makes the prediction independent of
    slice order, which is what distinguishes a slice *set* from a slice stack.
    At the defaults this is the paper's net (998,625 parameters).

    Parameters
    ----------
    in_shape
        Volume size (D, H, W); the slice shape (the other two sides) is checked so
        that every InstanceNorm sees more than one pixel.
    channels
        Output channels of ``conv1`` … ``convK``, 1 <= K <= 5.
    head_channels
        Output channels of ``conv6``.
    embed_dim
        Size of each slice's embedding (output of ``proj``).
    hidden
        Width of ``hidden_layer``.
    width
        Multiplier on every conv's channels (not on ``embed_dim`` or ``hidden``).
    dropout
        Dropout probability before ``proj``; 0 disables it.
    age_mean
        Initial prediction in years (``output.bias = age_mean / target_scale``).
    target_scale
        Years per output unit; predictions are ``target_scale * output``.
    slice_axis
        Spatial axis (0, 1, 2 of D, H, W) to cut along; 0 (sagittal) as in the paper.
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int] = (91, 109, 91),
        channels: Sequence[int] = (32, 64, 128, 256, 256),
        head_channels: int = 64,
        embed_dim: int = 32,
        hidden: int = 64,
        width: float = 1.0,
        dropout: float = 0.5,
        age_mean: float = 62.68,
        target_scale: float = 1.0,
        slice_axis: int = 0,
    ):
        shape = check_in_shape(in_shape)
        if slice_axis not in (0, 1, 2):
            raise FedsimError(
                f"slice_axis must be 0, 1 or 2 (an axis of D, H, W), got {slice_axis!r}"
            )
        slice_shape = tuple(s for axis, s in enumerate(shape) if axis != slice_axis)
        super().__init__(
            dims=2,
            spatial=slice_shape,
            what=f"slice shape {slice_shape} (in_shape {shape} cut along axis {slice_axis})",
            channels=channels,
            head_channels=head_channels,
            width=width,
            dropout=dropout,
            age_mean=age_mean,
            target_scale=target_scale,
        )
        self.in_shape = shape
        self.slice_axis = slice_axis
        embed_dim = positive_int("embed_dim", embed_dim)
        hidden = positive_int("hidden", hidden)
        self.proj = nn.Conv2d(self.head_channels, embed_dim, kernel_size=1)
        self.hidden_layer = nn.Linear(embed_dim, hidden)
        self.output = nn.Linear(hidden, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        """Initialise as the reference code does (its ``init_weights``)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.hidden_layer.weight, 0.0, 0.01)
        nn.init.zeros_(self.hidden_layer.bias)
        self.init_output_bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict ages in years: (B, 1, D, H, W) -> (B,)."""
        batch = x.shape[0]
        # (B, 1, D, H, W) -> (B, S, 1, h, w) -> (B*S, 1, h, w): one 2D image per slice.
        slices = x.movedim(2 + self.slice_axis, 1)
        slices = slices.reshape(-1, 1, *slices.shape[3:])
        embedding = self.proj(self.features(slices)).reshape(batch, -1, self.proj.out_channels)
        pooled = embedding.mean(dim=1)
        return self.to_years(self.output(torch.relu(self.hidden_layer(pooled))))
