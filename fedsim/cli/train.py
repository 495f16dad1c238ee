"""``fedsim train`` / ``python -m fedsim.run --env skewed-noniid``: federated brain-age training.

Prepares the cohort and partitions, writes the run directory, runs FedAvg on Flower + Ray
(one virtual node per learner, a private local Ray unless ``--ray-address`` names a cluster)
and ends with a one-screen summary. ``--resume RUN_DIR`` continues an interrupted run from
its last complete round and reproduces the uninterrupted one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from fedsim.cli import add_cohort_option, add_out_option, command_parser
from fedsim.cli.progress import echo_rounds, progress_bars, say_start
from fedsim.config import available_environments, load_env, with_overrides
from fedsim.errors import FedsimError
from fedsim.federation import keys
from fedsim.progress import Progress
from fedsim.tracking import add_tensorboard_option, require_tensorboard, tensorboard

if TYPE_CHECKING:
    from fedsim.federation.run_setup import RunSetup


def _print_summary(console: Console, setup: RunSetup, s: dict, seconds: float) -> None:
    from fedsim import snapshots

    metrics = {m["round"]: m for m in snapshots.read_metrics(setup.run_dir)}
    counts = setup.sample_counts()
    table = Table(title=f"{setup.cfg.name}: community model after round {s['final_round']}")
    for col in ("subjects", "n", "last local train MAE", "community MAE"):
        table.add_column(col, justify="right" if col != "subjects" else "left")
    last = metrics.get(s["final_round"], {})
    for g in setup.learners:
        train = last.get(f"{g}_train_mae")
        table.add_row(g, str(counts[g]), "-" if train is None else f"{train:.2f}", f"{s['learner_mae'][g]:.2f}")
    table.add_row("members (all)", str(sum(counts[g] for g in setup.learners)), "", f"{s['members_mae']:.2f}")
    table.add_row("unseen", str(counts["unseen"]), "", f"[bold]{s['unseen_mae']:.2f}[/]")
    table.add_row("predict the mean", str(counts["unseen"]), "", f"{s['predict_mean_mae']:.2f}")
    console.print(table)
    curve = "  ".join(f"{r}: {m['unseen_mae']:.2f}" for r, m in sorted(metrics.items()))
    console.print(f"community unseen MAE by round  {curve}")
    console.print(f"memorisation gap (unseen − members): {s['memorisation_gap']:+.2f} years")
    if "epsilon" in s:
        eps = ", ".join(f"{k.removesuffix('_epsilon')} {v:.2f}" for k, v in s["epsilon"].items())
        console.print(f"privacy spent (ε at δ = {s['delta']:g}): {eps}")
    console.print(f"snapshots: {setup.run_dir / snapshots.ROUNDS_DIR} (rounds 0..{s['final_round']}); "
                  f"{seconds:.0f}s; done.")


def parser(prog: str = "python -m fedsim.run") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "Federated brain-age training: FedAvg on Flower + Ray, every round snapshotted.",
        "Prepares the cohort and partitions, writes the run directory, runs one virtual node per learner on a "
        "private local Ray (or the cluster of --ray-address) and ends with a one-screen summary. An interrupted "
        "run continues with --resume and reproduces the uninterrupted one.",
        examples=["--env skewed-noniid", "--env skewed-iid --snapshot-local --out runs/skewed-iid",
                  "--resume runs/skewed-iid --rounds 20"])
    p.add_argument("--env", help="environment name or .toml path (not with --resume); one of: "
                   + ", ".join(e for e in available_environments() if load_env(e).partition.learners))
    p.add_argument("--rounds", type=int, metavar="N", help="override [federation] rounds (with --resume: extend the run)")
    add_out_option(p)
    p.add_argument("--seed", type=int, metavar="N", help="override the environment's seed")
    p.add_argument("--snapshot-local", action="store_true",
                   help="also keep every learner's local model of every round (for the curious-controller attack)")
    add_cohort_option(p)
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR from its last complete round")
    p.add_argument("--ray-address", metavar="ADDRESS", help="attach to this Ray cluster (default: $RAY_ADDRESS, else a private local Ray)")
    p.add_argument("--cpus-per-learner", type=float, metavar="N", default=1.0, help="CPUs per learner actor (default: 1)")
    p.add_argument("--gpus-per-learner", type=float, metavar="N",
                   help="GPUs per learner actor (default: shared CUDA GPUs if torch sees any, else 0)")
    p.add_argument("--prepare-only", action="store_true",
                   help="write the run directory and print the `flwr run` command instead of running")
    add_tensorboard_option(p)
    p.add_argument("--verbose", action="store_true", help="Flower's and Ray's own logs")
    return p


def _run_dir(args: argparse.Namespace, console: Console, progress: Progress) -> Path:
    """A fresh run directory, or the one to resume (after checking it)."""
    from fedsim import snapshots
    from fedsim.federation.run_setup import RunSetup
    from fedsim.federation.runs import new_run, resume_run

    if args.resume is not None:
        clash = [f"--{k}" for k in ("env", "seed", "cohort", "out") if getattr(args, k) is not None]
        clash += ["--snapshot-local"] if args.snapshot_local else []
        if clash:
            raise FedsimError(f"--resume continues a run with its own configuration; drop {', '.join(clash)}")
        done = resume_run(args.resume, args.rounds)
        rounds = RunSetup.load(args.resume).cfg.federation.rounds
        console.print(f"resuming {args.resume} after round {done[-1] if done else 'none'} of {rounds}")
        return args.resume
    if args.env is None:
        raise FedsimError("give --env NAME (e.g. --env skewed-noniid) or --resume RUN_DIR")
    cfg = with_overrides(load_env(args.env), seed=args.seed, federation={"rounds": args.rounds, "snapshot_local": args.snapshot_local or None})
    run_dir = new_run(cfg, args.cohort, args.out, progress=progress)
    say_start(console, cfg.name, Path(snapshots.read_config(run_dir)["cohort"]["manifest"]), run_dir)
    return run_dir


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m fedsim.run") -> int:
    args = parser(prog).parse_args(argv)
    from fedsim.federation.run_setup import RunSetup
    from fedsim.federation.runs import check_options, federate, place_learners
    from fedsim.federation.simulation import ray_address

    console = Console(highlight=False)
    started = time.perf_counter()
    address = ray_address(args.ray_address)
    check_options(rounds=args.rounds, address=address, cpus=args.cpus_per_learner, gpus=args.gpus_per_learner)
    if args.tensorboard is not None:
        if args.prepare_only:
            raise FedsimError("--tensorboard logs the rounds this command runs; --prepare-only runs none (drop one)")
        require_tensorboard()
    with progress_bars(console) as progress:
        run_dir = _run_dir(args, console, progress)
    cpus, gpus = place_learners(run_dir, address=address, cpus=args.cpus_per_learner, gpus=args.gpus_per_learner)
    setup = RunSetup.load(run_dir)
    learners = len(setup.learners)
    if args.prepare_only:
        console.print(f"prepared; run it with: flwr run . --stream --run-config \"{keys.RUN_DIR}='{run_dir.resolve()}'\" "
                      f"--federation-config \"num-supernodes={learners} client-resources-num-cpus={max(1, int(cpus))}\"",
                      soft_wrap=True)  # one line, to copy
        return 0
    console.print(f"{learners} learners × {setup.cfg.federation.rounds} rounds on Ray ({address}), "
                  f"{cpus:g} CPU + {gpus:g} GPU per learner")
    with _stop_on_signal(run_dir), echo_rounds(console), tensorboard(args.tensorboard):
        summary = federate(run_dir, address=address, verbose=args.verbose)
    _print_summary(console, setup, summary, time.perf_counter() - started)
    return 0


@contextmanager
def _stop_on_signal(run_dir: Path):
    """Ctrl-C / SIGTERM end the run at once, keeping every complete round.

    Flower's simulation loop does not stop on KeyboardInterrupt (the ServerApp thread keeps
    waiting for replies), so the process reports, shuts Ray down and exits here. Snapshots are
    never half-written (atomic renames), so ``--resume`` picks up cleanly.
    """
    from fedsim import snapshots

    def stop(signum: int, frame: object) -> None:
        done = snapshots.complete_rounds(run_dir)
        last = f"rounds 0..{done[-1]} are" if done else "no round is"
        print(f"interrupted: {last} on disk; continue with --resume {run_dir}", file=sys.stderr, flush=True)
        import ray  # a private Ray's agents outlive a bare exit; give it 10 s to stop them

        stopper = threading.Thread(target=ray.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout=10)
        os._exit(130)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
