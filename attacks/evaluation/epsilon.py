"""Empirical lower bounds on ε: how much privacy a run *cannot* have, given how well an attack did.

An (ε, δ)-DP training algorithm bounds every membership test, whatever its threshold (the hypothesis-testing
view of DP, Kairouz et al. 2015): TPR ≤ e^ε · FPR + δ, and, with member and non-member swapped,
TNR ≤ e^ε · FNR + δ. An attack that does better than that proves the run is *not* (ε, δ)-DP. Two bounds:

* **From counts** (Jagielski et al. 2020, "Auditing differentially private machine learning"; Nasr et al.
  2021, "Adversary instantiation"): with one-sided Clopper–Pearson bounds TPR_low and FPR_high that hold
  together at ``confidence`` (each at 1 − α/2, α = 1 − confidence),

      ε ≥ max( ln((TPR_low − δ) / FPR_high),  ln((1 − FPR_high − δ) / (1 − TPR_low)) )   (:func:`counts_epsilon`).

  The threshold must be fixed before the counted subjects are seen: choosing it on them, or keeping the best of
  many attacks, inflates the bound. fedsim's membership rows carry the counts at a threshold fixed on the
  attacker's own subjects (``tpr@0.01_fixed``); the best of K rows is bounded at α / K each (Bonferroni,
  :func:`strongest_counts_epsilon`). Over the subjects of one trained model the counts are not independent
  trials, so this is the literature's usual reading of one model, not a theorem about it.
* **One run with canaries** (Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1) training run",
  NeurIPS, arXiv:2305.08846): m canaries, each in the training set with probability 1/2 independently, one
  model trained, then r guesses (the k₊ highest scores guessed IN, the k₋ lowest OUT), v of them right. For an
  (ε, δ)-DP algorithm, with q = e^ε / (1 + e^ε) and W ~ Binomial(r, q), their main theorem for approximate DP
  gives the p-value

      P[v or more right] ≤ P[W ≥ v] + 2 m δ · max_{1 ≤ i ≤ v} P[v − i ≤ W < v] / i          (:func:`one_run_p_value`)

  (δ = 0: their pure-DP theorem, W dominates the count of right guesses). The bound is the largest ε whose
  p-value is below α (:func:`one_run_epsilon`): the same formula as the code printed in their paper and as
  ``jax_privacy.auditing``. It needs no reference models and holds for one training run; the guesses of a few
  (k₊, k₋) are tried, each at α / (their number) (:func:`canary_epsilon`).

Both are *lower* bounds: a small one does not show that a run is private (the attack may be weak); one above the
accountant's ε shows a bug in the DP implementation or its accounting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import beta, binom

from fedsim.errors import FedsimError

__all__ = [
    "CanaryEpsilon", "CountsEpsilon", "GUESS_FRACTIONS", "attacks_epsilon", "canary_epsilon", "counts_epsilon",
    "one_run_epsilon", "one_run_p_value", "strongest_counts_epsilon",
]

#: The canary audit's guesses: (k₊, k₋) as fractions of the m canaries; each bounded at α / len(GUESS_FRACTIONS).
GUESS_FRACTIONS = ((0.125, 0.0), (0.25, 0.0), (0.5, 0.0), (0.0625, 0.0625), (0.125, 0.125), (0.25, 0.25))


def _check(confidence: float, delta: float) -> None:
    if not 0 < confidence < 1:
        raise FedsimError(f"confidence must be in (0, 1), got {confidence!r}")
    if not 0 <= delta < 1:
        raise FedsimError(f"delta must be in [0, 1), got {delta!r}")


def _log_ratio(numerator: float, denominator: float) -> float:
    return math.log(numerator / denominator) if numerator > 0 and denominator > 0 else 0.0


@dataclass(frozen=True)
class CountsEpsilon:
    """ε ≥ ``epsilon`` at ``confidence``, from ``tp`` of ``positives`` members and ``fp`` of ``negatives``
    non-members called members; ``tpr_low`` and ``fpr_high`` are its Clopper–Pearson bounds and ``form`` the
    side that gave the bound (``members``: TPR/FPR; ``non-members``: TNR/FNR)."""

    epsilon: float
    tp: int
    positives: int
    fp: int
    negatives: int
    tpr_low: float
    fpr_high: float
    form: str
    delta: float
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def counts_epsilon(tp: int, positives: int, fp: int, negatives: int, *, delta: float,
                   confidence: float = 0.95) -> CountsEpsilon:
    """The Clopper–Pearson lower bound on ε of a test that called ``tp`` of ``positives`` members and ``fp`` of
    ``negatives`` non-members members, at a threshold fixed before these subjects were seen (0 if it proves none).

    TPR_low is the α/2 quantile of Beta(tp, positives − tp + 1) (0 when tp = 0) and FPR_high the 1 − α/2
    quantile of Beta(fp + 1, negatives − fp) (1 when fp = negatives), so both hold together at ``confidence``.
    """
    _check(confidence, delta)
    if positives < 1 or negatives < 1 or not (0 <= tp <= positives and 0 <= fp <= negatives):
        raise FedsimError(f"counts must satisfy 0 <= tp <= positives, 0 <= fp <= negatives with both groups "
                          f"non-empty; got tp={tp}, positives={positives}, fp={fp}, negatives={negatives}")
    a = (1 - confidence) / 2
    tpr_low = float(beta.ppf(a, tp, positives - tp + 1)) if tp > 0 else 0.0
    fpr_high = float(beta.ppf(1 - a, fp + 1, negatives - fp)) if fp < negatives else 1.0
    members = _log_ratio(tpr_low - delta, fpr_high)
    nonmembers = _log_ratio(1 - fpr_high - delta, 1 - tpr_low)
    form = "members" if members >= nonmembers else "non-members"
    return CountsEpsilon(max(members, nonmembers, 0.0), int(tp), int(positives), int(fp), int(negatives), tpr_low,
                         fpr_high, form, delta, confidence)


def strongest_counts_epsilon(counts: Sequence[tuple[int, int, int, int]], *, delta: float,
                             confidence: float = 0.95) -> tuple[int, CountsEpsilon]:
    """The largest :func:`counts_epsilon` of several tests (``(tp, positives, fp, negatives)`` each) and its
    index, each bounded at α / K for K tests, so that the maximum still holds at ``confidence`` (Bonferroni)."""
    if not counts:
        raise FedsimError("no attack counts to bound ε with")
    each = 1 - (1 - confidence) / len(counts)
    bounds = [counts_epsilon(*c, delta=delta, confidence=each) for c in counts]
    best = max(range(len(bounds)), key=lambda i: bounds[i].epsilon)
    return best, bounds[best]


def attacks_epsilon(rows: pd.DataFrame, *, rnd: int, delta: float, confidence: float = 0.95,
                    fpr: float = 0.01) -> dict[str, Any] | None:
    """The strongest membership attack's bound (:func:`strongest_counts_epsilon`) over result ``rows`` (one per
    attack, victim and draw, as ``run_plan`` writes them) of round ``rnd``: each row's counts at the threshold
    fixed at ``fpr`` on the attacker's own subjects (``tpr@<fpr>_fixed``, ``fpr@<fpr>_fixed``), the rows each
    verdict judges (a seat's age-matched rows where it ran them, else its plain ones; never the round-0 control).
    ``None`` where no row carries such counts."""
    tpr_key, fpr_key = f"tpr@{fpr:g}_fixed", f"fpr@{fpr:g}_fixed"
    if tpr_key not in rows or fpr_key not in rows:
        return None
    rows = rows[(rows["round"] == rnd) & rows["control"].isin(["none", "age-matched"])]
    rows = rows.dropna(subset=[tpr_key, fpr_key, "n_members", "n_nonmembers"])
    seats = rows["seat"] if "seat" in rows else pd.Series("", index=rows.index)
    matched = set(seats[rows["control"] == "age-matched"])
    rows = rows[(rows["control"] == "age-matched") == seats.isin(matched)]
    if rows.empty:
        return None
    counts = [(round(r[tpr_key] * r["n_members"]), int(r["n_members"]), round(r[fpr_key] * r["n_nonmembers"]),
               int(r["n_nonmembers"])) for r in rows.to_dict("records")]
    i, bound = strongest_counts_epsilon(counts, delta=delta, confidence=confidence)
    best = rows.iloc[i]
    attack = ", ".join(str(best[c]) for c in ("seat", "classifier", "features", "method", "statistic", "victim")
                       if c in best and pd.notna(best[c]))
    return {**bound.as_dict(), "confidence": confidence, "attack": attack, "control": best["control"], "tests": len(counts),
            "threshold": f"fixed at {fpr:g} FPR on the attacker's own subjects"}


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The p-value of ``v`` right guesses out of ``r`` among ``m`` canaries if training were (ε, δ)-DP
    (Steinke et al. 2023; the formula in this module's docstring)."""
    if not 0 <= v <= r <= m:
        raise FedsimError(f"one-run audit counts must satisfy 0 <= right <= guesses <= canaries, got {v}, {r}, {m}")
    q = float(expit(epsilon))  # accuracy of ε-DP randomized response
    tail = float(binom.sf(v - 1, r, q))  # P[W >= v]
    if delta == 0 or v == 0:
        return tail
    i = np.arange(1, v + 1)
    between = binom.sf(v - i - 1, r, q) - tail  # P[v - i <= W < v]
    return min(1.0, tail + 2 * m * delta * float(np.max(between / i)))


def one_run_epsilon(m: int, r: int, v: int, *, delta: float, confidence: float = 0.95) -> float:
    """The largest ε that ``v`` right of ``r`` guesses on ``m`` canaries rejects at ``confidence``: training
    cannot be (ε', δ)-DP for any ε' below it (0 when it rejects none)."""
    _check(confidence, delta)
    alpha = 1 - confidence
    p = lambda eps: one_run_p_value(m, r, v, eps, delta) - alpha  # noqa: E731 - negative: (eps, delta) rejected
    if r == 0 or p(0.0) >= 0:
        return 0.0
    low, high = 0.0, 1.0
    while p(high) < 0:  # the p-value grows to 1 as ε grows (q → 1)
        low, high = high, 2 * high
    return float(brentq(p, low, high, xtol=1e-9))


@dataclass(frozen=True)
class CanaryEpsilon:
    """The one-run bound of :func:`canary_epsilon`: ε ≥ ``epsilon`` at ``confidence``, from ``right`` of
    ``guesses`` (``k_in`` guessed IN, ``k_out`` OUT) among ``canaries``, of which ``included`` were trained on;
    ``tried``: how many (k₊, k₋) were tried, each bounded at α / ``tried``."""

    epsilon: float
    canaries: int
    included: int
    k_in: int
    k_out: int
    guesses: int
    right: int
    tried: int
    delta: float
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def canary_epsilon(scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray, *, delta: float,
                   confidence: float = 0.95,
                   fractions: Sequence[tuple[float, float]] = GUESS_FRACTIONS) -> CanaryEpsilon:
    """Steinke et al.'s guesses and bound from every canary's ``score`` (higher: more likely trained on) and
    whether it was ``included``: for each (k₊, k₋) of ``fractions`` (of the m canaries) the top k₊ are guessed IN
    and the bottom k₋ OUT, and the largest :func:`one_run_epsilon` is kept, each at α / len(fractions).

    The fractions are fixed in advance, not fitted to these canaries: choosing the guesses by their outcome
    would inflate the bound. Ties in score are broken by canary order, never by membership.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    included = np.asarray(included, dtype=bool).reshape(-1)
    m = len(scores)
    if m == 0 or len(included) != m:
        raise FedsimError(f"the canary audit needs one inclusion bit per score, got {len(included)} for {m} scores")
    if not fractions or any(not (0 <= a and 0 <= b and a + b <= 1) for a, b in fractions):
        raise FedsimError(f"guess fractions (k_in, k_out) must be non-negative and sum to at most 1, got {fractions}")
    each = 1 - (1 - confidence) / len(fractions)
    order = np.argsort(-scores, kind="stable")  # highest first
    bounds = []
    for a, b in fractions:
        k_in, k_out = int(math.ceil(a * m)), int(math.ceil(b * m))
        k_out = min(k_out, m - k_in)
        right = int(included[order[:k_in]].sum() + (~included[order[m - k_out:]]).sum())
        eps = one_run_epsilon(m, k_in + k_out, right, delta=delta, confidence=each)
        bounds.append(CanaryEpsilon(eps, m, int(included.sum()), k_in, k_out, k_in + k_out, right, len(fractions),
                                    delta, confidence))
    return max(bounds, key=lambda b: b.epsilon)
