"""DP-SGD recipes on the centralized cohort: ``python benchmarks/dp_recipe.py [--only NAME,…] [--list]``.

Each recipe is the ``centralized`` environment with DP-SGD and some keys changed (:data:`RECIPES`: batch size,
epochs, optimizer, learning rate, clip, model width, ``[train] init``), trained as ``fedsim centralized`` does into
``runs/dp-recipe/<name>/`` (its derived environment file beside it; a finished run is reused), and draws every
epoch of every recipe run against the ε spent by then in ``docs/dp-frontier.png``. The noise multiplier
of each recipe is the one Opacus' RDP accountant gives for its target ε at δ = 1e-5 with its sample rate (batch /
training subjects: 540 of the default cohort of 1,000; 2,160 for ``n4000-…``, a cohort of 4,000 that shows how
utility grows with N) and epochs. Writes ``benchmarks/results/dp_recipe.md``: per recipe the ε the run's accountant
reports at its best-validation epoch, the unseen and training MAE there, the unseen MAE of its starting model
(epoch 0: for a pre-trained start, the public model alone on this cohort, the ε = 0 baseline), and the median
seconds per epoch. One torch thread per process (``OMP_NUM_THREADS=1``) is what its rows used on 2 cores. The best
recipe, ``young-adam-b64-e20``, is what ``environments/centralized-dp.toml`` ships.

A recipe with a public start begins from ``runs/<public environment>`` (trained first when missing):
``centralized-public`` (the same recipe on another synthetic cohort: other subjects, three scanner sites) or
``centralized-public-young`` (the same, but only ages 44.6–62: a public model that has seen no older brain).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from privacy_utility_plot import save_frame
from results_table import machine

from fedsim import snapshots
from fedsim.config import ENVIRONMENTS_DIR, load_env, tomllib
from fedsim.data.partition import centralized_sizes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "dp_recipe.md"
FIGURE = ROOT / "docs" / "dp-frontier.png"
RUNS = ROOT / "runs" / "dp-recipe"
DELTA = 1e-5
CLIP = 1.0  # every recipe's per-subject gradient clip (dp_max_grad_norm)

@dataclass(frozen=True)
class Recipe:
    """A target ε and what changes from ``centralized``: [train], [defense] and [model] keys, and the public
    environment the run starts from (``None``: from scratch)."""

    epsilon: float
    train: dict[str, Any]
    defense: dict[str, Any] = field(default_factory=lambda: {"dp_max_grad_norm": CLIP})
    public: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    subjects: int = 1000  # the synthetic cohort's size: the default's, or a larger one for the frontier's growth with N


def training_subjects(subjects: int) -> int:
    """The training subjects ``centralized``'s partition leaves in a cohort of ``subjects``: 540 of the default
    1,000 (benchmarks/results/centralized.md)."""
    partition = load_env("centralized").partition
    return centralized_sizes(subjects, partition.unseen_fraction, partition.val_fraction)[2]


#: A quarter of the default widths: 19 k weights instead of 75 k, so the same noise is half as large against them.
NARROW = {"channels": [4, 8, 16, 32], "head_channels": 16}
RECIPES: dict[str, Recipe] = {
    "public-adam-b64-e10": Recipe(8.0, {"batch_size": 64, "epochs": 10, "lr": 1e-4}, public="centralized-public"),
    "young-adam-b64-e10": Recipe(8.0, {"batch_size": 64, "epochs": 10, "lr": 1e-3}, public="centralized-public-young"),
    "young-adam-b64-e20": Recipe(8.0, {"batch_size": 64, "epochs": 20, "lr": 1e-3}, public="centralized-public-young"),
    "scratch-narrow-adam-b256-e40": Recipe(8.0, {"batch_size": 256, "epochs": 40, "lr": 1e-3}, model=NARROW),
    "scratch-narrow-adam-b64-e40": Recipe(8.0, {"batch_size": 64, "epochs": 40, "lr": 1e-3}, model=NARROW),
    # The best recipe on a cohort of 4,000 (2,160 training subjects): batch 256 keeps the sample rate, the steps and
    # so the noise multiplier of young-adam-b64-e20, and sums four times as many clipped gradients against that noise.
    "n4000-young-adam-b256-e20": Recipe(8.0, {"batch_size": 256, "epochs": 20, "lr": 1e-3},
                                        public="centralized-public-young", subjects=4000),
}


def public_run(env: str) -> Path:
    return ROOT / "runs" / env


def noise_for(epsilon: float, batch: int, epochs: int, training: int) -> float:
    """The noise multiplier that spends ``epsilon`` (δ = 1e-5) over ``epochs`` at sample rate batch / training."""
    import warnings

    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():  # Opacus' note on the RDP orders at large ε: the bound is still valid
        warnings.simplefilter("ignore", UserWarning)
        return round(get_noise_multiplier(target_epsilon=epsilon, target_delta=DELTA,
                                          sample_rate=batch / training, epochs=epochs, accountant="rdp"), 3)


def derive(name: str) -> dict[str, Any]:
    """The raw environment of recipe ``name``: centralized with DP-SGD and the recipe's changes."""
    recipe = RECIPES[name]
    raw = tomllib.loads((ENVIRONMENTS_DIR / "centralized.toml").read_text())
    raw["description"] = f"DP-SGD recipe {name} (benchmarks/dp_recipe.py): target ε {recipe.epsilon:g} at δ {DELTA:g}."
    raw["train"] = {**raw["train"], **recipe.train, **({"init": str(public_run(recipe.public))} if recipe.public else {})}
    raw["model"] = {**raw["model"], **recipe.model}
    raw["cohort"] = {**raw["cohort"], "subjects": recipe.subjects}
    sigma = noise_for(recipe.epsilon, raw["train"]["batch_size"], raw["train"]["epochs"], training_subjects(recipe.subjects))
    raw["defense"] = {**recipe.defense, "dp_noise_multiplier": sigma, "dp_delta": DELTA}
    return raw


def _train(env: Path, out: Path) -> None:
    if snapshots.is_done(out):
        return
    if out.exists():  # a centralized run cannot resume: an interrupted one starts again
        import shutil

        shutil.rmtree(out)
    done = subprocess.run([sys.executable, "-m", "fedsim.centralized", "--env", str(env), "--out", str(out)], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"error: training {out.name} failed (exit {done.returncode})")


def row(name: str, out: Path) -> list[object]:
    """The results row of one finished recipe run."""
    metrics = {m["round"]: m for m in snapshots.read_metrics(out)}
    best = snapshots.read_done(out)["best_round"]
    cfg = snapshots.read_config(out)
    seconds = statistics.median(m["seconds"] for r, m in metrics.items() if r > 0)
    epsilon = metrics[best].get("epsilon", float("nan"))
    start = Path(cfg["train"]["init"]).name if cfg["train"].get("init") else "scratch"
    train = cfg["train"]
    trained = time.strftime("%Y-%m-%d", time.localtime((out / "DONE").stat().st_mtime))
    return [trained, name, cfg["cohort"]["subjects"], start, cfg["model"]["channels"], train["optimizer"], train["lr"],
            train["batch_size"], train["epochs"], cfg["defense"]["dp_noise_multiplier"], cfg["defense"]["dp_max_grad_norm"], f"{epsilon:.2f}", best,
            f"{metrics[best]['unseen_mae']:.2f}", f"{metrics[best]['train_mae']:.2f}", f"{metrics[0]['unseen_mae']:.2f}",
            f"{seconds:.1f}"]


def gradient_norms(subjects: int = 64) -> str:
    """What clipping does at the start of training from scratch: the per-subject gradient norms (of the loss DP-SGD
    clips, :func:`attacks.signals.gradients.per_sample_gradients`) of the seeded untrained model on the first
    ``subjects`` training subjects of runs/centralized."""
    import numpy as np
    import torch

    from attacks.signals.gradients import per_sample_gradients
    from attacks.target import open_run
    from fedsim.models import build_model, layer_parameters

    cfg = load_env("centralized")
    target = open_run(ROOT / "runs" / "centralized")
    parts = target.partitions
    rows = np.sort(target.cohort.index_of(list(parts.loc[parts["group"] == "train", "subject_id"])[:subjects]))
    x = torch.from_numpy(np.asarray(target.cohort.volumes[rows], dtype=np.float32))[:, None]
    y = torch.from_numpy(target.cohort.ages[rows].astype(np.float32))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, **cfg.model_kwargs()).eval()
    _, grads = per_sample_gradients(model, x, y, list(layer_parameters(model)), loss=cfg.train.loss)
    norms = torch.cat(list(grads.values()), dim=1).norm(dim=1)
    q = [float(v) for v in torch.quantile(norms, torch.tensor([0.1, 0.5, 0.9]))]
    return (f"Per-subject gradient L2 norms of the untrained model (seed {cfg.seed}; {len(x)} training subjects; "
            f"{sum(v.numel() for v in model.parameters())} weights): 10th / 50th / 90th percentile "
            f"{q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}, against a clip of {CLIP:g}.")


def frontier(names: list[str]) -> None:
    """``docs/dp-frontier.png``: every epoch of every recipe run as the model it could release, unseen MAE against
    the ε spent by then, beside the non-private model (``runs/centralized``'s best epoch) and the training mean of
    the default cohort; a larger cohort's run is dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for i, name in enumerate(names):
        curve = {m["round"]: m for m in snapshots.read_metrics(RUNS / name)}
        subjects = snapshots.read_config(RUNS / name)["cohort"]["subjects"]
        ax.plot([m.get("epsilon", 0.0) for m in curve.values()], [m["unseen_mae"] for m in curve.values()], marker="o", ms=3,
                lw=1.6 if subjects > 1000 else 1, ls="-" if subjects == 1000 else "--", color=f"C{i}",
                label=f"{name} ({training_subjects(subjects):,} training subjects)")
        best = curve[snapshots.read_done(RUNS / name)["best_round"]]
        ax.plot([best.get("epsilon", 0.0)], [best["unseen_mae"]], "*", ms=12, color=f"C{i}")
    save_frame(ax, snapshots.read_done(ROOT / "runs" / "centralized"), "no DP",
               xlabel="ε spent (δ = 1e-5); epoch 0 at ε 0 is the starting model",
               title="DP-SGD recipes: each epoch's model; ★ released; the lines: the default cohort's", path=FIGURE)


COLUMNS = ["date", "recipe", "cohort", "start", "channels", "optimizer", "lr", "batch", "epochs", "noise multiplier", "clip", "ε at best epoch",
           "best epoch", "unseen MAE", "train MAE", "unseen MAE of the start (epoch 0)", "s / epoch"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated recipe names (default: all)")
    p.add_argument("--list", action="store_true", help="list the recipes with their noise multipliers and stop")
    args = p.parse_args()
    names = list(RECIPES) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"error: unknown recipe {unknown[0]!r}; choose from: {', '.join(RECIPES)}")
    if args.list:
        for n in names:
            print(n, derive(n)["defense"]["dp_noise_multiplier"])
        return
    for public in dict.fromkeys(RECIPES[n].public for n in names if RECIPES[n].public):
        _train(ENVIRONMENTS_DIR / f"{public}.toml", public_run(public))
    for n in names:
        env = RUNS / f"{n}.toml"
        env.parent.mkdir(parents=True, exist_ok=True)
        env.write_text(f"# Derived by benchmarks/dp_recipe.py from centralized\n{tomli_w.dumps(derive(n))}")
        load_env(env)
        _train(env, RUNS / n)
    done = [n for n in RECIPES if snapshots.is_done(RUNS / n)]  # every finished recipe's row, trained now or before
    lines = [f"<!-- written by `python benchmarks/dp_recipe.py [--only RECIPES]` on {machine()}, no GPU, one torch "
             "thread per run; a row per finished recipe run, dated by its training -->", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
             *("| " + " | ".join(map(str, row(n, RUNS / n))) + " |" for n in done)]
    RESULTS.write_text("# DP-SGD recipes on the centralized cohort (1,000 subjects; n4000-…: 4,000)\n\n" + "\n".join(lines)
                       + "\n\n" + gradient_norms() + "\n")
    frontier(done)
    print(f"wrote {RESULTS.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
