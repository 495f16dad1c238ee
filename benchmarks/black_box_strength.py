"""Is fedsim's black-box attack as strong as IBM ART's? ``python benchmarks/black_box_strength.py RUN_DIR``.

The reference is the loss attack of IBM's Adversarial Robustness Toolbox:
``MembershipInferenceBlackBox(input_type="loss")`` with gradient boosting (``gb``) or a random forest
(``rf``), which for a regressor reads each subject's loss and label. Wrapped as an attack classifier
registered for this benchmark only, it runs through fedsim's own engine: the same attack-train /
attack-test splits (each seed draws ``--repeats`` of them), the same metrics, and the same per-sample
losses (ART computes (label − prediction)² from the released predictions; every fit checks that this
equals fedsim's ``loss`` feature). Beside it: fedsim's default classifier (``auto``) on every black-box
feature set and on ART's own input (``loss+label``), the former default (``conv``) on ``loss``, and the
loss threshold. One row per attack goes to ``benchmarks/results/black_box.md``: accuracy and AUC as
mean ± std over seeds (of each seed's mean over repeats), what ``auto`` chose, and the gap to ART's best.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyRegressor

from attacks.api import attack_run
from attacks.membership.classifiers import CLASSIFIERS, DEFAULT_CLASSIFIER
from attacks.membership.nets import binary_targets
from attacks.signals.cache import FeatureCache
from attacks.target import is_centralized, open_run
from attacks.threats.splits import DEFAULT_REPEATS
from results_table import append_row, machine

try:
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.regression.scikitlearn import ScikitlearnRegressor
except ImportError:
    sys.exit("black_box_strength.py compares with IBM ART, which is not installed: pip install -e '.[bench]'")

RESULTS = Path(__file__).resolve().parent / "results" / "black_box.md"
BLACK_BOX = ("error", "loss", "pred+label", "pred+label+loss")
SAME_AS_ART = "loss+label"  # what ART's loss attack reads of a regressor: fedsim's classifier on ART's input
ART_INPUT = "pred+label+loss"  # ART computes the loss from prediction and label; the loss column checks it
ART_MODELS = ("gb", "rf")


class ARTLossAttack(ClassifierMixin, BaseEstimator):
    """ART's ``MembershipInferenceBlackBox(input_type="loss")`` as an attack classifier on ``pred+label+loss``.

    ART gets the released predictions and the labels, computes the loss itself through its
    scikit-learn regressor wrapper, and trains its attack model on (loss, label); fedsim's ``loss``
    column is only there to check that ART's loss is the one fedsim's attacks read.
    """

    def __init__(self, *, attack_model_type: str = "gb", random_state: int | None = None):
        self.attack_model_type = attack_model_type
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> ARTLossAttack:
        """Train ART's attack on the members' and non-members' (prediction, label); returns self."""
        member = binary_targets(self, y).astype(bool)
        pred, label, loss = np.asarray(X, dtype=np.float64).T
        regressor = ScikitlearnRegressor(DummyRegressor())
        if not np.allclose(regressor.compute_loss_from_predictions(pred, label), loss, rtol=1e-4, atol=1e-6):
            raise ValueError("ART's loss, (label - prediction)², is not fedsim's loss feature: is the run's loss L1?")
        self.attack_ = MembershipInferenceBlackBox(regressor, input_type="loss",
                                                   attack_model_type=self.attack_model_type)
        self.attack_.attack_model.set_params(random_state=self.random_state)  # ART leaves its model unseeded
        self.attack_.fit(y=label[member], pred=pred[member], test_y=label[~member], test_pred=pred[~member])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """ART's membership probabilities: columns non-member, member."""
        pred, label = np.asarray(X, dtype=np.float64)[:, :2].T
        p = self.attack_.infer(None, label, pred=pred, probabilities=True)[:, 0]
        return np.column_stack([1 - p, p])


def _mean_std(values: pd.Series, scale: float, digits: int) -> str:
    return f"{scale * values.mean():.{digits}f} ± {scale * values.std():.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated split seeds (default: 0,1,2,3,4)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="splits per seed")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    CLASSIFIERS.update({f"art_{m}": partial(ARTLossAttack, attack_model_type=m) for m in ART_MODELS})
    attacks = [(DEFAULT_CLASSIFIER, [*BLACK_BOX, SAME_AS_ART]), ("conv", ["loss"]), ("loss_threshold", ["error"]),
               *((f"art_{m}", [ART_INPUT]) for m in ART_MODELS)]
    target = open_run(args.run_dir)
    threat = "centralized" if is_centralized(target) else "learner"
    cache = FeatureCache(target)
    rows = [dict(row, seed=seed) for seed in seeds for classifier, specs in attacks
            for row in attack_run(target, threat=threat, features=specs, classifier=classifier, repeats=args.repeats,
                                  seed=seed, controls=False, cache=cache)]
    results = pd.DataFrame(rows)
    per_seed = results.groupby(["classifier", "features", "seed"], sort=False)[["accuracy", "auc"]].mean()
    art = per_seed.loc[[f"art_{m}" for m in ART_MODELS]].groupby(level=0)["accuracy"].mean()
    columns = ["run", "threat", "seeds × repeats", "classifier", "features", "accuracy % (mean ± std over seeds)",
               "AUC", "chosen by CV", "accuracy − best ART", "machine"]
    for (classifier, features), group in per_seed.groupby(level=[0, 1], sort=False):
        attack = results[(results["classifier"] == classifier) & (results["features"] == features)]
        chosen = (", ".join(f"{name} {n}" for name, n in attack["chosen"].value_counts().items())
                  if "chosen" in attack and attack["chosen"].notna().any() else "")
        gap = 100 * (group["accuracy"].mean() - art.max())
        ours = not classifier.startswith("art_")
        shown = features if ours else "loss (+ label, ART's input)"
        append_row(RESULTS, "Black-box attack strength: fedsim's attacks vs IBM ART's loss attack, over seeds", columns,
                   [args.run_dir.name, threat, f"{len(seeds)} × {args.repeats}", classifier, shown,
                    _mean_std(group["accuracy"], 100, 1), _mean_std(group["auc"], 1, 3), chosen,
                    f"{gap:+.1f} points vs {art.idxmax()}" + (" (BELOW ART)" if ours and gap < 0 else ""),
                    machine()])


if __name__ == "__main__":
    main()
