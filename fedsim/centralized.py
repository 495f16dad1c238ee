"""Centralized brain-age baseline: ``python -m fedsim.centralized --env centralized``.

Trains one model on all training subjects, keeps the best-validation epoch (as Gupta et al.
2021), and writes the same run directory as a federation — epoch ``k`` is snapshot round ``k`` —
so the centralized attack reads it like any other run.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fedsim import snapshots
from fedsim.cli import command_parser, run_cli
from fedsim.cli.progress import echo_rounds, progress_bars
from fedsim.config import EnvConfig, available_environments, load_env, with_overrides
from fedsim.data.cache import VolumeDataset
from fedsim.data.partition import write_partitions
from fedsim.data.prepare import PreparedData, prepare_data
from fedsim.defenses import EarlyStopping, local_training, privacy_summary, release_weights
from fedsim.errors import FedsimError
from fedsim.models import build_model
from fedsim.plots import plot_learning_curve, plot_partitions
from fedsim.progress import Progress, logger, report_round
from fedsim.tracking import add_tensorboard_option, tensorboard
from fedsim.training import evaluate, make_loader, train_epochs


def train_centralized(cfg: EnvConfig, data: PreparedData, run_dir: Path) -> dict[str, float]:
    """Train, snapshot every epoch, and return the metrics of the best-validation epoch.

    The environment's ``[defense]`` wraps the pieces: label noise and DP-SGD the training set,
    model and optimizer (ε per epoch in the metrics), model noise every snapshot (the released
    model: it is what is evaluated and saved, while training goes on from the clean weights),
    and early stopping the epoch loop. Every epoch is reported to the ``fedsim`` logger
    (:func:`fedsim.progress.report_round`).
    """
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, **cfg.model_kwargs())
    released = copy.deepcopy(model)  # what is evaluated and saved (a copy: no draw from the RNG)
    sets = {name: VolumeDataset(data.cohort, data.indices(name)) for name in ("train", "val", "unseen")}
    session = local_training(cfg, model, sets["train"], seed=cfg.seed)
    delta = cfg.defense.dp_delta if cfg.defense else 0.0
    stopper = EarlyStopping(cfg.defense.early_stopping_patience if cfg.defense else 0)
    eval_loaders = {k: make_loader(v, max(cfg.train.batch_size, 16), shuffle=False) for k, v in sets.items()}
    counts = {k: len(v) for k, v in sets.items()}
    baseline = float(np.abs(data.cohort.ages[sets["unseen"].indices] - data.cohort.ages[sets["train"].indices].mean()).mean())

    def record(epoch: int, seconds: float) -> dict[str, float]:
        metrics = {"round": epoch, "seconds": round(seconds, 2)}
        state = release_weights(cfg, model.state_dict(), epoch)
        released.load_state_dict(state)
        for name, loader in eval_loaders.items():
            metrics.update(evaluate(released, loader).as_dict(name))
        if session.private is not None:
            metrics["epsilon"] = session.epsilon(delta)
        snapshots.save_round(run_dir, epoch, state, {"env": cfg.name, "sample_counts": counts, "metrics": metrics})
        snapshots.append_metrics(run_dir, metrics)
        eps = f"  ε {metrics['epsilon']:.2f}" if "epsilon" in metrics else ""
        report_round(f"epoch {epoch:3d}/{cfg.train.epochs}  train MAE {metrics['train_mae']:5.2f}  "
                     f"val {metrics['val_mae']:5.2f}  unseen {metrics['unseen_mae']:5.2f}{eps}  ({seconds:.1f}s)", metrics)
        return metrics

    best = record(0, 0.0)
    best_val = float("inf")
    for epoch in range(1, cfg.train.epochs + 1):
        start = time.perf_counter()
        train_epochs(session.model, session.loader, session.optimizer, loss=cfg.train.loss,
                     target_scale=cfg.model.target_scale)
        m = record(epoch, time.perf_counter() - start)
        if m["val_mae"] < best_val:
            best, best_val = m, m["val_mae"]
        if stopper.step(m["val_mae"]):
            logger.info(f"early stopping: no lower validation MAE for {stopper.patience} epochs")
            break
    plot_learning_curve(snapshots.read_metrics(run_dir), run_dir / "learning_curve.png")
    summary = {"best_round": best["round"], "predict_mean_mae": baseline, **{k: v for k, v in best.items() if k != "round"}}
    summary.update(privacy_summary(best, cfg))
    snapshots.mark_done(run_dir, summary)
    return summary


def new_centralized_run(cfg: EnvConfig, cohort: str | Path | None, out: Path | None, *,
                        progress: Progress | None = None) -> tuple[PreparedData, Path]:
    """Prepare the data of a centralized ``cfg`` and write a fresh run directory (refusing one with rounds)."""
    if cfg.partition.learners != 0:
        raise FedsimError(f"environment {cfg.name!r} is federated (learners = {cfg.partition.learners}); "
                          "train it with fedsim train")
    data = prepare_data(cfg, cohort, progress=progress)
    run_dir = snapshots.new_run_dir(out, cfg.name)
    if snapshots.complete_rounds(run_dir):
        raise FedsimError(f"{str(run_dir)!r} already holds epochs of a run; choose another --out or delete it")
    snapshots.write_config(run_dir, cfg.to_dict(manifest=data.manifest))
    write_partitions(data.partitions, run_dir / snapshots.PARTITIONS_FILE)
    plot_partitions(data.partitions, run_dir / "partitions.png")
    return data, run_dir


def parser(prog: str = "python -m fedsim.centralized") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "The centralized brain-age baseline: one model on all training subjects.",
        "Keeps the best-validation epoch (as Gupta et al. 2021) and writes the same run directory as a "
        "federation, epoch k being snapshot round k, so every attack reads it like any other run.",
        examples=["--out runs/centralized", "--env centralized-2d --out runs/centralized-2d", "--env centralized-dp --epochs 10"])
    p.add_argument("--env", default="centralized", help="environment name or .toml path (default: centralized); one of: "
                   + ", ".join(e for e in available_environments() if not load_env(e).partition.learners))
    p.add_argument("--cohort", type=Path, metavar="MANIFEST", help="manifest.csv of your own cohort (default: the embedded synthetic one)")
    p.add_argument("--out", type=Path, metavar="DIR", help="run directory (default: runs/<env>-<timestamp>)")
    p.add_argument("--epochs", type=int, metavar="N", help="override [train] epochs")
    p.add_argument("--seed", type=int, metavar="N", help="override the environment's seed")
    add_tensorboard_option(p)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m fedsim.centralized") -> int:
    args = parser(prog).parse_args(argv)
    cfg = load_env(args.env)
    if args.epochs is not None and args.epochs < 1:
        raise FedsimError(f"--epochs must be at least 1, got {args.epochs}")
    cfg = with_overrides(cfg, seed=args.seed, train={"epochs": args.epochs})
    console = Console(highlight=False)
    with progress_bars(console) as progress:
        data, run_dir = new_centralized_run(cfg, args.cohort, args.out, progress=progress)
    console.print(f"[bold]{cfg.name}[/]: {data.manifest} → {run_dir}")
    with echo_rounds(console), tensorboard(args.tensorboard):
        s = train_centralized(cfg, data, run_dir)
    table = Table(title=f"best validation epoch {s['best_round']}")
    for col in ("set", "subjects", "MAE (years)"):
        table.add_column(col)
    for name in ("train", "val", "unseen"):
        table.add_row(name, str(s[f"{name}_n"]), f"{s[f'{name}_mae']:.2f}")
    table.add_row("predict the mean", str(s["unseen_n"]), f"{s['predict_mean_mae']:.2f}")
    console.print(table)
    console.print(f"snapshots: {run_dir / snapshots.ROUNDS_DIR} (rounds 0..{cfg.train.epochs}); done.")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
