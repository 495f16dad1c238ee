"""The malicious learner at full strength against its passive attacks, per federation:
``python benchmarks/learner_seat.py RUN_DIR [RUN_DIR …] [--round R] [--references 8]``.

For each run: ``fedsim audit``'s membership family (the quick budget's feature sets and classifiers) with the
malicious learner's strong attacks switched on — its offline LiRA and RMIA with ``--references`` reference models
that replay the federation on its own subjects and unseen half (:mod:`attacks.membership.learner_calibrated`), its
attack on the error over every round it saw (:mod:`attacks.membership.trajectory`) and, on a run trained with
``[attack] active``, the active learner's loss-drop test. One row per run: the verdict of the seat's strongest
passive single-round attack (what the paper's classifiers give) beside the verdict of its strongest attack of
all, both judged by the audit's rule for all the seat's attacks together, and the calibrated attacks' TPR at
1 % FPR with the FPR their threshold, set on the learner's own non-members, keeps on the victims'. Appends to
``benchmarks/results/learner_seat.md``; one torch thread (``OMP_NUM_THREADS=1``) is what its rows used on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from results_table import append_row, machine

from attacks.evaluation import verdicts
from attacks.evaluation.summary import attack_counts, controls_table
from attacks.experiments.audit import Budget, run_audit
from attacks.reporting.audit import attack_rows
from attacks.threats.seats import SEAT_NAMES
from fedsim.errors import FedsimError

RESULTS = Path(__file__).resolve().parent / "results" / "learner_seat.md"
SEAT = SEAT_NAMES["learner"]
COLUMNS = ["run", "round", "references", "passive: strongest attack", "passive: verdict", "AUC [95 %]",
           "all attacks: strongest", "verdict", "AUC [95 %] ", "calibrated: TPR@1% FPR (FPR kept on victims)",
           "attacks judged", "seconds", "machine"]


def _budget(references: int) -> Budget:
    quick = "error,pred+label,grad_norm"
    return Budget("learner-full", features=quick, repeats=1, references=references, classifier="auto-quick",
                  trajectory=True)


def _cell(row: dict) -> str:
    return f"{row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def measure(run_dir: Path, rnd: int | None, references: int) -> list[object]:
    """One results row: the seat's strongest passive single-round attack and its strongest of all."""
    start = time.perf_counter()
    result = run_audit(run_dir, families="membership", budget=_budget(references), rnd=rnd)
    rows = attack_rows(result)
    mine = rows[rows["seat"] == SEAT]
    passive = mine[(mine["attack_kind"] == "trained classifier") & ~mine["attack"].str.contains("over rounds|active")]
    best_passive = verdicts.strongest(passive.to_dict("records"), score="value", upper="high")
    best = verdicts.strongest(mine.to_dict("records"), score="value", upper="high")
    calibrated = ""
    if result.calibrated is not None and len(result.calibrated):
        frame = result.calibrated[result.calibrated["seat"] == SEAT]
        tests = {k: n for f in (result.membership, result.calibrated) for k, n in attack_counts(f, ["seat"]).items()}
        table = controls_table(frame, result.round, by=["seat"], tests=tests) if len(frame) else frame
        calibrated = "; ".join(f"{r['features']} {r['tpr_at_1pct_fixed']:.3f} ({r['fpr_at_1pct_fixed']:.3f})"
                               for r in table.to_dict("records"))
    return [run_dir.name, result.round, references, best_passive["attack"], best_passive["verdict"],
            _cell(best_passive), best["attack"], best["verdict"], _cell(best), calibrated or "—", len(mine),
            round(time.perf_counter() - start), machine()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="federated runs (each keeps every round's community model)")
    p.add_argument("--round", type=int, default=None, help="round attacked (default: the last)")
    p.add_argument("--references", type=int, default=8, help="the learner's reference models (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(1)
    try:
        for run_dir in args.runs:
            row = measure(run_dir, args.round, args.references)
            append_row(RESULTS, "The malicious learner at full strength against its passive attacks", COLUMNS, row)
            print(f"{run_dir.name}: {row[7]}", file=sys.stderr)
    except (FedsimError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
