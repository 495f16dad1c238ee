"""The options every attack command shares, defined once, with their choices from the registries."""

from __future__ import annotations

import argparse
from pathlib import Path

from attacks.membership.classifiers import CLASSIFIERS, DEFAULT_CLASSIFIER
from attacks.signals.features import feature_listing
from attacks.threats.splits import DEFAULT_REPEATS


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
