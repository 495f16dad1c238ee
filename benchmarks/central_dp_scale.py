"""What learner-level (central) DP costs with few learners: ``python benchmarks/central_dp_scale.py RUN_DIR
[--epsilons 1,8,100] [--learners 8,100,1000]``.

Central DP (``[defense] central_dp``, :mod:`fedsim.defenses.central_dp`) clips each learner's update to C and adds
N(0, (z·C/n)²) to every weight of the average; fedsim's accountant protects the largest learner (effective multiplier
z·W/(n·max w)) over every round (each learner trains every round: no sampling). From a federation that kept its local
models, this measures the updates central DP would clip — each learner's ‖local model − the community model it
started from‖ at the run's last round — sets C at their median, and for each target ε (δ = 1e-5, over the run's
rounds) finds the z the accountant needs and compares the noise's norm on the average, z·C·√d / n over the model's
d weights, with the norm of the clipped, weighted average it is added to. The same ratio is given for n equal
learners (one learner's share of the subjects each), where the effective multiplier is z. Nothing is trained.
Writes ``benchmarks/results/central_dp_scale.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from results_table import machine

from attacks.target import Target, has_local_models, load_snapshot, open_run
from fedsim.errors import FedsimError
from fedsim.data.partition import learner_groups
from fedsim.defenses.central_dp import effective_noise_multiplier
from fedsim.defenses.dp_sgd import epsilon

RESULTS = Path(__file__).resolve().parent / "results" / "central_dp_scale.md"
DELTA = 1e-5


def multiplier_for(target: float, rounds: int, delta: float = DELTA) -> float:
    """The smallest effective noise multiplier (to 0.1 %) whose ``rounds`` full-participation Gaussian steps spend at
    most ``target`` ε at ``delta`` (bisection on the RDP accountant fedsim reports with)."""
    import warnings

    low, high = 1e-3, 1e4
    with warnings.catch_warnings():  # Opacus' note on the RDP orders at extreme ε: the bound is still valid
        warnings.simplefilter("ignore", UserWarning)
        while high / low > 1.001:
            mid = (low * high) ** 0.5
            low, high = (mid, high) if epsilon([(mid, 1.0, rounds)], delta) > target else (low, mid)
    return high


def updates(target: Target, rnd: int) -> tuple[dict[str, torch.Tensor], list[str], np.ndarray, int]:
    """Each learner's flattened update of round ``rnd``, the learners, their subject counts and the weight count."""
    run_dir = target.run_dir
    groups = learner_groups(target.partitions["group"])
    start = {k: v.detach().double() for k, v in load_snapshot(run_dir, rnd - 1).model.state_dict().items()
             if v.is_floating_point()}
    flat = {}
    for g in groups:
        local = load_snapshot(run_dir, rnd, name=g).model.state_dict()
        flat[g] = torch.cat([(local[k].double() - start[k]).reshape(-1) for k in start])
    counts = target.partitions["group"].value_counts()
    return flat, groups, np.array([counts[g] for g in groups], dtype=float), int(sum(v.numel() for v in start.values()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a federation trained with --snapshot-local")
    p.add_argument("--epsilons", default="1,8,100", help="target ε values at δ 1e-5 (default: 1,8,100)")
    p.add_argument("--learners", default="8,100,1000", help="numbers of equal learners to project to (default: 8,100,1000)")
    args = p.parse_args()
    try:
        targets = [float(e) for e in args.epsilons.split(",")]
        counts = [int(n) for n in args.learners.split(",")]
    except ValueError:
        raise SystemExit("error: --epsilons takes numbers and --learners integers, comma-separated") from None
    try:
        target = open_run(args.run)
        rounds = max(target.rounds)
        if not has_local_models(target, rounds):
            raise FedsimError(f"{args.run} kept no local models of round {rounds}; train with --snapshot-local")
        flat, groups, weights, d = updates(target, rounds)
    except FedsimError as e:
        raise SystemExit(f"error: {e}") from None
    norms = np.array([float(flat[g].norm()) for g in groups])
    clip = float(np.median(norms))
    clipped = sum(w / weights.sum() * flat[g] * min(1.0, clip / n) for g, w, n in zip(groups, weights, norms))
    signal = float(clipped.norm())
    lines = ["# Central (learner-level) DP: the noise it needs against the update it protects\n",
             f"`python benchmarks/central_dp_scale.py {args.run} --epsilons {args.epsilons} --learners {args.learners}`; "
             f"{machine()}, {time.strftime('%Y-%m-%d')}.\n",
             f"Run `{args.run.name}`: {len(groups)} learners holding {int(weights.min())}–{int(weights.max())} subjects, "
             f"{rounds} rounds, {d:,} weights. Round {rounds}'s update norms: {norms.min():.3f}–{norms.max():.3f} "
             f"(median {clip:.3f} = the clip C); the clipped, weighted average's norm: {signal:.3f}. "
             "Noise norm on the average: z·C·√d / n.\n",
             "| target ε (δ 1e-5) | learners | effective multiplier needed | z (central_noise_multiplier) "
             "| noise norm on the average | noise / clipped average |", "|---|---|---|---|---|---|"]
    for eps in targets:
        sigma = multiplier_for(eps, rounds)
        z = sigma * len(groups) * weights.max() / weights.sum()  # effective_noise_multiplier inverted
        assert abs(effective_noise_multiplier(z, weights) - sigma) < 1e-9 * sigma
        rows = [(f"{len(groups)} (this run's)", z, z * clip * d ** 0.5 / len(groups))]
        rows += [(f"{n} equal", sigma, sigma * clip * d ** 0.5 / n) for n in counts]
        for who, mult, noise in rows:
            lines.append(f"| {eps:g} | {who} | {sigma:.3f} | {mult:.3f} | {noise:.3f} | {noise / signal:.1f} |")
    lines.append("\nThe equal-learner rows keep this run's clip and average norm: a projection at them, not a training "
                 "run (more, smaller learners would have other updates).")
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
