"""The GPU check: ``bash benchmarks/gpu_check.sh OUT`` on a machine with a GPU (≤ 8 minutes), or
``python benchmarks/gpu_check.py --dry-run --out DIR`` on a CPU (tiny shapes, seconds: the tests run it).

1. **Training step**: fedsim's loop (:func:`fedsim.training.train_epochs`, the paper's batch and
   optimizer) against the same model, batches and optimizer in a plain PyTorch loop, for the
   paper-scale ``cnn3d`` and ``slice_mean2d`` at 91x109x91, fp32 and bf16 autocast; warm-up
   excluded on both sides, ``--repeats`` runs, median and range. Target: fedsim ≥ 0.95 of plain.
2. **Per-sample gradients** (the white-box attacks' features): each method's time for
   ``grad:conv6+grad:output+grad_norm`` against one batched forward+backward of the same
   subjects. Target on a GPU: ≤ 1.5x.
3. **One federated round of the paper profile** (``environments/paper-skewed-noniid.toml``: 8
   learners, 4 local epochs, SGD, batch 1) through Flower's in-process grid (no Ray), on
   ``--per-learner`` synthetic subjects per learner: seconds per trained sample, peak GPU memory,
   and the projected time of the paper's whole federation (40 rounds x 4 local epochs x 8,356
   subjects, plus scoring 2,090 unseen subjects each round). Target: ≤ 30 minutes on one H200.
4. **Reconstruction** (``fedsim reconstruct``): seconds per inversion step of gradient inversion of a
   one-scan SGD update and of white-box inversion of ``conv1``'s activations, for the paper-scale
   ``cnn3d`` at 91x109x91, and the time of a default (500-step) reconstruction.

Writes ``OUT/gpu_check.json`` and ``OUT/gpu.md`` (the rows for ``benchmarks/results/gpu.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

import torch

from fedsim.config import env_path, load_env, tomllib
from fedsim.models import build_model
from fedsim.training import make_optimizer, regression_loss, train_epochs

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"shape": (91, 109, 91), "train": 8356, "unseen": 2090, "rounds": 40, "local_epochs": 4}
DRY = {"shape": (16, 20, 16)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up: cuDNN autotuning, allocator, first-call costs
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _spread(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _models(shape: tuple[int, int, int], dry: bool) -> dict[str, tuple[dict, object]]:
    """Paper-scale model constructors and train settings (tiny ones for a dry run)."""
    cfg = load_env("paper-centralized")
    big = {"channels": [32, 64, 128, 256, 256], "head_channels": 64, "dropout": 0.5, "target_scale": 1.0}
    small = {"channels": [4, 8], "head_channels": 8, "dropout": 0.0, "target_scale": 1.0}
    kwargs = {"in_shape": shape, **(small if dry else big)}
    return {"cnn3d": (kwargs, cfg.train), "slice_mean2d": (kwargs, cfg.train)}


def training_step(device: torch.device, shape: tuple[int, int, int], steps: int, repeats: int, dry: bool) -> list[dict]:
    rows = []
    for name, (kwargs, train_cfg) in _models(shape, dry).items():
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = build_model(name, **kwargs).to(device)
            optimizer = make_optimizer(model.parameters(), train_cfg)
            b = train_cfg.batch_size
            batches = [(torch.randn(b, 1, *shape, device=device), 45 + 35 * torch.rand(b, device=device))
                       for _ in range(steps)]

            def fedsim_loop() -> None:
                train_epochs(model, batches, optimizer, loss="mse", target_scale=1.0, device=device, precision=precision)

            def plain_loop() -> None:
                model.train()
                for x, age in batches:
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        pred = model(x)
                    regression_loss("mse", pred.float(), age, 1.0).backward()
                    optimizer.step()

            plain = _timed(plain_loop, device, repeats)
            ours = _timed(fedsim_loop, device, repeats)
            rows.append({"model": name, "precision": precision, "batch": b, "steps": steps,
                         "plain_s": _spread(plain), "fedsim_s": _spread(ours),
                         "fedsim_vs_plain": statistics.median(plain) / statistics.median(ours)})
    return rows


def per_sample_gradients(device: torch.device, shape: tuple[int, int, int], subjects: int, repeats: int,
                         dry: bool) -> list[dict]:
    from attacks.signals.gradients import GRAD_METHODS, per_sample_gradients as grads

    kwargs, _ = _models(shape, dry)["cnn3d"]
    model = build_model("cnn3d", **kwargs).to(device).eval()
    x = torch.randn(subjects, 1, *shape, device=device)
    y = 45 + 35 * torch.rand(subjects, device=device)
    layers = [n for n in ("conv6", "output") if n in dict(model.named_modules())] or ["output"]

    def floor() -> None:
        model.zero_grad(set_to_none=True)
        regression_loss("mse", model(x), y, 1.0).backward()

    base = statistics.median(_timed(floor, device, repeats))
    rows = []
    for method in GRAD_METHODS:
        t = _timed(lambda m=method: grads(model, x, y, layers, loss="mse", method=m), device, repeats)
        rows.append({"method": method, "subjects": subjects, "layers": layers, "seconds": _spread(t),
                     "vs_batched_backward": statistics.median(t) / base})
    return rows


def federated_round(device: torch.device, shape: tuple[int, int, int], per_learner: int, work: Path, dry: bool) -> dict:
    """One round of the paper profile (its model, optimizer, batch, local epochs) through the
    in-process grid, on ``per_learner`` synthetic subjects per learner, equal learners."""
    import tomli_w

    from fedsim.data.prepare import prepare_data
    from fedsim.federation.local_grid import federate_in_process
    from fedsim.federation.run_setup import write_run_setup

    raw = tomllib.loads(env_path("paper-skewed-noniid").read_text())
    learners = raw["partition"]["learners"]
    raw["partition"].pop("age_bin_weights")
    raw["partition"]["learner_weights"] = [1] * learners
    raw["partition"]["unseen_fraction"] = 0.2
    subjects = int(round(learners * per_learner / 0.8))
    raw["cohort"].update(subjects=subjects, shape=list(shape))
    raw["data"]["shape"] = list(shape)
    raw["federation"]["rounds"] = 1
    if dry:
        raw["model"].update(channels=[4, 8], head_channels=8)
    work.mkdir(parents=True, exist_ok=True)
    (work / "env.toml").write_text(tomli_w.dumps(raw))
    cfg = load_env(work / "env.toml")
    run_dir = work / "run"
    write_run_setup(run_dir, cfg, prepare_data(cfg), {"cpus_per_learner": 1,
                                                        "gpus_per_learner": 1.0 if device.type == "cuda" else 0.0})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    federate_in_process(run_dir)
    seconds = time.perf_counter() - start
    trained = learners * per_learner * cfg.federation.local_epochs
    s_per_sample = seconds / trained  # scoring the unseen set and averaging included: conservative
    projected = PAPER["rounds"] * PAPER["local_epochs"] * PAPER["train"] * s_per_sample / 60
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {"learners": learners, "per_learner": per_learner, "local_epochs": cfg.federation.local_epochs,
            "batch": cfg.train.batch_size, "round_s": seconds, "s_per_sample": s_per_sample,
            "peak_gib": peak, "projected_min": projected}


def reconstruction(device: torch.device, shape: tuple[int, int, int], steps: int, repeats: int, dry: bool) -> list[dict]:
    from attacks.reconstruction.features import activations, invert_activations
    from attacks.reconstruction.gradient import invert_update, simulate_update
    from attacks.reconstruction.optimize import Inversion
    from attacks.signals.updates import Recipe

    kwargs, _ = _models(shape, dry)["cnn3d"]
    model = build_model("cnn3d", **kwargs).to(device).eval()
    x, y = torch.randn(1, 1, *shape, device=device), torch.full((1,), 62.0, device=device)
    recipe = Recipe(optimizer="sgd", lr=5e-5, batch_size=1, epochs=1)
    update = simulate_update(model, x, y, recipe)
    with torch.no_grad():
        held = activations(model, "conv1", x)
    settings, init = Inversion(iterations=steps), torch.zeros_like(x)
    attacks = {"gradient, batch 1, 1 SGD step": lambda: invert_update(model, update, init, recipe, ages=y, settings=settings)[0],
               "features, conv1, white-box": lambda: invert_activations(model, "conv1", held, init, settings=settings)}
    rows = []
    for name, attack in attacks.items():
        t = _timed(attack, device, repeats)
        per_step = statistics.median(t) / steps
        rows.append({"attack": name, "steps": steps, "seconds": _spread(t), "s_per_step": per_step,
                     "default_s": per_step * Inversion().iterations})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, seconds")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    p.add_argument("--subjects", type=int, default=16, help="subjects per per-sample-gradient batch")
    p.add_argument("--per-learner", type=int, default=8, help="synthetic subjects per learner for the round")
    args = p.parse_args()
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    shape = DRY["shape"] if args.dry_run else PAPER["shape"]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "dry_run": args.dry_run, "shape": shape,
              "training_step": training_step(device, shape, 2 if args.dry_run else args.steps, args.repeats, args.dry_run),
              "per_sample_gradients": per_sample_gradients(device, shape, 4 if args.dry_run else args.subjects,
                                                           args.repeats, args.dry_run)}
    try:  # Flower comes as a carried wheel on a GPU machine: without it, the rest still reports
        flwr_log = logging.getLogger("flwr")
        level = flwr_log.level
        flwr_log.setLevel(logging.WARNING)
        report["federated_round"] = federated_round(device, shape, 2 if args.dry_run else args.per_learner,
                                                    args.out / "round", args.dry_run)
        flwr_log.setLevel(level)
    except ImportError as err:
        report["federated_round"] = {"skipped": f"{type(err).__name__}: {err}"}
    report["reconstruction"] = reconstruction(device, shape, 3 if args.dry_run else 20, args.repeats, args.dry_run)
    report["seconds"] = time.perf_counter() - started
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "gpu.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    lines = [f"## {r['device']}, torch {r['torch']}{' (dry run: tiny shapes on the CPU)' if r['dry_run'] else ''}", "",
             "| model | precision | batch | plain s (median, range) | fedsim s | fedsim / plain speed |", "|---|---|---|---|---|---|"]
    for t in r["training_step"]:
        p, f = t["plain_s"], t["fedsim_s"]
        lines.append(f"| {t['model']} | {t['precision']} | {t['batch']} | {p['median']:.3f} ({p['min']:.3f}–{p['max']:.3f}) "
                     f"| {f['median']:.3f} ({f['min']:.3f}–{f['max']:.3f}) | {t['fedsim_vs_plain']:.2f} |")
    lines += ["", "| per-sample method | subjects | seconds (median) | vs one batched backward |", "|---|---|---|---|"]
    for g in r["per_sample_gradients"]:
        lines.append(f"| {g['method']} | {g['subjects']} | {g['seconds']['median']:.3f} | {g['vs_batched_backward']:.2f}x |")
    lines += ["", "| reconstruction (cnn3d) | steps timed | s per step | a 500-step reconstruction (s) |", "|---|---|---|---|"]
    for q in r.get("reconstruction", []):
        lines.append(f"| {q['attack']} | {q['steps']} | {q['s_per_step']:.4f} | {q['default_s']:.1f} |")
    f = r["federated_round"]
    if "skipped" in f:
        return "\n".join([*lines, "", f"Federated round skipped ({f['skipped']}).", ""])
    lines += ["", f"One federated round ({f['learners']} learners x {f['per_learner']} subjects, {f['local_epochs']} local "
              f"epochs, batch {f['batch']}): {f['round_s']:.1f} s, {f['s_per_sample'] * 1e3:.2f} ms per trained sample, "
              f"peak GPU memory {f['peak_gib']:.1f} GiB; the paper's federation projected: "
              f"**{f['projected_min']:.0f} min**.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
