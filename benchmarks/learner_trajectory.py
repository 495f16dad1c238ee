"""The malicious learner over every round against one round, at equal data:
``python benchmarks/learner_trajectory.py RUN_DIR [RUN_DIR …] --rounds 10,40``.

For each run and round R: the malicious learner's single-round ``error`` attack on the community model of round R
and its attack on the error over rounds 1..R (:mod:`attacks.membership.trajectory`), on the same plan — the same
attack-train subjects (its own and half the unseen scans), victims, draws, seed and classifier — each beside its
controls (round 0, age-matched non-members) and judged by the audit's verdicts for the seat's two attacks together.
The paired gain (trajectory − single round, on the same attacker × victim × draw) has its 95 % bootstrap interval
over victims. Appends to ``benchmarks/results/learner_trajectory.md``; one torch thread
(``OMP_NUM_THREADS=1``) is what its rows used on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from results_table import append_row, machine

from attacks.evaluation.summary import controls_table
from attacks.membership.classifiers import DEFAULT_CLASSIFIER
from attacks.membership.trained import run_attacks
from attacks.membership.trajectory import trajectory_attacks, trajectory_name, versus_single_round
from attacks.signals.cache import FeatureCache
from attacks.target import open_run
from fedsim.errors import FedsimError

RESULTS = Path(__file__).resolve().parent / "results" / "learner_trajectory.md"
SEAT = "malicious learner"
COLUMNS = ["run", "round", "draws", "attack", "verdict", "age-matched AUC [95 %]", "TPR@1% FPR", "accuracy",
           "gain in AUC over one round [95 %]", "seconds", "machine"]


def _cell(value: float, low: float, high: float) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def measure(run_dir: Path, rnd: int, repeats: int) -> list[list[object]]:
    """The two attacks' rows of the results table for one run and round."""
    start = time.perf_counter()
    target = open_run(run_dir)
    cache = FeatureCache(target)
    common = dict(threat="learner", feature_sets=["error"], classifier=DEFAULT_CLASSIFIER, repeats=repeats, cache=cache)
    single = run_attacks(target, rounds=[0, rnd], **common) + run_attacks(target, rounds=[rnd], age_matched=True, **common)
    rows = trajectory_attacks(target, rnd=rnd, classifier=DEFAULT_CLASSIFIER, repeats=repeats, cache=cache)
    results = pd.DataFrame(single + rows).assign(seat=SEAT)
    table = controls_table(results, rnd, by=["seat"]).set_index("features")
    gain = versus_single_round(results).set_index("control")
    seconds = round(time.perf_counter() - start)
    name = trajectory_name([r for r in target.rounds if 1 <= r <= rnd])
    out = []
    for features in ("error", name):
        r = table.loc[features]
        g = "—" if features == "error" else _cell(gain.loc["age-matched", "auc"], gain.loc["age-matched", "auc_low"],
                                                     gain.loc["age-matched", "auc_high"])
        out.append([run_dir.name, rnd, repeats, features, r["verdict"], _cell(r["matched_auc"], r["matched_auc_low"],
                    r["matched_auc_high"]), f"{r['tpr_at_1pct']:.3f}", f"{100 * r['attack']:.1f} %", g, seconds,
                    machine()])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="federated runs (each keeps every round's community model)")
    p.add_argument("--rounds", default="40", help="rounds attacked, comma-separated (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="draws of the attack sets (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(1)
    try:
        rounds = [int(r) for r in args.rounds.split(",")]
        for run_dir in args.runs:
            for rnd in rounds:
                for row in measure(run_dir, rnd, args.repeats):
                    append_row(RESULTS, "The malicious learner over every round against one round", COLUMNS, row)
                print(f"{run_dir.name} round {rnd}: done", file=sys.stderr)
    except (FedsimError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
