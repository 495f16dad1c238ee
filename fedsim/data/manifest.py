"""The one input format: a CSV of ``subject_id,path,age`` (+ optional ``sex,site``).

Paths are relative to the manifest. Every problem is reported as one sentence naming the file
and the CSV line, so a user with thousands of rows finds the bad one at once.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fedsim.errors import FedsimError

REQUIRED_COLUMNS = ("subject_id", "path", "age")


def load_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest; ``path`` in the result is absolute.

    Raises
    ------
    FedsimError
        For a missing or empty file, missing columns, duplicate ``subject_id``, an age that is
        not a positive number, or an image file that does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FedsimError(f"manifest {str(path)!r} not found")
    try:
        df = pd.read_csv(path, dtype={"subject_id": str, "path": str}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise FedsimError(f"manifest {str(path)!r} is empty; expected a header subject_id,path,age and one row per subject") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise FedsimError(f"manifest {str(path)!r} is not a readable CSV ({err})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise FedsimError(
            f"manifest {str(path)!r} lacks column(s) {', '.join(missing)}; expected a header subject_id,path,age"
        )
    if df.empty:
        raise FedsimError(f"manifest {str(path)!r} has no subjects")
    first_line: dict[str, int] = {}
    ages = []
    paths = []
    for i, row in enumerate(df.itertuples(index=False)):
        line = i + 2  # the header is line 1
        where = f"manifest {str(path)!r} line {line}"
        sid = str(row.subject_id).strip()
        if not sid:
            raise FedsimError(f"{where}: empty subject_id")
        if sid in first_line:
            raise FedsimError(f"{where}: duplicate subject_id {sid!r} (first on line {first_line[sid]})")
        first_line[sid] = line
        try:
            age = float(row.age)
        except (TypeError, ValueError):
            age = math.nan
        if not math.isfinite(age) or age <= 0:
            raise FedsimError(f"{where} (subject {sid!r}): age {row.age!r} is not a positive number of years")
        image = (path.parent / str(row.path)).resolve()
        if not str(row.path).strip() or not image.is_file():
            raise FedsimError(f"{where} (subject {sid!r}): image file {str(row.path)!r} not found")
        ages.append(age)
        paths.append(str(image))
    df = df.assign(subject_id=[s.strip() for s in df["subject_id"]], path=paths, age=ages)
    return df.reset_index(drop=True)
