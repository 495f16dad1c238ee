"""Privacy–utility sweep of one defense: ``python -m attacks.sweep --env ENV --defense KEY --values V1,V2,…``.

A defense is only worth what it buys: how much membership leakage it removes for how much
accuracy it costs. For every value this derives an environment from ENV with
``[defense] KEY = value`` (written to ``DIR/<value>/``, so each run can be reproduced from its
file), trains it, attacks it with :mod:`attacks.run` and collects the utility (MAE of the released
predictions), the privacy spent where DP reports it (ε, δ) and per feature set the attack's
accuracy, AUC and TPR at 1 % FPR beside its round-0 and age-matched controls. It writes
``sweep.csv``, ``sweep.md``, ``sweep.png`` and a self-contained ``sweep.html``. Training and
attacks already on disk are skipped (the helpers of :mod:`attacks.study`), so rerunning the same
command, or adding a value, redoes nothing that finished.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from attacks.classifiers import CLASSIFIERS
from attacks.features import load_snapshot, parse_features
from attacks.figures import plot_privacy_utility, to_png_base64
from attacks.report import CHANCE, TPR, controls_table, html_img, html_page, html_table, main_round
from attacks.run import DEFAULT_CLASSIFIER, DEFAULT_REPEATS, attack_settings
from attacks.study import attack_cached, markdown_table, train_env
from attacks.threats import FeatureCache, open_run
from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.config import DefenseConfig, env_path, from_resolved, load_env, tomllib
from fedsim.errors import FedsimError
from fedsim.models import build_model

DEFAULT_FEATURES = "error,pred+label,grad_norm"  # black-box and cheap white-box sets: one gradient pass
MIN_VALUES = 2  # one value is a run, not a trade-off
SWEEP_CSV, SWEEP_MD, SWEEP_PNG, SWEEP_HTML = "sweep.csv", "sweep.md", "sweep.png", "sweep.html"
TARGET_FPR = float(TPR.removeprefix("tpr@"))  # the FPR of report.TPR, and the TPR of a guessing attack
TPR_COLUMN = f"TPR @ {100 * TARGET_FPR:g}% FPR"
#: What the console shows of :func:`display_table` (a terminal is narrower than a page; the files have all).
CONSOLE_DROPS = ("δ", "members MAE", "gap", "95% CI", "verdict")
#: Groups of partitions.csv whose subjects the model never trained on; every other group holds members.
NON_MEMBERS = ("unseen", "val")
#: A value of 0 switches these defenses off. Their keys must be positive when present, so "off" drops
#: them together with the keys that only make sense beside them.
OFF_AT_ZERO: dict[str, tuple[str, ...]] = {
    "dp_noise_multiplier": ("dp_noise_multiplier", "dp_max_grad_norm"),
    "central_noise_multiplier": ("central_dp", "central_noise_multiplier", "central_clipping_norm"),
}
_FIELDS = {f.name: f for f in dataclasses.fields(DefenseConfig)}
#: The [defense] keys that take a number (``central_dp`` names who clips).
SWEEPABLE = tuple(name for name, f in _FIELDS.items() if f.type == "int" or "float" in f.type)


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
    ``DONE``'s. Read through the attack's feature cache: the default feature sets cost no extra pass.
    """
    target = open_run(run_dir)
    error = FeatureCache(target).get(load_snapshot(run_dir, rnd), "model", ["error"])["error"][:, 0]
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


def sweep_rows(key: str, setting: Setting, results: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per feature set of one value: utility, privacy spent, the attack and its controls."""
    rnd = main_round(results)
    unseen, members = released_mae(setting.run_dir, rnd)
    plain = results[(results["control"] == "none") & (results["round"] == rnd)]
    scores = plain.groupby("features").agg(auc=("auc", "mean"), tpr=(TPR, "mean"), tpr_low=(f"{TPR}_low", "mean"),
                                           tpr_high=(f"{TPR}_high", "mean"))
    common = {"defense": key, "value": setting.value, **privacy_spent(snapshots.read_done(setting.run_dir)),
              "round": rnd, "unseen_mae": unseen, "members_mae": members, "gap": unseen - members}
    return [{**common, "features": c.features, "accuracy": c.attack, "auc": scores.at[c.features, "auc"],
             "tpr_at_1pct": scores.at[c.features, "tpr"], "tpr_at_1pct_low": scores.at[c.features, "tpr_low"],
             "tpr_at_1pct_high": scores.at[c.features, "tpr_high"], "age_matched": c.matched, "round0": c.round0,
             "verdict": c.verdict}
            for c in controls_table(results, rnd).itertuples()]


def _epsilon_text(row: pd.Series) -> str:
    parts = [f"{row.epsilon:.2f}"] if pd.notna(row.epsilon) else []
    parts += [f"central {row.central_epsilon:.2f}"] if pd.notna(row.central_epsilon) else []
    return ", ".join(parts) or "—"


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``sweep.csv`` as the text a person reads (sweep.md, sweep.html, the console)."""
    key = str(frame["defense"].iloc[0])
    return pd.DataFrame({
        key: frame["value"].map(value_label), "ε": frame.apply(_epsilon_text, axis=1),
        "δ": frame["delta"].map(lambda d: "—" if pd.isna(d) else f"{d:g}"),
        "unseen MAE": frame["unseen_mae"].map("{:.2f}".format),
        "members MAE": frame["members_mae"].map("{:.2f}".format),
        "gap": frame["gap"].map("{:+.2f}".format), "features": frame["features"],
        "accuracy %": frame["accuracy"].map(lambda a: f"{100 * a:.1f}"), "AUC": frame["auc"].map("{:.3f}".format),
        TPR_COLUMN: frame["tpr_at_1pct"].map("{:.3f}".format),
        "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(frame["tpr_at_1pct_low"], frame["tpr_at_1pct_high"])],
        "age-matched %": frame["age_matched"].map(lambda a: "—" if pd.isna(a) else f"{100 * a:.1f}"),
        "round-0 %": frame["round0"].map(lambda a: "—" if pd.isna(a) else f"{100 * a:.1f}"),
        "verdict": frame["verdict"],
    })


HOW_TO_READ = (
    "MAE in years of the predictions the model releases (with prediction_noise: the noisy ones), on unseen subjects "
    "and on its training members; gap = unseen − members. ε (DP-SGD: the largest over learners) at δ where the run "
    "reports them. Each run is attacked as attacks.run chooses (centralized: its best-validation epoch; federated: "
    "its last round, the mean over attacker × victim pairs; sweep.csv has the round), mean over repeats. Chance is "
    f"{100 * CHANCE:.0f}% accuracy, AUC {CHANCE}, TPR {TARGET_FPR:g} at {100 * TARGET_FPR:g}% FPR (interval: mean "
    "of the per-repeat Clopper–Pearson bounds). What beats the round-0 (untrained) and age-matched controls is "
    "membership signal."
)


def write_outputs(out: Path, frame: pd.DataFrame, command: str, title: str) -> Path:
    """``sweep.csv``, ``sweep.md``, ``sweep.png`` and the self-contained ``sweep.html``; returns the page."""
    frame.to_csv(out / SWEEP_CSV, index=False)
    shown = display_table(frame)
    snapshots.write_text(out / SWEEP_MD,
                         f"# {title}\n\n```\n{command}\n```\n\n{HOW_TO_READ}\n\n" + markdown_table(shown))
    points = frame.assign(label=[value_label(v) + ("" if pd.isna(e) else f", ε {e:.1f}")
                                 for v, e in zip(frame["value"], frame["epsilon"])]).rename(columns={
        "tpr_at_1pct": "tpr", "tpr_at_1pct_low": "tpr_low", "tpr_at_1pct_high": "tpr_high"})
    png = to_png_base64(plot_privacy_utility(points, chance_auc=CHANCE, chance_tpr=TARGET_FPR, title=title))
    snapshots.atomic_write(out / SWEEP_PNG, lambda tmp: Path(tmp).write_bytes(base64.b64decode(png)))
    rows = [[html.escape(str(v)) for v in row] for row in shown.itertuples(index=False)]
    body = (f"<h1>{html.escape(title)}</h1><p><code>{html.escape(command)}</code></p>"
            f"<div class='box'>{html.escape(HOW_TO_READ)}</div>"
            + html_img(png, "attack AUC and TPR against unseen MAE") + html_table([html.escape(c) for c in shown.columns], rows))
    snapshots.write_text(out / SWEEP_HTML, html_page(title, body))
    return out / SWEEP_HTML


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m attacks.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, help="base environment name or .toml path, e.g. centralized")
    p.add_argument("--defense", required=True, metavar="KEY",
                   help=f"the [defense] key to sweep: {', '.join(SWEEPABLE)}")
    p.add_argument("--values", required=True, help="comma-separated values ≥ 0, e.g. 0,0.5,1,2 "
                   "(0 = off; for dp_noise_multiplier and central_noise_multiplier it removes that DP)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a [defense] key every value shares, e.g. dp_max_grad_norm=1.0 (repeatable)")
    p.add_argument("--out", type=Path, help="sweep directory (default: runs/sweep-<env>-<KEY>)")
    p.add_argument("--cohort", type=Path, help="manifest.csv of your own cohort (default: the embedded synthetic one)")
    p.add_argument("--features", default=DEFAULT_FEATURES,
                   help=f"comma-separated feature specs or 'table1' (default: {DEFAULT_FEATURES})")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER,
                   help=f"one of: {', '.join(CLASSIFIERS)} (default: {DEFAULT_CLASSIFIER})")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help=f"attack repeats (default: {DEFAULT_REPEATS})")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    key = args.defense
    if key not in SWEEPABLE:
        raise FedsimError(f"unknown [defense] key {key!r} to sweep; choose one of: {', '.join(SWEEPABLE)}")
    base = load_env(args.env)  # every input is checked here, before the first run trains
    values = parse_values(key, args.values)
    fixed = parse_settings(args.set, key)
    feature_sets = attack_settings(args.features, args.classifier, args.repeats)
    model = build_model(base.model.name, **base.model_kwargs())
    for spec in feature_sets:
        parse_features(spec, model)
    if args.cohort is not None and not args.cohort.is_file():
        raise FedsimError(f"--cohort {str(args.cohort)!r} is not a file")
    out = args.out or Path("runs") / f"sweep-{base.name}-{key}"
    settings = plan_settings(args.env, key, values, fixed, out)
    attack_args = ["--features", args.features, "--classifier", args.classifier, "--repeats", str(args.repeats)]
    command = shlex.join(["python", "-m", "attacks.sweep", "--env", args.env, "--defense", key,
                          "--values", ",".join(s.label for s in settings),
                          *(a for item in args.set for a in ("--set", item)), "--out", str(out), *attack_args,
                          *(["--cohort", str(args.cohort)] if args.cohort else [])])
    console = Console(highlight=False)
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(settings, start=1):
        console.rule(f"[bold]{key} = {s.label}[/] ({i}/{len(settings)}): {s.env_file}")
        if not s.env_file.is_file() or s.env_file.read_text() != s.text:  # unchanged files keep their time stamps
            snapshots.write_text(s.env_file, s.text)
        load_env(s.env_file)  # the file as written loads (plan_settings checked the same data)
        train_env(str(s.env_file), s.run_dir, args.cohort, console)
        rows += sweep_rows(key, s, attack_cached(s.run_dir, attack_args, console))
    frame = pd.DataFrame(rows)
    page = write_outputs(out, frame, command, f"Privacy–utility sweep of [defense] {key} on {base.name}")
    shown = display_table(frame).drop(columns=list(CONSOLE_DROPS))
    table = Table(title=escape(f"[defense] {key} on {base.name}"))
    for col in shown.columns:
        table.add_column(col)
    for row in shown.itertuples(index=False):
        table.add_row(*(Text(str(v)) for v in row))
    console.print(table)
    console.print(f"sweep: {out / SWEEP_MD}, {out / SWEEP_CSV}, {out / SWEEP_PNG}, {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
