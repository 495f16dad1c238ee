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


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (scans and checkpoints are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _refuse_copies(manifest: Path, scans: dict[Path, tuple[int, str]]) -> None:
    """Two rows whose files are byte for byte the same scan. Only files of equal size are hashed
    (whole: uncompressed scans of one geometry share their header and background), so a cohort of
    compressed scans costs one ``stat`` per file."""
    by_size: dict[int, list[Path]] = {}
    for image in scans:
        by_size.setdefault(image.stat().st_size, []).append(image)
    for same_size in (group for group in by_size.values() if len(group) > 1):
        seen: dict[str, Path] = {}
        for image in sorted(same_size, key=lambda p: scans[p][0]):
            digest = file_sha256(image)
            if digest in seen:
                (line, sid), (first_line, first) = scans[image], scans[seen[digest]]
                raise FedsimError(f"manifest {str(manifest)!r} line {line} (subject {sid!r}): a copy of the image of "
                                  f"subject {first!r} (line {first_line}); every row must be an independent scan")
            seen[digest] = image


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
    scans: dict[Path, tuple[int, str]] = {}  # resolved image path -> (line, subject)
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
        if image in scans:
            other_line, other = scans[image]
            raise FedsimError(f"{where} (subject {sid!r}): the same image file as subject {other!r} (line {other_line}); "
                              "every row must be an independent scan")
        scans[image] = (line, sid)
        ages.append(age)
        paths.append(str(image))
    _refuse_copies(path, scans)
    df = df.assign(subject_id=[s.strip() for s in df["subject_id"]], path=paths, age=ages)
    return df.reset_index(drop=True)
