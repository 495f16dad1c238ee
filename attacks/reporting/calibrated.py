"""The page of the calibrated attacks (LiRA, RMIA) on a centralized run: ``RUN_DIR/attacks/calibrated.html``.

It sits beside ``calibrated.csv`` as ``report.html`` sits beside ``results.csv``. A calibrated attack
is one attack on one test set, so each row's own intervals (Hanley–McNeil for the AUC, the TPR's from
its counts) stand where :func:`~attacks.evaluation.summary.summarise` has no bootstrap over repeats;
the verdict of each attack against its round-0 control is :func:`attacks.evaluation.summary.verdict`'s,
the rule of every membership page. :func:`summary_rows` gives the same verdicts to an index page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.evaluation.summary import METRICS, feature_name, main_round, summarise, verdict
from attacks.evaluation.verdicts import Z
from attacks.membership.calibration import METHODS, attack_name
from attacks.reporting.figures import plot_roc_loglog
from attacks.reporting.html import interval, png, write_page
from attacks.threats.seats import SEAT_NAMES
from fedsim import snapshots

__all__ = ["PAGE", "RESULTS_CSV", "RESULTS_JSON", "SCORES_CSV", "attack_label", "calibrated_table", "summary_rows",
           "write_report", "write_results"]

#: Where the page goes, relative to the run directory (what :func:`summary_rows` links to).
PAGE = "attacks/calibrated.html"
#: What ``fedsim calibrated`` writes under ``RUN_DIR/attacks/`` beside its page.
RESULTS_CSV, SCORES_CSV, RESULTS_JSON = "calibrated.csv", "calibrated_scores.csv", "calibrated.json"
_METHODS = {"loss": "loss threshold", "lira-online": "LiRA online", "lira-offline": "LiRA offline", "rmia": "RMIA"}
_STATISTICS = {"abs-error": "−|ŷ − y|, uncalibrated", "log-abs": "log |ŷ − y|", "residual": "signed residual ŷ − y",
               "likelihood:gaussian": "Gaussian likelihood", "likelihood:laplace": "Laplace likelihood"}
_KEYS = ["control", "round", "method", "statistic"]
HOW_TO_READ = (
    "Each attack scores every attack-test subject (half of them members of the training set, half unseen "
    "subjects) against reference models that did and did not train on it, and is judged where it matters for "
    "privacy: the share of members it finds while wrongly accusing 1 % (or 0.1 %) of non-members — the TPR at "
    "low FPR, read off the test ROC; its 95 % interval allows for the few non-members, so its lower bound is 0 "
    "below about 370 of them. AUC is threshold-free (95 % interval from the sample sizes); accuracy is at the "
    "threshold that was best on the attacker's own subjects. The round-0 control is the same attack, with the "
    "same references, on the untrained model: it cannot remember anyone, so what it finds is a difference "
    "between the groups, not membership.")


def attack_label(method: str, statistic: str) -> str:
    """An attack as a person reads it, "LiRA online (log |ŷ − y|)", rather than ``lira-online/log-abs``."""
    return f"{_METHODS.get(method, method)} ({_STATISTICS.get(statistic, statistic)})"


def _summaries(results: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarise` per control, round, method and statistic; a one-attack group (every group of
    ``calibrated.csv``) takes its row's own intervals, and the AUC's standard error from its interval, which
    the verdict's comparison with the round-0 control needs."""
    summary = summarise(results, _KEYS).set_index(_KEYS)
    own = results.groupby(_KEYS, sort=False).first().reindex(summary.index)
    one = summary["attacks"] == 1
    for column, name in METRICS.items():
        if f"{column}_low" in own:
            for end in ("low", "high"):
                summary.loc[one, f"{name}_{end}"] = own.loc[one, f"{column}_{end}"]
    half = pd.concat([summary["auc"] - summary["auc_low"], summary["auc_high"] - summary["auc"]], axis=1).max(axis=1)
    summary.loc[one, "auc_se"] = half[one] / Z
    return summary


def calibrated_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per attack on the run's attacked round, in ``calibrated.csv``'s order: its summary (columns of
    :func:`summarise`), its round-0 control's as ``round0_…``, its ``label`` and the membership verdict
    (``kind``, ``verdict``, ``bound``)."""
    summary = _summaries(results)
    rnd = main_round(results)
    # every verdict holds for all the attacks on that round together
    tests = sum(1 for control, at, *_ in summary.index if control == "none" and at == rnd)
    rows = []
    for (control, at, method, statistic), attack in summary.iterrows():
        if control != "none" or at != rnd:
            continue
        key = ("round-0", 0, method, statistic)
        round0 = summary.loc[key] if key in summary.index else None
        label = attack_label(method, statistic)
        judged = verdict(attack, round0, None, name=label, tests=tests)
        row: dict[str, Any] = {"method": method, "statistic": statistic, "round": rnd, "label": label, **attack.to_dict()}
        for metric in ("accuracy", "auc", "auc_low", "auc_high", "tpr_at_1pct", "tpr_at_1pct_low", "tpr_at_1pct_high",
                       "tpr_at_0p1pct", "tpr_at_0p1pct_low", "tpr_at_0p1pct_high"):
            row[f"round0_{metric}"] = float("nan") if round0 is None else round0[metric]
        rows.append({**row, "kind": judged.kind, "verdict": judged.words, "bound": judged.bound})
    return pd.DataFrame(rows)


def summary_rows(results: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per attack of ``calibrated.csv`` for an index page over every attack family: who attacked,
    which attack, its verdict, AUC and TPR at 1 % FPR with intervals, accuracy, and ``link``, the page
    relative to the run directory. Calibrated attacks run on centralized runs only: the seat is the
    centralized adversary."""
    references, out = int(results["references"].max()), []
    for r in calibrated_table(results).to_dict("records"):
        out.append({
            "family": "membership", "seat": SEAT_NAMES["centralized"], "round": r["round"],
            "attack": r["label"] + (f", {references} references" if METHODS[r["method"]].min_references else ""),
            "kind": r["kind"], "verdict": r["verdict"], "bound": r["bound"],
            **{k: r[k] for k in ("auc", "auc_low", "auc_high", "tpr_at_1pct", "tpr_at_1pct_low", "tpr_at_1pct_high",
                                 "accuracy")},
            "link": PAGE,
        })
    return out


def _cells(row: dict[str, Any], prefix: str = "") -> list[str]:
    """AUC, TPR at 1 % and 0.1 % FPR, each with its interval, and accuracy %, of a table row (or its control's)."""
    return [interval(row[f"{prefix}{m}"], row[f"{prefix}{m}_low"], row[f"{prefix}{m}_high"], digits=2)
            for m in ("auc", "tpr_at_1pct", "tpr_at_0p1pct")] + [
        interval(row[f"{prefix}accuracy"], None, None, scale=100, digits=1)]


def _sections(results: pd.DataFrame, table: pd.DataFrame, classifiers: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The tables of the page, for ``macros.tables``: the attacks with their verdicts, their round-0 control
    (where run), and ``fedsim attack``'s trained classifiers (where given)."""
    rnd = int(table["round"].iloc[0])
    metrics = ["AUC [95% CI]", "TPR @ 1% FPR [95% CI]", "TPR @ 0.1% FPR [95% CI]", "accuracy %"]
    records = table.to_dict("records")
    notes = sorted({n for column in ("tpr@0.01_note", "tpr@0.001_note") if column in results
                    for n in results[column].dropna()})
    sections = [{
        "title": f"The attacks on round {rnd}", "columns": ["attack", "verdict", *metrics], "text_columns": 2,
        "rows": [[r["label"], r["verdict"], *_cells(r)] for r in records], "wrap": (0, 1), "verdict": 1,
        "kinds": [r["kind"] for r in records], "note": "; ".join(notes),
    }]
    if table["round0_auc"].notna().any():
        sections.append({
            "title": "The round-0 control: the same attacks on the untrained model", "columns": ["attack", *metrics],
            "text_columns": 1, "rows": [[r["label"], *_cells(r, "round0_")] for r in records],
            "note": "An untrained model remembers no one: its AUC should be near 0.5 and its TPR near the FPR.",
        })
    if classifiers is not None:
        sections.append({
            "title": "Beside the trained classifiers of fedsim attack", "text_columns": 3,
            "columns": ["classifier", "feature set", "round", "AUC [95% CI]", "TPR @ 1% FPR [95% CI]", "accuracy %"],
            "rows": [[c["classifier"], feature_name(c["features"]), str(c["round"]),
                      interval(c["auc"], c["auc_low"], c["auc_high"], digits=2),
                      interval(c["tpr"], c["tpr_at_1pct_low"], c["tpr_at_1pct_high"], digits=2),
                      interval(c["accuracy"], c["accuracy_low"], c["accuracy_high"], scale=100, digits=1)]
                     for c in classifiers.to_dict("records")],
            "note": "attacks/results.csv: one classifier per feature set, trained on the attacker's subjects; the mean "
                    "over its repeats with the bootstrap interval over them. Its own page, attacks/report.html, "
                    "judges them against their controls.",
        })
    return sections


def _roc_figures(results: pd.DataFrame, scores: pd.DataFrame, rnd: int) -> list[tuple[str, str]]:
    """(title, PNG) of the attack-test ROC curves of every attack on round ``rnd`` and on its round-0 control,
    from ``calibrated_scores.csv`` (every subject's score: no attack is rerun)."""
    labels = {attack_name(m, s): attack_label(m, s) for m, s in zip(results["method"], results["statistic"])}
    test = scores[scores["set"] == "attack-test"]
    figures = []
    for control, at, title in (("none", rnd, f"round {rnd}, the trained model"),
                               ("round-0", 0, "round 0, the untrained model (control)")):
        mine = test[(test["control"] == control) & (test["round"] == at)]
        if mine.empty:
            continue
        curves = []
        for attack, rows in mine.groupby("attack", sort=False):
            fpr, tpr, _ = roc_curve(rows["member"], rows["score"], drop_intermediate=False)
            auc = roc_auc_score(rows["member"], rows["score"])
            curves.append((fpr, tpr, f"{labels.get(attack, attack)}: AUC {auc:.2f}"))
        fig = plot_roc_loglog(curves, min_fpr=1 / int((rows["member"] == 0).sum()), title=title)
        # below the axes: six attacks' legend in the corner would hide the low-FPR end of the control's curves
        fig.axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.15), frameon=False)
        figures.append((title, png(fig)))
    return figures


def _facts(run_dir: Path, results: pd.DataFrame, table: pd.DataFrame) -> list[tuple[str, str]]:
    config, first, rnd = snapshots.read_config(run_dir), results.iloc[0], int(table["round"].iloc[0])
    facts = [
        ("run", str(run_dir)),
        ("model", str(config["model"]["name"])),
        ("target", f"round {rnd} (a centralized run's rounds are its epochs)"),
        ("references", f"{int(first['references'])} reference models of {int(first['reference_epochs'])} epochs, "
                       f"each on a random half of the {int(first['n_population'])} subjects the attacker knows"),
        ("methods", ", ".join(table["label"])),
        ("attack-test subjects", f"{int(first['n_members'])} members + {int(first['n_nonmembers'])} non-members"),
    ]
    if "variance" in results and results["variance"].notna().any():
        facts.append(("LiRA variance", ", ".join(sorted(set(results["variance"].dropna())))))
    if (results["method"] == "rmia").any():
        facts.append(("RMIA population z", f"{int(first['n_z'])} known non-members"))
    controls = sorted(set(results["control"]) - {"none"})
    facts.append(("controls", ", ".join(controls) if controls else "none (--no-controls)"))
    return facts


def write_results(run_dir: Path, rows: list[dict[str, Any]], scores: pd.DataFrame, references: Any) -> Path:
    """``calibrated.csv`` (one row per attack and control), ``calibrated_scores.csv`` (every subject's score) and
    ``calibrated.json`` (the rows and the reference models: where, how many trained now, in how long) under
    ``RUN_DIR/attacks/``, each atomically; returns the CSV. ``references``: the run's
    :class:`~attacks.membership.references.ReferenceSet`."""
    out = Path(run_dir) / "attacks"
    out.mkdir(parents=True, exist_ok=True)
    snapshots.atomic_write(out / RESULTS_CSV, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    snapshots.atomic_write(out / SCORES_CSV, lambda tmp: scores.to_csv(tmp, index=False))
    snapshots.write_text(out / RESULTS_JSON, json.dumps({
        "run_dir": str(run_dir), "references_dir": str(references.folder), "references": len(references),
        "trained_now": references.trained, "training_seconds": references.seconds, "rows": rows}, indent=1, default=str))
    return out / RESULTS_CSV


def write_report(run_dir: Path, results: pd.DataFrame, *, scores: pd.DataFrame | None = None,
                 classifiers: pd.DataFrame | None = None) -> Path:
    """Write ``RUN_DIR/attacks/calibrated.html`` from ``calibrated.csv``'s rows; returns the page.

    ``scores`` (``calibrated_scores.csv``) adds the ROC curves, ``classifiers`` (the summary of
    ``fedsim attack``'s classifiers on this run) their comparison.
    """
    table = calibrated_table(results)
    rnd = int(table["round"].iloc[0])
    return write_page(
        Path(run_dir) / PAGE, "calibrated.html", title=f"Calibrated attacks: {Path(run_dir).name}",
        facts=_facts(Path(run_dir), results, table), how_to_read=HOW_TO_READ,
        sections=_sections(results, table, classifiers),
        figures=[] if scores is None else _roc_figures(results, scores, rnd),
    )
