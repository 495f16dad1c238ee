"""Run membership-inference attacks on a run directory's snapshots: one row per attack.

A threat model is a list of (attacker, victim, split) triples from :mod:`attacks.splits`; this
module turns each into features of a snapshot (cached per run, round and feature, so a second
classifier or feature combination never recomputes a gradient), fits an attack classifier on
the attack-train set and scores the attack-test set with :mod:`attacks.metrics`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attacks.classifiers import attack_scores, classifier_parameters, make_classifier
from attacks.features import Snapshot, assemble, compute_features, feature_layout, load_snapshot, parse_features
from attacks.metrics import attack_metrics, flat_metrics
from attacks.splits import AttackSplit, centralized_splits, learner_splits
from fedsim import snapshots
from fedsim.data.cache import CohortArray, build_cache
from fedsim.data.manifest import load_manifest
from fedsim.data.partition import learner_groups, read_partitions
from fedsim.errors import FedsimError

THREATS = ("centralized", "learner", "controller")


class SkippedPairsWarning(UserWarning):
    """Some attacker/victim pairs had too few subjects to attack; the others were attacked."""


@contextlib.contextmanager
def skipped_pairs_said(say: Callable[[str], object]) -> Iterator[None]:
    """Collect the :class:`SkippedPairsWarning` of the attacks run inside and ``say`` each distinct
    one once, after them (one line per cause, not Python's warning output per call); other warnings pass on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedPairsWarning)
        yield
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, SkippedPairsWarning)):
        say(message)
    for w in caught:
        if not issubclass(w.category, SkippedPairsWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@dataclass(frozen=True)
class Target:
    """What an attack needs from a run directory: its cohort, partitions and snapshots."""

    run_dir: Path
    cohort: CohortArray
    partitions: pd.DataFrame
    rounds: list[int]
    best_round: int | None


def open_run(run_dir: str | Path) -> Target:
    """Load a run directory's cohort cache, partitions and list of snapshots; clear errors if not one."""
    run_dir = Path(run_dir)
    config = snapshots.read_config(run_dir)
    rounds = snapshots.complete_rounds(run_dir)
    if not rounds:
        raise FedsimError(f"run {str(run_dir)!r} has no snapshots under {snapshots.ROUNDS_DIR}/")
    manifest = config.get("cohort", {}).get("manifest")
    if manifest is None:
        raise FedsimError(f"{str(run_dir)!r}: config.toml does not record the cohort manifest")
    cohort = build_cache(load_manifest(manifest), tuple(config["data"]["shape"]))
    partitions = read_partitions(run_dir / snapshots.PARTITIONS_FILE)
    done = snapshots.read_done(run_dir) if snapshots.is_done(run_dir) else {}
    return Target(run_dir, cohort, partitions, rounds, done.get("best_round"))


def _save_npy(path: str, values: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, values)


class FeatureCache:
    """Basic features of every subject of a run, per (model name, round, feature), on disk.

    Files: ``<run>/attacks/features/<name>-r<round>/<feature>.npy``, rows in cohort order.
    """

    def __init__(self, target: Target, *, method: str = "auto") -> None:
        self.target = target
        self.method = method
        self.root = target.run_dir / "attacks" / "features"

    def get(self, snapshot: Snapshot, name: str, basic: Sequence[str]) -> dict[str, np.ndarray]:
        folder = self.root / f"{name}-r{snapshot.round:04d}"
        missing = [f for f in basic if not (folder / f"{f.replace(':', '_')}.npy").is_file()]
        if missing:
            fresh = compute_features(snapshot.model, self.target.cohort, missing, loss=snapshot.loss, method=self.method,
                                     release=snapshot.release)
            folder.mkdir(parents=True, exist_ok=True)
            for feature, values in fresh.items():
                path = folder / f"{feature.replace(':', '_')}.npy"
                snapshots.atomic_write(path, lambda tmp, v=values: _save_npy(tmp, v))
        return {f: np.load(folder / f"{f.replace(':', '_')}.npy") for f in basic}


def plan(threat: str, partitions: pd.DataFrame, *, repeats: int, seed: int, age_matched: bool) -> Iterator[tuple[str, str, AttackSplit]]:
    """(attacker, victim, split) triples of a threat model, every repeat."""
    if seed < 0:
        raise FedsimError(f"--seed must be a non-negative integer, got {seed}")
    if threat == "centralized":
        for split in centralized_splits(partitions, repeats=repeats, seed=seed, age_matched=age_matched):
            yield "adversary", "centralized", split
        return
    if threat not in THREATS:
        raise FedsimError(f"unknown threat {threat!r}; choose one of: {', '.join(THREATS)}")
    # The curious controller gets the malicious learner's side knowledge (A's subjects vs unseen) and
    # attacks the same victims: the two seats differ only in the models they see.
    learners = learner_groups(partitions["group"])
    if len(learners) < 2:
        seat = "malicious-learner" if threat == "learner" else "curious-controller"
        raise FedsimError(f"the {seat} threat needs a federated run with at least 2 learners")
    skipped = []
    for attacker in learners:
        for victim in learners:
            if attacker == victim:
                continue
            try:
                splits = learner_splits(partitions, attacker, victim, repeats=repeats, seed=seed, age_matched=age_matched)
            except FedsimError as e:  # e.g. too few age-matched non-members for one small learner
                skipped.append(f"{attacker}→{victim}: {e}")
                continue
            for split in splits:
                yield attacker, victim, split
    if skipped:
        if len(skipped) == len(learners) * (len(learners) - 1):
            raise FedsimError(f"no attacker/victim pair can be attacked; {skipped[0]}")
        warnings.warn(f"{len(skipped)} attacker/victim pairs skipped: " + "; ".join(skipped), SkippedPairsWarning, stacklevel=2)


def run_attacks(
    target: Target,
    *,
    threat: str,
    rounds: Sequence[int],
    feature_sets: Sequence[str],
    classifier: str = "mlp",
    repeats: int = 5,
    seed: int = 0,
    age_matched: bool = False,
    stack: bool = False,
    cache: FeatureCache | None = None,
) -> list[dict[str, Any]]:
    """Every attack of a threat model on every round and feature set; one dict per attack.

    With ``stack`` the rounds make one attack instead: each subject's features of every round side
    by side (its trajectory over training), reported at the last round as ``"<spec> stacked"``
    with the rounds in ``stacked_rounds``.

    The ``controller`` threat sees every learner's local model of a round (a run made with
    ``snapshot_local``): it fits the attack on attacker A's local model and A's subjects, as a
    shadow model, and scores victim B's subjects on B's own local model.
    """
    cache = cache or FeatureCache(target)
    triples = list(plan(threat, target.partitions, repeats=repeats, seed=seed, age_matched=age_matched))
    row_of = {sid: i for i, sid in enumerate(target.cohort.subject_ids)}
    takes_layout = "layout" in classifier_parameters(classifier)  # only then is a layout worth a forward pass
    local = threat == "controller"
    if local and 0 in rounds:
        raise FedsimError("round 0 has no local models: the curious controller attacks rounds 1 and later")
    models = learner_groups(target.partitions["group"]) if local else ["model"]
    rows: list[dict[str, Any]] = []
    for group in [list(rounds)] if stack else [[rnd] for rnd in rounds]:
        by_model = {name: _round_features(target, cache, group, feature_sets, takes_layout, name=name) for name in models}
        layouts = by_model[models[0]][1]
        rnd, extra = group[-1], ({"stacked_rounds": ",".join(map(str, group))} if stack else {})
        repeat_of: dict[tuple[str, str], int] = {}
        # An attacker's attack-train set (and model) does not depend on the victim: fit once, attack all.
        fitted: dict[tuple[str, str, int, bytes], Any] = {}
        for attacker, victim, split in triples:
            repeat = repeat_of[(attacker, victim)] = repeat_of.get((attacker, victim), -1) + 1
            (train_ids, y_train), (test_ids, y_test) = split.train(), split.test()
            train_rows = np.array([row_of[s] for s in train_ids])
            test_rows = np.array([row_of[s] for s in test_ids])
            seen_by = {"train": attacker if local else "model", "test": victim if local else "model"}
            for spec in feature_sets:
                key = (seen_by["train"], spec, repeat, train_rows.tobytes() + y_train.tobytes())
                if key not in fitted:
                    clf = make_classifier(classifier, random_state=seed + repeat, layout=layouts.get(spec))
                    fitted[key] = clf.fit(by_model[seen_by["train"]][0][spec][train_rows], y_train)
                model = fitted[key]
                scores, threshold = attack_scores(model, by_model[seen_by["test"]][0][spec][test_rows])
                rows.append({
                    "threat": threat, "attacker": attacker, "victim": victim, "round": rnd,
                    "features": f"{spec} stacked" if stack else spec, **extra, "classifier": classifier, "repeat": repeat,
                    "control": "age-matched" if age_matched else "none",
                    "n_train": len(train_ids),
                    **flat_metrics(attack_metrics(y_test, scores, threshold=threshold)),
                })
    return rows


def _round_features(
    target: Target, cache: FeatureCache, rounds: Sequence[int], feature_sets: Sequence[str], with_layout: bool,
    *, name: str = "model",
) -> tuple[dict[str, np.ndarray], dict[str, tuple]]:
    """Per feature set, the (N, d) matrix of ``rounds``' snapshots (``name``: the community model or
    a learner's local one) side by side (one round: its own), and, if ``with_layout``, the matching
    blocks for a classifier that reads them."""
    parts: dict[str, list[np.ndarray]] = {spec: [] for spec in feature_sets}
    layouts: dict[str, tuple] = {spec: () for spec in feature_sets} if with_layout else {}
    for rnd in rounds:
        snapshot = load_snapshot(target.run_dir, rnd, name=name)
        basic = sorted({f for spec in feature_sets for f in parse_features(spec, snapshot.model)})
        features = cache.get(snapshot, name, basic)
        for spec in feature_sets:
            parts[spec].append(assemble(features, spec))
            if with_layout:
                layouts[spec] += feature_layout(spec, snapshot.model)
    return {spec: np.concatenate(p, axis=1) for spec, p in parts.items()}, layouts
