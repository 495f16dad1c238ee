"""The 3D CNN brain-age regressor of Gupta et al. 2021 (the paper's baseline).

Reference: ``umgupta/2d-slice-set-networks``, ``src/arch/brain_age_3d.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedsim.models import register_model
from fedsim.models.blocks import ConvStack, check_in_shape


@register_model("cnn3d")
class BrainAgeCNN3D(ConvStack):
    """Five pooled 3x3x3 conv blocks, a 1x1x1 ``conv6`` head, and a 1x1x1 ``output`` conv.

    At the defaults this is the paper's net (2,948,801 parameters). The paper
    average-pools with kernel (2, 3, 2), which at 91x109x91 is the global
    average pool used here; global pooling keeps smaller volumes working.

    Parameters
    ----------
    in_shape
        Volume size (D, H, W); checked so that every InstanceNorm sees more than one voxel.
    channels
        Output channels of ``conv1`` … ``convK``, 1 <= K <= 5.
    head_channels
        Output channels of ``conv6``.
    width
        Multiplier on every conv's channels, ``max(1, round(c * width))``.
    dropout
        Dropout3d probability before ``output``; 0 disables it.
    age_mean
        Initial prediction in years (``output.bias = age_mean / target_scale``).
    target_scale
        Years per output unit; predictions are ``target_scale * output``.
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int] = (91, 109, 91),
        channels: Sequence[int] = (32, 64, 128, 256, 256),
        head_channels: int = 64,
        width: float = 1.0,
        dropout: float = 0.5,
        age_mean: float = 62.68,
        target_scale: float = 1.0,
    ):
        shape = check_in_shape(in_shape)
        super().__init__(
            dims=3,
            spatial=shape,
            what=f"in_shape {shape}",
            channels=channels,
            head_channels=head_channels,
            width=width,
            dropout=dropout,
            age_mean=age_mean,
            target_scale=target_scale,
        )
        self.in_shape = shape
        self.output = nn.Conv3d(self.head_channels, 1, kernel_size=1, stride=1)
        self.init_output_bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict ages in years: (B, 1, D, H, W) -> (B,)."""
        return self.to_years(self.output(self.features(x)))
