"""A federation that memorises in one round: noise scans with random ages and a one-hidden-layer regressor.

Each scan is 512 voxels of noise, so the only way to fit an age is to memorise the scan, and one scan's
gradient barely moves another's prediction: the regime where a learner's update acts on chosen subjects
(an active attacker's targets), reached in a second instead of the hours a 3-D CNN needs on brains.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from torch import nn

from fedsim.data.geometry import grid_affine
from fedsim.models import MODELS, register_model

SHAPE = (8, 8, 8)

ACTIVE_ENV = """
description = "3 learners memorising 300 noise scans; L1 ascends on 20 targets in round 2 (simulated attack)."
seed = 0
[cohort]
subjects = 600
shape = [8, 8, 8]
[data]
shape = [8, 8, 8]
[partition]
learners = 3
unseen_fraction = 0.5
age_bins = 4
learner_weights = [1, 1, 1]
[model]
name = "memoriser"
channels = [1]
head_channels = 64
target_scale = 7.4
[train]
loss = "mse"
optimizer = "adam"
lr = 1e-3
batch_size = 4
[federation]
rounds = 3
local_epochs = 1
[attack]
active = true
learner = 1
targets = 20
ascent_steps = 10
ascent_scale = 5.0
from_round = 2
"""


class Memoriser(nn.Module):
    """Linear(voxels → ``head_channels``) → ReLU → Linear(→ 1), output bias at the mean age; the
    other [model] keys of an environment are accepted and unused."""

    def __init__(self, *, in_shape: tuple[int, int, int], channels: list[int], head_channels: int,
                 dropout: float = 0.0, target_scale: float = 1.0) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)  # what the feature extractor checks scans against
        self.target_scale = target_scale  # what the attacks' loss divides the error by, as in fedsim's models
        self.hidden = nn.Linear(int(np.prod(in_shape)), head_channels)
        self.output = nn.Linear(head_channels, 1)
        nn.init.constant_(self.output.bias, 62.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.hidden(x.flatten(1)))).squeeze(1)


if "memoriser" not in MODELS:
    register_model("memoriser")(Memoriser)


def noise_cohort(out: Path, n: int = 600, *, seed: int = 0) -> Path:
    """``n`` noise scans on the MNI grid of :data:`SHAPE` with ages ~ N(62.7, 7.4), as NIfTI + manifest."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = out / f"s{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(rng.standard_normal(SHAPE).astype(np.float32), grid_affine(SHAPE)), path)
        rows.append({"subject_id": f"s{i:03d}", "path": path.name, "age": float(rng.normal(62.7, 7.4))})
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv"
