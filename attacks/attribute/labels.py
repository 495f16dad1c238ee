"""The sensitive attributes of a run's subjects, read from its manifest, as binary labels.

Every attack of the family asks one yes/no question of a subject: "is this a woman?" (``sex``; women
are the positive class, so TPR at low FPR is about finding women), or "was this scan taken at site
S?" (``site``; one question per site, one site against the rest). The values come from the cohort's
manifest (the synthetic cohort writes ``sex`` and ``site``; a user's manifest or ``participants.tsv``
may carry them), and a column that is missing, empty for some subject, or has one value only is a
one-line error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from attacks.attribute.names import ATTRIBUTES
from attacks.target import Target
from fedsim.errors import FedsimError

__all__ = ["ATTRIBUTES", "POSITIVE_SEX", "Question", "questions", "values"]

#: The positive class of ``sex``: what TPR at low FPR counts.
POSITIVE_SEX = "F"
_SEX = {"f": "F", "female": "F", "woman": "F", "w": "F", "2": "F", "m": "M", "male": "M", "man": "M", "1": "M"}
_MISSING = ("", "nan", "n/a", "na", "none")


@dataclass(frozen=True)
class Question:
    """One binary attribute: ``attribute == positive`` (1) or not (0), per subject id."""

    attribute: str
    positive: str
    labels: pd.Series  # subject_id -> 0/1

    @property
    def name(self) -> str:
        """How results name it: ``sex`` (women vs men) or ``site=site-2`` (that site vs the rest)."""
        return self.attribute if self.attribute == "sex" else f"{self.attribute}={self.positive}"


def values(target: Target, attribute: str) -> pd.Series:
    """Each subject's value of ``attribute`` (``sex``: ``F``/``M``), indexed by subject id; one-line errors
    for an unknown attribute, a missing column, a subject without a value, or a single value."""
    if attribute not in ATTRIBUTES:
        raise FedsimError(f"unknown attribute {attribute!r}; choose one of: {', '.join(ATTRIBUTES)}")
    manifest = target.manifest
    if manifest is None or attribute not in manifest.columns:
        raise FedsimError(f"the cohort's manifest has no {attribute!r} column: add one (one value per subject) "
                          f"to attack {attribute}")
    raw = manifest.set_index("subject_id")[attribute].astype(str).str.strip()
    missing = raw[raw.str.lower().isin(_MISSING)]
    if len(missing):
        raise FedsimError(f"the cohort's {attribute!r} column is empty for {len(missing)} subject(s), e.g. "
                          f"{missing.index[0]!r}; give every subject a value")
    if attribute == "sex":
        mapped = raw.str.lower().map(_SEX)
        if mapped.isna().any():
            bad = raw[mapped.isna()]
            raise FedsimError(f"the cohort's 'sex' column has {bad.iloc[0]!r} (subject {bad.index[0]!r}); "
                              "expected F/M (female/male)")
        raw = mapped
    if raw.nunique() < 2:
        hint = " (the synthetic cohort has sites with [cohort] sites = 3)" if attribute == "site" else ""
        raise FedsimError(f"every subject of the cohort has {attribute} {raw.iloc[0]!r}: there is nothing to infer{hint}")
    return raw


def questions(target: Target, attribute: str) -> list[Question]:
    """The binary questions of ``attribute``: one for sex (women = 1), one per site for site (two sites: one)."""
    value = values(target, attribute)
    if attribute == "sex":
        positives = [POSITIVE_SEX]
    else:
        names = sorted(value.unique())
        positives = names[1:] if len(names) == 2 else names
    return [Question(attribute, p, (value == p).astype(np.int64)) for p in positives]
