"""Figures of an attack report: one function per figure, each returning a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so no global figure
state or interactive backend is involved (the Agg canvas renders them); :func:`attacks.reporting.html.png`
turns one into the text the self-contained HTML report embeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "plot_accuracy_vs_round", "plot_attack_heatmap", "plot_member_distributions", "plot_privacy_utility",
    "plot_roc_loglog",
]

MEMBER_COLOR, NONMEMBER_COLOR = "#c0392b", "#2e86c1"


def plot_roc_loglog(curves: Sequence[tuple[np.ndarray, np.ndarray, str]], *, min_fpr: float, title: str = "") -> Figure:
    """ROC curves ``(fpr, tpr, label)`` on log–log axes, with the chance diagonal.

    Log axes show what an attack achieves at the low FPRs that matter for privacy (a linear plot
    hides them in one corner). Points with FPR or TPR 0 cannot be drawn on log axes; the x axis
    starts at ``min_fpr`` = 1 / n_nonmembers, the smallest non-zero FPR the data can measure.
    """
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    for fpr, tpr, label in curves:
        keep = (fpr > 0) & (tpr > 0)
        ax.step(fpr[keep], tpr[keep], where="post", lw=1.3, label=label)
    ax.plot([min_fpr, 1], [min_fpr, 1], ls=":", color="grey", label="chance")
    if min_fpr < 0.01:  # else no FPR between 0 and 1% exists and the marker would sit off the axes
        ax.axvline(0.01, color="grey", lw=0.8, ls="--")
        ax.text(0.0105, min_fpr * 1.15, "1% FPR", color="grey", fontsize=8)
    ax.set(xscale="log", yscale="log", xlim=(min_fpr, 1), ylim=(min_fpr, 1.05),
           xlabel="false-positive rate (non-members called members)", ylabel="true-positive rate (members found)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _bins(a: np.ndarray, b: np.ndarray, *, log: bool, n: int = 30) -> np.ndarray:
    both = np.concatenate([a, b])
    lo, hi = float(np.min(both)), float(np.max(both))
    if hi <= lo:
        hi = lo + 1.0
    return np.geomspace(lo, hi, n + 1) if log else np.linspace(lo, hi, n + 1)


def plot_member_distributions(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = "") -> Figure:
    """Histograms of members vs unseen subjects, one panel per quantity (the paper's Figure 1).

    ``panels`` maps an axis label to ``(members, nonmembers)`` values. Bars are the fraction of each
    group per bin, so groups of different size compare (densities would mislead on log bins); a
    quantity spanning more than two decades of positive values (gradient norms) gets log bins and a
    log axis, else the members' spike near zero hides the rest.
    """
    fig = Figure(figsize=(5.0 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, (members, nonmembers)) in zip(axes, panels.items()):
        both = np.concatenate([members, nonmembers])
        log = bool(np.all(both > 0) and both.max() / both.min() > 100)
        bins = _bins(members, nonmembers, log=log)
        for values, color, name in ((nonmembers, NONMEMBER_COLOR, "unseen"), (members, MEMBER_COLOR, "members")):
            ax.hist(values, bins=bins, weights=np.full(len(values), 1 / len(values)), alpha=0.55, color=color,
                    label=f"{name} (n={len(values)}, median {np.median(values):.3g})")
        if log:
            ax.set_xscale("log")
        ax.set(xlabel=label, ylabel="fraction of group")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_attack_heatmap(accuracy: pd.DataFrame, *, title: str = "") -> Figure:
    """Attacker (rows) × victim (columns) attack accuracy in %, each cell annotated.

    The colour scale starts at chance (50%), so any colour means an attack beat a coin flip;
    cells without an attack (attacker = victim) stay blank.
    """
    values = accuracy.to_numpy(dtype=float) * 100
    n_rows, n_cols = values.shape
    fig = Figure(figsize=(1.0 + 0.75 * n_cols, 0.8 + 0.6 * n_rows))
    ax = fig.add_subplot()
    top = max(60.0, float(np.nanmax(values)) if np.isfinite(values).any() else 60.0)
    image = ax.imshow(values, cmap="viridis", vmin=50, vmax=top, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=9,
                    color="white" if v < (50 + top) / 2 else "black")
    ax.set_xticks(range(n_cols), labels=list(accuracy.columns))
    ax.set_yticks(range(n_rows), labels=list(accuracy.index))
    ax.set(xlabel="victim", ylabel="attacker")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="accuracy %")
    return fig


def plot_accuracy_vs_round(series: pd.DataFrame, *, title: str = "") -> Figure:
    """Attack accuracy per round, one line per feature set, with ± 1 std error bars.

    ``series`` has columns ``features``, ``round``, ``accuracy``, ``accuracy_std``; the dotted line
    is chance. Rising accuracy over rounds is the model memorising its training subjects.
    """
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    for features, rows in series.groupby("features", sort=False):
        rows = rows.sort_values("round")
        ax.errorbar(rows["round"], 100 * rows["accuracy"], yerr=100 * rows["accuracy_std"].fillna(0),
                    marker="o", ms=4, capsize=3, label=features)
    ax.axhline(50, ls=":", color="grey", label="chance")
    ax.set(xlabel="round", ylabel="attack accuracy %")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def plot_privacy_utility(points: pd.DataFrame, *, chance_auc: float, chance_tpr: float, title: str = "") -> Figure:
    """Attack AUC (left) and TPR at low FPR (right) against the model's error, one line per feature set.

    ``points`` has columns ``features``, ``unseen_mae``, ``auc``, ``tpr``, ``tpr_low``, ``tpr_high`` and
    ``label`` (what each point is annotated with: the defense's value and ε), one row per defense
    setting and feature set, in the order the lines join them (the defense's values). A defense
    worth its cost moves points down (less leakage) without moving them far right (less utility);
    the dashed lines are what an attack that guesses achieves.
    """
    fig = Figure(figsize=(11.0, 4.2))
    panels = fig.subplots(1, 2)
    for ax, (column, ylabel, chance) in zip(panels, (("auc", "attack AUC", chance_auc),
                                                     ("tpr", f"TPR at {100 * chance_tpr:g}% FPR", chance_tpr))):
        for features, rows in points.groupby("features", sort=False):
            if column == "tpr":
                spread = [rows["tpr"] - rows["tpr_low"], rows["tpr_high"] - rows["tpr"]]
                ax.errorbar(rows["unseen_mae"], rows["tpr"], yerr=spread, marker="o", ms=5, lw=1, capsize=3,
                            label=features)
            else:
                ax.plot(rows["unseen_mae"], rows[column], marker="o", ms=5, lw=1, label=features)
            for x, y, text in zip(rows["unseen_mae"], rows[column], rows["label"]):
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(chance, ls="--", color="grey", lw=1, label="chance")
        ax.set(xlabel="unseen MAE of the released predictions (years)", ylabel=ylabel)
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
