"""The four default federations, trained and timed: ``python benchmarks/default_runs.py [--envs …] [--out runs/default]``.

Trains each environment as a user does (``python -m fedsim.run --env ENV --out OUT/ENV``, a fresh run directory,
the synthetic cohort already cached), times the whole command (imports, Ray start-up, every round, the summary)
and writes ``benchmarks/results/default_runs.md``: per environment the wall time, the round times, the community
model's unseen MAE round by round, its members' MAE and the gap at the last round, and each learner's MAE on its
own subjects (the run's ``DONE``). The tuning behind the default schedule is in ``default_tuning.md``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from results_table import machine

from fedsim import snapshots

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "default_runs.md"
ENVS = ("skewed-noniid", "skewed-iid", "uniform-iid", "uniform-noniid")


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


def train(env: str, out: Path) -> float:
    """Seconds of the whole training command, in a fresh directory."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fedsim.run", "--env", env, "--out", str(out)], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"error: training {env} failed (exit {done.returncode})")
    return time.perf_counter() - start


def rows(env: str, out: Path, seconds: float) -> tuple[str, str]:
    """The environment's row of the summary table and of the per-learner table."""
    metrics = snapshots.read_metrics(out)
    done = snapshots.read_done(out)
    rounds = [m["seconds"] for m in metrics if m["round"] > 0]
    curve = " ".join(f"{m['unseen_mae']:.2f}" for m in metrics)
    summary = (f"| `{env}` | {minutes(seconds)} | {min(rounds):.0f}–{max(rounds):.0f} | {curve} | "
               f"**{done['unseen_mae']:.2f}** | {done['members_mae']:.2f} | {done['memorisation_gap']:+.2f} |")
    learners = " | ".join(f"{v:.2f}" for v in done["learner_mae"].values())
    return summary, f"| `{env}` | {learners} | {done['predict_mean_mae']:.2f} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", default=",".join(ENVS), help=f"comma-separated environments (default: {','.join(ENVS)})")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "default", help="where the runs go (default: runs/default)")
    args = p.parse_args()
    envs = [e for e in args.envs.split(",") if e]
    summary, learners = [], []
    for env in envs:
        seconds = train(env, args.out / env)
        a, b = rows(env, args.out / env, seconds)
        summary.append(a)
        learners.append(b)
    width = len(snapshots.read_done(args.out / envs[0])["learner_mae"])
    text = [
        "# Default federated runs on the CPU profile", "",
        f"`python benchmarks/default_runs.py --envs {','.join(envs)}`: each `python -m fedsim.run --env ENV --out "
        f"runs/default/ENV` timed as a whole (imports, Ray start-up, every round, the summary; the synthetic cohort "
        f"already cached); {machine()}, no GPU, {time.strftime('%Y-%m-%d')}. The CPU default: 10 rounds × 4 local "
        "epochs of Adam 1e-3 at batch 8, one Ray actor of 1 CPU and 1 torch thread per learner "
        "([why](default_tuning.md)).", "",
        "| environment | wall time | round times (s) | community unseen MAE, round 0 → last | final | members MAE | "
        "gap (unseen − members) |", "|---|---|---|---|---|---|---|", *summary, "",
        "Each learner's MAE on its own subjects at the last round, and predicting the members' mean age on the unseen "
        "set:", "",
        "| environment | " + " | ".join(f"L{i + 1}" for i in range(width)) + " | predicting the mean |",
        "|---|" + "---|" * (width + 1), *learners, ""]
    RESULTS.write_text("\n".join(text))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
