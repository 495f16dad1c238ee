"""Is fedsim's black-box attack as strong as a standard library's? ``python benchmarks/black_box_strength.py RUN_DIR``.

The loss-based black-box attack of standard privacy libraries (ML-Doctor, ART's black-box
membership attack, LeakPro's loss attack) is a classifier on the per-sample training loss; a
gradient-boosted classifier on it is a strong instance. This attacks a run's snapshot (a
centralized run's best epoch; a federation's last round, as the malicious learner) with
fedsim's default classifier on every black-box feature set, and with a gradient-boosted
classifier (``hgb``) on ``loss`` — the same splits, seed and repeats — and appends one row per
attack to ``benchmarks/results/black_box.md``: accuracy, AUC, TPR at 1 % FPR, and whether
fedsim's best black-box set is at least as accurate as the library-style attack.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from attacks.api import attack_run
from attacks.evaluation.summary import summarise
from attacks.membership.classifiers import DEFAULT_CLASSIFIER
from attacks.target import is_centralized, open_run
from attacks.threats.splits import DEFAULT_REPEATS
from results_table import append_row, machine

RESULTS = Path(__file__).resolve().parent / "results" / "black_box.md"
BLACK_BOX = ("error", "loss", "pred+label", "pred+label+loss")
REFERENCE = ("hgb", "loss")  # the library-style attack: gradient boosting on the per-sample loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    args = p.parse_args()
    target = open_run(args.run_dir)
    threat = "centralized" if is_centralized(target) else "learner"
    common = dict(threat=threat, repeats=args.repeats, controls=False)
    rows = attack_run(target, features=list(BLACK_BOX), classifier=DEFAULT_CLASSIFIER, **common)
    rows += attack_run(target, features=[REFERENCE[1]], classifier=REFERENCE[0], **common)
    table = summarise(pd.DataFrame(rows), ["classifier", "features"])
    ours = table[table["classifier"] == DEFAULT_CLASSIFIER]
    best = ours.loc[ours["accuracy"].idxmax()]
    reference = table[table["classifier"] == REFERENCE[0]].iloc[0]
    columns = ["run", "threat", "classifier", "features", "accuracy % [95% CI]", "AUC", "TPR@1%", "best black-box ≥ hgb:loss",
               "machine"]
    for r in table.itertuples():
        verdict = (f"{'yes' if best.accuracy >= reference.accuracy else 'NO'} "
                   f"({100 * (best.accuracy - reference.accuracy):+.1f} points, {best.features})"
                   if r.features == best.features and r.classifier == DEFAULT_CLASSIFIER else "")
        append_row(RESULTS, "Black-box attack strength: fedsim's default classifier vs gradient boosting on the loss",
                   columns, [args.run_dir.name, threat, r.classifier, r.features,
                             f"{100 * r.accuracy:.1f} [{100 * r.accuracy_low:.1f}, {100 * r.accuracy_high:.1f}]",
                             f"{r.auc:.3f}", f"{r.tpr_at_1pct:.3f}", verdict, machine()])


if __name__ == "__main__":
    main()
