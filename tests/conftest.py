"""Shared fixtures: an isolated FEDSIM_HOME and one tiny synthetic cohort per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim.cli import centralized
from fedsim.data.cohort import CohortSpec, write_cohort

TINY_SHAPE = (16, 20, 16)

# Tiny models gain nothing from intra-op threads, and two spinning OpenMP pools on a 2-core box
# (tests + Ray actors) slow everything down many times over.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def fedsim_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep generated cohorts and caches out of the user's ~/.cache."""
    home = tmp_path_factory.mktemp("fedsim-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("FEDSIM_HOME", str(home))
    yield home
    mp.undo()


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic subjects at 16x20x16, written as real NIfTI files."""
    return write_cohort(CohortSpec(48, TINY_SHAPE, seed=0), tmp_path_factory.mktemp("cohort") / "tiny")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_manifest: Path) -> Path:
    """A 2-epoch tiny-centralized run, one per test module (attack tests write their results into it)."""
    out = tmp_path_factory.mktemp("centralized") / "run"
    centralized.main(["--env", "tiny-centralized", "--cohort", str(tiny_manifest), "--out", str(out), "--epochs", "2"])
    return out
