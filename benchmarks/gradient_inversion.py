"""Which gradient inversion is strongest, and what more steps buy: ``python benchmarks/gradient_inversion.py RUN_DIR``.

The update attacked is the strongest case a curious controller meets: one SGD step at batch 1 (the paper's
federated recipe) on one of a learner's scans, from the community model of the run's last round, trained by
fedsim's own local loop (:func:`attacks.signals.updates.train_update`, as the sweep trains its points).

``--compare`` runs every attack of :data:`ATTACKS` at ``--steps`` and writes one row each to
``benchmarks/results/gradient_inversion.md``: SSIM and its gain over the prior, the correlation of
(reconstruction - prior) with (truth - prior), identified, the objective reached beside its value at the
truth, the prior and another subject, the return test and the positive control. ``--budgets 100,300,…``
runs one attack (``--attack``) at each number of steps, one scan, and adds the curve of quality against
steps and seconds (``gradient_inversion_budget.png``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from attacks.reconstruction.optimize import Inversion
from attacks.reconstruction.run import Scans, control_columns, strength_columns, victim_group
from attacks.reconstruction.strength import GradientAttack
from attacks.reconstruction.sweep import paper_recipe
from attacks.signals.updates import Recipe, train_update
from attacks.target import load_snapshot, open_run
from fedsim import snapshots
from results_table import append_row, machine

RESULTS = Path(__file__).resolve().parent / "results"
#: the attacks compared: Inverting Gradients as fedsim ran it, a plain, independent Adam, and each addition
ATTACKS = {
    "ig-signed": GradientAttack(Inversion(update="signed", tv=1e-3), weighting="global", constraints=False),
    "adam": GradientAttack(Inversion(update="adam", tv=1e-4), weighting="global", constraints=False),
    "adam-constraints": GradientAttack(Inversion(update="adam", tv=1e-4, project="zscore"), constraints=True),
    "signed-layer-constraints": GradientAttack(Inversion(update="signed", tv=1e-4, project="zscore"), weighting="layer",
                                               constraints=True),
    "lbfgs-constraints": GradientAttack(Inversion(update="lbfgs", tv=1e-4, project="zscore"), constraints=True),
    "lbfgs-layer": GradientAttack(Inversion(update="lbfgs", tv=1e-4), weighting="layer", constraints=False),
    "lbfgs-layer-constraints": GradientAttack(Inversion(update="lbfgs", tv=1e-4, project="zscore"), weighting="layer",
                                              constraints=True),
    "pca-adam-constraints": GradientAttack(Inversion(update="adam", tv=0.0, step_size=0.05), prior="pca",
                                           components=99, constraints=True),
}
COLUMNS = ["attack", "steps x restarts", "machine", "SSIM / prior", "gain", "residual corr / others (rank)", "identified",
           "objective reached / truth / prior / other", "return test: SSIM start → end, distance closed",
           "control gain", "s"]


def plot_budget(curve: list[tuple[int, float, float, float]], title: str) -> Figure:
    """SSIM gain and residual correlation against steps and against minutes, from (steps, seconds, gain,
    correlation) rows."""
    fig = Figure(figsize=(9, 3.4))
    by_steps, by_time = fig.subplots(1, 2)
    for ax, x, name in ((by_steps, [c[0] for c in curve], "inversion steps"),
                        (by_time, [c[1] / 60 for c in curve], "minutes of one inversion (this machine)")):
        ax.plot(x, [c[2] for c in curve], marker="o", label="SSIM gain over the prior")
        ax.plot(x, [c[3] for c in curve], marker="s", label="corr(rec − prior, truth − prior)")
        ax.axhline(0, color="grey", lw=1, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    by_steps.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a CPU-profile federation (fedsim train --env skewed-iid)")
    p.add_argument("--round", type=int, help="the community model attacked (default: the last)")
    p.add_argument("--subject", type=int, default=0, help="which of the first learner's scans (default: 0)")
    p.add_argument("--compare", default=",".join(ATTACKS), help="attacks to compare (default: all)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--budgets", help="steps for the quality-against-steps curve of --attack, e.g. 100,300,1000")
    p.add_argument("--attack", default="adam", help="the attack of the --budgets curve (default: adam, fedsim's default)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    target = open_run(args.run)
    scans = Scans(target)
    rnd = args.round or target.rounds[-1]
    model = load_snapshot(args.run, rnd).model.to(scans.device)
    config = snapshots.read_config(args.run)
    recipe = paper_recipe(Recipe.of_run(config, batch_size=1, epochs=1))
    group = victim_group(target, None)
    victims = scans.ids(group)
    sid = victims[args.subject]
    update = train_update(config, model, target.cohort, target.cohort.index_of([sid]), recipe)
    where = f"{args.run.name} round {rnd}, {group}'s {sid}, 1 SGD step at batch 1"

    def one(name: str, attack: GradientAttack) -> dict:
        basis = attack.basis(lambda: scans.volumes(scans.own))
        t0 = time.perf_counter()
        found, _ = attack.invert(model, update, scans.prior, recipe, ages=scans.ages([sid]), basis=basis,
                                 bounds=scans.bounds)
        seconds = time.perf_counter() - t0
        q = scans.score(found.x, [sid], victims)[0]
        return {"name": name, "seconds": seconds, "reached": found.value, **q,
                **strength_columns(scans, attack, model, update, recipe, [sid], ages=scans.ages([sid]), basis=basis),
                **control_columns(scans, attack, basis)}

    def record(r: dict, attack: GradientAttack) -> None:
        s = attack.settings
        append_row(RESULTS / "gradient_inversion.md", "Gradient inversion of one scan's one-step update: which attack, how long",
                   ["where", *COLUMNS],
                   [where, f"{r['name']} ({attack.label})", f"{s.iterations} x {s.restarts}",
                    f"{machine()}, torch {torch.__version__} ({args.threads} threads)",
                    f"{r['ssim']:.3f} / {r['ssim_prior']:.3f}", f"{r['ssim_gain']:+.3f}",
                    f"{r['residual_corr']:+.3f} / {r['residual_corr_others']:+.3f} ({r['residual_rank']} of {round(1 / r['chance'])})",
                    f"{r['identified']:.0f} (chance {r['chance']:.3f})",
                    f"{r['reached']:.3f} / {r['objective_truth']:.3f} / {r['objective_prior']:.3f} / {r['objective_other']:.3f}",
                    f"{r['return_ssim_start']:.3f} → {r['return_ssim_end']:.3f}, {r['return_closed']:.0%}",
                    f"{r['control_ssim_gain']:+.3f}",
                    f"{r['seconds']:.0f}"])

    if args.budgets:
        base = ATTACKS[args.attack]
        curve = []
        for steps in (int(v) for v in args.budgets.split(",")):
            attack = replace(base, settings=replace(base.settings, iterations=steps, restarts=args.restarts))
            r = one(args.attack, attack)
            record(r, attack)
            curve.append((steps, r["seconds"], r["ssim_gain"], r["residual_corr"]))
        plot_budget(curve, f"{args.attack}: {where}").savefig(RESULTS / "gradient_inversion_budget.png", dpi=110)
        return
    for name in args.compare.split(","):
        base = ATTACKS[name]
        attack = replace(base, settings=replace(base.settings, iterations=args.steps, restarts=args.restarts))
        record(one(name, attack), attack)


if __name__ == "__main__":
    main()
