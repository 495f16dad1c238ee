"""SFCN, the Simple Fully Convolutional Network of Peng et al. 2021, with its own output and loss.

Peng, Gong, Beckmann, Vedaldi & Smith, "Accurate brain age prediction with lightweight deep neural
networks", Medical Image Analysis 68 (2021); reference code ``ha-ha-ha-han/UKBiobank_deep_pretrain``
(``dp_model/model_files/sfcn.py``, ``dp_model/dp_utils.py``). SFCN does not regress the age: it
predicts a distribution over age bins, is trained with the KL divergence to a Gaussian soft label
(Peng's ``num2vect``), and its brain age is the distribution's expectation. So it is a
:class:`fedsim.training.OwnOutput`, and training, evaluation and the attacks use its loss and
prediction instead of a squared error. No weights are shipped or downloaded; a user's own SFCN
checkpoint loads through :func:`from_reference_state_dict`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fedsim.errors import FedsimError
from fedsim.models import register_model
from fedsim.models.blocks import check_in_shape, finite_real, positive_int

#: SFCN has at most five pooled blocks before its 1x1x1 block, as in the paper.
MAX_POOLED = 5
#: Peng et al.'s UK Biobank bins (years): 40 bins of 1 year.
DEFAULT_AGE_RANGE = (42.0, 82.0)


def bin_centres(age_range: Sequence[float], bin_step: float) -> torch.Tensor:
    """The centres (years, float64) of the age bins ``[lo, lo + step), …, [hi - step, hi)``.

    Raises FedsimError unless ``hi - lo`` is a positive whole number of steps (Peng's condition)
    giving at least two bins: one bin predicts a constant.
    """
    if isinstance(age_range, (str, bytes)) or len(age_range) != 2:
        raise FedsimError(f"age_range must be two ages [lo, hi] in years, got {age_range!r}")
    lo, hi = (finite_real("age_range", a) for a in age_range)
    step = finite_real("bin_step", bin_step)
    count = (hi - lo) / step if step > 0 else 0.0
    if not (count >= 2 and math.isclose(count, round(count), abs_tol=1e-9)):
        raise FedsimError(
            f"age_range {[lo, hi]} must span a whole number (at least 2) of bin_step {step!r} bins, e.g. [42, 82] and 1"
        )
    return lo + step * (0.5 + torch.arange(round(count), dtype=torch.float64))


def soft_labels(age: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """Peng's soft label: the mass of N(age, sigma²) in each bin, shape (B, bins), rows summing to 1.

    Unlike ``num2vect`` the mass beyond the outer bins is renormalised onto the bins (so the label is a
    distribution and the KL divergence is one), and an age outside the range is taken as the nearest
    edge (the expectation over bins cannot leave the range either).
    """
    half = (centres[1] - centres[0]) / 2
    lo, hi = centres[0] - half, centres[-1] + half
    age = age.to(centres.dtype).clamp(lo, hi)[:, None]
    edges = torch.cat([centres - half, centres[-1:] + half])
    cdf = 0.5 * (1 + torch.erf((edges - age) / (sigma * math.sqrt(2))))
    mass = cdf[:, 1:] - cdf[:, :-1]
    return mass / mass.sum(dim=1, keepdim=True)


@register_model("sfcn")
class SFCN(nn.Module):
    """Pooled 3x3x3 conv blocks (BatchNorm), a 1x1x1 ``conv6`` block with the average pool, and a
    1x1x1 ``output`` conv to one log-probability per age bin.

    At the defaults this is Peng et al.'s net at its input 160x192x160 (2,952,936 parameters, 40 bins
    of 42-82 years). Layers are named as in fedsim's other nets (``conv1`` … ``conv5``, ``conv6``,
    ``output``), so the gradient and activation features of the attacks address the same layers;
    :func:`from_reference_state_dict` maps the reference code's names onto them.

    Parameters
    ----------
    in_shape
        Volume size (D, H, W). Every side must survive the poolings, and the map they leave must have
        more than one voxel (BatchNorm in training needs more than one value per channel, also for a
        batch of one scan); the average pool covers that map (Peng's [5, 6, 5] at 160x192x160).
    channels
        Output channels of the pooled blocks ``conv1`` … ``convK``, 1 <= K <= 5 (Peng: 32, 64, 128, 256, 256).
    head_channels
        Output channels of the 1x1x1 block ``conv6`` (Peng: 64).
    dropout
        Dropout probability before ``output`` (Peng: 0.5); 0 disables it.
    age_range, bin_step
        The age bins ``[lo, hi)`` in steps of ``bin_step`` years (Peng, UK Biobank: 42-82 by 1, 40 bins).
    label_sigma
        Standard deviation (years) of the Gaussian soft label (Peng: 1).
    target_scale
        Accepted so that a [model] table's default reaches every model alike; SFCN's output is bins, not
        a scaled age, so only 1 is allowed.
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int] = (160, 192, 160),
        channels: Sequence[int] = (32, 64, 128, 256, 256),
        head_channels: int = 64,
        dropout: float = 0.5,
        age_range: Sequence[float] = DEFAULT_AGE_RANGE,
        bin_step: float = 1.0,
        label_sigma: float = 1.0,
        target_scale: float = 1.0,
    ):
        shape = check_in_shape(in_shape)
        if isinstance(channels, (str, bytes)) or not 1 <= len(channels) <= MAX_POOLED:
            raise FedsimError(f"channels must list 1 to {MAX_POOLED} positive integers (one per pooled block), got {channels!r}")
        block_channels = [positive_int("channels", c) for c in channels]
        head = positive_int("head_channels", head_channels)
        if not 0 <= finite_real("dropout", dropout) < 1:
            raise FedsimError(f"dropout must be in [0, 1), got {dropout!r}")
        if finite_real("target_scale", target_scale) != 1:
            raise FedsimError(f"SFCN predicts age bins, not a scaled age: target_scale must be 1, got {target_scale!r}")
        if not finite_real("label_sigma", label_sigma) > 0:
            raise FedsimError(f"label_sigma must be a positive number of years, got {label_sigma!r}")
        centres = bin_centres(age_range, bin_step)
        pooled = len(block_channels)
        final = tuple(s // 2**pooled for s in shape)
        if min(final) < 1 or math.prod(final) < 2:
            fewer = next((k for k in range(pooled - 1, 0, -1)
                          if math.prod(s // 2**k for s in shape) > 1 and min(s // 2**k for s in shape) >= 1), None)
            fix = f"at most {fewer} pooled blocks (channels of length {fewer}) or " if fewer else ""
            raise FedsimError(
                f"in_shape {shape} is too small for {pooled} pooled blocks: they leave {'x'.join(map(str, final))} "
                f"voxels and BatchNorm needs more than one; use {fix}a volume of at least {2 ** (pooled + 1)} voxels per side"
            )
        super().__init__()
        self.in_shape = shape
        self.label_sigma = float(label_sigma)
        self.register_buffer("centres", centres.float(), persistent=False)
        in_channels = 1
        for i, out_channels in enumerate(block_channels, start=1):
            self.add_module(f"conv{i}", nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.BatchNorm3d(out_channels),
                nn.MaxPool3d(2, stride=2),
                nn.ReLU(),
            ))
            in_channels = out_channels
        self.conv6 = nn.Sequential(
            nn.Conv3d(in_channels, head, kernel_size=1, padding=0),
            nn.BatchNorm3d(head),
            nn.ReLU(),
            nn.AvgPool3d(final),
        )
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output = nn.Conv3d(head, len(centres), kernel_size=1, padding=0)
        self.n_pooled = pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the age bins: (B, 1, D, H, W) -> (B, bins)."""
        for i in range(1, self.n_pooled + 1):
            x = getattr(self, f"conv{i}")(x)
        logits = self.output(self.drop(self.conv6(x))).reshape(len(x), -1)
        return torch.log_softmax(logits, dim=1)

    def output_loss(self, output: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """Each scan's KL divergence from its soft label to the predicted bins (Peng's ``my_KLDivLoss``
        is its batch mean)."""
        target = soft_labels(age, self.centres.double(), self.label_sigma).to(output.dtype)
        return nn.functional.kl_div(output, target, reduction="none").sum(dim=1)

    def output_ages(self, output: torch.Tensor) -> torch.Tensor:
        """The brain age: the expected bin centre under the predicted distribution."""
        return output.exp() @ self.centres.to(output.dtype)


def check_cohort_ages(ages: np.ndarray, age_range: Sequence[float] | None) -> None:
    """Raise FedsimError if a cohort's ages leave the bins ``age_range`` (default :data:`DEFAULT_AGE_RANGE`):
    SFCN would train those subjects on the edge bin and could never predict their age."""
    lo, hi = age_range or DEFAULT_AGE_RANGE
    young, old = float(np.min(ages)), float(np.max(ages))
    if young < lo or old > hi:
        raise FedsimError(
            f"the cohort's ages {young:.1f}-{old:.1f} leave SFCN's age bins {lo:g}-{hi:g}; "
            f"set [model] age_range to cover them, e.g. [{math.floor(young)}, {math.ceil(old)}]"
        )


def from_reference_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of the reference code's ``SFCN`` (``feature_extractor.conv_<i>``, ``classifier.conv_<n>``,
    with or without ``DataParallel``'s ``module.`` prefix) renamed for :class:`SFCN`.

    The reference's last feature block (``conv_<K>``, 1x1x1) becomes ``conv6`` and its classifier conv
    ``output``, whatever K is; the arrays are unchanged.
    """
    names = {re.sub(r"^module\.", "", k) for k in state}
    blocks = sorted({int(m.group(1)) for k in names if (m := re.match(r"feature_extractor\.conv_(\d+)\.", k))})
    if not blocks:
        raise FedsimError("not a reference SFCN state dict: it has no 'feature_extractor.conv_<i>' entries")
    last = blocks[-1]
    out = {}
    for key, value in state.items():
        name = re.sub(r"^module\.", "", key)
        feature = re.match(r"feature_extractor\.conv_(\d+)\.(.+)", name)
        head = re.match(r"classifier\.conv_\d+\.(.+)", name)
        if feature:
            i = int(feature.group(1))
            out[f"{'conv6' if i == last else f'conv{i + 1}'}.{feature.group(2)}"] = value
        elif head:
            out[f"output.{head.group(1)}"] = value
        else:
            raise FedsimError(f"unexpected entry {key!r} in a reference SFCN state dict")
    return out
