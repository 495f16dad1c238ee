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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from scipy import stats
from scipy.special import logsumexp

from attacks.features import load_snapshot
from attacks.metrics import attack_metrics, best_threshold, flat_metrics
from attacks.references import (
    ReferencePlan, ReferenceSet, ensure_references, population_order, predict_rows,
)
from attacks.splits import AttackSplit, centralized_splits
from attacks.threats import Target, open_run
from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.defenses import release_model
from fedsim.errors import FedsimError

__all__ = [
    "DEFAULT_REFERENCES", "LIKELIHOODS", "METHODS", "STATISTICS", "VARIANCES", "Evidence",
    "lira_offline", "lira_online", "loss_scores", "regression_statistic", "rmia_scores",
    "run_calibrated", "score_attacks",
]

#: Default number of reference models: 4 IN and 4 OUT per subject (LiRA then pools its variance
#: over subjects, see PER_SUBJECT_FROM); RMIA (Zarifzadeh et al. 2024) is already near its best
#: with 1-4 references, and each reference costs one full training run.
DEFAULT_REFERENCES = 8
#: ``--variance auto`` fits per-subject variances from this many references on (32 IN + 32 OUT),
#: a pooled one below: Carlini et al. 2022 use a global variance when shadow models are few.
PER_SUBJECT_FROM = 64
#: Floor of |ŷ − y| in log-abs statistics (years), so an exact fit is not log 0.
MIN_ABS_ERROR = 1e-6
#: Floor of fitted standard deviations and likelihood scales, so a degenerate fit is not a 0 division.
MIN_SCALE = 1e-12
DEFAULT_METHODS = ("loss", "lira-online", "lira-offline", "rmia")


# --- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Statistic:
    """A per-(model, subject) statistic and the direction in which membership moves it.

    ``alternative`` is what offline LiRA tests: ``"less"`` (members have lower values) or
    ``"toward-zero"`` (members' values lie closer to 0 than the OUT mean).
    """

    name: str
    compute: Callable[[np.ndarray, np.ndarray], np.ndarray]
    alternative: str


def _residual(pred: np.ndarray, age: np.ndarray) -> np.ndarray:
    return pred - age


def _log_abs(pred: np.ndarray, age: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.abs(pred - age), MIN_ABS_ERROR))


#: LiRA statistics by name.
STATISTICS: dict[str, Statistic] = {
    "residual": Statistic("residual", _residual, "toward-zero"),
    "log-abs": Statistic("log-abs", _log_abs, "less"),
}
VARIANCES = ("auto", "per-subject", "global")
LIKELIHOODS = {"gaussian": stats.norm, "laplace": stats.laplace}
_LIKELIHOOD_OF_LOSS = {"mse": "gaussian", "l1": "laplace"}


def _choice(value: str, options: Sequence[str], what: str) -> str:
    if value not in options:
        raise FedsimError(f"unknown {what} {value!r}; choose one of: {', '.join(options)}")
    return value


def regression_statistic(pred: np.ndarray, age: np.ndarray, name: str) -> np.ndarray:
    """The statistic ``name`` (:data:`STATISTICS`) of predictions ``pred`` (any leading shape) and ages."""
    return STATISTICS[_choice(name, list(STATISTICS), "statistic")].compute(np.asarray(pred), np.asarray(age))


# --- LiRA -----------------------------------------------------------------------------------


def _fit_gaussians(values: np.ndarray, mask: np.ndarray, variance: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-subject mean and standard deviation of ``values[mask]`` (column-wise).

    ``per-subject``: each column's own sample standard deviation. ``global``: one standard
    deviation pooled over subjects from the deviations around each subject's own mean (the
    between-subject spread is not noise, so it stays out).
    """
    counts = mask.sum(axis=0)
    if counts.min() < 2:
        raise FedsimError(
            f"every subject needs at least 2 IN and 2 OUT reference models to fit LiRA's Gaussians, "
            f"some have {int(counts.min())}; use more references"
        )
    mean = np.where(mask, values, 0.0).sum(axis=0) / counts
    squares = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0)
    if variance == "per-subject":
        std = np.sqrt(squares / (counts - 1))
    else:
        std = np.full(values.shape[1], np.sqrt(squares.sum() / (counts - 1).sum()))
    return mean, np.maximum(std, MIN_SCALE)


def _resolve_variance(variance: str, n_references: int) -> str:
    _choice(variance, VARIANCES, "variance")
    if variance == "auto":
        return "per-subject" if n_references >= PER_SUBJECT_FROM else "global"
    return variance


def lira_online(target: np.ndarray, reference: np.ndarray, keep: np.ndarray, *, variance: str = "auto") -> np.ndarray:
    """Online LiRA: log N(s; μ_in, σ_in) − log N(s; μ_out, σ_out) per subject (higher = member).

    Parameters
    ----------
    target : array of shape (n_subjects,)
        The target model's statistic of each subject.
    reference : array of shape (n_references, n_subjects)
        Each reference model's statistic of each subject.
    keep : bool array of shape (n_references, n_subjects)
        Whether each reference trained on each subject (IN).
    variance : {"auto", "per-subject", "global"}
    """
    target, reference, keep = _check_lira(target, reference, keep)
    variance = _resolve_variance(variance, len(reference))
    mu_in, sd_in = _fit_gaussians(reference, keep, variance)
    mu_out, sd_out = _fit_gaussians(reference, ~keep, variance)
    return stats.norm.logpdf(target, mu_in, sd_in) - stats.norm.logpdf(target, mu_out, sd_out)


def lira_offline(
    target: np.ndarray, reference: np.ndarray, keep: np.ndarray, *, variance: str = "auto", alternative: str = "less"
) -> np.ndarray:
    """Offline LiRA: log Pr_OUT[Z less member-like than s], from OUT references only.

    One minus the p-value of a one-sided test of "s comes from the OUT Gaussian": close to 0 when
    s lies far on the member side. ``alternative="less"``: log Pr[Z ≥ s] (members have lower
    values, e.g. log |ŷ − y|); ``"toward-zero"``: log Pr[Z ≤ s] when the OUT mean is negative and
    log Pr[Z ≥ s] when it is positive (a member's signed residual shrinks towards 0). ``keep``
    only picks the OUT statistics.
    """
    target, reference, keep = _check_lira(target, reference, keep)
    _choice(alternative, ("less", "toward-zero"), "alternative")
    mu, sd = _fit_gaussians(reference, ~keep, _resolve_variance(variance, len(reference)))
    sign = 1.0 if alternative == "less" else np.where(mu < 0, -1.0, 1.0)
    return stats.norm.logsf(sign * target, sign * mu, sd)


def _check_lira(target: Any, reference: Any, keep: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    reference = np.asarray(reference, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    if reference.ndim != 2 or reference.shape != keep.shape or reference.shape[1] != len(target):
        raise ValueError(
            f"reference {reference.shape} and keep {keep.shape} must both be (n_references, n_subjects) "
            f"with n_subjects = len(target) = {len(target)}"
        )
    return target, reference, keep


# --- RMIA -----------------------------------------------------------------------------------


def _log_likelihood(pred: np.ndarray, age: np.ndarray, likelihood: str) -> np.ndarray:
    """log p(age | pred) under each model's own noise scale (its residuals' MLE over all subjects)."""
    residual = pred - age
    if likelihood == "gaussian":
        scale = np.sqrt(np.mean(residual**2, axis=-1, keepdims=True))
    else:
        scale = np.mean(np.abs(residual), axis=-1, keepdims=True)
    return LIKELIHOODS[likelihood].logpdf(age, loc=pred, scale=np.maximum(scale, MIN_SCALE))


def rmia_scores(
    target_pred: np.ndarray,
    reference_pred: np.ndarray,
    age: np.ndarray,
    population: np.ndarray,
    *,
    likelihood: str = "gaussian",
    gamma: float = 1.0,
) -> np.ndarray:
    """RMIA: the fraction of population subjects z with LR(x, z) ≥ γ, per subject x.

    LR(x, z) = [Pr(x | θ) / Pr(x)] / [Pr(z | θ) / Pr(z)], where Pr(x | θ) is the density of x's age
    under model θ's prediction and Pr(x) its mean over the reference models (which train on
    about half the subjects each: the online setting). Computed in logs.

    Parameters
    ----------
    target_pred : array of shape (n_subjects,)
    reference_pred : array of shape (n_references, n_subjects)
    age : array of shape (n_subjects,)
    population : int array
        Indices of the subjects z to compare with (ideally known non-members).
    likelihood : {"gaussian", "laplace"}
        Gaussian for an MSE-trained model, Laplace for L1.
    gamma : float
        How much more likely under θ than z a subject must be; 1 in the paper's main results.
    """
    _choice(likelihood, list(LIKELIHOODS), "likelihood")
    _check_gamma(gamma)
    target_pred = np.asarray(target_pred, dtype=np.float64)
    reference_pred = np.asarray(reference_pred, dtype=np.float64)
    age = np.asarray(age, dtype=np.float64)
    population = np.asarray(population, dtype=np.int64)
    if len(population) == 0:
        raise FedsimError("RMIA needs at least one population subject z")
    log_target = _log_likelihood(target_pred, age, likelihood)
    log_refs = _log_likelihood(reference_pred, age, likelihood)
    log_marginal = logsumexp(log_refs, axis=0) - np.log(len(reference_pred))  # log Pr(x)
    ratio = log_target - log_marginal
    return np.mean(ratio[:, None] - ratio[None, population] >= np.log(gamma), axis=1)


def _check_gamma(gamma: float) -> None:
    if not gamma > 0 or not np.isfinite(gamma):
        raise FedsimError(f"gamma must be a positive finite number, got {gamma!r}")


def loss_scores(target_pred: np.ndarray, age: np.ndarray) -> np.ndarray:
    """−|ŷ − y|: the uncalibrated loss-threshold attack (higher = member)."""
    return -np.abs(np.asarray(target_pred, dtype=np.float64) - np.asarray(age, dtype=np.float64))


# --- methods by name ------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """Everything the attacks read: predictions of the target and the references on one population.

    ``keep[k, i]``: reference k trained on subject i; ``population``: indices of RMIA's z subjects.
    """

    age: np.ndarray
    target: np.ndarray
    references: np.ndarray
    keep: np.ndarray
    population: np.ndarray


@dataclass(frozen=True)
class Method:
    """A calibrated attack by name: the references it needs and whether it uses a statistic."""

    name: str
    min_references: int
    uses_statistic: bool
    doc: str


#: Attack methods by name.
METHODS: dict[str, Method] = {
    m.name: m for m in (
        Method("loss", 0, False, "-|ŷ - y| of the target alone (no references)"),
        Method("lira-online", 4, True, "Gaussians fitted on IN and OUT references; likelihood ratio"),
        Method("lira-offline", 4, True, "Gaussian fitted on OUT references; one-sided test"),
        Method("rmia", 2, False, "Pr(x|θ)/Pr(x) vs population z, Gaussian or Laplace likelihood"),
    )
}


def parse_methods(spec: str | Sequence[str], n_references: int) -> list[str]:
    """Method names from ``"lira-online,rmia"``; unknown names and too few references fail here."""
    names = [m.strip() for m in spec.split(",")] if isinstance(spec, str) else list(spec)
    for name in names:
        if name not in METHODS:
            raise FedsimError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
        need = METHODS[name].min_references
        if n_references < need:
            raise FedsimError(
                f"{name} needs at least {need} reference models (2 IN and 2 OUT per subject to fit its "
                f"Gaussians), got --references {n_references}; use --references {max(need, DEFAULT_REFERENCES)} or --method rmia"
                if name.startswith("lira") else
                f"{name} needs at least {need} reference models, got --references {n_references}"
            )
    if not names:
        raise FedsimError("--method names no method")
    return list(dict.fromkeys(names))


def score_attacks(
    evidence: Evidence,
    methods: Sequence[str],
    *,
    statistics: Sequence[str] = ("log-abs",),
    variance: str = "auto",
    likelihood: str = "gaussian",
    gamma: float = 1.0,
) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Every (method, statistic) score vector of every population subject, with its settings."""
    out = []
    n_refs = len(evidence.references)
    for name in methods:
        if name == "loss":
            out.append(({"method": name, "statistic": "abs-error"}, loss_scores(evidence.target, evidence.age)))
        elif name == "rmia":
            scores = rmia_scores(evidence.target, evidence.references, evidence.age, evidence.population,
                                 likelihood=likelihood, gamma=gamma)
            out.append(({"method": name, "statistic": f"likelihood:{likelihood}", "gamma": gamma}, scores))
        else:
            resolved = _resolve_variance(variance, n_refs)
            for stat_name in statistics:
                stat = STATISTICS[_choice(stat_name, list(STATISTICS), "statistic")]
                target = stat.compute(evidence.target, evidence.age)
                refs = stat.compute(evidence.references, evidence.age[None, :])
                if name == "lira-online":
                    scores = lira_online(target, refs, evidence.keep, variance=resolved)
                else:
                    scores = lira_offline(target, refs, evidence.keep, variance=resolved, alternative=stat.alternative)
                out.append(({"method": name, "statistic": stat_name, "variance": resolved}, scores))
    return out


# --- centralized attack on a run directory -------------------------------------------------


def centralized_population(target: Target, *, seed: int) -> tuple[AttackSplit, tuple[str, ...]]:
    """The centralized split the attacker works with, and its subjects (the reference population)."""
    if "train" not in set(target.partitions["group"]):
        raise FedsimError(
            f"{str(target.run_dir)!r} is a federated run; calibrated attacks support centralized runs "
            "(a train group) only so far"
        )
    split = centralized_splits(target.partitions, repeats=1, seed=seed)[0]
    ids = np.concatenate([split.train_members, split.train_nonmembers, split.test_members, split.test_nonmembers])
    return split, population_order(ids, target.cohort)


def run_calibrated(
    target: Target,
    *,
    references: int = DEFAULT_REFERENCES,
    methods: Sequence[str] = DEFAULT_METHODS,
    statistics: Sequence[str] = ("log-abs", "residual"),
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
        _choice(s, list(STATISTICS), "statistic")
    _resolve_variance(variance, references)
    _check_gamma(gamma)  # here, not after the references have trained
    if seed < 0:
        raise FedsimError(f"seed must be a non-negative integer, got {seed}")
    config = snapshots.read_config(target.run_dir)
    split, population = centralized_population(target, seed=seed)  # refuses federated runs, by name
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
    likelihood = _LIKELIHOOD_OF_LOSS.get(loss, "gaussian") if likelihood == "auto" else likelihood
    _choice(likelihood, list(LIKELIHOODS), "likelihood")

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
            label = settings["method"] + ("" if settings["method"] in ("loss", "rmia") else f"/{settings['statistic']}")
            scores_long.append(pd.DataFrame({
                "control": control, "round": rnd, "attack": label, "subject_id": population,
                "set": subject_set, "member": member, "score": scores,
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
    p.add_argument("--statistic", default="log-abs,residual",
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
        _choice(s, list(STATISTICS), "statistic")
    _choice(args.variance, VARIANCES, "variance")
    _choice(args.likelihood, ("auto", *LIKELIHOODS), "likelihood")
    if args.epochs is not None and args.epochs < 1:
        raise FedsimError(f"--epochs must be at least 1, got {args.epochs}")
    if args.seed < 0:
        raise FedsimError(f"--seed must be a non-negative integer, got {args.seed}")
    if not args.gamma > 0 or not np.isfinite(args.gamma):
        raise FedsimError(f"--gamma must be a positive finite number, got {args.gamma}")
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
    # In an 80-column terminal the interval wraps; attack names are never cut.
    for col in ("control", "attack", "AUC", "TPR@1%FPR (95% CI)", "TPR@0.1%", "acc. %"):
        table.add_column(col, no_wrap=not col.startswith("TPR@1%"), overflow="fold")
    for r in rows:
        attack = r["method"] if r["method"] in ("loss", "rmia") else f"{r['method']}/{r['statistic']}"
        table.add_row(r["control"], attack, f"{r['auc']:.3f}", _pct_interval(r, "tpr@0.01"),
                      f"{r['tpr@0.001']:.3f}", f"{100 * r['accuracy']:.1f}")
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
