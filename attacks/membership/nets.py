"""The paper's deep attack classifiers, in torch, as scikit-learn estimators: an MLP on feature vectors
and a per-filter convolutional head on per-sample gradient tensors (Gupta et al. 2021, Appendix C's
architecture being lost; Shokri/Nasr-style attack nets).

Both follow the estimator contract (keyword-only, data-free ``__init__``; ``fit`` returns ``self``;
``random_state``), so ``clone``, grid search and pipelines work; :mod:`attacks.membership.classifiers`
registers them by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from attacks.signals.layout import Block
from fedsim.device import resolve_device

__all__ = ["GradientConvAttack", "MLPAttack", "binary_targets"]


def binary_targets(estimator: BaseEstimator, y: np.ndarray) -> np.ndarray:
    """Set ``classes_`` and return y as 0/1 with ``classes_[1]`` as 1 (members, when labels are 0/1)."""
    check_classification_targets(y)
    estimator.classes_ = np.unique(y)
    if len(estimator.classes_) != 2:
        raise ValueError(
            f"Only binary classification is supported. {type(estimator).__name__} tells members "
            f"from non-members; y has {len(estimator.classes_)} classes"
        )
    return (y == estimator.classes_[1]).astype(np.float32)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """ReLU layers of ``sizes`` (inputs first), then one logit."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 1))


class _TorchAttack(ClassifierMixin, BaseEstimator):
    """Training and scoring shared by the torch attack nets; a subclass only builds its net.

    Subclasses store ``lr``, ``weight_decay``, ``batch_size``, ``max_epochs``, ``patience``,
    ``validation_fraction`` and ``random_state`` (see :class:`MLPAttack`) and define ``_build_net``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _build_net(self, n_features: int) -> nn.Module:
        raise NotImplementedError

    def fit(self, X: np.ndarray, y: np.ndarray) -> _TorchAttack:
        """Standardise, split off a validation slice, train with early stopping; returns self."""
        X, y = validate_data(self, X, y, dtype=np.float32)
        target = binary_targets(self, y)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**31 - 1))
        train, val = np.arange(len(y)), np.array([], dtype=int)
        if self.validation_fraction > 0 and np.bincount(target.astype(int)).min() >= 2:
            train, val = train_test_split(
                train, test_size=self.validation_fraction, stratify=target, random_state=seed
            )
        self.validation_indices_ = val  # held out of the fit: where an attacker reads a fixed threshold
        self.scaler_ = StandardScaler().fit(X[train])
        device = resolve_device()  # the command's --device; CUDA when torch sees it
        Xt = torch.from_numpy(self.scaler_.transform(X).astype(np.float32)).to(device)
        yt = torch.from_numpy(target).to(device)
        val_rows = torch.from_numpy(val).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net_ = self._build_net(X.shape[1]).to(device)
        optimizer = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(seed)
        best, best_state, waited = float("inf"), None, 0
        for epoch in range(self.max_epochs):
            self.net_.train()
            order = torch.from_numpy(train)[torch.randperm(len(train), generator=generator)].to(device)
            for batch in order.split(self.batch_size):
                optimizer.zero_grad()
                loss_fn(self.net_(Xt[batch]).squeeze(1), yt[batch]).backward()
                optimizer.step()
            self.n_epochs_ = epoch + 1
            if len(val) == 0:
                continue
            with torch.no_grad():
                val_loss = float(loss_fn(self.net_.eval()(Xt[val_rows]).squeeze(1), yt[val_rows]))
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
        device = next(self.net_.parameters()).device
        with torch.no_grad():
            X = torch.from_numpy(self.scaler_.transform(X).astype(np.float32)).to(device)
            return self.net_(X).squeeze(1).cpu().numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Columns in ``classes_`` order: P(non-member), P(member)."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X).astype(np.float64)))
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        member = self.decision_function(X) >= 0
        return self.classes_[member.astype(int)]


class MLPAttack(_TorchAttack):
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

    def _build_net(self, n_features: int) -> nn.Module:
        return _mlp([n_features, *self.hidden_sizes])


class _FilterEncoder(nn.Module):
    """One gradient block: the same small MLP on every output filter's row, then mean and max over filters."""

    def __init__(self, block: Block, sizes: Sequence[int]):
        super().__init__()
        self.block = block
        layers: list[nn.Module] = []
        width = block.per_filter
        for size in sizes:  # a kernel-1 Conv1d over filters = one Linear shared by all filters
            layers += [nn.Conv1d(width, size, kernel_size=1), nn.ReLU()]
            width = size
        self.encoder = nn.Sequential(*layers)
        self.out_features = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.block.filter_rows(x).transpose(1, 2))  # (N, width, filters)
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)


class _GradientNet(nn.Module):
    """Pooled filter encodings of the gradient blocks and a dense layer on the rest, into an MLP."""

    def __init__(
        self, layout: Sequence[Block], filter_sizes: Sequence[int], vector_size: int, hidden_sizes: Sequence[int]
    ):
        super().__init__()
        self.widths = [block.width for block in layout]
        self.is_gradient = [block.filters > 0 for block in layout]
        self.encoders = nn.ModuleList(_FilterEncoder(b, filter_sizes) for b in layout if b.filters)
        n_vector = sum(block.width for block in layout if not block.filters)
        self.vector = nn.Sequential(nn.Linear(n_vector, vector_size), nn.ReLU()) if n_vector else None
        n_joint = sum(e.out_features for e in self.encoders) + (vector_size if n_vector else 0)
        self.head = _mlp([n_joint, *hidden_sizes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.widths, dim=1)
        encoders = iter(self.encoders)
        joint = [next(encoders)(part) for part, grad in zip(parts, self.is_gradient) if grad]
        vector = [part for part, grad in zip(parts, self.is_gradient) if not grad]
        if vector:
            joint.append(self.vector(torch.cat(vector, dim=1)))
        return self.head(torch.cat(joint, dim=1))


class GradientConvAttack(_TorchAttack):
    """The paper's deep classifier for gradient tensors: a shared per-filter encoder, pooled over filters.

    A layer's per-sample gradient is a set of rows, one per output filter (its weights and bias),
    in an arbitrary order. Each row goes through the same small MLP (a kernel-1 Conv1d over the
    filters) and the results are mean- and max-pooled over filters, so the head does not depend on
    filter order and has far fewer weights than an MLP on the flattened gradient (``conv6`` of
    the paper's net has 16,448 columns). Vector parts (prediction, label, error, grad_norm,
    activations) go through one dense layer; all are concatenated into an MLP giving the logit.
    Standardisation and training are :class:`MLPAttack`'s. Without gradient blocks this *is*
    ``MLPAttack(hidden_sizes=...)``, weights and all.

    Parameters
    ----------
    layout : tuple of Block or None, default=None
        :func:`attacks.signals.layout.feature_layout` of the spec ``X`` was assembled from;
        None treats every column as a vector feature.
    filter_sizes : tuple of int, default=(32, 32)
        Widths of the per-filter encoder.
    vector_size : int, default=16
        Width of the dense layer on the vector columns (when there are gradient blocks).
    hidden_sizes : tuple of int, default=(64,)
        Hidden widths of the MLP on the concatenation.
    lr, weight_decay, batch_size, max_epochs, patience, validation_fraction, random_state
        As in :class:`MLPAttack`.
    """

    def __init__(
        self,
        *,
        layout: tuple[Block, ...] | None = None,
        filter_sizes: tuple[int, ...] = (32, 32),
        vector_size: int = 16,
        hidden_sizes: tuple[int, ...] = (64,),
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 200,
        patience: int = 10,
        validation_fraction: float = 0.2,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.layout = layout
        self.filter_sizes = filter_sizes
        self.vector_size = vector_size
        self.hidden_sizes = hidden_sizes
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _build_net(self, n_features: int) -> nn.Module:
        covered = n_features if self.layout is None else sum(block.width for block in self.layout)
        if covered != n_features:
            raise ValueError(
                f"The layout of GradientConvAttack covers {covered} columns but X has {n_features}; build it "
                "with attacks.signals.layout.feature_layout from the spec that X was assembled from."
            )
        if self.layout is None or not any(block.filters for block in self.layout):
            return _mlp([n_features, *self.hidden_sizes])
        return _GradientNet(self.layout, self.filter_sizes, self.vector_size, self.hidden_sizes)
