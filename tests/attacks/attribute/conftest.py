"""The attribute tests' cohort: tiny scans that carry sex, at two sites."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.data.cohort import CohortSpec, write_cohort

from attribute_runs import SEXED
from tiny_models import SHAPE


@pytest.fixture(scope="session")
def sexed_manifest(tmp_path_factory) -> Path:
    """96 subjects at 16x20x16 with strong sex effects and two sites."""
    return write_cohort(CohortSpec(96, SHAPE, seed=0, anatomy=SEXED, sites=2), tmp_path_factory.mktemp("sexed") / "cohort")
