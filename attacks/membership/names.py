"""The attack classifiers by name, without importing them (no scikit-learn, no torch).

A command's parser lists the names in its help and choices at Python's start-up cost; the
classifier behind a name is imported when the registry is first asked for it.
:mod:`attacks.membership.classifiers` re-exports the registry and makes classifiers from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

__all__ = ["CLASSIFIERS", "DEFAULT_CLASSIFIER", "LazyRegistry"]


class LazyRegistry(MutableMapping[str, Any]):
    """Names -> objects, where an object may be given as ``"module:attribute"``, imported on first access.

    Iterating, ``len`` and ``in`` never import; ``registry[name]`` returns (and keeps) the object.
    """

    def __init__(self, entries: Mapping[str, Any]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Any:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def __setitem__(self, name: str, value: Any) -> None:
        self._entries[name] = value

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


#: Attack classifiers by name: estimator classes or factories taking keyword parameters
#: (:func:`attacks.membership.classifiers.make_classifier` makes one).
CLASSIFIERS = LazyRegistry({
    "mlp": "attacks.membership.nets:MLPAttack",
    "conv": "attacks.membership.nets:GradientConvAttack",
    "logreg": "attacks.membership.classifiers:logistic_regression",
    "hgb": "attacks.membership.classifiers:gradient_boosting",
    "loss_threshold": "attacks.membership.classifiers:LossThresholdAttack",
    "auto": "attacks.membership.selection:SelectedAttack",
    "auto-quick": "attacks.membership.selection:quick_selection",
})

#: The attack classifier unless told otherwise, for the API and every command alike: the zoo's best on
#: each feature set by cross-validation on the attacker's own data, so that no signal is under-attacked.
DEFAULT_CLASSIFIER = "auto"
