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

from rich.console import Console
from rich.table import Table

from attacks.cli.options import add_attack_options, add_run_dir
from fedsim.cli import add_device_option, command_parser
from fedsim.cli.progress import progress_bars


def parser(prog: str = "python -m attacks.run") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "Membership inference on a run (the paper's Table 1), beside its controls.",
        "Trains attack classifiers on what one seat sees (predictions, errors, activations, gradients) and scores them on members vs non-members of the chosen rounds; also runs the same attack on the untrained round-0 model and with age-matched non-members: what survives both is membership signal. Writes RUN_DIR/attacks/ (results.csv, results.json, report.html).",
        examples=["runs/centralized", "runs/skewed-iid --features error,loss --rounds all",
                  "runs/skewed-iid --classifier hgb --repeats 3"])
    add_run_dir(p)
    p.add_argument("--threat", choices=["centralized", "learner"],
                   help="centralized or learner (default: centralized for a centralized run, else learner; "
                   "every seat: fedsim seats)")
    p.add_argument("--rounds", default="default", metavar="ROUNDS", help="last | best | all | 3,10 (default: best for centralized, else last)")
    add_attack_options(p)
    add_device_option(p)
    p.add_argument("--stack", action="store_true",
                   help="also attack with each feature set's values of all --rounds side by side (at least 2 rounds)")
    p.add_argument("--no-controls", action="store_true", help="skip the round-0 and age-matched controls")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m attacks.run") -> int:
    args = parser(prog).parse_args(argv)
    import pandas as pd

    from attacks.api import attack_run
    from attacks.evaluation.summary import summarise
    from attacks.reporting.membership import RESULTS_CSV, write_report, write_results
    from attacks.target import is_centralized, open_run
    from attacks.threats.seats import skipped_pairs_said
    from fedsim.device import using_device

    with using_device(args.device):
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

