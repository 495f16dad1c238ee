"""Attack classifiers: scikit-learn estimators that call a subject a member (class 1) or not.

All follow the estimator contract (keyword-only, data-free ``__init__``; ``fit``
returns ``self``; ``random_state``), so ``clone``, grid search and pipelines work
and a threat model can swap them by name through :func:`make_classifier`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from attacks.metrics import MEMBER, best_threshold
from fedsim.errors import FedsimError

__all__ = [
    "CLASSIFIERS", "LossThresholdAttack", "MLPAttack", "attack_scores", "gradient_boosting",
    "logistic_regression", "make_classifier",
]


def _binary_targets(estimator: BaseEstimator, y: np.ndarray) -> np.ndarray:
    """Set ``classes_`` and return y as 0/1 with ``classes_[1]`` as 1 (members, when labels are 0/1)."""
    check_classification_targets(y)
    estimator.classes_ = np.unique(y)
    if len(estimator.classes_) != 2:
        raise ValueError(
            f"Only binary classification is supported. {type(estimator).__name__} tells members "
            f"from non-members; y has {len(estimator.classes_)} classes"
        )
    return (y == estimator.classes_[1]).astype(np.float32)


class MLPAttack(ClassifierMixin, BaseEstimator):
    """The paper's deep binary classifier: a small MLP on standardised features, trained in torch.

    The paper's architecture (its Appendix C) is lost; this follows Shokri/Nasr-style
    attack nets: ReLU hidden layers, Adam, binary cross-entropy, early stopping on a
    stratified held-out slice of the training data (the attack must not peek at its test set).

    Parameters
    ----------
    hidden_sizes : tuple of int, default=(64,)
    lr, weight_decay : float
        Adam settings.
    batch_size, max_epochs, patience : int
        Training stops ``patience`` epochs after the best validation loss; the best weights are kept.
    validation_fraction : float, default=0.2
        Held-out share of the training data for early stopping (0 disables it).
    random_state : int, RandomState or None
        Seeds the split, the initial weights and the shuffling; global RNGs are untouched.
    """

    def __init__(
        self,
        *,
        hidden_sizes: tuple[int, ...] = (64,),
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 200,
        patience: int = 10,
        validation_fraction: float = 0.2,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.hidden_sizes = hidden_sizes
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPAttack:
        """Standardise, split off a validation slice, train with early stopping; returns self."""
        X, y = validate_data(self, X, y, dtype=np.float32)
        target = _binary_targets(self, y)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**31 - 1))
        train, val = np.arange(len(y)), np.array([], dtype=int)
        if self.validation_fraction > 0 and np.bincount(target.astype(int)).min() >= 2:
            train, val = train_test_split(
                train, test_size=self.validation_fraction, stratify=target, random_state=seed
            )
        self.scaler_ = StandardScaler().fit(X[train])
        Xt = torch.from_numpy(self.scaler_.transform(X).astype(np.float32))
        yt = torch.from_numpy(target)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sizes = [X.shape[1], *self.hidden_sizes]
            layers: list[nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            self.net_ = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))
        optimizer = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(seed)
        best, best_state, waited = float("inf"), None, 0
        for epoch in range(self.max_epochs):
            self.net_.train()
            order = torch.from_numpy(train)[torch.randperm(len(train), generator=generator)]
            for batch in order.split(self.batch_size):
                optimizer.zero_grad()
                loss_fn(self.net_(Xt[batch]).squeeze(1), yt[batch]).backward()
                optimizer.step()
            self.n_epochs_ = epoch + 1
            if len(val) == 0:
                continue
            with torch.no_grad():
                val_loss = float(loss_fn(self.net_.eval()(Xt[val]).squeeze(1), yt[val]))
            if val_loss < best:
                best, waited = val_loss, 0
                best_state = {k: v.clone() for k, v in self.net_.state_dict().items()}
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.best_validation_loss_ = best
        self.net_.eval()
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logit of membership (>= 0: member)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        with torch.no_grad():
            return self.net_(torch.from_numpy(self.scaler_.transform(X).astype(np.float32))).squeeze(1).numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Columns in ``classes_`` order: P(non-member), P(member)."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X).astype(np.float64)))
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        member = self.decision_function(X) >= 0
        return self.classes_[member.astype(int)]


class LossThresholdAttack(ClassifierMixin, BaseEstimator):
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

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
        target = _binary_targets(self, y)
        self.threshold_ = best_threshold(target, self._score(X))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Minus the loss, minus the threshold (>= 0: member)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self._score(X) - self.threshold_

    def predict(self, X: np.ndarray) -> np.ndarray:
        member = self.decision_function(X) >= 0
        return self.classes_[member.astype(int)]


def logistic_regression(*, C: float = 1.0, random_state: int | None = None) -> Pipeline:
    """Standardised features into L2-regularised logistic regression: a fast linear baseline."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=random_state))


def gradient_boosting(*, max_iter: int = 200, random_state: int | None = None) -> HistGradientBoostingClassifier:
    """Histogram gradient boosting with early stopping: a strong non-linear baseline for low-d features."""
    return HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=True, random_state=random_state)


#: Attack classifiers by name: estimator classes or factories taking keyword parameters.
CLASSIFIERS: dict[str, Callable[..., Any]] = {
    "mlp": MLPAttack,
    "logreg": logistic_regression,
    "hgb": gradient_boosting,
    "loss_threshold": LossThresholdAttack,
}


def make_classifier(name: str, *, random_state: int | None = None, **params: Any) -> Any:
    """A fresh attack classifier by name; ``random_state`` goes to those that take one."""
    if name not in CLASSIFIERS:
        raise FedsimError(f"unknown attack classifier {name!r}; choose one of: {', '.join(CLASSIFIERS)}")
    factory = CLASSIFIERS[name]
    allowed = list(inspect.signature(factory).parameters)
    unexpected = [key for key in params if key not in allowed]
    if unexpected:
        raise FedsimError(
            f"attack classifier {name!r} got unexpected parameter(s) {', '.join(map(repr, unexpected))}; "
            f"allowed: {', '.join(allowed)}"
        )
    if "random_state" in allowed:
        params["random_state"] = random_state
    return factory(**params)


def attack_scores(estimator: Any, X: np.ndarray) -> tuple[np.ndarray, float]:
    """Membership scores of a fitted classifier and the threshold its ``predict`` uses.

    ``predict_proba`` of the member class with threshold 0.5 where there is one, else
    ``decision_function`` with threshold 0: the pair feeds :mod:`attacks.metrics`.
    """
    column = list(estimator.classes_).index(MEMBER)
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)[:, column], 0.5
    score = estimator.decision_function(X)
    return (score if column == 1 else -score), 0.0
