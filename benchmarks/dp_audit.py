"""Audited DP runs side by side: ``python benchmarks/dp_audit.py RUN_DIR [RUN_DIR …]``.

Reads what ``fedsim audit`` wrote into each run (``audit/summary.json``) and the run's ``DONE``: the audited
round, the model's unseen MAE, the accountant's ε beside the empirical lower bounds (the index's "Is the
reported ε honest?" table, :func:`attacks.reporting.audit.epsilon_rows`) and the membership verdict of every
seat. Writes ``benchmarks/results/dp_audit.md`` (or ``--out``). Audit each run first, e.g. ``fedsim audit RUN --families
membership --canaries``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from results_table import machine

from attacks.reporting.audit import SUMMARY_JSON, epsilon_rows
from fedsim import snapshots

RESULTS = Path(__file__).resolve().parent / "results" / "dp_audit.md"


def section(run_dir: Path) -> list[str]:
    """One run's lines: what was audited, the ε table and each seat's membership verdict."""
    path = run_dir / SUMMARY_JSON
    if not path.is_file():
        raise SystemExit(f"error: {run_dir} has no {SUMMARY_JSON}; audit it first: fedsim audit {run_dir} --canaries")
    audit = json.loads(path.read_text())
    if audit.get("epsilon") is None:
        raise SystemExit(f"error: the audit of {run_dir} has no ε (no membership family, or an older fedsim's); "
                         f"audit it again: fedsim audit {run_dir} --canaries")
    metrics = {m["round"]: m for m in snapshots.read_metrics(run_dir)}
    rnd = audit["round"]
    learners = sorted(snapshots.dp_sgd_epsilons(metrics[rnd]))
    spread = (f" Each learner's accountant: ε {learners[0]:.2f}–{learners[-1]:.2f}." if len(learners) > 1 else "")
    lines = [f"## `{run_dir}`, round {rnd}", "",
             f"`{audit['command']}` (budget {audit['budget']}); the audited model's unseen MAE "
             f"{metrics[rnd]['unseen_mae']:.2f} years.{spread}", "",
             "| ε | value | how |", "|---|---|---|"]
    lines += [f"| {r['what']} | {r['value']} | {r['how']} |" for r in epsilon_rows(audit["epsilon"])]
    lines += ["", "| seat | strongest membership attack | its number [95 % CI] | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['seat']} | {r['attack']} | {r['metric']} {r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | "
              f"{r['verdict']} |" for r in audit["summary"] if r["family"] == "membership"]
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="audited run directories")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"the results file (default: {RESULTS.name})")
    args = p.parse_args()
    out = "" if args.out == RESULTS else f" --out {args.out}"
    lines = ["# Audited DP runs: the accountant's ε beside the empirical lower bounds", "",
             f"`python benchmarks/dp_audit.py {' '.join(map(str, args.runs))}{out}`; {machine()}, "
             f"{time.strftime('%Y-%m-%d')}.", ""]
    for run in args.runs:
        lines += section(run)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
