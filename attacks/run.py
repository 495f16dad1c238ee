"""Attack a run: ``python -m attacks.run RUN_DIR [--threat centralized|learner] [--features …]``.

Writes ``RUN_DIR/attacks/results.csv`` and ``results.json`` (one row per attacker, victim,
round, feature set and repeat) and prints mean ± std per feature set. Beside the attack on the
chosen rounds it runs two controls (``--no-controls`` skips them): the same attack on the
round-0 (untrained) model, and a variant whose non-members are age-matched to the members —
what survives both is membership signal, not distribution shift.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from attacks.classifiers import CLASSIFIERS
from attacks.features import TABLE1
from attacks.report import write_report
from attacks.threats import THREATS, Target, open_run, run_attacks, skipped_pairs_said
from fedsim.cli import run_cli
from fedsim.errors import FedsimError

#: The attack classifier (the paper's deep classifiers) and repeats unless told otherwise; attacks.study and
#: attacks.sweep pass them on to this command.
DEFAULT_CLASSIFIER, DEFAULT_REPEATS = "conv", 5


def _rounds(spec: str, target: Target, threat: str) -> list[int]:
    if spec == "default":
        spec = "best" if threat == "centralized" and target.best_round is not None else "last"
    if spec == "last":
        return [target.rounds[-1]]
    if spec == "best":
        if target.best_round is None:
            raise FedsimError("--rounds best needs a finished centralized run (its DONE names the best epoch)")
        return [target.best_round]
    if spec == "all":
        return list(target.rounds)
    try:
        wanted = [int(r) for r in spec.split(",")]
    except ValueError:
        raise FedsimError(f"--rounds must be last, best, all or a comma-separated list of integers, got {spec!r}") from None
    absent = [r for r in wanted if r not in target.rounds]
    if absent:
        raise FedsimError(
            f"round {absent[0]} does not exist in {str(target.run_dir)!r}; rounds on disk: {target.rounds[0]}..{target.rounds[-1]}"
        )
    return wanted


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over repeats and victims, per control, round and feature set."""
    keys = ["control", "round", "features"]
    return results.groupby(keys, sort=False).agg(
        accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), auc=("auc", "mean"),
        tpr_at_1pct=("tpr@0.01", "mean"), attacks=("accuracy", "size"),
    ).reset_index()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m attacks.run", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a run directory written by fedsim.run or fedsim.centralized")
    p.add_argument("--threat", choices=[t for t in THREATS if t != "controller"],
                   help="default: centralized for a centralized run, else learner (the curious controller: python -m attacks.seats)")
    p.add_argument("--features", default="table1", help="'table1' (the paper's rows) or comma-separated specs, e.g. 'error,pred+label'")
    p.add_argument("--rounds", default="default", help="last | best | all | 3,10 (default: best for centralized, else last)")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, help=f"one of: {', '.join(CLASSIFIERS)} (default: {DEFAULT_CLASSIFIER} — the paper's deep classifiers: an MLP, with a conv head on gradient tensors)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help=f"independent draws of the attack sets (default: {DEFAULT_REPEATS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stack", action="store_true",
                   help="also attack with each feature set's values of all --rounds side by side (at least 2 rounds)")
    p.add_argument("--no-controls", action="store_true", help="skip the round-0 and age-matched controls")
    return p.parse_args(argv)


def attack_settings(features: str, classifier: str, repeats: int) -> list[str]:
    """The feature sets of ``--features``, once ``--classifier`` and ``--repeats`` are checked: callers
    that train first (:mod:`attacks.sweep`) fail on a typo before the training, not after it."""
    if repeats < 1:
        raise FedsimError(f"--repeats must be at least 1, got {repeats}")
    if classifier not in CLASSIFIERS:
        raise FedsimError(f"unknown attack classifier {classifier!r}; choose one of: {', '.join(CLASSIFIERS)}")
    feature_sets = list(TABLE1.values()) if features == "table1" else [f.strip() for f in features.split(",")]
    if classifier == "loss_threshold" and feature_sets != ["error"]:
        raise FedsimError("the loss_threshold attack scores the error alone; use it with --features error")
    return feature_sets


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    feature_sets = attack_settings(args.features, args.classifier, args.repeats)
    target = open_run(args.run_dir)
    threat = args.threat or ("centralized" if "train" in set(target.partitions["group"]) else "learner")
    rounds = _rounds(args.rounds, target, threat)
    if args.stack and len(set(rounds)) < 2:
        raise FedsimError(f"--stack needs at least 2 rounds to stack, got --rounds {args.rounds} = {rounds}")
    common = dict(threat=threat, feature_sets=feature_sets, classifier=args.classifier, repeats=args.repeats, seed=args.seed)
    console = Console()
    console.print(f"[bold]{threat}[/] attack on {args.run_dir}, rounds {rounds}, {len(feature_sets)} feature sets")
    with skipped_pairs_said(lambda message: console.print(f"[yellow]warning:[/] {message}")):
        rows = run_attacks(target, rounds=rounds, **common)
        if args.stack:
            rows += run_attacks(target, rounds=rounds, stack=True, **common)
        if not args.no_controls:
            if 0 not in rounds:
                rows += [dict(r, control="round-0") for r in run_attacks(target, rounds=[0], **common)]
                if args.stack:  # the same stacked attack on the untrained model, as many times over
                    rows += [dict(r, control="round-0") for r in run_attacks(target, rounds=[0] * len(rounds), stack=True, **common)]
            rows += run_attacks(target, rounds=rounds, age_matched=True, **common)
            if args.stack:
                rows += run_attacks(target, rounds=rounds, age_matched=True, stack=True, **common)
    results = pd.DataFrame(rows)
    out = args.run_dir / "attacks"
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    (out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    report = write_report(args.run_dir, results, target, seed=args.seed)
    table = Table(title=f"{threat} attack, {args.classifier}, mean over {args.repeats} repeats" + ("" if threat == "centralized" else " and all victims"))
    for col in ("control", "round", "features", "accuracy %", "AUC", "TPR@1%FPR"):
        table.add_column(col)
    for r in summarise(results).itertuples():
        table.add_row(r.control, str(r.round), r.features, f"{100 * r.accuracy:.1f} ± {100 * (r.accuracy_std or 0):.1f}",
                      f"{r.auc:.3f}", f"{r.tpr_at_1pct:.3f}")
    console.print(table)
    console.print(f"results: {out / 'results.csv'}")
    console.print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
