"""Federated brain-age training: ``python -m fedsim.run --env skewed-noniid``.

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

from rich.console import Console
from rich.table import Table

from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.config import load_env, with_overrides
from fedsim.data.prepare import prepare_data
from fedsim.errors import FedsimError
from fedsim.federation import keys
from fedsim.federation.run_setup import RUN_TABLE, RunSetup, update_config, write_run_setup
from fedsim.federation.server_app import finish_run
from fedsim.federation.simulation import PRIVATE_RAY, learner_resources, ray_address, run_federation


def _print_summary(console: Console, setup: RunSetup, s: dict, seconds: float) -> None:
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


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fedsim.run", description=__doc__.splitlines()[0])
    p.add_argument("--env", help="environment name or .toml path, e.g. skewed-noniid (not with --resume)")
    p.add_argument("--rounds", type=int, help="override [federation] rounds (with --resume: extend the run)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<env>-<timestamp>)")
    p.add_argument("--seed", type=int, help="override the environment's seed")
    p.add_argument("--snapshot-local", action="store_true",
                   help="also keep every learner's local model of every round (for the curious-controller attack)")
    p.add_argument("--cohort", type=Path, help="manifest.csv of your own cohort (default: the embedded synthetic one)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR from its last complete round")
    p.add_argument("--ray-address", help="attach to this Ray cluster (default: $RAY_ADDRESS, else a private local Ray)")
    p.add_argument("--cpus-per-learner", type=float, default=1.0, help="CPUs per learner actor (default: 1)")
    p.add_argument("--gpus-per-learner", type=float,
                   help="GPUs per learner actor (default: shared CUDA GPUs if torch sees any, else 0)")
    p.add_argument("--prepare-only", action="store_true",
                   help="write the run directory and print the `flwr run` command instead of running")
    p.add_argument("--verbose", action="store_true", help="Flower's and Ray's own logs")
    return p.parse_args(argv)


def _run_dir(args: argparse.Namespace, console: Console) -> Path:
    """A fresh run directory, or the one to resume (after checking it)."""
    if args.rounds is not None and args.rounds < 1:
        raise FedsimError(f"--rounds must be at least 1, got {args.rounds}")
    if args.resume is not None:
        clash = [f"--{k}" for k in ("env", "seed", "cohort", "out") if getattr(args, k) is not None]
        clash += ["--snapshot-local"] if args.snapshot_local else []
        if clash:
            raise FedsimError(f"--resume continues a run with its own configuration; drop {', '.join(clash)}")
        setup = RunSetup.load(args.resume)
        done = snapshots.complete_rounds(args.resume)
        rounds = args.rounds or setup.cfg.federation.rounds
        if snapshots.is_done(args.resume) and done and done[-1] >= rounds:
            raise FedsimError(f"{str(args.resume)!r} finished all {done[-1]} rounds; pass --rounds N > {done[-1]} to extend it")
        if done and rounds < done[-1]:
            raise FedsimError(f"--rounds {rounds} is below the {done[-1]} rounds already in {str(args.resume)!r}")
        if args.rounds is not None:
            update_config(args.resume, "federation", rounds=args.rounds)
        (args.resume / snapshots.DONE_FILE).unlink(missing_ok=True)
        console.print(f"resuming {args.resume} after round {done[-1] if done else 'none'} of {rounds}")
        return args.resume
    if args.env is None:
        raise FedsimError("give --env NAME (e.g. --env skewed-noniid) or --resume RUN_DIR")
    cfg = with_overrides(load_env(args.env), seed=args.seed, federation={"rounds": args.rounds, "snapshot_local": args.snapshot_local or None})
    if cfg.partition.learners == 0:
        raise FedsimError(f"environment {cfg.name!r} is centralized (learners = 0); use python -m fedsim.centralized")
    data = prepare_data(cfg, args.cohort)
    run_dir = snapshots.new_run_dir(args.out, cfg.name)
    if snapshots.complete_rounds(run_dir):
        raise FedsimError(f"{str(run_dir)!r} already holds rounds of a run; continue it with --resume {run_dir}")
    write_run_setup(run_dir, cfg, data, {})
    console.print(f"[bold]{cfg.name}[/]: {data.manifest} → {run_dir}")
    return run_dir


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    console = Console(highlight=False)
    started = time.perf_counter()
    address = ray_address(args.ray_address)
    if args.gpus_per_learner is not None or args.cpus_per_learner != 1.0:  # fail before any data work
        learner_resources(1, cpus=args.cpus_per_learner, gpus=args.gpus_per_learner, cluster=address != PRIVATE_RAY)
    run_dir = _run_dir(args, console)
    setup = RunSetup.load(run_dir)
    learners = len(setup.learners)
    cpus, gpus = learner_resources(learners, cpus=args.cpus_per_learner, gpus=args.gpus_per_learner,
                                   cluster=address != PRIVATE_RAY)
    update_config(run_dir, RUN_TABLE, cpus_per_learner=cpus, gpus_per_learner=gpus)
    if args.prepare_only:
        console.print(f"prepared; run it with: flwr run . --stream --run-config \"{keys.RUN_DIR}='{run_dir.resolve()}'\" "
                      f"--federation-config \"num-supernodes={learners} client-resources-num-cpus={max(1, int(cpus))}\"",
                      soft_wrap=True)  # one line, to copy
        return 0
    console.print(f"{learners} learners × {setup.cfg.federation.rounds} rounds on Ray ({address}), "
                  f"{cpus:g} CPU + {gpus:g} GPU per learner")
    with _stop_on_signal(run_dir):
        run_federation(run_dir, learners, cpus=cpus, gpus=gpus, address=address, verbose=args.verbose)
    done = snapshots.complete_rounds(run_dir)
    if not done or done[-1] < setup.cfg.federation.rounds:
        raise FedsimError(f"the federation stopped after round {done[-1] if done else 'none'}; "
                          f"see above, then continue with --resume {run_dir}")
    # the ServerApp finished the run (learning curve, DONE) after its final round
    summary = snapshots.read_done(run_dir) if snapshots.is_done(run_dir) else finish_run(setup)
    _print_summary(console, setup, summary, time.perf_counter() - started)
    return 0


@contextmanager
def _stop_on_signal(run_dir: Path):
    """Ctrl-C / SIGTERM end the run at once, keeping every complete round.

    Flower's simulation loop does not stop on KeyboardInterrupt (the ServerApp thread keeps
    waiting for replies), so the process reports, shuts Ray down and exits here. Snapshots are
    never half-written (atomic renames), so ``--resume`` picks up cleanly.
    """
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


def _exit(code: int) -> None:
    """Exit, even if Flower left a non-daemon thread waiting (flower-notes §5): never hang."""
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    _exit(run_cli(main))
