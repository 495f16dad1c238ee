"""How long ``fedsim audit`` takes: ``python benchmarks/audit_budget.py RUN_DIR [--budget quick]``.

Runs the audit (:func:`attacks.experiments.audit.run_audit`, what the command runs) on a run directory and
appends one row to ``benchmarks/results/audit.md``: the budget, wall time, each family's seconds, the
load average while it ran (the machine is shared: a loaded machine is slower) and the verdicts it
reached. The feature cache is cleared first, so the time includes every gradient and activation pass;
the preprocessed cohort (built once by training) is not. The README's target: the quick audit of the
default run in at most 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from results_table import append_row, machine

from attacks.experiments.audit import BUDGETS, run_audit
from attacks.reporting.audit import write_audit

RESULTS = Path(__file__).resolve().parent / "results" / "audit.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--budget", choices=list(BUDGETS), default="quick")
    args = p.parse_args()
    shutil.rmtree(args.run_dir / "attacks" / "features", ignore_errors=True)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = run_audit(args.run_dir, budget=args.budget)
    command = f"python benchmarks/audit_budget.py {args.run_dir} --budget {args.budget}"
    summary = write_audit(result, command=command).summary
    seconds = time.perf_counter() - start
    load = (load_before + os.getloadavg()[0]) / 2
    verdicts = "; ".join(f"{r.family}/{r.seat}: {r.verdict.split(' — ')[0]}" for r in summary.itertuples())
    append_row(RESULTS, "fedsim audit: wall time by budget (target: quick ≤ 15 min on 2 cores)",
               ["run", "budget", "wall", "membership / attribute / reconstruction s", "load avg", "verdicts", "machine"],
               [args.run_dir.name, args.budget, f"{seconds / 60:.1f} min",
                " / ".join(f"{result.seconds.get(f, 0):.0f}" for f in ("membership", "attribute", "reconstruction")),
                f"{load:.1f}", verdicts, machine()])


if __name__ == "__main__":
    main()
