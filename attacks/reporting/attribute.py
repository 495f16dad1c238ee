"""The attribute family's outputs under ``RUN_DIR/attacks/attribute/``.

``results.csv`` (one row per attack: seat, feature set, control, attacker, victim, repeat; a later command
replaces only the rows of the attribute, round, classifier and seats it redid; the tables keep rounds and
classifiers apart), ``property.csv`` (per learner and
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

from attacks.attribute.inference import DEFAULT_CLASSIFIER, HOLDER, IMAGE, LABEL_ONLY, NO_MODEL, SEATS
from attacks.attribute.properties import PROPERTIES, property_summary
from attacks.evaluation import verdicts
from attacks.evaluation.summary import summarise
from attacks.reporting.html import interval, png, write_page
from attacks.reporting.results import merge_rows
from fedsim import snapshots

__all__ = ["OUT_DIR", "RESULTS_CSV", "PROPERTY_CSV", "attribute_table", "plot_auc_by_layer", "write_outputs"]

OUT_DIR, RESULTS_CSV, PROPERTY_CSV, RESULTS_JSON = "attacks/attribute", "results.csv", "property.csv", "results.json"
FIGURE, REPORT = "auc_by_layer.png", "report.html"
_KEYS = ["attribute", "round", "classifier", "seat", "features", "control", "victims"]
_DTYPE = {"attacker": str, "victim": str, "features": str}
HOW_TO_READ = (
    "Each row is one seat's attack on the question in the first column (sex: is this a woman; site=S: was this "
    "scan taken at S), fitted on the attacker's own subjects and scored on the victims' (a federation: every other "
    "learner's subjects). AUC is for the members (subjects the model trained on), with its 95% bootstrap interval "
    "over victims; 'unseen' is the same attack on subjects it never trained on, 'gap' the difference (leakage "
    "training caused). Compare every number with the label-only baseline (age, and site where known: what the "
    "attacker knows without the model; every attack reads it too), the untrained model (round 0: random "
    "convolutions already see head size and scanner texture) and the image probe (a linear probe on the scans "
    "themselves and their intensity and texture statistics; the untrained model's early layers can read a scanner "
    "better than it). Verdict (the same words on every page; see 'What the verdicts mean'): 'leak detected' = the "
    "AUC's interval excludes the label-only baseline and the untrained model; 'in the scan, not from training' = "
    "above the baseline, but so is the untrained model; 'not detected' = nothing beyond what the attacker knew, "
    "with the largest AUC the interval allows.")


def out_dir(run_dir: Path) -> Path:
    return Path(run_dir) / OUT_DIR


def attribute_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per question, seat and feature set: AUC, accuracy and TPR at 1 % FPR on the members with their
    intervals, the AUC on unseen subjects and the gap, the round-0 control, the label-only baseline,
    the image probe, and the verdict."""
    summary = summarise(results, _KEYS).set_index(_KEYS)

    def get(*key: Any) -> pd.Series | None:
        return summary.loc[key] if key in summary.index else None

    rows = []
    main = results[results["control"] == "none"]
    order = {seat: i for i, seat in enumerate(SEATS)}
    cells = main[["attribute", "round", "classifier", "seat", "features"]].drop_duplicates()
    for (attribute, rnd, classifier), mine in cells.groupby(["attribute", "round", "classifier"], sort=False):
        mine = mine.iloc[mine["seat"].map(order).argsort(kind="stable")]
        at = (attribute, rnd, classifier)
        base, image = get(*at, NO_MODEL, LABEL_ONLY, "none", "members"), get(*at, NO_MODEL, IMAGE, "none", "members")
        tests = mine["seat"].value_counts()  # a seat's verdicts hold for all its probes of this question together
        for seat, features in mine[["seat", "features"]].itertuples(index=False):
            attack = get(*at, seat, features, "none", "members")
            unseen = get(*at, seat, features, "none", "non-members")
            round0 = get(*at, seat, features, "round-0", "members")
            if seat == NO_MODEL:  # the baselines are references, not attacks
                judged = {"kind": "baseline", "verdict": "baseline" if features == LABEL_ONLY else "reference", "bound": ""}
            else:
                v = verdicts.attribute(attack, base, round0, name=features, tests=int(tests[seat]))
                judged = {"kind": v.kind, "verdict": v.words, "bound": v.bound}
            row: dict[str, Any] = {"attribute": attribute, "seat": seat, "features": features, "round": int(rnd),
                                   "classifier": classifier}
            for metric in ("auc", "accuracy", "tpr_at_1pct"):
                for suffix in ("", "_low", "_high"):
                    row[f"{metric}{suffix}"] = attack[f"{metric}{suffix}"]
            row["unseen_auc"] = np.nan if unseen is None else unseen["auc"]
            row["gap"] = row["auc"] - row["unseen_auc"]
            row["round0_auc"] = np.nan if round0 is None else round0["auc"]
            row["baseline_auc"] = np.nan if base is None else base["auc"]
            row["image_auc"] = np.nan if image is None else image["auc"]
            row.update({"positives": attack.get("n_members"), "negatives": attack.get("n_nonmembers"),
                        "attacks": attack["attacks"], **judged})
            rows.append(row)
    return pd.DataFrame(rows)


def plot_auc_by_layer(table: pd.DataFrame) -> Figure | None:
    """The feature holder's AUC per layer, trained vs untrained model, against the label-only baseline and
    the image probe; one panel per question. None without feature-holder rows."""
    holder = table[table["seat"] == HOLDER]
    if holder.empty:
        return None
    questions = list(dict.fromkeys(zip(holder["attribute"], holder["round"], holder["classifier"])))
    columns = min(2, len(questions))
    rows_of_panels = -(-len(questions) // columns)
    fig = Figure(figsize=(5.6 * columns, 3.9 * rows_of_panels))
    axes = fig.subplots(rows_of_panels, columns, squeeze=False).ravel()
    for ax in axes[len(questions):]:
        ax.set_axis_off()
    for ax, (question, rnd, classifier) in zip(axes, questions):
        rows = holder[(holder["attribute"] == question) & (holder["round"] == rnd) & (holder["classifier"] == classifier)]
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
        ax.set_title(f"{question}: feature holder, round {rnd}" + ("" if classifier == DEFAULT_CLASSIFIER else
                     f", {classifier}"), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def _cells(table: pd.DataFrame) -> list[list[str]]:
    def num(v: float) -> str:
        return "—" if pd.isna(v) else f"{v:.2f}"
    return [[r.attribute, r.seat, r.features, r.verdict, interval(r.auc, r.auc_low, r.auc_high, digits=2),
             num(r.baseline_auc), num(r.round0_auc), num(r.unseen_auc), "—" if pd.isna(r.gap) else f"{r.gap:+.2f}",
             num(r.image_auc), num(r.accuracy), num(r.tpr_at_1pct)] for r in table.itertuples()]


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
        merge_rows(out / RESULTS_CSV, results, ["attribute", "round", "classifier", "seat"], dtype=_DTYPE)
    if properties is not None and len(properties):
        merge_rows(out / PROPERTY_CSV, properties, ["round", "learner", "property"], dtype={"learner": str})
    sections, figure, summary = [], None, {"command": command}
    if (out / RESULTS_CSV).is_file():
        table = attribute_table(pd.read_csv(out / RESULTS_CSV, dtype=_DTYPE, keep_default_na=False, na_values=[""]))
        summary["attacks"] = table.to_dict(orient="records")
        for (rnd, classifier), part in table.groupby(["round", "classifier"], sort=False):
            sections.append({"title": f"Attribute inference by seat, round {rnd}, classifier {classifier}",
                             "text_columns": 4, "rows": _cells(part), "verdict": 3, "wrap": (3,),
                             "kinds": list(part["kind"]),
                             "columns": ["question", "seat", "feature set", "verdict", "AUC [95% CI]", "label only",
                                         "round 0", "unseen", "gap", "image", "accuracy", "TPR@1%"]})
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
