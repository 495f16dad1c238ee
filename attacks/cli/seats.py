"""Every seat at the table: ``python -m attacks.seats RUN_DIR [--round R] [--features …]``.

Malicious learner (community model, white box), curious controller (each learner's local model
of a ``--snapshot-local`` run; trained and calibrated attacks) and outsider (released predicted
ages of the final model) attack the same victims with the same side knowledge
(:mod:`attacks.membership.seats`), each beside its age-matched control. Writes
``RUN_DIR/attacks/seats/round-RRRR/``: ``results.csv`` (one row per seat, attacker, victim,
feature set, control and repeat), ``seats.csv`` (the comparison table) and a self-contained ``report.html``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from attacks.cli.options import add_attack_options, add_run_dir
from fedsim.cli import add_device_option, command_parser
from fedsim.cli.progress import progress_bars
from fedsim.errors import FedsimError


def parser(prog: str = "python -m attacks.seats") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "Every seat of a federation attacks the same victims, beside its control.",
        "The malicious learner holds the community model, the curious controller each learner's local model (a --snapshot-local run) and the outsider the released predicted ages; all use the same side knowledge and sit beside an age-matched control. Writes RUN_DIR/attacks/seats/round-RRRR/ with a report.html.",
        examples=["runs/skewed-iid", "runs/skewed-iid --round 5 --features error,grad_norm"])
    add_run_dir(p, "a federated run directory trained with --snapshot-local")
    p.add_argument("--round", type=int, metavar="R", help="round whose community and local models are attacked (default: the last)")
    add_attack_options(p)
    add_device_option(p)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m attacks.seats") -> int:
    args = parser(prog).parse_args(argv)
    from attacks.api import feature_sets
    from attacks.membership.seats import run_seats, seat_table, seats_dir
    from attacks.reporting.html import mean_pm
    from attacks.reporting.seats import write_seats_report
    from attacks.target import attacked_round, is_centralized, open_run
    from attacks.threats.seats import skipped_pairs_said
    from fedsim import snapshots
    from fedsim.device import using_device

    with using_device(args.device):
        specs = feature_sets(args.features, classifier=args.classifier, repeats=args.repeats)
        target = open_run(args.run_dir)
        if is_centralized(target):
            raise FedsimError(f"{str(args.run_dir)!r} is a centralized run; seats compare adversaries of a federation")
        rnd = attacked_round(target, args.round, first=1)
        console = Console(highlight=False)
        with skipped_pairs_said(lambda message: console.print(f"[yellow]warning:[/] {message}")), \
                progress_bars(console) as progress:
            results = run_seats(target, rnd=rnd, feature_sets=specs, classifier=args.classifier, repeats=args.repeats,
                                seed=args.seed, say=console.print, progress=progress)
        out = seats_dir(args.run_dir, rnd)
        out.mkdir(parents=True, exist_ok=True)
        snapshots.atomic_write(out / "results.csv", lambda tmp: results.to_csv(tmp, index=False))
        table = seat_table(results)
        snapshots.atomic_write(out / "seats.csv", lambda tmp: table.to_csv(tmp, index=False))
        report = write_seats_report(target, results, out)
        shown = Table(title=f"seats, round {rnd} (outsider: {target.rounds[-1]}), {args.classifier}, mean over "
                            f"attacker–victim pairs and {args.repeats} repeats; matched: age-matched non-members")
        for col in ("seat", "attack", "acc. %", "AUC", "TPR@1%", "matched %"):
            # numbers stay whole; in an 80-column terminal long feature sets fold
            shown.add_column(col, no_wrap=col != "attack", overflow="fold", min_width=12 if col == "attack" else None)
        for r in table.itertuples():
            shown.add_row(r.seat, r.features, mean_pm(r.attack, r.attack_std), f"{r.auc:.3f}",
                          f"{r.tpr_at_1pct:.3f}", mean_pm(r.matched))
        console.print(shown)
        console.print(f"results: {out / 'results.csv'}\nreport: {report}")
        return 0

