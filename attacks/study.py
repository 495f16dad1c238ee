"""The whole study in one command: ``python -m attacks.study [--out DIR]``.

Trains the centralized baseline and the four federated environments (or those named with
``--envs``), attacks every run with :mod:`attacks.run` and writes one summary in the layout of
the paper's Table 1 (feature sets × settings) plus a per-environment table of utility,
memorisation and attack accuracy beside its controls. Each step is skipped when its output is
already on disk, and an interrupted federated run is resumed, so re-running the same command
after a crash (or with another environment added) redoes nothing that finished.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from attacks import run as attack_run
from attacks.classifiers import CLASSIFIERS
from attacks.features import TABLE1
from attacks.report import PAPER_3DCNN, controls_table, main_round, pair_matrix
from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.config import load_env
from fedsim.errors import FedsimError

DEFAULT_ENVS = ("centralized", "uniform-iid", "uniform-noniid", "skewed-iid", "skewed-noniid")
SUMMARY_MD, SUMMARY_CSV, STAMP = "summary.md", "summary.csv", "study.json"


def train_env(env: str, run_dir: Path, cohort: Path | None, console: Console) -> None:
    """Train ``env`` into ``run_dir`` in a child process (Ray and torch state stay out of this one)."""
    if snapshots.is_done(run_dir):
        console.print(f"[dim]{env}: trained run found in {run_dir}[/]")
        return
    centralized = load_env(env).partition.learners == 0
    module = "fedsim.centralized" if centralized else "fedsim.run"
    if snapshots.complete_rounds(run_dir):
        if centralized:
            raise FedsimError(f"centralized run {str(run_dir)!r} was interrupted and cannot resume; delete it and rerun")
        args = ["--resume", str(run_dir)]
    else:
        args = ["--env", env, "--out", str(run_dir), *(["--cohort", str(cohort)] if cohort else [])]
    console.rule(f"[bold]{env}[/]: python -m {module} {' '.join(args)}")
    code = subprocess.call([sys.executable, "-m", module, *args])
    if code != 0 or not snapshots.is_done(run_dir):
        raise FedsimError(f"training {env!r} failed (exit {code}); see above, then rerun the same command to continue")


def attack_cached(run_dir: Path, attack_args: list[str], console: Console) -> pd.DataFrame:
    """Attack ``run_dir`` unless its results were written with the same attack arguments."""
    out = run_dir / "attacks"
    stamp = out / STAMP
    if (out / "results.csv").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == attack_args:
        console.print(f"[dim]{run_dir.name}: attack results found in {out}[/]")
    else:
        console.rule(f"[bold]{run_dir.name}[/]: python -m attacks.run {run_dir} {' '.join(attack_args)}")
        attack_run.main([str(run_dir), *attack_args])
        snapshots.write_text(stamp, json.dumps(attack_args))
    return pd.read_csv(out / "results.csv")


def environment_row(env: str, run_dir: Path, results: pd.DataFrame) -> dict:
    """Utility, memorisation and the strongest attack (by its age-matched control) of one run."""
    done = snapshots.read_done(run_dir)
    rnd = main_round(results)
    controls = controls_table(results, rnd)
    best = controls.loc[controls["matched"].fillna(controls["attack"]).idxmax()]
    members = done.get("members_mae", done.get("train_mae"))
    return {
        "environment": env, "round": rnd, "unseen_mae": done.get("unseen_mae"), "members_mae": members,
        "gap": None if members is None else done["unseen_mae"] - members,
        "best_features": best["features"], "attack": best["attack"], "age_matched": best["matched"],
        "round0": best["round0"], "verdict": best["verdict"],
    }


def table1(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Accuracy (%) of every Table 1 feature set (rows) in every setting (columns), main attack only.

    For a federated setting the number is the mean over attackers, victims and repeats.
    """
    rows = []
    for name, spec in TABLE1.items():
        row = {"features": name}
        for env, res in results.items():
            main = res[(res["control"] == "none") & (res["round"] > 0) & (res["features"] == spec)]
            main = main[main["round"] == main["round"].max()]
            row[env] = 100 * main["accuracy"].mean() if len(main) else float("nan")
        row["paper (centralized 3D-CNN)"] = PAPER_3DCNN[name]
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame, digits: int = 1) -> str:
    """``frame`` as a Markdown table, floats with ``digits`` decimals (summary files are read as text)."""
    def cell(v: object) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


def pair_table(results: pd.DataFrame, spec: str, rnd: int) -> pd.DataFrame:
    """Attacker × victim cells "attack / age-matched control" (accuracy %) of one federated run."""
    attack, matched = (100 * pair_matrix(results, spec, rnd, control) for control in ("none", "age-matched"))
    cells = attack.combine(matched, lambda a, m: pd.Series(
        ["—" if pd.isna(x) else f"{x:.0f} / {y:.0f}" for x, y in zip(a, m)], index=a.index))
    return cells.reset_index().rename(columns={"attacker": "A ↓ B →"})


def write_summary(out: Path, t1: pd.DataFrame, envs: pd.DataFrame, attack_args: list[str],
                  pairs: dict[str, tuple[str, pd.DataFrame]] | None = None) -> Path:
    """``summary.md`` (the tables, with the command) and ``summary.csv`` (the per-environment table).

    ``pairs``: per federated environment, what its :func:`pair_table` shows (a caption) and the table.
    """
    pct = envs.copy()
    for col in ("attack", "age_matched", "round0"):
        pct[col] = 100 * pct[col]
    text = (
        f"# fedsim study\n\n`python -m attacks.study --out {out}` (attack: `{' '.join(attack_args)}`)\n\n"
        "## Attack accuracy % by feature set (paper Table 1 layout; federated: mean over attacker × victim)\n\n"
        + markdown_table(t1)
        + "\n## Per environment: utility, memorisation, strongest attack and its controls\n\n"
        "MAE in years; `gap` = unseen − members MAE; the strongest feature set is chosen by its age-matched "
        "control (the attack with non-members drawn from the members' age bins), `round0` is the same attack "
        "on the untrained model.\n\n"
        + markdown_table(pct, digits=2)
        + "".join(f"\n## {env}: attacker × victim, {label}\n\nAccuracy % of learner A's attack on learner B's "
                  "subjects, mean over repeats: main attack / age-matched control.\n\n" + markdown_table(table)
                  for env, (label, table) in (pairs or {}).items())
    )
    snapshots.write_text(out / SUMMARY_MD, text)
    envs.to_csv(out / SUMMARY_CSV, index=False)
    return out / SUMMARY_MD


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m attacks.study", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/study"), help="study directory (default: runs/study)")
    p.add_argument("--envs", default=",".join(DEFAULT_ENVS), help=f"comma-separated (default: {','.join(DEFAULT_ENVS)})")
    p.add_argument("--cohort", type=Path, help="manifest.csv of your own cohort (default: the embedded synthetic one)")
    p.add_argument("--classifier", default=attack_run.DEFAULT_CLASSIFIER,
                   help=f"attack classifier, one of: {', '.join(CLASSIFIERS)} (default: {attack_run.DEFAULT_CLASSIFIER})")
    p.add_argument("--features", default="table1", help="'table1' (default) or comma-separated feature specs")
    p.add_argument("--repeats", type=int, default=attack_run.DEFAULT_REPEATS,
                   help=f"attack repeats (default: {attack_run.DEFAULT_REPEATS})")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    if not envs:
        raise FedsimError("--envs names no environment")
    names = {env: load_env(env).name for env in envs}  # a typo fails now, not after an hour of training
    if len(set(names.values())) < len(names):
        raise FedsimError(f"--envs names an environment twice: {', '.join(names.values())}")
    attack_run.attack_settings(args.features, args.classifier, args.repeats)  # a typo fails before training, too
    console = Console(highlight=False)
    attack_args = ["--features", args.features, "--classifier", args.classifier, "--repeats", str(args.repeats)]
    results, rows = {}, []
    for env, name in names.items():
        run_dir = args.out / name
        train_env(env, run_dir, args.cohort, console)
        results[name] = attack_cached(run_dir, attack_args, console)
        rows.append(environment_row(name, run_dir, results[name]))
    t1, per_env = table1(results), pd.DataFrame(rows)
    pairs = {r["environment"]: (f"{r['best_features']}, round {r['round']}",
                                pair_table(results[r["environment"]], r["best_features"], r["round"]))
             for r in rows if (results[r["environment"]]["threat"] == "learner").any()}
    path = write_summary(args.out, t1, per_env, attack_args, pairs)
    for frame, title in ((t1, "attack accuracy % (Table 1 layout)"), (per_env, "per environment")):
        table = Table(title=title)
        for col in frame.columns:
            table.add_column(str(col))
        for row in frame.itertuples(index=False):
            table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
        console.print(table)
    console.print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
