"""One self-contained HTML page per attack run: ``RUN_DIR/attacks/report.html`` + ``summary.csv``.

The page is for a person deciding whether a model leaks membership: it states how to read the
numbers, then a *computed* controls statement (what survives the round-0 and age-matched controls
is membership signal, the rest is distribution shift), then the threat's tables and figures.
Figures are base64 PNGs and the CSS is inline, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.classifiers import attack_scores, classifier_parameters, make_classifier
from attacks.features import FEATURES, TABLE1, assemble, feature_layout, load_snapshot
from attacks.figures import (
    plot_accuracy_vs_round, plot_attack_heatmap, plot_member_distributions, plot_roc_loglog, to_png_base64,
)
from attacks.metrics import accuracy_at
from attacks.threats import Target, plan
from fedsim import snapshots
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

__all__ = [
    "PAPER_3DCNN", "controls_table", "feature_name", "html_img", "html_page", "html_table", "main_round", "mean_pm",
    "pair_matrix", "summary_table", "write_report",
]

#: Gupta et al. (2021) Table 1, 3D-CNN column: centralized attack accuracy in %, by row name.
PAPER_3DCNN: dict[str, float] = {
    "activation": 56.63, "error": 59.90, "gradient magnitude": 72.60, "gradient (conv 1)": 71.01,
    "gradient (output)": 76.65, "gradient (conv 6)": 76.96, "prediction + label": 76.45,
    "prediction + label + gradient (conv 6 + output)": 78.05,
}
TPR = "tpr@0.01"
CHANCE = 0.5
#: "Clearly above" means by at least this much accuracy and by two standard errors of the difference.
CLEAR_GAP = 0.05
_NAME_OF = {spec: name for name, spec in TABLE1.items()}
_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.93em}th,td{padding:.3em .7em;border-bottom:1px solid #ddd}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
img{max-width:100%;display:block;margin:.6em 0}.note{color:#555;font-size:.9em}
.box{background:#f6f8fa;border-left:4px solid #888;padding:.6em 1em;margin:1em 0}
.v{padding:.1em .45em;border-radius:3px;white-space:nowrap}.membership{background:#f9d6d2}
.shift{background:#fde9c4}.both{background:#f9d6d2;border:1px solid #e0a100}.none{background:#e6e6e6}
dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em}dt{font-weight:600}dd{margin:0}"""


def feature_name(spec: str) -> str:
    """A feature set as the paper's Table 1 names it (``grad_norm`` → "gradient magnitude"); others as written."""
    return _NAME_OF.get(spec, spec)


def _ordered(specs: Iterable[str]) -> list[str]:
    """Feature sets in Table 1 order, others after them in order of appearance."""
    specs = list(dict.fromkeys(specs))
    return [s for s in TABLE1.values() if s in specs] + [s for s in specs if s not in TABLE1.values()]


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over repeats per (attacker, victim, control, round, feature set): ``summary.csv``."""
    keys = ["threat", "attacker", "victim", "control", "round", "features"]
    table = results.groupby(keys, sort=False).agg(
        accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), auc=("auc", "mean"),
        auc_std=("auc", "std"), tpr_at_1pct=(TPR, "mean"), tpr_at_1pct_low=(f"{TPR}_low", "mean"),
        tpr_at_1pct_high=(f"{TPR}_high", "mean"), n_members=("n_members", "mean"),
        n_nonmembers=("n_nonmembers", "mean"), repeats=("accuracy", "size"),
    )
    if f"{TPR}_note" in results:  # present only when some attack had < 100 non-members
        table["tpr_at_1pct_note"] = results.groupby(keys, sort=False)[f"{TPR}_note"].first()
    return table.reset_index()


def main_round(results: pd.DataFrame) -> int:
    """The round the report is about: the last attacked round other than the untrained one."""
    rounds = sorted(set(results.loc[results["control"] == "none", "round"]))
    return int(([r for r in rounds if r != 0] or rounds)[-1])


def _clearly_above(a: pd.Series, b: pd.Series | float) -> bool:
    """Whether accuracies ``a`` beat ``b`` (other accuracies, or a constant) by CLEAR_GAP and 2 standard errors."""
    if a.empty or (isinstance(b, pd.Series) and b.empty):
        return False
    var = np.nan_to_num(a.var() / len(a))
    if isinstance(b, pd.Series):
        var, b = var + np.nan_to_num(b.var() / len(b)), b.mean()
    return bool(a.mean() - b > max(CLEAR_GAP, 2 * np.sqrt(var)))


def _verdict(attack: pd.Series, round0: pd.Series, matched: pd.Series) -> tuple[str, str]:
    """(kind, text): membership if the age-matched attack clearly beats round 0 and chance; shift if the
    plain attack clearly beats the age-matched one, or the untrained model is clearly above chance."""
    if round0.empty and matched.empty:
        return "none", "no controls run: membership and distribution shift cannot be told apart"
    base = attack if matched.empty else matched
    signal = _clearly_above(base, CHANCE) and (round0.empty or _clearly_above(base, round0))
    shift = _clearly_above(attack, matched) or _clearly_above(round0, CHANCE)
    kind, text = {(True, False): ("membership", "membership signal"),
                  (True, True): ("both", "membership signal, inflated by distribution shift"),
                  (False, True): ("shift", "distribution shift"),
                  (False, False): ("none", "no clear signal")}[signal, shift]
    missing = [name for name, s in (("round-0", round0), ("age-matched", matched)) if s.empty]
    return kind, text + (f" ({missing[0]} control not run)" if missing else "")


def controls_table(results: pd.DataFrame, rnd: int) -> pd.DataFrame:
    """Per feature set (Table 1 order): accuracy of the attack on round ``rnd`` and of its two controls,
    mean and std over repeats (and victims), with the verdict of :func:`_verdict`."""
    control, at = results["control"], results["round"] == rnd
    groups = {"attack": results[(control == "none") & at], "matched": results[(control == "age-matched") & at],
              "round0": results[(control == "round-0") | ((control == "none") & (results["round"] == 0))]}
    rows = []
    for spec in _ordered(groups["attack"]["features"]):
        acc = {k: g.loc[g["features"] == spec, "accuracy"] for k, g in groups.items()}
        kind, verdict = _verdict(acc["attack"], acc["round0"], acc["matched"])
        rows.append({"features": spec, **{k: a.mean() for k, a in acc.items()},
                     **{f"{k}_std": a.std() for k, a in acc.items()}, "kind": kind, "verdict": verdict})
    return pd.DataFrame(rows)


def mean_pm(mean: float, std: float | None, *, scale: float = 100, digits: int = 1) -> str:
    """``mean ± std`` (in % by default) for a table cell; "—" for a missing mean, no "±" for a missing std."""
    if pd.isna(mean):
        return "—"
    text = f"{scale * mean:.{digits}f}"
    return text if pd.isna(std) else f"{text} ± {scale * std:.{digits}f}"


def html_table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are HTML already, numeric-looking ones right-aligned."""
    def cell(c: str) -> str:
        numeric = c[:1].isdigit() or c.startswith(("−", "-", "+"))
        return f"<td class='n'>{c}</td>" if numeric else f"<td>{c}</td>"
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{body}</table>"


def html_img(fig_png: str, alt: str) -> str:
    """An ``<img>`` carrying a :func:`attacks.figures.to_png_base64` figure inline."""
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{fig_png}'>"


def html_page(title: str, body: str) -> str:
    """A whole self-contained page (inline CSS) around ``body``: one file to mail or archive."""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def _cache(target: Target, rnd: int) -> dict[str, np.ndarray]:
    """The feature cache of one round by feature name, memory-mapped: no model or gradient is needed.

    File stems are names with ``:`` written as ``_`` (``grad_conv6`` is ``grad:conv6``).
    """
    folder = target.run_dir / "attacks" / "features" / f"model-r{rnd:04d}"
    return {(p.stem if p.stem in FEATURES else p.stem.replace("_", ":", 1)): np.load(p, mmap_mode="r")
            for p in sorted(folder.glob("*.npy"))}


def _distributions(target: Target, rnd: int, members_group: str, title: str) -> str:
    """The paper's Figure 1 for one member group: error and total gradient norm, members vs unseen."""
    cache, groups = _cache(target, rnd), target.partitions.set_index("subject_id")["group"]
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
        return (f"<p class='note'>No error or gradient-norm features are cached for round {rnd}; "
                "attack with <code>--features error,grad_norm</code> to see their distributions.</p>")
    return html_img(to_png_base64(plot_member_distributions(panels, title=title)), title)


def _roc(target: Target, results: pd.DataFrame, spec: str, rnd: int, seed: int) -> str:
    """Refit the centralized attack on ``spec`` from the feature cache and plot its ROC per repeat.

    results.csv holds metrics, not scores; refitting with the same splits, classifier and seed is
    cheap (features are cached) and is checked against the recorded accuracies.
    """
    cache = _cache(target, rnd)
    try:
        X = assemble(cache, spec)
    except FedsimError as e:  # a cache deleted or moved since the attack: the report goes on without it
        return f"<p class='note'>No ROC curve: {html.escape(str(e))}</p>"
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
    check = ("its accuracies match results.csv" if np.nanmax(gaps) < 1e-6 else
             f"its accuracies differ from results.csv by up to {100 * np.nanmax(gaps):.1f} points "
             f"(was the attack run with another <code>--seed</code> than {seed}?)")
    fig = plot_roc_loglog(curves, min_fpr=1 / n_nonmembers, title=f"{feature_name(spec)} ({classifier}), round {rnd}")
    return (html_img(to_png_base64(fig), "ROC curve") + f"<p class='note'>Refit from the feature cache with seed {seed}; "
            f"{check}. The x axis starts at 1/{n_nonmembers}, the smallest non-zero FPR of one attack.</p>")


def _tpr_cell(row: pd.Series) -> str:
    text = f"{row.tpr_at_1pct:.3f} [{row.tpr_at_1pct_low:.3f}, {row.tpr_at_1pct_high:.3f}]"
    return text + " †" if isinstance(row.get("tpr_at_1pct_note"), str) else text


def _centralized(target: Target, results: pd.DataFrame, summary: pd.DataFrame, rnd: int, seed: int) -> str:
    main = summary[(summary["control"] == "none") & (summary["round"] == rnd)].set_index("features")
    rows = []
    for spec in _ordered(main.index):
        r = main.loc[spec]
        paper = PAPER_3DCNN.get(feature_name(spec))
        rows.append([html.escape(feature_name(spec)), f"<code>{html.escape(spec)}</code>", mean_pm(r.accuracy, r.accuracy_std),
                     mean_pm(r.auc, r.auc_std, scale=1, digits=3), _tpr_cell(r), "—" if paper is None else f"{paper:.2f}"])
    best = main["accuracy"].idxmax()
    dagger = " † TPR at FPR 0, see above." if any("†" in row[4] for row in rows) else ""
    return (
        f"<h2>Centralized threat (round {rnd})</h2><p>The adversary knows some training subjects and some unseen "
        "ones, trains a classifier on their features and attacks a disjoint balanced test set (Table 1 of the paper).</p>"
        + html_table(["feature set", "spec", "accuracy %", "AUC", "TPR @ 1% FPR [95% CI]", "paper 3D-CNN %"], rows)
        + "<p class='note'>Mean ± std over repeats; the interval is the mean of the per-repeat Clopper–Pearson "
        f"bounds.{dagger} Paper: UK Biobank, 3D-CNN, mean of 5 attacks.</p>"
        + f"<h3>ROC of the best feature set: {html.escape(feature_name(best))}</h3>" + _roc(target, results, best, rnd, seed)
        + "<h3>Members vs unseen subjects (the paper's Figure 1)</h3>"
        + _distributions(target, rnd, "train", f"training subjects vs unseen, round {rnd}")
    )


def pair_matrix(results: pd.DataFrame, spec: str, rnd: int, control: str = "none") -> pd.DataFrame:
    """Attacker × victim accuracy (mean over repeats) of feature set ``spec`` on round ``rnd``;
    every learner is a row and a column, NaN where no attack ran (the diagonal)."""
    cells = results[(results["control"] == control) & (results["round"] == rnd) & (results["features"] == spec)]
    learners = learner_groups([*results["attacker"], *results["victim"]])
    return cells.pivot_table(index="attacker", columns="victim", values="accuracy").reindex(index=learners, columns=learners)


def _learners(target: Target, results: pd.DataFrame, summary: pd.DataFrame, rnd: int) -> str:
    main = summary[(summary["control"] == "none") & (summary["round"] == rnd)]
    pooled = main.groupby("features")["accuracy"].mean()
    best = pooled.idxmax()
    grid = pair_matrix(results, best, rnd)
    heat = plot_attack_heatmap(grid, title=f"{feature_name(best)}, round {rnd}, mean over repeats")
    parts = [f"<h2>Malicious-learner threat (round {rnd})</h2><p>Learner A trains the attack on its own subjects "
             "(members) vs unseen ones, with the community model, then attacks learner B's subjects vs other "
             f"unseen subjects. Heat-map: the best feature set overall, <b>{html.escape(feature_name(best))}</b>.</p>",
             html_img(to_png_base64(heat), "attacker × victim heat-map")]
    over_rounds = summary[summary["control"].isin(["none", "round-0"])]
    for attacker in learner_groups(main["attacker"]):
        mine = main[main["attacker"] == attacker]
        victims = learner_groups(mine["victim"])
        cell = {(r.features, r.victim): r for r in mine.itertuples()}
        rows = [[html.escape(feature_name(spec))] + [
            f"{mean_pm(cell[spec, v].accuracy, cell[spec, v].accuracy_std)}<br><span class='note'>AUC "
            f"{cell[spec, v].auc:.3f}</span>" if (spec, v) in cell else "—" for v in victims]
            for spec in _ordered(mine["features"])]
        parts += [f"<h3>Attacker {attacker}</h3>", html_table(["feature set"] + [f"victim {v}" for v in victims], rows)]
        series = over_rounds[over_rounds["attacker"] == attacker].groupby(["features", "round"], sort=False).agg(
            accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std")).reset_index()
        if series["round"].nunique() > 1:
            fig = plot_accuracy_vs_round(series, title=f"attacker {attacker}, mean over victims")
            parts.append(html_img(to_png_base64(fig), f"accuracy vs round, {attacker}"))
        parts.append(_distributions(target, rnd, attacker, f"{attacker}'s own subjects vs unseen, round {rnd}"))
    return "".join(parts)


def _controls(results: pd.DataFrame, rnd: int) -> str:
    head = "<h2>Controls: membership or distribution shift?</h2>"
    if not set(results["control"]) - {"none"} and 0 not in set(results["round"]):
        return head + ("<div class='box'><b>No controls were run</b> (<code>--no-controls</code>): the accuracies "
                       "below may be membership signal or a difference between the groups (distribution shift); "
                       "rerun without <code>--no-controls</code> to tell them apart.</div>")
    table = controls_table(results, rnd)
    rows = [[html.escape(feature_name(r.features)), mean_pm(r.attack, r.attack_std), mean_pm(r.round0, r.round0_std),
             mean_pm(r.matched, r.matched_std), f"<span class='v {r.kind}'>{html.escape(r.verdict)}</span>"]
            for r in table.itertuples()]
    found = {k: [feature_name(f) for f in table.loc[table["kind"].isin(ks), "features"]]
             for k, ks in (("signal", ("membership", "both")), ("shift", ("shift", "both")))}
    lines = [f"<b>Membership signal</b> in {len(found['signal'])} of {len(table)} feature sets"
             + (f": {html.escape(', '.join(found['signal']))}." if found["signal"] else "."),
             f"<b>Distribution shift</b> in {len(found['shift'])}"
             + (f": {html.escape(', '.join(found['shift']))}." if found["shift"] else ".")]
    return (head + "<div class='box'>" + " ".join(lines) + "</div>"
            + html_table(["feature set", "attack %", "round-0 control %", "age-matched control %", "verdict"], rows)
            + "<p class='note'>Membership signal: the age-matched attack beats both the round-0 control and chance by "
            "at least 5 points and two standard errors. Distribution shift: the plain attack beats the age-matched "
            "one, or the round-0 (untrained) model is already above chance, by as much: an untrained model "
            "cannot remember anyone, so what it finds is a difference between the groups, not membership.</p>")


def _header(target: Target, results: pd.DataFrame, rnd: int) -> str:
    config = snapshots.read_config(target.run_dir)
    groups = target.partitions["group"].value_counts()
    record = next((m for m in snapshots.read_metrics(target.run_dir) if m.get("round") == rnd), {})
    mae = ", ".join(f"{k.removesuffix('_mae')} {v:.2f}" for k, v in record.items() if k.endswith("_mae"))
    facts = {
        "run": f"<code>{html.escape(str(target.run_dir))}</code>",
        "environment": f"{html.escape(str(config.get('name', '?')))}: {html.escape(str(config.get('description', '')))}",
        "threat": html.escape(", ".join(sorted(set(results["threat"])))),
        "classifier": html.escape(", ".join(sorted(set(results["classifier"])))),
        "rounds attacked": ", ".join(str(r) for r in sorted(set(results.loc[results["control"] == "none", "round"]))),
        "repeats": str(results["repeat"].nunique()),
        "cohort": f"{len(target.cohort.subject_ids)} subjects ("
                  + ", ".join(f"{g} {n}" for g, n in sorted(groups.items())) + ")",
        "attack sets": f"{int(results['n_train'].median())} subjects (half members) to train, "
                       f"{int(results['n_members'].median())} + {int(results['n_nonmembers'].median())} to test (median)",
    }
    if mae:
        facts[f"model MAE, round {rnd}"] = f"{mae} years (the train–unseen gap is what the attack exploits)"
    notes = results[f"{TPR}_note"].dropna() if f"{TPR}_note" in results else pd.Series(dtype=str)
    fpr_note = (f" <b>Here: {html.escape(notes.iloc[0])}</b> (marked †)." if len(notes) else "")
    return (
        "<h1>Membership-inference attack report</h1><dl>"
        + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts.items()) + "</dl>"
        + "<div class='box'><b>How to read this.</b> Each attack tells <i>members</i> (subjects the model was "
        f"trained on, the positive class) from unseen subjects in a balanced test set, so chance is {100 * CHANCE:.0f}%. "
        "<i>Accuracy</i> is the paper's measure; AUC is threshold-free. <i>TPR at 1% FPR</i> is the share of members "
        "found while wrongly accusing 1% of non-members, with its 95% Clopper–Pearson interval: what matters when "
        "false accusations are costly. With fewer than 100 non-members no FPR between 0 and 1% exists, so the "
        f"figure is the TPR at FPR 0.{fpr_note}</div>"
    )


def write_report(run_dir: Path, results: pd.DataFrame, target: Target, *, seed: int = 0) -> Path:
    """Write ``RUN_DIR/attacks/report.html`` and ``summary.csv`` for an attack's results; returns the page.

    ``seed`` must be the attack's ``--seed``: the ROC curve is refit from the feature cache with it.
    """
    out = Path(run_dir) / "attacks"
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_table(results)
    summary.to_csv(out / "summary.csv", index=False)
    rnd = main_round(results)
    threat = str(results["threat"].iloc[0])
    body = _header(target, results, rnd) + _controls(results, rnd) + (
        _centralized(target, results, summary, rnd, seed) if threat == "centralized"
        else _learners(target, results, summary, rnd))
    path = out / "report.html"
    snapshots.write_text(path, html_page(f"Attack report: {Path(run_dir).name}", body))
    return path
