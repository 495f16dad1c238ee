"""The one input format: a CSV of ``subject_id,path,age`` (+ optional ``sex,site``).

Paths are relative to the manifest. Every problem is reported as one sentence naming the file
and the CSV line, so a user with thousands of rows finds the bad one at once.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd

from fedsim.errors import FedsimError

REQUIRED_COLUMNS = ("subject_id", "path", "age")
MAX_AGE = 120.0  # years: the oldest verified human lived 122; an older age is a typo or a unit error
_PROBE = 1 << 16  # bytes read from each end of a file to tell copies of one scan apart


def _fingerprint(path: Path) -> tuple[int, str]:
    """Size and a hash of a file's first and last 64 KiB: equal for copies of one scan, cheap for
    thousands of files (a scan's compressed voxels differ within its first kilobytes)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_PROBE)
        f.seek(max(0, size - _PROBE))
        tail = f.read(_PROBE)
    return size, hashlib.sha256(head + tail).hexdigest()


def load_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest; ``path`` in the result is absolute.

    Raises
    ------
    FedsimError
        For a missing or empty file, missing columns, duplicate ``subject_id``, an age that is
        not a number of years a human can have (0, 120], an image file that does not exist, and
        rows that are not independent scans (the same file, or a copy of it, on two rows).
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
    scans: dict[object, tuple[int, str]] = {}  # resolved path, and content fingerprint -> (line, subject)
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
        if age > MAX_AGE:
            raise FedsimError(f"{where} (subject {sid!r}): age {row.age!r} is outside the human range (0–{MAX_AGE:g} years); "
                              "ages are in years")
        image = (path.parent / str(row.path)).resolve()
        if not str(row.path).strip() or not image.is_file():
            raise FedsimError(f"{where} (subject {sid!r}): image file {str(row.path)!r} not found")
        for key, what in ((image, "the same image file"), (_fingerprint(image), "a copy of the image")):
            if key in scans:
                other_line, other = scans[key]
                raise FedsimError(f"{where} (subject {sid!r}): {what} as subject {other!r} (line {other_line}); "
                                  "every row must be an independent scan")
            scans[key] = (line, sid)
        ages.append(age)
        paths.append(str(image))
    df = df.assign(subject_id=[s.strip() for s in df["subject_id"]], path=paths, age=ages)
    return df.reset_index(drop=True)
