"""The options every attack command shares, defined once, with their choices from the registries."""

from __future__ import annotations

import argparse
from pathlib import Path

from attacks.membership.classifiers import CLASSIFIERS, DEFAULT_CLASSIFIER
from attacks.signals.features import feature_listing
from attacks.threats.splits import DEFAULT_REPEATS
from fedsim.errors import FedsimError


def add_attack_options(p: argparse.ArgumentParser, *, features: str = "table1", seed: bool = True) -> None:
    """``--features``, ``--classifier``, ``--repeats`` (and ``--seed``) of a trained-classifier attack."""
    p.add_argument("--features", default=features, metavar="SETS",
                   help=f"'table1' (the paper's rows) or comma-separated feature sets, each a '+'-joined combination "
                   f"of: {feature_listing()}; e.g. error,pred+label,loss (default: {features})")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, choices=list(CLASSIFIERS), metavar="NAME",
                   help=f"attack classifier, one of: {', '.join(CLASSIFIERS)} (default: {DEFAULT_CLASSIFIER}, the "
                   "paper's deep classifiers: an MLP, with a conv head on gradient tensors)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, metavar="N",
                   help=f"independent draws of the attack sets (default: {DEFAULT_REPEATS})")
    if seed:
        p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the attack splits (default: 0)")


def add_run_dir(p: argparse.ArgumentParser, what: str = "a run directory written by fedsim train or fedsim centralized") -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=what)


#: The attack families a study or sweep runs on every run.
FAMILIES = ("membership", "attribute")


def add_families_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--families", default=",".join(FAMILIES), metavar="F",
                   help=f"attack families to run on every run, of: {', '.join(FAMILIES)} (default: {','.join(FAMILIES)}; "
                   "membership always runs)")


def parse_families(text: str) -> list[str]:
    """``--families``: known names; membership is always among them (its table is the study's and sweep's spine)."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in names if f not in FAMILIES]
    if bad:
        raise FedsimError(f"--families: unknown family {bad[0]!r}; choose from: {', '.join(FAMILIES)}")
    return list(dict.fromkeys(["membership", *names]))
