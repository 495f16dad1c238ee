"""The reconstruction family's outputs under ``RUN_DIR/attacks/reconstruct/``.

``results.csv`` (one row per reconstructed scan; a later command replaces only the rows of the settings
it redid: attack, round, learner, setting, update rule, labels), ``sweep.csv``, ``examples.npz`` (the kept reconstructions, with their true scan and prior) and
``report.html`` (+ ``sweep.png`` and ``examples/*.png``): mid-slice grids in three planes, the quality/identifiability tables, the sweep plot.
The page is rebuilt from those files, so running one attack never loses another's results.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attacks.evaluation import verdicts
from attacks.evaluation.images import mean_interval, share_interval
from attacks.evaluation.verdicts import Verdict
from attacks.reconstruction.run import Example
from attacks.reconstruction.strength import RETURN_NOISE, RETURN_SHARE
from attacks.reporting.html import png, write_page
from attacks.reporting.results import merge_rows
from fedsim import snapshots

__all__ = ["OUT_DIR", "RESULTS_CSV", "SWEEP_CSV", "judge", "out_dir", "summary", "text", "varying", "verdict", "write_outputs"]

OUT_DIR, RESULTS_CSV, SWEEP_CSV, SWEEP_PNG = "attacks/reconstruct", "results.csv", "sweep.csv", "sweep.png"
EXAMPLES, EXAMPLES_DIR, REPORT = "examples.npz", "examples", "report.html"
#: What a summary row groups by (sweep points, or each attack's setting).
SWEEP_KEYS = ["round", "recipe", "inversion", "update", "batch_size", "local_steps", "steps", "width", "defense"]
ATTACK_KEYS = ["attack", "round", "learner", "setting", "inversion", "update", "labels"]
#: what a gradient inversion's rows carry of its strength (:mod:`attacks.reconstruction.strength`), averaged per point
STRENGTH = ("objective_reached", "objective_truth", "objective_prior", "objective_other", "return_ssim_start",
            "return_ssim_end", "return_closed", "return_passed", "control_ssim_gain", "control_recovered")


def out_dir(run_dir: Path) -> Path:
    return Path(run_dir) / OUT_DIR


def _save_examples(path: Path, examples: Sequence[Example]) -> dict[str, np.ndarray]:
    kept = dict(np.load(path)) if path.is_file() else {}
    kept.update({e.label: np.stack([e.truth, e.image, e.prior]).astype(np.float32) for e in examples})

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **kept)
    snapshots.atomic_write(path, write)
    return kept


def summary(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean SSIM, PSNR, their prior's, the SSIM gain (Student-t 95% interval) and identifiability
    (Clopper-Pearson 95% interval) over the reconstructed scans, per group of ``keys``."""
    out = []
    frame = frame.assign(**{k: "" for k in keys if k not in frame})  # a file from before a key existed
    for key, g in frame.groupby(list(keys), sort=False, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["n"] = len(g)
        for col in ("ssim", "ssim_prior", "psnr", "psnr_prior", "identified_prior", "chance", "seconds",
                    "residual_corr", "residual_corr_others", *STRENGTH):
            row[col] = float(g[col].mean()) if col in g and g[col].notna().any() else float("nan")
        row["ssim_gain"], row["ssim_gain_low"], row["ssim_gain_high"] = mean_interval(g["ssim_gain"].to_numpy())
        row["identified"], row["identified_low"], row["identified_high"] = share_interval(g["identified"].to_numpy())
        row["identified_corr"], row["identified_corr_low"], row["identified_corr_high"] = (
            share_interval(g["identified_corr"].to_numpy()) if "identified_corr" in g and g["identified_corr"].notna().all()
            else (float("nan"),) * 3)
        out.append(row)
    return pd.DataFrame(out)


def judge(r: Any) -> Verdict:
    """The :mod:`~attacks.evaluation.verdicts` verdict of one summary row, naming the attack that was run."""
    how = text(r.get("inversion", "")) if text(r.get("inversion", "")) != "—" else text(r.get("setting", ""))
    return verdicts.reconstruction(r, name="" if how == "—" else how)


def verdict(r: Any) -> str:
    """The words for one summary row: "leak detected" only where the SSIM gain's interval excludes the prior or
    an identified share's (nearest scan, or by correlation) excludes chance; "attack too weak to tell" where the
    attack's positive control or its return test on the attacked model failed; otherwise "not detected" with the
    largest share of scans its interval allows, and the attack that was run."""
    judged = judge(r)
    return judged.words + (f"; {judged.attack}" if judged.attack else "")


def _slices(volume: np.ndarray) -> list[np.ndarray]:
    x, y, z = (s // 2 for s in volume.shape)
    return [np.rot90(volume[x]), np.rot90(volume[:, y]), np.rot90(volume[:, :, z])]


def plot_example(label: str, stack: np.ndarray) -> Figure:
    """True scan | reconstruction | prior, mid-slices in the three planes, one grey scale."""
    fig = Figure(figsize=(7.2, 6.4))
    axes = fig.subplots(3, 3)
    low, high = float(stack[0].min()), float(stack[0].max())
    for c, (name, vol) in enumerate(zip(("true scan", "reconstruction", "prior (attacker's mean brain)"), stack)):
        for r, (plane, img) in enumerate(zip(("sagittal", "coronal", "axial"), _slices(vol))):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(plane, fontsize=9)
    fig.suptitle(label, fontsize=10)
    return fig


def plot_sweep(points: pd.DataFrame) -> Figure:
    """SSIM gain over the prior and identifiability (nearest scan, and by correlation, each beside its chance)
    against batch size, a line per local steps and width."""
    fig = Figure(figsize=(9, 3.6))
    gain_ax, id_ax = fig.subplots(1, 2)
    plain = points[points["defense"] == "none"]
    for (steps, width), g in plain.groupby(["local_steps", "width"], sort=False):
        g = g.sort_values("batch_size")
        label = f"local steps: {steps}" + ("" if plain["width"].nunique() == 1 else f", width {width:g}")
        gain_ax.errorbar(g["batch_size"], g["ssim_gain"], yerr=[g["ssim_gain"] - g["ssim_gain_low"],
                         g["ssim_gain_high"] - g["ssim_gain"]], marker="o", capsize=3, label=label)
        line = id_ax.errorbar(g["batch_size"], g["identified"], yerr=[g["identified"] - g["identified_low"],
                              g["identified_high"] - g["identified"]], marker="o", capsize=3, label=f"{label}: nearest scan")
        if g["identified_corr"].notna().all():
            id_ax.errorbar(g["batch_size"], g["identified_corr"], yerr=[g["identified_corr"] - g["identified_corr_low"],
                           g["identified_corr_high"] - g["identified_corr"]], marker="s", ls="--", capsize=3,
                           color=line[0].get_color(), label=f"{label}: by correlation")
        id_ax.plot(g["batch_size"], g["chance"], color=line[0].get_color(), ls=":", lw=1)
    gain_ax.axhline(0, color="grey", ls="--", lw=1, label="the prior")
    sizes = sorted(plain["batch_size"].unique())
    for ax, name in ((gain_ax, "SSIM gain over the prior"), (id_ax, "identified (share of scans)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    id_ax.set_ylim(-0.05, 1.05)
    gain_ax.legend(fontsize=8)
    id_ax.legend(fontsize=7, title="dotted: chance", title_fontsize=7)
    fig.tight_layout()
    return fig


HOW_TO_READ = (
    "Each reconstruction is scored on the volume the model sees (SSIM and PSNR, scikit-image, 3-D) against its "
    "true scan, beside the prior — the attacker's mean brain, where every reconstruction starts. The gain over "
    "the prior is what leaked; residual corr / others: the correlation of (reconstruction - prior) with (truth - "
    "prior), 0 when nothing of the subject was recovered, beside its mean over every other candidate. Identified: "
    "the share of reconstructions whose nearest scan, among the victim's subjects and unseen ones, is their own "
    "subject; by correlation: whose own subject's deviation from the prior correlates best with theirs (chance: the "
    "batch's true scans' share of the candidates, one over them for a single scan; 'by prior': the share the prior "
    "itself names). Intervals (95%): Student t for the mean "
    "SSIM gain, Clopper-Pearson for the identified shares. "
    "Verdict (the words of every page): 'leak detected' only where an interval excludes the prior or chance (large "
    "when the scan is recovered or half the scans are named); 'attack too weak to tell' where the attack failed its "
    "positive control or its return test; otherwise 'not detected' with the largest share of scans its interval "
    "allows and the attack that was run — never read that as 'safe'. Strength of a gradient inversion: the objective it reached beside its "
    "value at the truth, the prior and other subjects (a value any brain reaches is no match); the return test (the "
    f"same attack started at the truth plus noise of {RETURN_NOISE:g} std: does it close {RETURN_SHARE:.0%} of the "
    "distance?); the positive control (the same settings on a model whose one-scan update determines the scan: "
    "its SSIM gain). Model inversion: AUC of 'closer to the prototype = member' among subjects of that age (0.5: "
    "the prototype carries no membership), beside the prior's own AUC."
)


def varying(points: pd.DataFrame, keys: Sequence[str], *, always: Sequence[str]) -> list[str]:
    """The keys worth a column: those that take more than one value here, and ``always``."""
    return [k for k in keys if k in always or points[k].astype(str).nunique() > 1]


def text(value: Any) -> str:
    """A key's value as a table cell: "—" where a setting does not apply (learned inverse: no update rule)."""
    return "—" if pd.isna(value) or value == "" else str(value)


def _cells(frame: pd.DataFrame, keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    def ci(r: Any, name: str, digits: int = 3) -> str:
        low, high = r[f"{name}_low"], r[f"{name}_high"]
        text = f"{r[name]:.{digits}f}"
        return text if pd.isna(low) else f"{text} [{low:.{digits}f}, {high:.{digits}f}]"

    columns = [*keys, "verdict", "n", "SSIM / prior", "SSIM gain [95% CI]", "PSNR / prior dB", "residual corr / others",
               "identified [95% CI]", "by correlation [95% CI]", "by prior", "chance", "s / scan"]
    rows = [[*(text(r[k]) for k in keys), verdict(r), str(r["n"]), f"{r['ssim']:.3f} / {r['ssim_prior']:.3f}",
             ci(r, "ssim_gain"),
             f"{r['psnr']:.1f} / {r['psnr_prior']:.1f}",
             f"{_number(r['residual_corr'], '+.3f')} / {_number(r['residual_corr_others'], '+.3f')}", ci(r, "identified", 2),
             "—" if pd.isna(r["identified_corr"]) else ci(r, "identified_corr", 2),
             f"{r['identified_prior']:.2f}", f"{r['chance']:.3f}", f"{r['seconds']:.1f}"]
            for _, r in frame.iterrows()]
    return columns, rows


def _number(value: float, spec: str) -> str:
    return "—" if pd.isna(value) else format(value, spec)


def _strength_cells(frame: pd.DataFrame, keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """One row per gradient-inversion point: the objective reached beside its baselines, the return test, the control."""
    columns = [*keys, "objective reached", "at the truth", "at the prior", "at other subjects",
               "return test: SSIM start → end, distance closed", "positive control: SSIM gain"]
    rows = [[*(text(r[k]) for k in keys), _number(r["objective_reached"], ".3f"), _number(r["objective_truth"], ".3f"),
             _number(r["objective_prior"], ".3f"), _number(r["objective_other"], ".3f"),
             f"{_number(r['return_ssim_start'], '.3f')} → {_number(r['return_ssim_end'], '.3f')}, closed "
             f"{_number(r['return_closed'], '.0%')}"
             + ("" if pd.isna(r["return_passed"]) else (" (passed)" if r["return_passed"] == 1 else " (failed)")),
             _number(r["control_ssim_gain"], "+.3f") + ("" if pd.isna(r["control_recovered"]) else
                                                         (" (recovered)" if r["control_recovered"] == 1 else " (not recovered)"))]
            for _, r in frame.iterrows() if pd.notna(r["objective_truth"])]
    return columns, rows


def write_outputs(run_dir: Path, rows: list[dict[str, Any]], examples: Sequence[Example], *, sweep: bool,
                  command: str) -> Path:
    """Merge ``rows`` into ``results.csv`` (or replace ``sweep.csv``), keep ``examples``, rebuild the page."""
    out = out_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if sweep:
        snapshots.atomic_write(out / SWEEP_CSV, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    else:
        merge_rows(out / RESULTS_CSV, rows, ATTACK_KEYS, dtype={"learner": str, "update": str, "inversion": str})
    kept = _save_examples(out / EXAMPLES, examples)
    return write_report(run_dir, kept, command=command)


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def write_report(run_dir: Path, kept: dict[str, np.ndarray], *, command: str) -> Path:
    out = out_dir(run_dir)
    sections = []
    if (out / RESULTS_CSV).is_file():
        results = pd.read_csv(out / RESULTS_CSV, keep_default_na=False, na_values=[""])
        images = results[results["attack"] != "model"]
        if len(images):
            points = summary(images, ATTACK_KEYS)
            keys = varying(points, ATTACK_KEYS, always=("attack", "setting"))
            columns, cells = _cells(points, keys)
            sections.append({"title": "Gradient and feature inversion", "columns": columns, "rows": cells,
                             "text_columns": len(keys), "wrap": (len(keys),), "verdict": len(keys),
                             "kinds": [judge(r).kind for _, r in points.iterrows()]})
            columns, cells = _strength_cells(points, keys)
            if cells:
                sections.append({"title": "How strong each gradient inversion was", "columns": columns, "rows": cells,
                                 "text_columns": len(keys)})
        model = results[results["attack"] == "model"]
        if len(model):
            sections.append({"title": "Model inversion: is the prototype closer to members?",
                             "columns": ["round", "target age", "predicted", "members", "unseen", "closeness AUC",
                                         "prior's AUC"],
                             "rows": [[str(r["round"]), f"{r['target_age']:g}", f"{r['predicted_age']:.1f}",
                                       f"{r['members']:.0f}", f"{r['non_members']:.0f}", f"{r['closeness_auc']:.3f}",
                                       f"{r['closeness_auc_prior']:.3f}"] for _, r in model.iterrows()],
                             "text_columns": 0})
    sweep_figure = None
    if (out / SWEEP_CSV).is_file():
        points = summary(pd.read_csv(out / SWEEP_CSV, keep_default_na=False, na_values=[""]), SWEEP_KEYS)
        keys = varying(points, SWEEP_KEYS, always=("batch_size", "local_steps", "defense"))
        columns, cells = _cells(points, keys)
        sections.append({"title": "Gradient-inversion sweep: batch size, local steps, width, defenses",
                         "note": "; ".join(f"{k}: {text(points[k].iloc[0])}" for k in SWEEP_KEYS if k not in keys),
                         "columns": columns, "rows": cells, "text_columns": len(keys), "wrap": (len(keys),),
                         "verdict": len(keys), "kinds": [judge(r).kind for _, r in points.iterrows()]})
        columns, cells = _strength_cells(points, keys)
        if cells:
            sections.append({"title": "How strong the sweep's inversion was at each point", "columns": columns,
                             "rows": cells, "text_columns": len(keys)})
        sweep_figure = png(plot_sweep(points))
        snapshots.atomic_write(out / SWEEP_PNG, lambda tmp: Path(tmp).write_bytes(base64.b64decode(sweep_figure)))
    figures = [(label, png(plot_example(label, stack))) for label, stack in kept.items()]
    (out / EXAMPLES_DIR).mkdir(exist_ok=True)
    for label, figure in figures:  # each grid as a file too, for a paper or a slide
        snapshots.atomic_write(out / EXAMPLES_DIR / f"{_slug(label)}.png",
                               lambda tmp, f=figure: Path(tmp).write_bytes(base64.b64decode(f)))
    return write_page(out / REPORT, "reconstruction.html", title=f"Reconstruction attacks on {Path(run_dir).name}",
                      command=command, how_to_read=HOW_TO_READ, sections=sections, sweep_figure=sweep_figure,
                      figures=figures)
