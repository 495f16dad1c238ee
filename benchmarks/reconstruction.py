"""Quality against time of one feature inversion on the CPU profile: ``python benchmarks/reconstruction.py [--run RUN_DIR]``.

For a 36x43x36 scan and the CPU-default brain-age CNN (a finished run's last community model), times
``--repeats`` white-box inversions of ``conv1``'s activations at each number of inversion steps, and
reports the median seconds (range) and the median SSIM gain over the prior. Gradient inversion has its
own benchmark, with every attack and its strength: ``benchmarks/gradient_inversion.py``.
An untimed 20-step inversion first pays the first-call costs. The budget is 3 minutes per
reconstruction on 2 cores. Writes ``benchmarks/results/reconstruction.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from attacks.reconstruction.features import activations, invert_activations
from attacks.reconstruction.optimize import Inversion
from attacks.reconstruction.run import Scans
from attacks.target import load_snapshot, open_run
from results_table import append_row, machine

RESULTS = Path(__file__).resolve().parent / "results" / "reconstruction.md"
BUDGET_S = 180.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/study/skewed-iid"),
                   help="a CPU-profile run (default: the study's, fedsim study --out runs/study; or any run of "
                   "fedsim train --env skewed-iid)")
    p.add_argument("--steps", default="100,250,500,1000")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(2)
    target = open_run(args.run)
    scans = Scans(target)
    model = load_snapshot(args.run, target.rounds[-1]).model.to(scans.device)
    victims = scans.ids(sorted(set(target.partitions["group"]) - {"unseen", "val"})[0])[: args.repeats]
    shape = "x".join(map(str, target.cohort.volumes.shape[1:]))

    def features(sid: str, settings: Inversion) -> torch.Tensor:
        with torch.no_grad():
            held = activations(model, "conv1", scans.volumes([sid]))
        return invert_activations(model, "conv1", held, scans.prior, settings=settings, bounds=scans.bounds)

    for name, attack in (("features, conv1, white-box", features),):
        attack(victims[0], Inversion(iterations=20))  # warm-up, untimed
        for steps in (int(s) for s in args.steps.split(",")):
            seconds, gains = [], []
            for sid in victims:
                t0 = time.perf_counter()
                image = attack(sid, Inversion(iterations=steps))
                seconds.append(time.perf_counter() - t0)
                (q,) = scans.score(image, [sid], victims)
                gains.append(q["ssim_gain"])
            med = statistics.median(seconds)
            append_row(RESULTS, "One reconstruction: quality against time (CPU profile)",
                       ["attack", "volume", "steps", "machine", "seconds (median, range)", "share of 3 min",
                        "SSIM gain over prior (median)", "n"],
                       [name, shape, steps, f"{machine()}, torch {torch.__version__} (2 threads)",
                        f"{med:.1f} ({min(seconds):.1f}–{max(seconds):.1f})", f"{med / BUDGET_S:.2f}",
                        f"{np.median(gains):+.3f}", len(seconds)])


if __name__ == "__main__":
    main()
