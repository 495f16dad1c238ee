"""Reconstruct scans from what a seat sees: ``python -m attacks.reconstruct RUN_DIR [--attack …] [--sweep]``.

Writes ``RUN_DIR/attacks/reconstruct/`` (results.csv or sweep.csv, examples.npz, report.html) and
prints the quality and identifiability of each setting beside the prior's.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from attacks.cli.options import add_executor_options, add_run_dir, executing
from attacks.reconstruction.settings import (
    LOCAL_STEPS, OBJECTIVES, PRIORS, PROJECTIONS, UPDATES, WEIGHTINGS, GradientAttack, Inversion,
)
from attacks.signals.names import DEFENSES
from fedsim.cli import add_device_option, command_parser
from fedsim.cli.progress import progress_bars
from fedsim.errors import FedsimError

ATTACKS = ("gradient", "features", "model")


def _numbers(kind: type, name: str):
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of numbers, got {text!r}") from None
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"{name} must be positive numbers, got {text!r}")
        return values
    return parse


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def parser(prog: str = "python -m attacks.reconstruct") -> argparse.ArgumentParser:
    defaults = Inversion()
    p = command_parser(
        prog, "Can a seat see a subject's brain? Gradient, feature and model inversion.",
        "gradient: the curious controller inverts a learner's update of one round (needs a --snapshot-local run); "
        "features: the holder of one layer's activations inverts them (white-box, and a learned inverse net); "
        "model: the scan the community model maps to an age, tested for closeness to members. --sweep trains the "
        "small updates it needs (batch size x local steps x width x defense) and inverts each. Every reconstruction "
        "is scored (SSIM, PSNR, identifiability) beside the prior, the attacker's mean brain. "
        "Writes RUN_DIR/attacks/reconstruct/ (results.csv or sweep.csv, report.html).",
        examples=["runs/skewed-iid --attack gradient --learner L3 --round 10",
                  "runs/skewed-iid --attack features --layers conv1,conv6",
                  "runs/skewed-iid --sweep --defenses dp_sgd,secagg:4"])
    add_run_dir(p)
    p.add_argument("--attack", choices=ATTACKS, default="gradient", help="gradient | features | model (default: gradient)")
    p.add_argument("--sweep", action="store_true", help="the gradient-inversion sweep instead of one attack")
    p.add_argument("--learner", metavar="L", help="the victim learner, e.g. L3 (default: the first; centralized: train)")
    p.add_argument("--round", type=int, metavar="R", help="the round attacked (default: the last)")
    p.add_argument("--subjects", type=_positive, metavar="N",
                   help="scans reconstructed (gradient: of the learner's, default all of them, so its local steps "
                   "are replayed exactly; features: default 4; "
                   "--sweep: the learner's scans an update is trained on, default 8)")
    p.add_argument("--steps", type=_positive, default=defaults.iterations, metavar="N",
                   help=f"optimisation steps of each inversion (default: {defaults.iterations})")
    attack = GradientAttack()
    gradient = attack.settings
    p.add_argument("--update", choices=UPDATES,
                   help="how each inversion step moves the scan: signed (Inverting Gradients' signed Adam), adam "
                   "(Adam on the gradient itself), normalized (descent on the gradient scaled to a largest entry of 1) "
                   f"or lbfgs (default: {gradient.update} for gradient inversion, {defaults.update} for the others)")
    p.add_argument("--restarts", type=_positive, default=defaults.restarts, metavar="N",
                   help="starts of each inversion (the prior, then jittered copies); the one of least objective is "
                   f"kept, never chosen by the truth (default: {defaults.restarts})")
    p.add_argument("--tv", type=float, metavar="W",
                   help=f"weight of the 3-D total-variation prior (default: {gradient.tv:g} for gradient inversion, "
                   f"{defaults.tv:g} for the others)")
    p.add_argument("--project", choices=PROJECTIONS, default=defaults.project,
                   help="after each step: box to the scans' range, or zscore (re-z-score each volume, then box) "
                   f"(default: {defaults.project})")
    p.add_argument("--weighting", choices=WEIGHTINGS, default=attack.weighting,
                   help="gradient: one cosine over the whole update, or the mean of each layer's "
                   f"(default: {attack.weighting})")
    p.add_argument("--constraints", action="store_true",
                   help="gradient: add what one SGD step's output layer gives away (the prediction, the pooled "
                   "features) to the objective")
    p.add_argument("--prior", choices=PRIORS, default=attack.prior,
                   help="gradient: search every voxel from the mean brain, or the span of the attacker's own "
                   f"scans' principal components (GIAS-style) (default: {attack.prior})")
    p.add_argument("--components", type=_positive, default=attack.components, metavar="K",
                   help=f"--prior pca: principal components (default: {attack.components})")
    p.add_argument("--labels", choices=["known", "estimated"], default="known",
                   help="gradient: the learner's ages known to the controller (used where --subjects covers all the "
                   "learner's scans), or estimated jointly (default: known)")
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="gradient: match the update as one gradient, or replay the local SGD steps "
                   "(default: unrolled for multi-step SGD, else gradient)")
    p.add_argument("--layers", metavar="LAYERS", help="features: comma-separated layers (default: every conv layer)")
    p.add_argument("--methods", default="white-box,learned", metavar="M",
                   help="features: white-box, learned or both (default: white-box,learned)")
    p.add_argument("--ages", type=_numbers(float, "--ages"), metavar="AGES",
                   help="model: target ages (default: quartiles of the unseen subjects' ages)")
    p.add_argument("--batch-sizes", type=_numbers(int, "--batch-sizes"), default=[1, 2, 4, 8], metavar="B",
                   help="--sweep: batch sizes (default: 1,2,4,8)")
    p.add_argument("--local-steps", default="1,epoch", metavar="S",
                   help=f"--sweep: any of {', '.join(LOCAL_STEPS)} (one batch, one pass, the run's local_epochs; default: 1,epoch)")
    p.add_argument("--widths", type=_numbers(float, "--widths"), metavar="W",
                   help="--sweep: model width multipliers (default: the run's; others use an untrained model)")
    p.add_argument("--defenses", default="", metavar="D",
                   help=f"--sweep: comma-separated NAME[:VALUE] of {', '.join(d for d in DEFENSES if d != 'none')} "
                   "at the first batch size and local steps")
    p.add_argument("--recipe", choices=["paper", "run"], default="paper",
                   help="--sweep: local training as the paper's federation (plain SGD) or as the run's [train] (default: paper)")
    add_device_option(p)
    add_executor_options(p)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m attacks.reconstruct") -> int:
    args = parser(prog).parse_args(argv)
    from attacks.reconstruction.run import gradient_attack
    from attacks.reconstruction.sweep import sweep
    from attacks.reconstruction.tasks import feature_attack, model_attack
    from attacks.reporting.reconstruction import write_outputs
    from attacks.signals.updates import parse_defense
    from attacks.target import open_run
    from fedsim.device import using_device

    base = GradientAttack().settings if args.sweep or args.attack == "gradient" else Inversion()
    settings = Inversion(iterations=args.steps, update=args.update or base.update, restarts=args.restarts,
                         tv=base.tv if args.tv is None else args.tv, project=args.project,
                         step_size=None if args.update else base.step_size)
    attack = GradientAttack(settings, weighting=args.weighting, constraints=args.constraints,
                            prior=args.prior, components=args.components)
    console = Console()
    with using_device(args.device), executing(args):
        target = open_run(args.run_dir)
        with progress_bars(console) as progress:
            if args.sweep:
                defenses = [parse_defense(d) for d in args.defenses.split(",") if d]
                outcome = sweep(target, batch_sizes=args.batch_sizes, local_steps=args.local_steps.split(","),
                                widths=args.widths, defenses=defenses, learner=args.learner, rnd=args.round,
                                subjects=args.subjects or 8, recipe=args.recipe, attack=attack, progress=progress)
            elif args.attack == "gradient":
                outcome = gradient_attack(target, learner=args.learner, rnd=args.round, subjects=args.subjects,
                                          labels=args.labels, objective=args.objective, attack=attack, progress=progress)
            elif args.attack == "features":
                methods = [m for m in args.methods.split(",") if m]
                bad = [m for m in methods if m not in ("white-box", "learned")]
                if bad or not methods:
                    raise FedsimError(f"--methods: {'unknown method ' + repr(bad[0]) if bad else 'none given'}; "
                                      "choose from: white-box, learned")
                outcome = feature_attack(target, learner=args.learner, rnd=args.round, subjects=args.subjects or 4,
                                         layers=args.layers.split(",") if args.layers else None, methods=methods,
                                         settings=settings, progress=progress)
            else:
                outcome = model_attack(target, rnd=args.round, ages=args.ages, settings=settings, progress=progress)
        command = shlex.join([*prog.split(), *(sys.argv[1:] if argv is None else argv)])
        report = write_outputs(args.run_dir, outcome.rows, outcome.examples, sweep=args.sweep, command=command)
    _print(console, outcome.rows, sweep=args.sweep, attack=args.attack)
    console.print(f"report: {report}")
    return 0


def _print(console: Console, rows: list[dict], *, sweep: bool, attack: str) -> None:
    import pandas as pd

    from attacks.reporting.reconstruction import ATTACK_KEYS, SWEEP_KEYS, summary, text, varying, verdict

    frame = pd.DataFrame(rows)
    if attack == "model" and not sweep:
        table = Table(title="model inversion: AUC of 'closer to the prototype = member' (0.5 = none)")
        for col in ("round", "target age", "predicted", "closeness AUC", "prior's AUC"):
            table.add_column(col)
        for r in frame.itertuples():
            table.add_row(str(r.round), f"{r.target_age:g}", f"{r.predicted_age:.1f}", f"{r.closeness_auc:.3f}",
                          f"{r.closeness_auc_prior:.3f}")
        console.print(table)
        return
    keys = SWEEP_KEYS if sweep else ATTACK_KEYS
    points = summary(frame, keys)
    table = Table(title="reconstruction vs the prior (attacker's mean brain); identified vs chance")
    shown = varying(points, keys, always=("setting", "batch_size", "local_steps", "defense"))
    heads = {"batch_size": "batch", "local_steps": "local", "identified": "found"}  # a terminal is narrow
    for col in shown:
        table.add_column(heads.get(col, col), no_wrap=True)
    for col in ("SSIM", "prior", "gain", "identified", "chance"):
        table.add_column(heads.get(col, col))
    table.add_column("verdict", min_width=24)
    for _, r in points.iterrows():
        table.add_row(*(text(r[k]) for k in shown), f"{r.ssim:.3f}", f"{r.ssim_prior:.3f}", f"{r.ssim_gain:+.3f}",
                      f"{r.identified:.2f}", f"{r.chance:.3f}", verdict(r))
    console.print(table)
