"""Attribute inference: the time of one run's attribute study, and fedsim's attack against IBM ART's.

Two measurements, written to ``benchmarks/results/attribute.md``:

1. **Time** of the whole attribute study of a run, cold (``python -m attacks.attribute RUN --attribute …`` on a
   copy of the run without its feature cache: every feature computed), as a user meets it the first time. The
   target: ≤ 10 minutes per federation on 2 cores.
2. **Strength**: fedsim's probe against ART's ``AttributeInferenceBlackBox`` (the standard library's attack on
   the same signal: the released prediction, the true age, and site where known) and ART's
   ``AttributeInferenceBaselineTrueLabel`` against fedsim's label-only baseline, on the same attacker/victim
   splits; accuracy on the victims' subjects (ART returns decisions, not scores). A fedsim number is only
   reported if its attack is at least as strong as ART's on the same signal.

Needs ``pip install adversarial-robustness-toolbox`` (not a fedsim dependency). Example::

    python benchmarks/attribute.py runs/attributes/skewed-iid --attribute sex,site
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from attacks.attribute.inference import Probe, known_columns
from results_table import append_row, machine
from attacks.attribute.labels import questions
from attacks.signals.cache import FeatureCache
from attacks.target import is_centralized, load_snapshot, open_run, resolve_rounds
from attacks.threats.splits import attribute_splits

RESULTS = Path(__file__).parent / "results" / "attribute.md"


class Column(RegressorMixin, BaseEstimator):
    """A "regressor" whose prediction is a column of its input: hands ART the released predictions fedsim
    cached, through the estimator interface ART's black-box attack queries."""

    def __init__(self, index: int = -2):
        self.index = index

    def fit(self, X, y=None):
        return self

    def predict(self, X):
        return np.asarray(X)[:, self.index]


def _cold_time(run_dir: Path, attributes: str) -> float:
    """Seconds of the attribute command on a copy of ``run_dir`` with no attack outputs (features computed)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("attacks"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "attacks.attribute", str(copy), "--attribute", attributes], check=True,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def _art_rows(run_dir: Path, attribute: str) -> list[dict]:
    from art.attacks.inference.attribute_inference import AttributeInferenceBaselineTrueLabel, AttributeInferenceBlackBox
    from art.estimators.regression.scikitlearn import ScikitlearnRegressor

    target = open_run(run_dir)
    rnd = resolve_rounds("default", target, centralized=is_centralized(target))[0]
    prediction = FeatureCache(target).get(load_snapshot(run_dir, rnd), ["prediction"], released=True)["prediction"]
    row_of = {s: i for i, s in enumerate(target.cohort.subject_ids)}
    ages = np.asarray(target.cohort.ages, dtype=np.float64)
    rows = []
    for question in questions(target, attribute):
        known = known_columns(target, question)  # age (+ site): what the attacker knows without the model
        for attacker, victim, split in attribute_splits(target.partitions, question.labels, repeats=3):
            (train, y_train), (test, y_test) = split.train(), split.test()
            if min(np.bincount(y_train, minlength=2).min(), np.bincount(y_test, minlength=2).min()) < 2:
                continue
            a, b = np.array([row_of[s] for s in train]), np.array([row_of[s] for s in test])
            ours = {}
            for name, X in (("label only", known), ("pred+label", np.concatenate([prediction, known], axis=1))):
                probe = Probe(name, known=0 if name == "label only" else known.shape[1])
                fitted = probe.fit(X[a], y_train, repeat=0)
                ours[name] = float(np.mean((probe.score(fitted, X[b])[0] >= 0.5) == y_test))
            # ART: x = [known..., prediction, attribute]; the attribute is the last column, the label the true age
            x = np.concatenate([known, prediction, question.labels.loc[list(target.cohort.subject_ids)].to_numpy()[:, None]], axis=1)
            art = {}
            for kind in ("rf", "nn"):
                blackbox = AttributeInferenceBlackBox(ScikitlearnRegressor(Column(-2).fit(x[a])), attack_model_type=kind,
                                                      attack_feature=x.shape[1] - 1, prediction_normal_factor=1 / 80)
                blackbox.fit(x[a], ages[a])
                art[f"ART black box ({kind})"] = float(np.mean(blackbox.infer(x[b][:, :-1], ages[b], pred=prediction[b]).ravel() == y_test))
                baseline = AttributeInferenceBaselineTrueLabel(attack_model_type=kind, attack_feature=x.shape[1] - 2,
                                                               is_regression=True, prediction_normal_factor=1 / 80)
                baseline.fit(np.delete(x[a], -2, axis=1), ages[a])
                art[f"ART baseline ({kind})"] = float(np.mean(baseline.infer(np.delete(x[b], -2, axis=1)[:, :-1], ages[b]).ravel() == y_test))
            rows.append({"question": question.name, "attacker": attacker, "victim": victim,
                         "fedsim label only": ours["label only"], "fedsim pred+label": ours["pred+label"], **art})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--attribute", default="sex")
    p.add_argument("--no-time", action="store_true", help="only the comparison with ART")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    seconds = None if args.no_time else _cold_time(args.run_dir, args.attribute)
    rows = pd.DataFrame([r for a in args.attribute.split(",") for r in _art_rows(args.run_dir, a)])
    table = rows.drop(columns=["attacker", "victim"]).groupby("question", sort=False).median()
    columns = ["machine", "run", "attributes", "cold study (min)", "question", *table.columns]
    for question, row in table.iterrows():
        append_row(RESULTS, "Attribute inference: one run's cold study, and fedsim's probe against IBM ART (accuracy)",
                   columns, [machine(), args.run_dir, args.attribute, "—" if seconds is None else f"{seconds / 60:.1f}",
                             question, *(f"{v:.3f}" for v in row)])


if __name__ == "__main__":
    main()
