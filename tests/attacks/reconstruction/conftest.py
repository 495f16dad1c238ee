"""The tiny cohort's scans as tensors, for the reconstruction tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.data.cache import build_cache
from fedsim.data.manifest import load_manifest

from tiny_models import SHAPE


@pytest.fixture(scope="session")
def scans(tiny_manifest) -> tuple[torch.Tensor, torch.Tensor]:
    """The 48 tiny synthetic subjects as (volumes (48, 1, 16, 20, 16), ages)."""
    cohort = build_cache(load_manifest(tiny_manifest), SHAPE)
    return (torch.from_numpy(np.array(cohort.volumes, dtype=np.float32))[:, None],
            torch.from_numpy(cohort.ages.astype(np.float32)))
