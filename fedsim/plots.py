"""Figures of a run (learning curves); matplotlib on the Agg backend, files only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curve(metrics: list[dict[str, Any]], path: Path, *, xlabel: str = "epoch") -> None:
    """MAE per round/epoch for every ``*_mae`` series in ``metrics.jsonl``."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [m["round"] for m in metrics]
    for key in sorted({k for m in metrics for k in m if k.endswith("_mae")}):
        ax.plot(rounds, [m.get(key, float("nan")) for m in metrics], marker=".", label=key.removesuffix("_mae"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MAE (years)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
