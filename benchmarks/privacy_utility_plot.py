"""The frame every DP privacy–utility figure shares: unseen MAE against the ε spent, beside a non-private run's MAE
and predicting its training mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_frame(ax: Any, plain: dict[str, Any], no_dp: str, *, xlabel: str, title: str, path: Path) -> None:
    """Draw the non-private run (its ``DONE`` summary ``plain``, labelled ``no_dp``) and the training mean on ``ax``,
    label it, and save its figure to ``path``."""
    import matplotlib.pyplot as plt

    ax.axhline(plain["unseen_mae"], color="black", lw=0.9, ls="--", label=f"{no_dp} ({plain['unseen_mae']:.2f})")
    ax.axhline(plain["predict_mean_mae"], color="grey", lw=0.9, ls=":",
               label=f"predicting the training mean ({plain['predict_mean_mae']:.2f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("unseen MAE (years)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=110)
    plt.close(ax.figure)
