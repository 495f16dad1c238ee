"""The membership report of one attack run: ``RUN_DIR/attacks/report.html`` + ``summary.csv``.

The page is for a person deciding whether a model leaks membership: it states how to read the
numbers, then a *computed* controls statement (what survives the round-0 and age-matched controls
is a detected leak, the rest is distribution shift), then the threat's tables and figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.evaluation import verdicts
from attacks.evaluation.metrics import accuracy_at
from attacks.evaluation.summary import CHANCE, TPR, controls_table, feature_name, main_round, ordered, summarise
from attacks.membership.classifiers import attack_scores, classifier_parameters, make_classifier
from attacks.reporting.figures import (
    plot_accuracy_vs_round, plot_attack_heatmap, plot_member_distributions, plot_roc_loglog,
)
from attacks.reporting.html import png, write_page
from attacks.signals.cache import FeatureCache
from attacks.signals.features import TABLE1, assemble, is_black_box
from attacks.signals.layout import feature_layout
from attacks.target import Target, load_snapshot
from attacks.threats.seats import SEAT_NAMES, plan, sees_released
from fedsim import snapshots
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

__all__ = ["PAPER_TABLE1", "RESULTS_CSV", "pair_matrix", "paper_column", "write_report", "write_results"]

RESULTS_CSV, RESULTS_JSON = "results.csv", "results.json"

#: Gupta et al. (2021) Table 1: centralized attack accuracy in %, by model and row name.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "cnn3d": {
        "activation": 56.63, "error": 59.90, "gradient magnitude": 72.60, "gradient (conv 1)": 71.01,
        "gradient (output)": 76.65, "gradient (conv 6)": 76.96, "prediction + label": 76.45,
        "prediction + label + gradient (conv 6 + output)": 78.05,
    },
    "slice_mean2d": {
        "error": 74.06, "gradient magnitude": 78.34, "gradient (conv 1)": 80.52, "gradient (output)": 82.16,
        "gradient (conv 6)": 82.89, "prediction + label": 81.70, "prediction + label + gradient (conv 6 + output)": 83.04,
    },
}
_PAPER_MODEL = {"cnn3d": "3D-CNN", "slice_mean2d": "2D-slice-mean"}


def paper_column(model: str) -> tuple[str, dict[str, float]]:
    """How the paper names ``model`` (``3D-CNN``) and its Table 1 column (empty for another model)."""
    return _PAPER_MODEL.get(model, model), PAPER_TABLE1.get(model, {})


def pair_matrix(results: pd.DataFrame, spec: str, rnd: int, control: str = "none") -> pd.DataFrame:
    """Attacker × victim accuracy (mean over repeats) of feature set ``spec`` on round ``rnd``;
    every learner is a row and a column, NaN where no attack ran (the diagonal)."""
    cells = results[(results["control"] == control) & (results["round"] == rnd) & (results["features"] == spec)]
    learners = learner_groups([*results["attacker"], *results["victim"]])
    return cells.pivot_table(index="attacker", columns="victim", values="accuracy").reindex(index=learners, columns=learners)


def _cached(target: Target, threat: str, rnd: int, spec: str | None = None) -> dict[str, np.ndarray]:
    """The features the attack on ``spec`` read at round ``rnd`` (all of a round, if no spec), from the cache."""
    snapshot = load_snapshot(target.run_dir, rnd)
    cache = FeatureCache(target)
    if spec is not None:
        return cache.read(snapshot, released=sees_released(threat, is_black_box(spec)))
    # every feature as the seat read it: prediction-based ones released where it sees released predictions
    released = {k: v for k, v in cache.read(snapshot, released=sees_released(threat, True)).items() if is_black_box(k)}
    return {**cache.read(snapshot), **released}


def _distributions(target: Target, threat: str, rnd: int, members_group: str, title: str) -> dict[str, Any]:
    """The paper's Figure 1 for one member group: error and total gradient norm, members vs unseen."""
    cache, groups = _cached(target, threat, rnd), target.partitions.set_index("subject_id")["group"]
    rows = {g: target.cohort.index_of(list(groups.index[groups == g])) for g in (members_group, "unseen")}
    panels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    error = cache["error"] if "error" in cache else (
        cache["prediction"] - cache["label"] if {"prediction", "label"} <= set(cache) else None)
    if error is not None:
        panels["prediction − age, ŷ − y (years)"] = (error[rows[members_group], 0], error[rows["unseen"], 0])
    if "grad_norm" in cache:
        total = np.linalg.norm(cache["grad_norm"], axis=1)
        panels["gradient magnitude ‖∇θ loss‖₂ (all layers)"] = (total[rows[members_group]], total[rows["unseen"]])
    if not panels:
        return {"title": title, "figure": None, "round": rnd}
    return {"title": title, "figure": png(plot_member_distributions(panels, title=title)), "round": rnd}


def _roc(target: Target, results: pd.DataFrame, spec: str, rnd: int, seed: int) -> dict[str, Any]:
    """Refit the centralized attack on ``spec`` from the feature cache and plot its ROC per repeat.

    results.csv holds metrics, not scores; refitting with the same splits, classifier and seed is
    cheap (features are cached) and is checked against the recorded accuracies.
    """
    try:
        X = assemble(_cached(target, "centralized", rnd, spec), spec)
    except FedsimError as e:  # a cache deleted or moved since the attack: the report goes on without it
        return {"figure": None, "problem": str(e)}
    plain = results[(results["control"] == "none") & (results["round"] == rnd) & (results["features"] == spec)]
    recorded = plain.set_index("repeat")["accuracy"]
    classifier = str(plain["classifier"].iloc[0])
    layout = None
    if "layout" in classifier_parameters(classifier):
        layout = feature_layout(spec, load_snapshot(target.run_dir, rnd).model)
    row_of = {s: i for i, s in enumerate(target.cohort.subject_ids)}
    curves, gaps, n_nonmembers = [], [], 1
    splits = plan("centralized", target.partitions, repeats=len(recorded), seed=seed, age_matched=False)
    for repeat, (_, _, split) in enumerate(splits):
        (train_ids, y_train), (test_ids, y_test) = split.train(), split.test()
        model = make_classifier(classifier, random_state=seed + repeat, layout=layout)
        model.fit(X[[row_of[s] for s in train_ids]], y_train)
        scores, threshold = attack_scores(model, X[[row_of[s] for s in test_ids]])
        fpr, tpr, _ = roc_curve(y_test, scores, drop_intermediate=False)
        curves.append((fpr, tpr, f"repeat {repeat} (AUC {roc_auc_score(y_test, scores):.2f})"))
        gaps.append(abs(accuracy_at(y_test, scores, threshold=threshold) - recorded.get(repeat, np.nan)))
        n_nonmembers = max(n_nonmembers, int(np.sum(y_test == 0)))
    fig = plot_roc_loglog(curves, min_fpr=1 / n_nonmembers, title=f"{feature_name(spec)} ({classifier}), round {rnd}")
    return {"figure": png(fig), "problem": None, "seed": seed, "n_nonmembers": n_nonmembers,
            "max_gap": float(np.nanmax(gaps))}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{**r, "name": feature_name(r["features"])} for r in frame.to_dict("records")]


def _centralized(target: Target, results: pd.DataFrame, rnd: int, seed: int) -> dict[str, Any]:
    config = snapshots.read_config(target.run_dir)
    label, paper = paper_column(config["model"]["name"])
    main = summarise(results[(results["control"] == "none") & (results["round"] == rnd)], ["features"])
    main = main.set_index("features").loc[ordered(main["features"])].reset_index()
    rows = [{**r, "paper": paper.get(r["name"])} for r in _records(main)]
    best = main.loc[main["accuracy"].idxmax(), "features"]
    return {"round": rnd, "rows": rows, "paper_heading": f"paper {label} %", "best": feature_name(best),
            "roc": _roc(target, results, best, rnd, seed),
            "distributions": _distributions(target, "centralized", rnd, "train", f"training subjects vs unseen, round {rnd}")}


def _learners(target: Target, results: pd.DataFrame, rnd: int) -> dict[str, Any]:
    threat = str(results["threat"].iloc[0])
    main = results[(results["control"] == "none") & (results["round"] == rnd)]
    best = main.groupby("features")["accuracy"].mean().idxmax()
    heat = plot_attack_heatmap(pair_matrix(results, best, rnd), title=f"{feature_name(best)}, round {rnd}, mean over repeats")
    cells = summarise(main, ["attacker", "victim", "features"])
    over_rounds = results[results["control"].isin(["none", "round-0"])]
    attackers = []
    for attacker in learner_groups(main["attacker"]):
        mine = cells[cells["attacker"] == attacker]
        victims = learner_groups(mine["victim"])
        cell = {(r.features, r.victim): r for r in mine.itertuples()}
        table = [{"name": feature_name(spec), "cells": [
            None if (spec, v) not in cell else {"accuracy": cell[spec, v].accuracy, "std": cell[spec, v].accuracy_std,
                                                 "auc": cell[spec, v].auc} for v in victims]}
            for spec in ordered(mine["features"])]
        series = summarise(over_rounds[over_rounds["attacker"] == attacker], ["features", "round"])
        curve = (png(plot_accuracy_vs_round(series, title=f"attacker {attacker}, mean over victims"))
                 if series["round"].nunique() > 1 else None)
        attackers.append({"name": attacker, "victims": victims, "table": table, "curve": curve,
                          "distributions": _distributions(target, threat, rnd, attacker,
                                                          f"{attacker}'s own subjects vs unseen, round {rnd}")})
    return {"round": rnd, "seat": SEAT_NAMES.get(threat, threat), "best": feature_name(best), "heatmap": png(heat),
            "attackers": attackers}


def _facts(target: Target, results: pd.DataFrame, rnd: int) -> list[tuple[str, str]]:
    config = snapshots.read_config(target.run_dir)
    groups = target.partitions["group"].value_counts()
    record = next((m for m in snapshots.read_metrics(target.run_dir) if m.get("round") == rnd), {})
    mae = ", ".join(f"{k.removesuffix('_mae')} {v:.2f}" for k, v in record.items() if k.endswith("_mae"))
    facts = [
        ("run", str(target.run_dir)),
        ("environment", f"{config.get('name', '?')}: {config.get('description', '')}"),
        ("model", str(config["model"]["name"])),
        ("threat", ", ".join(sorted(set(results["threat"])))),
        ("classifier", ", ".join(sorted(set(results["classifier"])))),
        ("rounds attacked", ", ".join(str(r) for r in sorted(set(results.loc[results["control"] == "none", "round"])))),
        ("repeats", str(results["repeat"].nunique())),
        ("cohort", f"{len(target.cohort.subject_ids)} subjects (" + ", ".join(f"{g} {n}" for g, n in sorted(groups.items())) + ")"),
        ("attack sets", f"{int(results['n_train'].median())} subjects (half members) to train, "
                        f"{int(results['n_members'].median())} + {int(results['n_nonmembers'].median())} to test (median)"),
    ]
    if mae:
        facts.append((f"model MAE, round {rnd}", f"{mae} years (the train–unseen gap is what the attack exploits)"))
    return facts


def write_report(run_dir: Path, results: pd.DataFrame, target: Target, *, seed: int = 0) -> Path:
    """Write ``RUN_DIR/attacks/report.html`` and ``summary.csv`` for an attack's results; returns the page.

    ``seed`` must be the attack's ``--seed``: the ROC curve is refit from the feature cache with it.
    """
    out = Path(run_dir) / "attacks"
    out.mkdir(parents=True, exist_ok=True)
    summarise(results, ["threat", "attacker", "victim", "control", "round", "features"]).to_csv(
        out / "summary.csv", index=False)
    rnd = main_round(results)
    threat = str(results["threat"].iloc[0])
    has_controls = bool(set(results["control"]) - {"none"}) or 0 in set(results["round"])
    controls = controls_table(results, rnd) if has_controls else pd.DataFrame()
    records = _records(controls) if len(controls) else []
    notes = results[f"{TPR}_note"].dropna() if f"{TPR}_note" in results else pd.Series(dtype=str)
    return write_page(
        out / "report.html", "membership.html", title=f"Attack report: {Path(run_dir).name}",
        facts=_facts(target, results, rnd), chance=100 * CHANCE, fpr_note=notes.iloc[0] if len(notes) else None,
        has_controls=has_controls, controls=records,
        signal=[r["name"] for r in records if r["kind"] == verdicts.DETECTED],
        shift=[r["name"] for r in records if r["shift"]],
        centralized=_centralized(target, results, rnd, seed) if threat == "centralized" else None,
        learners=None if threat == "centralized" else _learners(target, results, rnd),
        table1=TABLE1,
    )


def write_results(run_dir: Path, rows: list[dict]) -> pd.DataFrame:
    """``RUN_DIR/attacks/results.csv`` and ``.json``, each written atomically."""
    out = Path(run_dir) / "attacks"
    out.mkdir(parents=True, exist_ok=True)
    results = pd.DataFrame(rows)
    snapshots.atomic_write(out / RESULTS_CSV, lambda tmp: results.to_csv(tmp, index=False))
    snapshots.write_text(out / RESULTS_JSON, json.dumps(rows, indent=1, default=str))
    return results
