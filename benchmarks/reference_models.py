"""What do calibrated attacks cost? ``python benchmarks/reference_models.py [--env centralized] [--references 2]``.

Trains ``--references`` reference models exactly as :mod:`attacks.calibrated` does (the
environment's model, optimizer, loop and ``[defense]``, each on a random half of the attacker's
known subjects of the centralized split, for ``--epochs``), then asks for them again to time the
cache. Reports seconds per reference, per reference-epoch and per subject attacked for the
default 8 references (the attack-test set of the same split is what the attack scores), and appends
a row to ``benchmarks/results/reference_models.md``. Scale to another target epoch linearly: the
reference cost is the training loop, epoch after epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attacks.membership.calibration import DEFAULT_REFERENCES
from attacks.membership.calibrated import centralized_population
from attacks.membership.references import ReferencePlan, ensure_references
from fedsim.config import load_env
from fedsim.data.prepare import prepare_data
from results_table import append_row

RESULTS = Path(__file__).resolve().parent / "results" / "reference_models.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="centralized")
    p.add_argument("--references", type=int, default=2, help="references to train and time (default: 2, one pair)")
    p.add_argument("--epochs", type=int, help="epochs per reference (default: the environment's [train] epochs)")
    args = p.parse_args()

    cfg = load_env(args.env)
    epochs = args.epochs or cfg.train.epochs
    data = prepare_data(cfg)
    split, population = centralized_population(data.partitions, data.cohort, seed=0, where=f"environment {cfg.name!r}")
    attacked = len(split.test_members) + len(split.test_nonmembers)
    run_dir = Path(tempfile.mkdtemp(prefix="fedsim-refs-"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = ReferencePlan(cfg.to_dict(manifest=data.manifest), population, epochs, 0)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    refs = ensure_references(plan, data.cohort, run_dir, references=args.references, device=device)
    trained = time.perf_counter() - start
    start = time.perf_counter()
    again = ensure_references(plan, data.cohort, run_dir, references=args.references, device=device)
    reused = time.perf_counter() - start
    assert not again.trained and np.array_equal(again.predictions, refs.predictions)
    per_ref = trained / args.references
    per_subject = DEFAULT_REFERENCES * per_ref / attacked

    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    machine = (f"{name}, nproc {os.cpu_count()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
               f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f}")
    lines = [
        f"machine: {machine}",
        f"{cfg.name}: {len(population)} known subjects, each reference trains on {int(refs.keep[0].sum())} for {epochs} "
        f"epochs (batch {cfg.train.batch_size}, {'×'.join(map(str, cfg.data.shape))})",
        f"{args.references} references in {trained:.1f}s: {per_ref:.1f}s each, {per_ref / epochs:.2f}s per reference-epoch; "
        f"train MAE {', '.join(f'{m:.2f}' for m in refs.train_mae)}",
        f"{DEFAULT_REFERENCES} references per attack of {attacked} subjects: {per_subject:.2f}s per subject attacked",
        f"second call (cache): {reused:.2f}s",
    ]
    print("\n".join(lines))
    append_row(RESULTS, "Reference-model training for calibrated attacks",
               ["env", "machine", "known subjects", "epochs", "s per reference", "s per reference-epoch",
                f"s per subject attacked ({DEFAULT_REFERENCES} refs)", "cache reuse (s)"],
               [cfg.name, machine, len(population), epochs, f"{per_ref:.1f}", f"{per_ref / epochs:.2f}",
                f"{per_subject:.2f}", f"{reused:.2f}"])
    shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
