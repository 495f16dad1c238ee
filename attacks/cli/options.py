"""The options every attack command shares, defined once, with their choices from the registries."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from attacks.membership.names import CLASSIFIERS, DEFAULT_CLASSIFIER
from attacks.signals.names import feature_listing
from attacks.threats.names import DEFAULT_REPEATS
from fedsim.errors import FedsimError


def add_attack_options(p: argparse.ArgumentParser, *, features: str = "table1", seed: bool = True) -> None:
    """``--features``, ``--classifier``, ``--repeats`` (and ``--seed``) of a trained-classifier attack."""
    p.add_argument("--features", default=features, metavar="SETS",
                   help=f"'table1' (the paper's rows) or comma-separated feature sets, each a '+'-joined combination "
                   f"of: {feature_listing()}; e.g. error,pred+label,loss (default: {features})")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, choices=list(CLASSIFIERS), metavar="NAME",
                   help=f"attack classifier, one of: {', '.join(CLASSIFIERS)} (default: {DEFAULT_CLASSIFIER}: on each feature "
                   "set the best of a threshold, logistic regression, gradient boosting and the paper's deep classifier, "
                   "chosen by cross-validation on the attacker's own subjects)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, metavar="N",
                   help=f"independent draws of the attack sets (default: {DEFAULT_REPEATS})")
    if seed:
        p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the attack splits (default: 0)")


def add_run_dir(p: argparse.ArgumentParser, what: str = "a run directory written by fedsim train or fedsim centralized") -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=what)


#: The attack families a study runs on every run.
FAMILIES = ("membership", "attribute")
#: A sweep's: the study's, and the calibrated attacks (LiRA, RMIA), so that every defense point is judged by the
#: strongest attack, not only by trained classifiers.
SWEEP_FAMILIES = (*FAMILIES, "calibrated")


def add_families_option(p: argparse.ArgumentParser, families: Sequence[str] = FAMILIES) -> None:
    p.add_argument("--families", default=",".join(families), metavar="F",
                   help=f"attack families to run on every run, of: {', '.join(families)} (default: {','.join(families)}; "
                   "membership always runs)")


def parse_families(text: str, families: Sequence[str] = FAMILIES) -> list[str]:
    """``--families``: known names; membership is always among them (its table is the study's and sweep's spine)."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in names if f not in families]
    if bad:
        raise FedsimError(f"--families: unknown family {bad[0]!r}; choose from: {', '.join(families)}")
    return list(dict.fromkeys(["membership", *names]))
