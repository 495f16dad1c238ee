"""Calibrated membership attacks on a regression model: LiRA and RMIA with reference models.

``python -m attacks.calibrated RUN_DIR [--references 8] [--method lira-online,lira-offline,rmia]``

A trained attack classifier (:mod:`attacks.run`) learns one decision rule for every subject.
The attacks here instead test each subject against models that did and did not train on it
(:mod:`attacks.references`), so a subject whose age is simply hard to predict is not mistaken
for a non-member, and are judged by their TPR at low FPR (Carlini et al. 2022):

* **LiRA** (Carlini et al. 2022, "Membership inference attacks from first principles"): a
  per-subject statistic of each model (signed residual ŷ − y, or log |ŷ − y|); Gaussians fitted to
  the statistics of the reference models that trained on the subject (IN) and of those that did
  not (OUT). *Online*: the log likelihood ratio of the target's statistic, IN vs OUT. *Offline*:
  OUT only, a one-sided test in the direction membership moves the statistic (smaller log-error;
  a residual closer to zero). The variance is fitted per subject or, with few references, pooled
  over subjects (their "fixed variance").
* **RMIA** (Zarifzadeh et al. 2024, "Low-cost high-power membership inference attacks"):
  Pr(x | θ) is the likelihood of the subject's age under the model's prediction (Gaussian for an
  MSE-trained model, Laplace for L1, scale fitted to the model's residuals on the population);
  the ratio Pr(x | θ) / Pr(x), with Pr(x) averaged over all reference models, is compared with the
  same ratio for population subjects z (the known non-members); the score is the fraction of z
  the subject beats by a factor γ.
* **loss**: −|ŷ − y| of the target alone, the uncalibrated baseline these improve on.

Centralized runs: the target is the best-validation snapshot; the attacker knows the subjects of
one centralized split (:func:`attacks.splits.centralized_splits`: members + unseen subjects,
balanced); references train on random halves of all of them. The attack is scored on the
split's attack-test subjects; its attack-train subjects (whose membership the attacker knows)
only set the accuracy threshold and, for RMIA, supply the population z (their non-members).
A round-0 control attacks the untrained model with the same references. Writes
``RUN_DIR/attacks/calibrated.csv`` + ``.json`` (one row per attack and control) and
``calibrated_scores.csv`` (every subject's score).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from attacks.calibration import (
    DEFAULT_METHODS, DEFAULT_REFERENCES, DEFAULT_STATISTICS, LIKELIHOOD_OF_LOSS, LIKELIHOODS, METHODS,
    PER_SUBJECT_FROM, STATISTICS, VARIANCES, Evidence, attack_name, check_gamma, choice, parse_methods, resolve_variance,
    score_attacks,
)
from attacks.features import load_snapshot
from attacks.metrics import attack_metrics, best_threshold, flat_metrics
from attacks.references import (
    ReferencePlan, ReferenceSet, ensure_references, population_order, predict_rows,
)
from attacks.splits import AttackSplit, centralized_splits
from attacks.threats import Target, open_run
from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.data.cache import CohortArray
from fedsim.defenses import release_model
from fedsim.errors import FedsimError

__all__ = ["centralized_population", "run_calibrated"]

# --- centralized attack on a run directory -------------------------------------------------


def centralized_population(
    partitions: pd.DataFrame, cohort: CohortArray, *, seed: int, where: str = "this run",
) -> tuple[AttackSplit, tuple[str, ...]]:
    """The centralized split the attacker works with, and its subjects (the reference population)."""
    if "train" not in set(partitions["group"]):
        raise FedsimError(
            f"{where} is a federated run; calibrated attacks support centralized runs "
            "(a train group) only so far (a federation's curious controller: python -m attacks.seats)"
        )
    split = centralized_splits(partitions, repeats=1, seed=seed)[0]
    ids = np.concatenate([split.train_members, split.train_nonmembers, split.test_members, split.test_nonmembers])
    return split, population_order(ids, cohort)


def run_calibrated(
    target: Target,
    *,
    references: int = DEFAULT_REFERENCES,
    methods: Sequence[str] = DEFAULT_METHODS,
    statistics: Sequence[str] = DEFAULT_STATISTICS,
    variance: str = "auto",
    likelihood: str = "auto",
    gamma: float = 1.0,
    target_round: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    controls: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], pd.DataFrame, ReferenceSet]:
    """Calibrated attacks on a centralized run: result rows, every subject's scores, the references.

    ``target_round`` defaults to the best-validation epoch, ``epochs`` (of the references) to
    the target's round (epoch k = round k in a centralized run).
    """
    methods = parse_methods(methods, references)
    for s in statistics:
        choice(s, list(STATISTICS), "statistic")
    resolve_variance(variance, references)
    check_gamma(gamma)  # here, not after the references have trained
    if seed < 0:
        raise FedsimError(f"seed must be a non-negative integer, got {seed}")
    config = snapshots.read_config(target.run_dir)
    split, population = centralized_population(target.partitions, target.cohort, seed=seed,
                                               where=repr(str(target.run_dir)))  # refuses federated runs, by name
    if target_round is None:
        if target.best_round is None:
            raise FedsimError(
                f"{str(target.run_dir)!r} has no finished centralized run (its DONE names the best epoch); "
                "give the target round with --round"
            )
        target_round = target.best_round
    if target_round not in target.rounds:
        raise FedsimError(f"round {target_round} does not exist in {str(target.run_dir)!r}")
    epochs = target_round if epochs is None else epochs
    if epochs < 1:
        raise FedsimError(f"reference models need at least 1 training epoch, got {epochs} (the target's round)")
    loss = config.get("train", {}).get("loss", "mse")
    likelihood = LIKELIHOOD_OF_LOSS.get(loss, "gaussian") if likelihood == "auto" else likelihood
    choice(likelihood, list(LIKELIHOODS), "likelihood")

    refs = ensure_references(ReferencePlan(config, population, epochs, seed), target.cohort, target.run_dir,
                             references=references, progress=progress)
    rows_of = target.cohort.index_of(list(population))
    age = target.cohort.ages[rows_of].astype(np.float64)
    position = {s: i for i, s in enumerate(population)}
    train_ids, y_train = split.train()
    test_ids, y_test = split.test()
    train_pos = np.array([position[s] for s in train_ids])
    test_pos = np.array([position[s] for s in test_ids])
    z = np.array([position[s] for s in split.train_nonmembers])
    member_of = dict(zip(np.concatenate([train_ids, test_ids]), np.concatenate([y_train, y_test])))
    subject_set = np.where(np.isin(np.arange(len(population)), test_pos), "attack-test", "attack-train")
    member = np.array([int(member_of[s]) for s in population])
    rounds = [("none", target_round)] + ([("round-0", 0)] if controls and target_round != 0 else [])
    rows: list[dict[str, Any]] = []
    scores_long: list[pd.DataFrame] = []
    for control, rnd in rounds:
        # the target's predictions as released ([defense] prediction_noise adds its noise)
        target_pred = predict_rows(release_model(load_snapshot(target.run_dir, rnd).model, config),
                                   target.cohort, rows_of)
        evidence = Evidence(age, target_pred, refs.predictions, refs.keep, z)
        for settings, scores in score_attacks(evidence, methods, statistics=statistics, variance=variance,
                                              likelihood=likelihood, gamma=gamma):
            threshold = best_threshold(y_train, scores[train_pos])
            metrics = attack_metrics(y_test, scores[test_pos], threshold=threshold)
            rows.append({
                "control": control, "round": rnd, **settings, "references": len(refs),
                "reference_epochs": epochs, "n_population": len(population), "n_z": len(z), **flat_metrics(metrics),
            })
            scores_long.append(pd.DataFrame({
                "control": control, "round": rnd, "attack": attack_name(settings["method"], settings["statistic"]),
                "subject_id": population, "set": subject_set, "member": member, "score": scores,
            }))
    return rows, pd.concat(scores_long, ignore_index=True), refs


# --- command line ---------------------------------------------------------------------------


def _classifier_rows(run_dir: Path) -> pd.DataFrame | None:
    """Mean AUC / TPR@1% / accuracy of ``attacks.run``'s classifiers on this run, if it was attacked."""
    path = run_dir / "attacks" / "results.csv"
    if not path.is_file():
        return None
    results = pd.read_csv(path)
    if "control" in results.columns:
        results = results[results["control"] == "none"]
    if results.empty or "tpr@0.01" not in results.columns:
        return None
    return results.groupby(["classifier", "features", "round"], sort=False).agg(
        accuracy=("accuracy", "mean"), auc=("auc", "mean"), tpr=("tpr@0.01", "mean"), attacks=("auc", "size"),
    ).reset_index()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m attacks.calibrated", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a centralized run directory written by fedsim.centralized")
    p.add_argument("--references", type=int, default=DEFAULT_REFERENCES,
                   help=f"reference models, an even number (default: {DEFAULT_REFERENCES}; cached and reused)")
    p.add_argument("--method", default=",".join(DEFAULT_METHODS), help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--statistic", default=",".join(DEFAULT_STATISTICS),
                   help=f"LiRA statistic(s), comma-separated: {', '.join(STATISTICS)} (default: both)")
    p.add_argument("--variance", default="auto",
                   help=f"LiRA variance: {', '.join(VARIANCES)} (auto: per-subject from {PER_SUBJECT_FROM} references)")
    p.add_argument("--likelihood", default="auto", help="RMIA: gaussian, laplace or auto (from the run's loss)")
    p.add_argument("--gamma", type=float, default=1.0, help="RMIA's γ (default: 1)")
    p.add_argument("--round", type=int, dest="target_round",
                   help="the target snapshot (default: the best-validation epoch of the run)")
    p.add_argument("--epochs", type=int, help="reference training epochs (default: the target's, its best epoch)")
    p.add_argument("--seed", type=int, default=0, help="attack split and reference seed (default: 0)")
    p.add_argument("--no-controls", action="store_true", help="skip the round-0 (untrained target) control")
    return p.parse_args(argv)


def _pct_interval(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f} ({row[f'{key}_low']:.2f}–{row[f'{key}_high']:.2f})"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.references < 2 or args.references % 2:
        raise FedsimError(
            f"--references must be an even number of at least 2 (references come in complementary pairs), "
            f"got {args.references}"
        )
    methods = parse_methods(args.method, args.references)
    statistics = [s.strip() for s in args.statistic.split(",")]
    for s in statistics:
        choice(s, list(STATISTICS), "statistic")
    choice(args.variance, VARIANCES, "variance")
    choice(args.likelihood, ("auto", *LIKELIHOODS), "likelihood")
    if args.epochs is not None and args.epochs < 1:
        raise FedsimError(f"--epochs must be at least 1, got {args.epochs}")
    if args.seed < 0:
        raise FedsimError(f"--seed must be a non-negative integer, got {args.seed}")
    check_gamma(args.gamma, "--gamma")
    target = open_run(args.run_dir)
    console = Console()
    console.print(f"[bold]calibrated attacks[/] on {args.run_dir}: {', '.join(methods)}; {args.references} references")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("reference models", total=args.references)
        rows, scores, refs = run_calibrated(
            target, references=args.references, methods=methods, statistics=statistics, variance=args.variance,
            likelihood=args.likelihood, gamma=args.gamma, epochs=args.epochs, seed=args.seed,
            target_round=args.target_round,
            controls=not args.no_controls, progress=lambda done, total: bar.update(task, completed=done),
        )
    reused = len(refs) - len(refs.trained)
    console.print(
        f"references: {len(refs)} in {refs.folder} ({len(refs.trained)} trained now in {refs.seconds:.1f} s, "
        f"{reused} reused; {rows[0]['reference_epochs']} epochs on {int(refs.keep[0].sum())} of "
        f"{len(refs.population)} subjects each, mean train MAE {np.nanmean(refs.train_mae):.2f})",
        soft_wrap=True,  # one line, whatever the terminal's width: scripts grep it
    )
    out = args.run_dir / "attacks"
    out.mkdir(parents=True, exist_ok=True)
    snapshots.atomic_write(out / "calibrated.csv", lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    snapshots.atomic_write(out / "calibrated_scores.csv", lambda tmp: scores.to_csv(tmp, index=False))
    summary = {
        "run_dir": str(args.run_dir), "references_dir": str(refs.folder), "references": len(refs),
        "trained_now": refs.trained, "training_seconds": refs.seconds, "rows": rows,
    }
    snapshots.write_text(out / "calibrated.json", json.dumps(summary, indent=1, default=str))

    first = rows[0]
    variances = sorted({r["variance"] for r in rows if "variance" in r})
    table = Table(title=(
        f"centralized membership attacks, {first['n_members']} + {first['n_nonmembers']} attack-test subjects"
        + (f"; LiRA σ: {', '.join(variances)}" if variances else "")
    ))
    # Numbers and their intervals are never cut; in an 80-column terminal long attack names fold.
    for col in ("control", "attack", "AUC (95% CI)", "TPR@1%FPR (95% CI)", "TPR@0.1%", "acc. %"):
        table.add_column(col, no_wrap=col != "attack", overflow="fold")
    for r in rows:
        table.add_row(r["control"], attack_name(r["method"], r["statistic"]), _pct_interval(r, "auc"),
                      _pct_interval(r, "tpr@0.01"), f"{r['tpr@0.001']:.3f}", f"{100 * r['accuracy']:.1f}")
    classifiers = _classifier_rows(args.run_dir)
    if classifiers is not None:
        for c in classifiers.itertuples():
            table.add_row("classifier", f"{c.classifier}/{c.features}", f"{c.auc:.3f}", f"{c.tpr:.3f}", "",
                          f"{100 * c.accuracy:.1f}")
    console.print(table)
    if classifiers is not None:
        console.print("classifier rows: attacks.run's trained classifiers on this run (mean over its repeats, "
                      f"round {', '.join(str(r) for r in classifiers['round'].unique())})", soft_wrap=True)
    notes = {r.get("tpr@0.01_note") for r in rows} | {r.get("tpr@0.001_note") for r in rows}
    for note in sorted(n for n in notes if isinstance(n, str)):
        console.print(f"[dim]note: {note}[/]", soft_wrap=True)
    console.print(f"results: {out / 'calibrated.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
