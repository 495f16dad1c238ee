"""Where fedsim keeps what it generates once and reuses: synthetic cohorts and preprocessing caches."""

from __future__ import annotations

import os
from pathlib import Path


def fedsim_home() -> Path:
    """``$FEDSIM_HOME``, else ``~/.cache/fedsim``; tests point it at a temporary directory."""
    return Path(os.environ.get("FEDSIM_HOME") or Path.home() / ".cache" / "fedsim")
