"""Which learning rate trains the CPU model at the paper's schedule? ``python benchmarks/sgd_learning_rate.py``.

The paper's federated optimizer is plain SGD at batch 1 with lr 5e-5 — for the full 3D-CNN at 91×109×91, which
regresses raw years. The CPU model (75 k parameters at 36×43×36) regresses (age − 62.68) / 7.4, so its gradients
are on another scale and the paper's rate barely moves it. This runs the first ``--rounds`` rounds of
``paper-cpu-ENV`` (the very ServerApp and ClientApp, in this process, one thread) at each ``--lrs`` value and
appends the community model's unseen MAE per round to ``benchmarks/results/paper_schedule_lr.md``; the
``paper-cpu-*`` environments take the best. Two rounds per value took 6–7 minutes on one core of a busy
2-core machine.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from results_table import append_row, machine

from fedsim import snapshots
from fedsim.config import load_env, with_overrides
from fedsim.data.prepare import prepare_data
from fedsim.federation.local_grid import federate_in_process
from fedsim.federation.run_setup import write_run_setup

RESULTS = Path(__file__).resolve().parent / "results" / "paper_schedule_lr.md"


def unseen_mae_by_round(env: str, lr: float, rounds: int) -> list[float]:
    """The community model's unseen MAE after rounds 0..``rounds`` of ``env`` at learning rate ``lr``."""
    cfg = with_overrides(load_env(env), train={"lr": lr}, federation={"rounds": rounds, "snapshot_local": False})
    run_dir = Path(tempfile.mkdtemp(prefix="fedsim-lr-"))
    try:
        write_run_setup(run_dir, cfg, prepare_data(cfg), {"cpus_per_learner": 1.0, "gpus_per_learner": 0.0})
        federate_in_process(run_dir, rounds=rounds)
        return [m["unseen_mae"] for m in snapshots.read_metrics(run_dir)]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="paper-cpu-skewed-iid")
    p.add_argument("--lrs", default="5e-5,3e-3,1e-2,3e-2,1e-1", help="comma-separated (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    for lr in (float(v) for v in args.lrs.split(",")):
        maes = unseen_mae_by_round(args.env, lr, args.rounds)
        append_row(RESULTS, "Plain SGD at batch 1 on the CPU model: the learning rate (community model's unseen MAE)",
                   ["env", "lr", "unseen MAE by round (0, 1, …)", "machine"],
                   [args.env, f"{lr:g}", " → ".join(f"{m:.2f}" for m in maes), machine()])


if __name__ == "__main__":
    main()
