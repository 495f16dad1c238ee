"""Membership inference with a trained attack classifier on a seat's features (Gupta et al. 2021).

For every (attacker, victim, split) of a threat model (:mod:`attacks.threats.seats`) the features
of the snapshot(s) the seat sees are read from the content-keyed cache (so a second classifier or
feature combination never recomputes a gradient), and :func:`attacks.engine.run_plan` fits the
classifier on the attack-train set and scores the attack-test set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks.engine import Task, run_plan, tasks
from attacks.membership.classifiers import DEFAULT_CLASSIFIER, attack_scores, classifier_parameters, make_classifier
from attacks.signals.cache import FeatureCache
from attacks.signals.features import assemble, is_black_box, parse_features
from attacks.signals.layout import Block, feature_layout
from attacks.target import Target, load_snapshot
from attacks.threats.seats import local_models, plan, sees_released
from attacks.threats.splits import DEFAULT_REPEATS
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

__all__ = ["ClassifierAttack", "run_attacks"]


@dataclass(frozen=True)
class ClassifierAttack:
    """An :class:`attacks.engine.Attack`: a fresh classifier ``classifier`` on the feature set ``spec``."""

    name: str
    spec: str
    classifier: str
    seed: int
    layout: tuple[Block, ...] | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, *, repeat: int) -> Any:
        model = make_classifier(self.classifier, random_state=self.seed + repeat, layout=self.layout)
        return model.fit(X, y)

    def score(self, fitted: Any, X: np.ndarray) -> tuple[np.ndarray, float]:
        return attack_scores(fitted, X)

    def describe(self, fitted: Any) -> dict[str, Any]:
        """The ``chosen`` column: the classifier that cross-validation picked, where one was picked (``auto``)."""
        return {"chosen": fitted.chosen_} if hasattr(fitted, "chosen_") else {}


def run_attacks(
    target: Target,
    *,
    threat: str,
    rounds: Sequence[int],
    feature_sets: Sequence[str],
    classifier: str = DEFAULT_CLASSIFIER,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
    age_matched: bool = False,
    stack: bool = False,
    cache: FeatureCache | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Every attack of a threat model on every round and feature set; one dict per attack.

    With ``stack`` the rounds make one attack instead: each subject's features of every round side
    by side (its trajectory over training), reported at the last round as ``"<spec> stacked"``
    with the rounds in ``stacked_rounds``. ``progress(description, done, total)`` reports feature
    extraction and attack fitting.
    """
    cache = cache or FeatureCache(target, progress=progress)
    plan_ = tasks(plan(threat, target.partitions, repeats=repeats, seed=seed, age_matched=age_matched))
    row_of = {sid: i for i, sid in enumerate(target.cohort.subject_ids)}
    takes_layout = "layout" in classifier_parameters(classifier)  # only then is a layout worth a forward pass
    local = local_models(threat)
    if local and 0 in rounds:
        raise FedsimError("round 0 has no local models: the curious controller attacks rounds 1 and later")
    if threat == "outsider" and not all(is_black_box(s) for s in feature_sets):
        raise FedsimError("the outsider sees predicted ages only: give it black-box feature sets, e.g. pred+label or error")
    models = learner_groups(target.partitions["group"]) if local else ["model"]
    rows: list[dict[str, Any]] = []
    for group in [list(rounds)] if stack else [[rnd] for rnd in rounds]:
        by_model = {name: _round_features(target, cache, threat, group, feature_sets, takes_layout, name=name)
                    for name in models}
        layouts = by_model[models[0]][1]
        attacks = [ClassifierAttack(f"{spec} stacked" if stack else spec, spec, classifier, seed, layouts.get(spec))
                   for spec in feature_sets]

        def view(attack: ClassifierAttack, model: str, rows_: np.ndarray, task: Task) -> np.ndarray:
            return by_model[model][0][attack.spec][rows_]

        columns = {"threat": threat, "round": group[-1], **({"stacked_rounds": ",".join(map(str, group))} if stack else {}),
                   "classifier": classifier, "control": "age-matched" if age_matched else "none"}
        report = None if progress is None else (lambda done, total: progress("fitting attacks", done, total))
        rows += run_plan(plan_, attacks, view, row_of=row_of, sees=(lambda party: party) if local else (lambda party: "model"),
                         columns=columns, progress=report)
    return rows


def _round_features(
    target: Target, cache: FeatureCache, threat: str, rounds: Sequence[int], feature_sets: Sequence[str],
    with_layout: bool, *, name: str = "model",
) -> tuple[dict[str, np.ndarray], dict[str, tuple]]:
    """Per feature set, the (N, d) matrix of ``rounds``' snapshots (``name``: the community model or
    a learner's local one) side by side (one round: its own), as the seat sees them, and, if
    ``with_layout``, the matching blocks for a classifier that reads them."""
    parts: dict[str, list[np.ndarray]] = {spec: [] for spec in feature_sets}
    layouts: dict[str, tuple] = {spec: () for spec in feature_sets} if with_layout else {}
    for rnd in rounds:
        snapshot = load_snapshot(target.run_dir, rnd, name=name)
        by_release: dict[bool, list[str]] = {}
        for spec in feature_sets:
            by_release.setdefault(sees_released(threat, is_black_box(spec)), []).append(spec)
        for released, specs in by_release.items():
            basic = sorted({f for spec in specs for f in parse_features(spec, snapshot.model)})
            features = cache.get(snapshot, basic, released=released)
            for spec in specs:
                parts[spec].append(assemble(features, spec))
        if with_layout:
            for spec in feature_sets:
                layouts[spec] += feature_layout(spec, snapshot.model)
    return {spec: np.concatenate(p, axis=1) for spec, p in parts.items()}, layouts
