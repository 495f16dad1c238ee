"""Privacy–utility sweep of one defense: ``python -m attacks.sweep --env ENV --defense KEY --values V1,V2,…``.

A defense is only worth what it buys: how much membership leakage it removes for how much accuracy
it costs. Every value trains (``DIR/<value>/run/``) and is attacked as ``python -m attacks.run``
does and, with the calibrated family, as ``python -m attacks.calibrated`` does (a federation: its curious
controller), so that each value is judged by the strongest attack (:mod:`attacks.experiments.sweep`);
the command writes ``sweep.csv``, ``sweep.md``,
``sweep.png`` and a self-contained ``sweep.html``. Training and attacks already on disk and still
valid are skipped, so rerunning the same command, or adding a value, redoes nothing that finished.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from attacks.cli.options import (
    SWEEP_FAMILIES, add_attack_options, add_executor_options, add_families_option, executing, parse_families,
)
from attacks.cli.study import print_frame
from attacks.experiments.names import DEFAULT_FEATURES, SWEEPABLE
from attacks.membership.calibration import FAMILY_REFERENCES
from fedsim.cli import add_cohort_option, add_device_option, command_parser
from fedsim.cli.progress import progress_bars
from fedsim.config import available_environments, load_env
from fedsim.errors import FedsimError


def parser(prog: str = "python -m attacks.sweep") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "Privacy-utility sweep of one defense: leakage removed vs accuracy lost.",
        "Every value trains a run and attacks it; writes sweep.csv, sweep.md, sweep.png and sweep.html. Values already trained and attacked are skipped, so adding a value redoes nothing that finished.",
        examples=["--env centralized --defense label_noise --values 0,2,5",
                  "--env skewed-iid --defense model_noise --values 0,0.05"])
    p.add_argument("--env", required=True, help="base environment name or .toml path, one of: "
                   + ", ".join(available_environments()))
    p.add_argument("--defense", required=True, metavar="KEY",
                   help=f"the [defense] key to sweep: {', '.join(SWEEPABLE)}")
    p.add_argument("--values", required=True, help="comma-separated values ≥ 0, e.g. 0,0.5,1,2 "
                   "(0 = off; for dp_noise_multiplier and central_noise_multiplier it removes that DP)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a [defense] key every value shares, e.g. dp_max_grad_norm=1.0 (repeatable)")
    p.add_argument("--out", type=Path, metavar="DIR", help="sweep directory (default: runs/sweep-<env>-<KEY>)")
    add_cohort_option(p)
    add_attack_options(p, features=DEFAULT_FEATURES, seed=False)
    add_families_option(p, SWEEP_FAMILIES)
    p.add_argument("--references", type=int, default=FAMILY_REFERENCES, metavar="N",
                   help=f"reference models of the calibrated family on a centralized run, an even number ≥ {FAMILY_REFERENCES} "
                   f"(default: {FAMILY_REFERENCES}; each trains like the run, cached and reused)")
    add_device_option(p)
    add_executor_options(p)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m attacks.sweep") -> int:
    args = parser(prog).parse_args(argv)
    import pandas as pd

    from attacks.api import feature_sets
    from attacks.execution import SerialExecutor, current_executor
    from attacks.experiments.environments import EnvironmentTask, run_environments
    from attacks.experiments.study import AttackSettings
    from attacks.experiments.sweep import (
        attribute_sweep_rows, calibrated_sweep_rows, parse_settings, parse_values, plan_settings, strongest_rows,
        sweep_rows,
    )
    from attacks.membership.calibration import DEFAULT_METHODS, parse_methods
    from attacks.reporting.sweep import (
        CONSOLE_DROPS, SWEEP_CSV, SWEEP_MD, SWEEP_PNG, attribute_display, display_table, write_outputs,
    )
    from attacks.signals.features import parse_features
    from fedsim import snapshots
    from fedsim.device import using_device
    from fedsim.models import build_model

    with using_device(args.device), executing(args):
        key = args.defense
        if key not in SWEEPABLE:
            raise FedsimError(f"unknown [defense] key {key!r} to sweep; choose one of: {', '.join(SWEEPABLE)}")
        base = load_env(args.env)  # every input is checked here, before the first run trains
        values = parse_values(key, args.values)
        fixed = parse_settings(args.set, key)
        attack = AttackSettings(args.features, args.classifier, args.repeats)
        model = build_model(base.model.name, **base.model_kwargs())
        for spec in feature_sets(args.features, classifier=args.classifier, repeats=args.repeats):
            parse_features(spec, model)
        if args.cohort is not None and not args.cohort.is_file():
            raise FedsimError(f"--cohort {str(args.cohort)!r} is not a file")
        families = parse_families(args.families, SWEEP_FAMILIES)
        if "calibrated" in families:
            if args.references % 2:
                raise FedsimError(f"--references must be even (references come in complementary pairs), got {args.references}")
            parse_methods(DEFAULT_METHODS, args.references)  # LiRA's minimum, before anything trains
        out = args.out or Path("runs") / f"sweep-{base.name}-{key}"
        settings = plan_settings(args.env, key, values, fixed, out)
        command = shlex.join(["python", "-m", "attacks.sweep", "--env", args.env, "--defense", key,
                              "--values", ",".join(s.label for s in settings),
                              *(a for item in args.set for a in ("--set", item)), "--out", str(out), *attack.args(),
                              "--families", ",".join(families),
                              *(["--references", str(args.references)] if "calibrated" in families else []),
                              *(["--cohort", str(args.cohort)] if args.cohort else [])])
        console = Console(highlight=False)
        rows: list[dict[str, Any]] = []
        attribute: list[dict[str, Any]] = []
        notes: list[str] = []
        for s in settings:
            if not s.env_file.is_file() or s.env_file.read_text() != s.text:  # unchanged files keep their time stamps
                snapshots.write_text(s.env_file, s.text)
            load_env(s.env_file)  # the file as written loads (plan_settings checked the same data)
        # each value trained and attacked: in this process, or side by side as tasks of --executor ray
        serial = isinstance(current_executor(), SerialExecutor)
        task = EnvironmentTask(attack, tuple(families), attribute_controls=False, references=args.references,
                               cohort=args.cohort, device=args.device,
                               **({"say": console.print, "rule": console.rule, "bars": lambda: progress_bars(console)}
                                  if serial else {}))
        jobs = [(str(s.env_file), s.run_dir, f"[bold]{key} = {s.label}[/] ({i}/{len(settings)}): {s.env_file}")
                for i, s in enumerate(settings, start=1)]
        found = run_environments(task, jobs, rule=console.rule, done=None if serial else (
            lambda i, _: console.print(f"{key} = {settings[i].label}: trained and attacked")))
        for s, attacked in zip(settings, found):
            rows += sweep_rows(key, s, attacked.membership)
            attribute += [] if attacked.attribute is None else attribute_sweep_rows(key, s, attacked.attribute)
            if attacked.calibrated_skipped:
                notes.append(f"{key} = {s.label}: calibrated attacks skipped: {attacked.calibrated_skipped}.")
                console.print(f"[yellow]note:[/] {escape(notes[-1])}")
            elif attacked.calibrated is not None:
                rows += calibrated_sweep_rows(key, s, attacked.calibrated)
        frame = pd.DataFrame(rows)
        page = write_outputs(out, frame, command, f"Privacy–utility sweep of [defense] {key} on {base.name}",
                             pd.DataFrame(attribute), notes)
        shown = display_table(frame).drop(columns=list(CONSOLE_DROPS))
        table = Table(title=escape(f"[defense] {key} on {base.name}"))
        for col in shown.columns:
            table.add_column(col)
        for row in shown.itertuples(index=False):
            table.add_row(*(Text(str(v)) for v in row))
        console.print(table)
        print_frame(console, display_table(strongest_rows(frame))[[key, "ε", "unseen MAE", "attack", "AUC", "verdict"]],
                    escape(f"judged by the strongest attack: [defense] {key} on {base.name}"))
        for note in notes:
            console.print(f"[yellow]note:[/] {escape(note)}")
        if attribute:
            print_frame(console, attribute_display(pd.DataFrame(attribute)).drop(columns=["ε", "95% CI", "verdict"]),
                        escape(f"attribute inference: [defense] {key} on {base.name}"))
        console.print(f"sweep: {out / SWEEP_MD}, {out / SWEEP_CSV}, {out / SWEEP_PNG}, {page}")
        return 0

