"""The attribute family's outputs under ``RUN_DIR/attacks/attribute/``.

``results.csv`` (one row per attack: seat, feature set, control, attacker, victim, repeat; a later command
replaces only the rows of the attribute, round and seats it redid), ``property.csv`` (per learner and
property), ``results.json`` (the summary tables), ``auc_by_layer.png`` and ``report.html``. The page is
rebuilt from the CSV files, so attacking site never loses the sex results.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attacks.attribute.inference import HOLDER, IMAGE, LABEL_ONLY, NO_MODEL, SEATS
from attacks.attribute.properties import PROPERTIES, property_summary
from attacks.evaluation.summary import clearly_above, summarise
from attacks.reporting.html import interval, png, write_page
from attacks.reporting.results import merge_rows
from fedsim import snapshots

__all__ = ["OUT_DIR", "RESULTS_CSV", "PROPERTY_CSV", "attribute_table", "plot_auc_by_layer", "write_outputs"]

OUT_DIR, RESULTS_CSV, PROPERTY_CSV, RESULTS_JSON = "attacks/attribute", "results.csv", "property.csv", "results.json"
FIGURE, REPORT = "auc_by_layer.png", "report.html"
_KEYS = ["attribute", "seat", "features", "control", "victims"]
_DTYPE = {"attacker": str, "victim": str, "features": str}
#: verdict kind -> what it says
VERDICTS = {"leak": "leaks beyond the label-only baseline and the untrained model",
            "scan": "beyond the baseline, as is the untrained model: the scan's, not training's",
            "none": "no more than the label-only baseline",
            "baseline": "what the attacker knows without the model",
            "bound": "a probe of the scans themselves"}
HOW_TO_READ = (
    "Each row is one seat's attack on the question in the first column (sex: is this a woman; site=S: was this "
    "scan taken at S), fitted on the attacker's own subjects and scored on the victims' (a federation: every other "
    "learner's subjects). AUC is for the members (subjects the model trained on), with its 95% bootstrap interval "
    "over victims; 'unseen' is the same attack on subjects it never trained on, 'gap' the difference (leakage "
    "training caused). Compare every number with the label-only baseline (age, and site where known: what the "
    "attacker knows without the model; every attack reads it too), the untrained model (round 0: random "
    "convolutions already see head size and scanner texture) and the image probe (a linear probe on the scans "
    "themselves and their intensity and texture statistics; the untrained model's early layers can read a scanner "
    "better than it).")


def out_dir(run_dir: Path) -> Path:
    return Path(run_dir) / OUT_DIR


def attribute_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per question, seat and feature set: AUC, accuracy and TPR at 1 % FPR on the members with their
    intervals, the AUC on unseen subjects and the gap, the round-0 control, the label-only baseline,
    the image probe, and the verdict."""
    summary = summarise(results, _KEYS).set_index(_KEYS)

    def get(*key: str) -> pd.Series | None:
        return summary.loc[key] if key in summary.index else None

    rows = []
    main = results[results["control"] == "none"]
    order = {seat: i for i, seat in enumerate(SEATS)}
    cells = main[["attribute", "seat", "features"]].drop_duplicates()
    for attribute in dict.fromkeys(cells["attribute"]):
        mine = cells[cells["attribute"] == attribute]
        mine = mine.iloc[mine["seat"].map(order).argsort(kind="stable")]
        base, image = get(attribute, NO_MODEL, LABEL_ONLY, "none", "members"), get(attribute, NO_MODEL, IMAGE, "none", "members")
        for seat, features in mine[["seat", "features"]].itertuples(index=False):
            attack = get(attribute, seat, features, "none", "members")
            unseen = get(attribute, seat, features, "none", "non-members")
            round0 = get(attribute, seat, features, "round-0", "members")
            if seat == NO_MODEL:
                kind = "baseline" if features == LABEL_ONLY else "bound"
            elif not clearly_above(attack, base, "auc"):
                kind = "none"
            else:
                kind = "leak" if round0 is None or clearly_above(attack, round0, "auc") else "scan"
            row: dict[str, Any] = {"attribute": attribute, "seat": seat, "features": features,
                                   "round": int(main.loc[main["seat"] == seat, "round"].max())}
            for metric in ("auc", "accuracy", "tpr_at_1pct"):
                for suffix in ("", "_low", "_high"):
                    row[f"{metric}{suffix}"] = attack[f"{metric}{suffix}"]
            row["unseen_auc"] = np.nan if unseen is None else unseen["auc"]
            row["gap"] = row["auc"] - row["unseen_auc"]
            row["round0_auc"] = np.nan if round0 is None else round0["auc"]
            row["baseline_auc"] = np.nan if base is None else base["auc"]
            row["image_auc"] = np.nan if image is None else image["auc"]
            row.update({"positives": attack.get("n_members"), "negatives": attack.get("n_nonmembers"),
                        "attacks": attack["attacks"], "kind": kind, "verdict": VERDICTS[kind]})
            rows.append(row)
    return pd.DataFrame(rows)


def plot_auc_by_layer(table: pd.DataFrame) -> Figure | None:
    """The feature holder's AUC per layer, trained vs untrained model, against the label-only baseline and
    the image probe; one panel per question. None without feature-holder rows."""
    holder = table[table["seat"] == HOLDER]
    if holder.empty:
        return None
    questions = list(dict.fromkeys(holder["attribute"]))
    fig = Figure(figsize=(5.2 * len(questions), 3.8))
    for ax, question in zip(fig.subplots(1, len(questions), squeeze=False)[0], questions):
        rows = holder[holder["attribute"] == question]
        x = np.arange(len(rows))
        spread = [rows["auc"] - rows["auc_low"], rows["auc_high"] - rows["auc"]]
        ax.errorbar(x, rows["auc"], yerr=np.nan_to_num(np.asarray(spread, dtype=float)), marker="o", capsize=3,
                    label="trained model (members)")
        ax.plot(x, rows["round0_auc"], marker="s", ls="--", label="untrained (round 0)")
        ax.axhline(rows["baseline_auc"].iloc[0], color="grey", ls=":", label="label-only baseline")
        if rows["image_auc"].notna().any():
            ax.axhline(rows["image_auc"].iloc[0], color="black", ls="-.", lw=1, label="image probe")
        ax.set_xticks(x, labels=[f.partition(":")[2] for f in rows["features"]])
        ax.set(xlabel="layer whose activations are held", ylabel="attack AUC", ylim=(0.4, 1.0))
        ax.set_title(f"{question}: feature holder, round {int(rows['round'].iloc[0])}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def _cells(table: pd.DataFrame) -> list[list[str]]:
    def num(v: float) -> str:
        return "—" if pd.isna(v) else f"{v:.3f}"
    return [[r.attribute, r.seat, r.features, str(r.round), interval(r.auc, r.auc_low, r.auc_high),
             interval(r.accuracy, r.accuracy_low, r.accuracy_high), interval(r.tpr_at_1pct, r.tpr_at_1pct_low, r.tpr_at_1pct_high),
             num(r.unseen_auc), "—" if pd.isna(r.gap) else f"{r.gap:+.3f}", num(r.round0_auc), num(r.baseline_auc),
             num(r.image_auc), r.verdict] for r in table.itertuples()]


def _property_cells(rows: pd.DataFrame) -> tuple[list[list[str]], list[list[str]]]:
    summary = property_summary(rows)
    overall = [[str(r["round"]), r["what"], str(r["learners"]), f"{r['mae']:.3f}", f"{r['baseline_mae']:.3f}",
                interval(r["gain"], r["gain_low"], r["gain_high"]), f"{r['shadow_mae']:.3f}"] for _, r in summary.iterrows()]
    per = [[r["learner"], str(r["subjects"]), PROPERTIES[r["property"]], f"{r['true']:.3f}", f"{r['estimate']:.3f}",
            f"{r['baseline']:.3f}"] for _, r in rows.iterrows()]
    return overall, per


def write_outputs(run_dir: Path, results: pd.DataFrame | None, properties: pd.DataFrame | None, *, command: str) -> Path:
    """Merge the new rows into ``results.csv`` / ``property.csv`` and rebuild ``results.json`` and the page."""
    out = out_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if results is not None and len(results):
        merge_rows(out / RESULTS_CSV, results, ["attribute", "round", "seat"], dtype=_DTYPE)
    if properties is not None and len(properties):
        merge_rows(out / PROPERTY_CSV, properties, ["round", "learner", "property"], dtype={"learner": str})
    sections, figure, summary = [], None, {"command": command}
    if (out / RESULTS_CSV).is_file():
        table = attribute_table(pd.read_csv(out / RESULTS_CSV, dtype=_DTYPE, keep_default_na=False, na_values=[""]))
        summary["attacks"] = table.to_dict(orient="records")
        sections.append({"title": "Attribute inference by seat", "text_columns": 4, "rows": _cells(table),
                         "columns": ["question", "seat", "feature set", "round", "AUC [95% CI]", "accuracy [95% CI]",
                                     "TPR at 1% FPR", "unseen AUC", "gap", "round-0 AUC", "label-only AUC",
                                     "image AUC", "verdict"]})
        fig = plot_auc_by_layer(table)
        if fig is not None:
            figure = png(fig)
            snapshots.atomic_write(out / FIGURE, lambda tmp: Path(tmp).write_bytes(base64.b64decode(figure)))
    if (out / PROPERTY_CSV).is_file():
        rows = pd.read_csv(out / PROPERTY_CSV, dtype={"learner": str})
        summary["property"] = property_summary(rows).to_dict(orient="records")
        overall, per = _property_cells(rows)
        sections.append({"title": "Property inference: each learner's cohort from its update (curious controller)",
                         "note": "Mean absolute error over learners of the attack and of predicting the federation's "
                         "average; gain = baseline − attack error (Student-t 95% interval over learners); shadow MAE: "
                         "leave-one-out error on the attacker's own shadow updates.",
                         "columns": ["round", "property", "learners", "attack MAE", "baseline MAE", "gain [95% CI]",
                                     "shadow MAE"], "rows": overall, "text_columns": 2})
        sections.append({"title": "Property inference per learner", "columns": ["learner", "subjects", "property",
                         "true", "estimate", "federation average"], "rows": per, "text_columns": 3})
    snapshots.write_text(out / RESULTS_JSON, json.dumps(summary, indent=1, default=float))
    return write_page(out / REPORT, "attribute.html", title=f"Attribute inference on {Path(run_dir).name}",
                      command=command, how_to_read=HOW_TO_READ, sections=sections, figure=figure)
