"""The partition as a file: one row per subject (``subject_id, age, age_bin, group``), built from
:func:`fedsim.data.partition.assign_groups`, written as ``partitions.csv`` and read back checked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.data.partition import age_bins
from fedsim.errors import FedsimError

PARTITIONS_FILENAME = "partitions.csv"
PARTITION_COLUMNS = ("subject_id", "age", "age_bin", "group")


def partition_table(subject_ids: Sequence[str], ages: np.ndarray, groups: np.ndarray, n_bins: int) -> pd.DataFrame:
    """The partition as a table, one row per subject, for ``partitions.csv`` and the plot.

    Parameters
    ----------
    subject_ids
        Unique subject identifiers.
    ages
        Age in years per subject (the same ages given to :func:`assign_groups`).
    groups
        Labels from :func:`assign_groups`.
    n_bins
        Number of age bins (the same as given to :func:`assign_groups`).

    Returns
    -------
    pd.DataFrame
        Columns ``subject_id, age, age_bin, group``.

    Raises
    ------
    FedsimError
        If the three sequences differ in length or a subject id repeats.
    """
    ids = [str(s) for s in subject_ids]
    ages = np.asarray(ages, dtype=float)
    groups = np.asarray(groups, dtype=str)
    if not len(ids) == ages.size == groups.size:
        raise FedsimError(
            f"partition_table got {len(ids)} subject_ids, {ages.size} ages and {groups.size} groups; "
            "pass one of each per subject"
        )
    duplicated = pd.Index(ids)[pd.Index(ids).duplicated()]
    if len(duplicated):
        raise FedsimError(f"subject_id {duplicated[0]!r} appears more than once; give every subject a unique id")
    return pd.DataFrame(
        {"subject_id": ids, "age": ages, "age_bin": age_bins(ages, n_bins), "group": groups},
        columns=list(PARTITION_COLUMNS),
    )


def write_partitions(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a :func:`partition_table` to CSV (conventionally ``PARTITIONS_FILENAME`` in the run folder).

    Creates the folder if needed.

    Returns the path written, so callers can log it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.loc[:, list(PARTITION_COLUMNS)].to_csv(path, index=False)
    return path


def read_partitions(path: str | Path) -> pd.DataFrame:
    """Read a ``partitions.csv`` written by :func:`write_partitions`, checking its columns.

    Raises
    ------
    FedsimError
        If the file is missing, empty, lacks a column, or has a non-numeric age or age bin.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"subject_id": str, "group": str}, keep_default_na=False)
    except FileNotFoundError:
        raise FedsimError(f"{path} does not exist; run the partition step first or check the path") from None
    except pd.errors.EmptyDataError:
        raise FedsimError(f"{path} is empty; regenerate it with the partition step") from None
    missing = [c for c in PARTITION_COLUMNS if c not in df.columns]
    if missing:
        raise FedsimError(
            f"{path} lacks column(s) {', '.join(missing)}; a partitions file needs {', '.join(PARTITION_COLUMNS)}"
        )
    for column in ("age", "age_bin"):
        values = pd.to_numeric(df[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            raise FedsimError(
                f"{path} row {bad[0] + 2} has {column}={df[column].iloc[bad[0]]!r}, not a number; "
                "fix or regenerate the file"
            )
        df[column] = values
    df["age_bin"] = df["age_bin"].astype(int)
    return df.loc[:, list(PARTITION_COLUMNS)]
