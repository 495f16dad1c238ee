"""The app's model and data, in plain PyTorch and nibabel: nothing here is fedsim's.

Scans are read as stored (the cohort is already on the model's grid) and z-scored one by one; the
network regresses the z-scored age. Subjects are split by their position in the manifest: every
third is held out (never trained on), the others are dealt to the partitions in turn.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from torch import nn

AGE_MEAN, AGE_STD = 62.7, 7.4  # the training ages are z-scored with these


class AgeNet(nn.Module):
    """Two pooled 3-D conv blocks, global pooling, a hidden linear layer and one output."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.hidden = nn.Linear(2 * width, 16)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.features(x))))


def groups(manifest: str | Path, partitions: int) -> pd.DataFrame:
    """Who holds whom: ``subject_id, group`` with groups ``L1``… (partition-id + 1) and ``unseen``."""
    ids = pd.read_csv(manifest, dtype={"subject_id": str})["subject_id"]
    labels = [("unseen" if i % 3 == 2 else f"L{(i - i // 3) % partitions + 1}") for i in range(len(ids))]
    return pd.DataFrame({"subject_id": ids, "group": labels})


def load_partition(manifest: str | Path, partition_id: int, partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The scans (N, 1, D, H, W), z-scored, and ages of one partition."""
    table = pd.read_csv(manifest, dtype={"subject_id": str})
    mine = groups(manifest, partitions)["group"] == f"L{partition_id + 1}"
    scans = []
    for path in table.loc[mine, "path"]:
        volume = np.asarray(nib.load(Path(manifest).parent / path).dataobj, dtype=np.float32)
        scans.append((volume - volume.mean()) / volume.std())
    return torch.from_numpy(np.stack(scans))[:, None], torch.tensor(table.loc[mine, "age"].to_numpy(), dtype=torch.float32)


def scan_shape(manifest: str | Path) -> tuple[int, int, int]:
    """The grid of the cohort's scans, which the model takes as it is."""
    first = pd.read_csv(manifest)["path"].iloc[0]
    return tuple(int(s) for s in nib.load(Path(manifest).parent / first).shape[:3])


def train(model: nn.Module, scans: torch.Tensor, ages: torch.Tensor, *, epochs: int, lr: float) -> float:
    """Adam on the squared error of the z-scored age, full batch; returns the last loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    target = (ages - AGE_MEAN) / AGE_STD
    model.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = ((model(scans).squeeze(1) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
    return float(loss.detach())
