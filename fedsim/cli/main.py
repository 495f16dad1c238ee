"""The ``fedsim`` command: one front door to every stage, each the same parser as its ``python -m`` twin."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from fedsim.cli import exit_process, run_cli

# stage: (module whose main(argv, prog=…) it runs, one line for the list)
STAGES: dict[str, tuple[str, str]] = {
    "cohort": ("fedsim.cli.cohort", "write a synthetic T1 cohort (NIfTI + manifest.csv)"),
    "train": ("fedsim.cli.train", "federated training: FedAvg on Flower + Ray"),
    "centralized": ("fedsim.cli.centralized", "the centralized baseline"),
    "import": ("fedsim.cli.importing", "your own trained model (checkpoints, membership) as a run dir"),
    "audit": ("attacks.cli.audit", "every attack family from every seat: a verdict per seat"),
    "attack": ("attacks.cli.run", "membership inference on a run, with its controls"),
    "seats": ("attacks.cli.seats", "learner, controller and outsider attack the same victims"),
    "calibrated": ("attacks.cli.calibrated", "LiRA and RMIA with reference models"),
    "attribute": ("attacks.cli.attribute", "sex and site from every seat; learners' cohort properties"),
    "reconstruct": ("attacks.cli.reconstruct", "gradient, feature and model inversion of scans"),
    "study": ("attacks.cli.study", "train and attack every environment: Table 1"),
    "sweep": ("attacks.cli.sweep", "privacy-utility sweep of one defense"),
}

PIPELINE = """\
  1. data    fedsim cohort                       NIfTI + manifest, or your own
  2. train   fedsim train | centralized | import  a run dir, snapshots per round
  3. attack  fedsim audit | attack | seats | …   every family from every seat
  4. report  RUN_DIR/audit/index.html            a verdict per seat, linked
  5. study   fedsim study | sweep                every environment; defenses"""


def usage() -> str:
    stages = "\n".join(f"  {name:<12} {line}" for name, (_, line) in STAGES.items())
    return (f"usage: fedsim STAGE [options]   (fedsim STAGE --help: its options and examples)\n\n"
            f"Federated brain-age learning on 3D MRI, simulated, then audited for leakage.\n\n"
            f"pipeline:\n{PIPELINE}\n\nstages:\n{stages}\n\n"
            f"examples:\n  fedsim train --env skewed-iid --snapshot-local --out runs/skewed-iid\n"
            f"  fedsim audit runs/skewed-iid\n  fedsim seats runs/skewed-iid\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``fedsim STAGE ARGS…`` to the stage's ``main``; no stage or ``--help`` prints the usage."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["help"] and len(argv) > 1:  # fedsim help train = fedsim train --help
        argv = [argv[1], "--help"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    if argv[0] == "--version":
        try:
            print(f"fedsim {version('fedsim')}")
        except PackageNotFoundError:
            print("fedsim (not installed as a package: pip install -e .)")
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; choose one of: {', '.join(STAGES)} (fedsim --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[stage][0])
    return run_cli(lambda args: module.main(args, prog=f"fedsim {stage}"), rest)


def entry_point() -> None:
    """``[project.scripts] fedsim``."""
    exit_process(main())


if __name__ == "__main__":
    entry_point()
