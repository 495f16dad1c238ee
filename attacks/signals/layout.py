"""Where each part of a feature set sits in its assembled matrix, so a classifier can treat it by kind.

:func:`feature_layout` gives one :class:`Block` per part of a spec, in :func:`attacks.signals.features.assemble`
order: a per-sample gradient of a layer whose parameters lead with the output filters becomes one
row per filter (what :class:`attacks.membership.nets.GradientConvAttack` pools over), anything else
a plain vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attacks.signals.features import compute_features, parse_features
from fedsim.models import layer_parameters

__all__ = ["Block", "feature_layout"]


@dataclass(frozen=True)
class Block:
    """Where one part of a spec sits in the assembled matrix, so a classifier can treat it by kind.

    ``width`` is the part's column count. A ``grad:<layer>`` part whose parameters all lead with
    the layer's output filters (weight (out, in, *kernel), bias (out,)) also has ``filters = out``
    and ``segments``: for each parameter in flattening order, its columns per filter
    (in·prod(kernel), then 1 for the bias). Any other part has ``filters = 0``.
    """

    name: str
    width: int
    filters: int = 0
    segments: tuple[int, ...] = ()

    @property
    def per_filter(self) -> int:
        """Columns per output filter (0 for a part that is not a per-filter gradient)."""
        return sum(self.segments)

    def filter_rows(self, x: torch.Tensor) -> torch.Tensor:
        """This part's columns (N, width) as one gradient row per output filter: (N, filters, per_filter).

        Each parameter's gradient is flattened whole (filter-major, as ``reshape`` lays it out) before
        the next parameter's, so a filter's weights and its bias are ``filters`` columns apart.
        """
        if not self.filters:
            raise ValueError(f"feature {self.name!r} is not a per-filter gradient; it has no filter rows")
        pieces = x.split([self.filters * s for s in self.segments], dim=1)
        return torch.cat([p.reshape(len(x), self.filters, s) for p, s in zip(pieces, self.segments)], dim=2)


def _grad_block(model: nn.Module, name: str, layer: str) -> Block:
    params = dict(model.named_parameters())
    shapes = [tuple(params[p].shape) for p in layer_parameters(model)[layer]]
    width = sum(math.prod(shape) for shape in shapes)
    if any(not shape or shape[0] != shapes[0][0] for shape in shapes):
        return Block(name, width)  # no common filter axis: a plain vector
    return Block(name, width, shapes[0][0], tuple(math.prod(shape[1:]) for shape in shapes))


def feature_layout(spec: str | Sequence[str], model: nn.Module) -> tuple[Block, ...]:
    """The :class:`Block` of each part of ``spec``, in :func:`assemble` order, for ``model``.

    Gradient widths come from the parameter shapes; ``grad_norm`` has one column per
    parameterised layer; the other features are measured on one all-zero volume
    (a forward pass, no gradients), so any registered feature gets its true width.
    """
    names = parse_features(spec, model)
    table = layer_parameters(model)
    probed = [n for n in names if n != "grad_norm" and not n.startswith("grad:")]
    widths = {}
    if probed:
        probe = torch.zeros(1, 1, *model.in_shape)
        widths = {n: v.shape[1] for n, v in compute_features(model, probe, probed, ages=[0.0]).items()}
    blocks = []
    for name in names:
        if name.startswith("grad:"):
            blocks.append(_grad_block(model, name, name.partition(":")[2]))
        else:
            blocks.append(Block(name, len(table) if name == "grad_norm" else widths[name]))
    return tuple(blocks)
