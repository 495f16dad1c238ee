"""What do white-box attack features cost? ``python benchmarks/per_sample_gradients.py [--subjects 64]``.

Times :func:`attacks.signals.features.compute_features` for ``grad:conv6+grad:output+grad_norm``
(gradient norms need every layer's per-sample gradient) with each per-sample gradient
method on the CPU-profile 3D CNN, against the floor: one plain batched forward+backward
over the same subjects in the same chunks, which any per-sample method must at least pay.
Each figure is the best of ``--repeats`` timed runs after one untimed warm-up chunk.
Then the time per attack: fitting and scoring each attack classifier on Table-1 feature sets of
the centralized attack's size (``--pairs`` members + as many non-members to train, the paper's
1500 : 694 ratio to test), built by resampling the subjects' real features.
Writes ``benchmarks/results/per_sample_gradients.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import opacus
import torch

from attacks.membership.classifiers import CLASSIFIERS, attack_scores, make_classifier
from attacks.signals.features import assemble, compute_features
from attacks.signals.layout import feature_layout
from attacks.signals.gradients import GRAD_METHODS, benchmark_methods, choose_method
from fedsim.models import build_model, layer_parameters
from fedsim.training import regression_loss

RESULTS = Path(__file__).resolve().parent / "results" / "per_sample_gradients.md"
SPEC = "grad:conv6+grad:output+grad_norm"
# Feature sets to time attacks on: the cheapest and the widest rows of Table 1.
ATTACK_SPECS = ("error", "prediction+label+grad:conv6+grad:output")
# The CPU profile of environments/*.toml.
MODEL = {"in_shape": (36, 43, 36), "channels": (8, 16, 32, 64), "head_channels": 32, "target_scale": 7.4}


def floor(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Seconds for one eval-mode batched forward+backward per chunk of subjects."""
    model.eval()
    start = time.perf_counter()
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        model.zero_grad(set_to_none=True)
        regression_loss("mse", model(xb), yb, model.target_scale).backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def best_of(repeats: int, run):
    """Best wall time of ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def time_attacks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, pairs: int) -> list[tuple[str, str, float]]:
    """Seconds to fit + score each classifier on each of ``ATTACK_SPECS``.

    Rows are resampled from the subjects' real features, members shifted by a quarter of a
    standard deviation so that the classifiers have something to learn (their early stopping
    then behaves as on real attacks); the numbers are the cost, not the accuracy, of an attack.
    """
    features = compute_features(model, x, ["error", "prediction", "label", "grad:conv6", "grad:output"], ages=y)
    rng = np.random.default_rng(0)
    test_pairs = max(1, round(pairs * 694 / 1500))
    rows = []
    for spec in ATTACK_SPECS:
        base = assemble(features, spec)
        layout = feature_layout(spec, model)

        def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
            X = base[rng.integers(len(base), size=2 * count)] * rng.normal(1, 0.1, (2 * count, base.shape[1]))
            labels = np.repeat([1, 0], count)
            X[labels == 1] += 0.25 * base.std(axis=0)
            return X.astype(np.float32), labels

        (X_train, y_train), (X_test, _) = draw(pairs), draw(test_pairs)
        for name in CLASSIFIERS:
            if name == "loss_threshold" and spec != "error":
                continue  # it reads the error column only
            start = time.perf_counter()
            attack_scores(make_classifier(name, random_state=0, layout=layout).fit(X_train, y_train), X_test)
            rows.append((spec, name, time.perf_counter() - start))
            print(f"  attack {name:>14} on {spec} ({base.shape[1]} columns): {rows[-1][2]:6.2f} s", flush=True)
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="subjects per chunk (compute_features' batch_size)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=273, help="member/non-member pairs an attack trains on "
                        "(273 = the centralized attack on the default cohort)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model("cnn3d", **MODEL)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.subjects, 1, *MODEL["in_shape"], generator=g)
    y = 45 + 35 * torch.rand(args.subjects, generator=g)
    n = args.subjects
    load_before = os.getloadavg()

    floor(model, x[:2], y[:2], args.batch_size)  # warm-up
    floor_s, _ = best_of(args.repeats, lambda: floor(model, x, y, args.batch_size))
    rows, reference = [], None
    for method in GRAD_METHODS:
        compute_features(model, x[:2], SPEC, ages=y[:2], method=method)  # warm-up
        seconds, features = best_of(
            args.repeats,
            lambda: compute_features(model, x, SPEC, ages=y, method=method, batch_size=args.batch_size),
        )
        # Same numbers from every method: largest difference from the loop, relative to its largest entry.
        reference = reference or features
        error = max(float(np.abs(features[k] - reference[k]).max() / np.abs(reference[k]).max()) for k in features)
        rows.append((method, seconds, error))
        print(f"{method:>7}: {1000 * seconds / n:7.1f} ms/subject = {seconds / floor_s:4.2f}x the floor "
              f"(max rel. difference from loop {error:.1e})", flush=True)
    # auto's first call in a process includes its probe (three methods on 8 subjects).
    auto_s, _ = best_of(1, lambda: compute_features(model, x, SPEC, ages=y, batch_size=args.batch_size))
    layers = list(layer_parameters(model))
    picked = choose_method(model, x, y, layers)  # remembered from the call above
    probe = benchmark_methods(model, x[:8], y[:8], layers)  # a second probe, to show what it sees
    attacks = time_attacks(model, x, y, args.pairs)
    load_after = os.getloadavg()
    print(f"   auto: {1000 * auto_s / n:7.1f} ms/subject = {auto_s / floor_s:4.2f}x the floor, incl. its probe; "
          f"picks {picked!r}")
    print(f"  floor: {1000 * floor_s / n:7.1f} ms/subject (batched forward+backward)")

    shared = max(load_before[0], load_after[0]) > 2
    lines = [
        "# Per-sample gradient features: cost per subject",
        "",
        f"`python benchmarks/per_sample_gradients.py --subjects {n} --batch-size {args.batch_size} "
        f"--repeats {args.repeats}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Features `{SPEC}` of {n} random volumes through `attacks.signals.features.compute_features` on the",
        f"CPU-profile 3D CNN (`cnn3d`, {MODEL}), best of {args.repeats} runs after a warm-up. The floor is",
        "one eval-mode batched forward+backward over the same subjects in the same chunks.",
        "",
        "| method | ms / subject | × floor | max rel. difference from loop |",
        "|---|---:|---:|---:|",
        f"| floor (batched forward+backward) | {1000 * floor_s / n:.1f} | 1.00 | |",
        *(f"| {m} | {1000 * s / n:.1f} | {s / floor_s:.2f} | {e:.1e} |" for m, s, e in rows),
        f"| auto (first call: probe + {picked}) | {1000 * auto_s / n:.1f} | {auto_s / floor_s:.2f} | |",
        "",
        f"`method=\"auto\"` picks **{picked}** here. A second probe on 8 subjects saw (ms/subject) "
        + ", ".join(f"{k} {1000 * v:.1f}" for k, v in probe.items()) + ".",
        "",
        "## Time per attack",
        "",
        f"Fit on {args.pairs} + {args.pairs} subjects, score {max(1, round(args.pairs * 694 / 1500))} + "
        f"{max(1, round(args.pairs * 694 / 1500))} (the centralized attack's sizes on the default cohort), feature rows "
        "resampled from the subjects above; one attack = one repeat of one feature set on one snapshot. "
        "The feature computation above is paid once per round and cached.",
        "",
        "| feature set | classifier | seconds (fit + score) |",
        "|---|---|---:|",
        *(f"| `{spec}` | {name} | {sec:.2f} |" for spec, name, sec in attacks),
        "",
        "## Machine",
        "",
        f"- CPU: {cpu_name()}; `nproc` = {len(os.sched_getaffinity(0))}",
        f"- torch {torch.__version__}, opacus {opacus.__version__}, python {platform.python_version()}",
        f"- threads: torch.get_num_threads() = {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS = {os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- 1-minute load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after",
    ]
    if shared:
        lines.append(
            "- **The machine was shared** (load > 2 on 2 cores: other jobs were training), "
            "so absolute times are inflated and ratios noisy; rerun on an idle machine for figures to quote."
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
