"""The centralized brain-age baseline (``fedsim centralized`` / ``python -m fedsim.centralized``).

Trains one model on all training subjects, keeps the best-validation epoch (as Gupta et al.
2021), and writes the same run directory as a federation — epoch ``k`` is snapshot round ``k`` —
so the centralized attack reads it like any other run.
"""

from __future__ import annotations

# ``python -m fedsim.centralized`` is the command (fedsim.cli.centralized): it takes over before this
# module's own imports, so that --help loads none of them and the command imports this module once, by its name.
if __name__ == "__main__":
    from fedsim.cli import run_cli
    from fedsim.cli.centralized import main

    raise SystemExit(run_cli(main))

import copy
import time
from pathlib import Path

import numpy as np
import torch

from fedsim import snapshots
from fedsim.config import EnvConfig
from fedsim.data.cache import VolumeDataset
from fedsim.data.prepare import PreparedData, prepare_data
from fedsim.defenses import EarlyStopping, local_training, privacy_summary, release_weights
from fedsim.device import resolve_device
from fedsim.errors import FedsimError
from fedsim.federation.run_setup import write_run_setup
from fedsim.plots import plot_learning_curve
from fedsim.pretrained import initial_model
from fedsim.progress import Progress, logger, report_round
from fedsim.training import evaluate, make_loader, train_epochs


def train_centralized(cfg: EnvConfig, data: PreparedData, run_dir: Path, *,
                      device: str | torch.device | None = None) -> dict[str, float]:
    """Train, snapshot every epoch, and return the metrics of the best-validation epoch.

    The environment's ``[defense]`` wraps the pieces: label noise and DP-SGD the training set,
    model and optimizer (ε per epoch in the metrics), model noise every snapshot (the released
    model: it is what is evaluated and saved, while training goes on from the clean weights),
    and early stopping the epoch loop. Every epoch is reported to the ``fedsim`` logger
    (:func:`fedsim.progress.report_round`). ``device``: :func:`fedsim.device.resolve_device`'s
    (CUDA when torch sees it).
    """
    device = resolve_device(device)
    torch.manual_seed(cfg.seed)
    model = initial_model(cfg).to(device)
    released = copy.deepcopy(model)  # what is evaluated and saved (a copy: no draw from the RNG)
    sets = {name: VolumeDataset(data.cohort, data.indices(name)) for name in ("train", "val", "unseen")}
    session = local_training(cfg, model, sets["train"], seed=cfg.seed)
    delta = cfg.defense.dp_delta if cfg.defense else 0.0
    stopper = EarlyStopping(cfg.defense.early_stopping_patience if cfg.defense else 0)
    eval_loaders = {k: make_loader(v, max(cfg.train.batch_size, 16), shuffle=False, device=device)
                    for k, v in sets.items()}
    counts = {k: len(v) for k, v in sets.items()}
    baseline = float(np.abs(data.cohort.ages[sets["unseen"].indices] - data.cohort.ages[sets["train"].indices].mean()).mean())

    def record(epoch: int, seconds: float) -> dict[str, float]:
        metrics = {"round": epoch, "seconds": round(seconds, 2)}
        state = release_weights(cfg, model.state_dict(), epoch)
        released.load_state_dict(state)
        for name, loader in eval_loaders.items():
            metrics.update(evaluate(released, loader, device).as_dict(name))
        if session.private is not None:
            metrics["epsilon"] = session.epsilon(delta)
        snapshots.save_round(run_dir, epoch, state, {"env": cfg.name, "sample_counts": counts, "metrics": metrics},
                             architecture=(cfg.model.name, cfg.model_kwargs()))
        snapshots.append_metrics(run_dir, metrics)
        return metrics

    def report(m: dict[str, float], mark: str = "") -> None:
        eps = f"  ε {m['epsilon']:.2f}" if "epsilon" in m else ""
        report_round(f"epoch {m['round']:3d}/{cfg.train.epochs}  train MAE {m['train_mae']:5.2f}  "
                     f"val {m['val_mae']:5.2f}  unseen {m['unseen_mae']:5.2f}{eps}  ({m['seconds']:.1f}s){mark}", m)

    best = record(0, 0.0)
    report(best)
    best_val = float("inf")
    for epoch in range(1, cfg.train.epochs + 1):
        start = time.perf_counter()
        train_epochs(session.model, session.loader, session.optimizer, loss=cfg.train.loss,
                     target_scale=cfg.model.target_scale, device=device, precision=cfg.train.precision)
        m = record(epoch, time.perf_counter() - start)
        is_best = m["val_mae"] < best_val
        if is_best:
            best, best_val = m, m["val_mae"]
        report(m, "  *" if is_best else "")
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
    initial_model(cfg)  # a misfit [train] init: one line, before any data work
    with snapshots.new_run_dir(out, cfg.name) as run_dir:  # refused before any data work
        if snapshots.complete_rounds(run_dir):
            raise FedsimError(f"{str(run_dir)!r} already holds epochs of a run; choose another --out or delete it")
        data = prepare_data(cfg, cohort, progress=progress)
        write_run_setup(run_dir, cfg, data, {})
    return data, run_dir

