"""The options every attack command shares, defined once, with their choices from the registries."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from attacks.membership.names import CLASSIFIERS, DEFAULT_CLASSIFIER
from attacks.signals.names import feature_listing
from attacks.threats.names import DEFAULT_REPEATS
from fedsim.errors import FedsimError

if TYPE_CHECKING:
    from attacks.execution import Executor


def add_attack_options(p: argparse.ArgumentParser, *, features: str = "table1", seed: bool = True) -> None:
    """``--features``, ``--classifier``, ``--repeats`` (and ``--seed``) of a trained-classifier attack."""
    p.add_argument("--features", default=features, metavar="SETS",
                   help=f"'table1' (the paper's rows) or comma-separated feature sets, each a '+'-joined combination "
                   f"of: {feature_listing()}; e.g. error,pred+label,loss (default: {features})")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, choices=list(CLASSIFIERS), metavar="NAME",
                   help=f"attack classifier, one of: {', '.join(CLASSIFIERS)} (default: {DEFAULT_CLASSIFIER}: on each feature "
                   "set the best of a threshold, logistic regression, gradient boosting and the paper's deep classifier, "
                   "chosen by cross-validation on the attacker's own subjects)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, metavar="N",
                   help=f"independent draws of the attack sets (default: {DEFAULT_REPEATS})")
    if seed:
        p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the attack splits (default: 0)")


def add_run_dir(p: argparse.ArgumentParser, what: str = "a run directory written by fedsim train or fedsim centralized") -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=what)


#: The attack families a study runs on every run.
FAMILIES = ("membership", "attribute")
#: A sweep's: the study's, and the calibrated attacks (LiRA, RMIA), so that every defense point is judged by the
#: strongest attack, not only by trained classifiers.
SWEEP_FAMILIES = (*FAMILIES, "calibrated")


def add_families_option(p: argparse.ArgumentParser, families: Sequence[str] = FAMILIES) -> None:
    p.add_argument("--families", default=",".join(families), metavar="F",
                   help=f"attack families to run on every run, of: {', '.join(families)} (default: {','.join(families)}; "
                   "membership always runs)")


def parse_families(text: str, families: Sequence[str] = FAMILIES) -> list[str]:
    """``--families``: known names; membership is always among them (its table is the study's and sweep's spine)."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in names if f not in families]
    if bad:
        raise FedsimError(f"--families: unknown family {bad[0]!r}; choose from: {', '.join(families)}")
    return list(dict.fromkeys(["membership", *names]))


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """``--executor``, ``--ray-address``, ``--cpus-per-task``, ``--gpus-per-task``: where the command's
    independent tasks (reference models, shadow updates, sweep values, reconstruction sweep points) run, with training's
    Ray options."""
    p.add_argument("--executor", choices=("serial", "ray"), default=None,
                   help="where the independent tasks (reference models, shadows, sweep values, reconstruction sweep points) run: serial "
                   "(in this process, the default) or "
                   "ray (as Ray tasks: a private local Ray, or the cluster of --ray-address; implied by the Ray options)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="run the tasks on this Ray cluster (default with --executor ray: $RAY_ADDRESS, else a private local Ray)")
    p.add_argument("--cpus-per-task", type=float, metavar="N", help="CPUs per Ray task (default: 1)")
    p.add_argument("--gpus-per-task", type=float, metavar="N",
                   help="GPUs per Ray task, fractions share a GPU (default: 1 if torch sees CUDA, else 0)")


@contextlib.contextmanager
def executing(args: argparse.Namespace) -> Iterator[None]:
    """Inside, the command's trainings run where the options of :func:`add_executor_options` say (checked
    first, before any work); a Ray started for them stops on leaving."""
    from attacks.execution import RayExecutor, using_executor

    from attacks.execution import current_executor

    borrowed = current_executor()
    executor = executor_of(args)
    try:
        with using_executor(executor):
            yield
    finally:
        if isinstance(executor, RayExecutor) and executor is not borrowed:  # a caller's executor stays the caller's
            executor.close()


def executor_of(args: argparse.Namespace) -> Executor:
    """The executor the options of :func:`add_executor_options` ask for; without them, the enclosing
    :func:`~attacks.execution.using_executor`'s (serial by default), so a caller can run a command's tasks its way."""
    from attacks.execution import RayExecutor, SerialExecutor, current_executor

    ray_options = [f"--{name.replace('_', '-')}" for name in ("ray_address", "cpus_per_task", "gpus_per_task")
                   if getattr(args, name) is not None]
    if args.executor == "serial" and ray_options:
        raise FedsimError(f"{ray_options[0]} places Ray tasks; drop it or use --executor ray")
    if args.executor == "serial":
        return SerialExecutor()
    if args.executor is None and not ray_options:
        return current_executor()
    return RayExecutor(address=args.ray_address, cpus=1.0 if args.cpus_per_task is None else args.cpus_per_task,
                       gpus=args.gpus_per_task)
