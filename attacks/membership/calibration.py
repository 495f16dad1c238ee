"""Membership scores of a regression model calibrated by reference models: LiRA and RMIA.

Pure NumPy/SciPy on predictions — the target's and the reference models' on one population of
subjects, with which references trained on which subject — so the same scores serve any seat
that can obtain those predictions. :mod:`attacks.calibrated` runs them on a run directory; the
methods are described there. SciPy is imported where a score is computed (seconds of imports), so
that a command's parser reads the names and defaults here at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.errors import FedsimError

__all__ = [
    "DEFAULT_METHODS", "DEFAULT_REFERENCES", "DEFAULT_STATISTICS", "FAMILY_REFERENCES", "LIKELIHOODS", "LIKELIHOOD_OF_LOSS", "METHODS",
    "PER_SUBJECT_FROM", "STATISTICS", "VARIANCES", "Evidence", "attack_name", "attack_names", "check_gamma", "choice", "lira_offline", "lira_online",
    "loss_scores", "parse_methods", "regression_statistic", "resolve_variance", "rmia_scores", "score_attacks",
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
#: LiRA's statistics in :mod:`attacks.calibrated` unless told otherwise: both.
DEFAULT_STATISTICS = ("log-abs", "residual")


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
#: RMIA's likelihoods: name -> its ``scipy.stats`` distribution.
LIKELIHOODS = {"gaussian": "norm", "laplace": "laplace"}
LIKELIHOOD_OF_LOSS = {"mse": "gaussian", "l1": "laplace"}


def choice(value: str, options: Sequence[str], what: str) -> str:
    if value not in options:
        raise FedsimError(f"unknown {what} {value!r}; choose one of: {', '.join(options)}")
    return value


def regression_statistic(pred: np.ndarray, age: np.ndarray, name: str) -> np.ndarray:
    """The statistic ``name`` (:data:`STATISTICS`) of predictions ``pred`` (any leading shape) and ages."""
    return STATISTICS[choice(name, list(STATISTICS), "statistic")].compute(np.asarray(pred), np.asarray(age))


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


def resolve_variance(variance: str, n_references: int) -> str:
    choice(variance, VARIANCES, "variance")
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
    from scipy import stats

    target, reference, keep = _check_lira(target, reference, keep)
    variance = resolve_variance(variance, len(reference))
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
    from scipy import stats

    target, reference, keep = _check_lira(target, reference, keep)
    choice(alternative, ("less", "toward-zero"), "alternative")
    mu, sd = _fit_gaussians(reference, ~keep, resolve_variance(variance, len(reference)))
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
    from scipy import stats

    residual = pred - age
    if likelihood == "gaussian":
        scale = np.sqrt(np.mean(residual**2, axis=-1, keepdims=True))
    else:
        scale = np.mean(np.abs(residual), axis=-1, keepdims=True)
    return getattr(stats, LIKELIHOODS[likelihood]).logpdf(age, loc=pred, scale=np.maximum(scale, MIN_SCALE))


def rmia_scores(
    target_pred: np.ndarray,
    reference_pred: np.ndarray,
    age: np.ndarray,
    population: np.ndarray,
    *,
    likelihood: str = "gaussian",
    gamma: float = 1.0,
    keep: np.ndarray | None = None,
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
    keep : bool array of shape (n_references, n_subjects), optional
        Which reference trained on which subject. Given, Pr(x) averages only the references that did not
        train on x (offline RMIA): the same test for a subject no reference trained on (another learner's)
        as for one half of them did (the attacker's own). Every subject needs one such reference.
    """
    from scipy.special import logsumexp

    choice(likelihood, list(LIKELIHOODS), "likelihood")
    check_gamma(gamma)
    target_pred = np.asarray(target_pred, dtype=np.float64)
    reference_pred = np.asarray(reference_pred, dtype=np.float64)
    age = np.asarray(age, dtype=np.float64)
    population = np.asarray(population, dtype=np.int64)
    if len(population) == 0:
        raise FedsimError("RMIA needs at least one population subject z")
    log_target = _log_likelihood(target_pred, age, likelihood)
    log_refs = _log_likelihood(reference_pred, age, likelihood)
    if keep is None:
        log_marginal = logsumexp(log_refs, axis=0) - np.log(len(reference_pred))  # log Pr(x)
    else:
        out = ~np.asarray(keep, dtype=bool)
        if out.shape != log_refs.shape or not out.any(axis=0).all():
            raise FedsimError("offline RMIA needs keep shaped like the reference predictions and, for every "
                              "subject, a reference that did not train on it")
        log_marginal = logsumexp(np.where(out, log_refs, -np.inf), axis=0) - np.log(out.sum(axis=0))
    ratio = log_target - log_marginal
    return np.mean(ratio[:, None] - ratio[None, population] >= np.log(gamma), axis=1)


def check_gamma(gamma: float, name: str = "gamma") -> None:
    """Refuse an RMIA γ that is not a positive finite number; ``name`` is what the message calls it."""
    if not gamma > 0 or not np.isfinite(gamma):
        raise FedsimError(f"{name} must be a positive finite number, got {gamma!r}")


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
#: The reference models of a sweep's calibrated family unless told otherwise: the fewest LiRA fits its Gaussians from
#: (2 IN and 2 OUT per subject), as each is one more training of the run (``attacks.calibrated`` defaults to 8).
FAMILY_REFERENCES = METHODS["lira-online"].min_references


def attack_name(method: str, statistic: str) -> str:
    """An attack as tables name it: the method, with its statistic where it uses one (``lira-online/log-abs``)."""
    return f"{method}/{statistic}" if METHODS[method].uses_statistic else method


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


def _runs(methods: Sequence[str], statistics: Sequence[str]) -> list[tuple[str, str | None]]:
    """(method, statistic) of every score :func:`score_attacks` returns, in its order."""
    return [(m, stat) for m in methods for stat in (statistics if METHODS[m].uses_statistic else (None,))]


def attack_names(methods: Sequence[str], statistics: Sequence[str]) -> list[str]:
    """What tables call each score of :func:`score_attacks` with these arguments, in its order."""
    return [attack_name(m, stat or "") for m, stat in _runs(methods, statistics)]


def score_attacks(
    evidence: Evidence,
    methods: Sequence[str],
    *,
    statistics: Sequence[str] = ("log-abs",),
    variance: str = "auto",
    likelihood: str = "gaussian",
    gamma: float = 1.0,
) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Every (method, statistic) score vector of every population subject, with its settings, in the
    order of :func:`attack_names`."""
    out = []
    resolved = resolve_variance(variance, len(evidence.references))
    for name, stat_name in _runs(methods, statistics):
        if name == "loss":
            out.append(({"method": name, "statistic": "abs-error"}, loss_scores(evidence.target, evidence.age)))
        elif name == "rmia":
            scores = rmia_scores(evidence.target, evidence.references, evidence.age, evidence.population,
                                 likelihood=likelihood, gamma=gamma)
            out.append(({"method": name, "statistic": f"likelihood:{likelihood}", "gamma": gamma}, scores))
        else:
            stat = STATISTICS[choice(stat_name, list(STATISTICS), "statistic")]
            target = stat.compute(evidence.target, evidence.age)
            refs = stat.compute(evidence.references, evidence.age[None, :])
            if name == "lira-online":
                scores = lira_online(target, refs, evidence.keep, variance=resolved)
            else:
                scores = lira_offline(target, refs, evidence.keep, variance=resolved, alternative=stat.alternative)
            out.append(({"method": name, "statistic": stat_name, "variance": resolved}, scores))
    return out
