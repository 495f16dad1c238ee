"""A tiny linear-then-conv regressor: its first linear layer's weight gradient is ``delta x^T``, so a single
scan's gradient determines the scan (the case gradient inversion must solve)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SHAPE = (16, 20, 16)


class LinearThenConv(nn.Module):
    def __init__(self, shape=SHAPE, hidden: int = 64) -> None:
        super().__init__()
        self.lin = nn.Linear(int(np.prod(shape)), hidden)
        self.conv = nn.Conv3d(1, 4, 3)
        self.output = nn.Linear(4 * 2 * 2 * 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.lin(x.flatten(1))).view(-1, 1, 4, 4, 4)
        return self.output(torch.relu(self.conv(h)).flatten(1)).squeeze(1) + 60.0
