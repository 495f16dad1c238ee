"""A privacy–utility sweep of one ``[defense]`` key: derived environments, their runs and one row
per value × feature set.

For every value this derives an environment from the base with ``[defense] KEY = value`` (written
beside its run, so each run can be reproduced from its file), and after the study's training and
attack steps (:mod:`attacks.experiments.study`, skipped when still valid) collects the utility (MAE
of the released predictions), the privacy spent where DP reports it (ε, δ) and per feature set the
attack beside its round-0 and age-matched controls. With the calibrated family, each value is also attacked by
LiRA and RMIA (a federation: by its curious controller), and judged by the strongest attack of either kind
(:func:`strongest_rows`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w

from attacks.attribute.inference import NO_MODEL
from attacks.evaluation import verdicts
from attacks.evaluation.summary import controls_table, main_round
from attacks.experiments.names import DEFAULT_FEATURES, SWEEPABLE
from attacks.membership.calibration import attack_name
from attacks.reporting.attribute import attribute_table
from attacks.reporting.calibrated import calibrated_table
from attacks.signals.cache import FeatureCache
from attacks.target import load_snapshot, open_run
from fedsim import snapshots
from fedsim.config import DefenseConfig, env_path, from_resolved, load_env, tomllib
from fedsim.errors import FedsimError

__all__ = [
    "CALIBRATED", "DEFAULT_FEATURES", "SWEEPABLE", "TRAINED", "Setting", "derive", "parse_settings", "parse_values",
    "plan_settings", "attribute_sweep_rows", "calibrated_sweep_rows", "privacy_spent", "released_mae", "strongest_rows",
    "sweep_rows", "value_label",
]

MIN_VALUES = 2  # one value is a run, not a trade-off
#: The ``family`` of a membership row: a trained attack classifier on a feature set, or a calibrated attack.
TRAINED, CALIBRATED = "trained", "calibrated"
#: Groups of partitions.csv whose subjects the model never trained on; every other group holds members.
NON_MEMBERS = ("unseen", "val")
#: A value of 0 switches these defenses off. Their keys must be positive when present, so "off" drops
#: them together with the keys that only make sense beside them.
OFF_AT_ZERO: dict[str, tuple[str, ...]] = {
    "dp_noise_multiplier": ("dp_noise_multiplier", "dp_max_grad_norm"),
    "central_noise_multiplier": ("central_dp", "central_noise_multiplier", "central_clipping_norm"),
}
_FIELDS = {f.name: f for f in dataclasses.fields(DefenseConfig)}


@dataclass(frozen=True)
class Setting:
    """One value of the sweep: its derived environment file and run directory."""

    value: float
    label: str
    env_file: Path
    run_dir: Path
    text: str  # the environment file's content


def value_label(value: float) -> str:
    """The shortest text of ``value`` that reads back as it (``0``, ``0.5``, ``1e-05``): its directory name."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_values(key: str, text: str) -> list[float]:
    """The values of ``--values``, checked before anything trains: non-negative numbers (whole ones
    for an integer key), at least :data:`MIN_VALUES`, none twice; ascending, the order of table and plot."""
    integer = _FIELDS[key].type == "int"
    values: list[float] = []
    for item in (t.strip() for t in text.split(",")):
        try:
            number = float(item)
        except ValueError:
            raise FedsimError(f"--values: {item!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise FedsimError(f"--values: {item!r} is not allowed; [defense] {key} takes finite numbers ≥ 0")
        if integer and not number.is_integer():
            raise FedsimError(f"--values: [defense] {key} is a whole number, got {item!r}")
        values.append(int(number) if integer else number)
    if len(values) < MIN_VALUES:
        raise FedsimError(f"--values needs at least {MIN_VALUES} values to compare, got {text!r}")
    twice = [value_label(v) for i, v in enumerate(values) if v in values[:i]]
    if twice:
        raise FedsimError(f"--values: {twice[0]} is given twice")
    return sorted(values)


def _scalar(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_settings(items: Sequence[str], swept: str) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs: [defense] keys every value of the sweep shares (e.g. ``dp_max_grad_norm``)."""
    fixed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not raw:
            raise FedsimError(f"--set takes KEY=VALUE, got {item!r}")
        if key not in _FIELDS:
            raise FedsimError(f"--set: unknown [defense] key {key!r}; choose one of: {', '.join(_FIELDS)}")
        if key == swept:
            raise FedsimError(f"--set {key}: that is the swept key; give its values with --values")
        fixed[key] = _scalar(raw)
    return fixed


def derive(base: Mapping[str, Any], key: str, value: float, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The raw TOML data of ``base`` with ``[defense] key = value`` and the ``fixed`` keys; its other
    [defense] keys stay. Value 0 of a key in :data:`OFF_AT_ZERO` removes that defense instead."""
    defense = {**base.get("defense", {}), **fixed, key: value}
    if value == 0 and key in OFF_AT_ZERO:
        for k in OFF_AT_ZERO[key]:
            defense.pop(k, None)
    label = f"[defense] {key} = {value_label(value)}"
    raw = {k: v for k, v in base.items() if k != "defense"}
    raw["description"] = f"{base.get('description', '')} Sweep: {label}.".strip()
    return {**raw, **({"defense": defense} if defense else {})}


def plan_settings(env: str, key: str, values: Sequence[float], fixed: Mapping[str, Any], out: Path) -> list[Setting]:
    """Every value's environment, validated like an environment file, before anything is written.

    A value whose run exists but was derived from another environment (the base file or ``--set``
    changed since) is refused: its results would silently describe the old setting.
    """
    name = load_env(env).name
    base = tomllib.loads(env_path(env).read_text())
    settings = []
    for value in values:
        label = value_label(value)
        env_file = out / label / f"{name}-{key}-{label}.toml"
        raw = derive(base, key, value, fixed)
        from_resolved({**raw, "name": env_file.stem, "source": str(env_file)}, where=str(env_file))
        text = f"# Derived by python -m attacks.sweep from {name}: [defense] {key} = {label}\n" + tomli_w.dumps(raw)
        run_dir = out / label / "run"
        if env_file.is_file() and tomllib.loads(env_file.read_text()) != raw and run_dir.exists():
            raise FedsimError(f"{str(run_dir)!r} was trained from another version of {str(env_file)!r}; "
                              "choose another --out or delete that directory")
        settings.append(Setting(value, label, env_file, run_dir, text))
    return settings


def released_mae(run_dir: Path, rnd: int) -> tuple[float, float]:
    """(unseen, members) MAE in years of the predictions the run releases at round ``rnd``.

    With ``[defense] prediction_noise`` these are the noisy predictions users receive, the utility that
    defense costs and that the run's ``DONE`` (the clean model) does not show; without it they equal
    ``DONE``'s. Read through the feature cache as an outsider sees them (a centralized run's black-box
    feature sets have cached them already; a federation's learners read clean ones, so this costs one forward pass).
    """
    target = open_run(run_dir)
    error = FeatureCache(target).get(load_snapshot(run_dir, rnd), ["error"], released=True)["error"][:, 0]
    groups = target.partitions.set_index("subject_id")["group"]
    unseen = target.cohort.index_of(list(groups.index[groups == "unseen"]))
    members = target.cohort.index_of(list(groups.index[~groups.isin(NON_MEMBERS)]))
    return float(np.abs(error[unseen]).mean()), float(np.abs(error[members]).mean())


def privacy_spent(done: Mapping[str, Any]) -> dict[str, float]:
    """ε of DP-SGD (the largest over learners: the weakest guarantee), of central DP and their δ; NaN without DP."""
    spent = done.get("epsilon", {})
    central = float("nan")
    if spent:
        from fedsim.defenses.central_dp import EPSILON_KEY  # imports Flower (seconds): only for DP runs

        central = spent.get(EPSILON_KEY, central)
        spent = {k: v for k, v in spent.items() if k != EPSILON_KEY}
    return {"epsilon": max(spent.values(), default=float("nan")), "central_epsilon": central,
            "delta": done.get("delta", float("nan"))}


def sweep_rows(key: str, setting: Setting, results: pd.DataFrame, *, family: str = TRAINED) -> list[dict[str, Any]]:
    """One row per feature set (attack) of one value: utility, privacy spent, the attack and its controls."""
    rnd = main_round(results)
    return _membership_rows(_common(key, setting, rnd), family, controls_table(results, rnd))


def calibrated_sweep_rows(key: str, setting: Setting, results: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per calibrated attack of one value, in :func:`sweep_rows`' columns (``features``: the attack).

    A centralized run's rows (``calibrated.csv``) are one attack each on one test set: their own intervals and
    their round-0 control judge them, as on the calibrated page (:func:`calibrated_table`; no age-matched control
    is run). A federation's are the curious controller's over attacker × victim pairs, judged as the classifiers'.
    """
    if "method" not in results:
        return sweep_rows(key, setting, results, family=CALIBRATED)
    table = calibrated_table(results).rename(columns={
        "accuracy": "attack", "accuracy_low": "attack_low", "accuracy_high": "attack_high", "round0_accuracy": "round0"})
    table = table.assign(features=[attack_name(m, s) for m, s in zip(table["method"], table["statistic"])],
                         matched=math.nan)
    return _membership_rows(_common(key, setting, int(table["round"].iloc[0])), CALIBRATED, table)


def _membership_rows(common: dict[str, Any], family: str, table: pd.DataFrame) -> list[dict[str, Any]]:
    """``sweep.csv`` rows of a :func:`controls_table`-shaped table (attack, its controls, AUC, TPR, verdict)."""
    return [{**common, "family": family, "features": c.features, "accuracy": c.attack, "accuracy_low": c.attack_low,
             "accuracy_high": c.attack_high, "auc": c.auc, "auc_low": c.auc_low, "auc_high": c.auc_high,
             "tpr_at_1pct": c.tpr_at_1pct, "tpr_at_1pct_low": c.tpr_at_1pct_low, "tpr_at_1pct_high": c.tpr_at_1pct_high,
             "age_matched": c.matched, "round0": c.round0, "kind": c.kind, "verdict": c.verdict}
            for c in table.itertuples()]


def strongest_rows(frame: pd.DataFrame, by: Sequence[str] = ("value",)) -> pd.DataFrame:
    """Per group of ``by`` (a value of the sweep), the row of the attack that judges it: a defense is worth what
    the strongest attack against it finds. The pick is :func:`attacks.evaluation.verdicts.strongest`'s (the
    highest-AUC detected leak; else the most telling verdict; among "not detected" the attack whose interval allows
    the largest AUC, so that the bound stated holds for every attack that was run); ``frame`` needs ``kind``,
    ``auc`` and ``auc_high``."""
    picks = []
    for _, rows in frame.groupby(list(by), sort=False):
        records = rows.to_dict("index")
        chosen = verdicts.strongest(list(records.values()), score="auc", upper="auc_high")
        picks.append(next(i for i, r in records.items() if r is chosen))
    return frame.loc[picks]


def _common(key: str, setting: Setting, rnd: int) -> dict[str, Any]:
    unseen, members = released_mae(setting.run_dir, rnd)
    return {"defense": key, "value": setting.value, **privacy_spent(snapshots.read_done(setting.run_dir)),
            "round": rnd, "unseen_mae": unseen, "members_mae": members, "gap": unseen - members}


def attribute_sweep_rows(key: str, setting: Setting, results: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per question, seat and feature set of one value: utility, privacy spent, the attribute attack's
    AUC (members) beside the label-only baseline, and its verdict."""
    table = attribute_table(results)
    common = _common(key, setting, int(table["round"].max()))
    return [{**common, "question": r.attribute, "seat": r.seat, "features": r.features, "auc": r.auc, "auc_low": r.auc_low,
             "auc_high": r.auc_high, "accuracy": r.accuracy, "tpr_at_1pct": r.tpr_at_1pct, "tpr_at_1pct_low": r.tpr_at_1pct_low,
             "tpr_at_1pct_high": r.tpr_at_1pct_high, "label_only": r.baseline_auc, "unseen_auc": r.unseen_auc,
             "verdict": r.verdict} for r in table[table["seat"] != NO_MODEL].itertuples()]
