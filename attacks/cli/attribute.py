"""Infer sex or site from what each seat sees: ``python -m attacks.attribute RUN_DIR [--attribute sex|site] …``.

Writes ``RUN_DIR/attacks/attribute/`` (results.csv, property.csv, results.json, auc_by_layer.png,
report.html) and prints every seat's attack beside the label-only baseline, the untrained model and the
image probe, and the property-inference errors beside the federation average.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from attacks.attribute.names import (
    ADVERSARY, ATTRIBUTES, COMPONENTS, CONTROLLER, DEFAULT_CLASSIFIER, DEFAULT_SHADOWS, HOLDER, LEARNER, MIN_SHADOWS,
    OUTSIDER,
)
from attacks.cli.options import add_executor_options, add_run_dir, executing
from attacks.membership.names import CLASSIFIERS
from attacks.signals.names import feature_listing
from fedsim.cli import add_device_option, command_parser
from fedsim.cli.progress import progress_bars
from fedsim.errors import FedsimError

if TYPE_CHECKING:
    import pandas as pd

#: --seats names -> seat
SEAT_OPTIONS = {"outsider": OUTSIDER, "holder": HOLDER, "learner": LEARNER, "adversary": ADVERSARY,
                "controller": CONTROLLER}


def parser(prog: str = "python -m attacks.attribute") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "What a brain-age model gives away beyond age: sex or site, from every seat.",
        "outsider: released predicted ages; holder: one layer's activations; learner (centralized: adversary): "
        "the model's gradients; controller: each learner's local model (a --snapshot-local run). Each fits on the "
        "attacker's own subjects and attacks the others' and unseen ones, beside the label-only baseline, the "
        "untrained model and a probe of the scans themselves. On a federation with local models the controller "
        "also infers each learner's share of women and mean age from its update (property inference, shadow "
        "updates). Writes RUN_DIR/attacks/attribute/ (results.csv, property.csv, report.html).",
        examples=["runs/skewed-iid", "runs/skewed-iid --attribute site --seats outsider,holder",
                  "runs/centralized --features pred+label,activation:conv1"])
    add_run_dir(p)
    p.add_argument("--attribute", default="sex", metavar="A",
                   help=f"comma-separated attributes, of: {', '.join(ATTRIBUTES)} (default: sex)")
    p.add_argument("--seats", metavar="SEATS",
                   help=f"comma-separated, of: {', '.join(SEAT_OPTIONS)} (default: every seat the run has)")
    p.add_argument("--features", metavar="SETS",
                   help="comma-separated feature sets; each seat runs those it can read (default: per seat, see "
                   f"docs/attribute.md); parts of: {feature_listing()}")
    p.add_argument("--round", type=int, metavar="R",
                   help="the round attacked (default: the last; a centralized run: its best epoch)")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, choices=[DEFAULT_CLASSIFIER, *CLASSIFIERS], metavar="NAME",
                   help=f"attack classifier: {DEFAULT_CLASSIFIER} (cross-validated logistic regression, wide sets through "
                   f"their {COMPONENTS} leading principal components) or one of the membership family's: "
                   f"{', '.join(CLASSIFIERS)} (default: {DEFAULT_CLASSIFIER})")
    p.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="draws of a centralized run's attack halves (default: 3; a federation's draws are fixed)")
    p.add_argument("--no-controls", action="store_true", help="leave out the round-0 control and the image probe")
    p.add_argument("--no-property", action="store_true", help="leave out property inference")
    p.add_argument("--shadows", type=int, default=DEFAULT_SHADOWS, metavar="N",
                   help=f"shadow updates of property inference (default: {DEFAULT_SHADOWS})")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the splits and shadows (default: 0)")
    add_device_option(p)
    add_executor_options(p)
    return p


def _seats(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SEAT_OPTIONS]
    if bad or not names:
        raise FedsimError(f"--seats: {'unknown seat ' + repr(bad[0]) if bad else 'none given'}; "
                          f"choose from: {', '.join(SEAT_OPTIONS)}")
    return [SEAT_OPTIONS[s] for s in names]


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m attacks.attribute") -> int:
    args = parser(prog).parse_args(argv)
    console = Console()
    say = lambda text: console.print(text)  # noqa: E731
    if args.repeats < 1:
        raise FedsimError(f"--repeats must be at least 1, got {args.repeats}")
    attributes = list(dict.fromkeys(a.strip() for a in args.attribute.split(",") if a.strip()))
    if not attributes:
        raise FedsimError(f"--attribute names no attribute; choose from: {', '.join(ATTRIBUTES)}")
    if args.shadows < MIN_SHADOWS:
        raise FedsimError(f"--shadows must be at least {MIN_SHADOWS}, got {args.shadows}")
    seats = _seats(args.seats)
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None

    import pandas as pd
    from sklearn.exceptions import ConvergenceWarning

    from attacks.attribute.inference import attribute_attacks, seats_of
    from attacks.attribute.labels import questions, values
    from attacks.attribute.properties import property_attack
    from attacks.reporting.attribute import attribute_table, write_outputs
    from attacks.signals.cache import FeatureCache
    from attacks.target import is_centralized, open_run, resolve_rounds
    from attacks.threats.seats import skipped_pairs_said
    from fedsim.device import using_device

    with using_device(args.device), executing(args):
        target = open_run(args.run_dir)
        rnd = resolve_rounds("default", target, centralized=is_centralized(target))[0] if args.round is None else args.round
        asked = [q for a in attributes for q in questions(target, a)]  # every attribute checked before any work
        wants_property = not args.no_property and not is_centralized(target) and CONTROLLER in seats_of(target, rnd)
        if wants_property and "sex" not in attributes:
            values(target, "sex")  # property inference asks for the share of women: a cohort without sex fails now
        frames, properties = [], None
        with progress_bars(console) as progress, skipped_pairs_said(say), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=ConvergenceWarning)  # a probe that stops at max_iter still scores
            cache = FeatureCache(target, progress=progress)
            for question in asked:
                frames.append(attribute_attacks(target, question, rnd=rnd, seats=seats, feature_sets=features,
                                                classifier=args.classifier, repeats=args.repeats, seed=args.seed,
                                                controls=not args.no_controls, cache=cache, progress=progress))
            if wants_property:
                properties = property_attack(target, rnd=rnd, shadows=args.shadows, seed=args.seed, progress=progress)
        command = shlex.join([*prog.split(), *(sys.argv[1:] if argv is None else argv)])
        results = pd.concat(frames, ignore_index=True)
        report = write_outputs(args.run_dir, results, properties, command=command)
    _print(console, attribute_table(results), properties)
    if properties is None and not args.no_property and not is_centralized(target):
        say("[yellow]note:[/] property inference skipped: it reads each learner's update (a --snapshot-local run)")
    console.print(f"report: {report}")
    return 0


def _print(console: Console, table: pd.DataFrame, properties: pd.DataFrame | None) -> None:
    import pandas as pd

    from attacks.attribute.properties import property_summary

    out = Table(title="attribute inference: AUC on the victims' members, beside the label-only baseline, the "
                "untrained model (round 0) and unseen subjects")
    for col in ("question", "seat", "features", "AUC", "label only", "round 0", "unseen", "verdict"):
        out.add_column(col, overflow="fold")

    def num(v: float) -> str:
        return "—" if pd.isna(v) else f"{v:.3f}"
    for r in table.itertuples():
        out.add_row(r.attribute, r.seat, r.features, num(r.auc), num(r.baseline_auc), num(r.round0_auc),
                    num(r.unseen_auc), r.verdict)
    console.print(out)
    if properties is not None:
        summary = Table(title="property inference: mean absolute error over learners")
        for col in ("property", "attack", "federation average", "shadow LOO"):
            summary.add_column(col)
        for _, r in property_summary(properties).iterrows():
            summary.add_row(r["what"], f"{r['mae']:.3f}", f"{r['baseline_mae']:.3f}", f"{r['shadow_mae']:.3f}")
        console.print(summary)
