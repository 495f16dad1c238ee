"""Calibrated attacks on a centralized run: ``python -m attacks.calibrated RUN_DIR [--references 8]
[--method lira-online,lira-offline,rmia]``; the attacks are :mod:`attacks.membership.calibrated`.

Writes ``RUN_DIR/attacks/calibrated.csv`` + ``.json`` (one row per attack and control), ``calibrated.html`` and
``calibrated_scores.csv`` (every subject's score), and prints them beside ``attacks.run``'s classifiers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from attacks.cli.options import add_executor_options, add_run_dir, executing
from attacks.membership.calibration import (
    DEFAULT_METHODS, DEFAULT_REFERENCES, DEFAULT_STATISTICS, LIKELIHOODS, METHODS, PER_SUBJECT_FROM, STATISTICS,
    VARIANCES, attack_name, check_gamma, choice, parse_methods,
)
from fedsim.cli import add_device_option, command_parser
from fedsim.errors import FedsimError

if TYPE_CHECKING:
    import pandas as pd


def _classifier_rows(run_dir: Path) -> pd.DataFrame | None:
    """Mean AUC / TPR@1% / accuracy of ``attacks.run``'s classifiers on this run, if it was attacked."""
    import pandas as pd

    from attacks.evaluation.summary import summarise

    path = run_dir / "attacks" / "results.csv"
    if not path.is_file():
        return None
    results = pd.read_csv(path)
    if "control" in results.columns:
        results = results[results["control"] == "none"]
    if results.empty or "tpr@0.01" not in results.columns:
        return None
    return summarise(results, ["classifier", "features", "round"]).rename(columns={"tpr_at_1pct": "tpr"})


def parser(prog: str = "python -m attacks.calibrated") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "Calibrated membership attacks (LiRA, RMIA) with reference models.",
        "Trains (and caches) reference models on random halves of the population, then scores every subject against them; writes RUN_DIR/attacks/calibrated.csv and .json and the page calibrated.html (each attack's verdict, AUC and TPR at low FPR beside its round-0 control), beside the trained classifiers of fedsim attack.",
        examples=["runs/centralized", "runs/centralized --references 16 --method rmia"])
    add_run_dir(p, "a centralized run directory written by fedsim centralized")
    add_device_option(p)
    add_executor_options(p)
    p.add_argument("--references", type=int, default=DEFAULT_REFERENCES, metavar="N",
                   help=f"reference models, an even number (default: {DEFAULT_REFERENCES}; cached and reused)")
    p.add_argument("--method", default=",".join(DEFAULT_METHODS), metavar="METHODS", help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--statistic", default=",".join(DEFAULT_STATISTICS), metavar="NAMES",
                   help=f"LiRA statistic(s), comma-separated: {', '.join(STATISTICS)} (default: both)")
    p.add_argument("--variance", default="auto", metavar="NAME",
                   help=f"LiRA variance: {', '.join(VARIANCES)} (auto: per-subject from {PER_SUBJECT_FROM} references)")
    p.add_argument("--likelihood", default="auto", metavar="NAME", help="RMIA: gaussian, laplace or auto (from the run's loss)")
    p.add_argument("--gamma", type=float, default=1.0, metavar="G", help="RMIA's γ (default: 1)")
    p.add_argument("--round", type=int, dest="target_round", metavar="R",
                   help="the target snapshot (default: the best-validation epoch of the run)")
    p.add_argument("--epochs", type=int, metavar="N", help="reference training epochs (default: the target's, its best epoch)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="attack split and reference seed (default: 0)")
    p.add_argument("--no-controls", action="store_true", help="skip the round-0 (untrained target) control")
    return p


def _pct_interval(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f} ({row[f'{key}_low']:.2f}–{row[f'{key}_high']:.2f})"


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m attacks.calibrated") -> int:
    args = parser(prog).parse_args(argv)
    import pandas as pd

    from attacks.membership.calibrated import run_calibrated
    from attacks.target import open_run
    from fedsim.device import using_device

    with using_device(args.device), executing(args):
        if args.references < 2 or args.references % 2:
            raise FedsimError(
                f"--references must be an even number of at least 2 (references come in complementary pairs), "
                f"got {args.references}"
            )
        methods = parse_methods(args.method, args.references)
        statistics = [s.strip() for s in args.statistic.split(",")]
        for s in statistics:
            choice(s, list(STATISTICS), "statistic")
        choice(args.variance, VARIANCES, "variance")
        choice(args.likelihood, ("auto", *LIKELIHOODS), "likelihood")
        if args.epochs is not None and args.epochs < 1:
            raise FedsimError(f"--epochs must be at least 1, got {args.epochs}")
        if args.seed < 0:
            raise FedsimError(f"--seed must be a non-negative integer, got {args.seed}")
        check_gamma(args.gamma, "--gamma")
        target = open_run(args.run_dir)
        console = Console()
        console.print(f"[bold]calibrated attacks[/] on {args.run_dir}: {', '.join(methods)}; {args.references} references")
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("reference models", total=args.references)
            rows, scores, refs = run_calibrated(
                target, references=args.references, methods=methods, statistics=statistics, variance=args.variance,
                likelihood=args.likelihood, gamma=args.gamma, epochs=args.epochs, seed=args.seed,
                target_round=args.target_round,
                controls=not args.no_controls, progress=lambda done, total: bar.update(task, completed=done),
            )
        reused = len(refs) - len(refs.trained)
        console.print(
            f"references: {len(refs)} in {refs.folder} ({len(refs.trained)} trained now in {refs.seconds:.1f} s, "
            f"{reused} reused; {rows[0]['reference_epochs']} epochs on {int(refs.keep[0].sum())} of "
            f"{len(refs.population)} subjects each, mean train MAE {np.nanmean(refs.train_mae):.2f})",
            soft_wrap=True,  # one line, whatever the terminal's width: scripts grep it
        )
        from attacks.reporting.calibrated import write_report, write_results

        results = write_results(args.run_dir, rows, scores, refs)

        first = rows[0]
        variances = sorted({r["variance"] for r in rows if "variance" in r})
        table = Table(title=(
            f"centralized membership attacks, {first['n_members']} + {first['n_nonmembers']} attack-test subjects"
            + (f"; LiRA σ: {', '.join(variances)}" if variances else "")
        ))
        # Numbers and their intervals are never cut; in an 80-column terminal long attack names fold.
        for col in ("control", "attack", "AUC (95% CI)", "TPR@1%FPR (95% CI)", "TPR@0.1%", "acc. %"):
            table.add_column(col, no_wrap=col != "attack", overflow="fold")
        for r in rows:
            table.add_row(r["control"], attack_name(r["method"], r["statistic"]), _pct_interval(r, "auc"),
                          _pct_interval(r, "tpr@0.01"), f"{r['tpr@0.001']:.3f}", f"{100 * r['accuracy']:.1f}")
        classifiers = _classifier_rows(args.run_dir)
        if classifiers is not None:
            for c in classifiers.itertuples():
                table.add_row("classifier", f"{c.classifier}/{c.features}", f"{c.auc:.3f}", f"{c.tpr:.3f}", "",
                              f"{100 * c.accuracy:.1f}")
        console.print(table)
        if classifiers is not None:
            console.print("classifier rows: attacks.run's trained classifiers on this run (mean over its repeats, "
                          f"round {', '.join(str(r) for r in classifiers['round'].unique())})", soft_wrap=True)
        notes = {r.get("tpr@0.01_note") for r in rows} | {r.get("tpr@0.001_note") for r in rows}
        for note in sorted(n for n in notes if isinstance(n, str)):
            console.print(f"[dim]note: {note}[/]", soft_wrap=True)
        console.print(f"results: {results}")
        report = write_report(args.run_dir, pd.DataFrame(rows), scores=scores, classifiers=classifiers)
        console.print(f"report: {report}")
        return 0

