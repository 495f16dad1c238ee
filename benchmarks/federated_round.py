"""What does Flower + Ray cost per round? ``python benchmarks/federated_round.py [--env skewed-noniid]``.

Times rounds of the real federation (``run_simulation``, one Ray actor per CPU, as
``python -m fedsim.run`` runs them) against the same work in a plain PyTorch loop in this
process: every learner trains ``local_epochs`` on its subjects from the same community model with
the same seeds and ``fedsim.training`` loop, the models are averaged by sample count, and the average
is scored on the unseen set — which is what one federated round does. Like with like: round 1 of
the federation (Ray's actor start-up) and one untimed plain round (first-call costs, the cache in
the page cache) are warm-ups; the later ``--rounds - 1`` (≥ 3) rounds are timed on both sides and
compared by their medians, reported with their ranges. Writes ``benchmarks/results/federated_round.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fedsim import snapshots
from fedsim.config import load_env, with_overrides
from fedsim.data.prepare import prepare_data
from fedsim.federation.run_setup import RunSetup, learner_seed, write_run_setup
from fedsim.federation.simulation import run_federation
from fedsim.models import build_model
from fedsim.training import evaluate, make_loader, make_optimizer, train_epochs
from results_table import append_row

RESULTS = Path(__file__).resolve().parent / "results" / "federated_round.md"


def plain_round(setup: RunSetup, state: dict[str, torch.Tensor], rnd: int) -> float:
    """One FedAvg round without Flower or Ray; returns its wall time in seconds."""
    cfg = setup.cfg
    start = time.perf_counter()
    total, average = 0, {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items()}
    for learner in setup.learners:
        dataset = setup.dataset(learner)
        seed = learner_seed(cfg.seed, rnd, learner)
        torch.manual_seed(seed)
        model = build_model(cfg.model.name, **cfg.model_kwargs())
        model.load_state_dict(state)
        train_epochs(model, make_loader(dataset, cfg.train.batch_size, shuffle=True, seed=seed),
                     make_optimizer(model.parameters(), cfg.train), loss=cfg.train.loss,
                     target_scale=cfg.model.target_scale, epochs=cfg.federation.local_epochs)
        for k, v in model.state_dict().items():
            average[k] += len(dataset) * v.double()
        total += len(dataset)
    model.load_state_dict({k: (v / total).float() for k, v in average.items()})
    evaluate(model, make_loader(setup.dataset("unseen"), max(cfg.train.batch_size, 16), shuffle=False))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="skewed-noniid")
    p.add_argument("--rounds", type=int, default=4, help="federated rounds; round 1 is the warm-up (default: 4)")
    p.add_argument("--local-epochs", type=int, help="override [federation] local_epochs")
    args = p.parse_args()
    if args.rounds < 4:
        p.error("--rounds must be at least 4: one warm-up and three timed rounds")

    cfg = with_overrides(load_env(args.env), federation={"rounds": args.rounds, "local_epochs": args.local_epochs})
    data = prepare_data(cfg)
    run_dir = Path(tempfile.mkdtemp(prefix="fedsim-bench-"))
    cpus = os.cpu_count() or 1
    write_run_setup(run_dir, cfg, data, {"cpus_per_learner": 1.0, "gpus_per_learner": 0.0})
    setup = RunSetup.load(run_dir)
    load_before = os.getloadavg()[0]

    start = time.perf_counter()
    run_federation(run_dir, len(setup.learners), cpus=1.0, gpus=0.0)
    wall = time.perf_counter() - start
    rounds = {m["round"]: m["seconds"] for m in snapshots.read_metrics(run_dir) if m["round"] > 0}
    timed = [rounds[r] for r in sorted(rounds) if r > 1]
    federated = statistics.median(timed)

    torch.set_num_threads(cpus)
    plain_round(setup, snapshots.load_round(run_dir, 0)[0], 1)  # warm-up, as round 1 is for Ray
    plain = []
    for rnd in range(2, args.rounds + 1):
        state, _ = snapshots.load_round(run_dir, rnd - 1)
        plain.append(plain_round(setup, state, rnd))
    baseline = statistics.median(plain)
    ratio = federated / baseline
    load_after = os.getloadavg()[0]

    machine = (f"{platform.processor() or platform.machine()}, nproc {cpus}, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads in the plain loop, 1 per Ray actor), "
               f"load average {load_before:.1f} → {load_after:.1f}")
    shape = "×".join(map(str, cfg.data.shape))
    lines = [
        f"machine: {machine}",
        f"{cfg.name}: {len(setup.learners)} learners, {sum(setup.sample_counts()[g] for g in setup.learners)} "
        f"subjects, {shape}, {cfg.federation.local_epochs} local epochs, batch {cfg.train.batch_size}",
        f"run_simulation wall {wall:.1f}s; round 1 (actor start-up) {rounds[1]:.1f}s; "
        f"later rounds {', '.join(f'{rounds[r]:.1f}' for r in sorted(rounds) if r > 1)}s",
        f"plain PyTorch loop per round {', '.join(f'{t:.1f}' for t in plain)}s",
        f"ratio federated / plain (medians of the warm rounds): {ratio:.2f}  (target ≤ 1.10)",
    ]
    print("\n".join(lines))
    append_row(RESULTS, "One federated round vs a plain PyTorch loop",
               ["env", "local epochs", "machine", "round 1 (s)", "federated round (s)", "plain round (s)", "ratio"],
               [cfg.name, cfg.federation.local_epochs, machine, f"{rounds[1]:.1f}",
                f"{federated:.1f} ({min(timed):.1f}–{max(timed):.1f}, n={len(timed)})",
                f"{baseline:.1f} ({min(plain):.1f}–{max(plain):.1f}, n={len(plain)}, after a warm-up)", f"{ratio:.2f}"])
    shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
