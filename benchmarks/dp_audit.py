"""Audited DP runs side by side: ``python benchmarks/dp_audit.py RUN_DIR [RUN_DIR …]``.

Reads what ``fedsim audit`` wrote into each run (``audit/summary.json``) and the run's ``DONE``: the audited
round, the model's unseen MAE, the accountant's ε beside the empirical lower bounds (the index's "Is the
reported ε honest?" table, :func:`attacks.reporting.audit.epsilon_rows`) and the membership verdict of every
seat. Writes ``benchmarks/results/dp_audit.md`` (or ``--out``); ``--curve PNG --baseline RUN`` also draws every
round of each run as the model it could release, its unseen MAE against the ε spent by then (DP-SGD: the largest
learner's; central DP: the learner-level ε), beside the non-private ``RUN``'s and predicting the training mean. Audit each run first, e.g. ``fedsim audit RUN --families
membership --canaries``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from privacy_utility_plot import save_frame
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
             f"{metrics[rnd]['unseen_mae']:.2f} years, its start's (round 0) {metrics[0]['unseen_mae']:.2f}.{spread}",
             "",
             "| ε | value | how |", "|---|---|---|"]
    lines += [f"| {r['what']} | {r['value']} | {r['how']} |" for r in epsilon_rows(audit["epsilon"])]
    lines += ["", "| seat | strongest membership attack | its number [95 % CI] | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['seat']} | {r['attack']} | {r['metric']} {r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | "
              f"{r['verdict']} |" for r in audit["summary"] if r["family"] == "membership"]
    return lines + [""]


def spent(metrics: dict) -> float:
    """The ε a round's model has spent: the largest DP-SGD accountant's, else central DP's, else 0 (the start)."""
    dp_sgd = snapshots.dp_sgd_epsilons(metrics)
    return max(dp_sgd) if dp_sgd else float(metrics.get("central_epsilon", 0.0))


def curve(runs: list[Path], baseline: Path, path: Path) -> None:
    """Each run's rounds as a privacy–utility curve: unseen MAE against the ε spent by then."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for i, run in enumerate(runs):
        rows = snapshots.read_metrics(run)
        defense = snapshots.read_config(run).get("defense", {})
        kind = f"central DP ({defense['central_dp']}-side)" if defense.get("central_dp") else "DP-SGD at every learner"
        ax.plot([spent(m) for m in rows], [m["unseen_mae"] for m in rows], "o-", ms=3, lw=1, color=f"C{i}",
                label=f"{run.name}: {kind}")
        for m in rows[1::3]:
            ax.annotate(str(m["round"]), (spent(m), m["unseen_mae"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points", color=f"C{i}")
    plain = snapshots.read_done(baseline)
    save_frame(ax, plain, f"no DP: {baseline.name}, round {plain['final_round']}",
               xlabel="ε spent after the round (δ = 1e-5; DP-SGD: the largest learner's; central DP: per learner)",
               title="DP federations, every round's community model (round 0: the start; numbers: rounds)", path=path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="audited run directories")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"the results file (default: {RESULTS.name})")
    p.add_argument("--curve", type=Path, help="also draw each run's rounds, MAE against ε, into this PNG")
    p.add_argument("--baseline", type=Path, help="the non-private run quoted (and, with --curve, drawn) beside them")
    args = p.parse_args()
    if args.curve and not args.baseline:
        raise SystemExit("error: --curve needs --baseline RUN (the non-private run drawn beside the DP runs)")
    out = "" if args.out == RESULTS else f" --out {args.out}"
    out += f" --curve {args.curve} --baseline {args.baseline}" if args.curve else ""
    lines = ["# Audited DP runs: the accountant's ε beside the empirical lower bounds", "",
             f"`python benchmarks/dp_audit.py {' '.join(map(str, args.runs))}{out}`; {machine()}, "
             f"{time.strftime('%Y-%m-%d')}.", ""]
    for run in args.runs:
        lines += section(run)
    if args.baseline:
        plain = snapshots.read_done(args.baseline)
        lines += [f"Beside them, without DP: `{args.baseline}`, round {plain['final_round']}: unseen MAE "
                  f"{plain['unseen_mae']:.2f} years; predicting its training mean: {plain['predict_mean_mae']:.2f}.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    if args.curve:
        curve(args.runs, args.baseline, args.curve)
        print(f"wrote {args.curve}")


if __name__ == "__main__":
    main()
