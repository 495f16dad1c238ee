"""What does running the attack side's trainings as Ray tasks cost? ``python benchmarks/ray_overhead.py``.

Times the calibrated attack (:func:`attacks.membership.calibrated.run_calibrated`, ``--references`` reference
models trained anew each time) on a small centralized run, in this process (:class:`attacks.execution.SerialExecutor`)
and as Ray tasks of ``--cpus-per-task`` CPUs on a private local Ray (:class:`attacks.execution.RayExecutor`).
Ray starts once, before any timing (its start-up is reported apart), and each side runs once untimed (warm-up);
then ``--repeats`` timed runs alternate serial and Ray so that a change in the machine's load hits both. Reports
the medians and ranges, the ratio Ray / serial of the medians (target ≤ 1.10 with 8 references) and checks that
both give the same reference predictions; appends a row to ``benchmarks/results/ray_overhead.md`` (``--out``).
Serial runs with torch's threads of this process (``--threads``, default: one per CPU core), Ray's tasks with
``max(1, int(cpus))`` each, as the commands do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from attacks.execution import RayExecutor, SerialExecutor, using_executor
from attacks.membership.calibrated import run_calibrated
from attacks.target import open_run
from fedsim.cli import centralized
from results_table import append_row, machine

RESULTS = Path(__file__).resolve().parent / "results" / "ray_overhead.md"


def _timed(run: Path, copy: Path, executor, references: int) -> tuple[float, np.ndarray]:
    """Seconds of one calibrated attack on a fresh copy of ``run`` (its references trained anew)."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("attacks"))
    target = open_run(copy)
    with using_executor(executor):
        start = time.perf_counter()
        _, _, refs = run_calibrated(target, references=references, methods=["loss", "rmia"], controls=False)
        seconds = time.perf_counter() - start
    assert len(refs.trained) == references
    return seconds, refs.predictions


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="centralized", help="centralized environment to train the target in "
                   "(default: centralized, the CPU profile: about 3 s per reference-epoch on 2 cores)")
    p.add_argument("--epochs", type=int, default=1, help="the target's epochs, so each reference's (default: 1)")
    p.add_argument("--run", type=Path, help="attack this trained centralized run instead of training one")
    p.add_argument("--references", type=int, default=8, help="reference models per attack (default: 8)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side (default: 3)")
    p.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per Ray task (default: 1)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the serial side")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results table (default: {RESULTS})")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedsim-ray-overhead-"))
    try:
        run = args.run
        if run is None:
            run = work / "target"
            centralized.main(["--env", args.env, "--out", str(run), "--epochs", str(args.epochs)])
        torch.set_num_threads(args.threads)
        load_before = os.getloadavg()[0]
        ray_side = RayExecutor(address="local", cpus=args.cpus_per_task, gpus=0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            ray_side.map(abs, [0])  # starts Ray (and one worker): not part of any timing
        ray_start = time.perf_counter() - start
        sides = {"serial": SerialExecutor(), "ray": ray_side}
        times: dict[str, list[float]] = {name: [] for name in sides}
        predictions = {}
        for repeat in range(args.repeats + 1):  # repeat 0 warms both up, untimed
            for name, executor in sides.items():
                seconds, predictions[name] = _timed(run, work / name, executor, args.references)
                if repeat:
                    times[name].append(seconds)
                print(f"{'warm-up' if not repeat else f'repeat {repeat}'}: {name} {seconds:.2f}s", flush=True)
        ray_side.close()
        same = bool(np.array_equal(predictions["serial"], predictions["ray"]))
        ratio = statistics.median(times["ray"]) / statistics.median(times["serial"])
        target = open_run(run)
        setting = (f"{args.references} references × {target.best_round} epochs, "
                   f"{'×'.join(map(str, target.cohort.volumes.shape[1:]))}, {len(target.cohort.subject_ids)} subjects")
        print(f"{setting}: serial {_spread(times['serial'])}s, Ray {_spread(times['ray'])}s, ratio {ratio:.3f} "
              f"(Ray start {ray_start:.1f}s, excluded); identical predictions: {same}")
        append_row(args.out, "The calibrated attack as Ray tasks against in process",
                   ["machine", "setting", "serial threads", "CPUs per task", "serial s, median [range]",
                    "Ray s, median [range]", "Ray / serial", "Ray start (s, excluded)", "identical", "load"],
                   [machine(), setting, args.threads, f"{args.cpus_per_task:g}", _spread(times["serial"]),
                    _spread(times["ray"]), f"{ratio:.3f}", f"{ray_start:.1f}", same,
                    f"{load_before:.1f} → {os.getloadavg()[0]:.1f}"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
