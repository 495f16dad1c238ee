"""Audit a run from every seat: ``fedsim audit RUN_DIR [--budget quick|full] [--families …]``.

Runs every attack family the run supports (:mod:`attacks.experiments.audit`) and writes
``RUN_DIR/audit/index.html`` (one verdict per family, question and seat, linked to every family's page)
and ``summary.json``; prints the verdicts and what was skipped, and why.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from attacks.cli.options import add_executor_options, add_run_dir, executing
from attacks.experiments.audit import BUDGETS, FAMILIES
from fedsim.cli import add_device_option, command_parser


def parser(prog: str = "python -m attacks.audit") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "Audit a run: every attack family from every seat, one report, one verdict per seat.",
        "Membership (trained classifiers with their round-0 and age-matched controls; calibrated LiRA/RMIA where the "
        "run allows), attribute (sex, site; learners' cohort properties) and reconstruction (feature inversion; "
        "gradient inversion at --budget full) from the malicious learner, the curious controller (a --snapshot-local "
        "run), the outsider and the holder of a layer's activations. Writes RUN_DIR/audit/index.html and summary.json; "
        "every seat or family it skips is listed with the reason.",
        examples=["runs/skewed-noniid", "runs/skewed-iid --budget full", "runs/paper-cpu-skewed-iid --round 5",
                  "runs/centralized --families membership", "runs/centralized-dp --families membership --canaries"])
    add_run_dir(p)
    p.add_argument("--budget", choices=list(BUDGETS), default="quick",
                   help="quick (cheap feature sets, one draw, no reference models, no gradient inversion) or full "
                   "(Table 1's feature sets, 3 draws, 8 reference models, gradient inversion, the malicious "
                   "learner's error over every round) (default: quick)")
    p.add_argument("--families", default=",".join(FAMILIES), metavar="F",
                   help=f"comma-separated, of: {', '.join(FAMILIES)} (default: all)")
    p.add_argument("--round", type=int, default=None, metavar="R",
                   help="the round attacked (default: the best epoch of a centralized run, else the last round)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the attack splits (default: 0)")
    p.add_argument("--canaries", action="store_true",
                   help="also at --budget quick: the one-run canary audit of a DP run's ε (trains one more model, "
                   "with canaries, as the run trained; --budget full runs it anyway)")
    add_device_option(p)
    add_executor_options(p)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m attacks.audit") -> int:
    args = parser(prog).parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from attacks.experiments.audit import parse_families, run_audit
    from attacks.reporting.audit import epsilon_rows, write_audit
    from attacks.threats.seats import skipped_pairs_said
    from fedsim.cli.progress import progress_bars
    from fedsim.device import using_device

    families = parse_families(args.families)
    console = Console(highlight=False)
    command = shlex.join([*prog.split(), *(sys.argv[1:] if argv is None else argv)])
    with using_device(args.device), executing(args):
        with skipped_pairs_said(lambda message: console.print(f"[yellow]warning:[/] {message}")), \
                progress_bars(console) as progress:
            result = run_audit(args.run_dir, families=families, budget=args.budget, seed=args.seed, rnd=args.round,
                               canaries=args.canaries, progress=progress,
                               say=console.print)
        report = write_audit(result, command=command)
    table = Table(title=f"audit of {args.run_dir}, round {result.round}, budget {args.budget}: the strongest attack per seat")
    for col in ("family: question", "seat", "verdict", "strongest attack", "number [95% CI]"):
        table.add_column(col, overflow="fold")
    if len(report.summary):
        for r in report.summary.itertuples():
            number = f"{r.metric} {r.value:.2f}" + ("" if r.low != r.low else f" [{r.low:.2f}, {r.high:.2f}]")
            words = r.verdict.split(" — ")[0].split(":")[0]  # the bound is the interval's end, beside it
            question = r.family if r.question == r.family else f"{r.family}: {r.question}"
            table.add_row(question, r.seat, words, str(r.attack), number)
    console.print(table)
    if result.epsilon is not None:  # is the reported ε honest? the accountant's beside the empirical lower bounds
        console.print("ε: " + "; ".join(f"{e['what']} {e['value']}" for e in epsilon_rows(result.epsilon)))
    for skip in result.skipped:
        console.print(f"[yellow]not run:[/] {skip.family}, {skip.seat}: {skip.why}")
    console.print(f"report: {report.index}")
    return 0
