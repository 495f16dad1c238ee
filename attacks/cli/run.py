"""Attack a run: ``python -m attacks.run RUN_DIR [--threat centralized|learner] [--features …]``.

Writes ``RUN_DIR/attacks/results.csv`` and ``results.json`` (one row per attacker, victim,
round, feature set and repeat) and prints mean ± std per feature set. Beside the attack on the
chosen rounds it runs two controls (``--no-controls`` skips them): the same attack on the
round-0 (untrained) model, and a variant whose non-members are age-matched to the members —
what survives both is membership signal, not distribution shift.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from attacks.api import attack_run
from attacks.cli.progress import progress_bars
from attacks.evaluation.summary import summarise
from attacks.membership.classifiers import CLASSIFIERS, DEFAULT_CLASSIFIER
from attacks.reporting.membership import RESULTS_CSV, write_report, write_results
from attacks.signals.features import feature_listing
from attacks.target import is_centralized, open_run
from attacks.threats.seats import skipped_pairs_said
from attacks.threats.splits import DEFAULT_REPEATS

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m attacks.run", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a run directory written by fedsim.run or fedsim.centralized")
    p.add_argument("--threat", choices=["centralized", "learner"],
                   help="default: centralized for a centralized run, else learner (every seat: python -m attacks.seats)")
    p.add_argument("--features", default="table1",
                   help="'table1' (the paper's rows) or comma-separated specs joined by '+' from: "
                   + feature_listing() + "; e.g. 'error,pred+label,loss'")
    p.add_argument("--rounds", default="default", help="last | best | all | 3,10 (default: best for centralized, else last)")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, choices=list(CLASSIFIERS),
                   help=f"default: {DEFAULT_CLASSIFIER} — the paper's deep classifiers: an MLP, with a conv head on gradient tensors")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help=f"independent draws of the attack sets (default: {DEFAULT_REPEATS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stack", action="store_true",
                   help="also attack with each feature set's values of all --rounds side by side (at least 2 rounds)")
    p.add_argument("--no-controls", action="store_true", help="skip the round-0 and age-matched controls")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    target = open_run(args.run_dir)
    threat = args.threat or ("centralized" if is_centralized(target) else "learner")
    console = Console()
    console.print(f"[bold]{threat}[/] attack on {args.run_dir}, features {args.features}")
    with skipped_pairs_said(lambda message: console.print(f"[yellow]warning:[/] {message}")), \
            progress_bars(console) as progress:
        rows = attack_run(target, threat=threat, features=args.features, rounds=args.rounds, classifier=args.classifier,
                          repeats=args.repeats, seed=args.seed, stack=args.stack, controls=not args.no_controls,
                          progress=progress)
    results = write_results(args.run_dir, rows)
    report = write_report(args.run_dir, results, target, seed=args.seed)
    table = Table(title=f"{threat} attack, {args.classifier}, mean over {args.repeats} repeats"
                  + ("" if threat == "centralized" else " and all victims") + "; [95% CI] by bootstrap")
    for col in ("control", "round", "features", "accuracy %", "AUC", "TPR@1%FPR"):
        table.add_column(col, no_wrap=col != "features", overflow="fold")
    for r in summarise(results, ["control", "round", "features"]).itertuples():
        table.add_row(r.control, str(r.round), r.features,
                      f"{100 * r.accuracy:.1f} ± {100 * (0 if pd.isna(r.accuracy_std) else r.accuracy_std):.1f}",
                      f"{r.auc:.3f}", f"{r.tpr_at_1pct:.3f}")
    console.print(table)
    console.print(f"results: {args.run_dir / 'attacks' / RESULTS_CSV}")
    console.print(f"report: {report}")
    return 0

