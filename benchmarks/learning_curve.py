"""What more rounds buy: ``python benchmarks/learning_curve.py RUN_DIR --rounds 10,20,30``.

For each round, the community model's MAE on its members (every learner's training subjects) and on the unseen
subjects, and the gap between them (memorisation), read as :func:`attacks.experiments.sweep.released_mae` reads
a sweep value's (through the run's feature cache: a round the attacks have already read costs nothing, another one
forward pass). Adds one row per round to ``benchmarks/results/learning_curve.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from results_table import append_row, machine

from attacks.experiments.sweep import released_mae
from attacks.target import open_run
from fedsim.errors import FedsimError

RESULTS = Path(__file__).resolve().parent / "results" / "learning_curve.md"
COLUMNS = ["run", "round", "unseen MAE", "members MAE", "gap (unseen − members)", "machine"]


def rows(run_dir: Path, rounds: list[int]) -> list[list[object]]:
    """One results row per round: the community model's unseen and members' MAE in years."""
    missing = sorted(set(rounds) - set(open_run(run_dir).rounds))
    if missing:
        raise FedsimError(f"{run_dir} has no community model of round {missing[0]}")
    out = []
    for rnd in rounds:
        unseen, members = released_mae(run_dir, rnd)
        out.append([run_dir.name, rnd, f"{unseen:.2f}", f"{members:.2f}", f"{unseen - members:+.2f}", machine()])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run directory")
    p.add_argument("--rounds", required=True, help="comma-separated rounds, e.g. 10,20,30")
    args = p.parse_args()
    try:
        rounds = [int(r) for r in args.rounds.split(",")]
    except ValueError:
        raise SystemExit(f"error: --rounds takes comma-separated integers, got {args.rounds!r}") from None
    try:
        for row in rows(args.run, rounds):
            append_row(RESULTS, "The community model's MAE by round: what more rounds buy", COLUMNS, row)
    except FedsimError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
