"""Every seat at the table: ``python -m attacks.seats RUN_DIR [--round R] [--features …]``.

Three adversaries attack the same victims with the same side knowledge — learner A's own
subjects (members) vs unseen ones, drawn exactly as :func:`attacks.splits.learner_splits` draws
them, for every pair A → B — and differ only in what they see of the federation:

* **malicious learner** A: the community model of round R, white box (every feature set);
* **curious controller**: every learner's *local* model of round R, i.e. the model a learner
  sends back before averaging (a run made with ``--snapshot-local``); it fits the attack on A's
  local model and scores B's subjects on B's own local model. A controller does not know whose
  subjects are whose, so this is a controller colluding with learner A (or holding data like A's);
* **outsider**: the predicted ages of the final community model only (black-box feature sets).

The controller also runs *calibrated* attacks (:mod:`attacks.calibration`) without training a
single reference model: for victim B's subjects every other learner's local model of the same
round is a reference that did not train on them this round (all started from the community model
of round R − 1, which averaged B's earlier updates, so the test is conservative: it measures what
B's latest local training added). Offline LiRA asks how much better B's model fits a subject than
its peers do, RMIA compares that ratio with known non-members' (the unseen subjects not under
test). Online LiRA needs IN references, which only B is. A's subjects serve only to pick the
accuracy threshold; AUC and TPR at low FPR need no known member.

Each seat is also attacked with age-matched non-members, the control for distribution shift.
Writes ``RUN_DIR/attacks/seats/round-RRRR/`` (one folder per attacked round, so rounds can be
compared): ``results.csv`` (one row per seat, attacker, victim, feature
set, control and repeat), ``seats.csv`` (the comparison table) and a self-contained ``report.html``.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from attacks.calibration import LIKELIHOOD_OF_LOSS, Evidence, attack_name, score_attacks
from attacks.features import is_black_box, load_snapshot
from attacks.figures import plot_attack_heatmap, to_png_base64
from attacks.metrics import attack_metrics, best_threshold, flat_metrics
from attacks.report import TPR, feature_name, html_img, html_page, html_table, mean_pm, pair_matrix
from attacks.run import DEFAULT_CLASSIFIER, DEFAULT_REPEATS, attack_settings
from attacks.threats import FeatureCache, Target, open_run, plan, run_attacks, skipped_pairs_said
from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

LEARNER, CONTROLLER, OUTSIDER = "malicious learner", "curious controller", "outsider"
SEATS = (LEARNER, CONTROLLER, OUTSIDER)
SEATS_DIR = "seats"
#: The controller's calibrated attacks: references are the other learners' local models, all OUT.
CALIBRATED_METHODS = ("lira-offline", "rmia")
CALIBRATED_STATISTICS = ("residual", "log-abs")
CALIBRATED = "calibrated"  # the classifier column of their rows
MIN_CALIBRATION_LEARNERS = 3  # LiRA fits its OUT Gaussians from at least 2 references per subject


def seats_dir(run_dir: Path, rnd: int) -> Path:
    """Where the seats of round ``rnd`` are written."""
    return Path(run_dir) / "attacks" / SEATS_DIR / f"round-{rnd:04d}"


def _check_local_models(target: Target, rnd: int, learners: Sequence[str]) -> None:
    missing = [g for g in learners if not (snapshots.round_dir(target.run_dir, rnd) / f"{g}.safetensors").is_file()]
    if len(missing) == len(learners):
        raise FedsimError(
            f"{str(target.run_dir)!r} has no local models for round {rnd}: the curious controller "
            "needs a run made with `python -m fedsim.run --env … --snapshot-local`")
    if missing:
        raise FedsimError(
            f"round {rnd} of {str(target.run_dir)!r} has no local model of {', '.join(missing)} (did it fail that "
            "round? see metrics.jsonl); attack another --round")


def run_seats(
    target: Target, *, rnd: int, feature_sets: Sequence[str], classifier: str = DEFAULT_CLASSIFIER,
    repeats: int = DEFAULT_REPEATS, seed: int = 0, console: Console | None = None,
) -> pd.DataFrame:
    """Every seat's attacks on round ``rnd`` (the outsider: the last round), plain and age-matched."""
    if rnd < 1:
        raise FedsimError(f"--round must be a trained round (1 or later), got {rnd}")
    learners = learner_groups(target.partitions["group"])
    _check_local_models(target, rnd, learners)
    black_box = [s for s in feature_sets if is_black_box(s)]
    if not black_box:
        raise FedsimError("the outsider sees predicted ages only: --features needs a black-box set, e.g. pred+label or error")
    last = target.rounds[-1]
    jobs = [(LEARNER, "learner", rnd, list(feature_sets)), (CONTROLLER, "controller", rnd, list(feature_sets))]
    if rnd != last:  # at the last round the outsider's attacks are the learner's black-box ones: reused below
        jobs.append((OUTSIDER, "learner", last, black_box))
    cache, rows = FeatureCache(target), []
    for seat, threat, at, specs in jobs:
        if console is not None:
            console.print(f"[bold]{seat}[/]: round {at}, {len(specs)} feature sets")
        for matched in (False, True):
            rows += [{"seat": seat, **row} for row in run_attacks(
                target, threat=threat, rounds=[at], feature_sets=specs, classifier=classifier, repeats=repeats,
                seed=seed, age_matched=matched, cache=cache)]
    if rnd == last:
        rows += [{**row, "seat": OUTSIDER} for row in rows if row["seat"] == LEARNER and row["features"] in black_box]
    if len(learners) < MIN_CALIBRATION_LEARNERS:
        if console is not None:
            console.print(f"[yellow]note:[/] calibrated controller attacks skipped: they need {MIN_CALIBRATION_LEARNERS} "
                          "learners (a victim's subjects need 2 other local models as OUT references)")
        return pd.DataFrame(rows)
    if console is not None:
        console.print(f"[bold]{CONTROLLER}[/], calibrated by the other local models: {', '.join(CALIBRATED_METHODS)}")
    for matched in (False, True):
        rows += [{"seat": CONTROLLER, **row} for row in controller_calibrated(
            target, rnd=rnd, repeats=repeats, seed=seed, age_matched=matched, cache=cache)]
    return pd.DataFrame(rows)


def controller_calibrated(
    target: Target, *, rnd: int, repeats: int, seed: int = 0, age_matched: bool = False, cache: FeatureCache | None = None,
) -> list[dict]:
    """The curious controller's calibrated attacks on every pair A → B of round ``rnd``, one row each.

    Victim B's attack-test subjects are scored against B's local model with the other learners'
    local models as references; the accuracy threshold is the best one on A's attack-train subjects,
    scored the same way against A's local model. Same splits as the classifier attacks. RMIA's
    population: the unseen subjects other than the victim's attack-test non-members.
    """
    cache = cache or FeatureCache(target)
    learners = learner_groups(target.partitions["group"])
    config = snapshots.read_config(target.run_dir)
    likelihood = LIKELIHOOD_OF_LOSS.get(config.get("train", {}).get("loss", "mse"), "gaussian")
    predictions = np.stack([cache.get(load_snapshot(target.run_dir, rnd, name=g), g, ["prediction"])["prediction"][:, 0]
                            for g in learners]).astype(np.float64)
    group_of = target.partitions.set_index("subject_id")["group"].reindex(target.cohort.subject_ids).to_numpy()
    keep = np.stack([group_of == g for g in learners])  # reference k trained on subject i
    age = target.cohort.ages.astype(np.float64)
    row_of = {s: i for i, s in enumerate(target.cohort.subject_ids)}
    unseen = target.cohort.index_of(list(target.partitions.loc[target.partitions["group"] == "unseen", "subject_id"]))

    def scores(model: str, rows: list[int], z: np.ndarray) -> list[tuple[dict, np.ndarray]]:
        """Scores of cohort ``rows`` against ``model``'s local model, the other local models as references
        (every row is ``model``'s learner's or unseen, so OUT for all of them); ``z``: RMIA's population."""
        cols = np.concatenate([rows, np.setdiff1d(z, rows)])  # each subject once
        position = {c: i for i, c in enumerate(cols)}
        k = learners.index(model)
        others = [j for j in range(len(learners)) if j != k]
        evidence = Evidence(age[cols], predictions[k, cols], predictions[others][:, cols], keep[others][:, cols],
                            np.array([position[c] for c in z]))
        found = score_attacks(evidence, CALIBRATED_METHODS, statistics=CALIBRATED_STATISTICS, likelihood=likelihood)
        return [(settings, values[: len(rows)]) for settings, values in found]

    rows, repeat_of = [], {}
    for attacker, victim, split in plan("controller", target.partitions, repeats=repeats, seed=seed, age_matched=age_matched):
        repeat = repeat_of[(attacker, victim)] = repeat_of.get((attacker, victim), -1) + 1
        (train_ids, y_train), (test_ids, y_test) = split.train(), split.test()
        train_rows, test_rows = [row_of[s] for s in train_ids], [row_of[s] for s in test_ids]
        z = np.setdiff1d(unseen, test_rows)  # RMIA's population: known non-members, none under test
        for (settings, own), (_, theirs) in zip(scores(attacker, train_rows, z), scores(victim, test_rows, z)):
            threshold = best_threshold(y_train, own)
            rows.append({
                "threat": "controller", "attacker": attacker, "victim": victim, "round": rnd,
                "features": attack_name(settings["method"], settings["statistic"]), "classifier": CALIBRATED,
                "repeat": repeat, "control": "age-matched" if age_matched else "none", "n_train": len(train_ids),
                **flat_metrics(attack_metrics(y_test, theirs, threshold=threshold)),
            })
    return rows


def seat_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per seat and feature set: mean over attacker–victim pairs and repeats of accuracy, AUC and
    TPR at 1% FPR (with the mean of their per-attack 95% bounds), beside the age-matched accuracy."""
    plain = results[results["control"] == "none"]
    table = plain.groupby(["seat", "features"], sort=False).agg(
        round=("round", "first"), accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
        auc=("auc", "mean"), auc_low=("auc_low", "mean"), auc_high=("auc_high", "mean"),
        tpr_at_1pct=(TPR, "mean"), tpr_at_1pct_low=(f"{TPR}_low", "mean"), tpr_at_1pct_high=(f"{TPR}_high", "mean"),
        attacks=("accuracy", "size"),
    )
    matched = results[results["control"] == "age-matched"].groupby(["seat", "features"], sort=False)["accuracy"].mean()
    table["age_matched"] = matched.reindex(table.index)
    table = table.reset_index()
    order = table["seat"].map({seat: i for i, seat in enumerate(SEATS)})
    return table.iloc[order.argsort(kind="stable")].reset_index(drop=True)  # seats in SEATS order


def best_sets(table: pd.DataFrame) -> dict[str, str]:
    """Each seat's strongest feature set, judged by its age-matched accuracy (membership, not shift)."""
    score = table["age_matched"].fillna(table["accuracy"])
    return {seat: table.loc[score[table["seat"] == seat].idxmax(), "features"] for seat in table["seat"].unique()}


def victim_table(results: pd.DataFrame, best: dict[str, str]) -> pd.DataFrame:
    """Per victim (rows) and seat (columns): accuracy of the seat's best feature set, mean over attackers
    and repeats — the same victims and subjects for every seat."""
    plain = results[results["control"] == "none"]
    cols = {seat: plain[(plain["seat"] == seat) & (plain["features"] == spec)].groupby("victim")["accuracy"].mean()
            for seat, spec in best.items()}
    table = pd.DataFrame(cols)
    return table.reindex(learner_groups(table.index))


def write_seats_report(target: Target, results: pd.DataFrame, out: Path) -> Path:
    """``report.html``: the seat comparison, the per-victim table and the attacker × victim heat-maps."""
    table, config = seat_table(results), snapshots.read_config(target.run_dir)
    best = best_sets(table)
    rows = [[html.escape(r.seat), str(r.round), html.escape(feature_name(r.features)), mean_pm(r.accuracy, r.accuracy_std),
             f"{r.auc:.3f} [{r.auc_low:.3f}, {r.auc_high:.3f}]", f"{r.tpr_at_1pct:.3f} [{r.tpr_at_1pct_low:.3f}, {r.tpr_at_1pct_high:.3f}]",
             mean_pm(r.age_matched, None), ("best" if best[r.seat] == r.features else "")] for r in table.itertuples()]
    victims = victim_table(results, best)
    vrows = [[v] + [mean_pm(victims.loc[v, s], None) for s in victims.columns] for v in victims.index]
    maps = []
    for seat in (LEARNER, CONTROLLER):
        grid = pair_matrix(results[results["seat"] == seat], best[seat], int(table.loc[table["seat"] == seat, "round"].iloc[0]))
        fig = plot_attack_heatmap(grid, title=f"{seat}: {feature_name(best[seat])}, mean over repeats")
        maps.append(html_img(to_png_base64(fig), f"{seat} heat-map"))
    body = (
        f"<h1>Every seat at the table</h1><p>Run <code>{html.escape(str(target.run_dir))}</code> "
        f"({html.escape(str(config.get('name', '?')))}), classifier {html.escape(', '.join(sorted(set(results['classifier']))))}, "
        f"{results['repeat'].nunique()} repeats. Every seat uses learner A's side knowledge (A's subjects vs unseen ones) "
        "and attacks every other learner B's subjects vs fresh unseen ones: the same victims, the same subjects. "
        "The <b>malicious learner</b> sees the community model; the <b>curious controller</b> sees each learner's local "
        "model before averaging (fit on A's, scored on B's); the <b>outsider</b> sees only the final community model's "
        "predicted ages. The controller's <code>lira-offline/…</code> and <code>rmia</code> rows are calibrated "
        "attacks with no classifier: each victim's local model is tested against the other learners' local models "
        "of the same round, which did not train on the victim's subjects that round (they started from the same "
        "community model, so the test is conservative).</p>"
        + html_table(["seat", "round", "feature set", "accuracy %", "AUC [95% CI]", "TPR @ 1% FPR [95% CI]",
                      "age-matched %", ""], rows)
        + "<p class='note'>Mean over attacker–victim pairs and repeats; intervals are the mean per-attack bounds "
        "(Hanley–McNeil for AUC, Clopper–Pearson for TPR). Best: the highest age-matched accuracy of the seat.</p>"
        + "<h2>Per victim: each seat's best feature set (accuracy %)</h2>"
        + html_table(["victim"] + [html.escape(f"{s} ({feature_name(best[s])})") for s in victims.columns], vrows)
        + "<h2>Attacker × victim</h2>" + "".join(maps)
    )
    path = out / "report.html"
    snapshots.write_text(path, html_page(f"Seats: {target.run_dir.name}", body))
    return path


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m attacks.seats", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a federated run directory made with --snapshot-local")
    p.add_argument("--round", type=int, help="round whose community and local models are attacked (default: the last)")
    p.add_argument("--features", default="table1", help="'table1' (the paper's rows) or comma-separated specs")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, help=f"attack classifier (default: {DEFAULT_CLASSIFIER})")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help=f"draws of the attack sets (default: {DEFAULT_REPEATS})")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    feature_sets = attack_settings(args.features, args.classifier, args.repeats)
    target = open_run(args.run_dir)
    if "train" in set(target.partitions["group"]):
        raise FedsimError(f"{str(args.run_dir)!r} is a centralized run; seats compare adversaries of a federation")
    rnd = target.rounds[-1] if args.round is None else args.round
    if rnd not in target.rounds:
        raise FedsimError(f"round {rnd} is not on disk in {str(args.run_dir)!r}; rounds: {target.rounds[0]}..{target.rounds[-1]}")
    console = Console(highlight=False)
    with skipped_pairs_said(lambda message: console.print(f"[yellow]warning:[/] {message}")):
        results = run_seats(target, rnd=rnd, feature_sets=feature_sets, classifier=args.classifier,
                            repeats=args.repeats, seed=args.seed, console=console)
    out = seats_dir(args.run_dir, rnd)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    table = seat_table(results)
    table.to_csv(out / "seats.csv", index=False)
    report = write_seats_report(target, results, out)
    shown = Table(title=f"seats, round {rnd} (outsider: {target.rounds[-1]}), {args.classifier}, mean over "
                        f"attacker–victim pairs and {args.repeats} repeats; matched: age-matched non-members")
    for col in ("seat", "attack", "acc. %", "AUC", "TPR@1%", "matched %"):
        # numbers stay whole; in an 80-column terminal long feature sets fold
        shown.add_column(col, no_wrap=col != "attack", overflow="fold", min_width=12 if col == "attack" else None)
    for r in table.itertuples():
        shown.add_row(r.seat, r.features, mean_pm(r.accuracy, r.accuracy_std), f"{r.auc:.3f}",
                      f"{r.tpr_at_1pct:.3f}", mean_pm(r.age_matched, None))
    console.print(shown)
    console.print(f"results: {out / 'results.csv'}\nreport: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
