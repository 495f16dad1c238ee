"""Figures of a run (learning curves, partitions), written to files.

Built on ``matplotlib.figure.Figure`` (its own Agg canvas), never pyplot: importing fedsim leaves
the user's plot backend and pyplot's figure list alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedsim.data.partition import TRAIN, UNSEEN, VAL, learner_groups


MANY = 12  # learners beyond which figures summarise them instead of drawing one series or panel each


def plot_learning_curve(metrics: list[dict[str, Any]], path: Path, *, xlabel: str = "epoch") -> None:
    """MAE per round/epoch for every ``*_mae`` series in ``metrics.jsonl``; with more than
    :data:`MANY` learners, their local training MAEs as a median line in a min–max band."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    rounds = [m["round"] for m in metrics]
    keys = sorted({k for m in metrics for k in m if k.endswith("_mae")})
    local = [k for k in keys if re.fullmatch(r"L[0-9]+_train_mae", k)]
    if len(local) > MANY:
        values = np.array([[m.get(k, np.nan) for k in local] for m in metrics], dtype=float)
        seen = ~np.isnan(values).all(axis=1)
        x = np.asarray(rounds)[seen]
        with np.errstate(all="ignore"):
            ax.fill_between(x, np.nanmin(values[seen], axis=1), np.nanmax(values[seen], axis=1), alpha=0.25,
                            label=f"{len(local)} learners' train (min–max)")
            ax.plot(x, np.nanmedian(values[seen], axis=1), marker=".", label="learners' train (median)")
        keys = [k for k in keys if k not in local]
    for key in keys:
        ax.plot(rounds, [m.get(key, float("nan")) for m in metrics], marker=".", label=key.removesuffix("_mae"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MAE (years)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _group_order(groups: Sequence[str]) -> list[str]:
    """Learners by number, then train, val, and unseen last, the order used in tables and plots."""
    present = set(groups)
    learners = learner_groups(present)
    rest = [g for g in (TRAIN, VAL, UNSEEN) if g in present]
    others = sorted(present - set(learners) - set(rest))
    return learners + others + rest


def plot_partitions(df: pd.DataFrame, path: str | Path) -> None:
    """Save a PNG of the partition in the style of Stripelis et al. 2021's environment figure.

    Left: subjects per group (bars). Right: one small age histogram per group over the same bins,
    with its size and mean age, so size skew and age skew can be read off together.
    """
    order = _group_order(df["group"].astype(str).tolist())
    if len(learner_groups(order)) > 2 * MANY:
        _plot_many_partitions(df, order, Path(path))
        return
    n_bins = int(df["age_bin"].max())
    low, high = float(df["age"].min()), float(df["age"].max())
    high = max(high, low + 1.0)  # a single-age cohort still gets a visible bin
    edges = np.linspace(low, high, n_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
               "#9c755f", "#86bcb6"]
    colours = {g: ("#7f7f7f" if g == UNSEEN else palette[i % len(palette)]) for i, g in enumerate(order)}

    height = max(4.0, 0.85 * len(order) + 1.0)
    fig = Figure(figsize=(11, height))
    # fixed margins (in inches) instead of constrained layout, which doubles the drawing time
    grid = fig.add_gridspec(len(order), 2, width_ratios=[1, 1.5], left=0.07, right=0.985, wspace=0.1,
                            top=1 - 0.35 / height, bottom=0.5 / height, hspace=0.18)
    sizes = df["group"].value_counts()
    ax_sizes = fig.add_subplot(grid[:, 0])
    counts = [int(sizes.get(g, 0)) for g in order]
    bars = ax_sizes.bar(order, counts, color=[colours[g] for g in order])
    ax_sizes.bar_label(bars, fontsize=8)
    ax_sizes.set_ylabel("subjects")
    ax_sizes.set_title("Subjects per group")
    ax_sizes.tick_params(axis="x", labelrotation=45 if len(order) > 10 else 0)

    first = None
    for row, group in enumerate(order):
        ax = fig.add_subplot(grid[row, 1], sharex=first)
        first = first or ax
        part = df[df["group"] == group]
        hist = np.bincount(part["age_bin"].astype(int), minlength=n_bins + 1)[1 : n_bins + 1]
        ax.bar(centres, hist, width=width * 0.95, color=colours[group])
        ax.text(0.01, 0.92, f"{group}  n={len(part)}  mean {part['age'].mean():.1f} y", transform=ax.transAxes,
                fontsize=8, va="top")
        ax.set_yticks([])
        ax.margins(y=0.35)
        if row < len(order) - 1:
            ax.tick_params(axis="x", labelbottom=False)
        if row == 0:
            ax.set_title(f"Age histogram per group ({n_bins} bins, {low:.1f}-{high:.1f} y)")
    first.set_xlim(low, high)
    ax.set_xlabel("age (years)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _plot_many_partitions(df: pd.DataFrame, order: list[str], path: Path) -> None:
    """Many learners: subjects per learner (bars) and each learner's age histogram as one row of a
    heat map, instead of one panel per learner."""
    learners = learner_groups(order)
    n_bins = int(df["age_bin"].max())
    counts = np.array([np.bincount(df.loc[df["group"] == g, "age_bin"].astype(int), minlength=n_bins + 1)[1:]
                       for g in learners])
    fig = Figure(figsize=(11, 5))
    ax_sizes, ax_ages = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.5]})
    ax_sizes.bar(np.arange(1, len(learners) + 1), counts.sum(axis=1), width=1.0, color="#4e79a7")
    ax_sizes.set_xlabel("learner")
    ax_sizes.set_ylabel("subjects")
    unseen = int((df["group"] == UNSEEN).sum())
    ax_sizes.set_title(f"Subjects per learner ({len(learners)} learners; unseen: {unseen})")
    low, high = float(df["age"].min()), float(df["age"].max())
    image = ax_ages.imshow(counts, aspect="auto", interpolation="nearest", cmap="viridis",
                           extent=(low, max(high, low + 1.0), len(learners) + 0.5, 0.5))
    ax_ages.set_xlabel("age (years)")
    ax_ages.set_ylabel("learner")
    ax_ages.set_title(f"Age histogram per learner ({n_bins} bins)")
    fig.colorbar(image, ax=ax_ages, label="subjects")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
