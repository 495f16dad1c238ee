"""One aggregation of attack results, and the controls' verdicts built on it.

Every table of every command and report — per feature set, per seat, per attacker × victim cell,
per sweep value — is :func:`summarise` grouped by other columns: the mean over attacks of accuracy,
AUC and TPR at 1 % FPR, each with the same interval (:func:`attacks.evaluation.intervals.cluster_bootstrap`
over victims, then repeats), the standard deviation over attacks and their count. With fewer than
:data:`MIN_BOOTSTRAP_VICTIMS` victims (a centralized run has one) the AUC interval is at least as wide as the
attacks' own, so that one attack, or three draws on one test set, still get an honest interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from attacks.evaluation import verdicts
from attacks.evaluation.intervals import cluster_bootstrap
from attacks.evaluation.verdicts import Verdict
from attacks.signals.features import TABLE1

__all__ = [
    "CHANCE", "CLEAR_GAP", "METRICS", "MIN_BOOTSTRAP_VICTIMS", "TPR", "attack_counts", "clearly_above", "controls_table", "feature_name", "main_round", "ordered", "summarise",
    "verdict",
]

TPR = "tpr@0.01"
#: What results rows aggregate, and the names of their summary columns.
METRICS = {"accuracy": "accuracy", "auc": "auc", TPR: "tpr_at_1pct", "tpr@0.001": "tpr_at_0p1pct",
           f"{TPR}_fixed": "tpr_at_1pct_fixed", "fpr@0.01_fixed": "fpr_at_1pct_fixed"}
CHANCE = 0.5
#: Below this many victims a bootstrap over them says little: the AUC interval is widened to the attacks' own.
MIN_BOOTSTRAP_VICTIMS = 5
#: "Clearly above" means by at least this much accuracy and by two bootstrap standard errors of the difference.
CLEAR_GAP = 0.05
_NAME_OF = {spec: name for name, spec in TABLE1.items()}


def feature_name(spec: str) -> str:
    """A feature set as the paper's Table 1 names it (``grad_norm`` → "gradient magnitude"); others as written."""
    return _NAME_OF.get(spec, spec)


def ordered(specs: Iterable[str]) -> list[str]:
    """Feature sets in Table 1 order, others after them in order of appearance."""
    specs = list(dict.fromkeys(specs))
    return [s for s in TABLE1.values() if s in specs] + [s for s in specs if s not in TABLE1.values()]


def summarise(results: pd.DataFrame, by: Sequence[str], *, seed: int = 0) -> pd.DataFrame:
    """Per group of ``by``: for each metric its mean, ``_std`` over attacks and 95 % ``_low``/``_high``
    bootstrap interval over victims (then repeats), plus ``attacks`` (the count) and the median
    ``n_members``/``n_nonmembers`` of an attack's test set. Groups keep their first-seen order."""
    out = []
    for key, group in results.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        victims = group["victim"].to_numpy() if "victim" in group else np.zeros(len(group))
        for column, name in METRICS.items():
            if column not in group:
                continue
            interval = cluster_bootstrap(group[column].to_numpy(dtype=float), victims, seed=seed)
            row[name], row[f"{name}_low"], row[f"{name}_high"] = interval.mean, interval.low, interval.high
            row[f"{name}_se"] = interval.se
            row[f"{name}_std"] = float(group[column].std()) if len(group) > 1 else float("nan")
        if "auc_low" in group and len(set(victims)) < MIN_BOOTSTRAP_VICTIMS:
            # a bootstrap over so few victims (a centralized run: one) is narrower than one test set's sampling
            # error, or absent: the AUC interval is at least as wide as its attacks' own (metrics.auc_interval)
            own_low, own_high = float(group["auc_low"].mean()), float(group["auc_high"].mean())
            row["auc_low"], row["auc_high"] = np.fmin(row["auc_low"], own_low), np.fmax(row["auc_high"], own_high)
            row["auc_se"] = np.fmax(np.nan_to_num(row["auc_se"]), (own_high - own_low) / (2 * 1.96))
        row["attacks"] = len(group)
        for column in ("n_members", "n_nonmembers"):
            if column in group:
                row[column] = float(group[column].median())
        if f"{TPR}_note" in group and group[f"{TPR}_note"].notna().any():
            row["tpr_at_1pct_note"] = group[f"{TPR}_note"].dropna().iloc[0]
        out.append(row)
    return pd.DataFrame(out)


def main_round(results: pd.DataFrame) -> int:
    """The round a report is about: the last attacked round other than the untrained one."""
    rounds = sorted(set(results.loc[results["control"] == "none", "round"]))
    return int(([r for r in rounds if r != 0] or rounds)[-1])


def clearly_above(a: pd.Series | None, b: pd.Series | float | None, metric: str = "accuracy") -> bool:
    """Whether the summary ``a`` (a :func:`summarise` row) beats ``b`` (another row, or a constant) in
    ``metric`` (``accuracy`` or ``auc``) by CLEAR_GAP and two bootstrap standard errors of the difference."""
    if a is None or (b is None) or pd.isna(a[metric]):
        return False
    var = np.nan_to_num(a[f"{metric}_se"] ** 2)
    if isinstance(b, pd.Series):
        if pd.isna(b[metric]):
            return False
        var, b = var + np.nan_to_num(b[f"{metric}_se"] ** 2), b[metric]
    return bool(a[metric] - b > max(CLEAR_GAP, 2 * np.sqrt(var)))


def verdict(attack: pd.Series | None, round0: pd.Series | None, matched: pd.Series | None, *, name: str = "",
            tests: int = 1) -> Verdict:
    """The membership :class:`~attacks.evaluation.verdicts.Verdict` from the summaries of an attack and its
    controls: a leak is detected where the age-matched attack's interval excludes chance and the round-0
    control (widened for the ``tests`` attacks the seat ran); distribution shift where the plain attack clearly
    beats the age-matched one, or the untrained model is clearly above chance."""
    shift = (matched is not None and clearly_above(attack, matched)) or (round0 is not None and clearly_above(round0, CHANCE))
    return verdicts.membership(attack, round0, matched, shift=shift, name=name, tests=tests)


def attack_counts(results: pd.DataFrame, by: Sequence[str] = ()) -> dict[tuple, int]:
    """How many attacks (feature sets) each ``by`` group ran on the trained model: what its verdicts correct for."""
    main = results[results["control"] == "none"]
    if not by:
        return {(): int(main["features"].nunique())}
    return {(k if isinstance(k, tuple) else (k,)): int(g["features"].nunique())
            for k, g in main.groupby(list(by), sort=False)}


def controls_table(results: pd.DataFrame, rnd: int, *, by: Sequence[str] = (),
                   tests: dict[tuple, int] | None = None) -> pd.DataFrame:
    """Per feature set (Table 1 order; and per ``by`` group, e.g. the seat): the attack on round ``rnd``
    and its two controls, each a :func:`summarise` (columns ``attack``, ``round0``, ``matched`` with
    ``_std``/``_low``/``_high``), the attack's AUC and TPR, and the :func:`verdict`. Each verdict holds for all
    the attacks of its group together: ``tests`` maps a group (a tuple of its ``by`` values) to how many it ran,
    :func:`attack_counts` by default (a caller adds a seat's attacks from other tables)."""
    control, at = results["control"], results["round"] == rnd
    groups = {"attack": results[(control == "none") & at], "matched": results[(control == "age-matched") & at],
              "round0": results[(control == "round-0") | ((control == "none") & (results["round"] == 0))]}
    keys = [*by, "features"]
    summaries = {k: summarise(g, keys).set_index(keys) if len(g) else None for k, g in groups.items()}
    rows = []
    main = summaries["attack"]
    if main is None:
        return pd.DataFrame()
    order = ordered(groups["attack"]["features"])
    tests = attack_counts(results, by) if tests is None else tests
    # with ``by`` the index holds (group…, feature set) tuples: groups keep their order, feature sets Table 1's
    for key in sorted(main.index, key=lambda k: order.index(k[-1])) if by else order:
        found = {k: (s.loc[key] if s is not None and key in s.index else None) for k, s in summaries.items()}
        group = tuple(key[:-1]) if by else ()
        judged = verdict(found["attack"], found["round0"], found["matched"], name=feature_name(key[-1] if by else key),
                         tests=tests.get(group, 1))
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for k, s in found.items():
            for suffix in ("", "_std", "_low", "_high"):
                row[f"{k}{suffix}"] = np.nan if s is None else s[f"accuracy{suffix}"]
        matched = found["matched"]
        for metric in ("auc", "auc_low", "auc_high", "tpr_at_1pct"):  # the leak's size: what survives age matching
            row[f"matched_{metric}"] = np.nan if matched is None else matched.get(metric, np.nan)
        a = found["attack"]
        for metric in ("auc", "auc_low", "auc_high", "tpr_at_1pct", "tpr_at_1pct_low", "tpr_at_1pct_high", "tpr_at_0p1pct",
                       "tpr_at_1pct_fixed", "fpr_at_1pct_fixed", "attacks", "n_members", "n_nonmembers"):
            row[metric] = a.get(metric, np.nan)
        rows.append({**row, "kind": judged.kind, "verdict": judged.words, "bound": judged.bound,
                     "tests": tests.get(group, 1),
                     "shift": judged.kind == verdicts.SHIFT or "distribution shift" in judged.note})
    return pd.DataFrame(rows)
