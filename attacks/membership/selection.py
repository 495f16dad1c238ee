"""The attack classifier chosen on the attacker's own data: cross-validation over a small zoo.

No one classifier is the strongest on every signal. On one loss column a threshold is as good as
anything and a net only spends data; on prediction + label, gradient boosting finds the curved
boundary a linear model cannot; on gradient tensors only the paper's per-filter net reads the
filters. An attack reported as "no leak" must have been the strongest the attacker could build, so
:class:`SelectedAttack` (registered as ``auto``, the default) scores each member of a small zoo by
stratified k-fold cross-validation on the data it is fitted on, refits the best on all of it, and
keeps ``chosen_`` and ``cv_scores_`` as the strength evidence that result rows carry (``chosen``).
The engine fits it on the attack-train split only, so the choice never reads the attack-test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from attacks.evaluation.metrics import best_threshold
from attacks.membership.names import CLASSIFIERS
from attacks.membership.nets import binary_targets
from attacks.signals.layout import Block

__all__ = ["ColumnThreshold", "QUICK_ZOO", "ThresholdRule", "SelectedAttack", "ZOO", "quick_selection", "shallow_boosting"]

#: The candidates, simplest first (a tie goes to the simpler one): a threshold on a one-column
#: signal, the linear baseline, shallow and deeper gradient boosting, the paper's deep classifier.
ZOO = ("threshold", "logreg", "shallow_hgb", "hgb", "conv")
#: The quick audit's zoo: the same without the deep net (the slowest candidate by far, and the one that wins least
#: often on the low-dimensional sets the quick audit reads), cross-validated on 3 folds.
QUICK_ZOO, QUICK_FOLDS = ("threshold", "logreg", "shallow_hgb", "hgb"), 3


class ThresholdRule(ClassifierMixin, BaseEstimator):
    """A binary rule: a score (``_score``, higher for members) against the threshold ``fit`` set in ``threshold_``."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The score minus the threshold (>= 0: member)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self._score(X) - self.threshold_

    def predict(self, X: np.ndarray) -> np.ndarray:
        member = self.decision_function(X) >= 0
        return self.classes_[member.astype(int)]


class ColumnThreshold(ThresholdRule):
    """Call a subject a member when one column, or its magnitude, lies on the members' side of a threshold.

    ``fit`` picks the score (the column x or its magnitude |x|, either sign) with the highest AUC
    on the training data, then the accuracy-maximising threshold on it. On ``loss`` this is the
    loss threshold of Yeom et al. (2018), and on the signed ``error`` −|x| is the same rule, so the
    zoo needs no knowledge of which feature it reads.
    """

    @staticmethod
    def _transform(column: np.ndarray, sign: float, magnitude: bool) -> np.ndarray:
        return sign * (np.abs(column) if magnitude else column)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._transform(X[:, 0].astype(np.float64), self.sign_, self.magnitude_)

    def fit(self, X: np.ndarray, y: np.ndarray) -> ColumnThreshold:
        """Pick the score's direction and the threshold on the training data; returns self."""
        X, y = validate_data(self, X, y)
        if X.shape[1] != 1:
            raise ValueError(f"ColumnThreshold reads one column; got {X.shape[1]} columns")
        target = binary_targets(self, y)
        column = X[:, 0].astype(np.float64)
        ways = [(sign, magnitude) for magnitude in (False, True) for sign in (1.0, -1.0)]
        self.sign_, self.magnitude_ = max(ways, key=lambda way: roc_auc_score(target, self._transform(column, *way)))
        self.threshold_ = best_threshold(target, self._score(X))
        return self


def shallow_boosting(*, random_state: int | np.random.RandomState | None = None) -> HistGradientBoostingClassifier:
    """100 rounds of depth-3 trees without early stopping: the gradient boosting of privacy libraries
    (scikit-learn's ``GradientBoostingClassifier`` defaults, ART's ``gb``), on binned features.

    On a few black-box columns (``loss+label``, ``pred+label+loss``) it beats ``hgb``'s 31-leaf trees,
    which stop early on a 10 % slice of a few hundred subjects
    (``benchmarks/results/black_box.md``); ``hgb`` stays in the zoo for the signals it wins.
    """
    return HistGradientBoostingClassifier(max_iter=100, max_depth=3, max_leaf_nodes=None, early_stopping=False,
                                          random_state=random_state)


#: Candidates that only the selection offers, by name; the others are names of the classifier registry.
OWN: dict[str, Any] = {"threshold": lambda random_state: ColumnThreshold(), "shallow_hgb": shallow_boosting}


def _chosen_has(method: str):
    """Whether the chosen classifier (before fitting: any candidate may be) offers ``method``."""
    return lambda self: not hasattr(self, "estimator_") or hasattr(self.estimator_, method)


class SelectedAttack(ClassifierMixin, BaseEstimator):
    """The zoo's best classifier on the training data by cross-validated ROC AUC, refitted on all of it.

    The criterion is AUC, not accuracy: it rates how well the attack ranks members above
    non-members, which is what every reported metric but accuracy reads (AUC, TPR at a low FPR),
    and on folds of ~100 subjects it varies less than accuracy, which moves in steps of one subject
    at one threshold. ``threshold`` only competes on one-column signals (``error``, ``loss``).

    Parameters
    ----------
    candidates : tuple of str, default=ZOO
        Names of :data:`OWN` (``threshold``: :class:`ColumnThreshold`; ``shallow_hgb``:
        :func:`shallow_boosting`) and of :data:`attacks.membership.classifiers.CLASSIFIERS`, simplest first.
    cv : int, default=5
        Stratified folds (fewer when a class has fewer subjects).
    layout : tuple of Block or None, default=None
        The feature layout, for the candidates that read one (``conv``).
    random_state : int, RandomState or None
        Seeds the folds and every candidate.

    Attributes
    ----------
    chosen_ : str
        The candidate with the highest mean cross-validated AUC.
    cv_scores_ : dict of str to float
        Mean cross-validated AUC of every candidate that competed.
    estimator_ : estimator
        The chosen candidate refitted on all the training data.
    validation_indices_ : ndarray
        The rows the chosen candidate held out of its fit (the nets' early-stopping slice; empty
        otherwise), where :func:`attacks.engine.reference_scores` reads an attacker's fixed threshold.
    """

    def __init__(
        self,
        *,
        candidates: tuple[str, ...] = ZOO,
        cv: int = 5,
        layout: tuple[Block, ...] | None = None,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.candidates = candidates
        self.cv = cv
        self.layout = layout
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _zoo(self, n_features: int, seed: int) -> dict[str, Any]:
        """Fresh candidates that apply to ``n_features`` columns, by name."""
        from attacks.membership.classifiers import make_classifier  # that module imports this one

        choices = [*OWN, *(name for name, make in CLASSIFIERS.items() if make not in (SelectedAttack, quick_selection))]
        unknown = [name for name in self.candidates if name not in choices]
        if unknown:
            raise ValueError(f"unknown candidate(s) {', '.join(map(repr, unknown))} of SelectedAttack; "
                             f"choose from: {', '.join(choices)}")
        zoo = {name: OWN[name](random_state=seed) if name in OWN
               else make_classifier(name, random_state=seed, layout=self.layout)
               for name in self.candidates if name != "threshold" or n_features == 1}
        if not zoo:
            raise ValueError(f"no candidate of SelectedAttack applies to {n_features} columns; "
                             f"candidates: {', '.join(self.candidates)}")
        return zoo

    def fit(self, X: np.ndarray, y: np.ndarray) -> SelectedAttack:
        """Cross-validate every candidate on (X, y), keep the best, refit it on all of (X, y); returns self."""
        X, y = validate_data(self, X, y)
        smallest = int(np.bincount(binary_targets(self, y).astype(int)).min())
        if smallest < 2:
            raise ValueError(f"SelectedAttack cross-validates: it needs at least 2 subjects of each class, "
                             f"got {smallest}")
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        folds = StratifiedKFold(n_splits=min(self.cv, smallest), shuffle=True, random_state=seed)
        zoo = self._zoo(X.shape[1], seed)
        self.cv_scores_ = {
            name: float(cross_val_score(estimator, X, y, cv=folds, scoring="roc_auc", error_score="raise").mean())
            for name, estimator in zoo.items()
        }
        self.chosen_ = max(self.cv_scores_, key=self.cv_scores_.__getitem__)  # the first of equals: the simpler
        self.estimator_ = clone(zoo[self.chosen_]).fit(X, y)
        self.validation_indices_ = getattr(self.estimator_, "validation_indices_", np.array([], dtype=int))
        return self

    @available_if(_chosen_has("predict_proba"))
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The chosen classifier's probabilities, columns in ``classes_`` order."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(validate_data(self, X, reset=False))

    @available_if(_chosen_has("decision_function"))
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The chosen classifier's decision values (>= 0: ``classes_[1]``)."""
        check_is_fitted(self)
        return self.estimator_.decision_function(validate_data(self, X, reset=False))

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.predict(validate_data(self, X, reset=False))



def quick_selection(*, layout: tuple[Block, ...] | None = None,
                    random_state: int | np.random.RandomState | None = None) -> SelectedAttack:
    """``auto-quick``: :class:`SelectedAttack` over :data:`QUICK_ZOO` on 3 folds — what ``fedsim audit --budget
    quick`` fits, at about a quarter of ``auto``'s cost; ``--budget full`` uses ``auto``."""
    return SelectedAttack(candidates=QUICK_ZOO, cv=QUICK_FOLDS, layout=layout, random_state=random_state)
