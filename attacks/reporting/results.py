"""Results files that several commands add to: a later command replaces only the rows it redid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim import snapshots

__all__ = ["merge_rows"]


def merge_rows(path: Path, rows: Sequence[Mapping[str, Any]] | pd.DataFrame, keys: Sequence[str],
               dtype: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """``rows`` plus the rows already in the CSV ``path`` of the settings (``keys``) the new rows do not
    redo, written back atomically; returns the merged table."""
    new = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path, dtype=dtype, keep_default_na=False)
        old = old.assign(**{k: "" for k in keys if k not in old})  # a file from before a key existed
        redone = set(map(tuple, new[list(keys)].astype(str).to_numpy()))
        kept = [tuple(r) not in redone for r in old[list(keys)].astype(str).to_numpy()]
        new = pd.concat([old[kept], new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshots.atomic_write(path, lambda tmp: new.to_csv(tmp, index=False))
    return new
