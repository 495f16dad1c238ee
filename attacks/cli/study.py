"""The whole study in one command: ``python -m attacks.study [--out DIR]``.

Trains the centralized baselines (3D-CNN and 2D-slice-mean) and the four federated environments
(or those named with ``--envs``; every federation keeps its local models, as ``--snapshot-local`` does,
so that ``fedsim seats`` and ``fedsim reconstruct`` can attack its runs), attacks every run as
``python -m attacks.run`` does and writes one summary in the layout of the paper's Table 1 (feature
sets × settings) plus a per-environment table of utility, memorisation and attack accuracy beside its
controls (:mod:`attacks.experiments.study`).
Each step is skipped when its output is on disk and still describes its inputs, and an interrupted
federated run is resumed, so re-running the same command redoes nothing that finished.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from attacks.cli.options import (
    add_attack_options, add_executor_options, add_families_option, executing, parse_families,
)
from attacks.experiments.names import DEFAULT_ENVS
from fedsim.cli import add_cohort_option, add_device_option, command_parser
from fedsim.cli.progress import progress_bars
from fedsim.config import available_environments, load_env
from fedsim.errors import FedsimError

if TYPE_CHECKING:
    import pandas as pd


def parser(prog: str = "python -m attacks.study") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "The whole study in one command: train and attack every environment.",
        "Trains the centralized baselines and the four federations (or --envs; each federation keeps its local models, for fedsim seats and fedsim reconstruct), attacks each run and writes the paper's Table 1 layout plus a table per environment. Anything on disk that still describes its inputs is reused, so rerunning the same command redoes nothing that finished.",
        examples=["--out runs/study", "--envs centralized,skewed-iid --repeats 3"])
    p.add_argument("--out", type=Path, default=Path("runs/study"), metavar="DIR", help="study directory (default: runs/study)")
    p.add_argument("--envs", default=",".join(DEFAULT_ENVS), metavar="ENVS",
                   help=f"comma-separated environments, from: {', '.join(available_environments())} "
                   f"(default: {', '.join(DEFAULT_ENVS)})")
    add_cohort_option(p)
    add_attack_options(p, seed=False)
    add_families_option(p)
    add_device_option(p)
    add_executor_options(p)
    return p


def print_frame(console: Console, frame: pd.DataFrame, title: str) -> None:
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col))
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m attacks.study") -> int:
    args = parser(prog).parse_args(argv)
    import pandas as pd

    from attacks.execution import SerialExecutor, current_executor
    from attacks.experiments.environments import EnvironmentTask, run_environments
    from attacks.experiments.study import AttackSettings, attribute_row, environment_row, pair_table, table1
    from attacks.reporting.attribute import attribute_table
    from attacks.reporting.markdown import write_summary
    from fedsim.device import using_device

    with using_device(args.device), executing(args):
        envs = [e.strip() for e in args.envs.split(",") if e.strip()]
        if not envs:
            raise FedsimError("--envs names no environment")
        names = {env: load_env(env).name for env in envs}  # a typo fails now, not after an hour of training
        if len(set(names.values())) < len(names):
            raise FedsimError(f"--envs names an environment twice: {', '.join(names.values())}")
        settings = AttackSettings(args.features, args.classifier, args.repeats)  # a typo fails before training, too
        families = parse_families(args.families)
        console = Console(highlight=False)
        # each environment trained and attacked: in this process, or side by side as tasks of --executor ray
        serial = isinstance(current_executor(), SerialExecutor)
        task = EnvironmentTask(settings, tuple(families), cohort=args.cohort, device=args.device, local_models=True,
                               **({"say": console.print, "rule": console.rule, "bars": lambda: progress_bars(console)}
                                  if serial else {}))
        jobs = [(env, args.out / name, "") for env, name in names.items()]
        found = run_environments(task, jobs, rule=console.rule, done=None if serial else (
            lambda i, _: console.print(f"{jobs[i][1].name}: trained and attacked")))
        results, rows, attribute = {}, [], []
        for (_, run_dir, _), attacked in zip(jobs, found):
            results[run_dir.name] = attacked.membership
            rows.append(environment_row(run_dir.name, run_dir, attacked.membership))
            attribute += [] if attacked.attribute is None else attribute_row(run_dir.name, attribute_table(attacked.attribute))
        per_env = pd.DataFrame(rows)
        t1 = table1(results, dict(zip(per_env["environment"], per_env["model"])))
        pairs = {r["environment"]: (f"{r['best_features']}, round {r['round']}",
                                    pair_table(results[r["environment"]], r["best_features"], r["round"]))
                 for r in rows if (results[r["environment"]]["threat"] == "learner").any()}
        command = shlex.join(["python", "-m", "attacks.study", "--out", str(args.out), "--envs", ",".join(envs),
                              *settings.args(), "--families", ",".join(families),
                              *(["--cohort", str(args.cohort)] if args.cohort else [])])
        path = write_summary(args.out, t1, per_env, command, pairs, pd.DataFrame(attribute))
        print_frame(console, t1, "attack accuracy % (Table 1 layout)")
        print_frame(console, per_env, "per environment")
        if attribute:
            print_frame(console, pd.DataFrame(attribute)[["environment", "question", "seat", "features", "auc", "label_only",
                                                          "round0"]], "attribute inference: AUC of each seat's best set")
        console.print(f"summary: {path}")
        return 0

