"""Attack classifiers by name: scikit-learn estimators that call a subject a member (class 1) or not.

The paper's deep classifiers (:mod:`attacks.membership.nets`), scikit-learn baselines, the loss
threshold, and ``auto`` (the default): the best of a small zoo of them by cross-validation on the
attack-train split (:mod:`attacks.membership.selection`). All follow the estimator contract
(keyword-only, data-free ``__init__``; ``fit`` returns ``self``; ``random_state``), so a threat
model swaps them by name through :func:`make_classifier`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import validate_data

from attacks.evaluation.metrics import best_threshold
from attacks.membership.nets import GradientConvAttack, MLPAttack, binary_targets
from attacks.membership.names import CLASSIFIERS, DEFAULT_CLASSIFIER  # by name, without importing them
from attacks.membership.selection import SelectedAttack, ThresholdRule
from attacks.signals.layout import Block
from attacks.threats.splits import MEMBER
from fedsim.errors import FedsimError

__all__ = [
    "CLASSIFIERS", "DEFAULT_CLASSIFIER", "GradientConvAttack", "LossThresholdAttack", "MLPAttack", "SelectedAttack",
    "attack_scores", "classifier_parameters", "gradient_boosting", "logistic_regression", "make_classifier",
]


class LossThresholdAttack(ThresholdRule):
    """Call a subject a member when its loss is below a threshold (Yeom et al. 2018); no training.

    ``X`` is the ``error`` feature (prediction − label, one column). The score is minus
    the per-sample loss (``mse``: error², ``l1``: |error|, in years; the ranking equals
    that of the scaled training loss). ``fit`` only picks the threshold that maximises
    accuracy on the training data: the cheapest sanity baseline.

    Parameters
    ----------
    loss : {"mse", "l1"}, default="mse"
    """

    def __init__(self, *, loss: str = "mse"):
        self.loss = loss

    def _score(self, X: np.ndarray) -> np.ndarray:
        if X.shape[1] != 1:
            raise ValueError(
                f"LossThresholdAttack expects one column, the 'error' feature (prediction - label); "
                f"got {X.shape[1]} columns"
            )
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"The 'loss' parameter of LossThresholdAttack must be 'mse' or 'l1'. Got {self.loss!r} instead.")
        error = X[:, 0].astype(np.float64)
        return -(error**2) if self.loss == "mse" else -np.abs(error)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LossThresholdAttack:
        """Pick the accuracy-maximising threshold on minus the loss; returns self."""
        X, y = validate_data(self, X, y)
        target = binary_targets(self, y)
        self.threshold_ = best_threshold(target, self._score(X))
        return self


def logistic_regression(*, C: float = 1.0, random_state: int | None = None) -> Pipeline:
    """Standardised features into L2-regularised logistic regression: a fast linear baseline."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=random_state))


def gradient_boosting(*, max_iter: int = 200, random_state: int | None = None) -> HistGradientBoostingClassifier:
    """Histogram gradient boosting with early stopping: a strong non-linear baseline for low-d features."""
    return HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=True, random_state=random_state)


def classifier_parameters(name: str) -> list[str]:
    """The keyword parameters of the classifier ``name``; an unknown name lists the registered ones."""
    if name not in CLASSIFIERS:
        raise FedsimError(f"unknown attack classifier {name!r}; choose one of: {', '.join(CLASSIFIERS)}")
    return list(inspect.signature(CLASSIFIERS[name]).parameters)


def make_classifier(
    name: str, *, random_state: int | None = None, layout: Sequence[Block] | None = None, **params: Any
) -> Any:
    """A fresh attack classifier by name; ``random_state`` and ``layout`` go to those that take them.

    A caller can thus pass the feature layout whatever the classifier: only the ones that
    look inside gradient tensors (``conv``) use it.
    """
    allowed = classifier_parameters(name)
    unexpected = [key for key in params if key not in allowed]
    if unexpected:
        raise FedsimError(
            f"attack classifier {name!r} got unexpected parameter(s) {', '.join(map(repr, unexpected))}; "
            f"allowed: {', '.join(allowed)}"
        )
    if "random_state" in allowed:
        params["random_state"] = random_state
    if "layout" in allowed:
        params["layout"] = layout
    return CLASSIFIERS[name](**params)


def attack_scores(estimator: Any, X: np.ndarray) -> tuple[np.ndarray, float]:
    """Membership scores of a fitted classifier and the threshold its ``predict`` uses.

    ``predict_proba`` of the member class with threshold 0.5 where there is one, else
    ``decision_function`` with threshold 0: the pair feeds :mod:`attacks.evaluation.metrics`.
    """
    column = list(estimator.classes_).index(MEMBER)
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)[:, column], 0.5
    score = estimator.decision_function(X)
    return (score if column == 1 else -score), 0.0
