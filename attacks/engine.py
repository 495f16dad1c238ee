"""The one attack engine: fit on the attacker's side, score the victim's subjects, one row per attack.

Every family and seat is a plan of :class:`Task` (attacker, victim, repeat, split of subject ids with
labels: membership, or a sensitive attribute), a list of :class:`Attack` (how to fit on the
attacker's subjects and score others) and a *view* (what the seat reads for a subject set through
the model it sees). :func:`run_plan` does the rest identically for all of them: an attacker's
fitted attack is reused for every victim it attacks, and every row carries the same metrics
(:func:`attacks.evaluation.metrics.attack_metrics`, with the threshold fixed on the attacker's own
negatives as well as read off the test ROC).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from attacks.evaluation.metrics import attack_metrics, best_threshold, flat_metrics
from attacks.threats.splits import AttackSplit

__all__ = ["Attack", "ScoreAttack", "Task", "View", "run_plan", "tasks"]


@dataclass(frozen=True)
class Task:
    """One attack of a plan: ``attacker`` fits on ``split``'s train set, then scores its test set
    (``victim``'s subjects); ``repeat`` numbers the draws of the same pair."""

    attacker: str
    victim: str
    repeat: int
    split: AttackSplit


def tasks(triples: Iterable[tuple[str, str, AttackSplit]]) -> list[Task]:
    """Number the repeats of each (attacker, victim) pair of a plan, in plan order."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for attacker, victim, split in triples:
        repeat = seen[attacker, victim] = seen.get((attacker, victim), -1) + 1
        out.append(Task(attacker, victim, repeat, split))
    return out


class Attack(Protocol):
    """How one attack learns from the attacker's labelled subjects and scores others.

    ``name`` is what the results' ``features`` column calls it; ``score`` returns scores that are
    higher for the positive class and the threshold its own decisions use. An attack may also have
    ``describe(fitted) -> dict``: columns its rows gain about the fit (the classifier it chose).
    """

    name: str

    def fit(self, X: np.ndarray, y: np.ndarray, *, repeat: int) -> Any: ...

    def score(self, fitted: Any, X: np.ndarray) -> tuple[np.ndarray, float]: ...


@dataclass(frozen=True)
class ScoreAttack:
    """An :class:`Attack` whose view is already a score (one column, e.g. a calibrated LiRA/RMIA
    score): fitting only picks the threshold that maximises accuracy on the attacker's subjects."""

    name: str
    index: int = 0  # which of several precomputed scores the view returns

    def fit(self, X: np.ndarray, y: np.ndarray, *, repeat: int) -> float:
        return best_threshold(y, X[:, 0])

    def score(self, fitted: float, X: np.ndarray) -> tuple[np.ndarray, float]:
        return X[:, 0], fitted


def reference_scores(attack: Attack, fitted: Any, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of the attacker's own subjects that the attack did not fit on, where it held some
    out (the torch nets' early-stopping slice, ``validation_indices_``), else all of them: what the
    threshold fixed at a low FPR (``tpr@…_fixed``) is read from. In-sample scores of an overfit
    classifier would put its own non-members too low and the fixed threshold too low with them."""
    held_out = getattr(fitted, "validation_indices_", None)
    y = np.asarray(y)
    if held_out is not None and len(held_out) and len(np.unique(y[held_out])) == 2:
        return y[held_out], attack.score(fitted, X[held_out])[0]
    return y, attack.score(fitted, X)[0]


def _described(attack: Attack, fitted: Any) -> dict[str, Any]:
    """The columns ``attack`` reports about its fit: its ``describe(fitted)``, where it has one."""
    describe = getattr(attack, "describe", None)
    return {} if describe is None else describe(fitted)


#: ``view(attack, model, rows, task) -> X``: what ``attack`` reads of cohort ``rows`` through
#: ``model`` (``"model"``, or a learner's local model), for one task of the plan.
View = Callable[[Any, str, np.ndarray, Task], np.ndarray]


def run_plan(
    plan: Sequence[Task],
    attacks: Sequence[Attack],
    view: View,
    *,
    row_of: Mapping[str, int],
    sees: Callable[[str], str] = lambda party: "model",
    columns: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Every attack of every task: one result row each (``columns`` + who, what, metrics).

    ``row_of`` maps subject ids to cohort rows; ``sees(party)`` is the model through which a party's
    subjects are read (the attacker's for its training set, the victim's for the test set).
    ``progress(done, total)`` is called after each attack.
    """
    fitted: dict[tuple, Any] = {}
    rows: list[dict[str, Any]] = []
    total, done = len(plan) * len(attacks), 0
    for task in plan:
        (train_ids, y_train), (test_ids, y_test) = task.split.train(), task.split.test()
        train_rows = np.array([row_of[s] for s in train_ids], dtype=np.int64)
        test_rows = np.array([row_of[s] for s in test_ids], dtype=np.int64)
        train_model, test_model = sees(task.attacker), sees(task.victim)
        for attack in attacks:
            X_train = view(attack, train_model, train_rows, task)
            # An attacker's fit depends on what it trains on, not on the victim: fit once per training view.
            key = (train_model, attack.name, task.repeat, train_rows.tobytes(), np.asarray(y_train).tobytes(),
                   hashlib.blake2b(np.ascontiguousarray(X_train).tobytes()).digest())
            if key not in fitted:
                fit = attack.fit(X_train, y_train, repeat=task.repeat)
                fitted[key] = (fit, reference_scores(attack, fit, X_train, y_train))
            fit, reference = fitted[key]
            scores, threshold = attack.score(fit, view(attack, test_model, test_rows, task))
            metrics = attack_metrics(y_test, scores, threshold=threshold, reference=reference)
            rows.append({**(columns or {}), "attacker": task.attacker, "victim": task.victim, "repeat": task.repeat,
                         "features": attack.name, **_described(attack, fit), "n_train": len(train_ids),
                         **flat_metrics(metrics)})
            done += 1
            if progress is not None:
                progress(done, total)
    return rows
