"""Attribute inference from every seat: what a brain-age model gives away about sex or site.

Every seat answers the same binary question (:mod:`attacks.attribute.labels`) for the same victims
(:func:`attacks.threats.splits.attribute_splits`: learner A fits on its own subjects, whose attribute it
knows, and attacks learner B's subjects and the unseen ones) and differs only in what it reads:

* ``outsider``: the released predicted ages with the true age (``pred+label``) or the error;
* ``feature holder``: one layer's activations of a scan (collaborative inference: an edge device sends them);
* ``malicious learner`` (a centralized run: ``centralized adversary``): the community model's per-sample
  gradients and activations;
* ``curious controller``: the same read off each learner's local model (fit through A's, scored through B's).

Beside every number: the ``no model`` rows — the label-only baseline (age, and site when the cohort has
sites and the question is sex: what the attacker knows without the model; ART's
``AttributeInferenceBaselineTrueLabel``) and the image probe (a linear probe on the scans themselves and
their intensity and texture statistics: what the scan shows without any model) — and the ``round-0``
control: the same attack on the untrained model, whose random convolutions already see head size and a
scanner's texture (often better than the image probe: it is the strongest model-free reading of a scan here). An attack that does not beat the label-only baseline has found
nothing; one that does not beat round 0 found what any network sees, not what training put there.
Every model-based attack also reads what the label-only baseline reads (the attacker knows it anyway),
so its gain over the baseline is what the model adds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from attacks.attribute.labels import Question
from attacks.attribute.names import ADVERSARY, COMPONENTS, CONTROLLER, DEFAULT_CLASSIFIER, HOLDER, LEARNER, OUTSIDER
from attacks.engine import Task, run_plan, tasks
from attacks.membership.classifiers import attack_scores, classifier_parameters
from attacks.membership.trained import ClassifierAttack
from attacks.signals.cache import FeatureCache, Progress
from attacks.signals.features import is_black_box, parse_features, assemble
from attacks.signals.layout import Block, feature_layout
from attacks.target import Snapshot, Target, attacked_round, is_centralized, load_snapshot, missing_local_models
from attacks.threats.seats import SkippedPairsWarning
from attacks.threats.splits import DEFAULT_REPEATS, attribute_splits
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError
from fedsim.models import layer_parameters

__all__ = [
    "ADVERSARY", "CONTROLLER", "DEFAULT_CLASSIFIER", "HOLDER", "LEARNER", "NO_MODEL", "OUTSIDER", "SEATS",
    "attribute_attacks", "default_feature_sets", "known_columns", "seats_of",
]

NO_MODEL = "no model"
#: Report order of the seats.
SEATS = (NO_MODEL, OUTSIDER, HOLDER, LEARNER, ADVERSARY, CONTROLLER)
LABEL_ONLY, IMAGE = "label only", "image"
IMAGE_POOL = 2  # the image probe reads the scan averaged over 2×2×2 blocks
_CS = np.logspace(-3, 2, 6)  # the probe's inverse regularisation strengths, chosen by 3-fold cross-validation
KNOWN_WEIGHT = 10.0
#: the image probe also reads each scan's intensity histogram (over these z-score bins: contrast and the
#: scanner's non-linearity) and its mean absolute first differences and Laplacian (noise and smoothness)
HISTOGRAM_BINS = np.linspace(-3.0, 4.0, 33)
IMAGE_STATS = len(HISTOGRAM_BINS) - 1 + 4
MIN_PER_CLASS = 2  # an AUC needs both classes; fewer than this per class in a fit or a test set: skipped


def seats_of(target: Target, rnd: int) -> list[str]:
    """The seats that can attack round ``rnd`` of this run (the controller where local models exist)."""
    if is_centralized(target):
        return [OUTSIDER, HOLDER, ADVERSARY]
    return [OUTSIDER, HOLDER, LEARNER, *([] if missing_local_models(target, rnd) else [CONTROLLER])]


def default_feature_sets(model: Any) -> dict[str, list[str]]:
    """Each seat's feature sets unless told otherwise: the outsider's black-box pair, every conv layer's
    activations for the feature holder, the white-box gradients of the membership family's best rows."""
    convs = [layer for layer in layer_parameters(model) if layer.startswith("conv")]
    white = ["grad:output", f"grad:{convs[-1]}+grad:output"]
    return {OUTSIDER: ["pred+label", "error"], HOLDER: [f"activation:{layer}" for layer in convs],
            LEARNER: white, ADVERSARY: white, CONTROLLER: ["pred+label", f"activation:{convs[-1]}", *white[1:]]}


def _readable(seat: str, spec: str) -> bool:
    """Whether ``seat`` can compute the feature set ``spec``."""
    if seat == OUTSIDER:
        return is_black_box(spec)
    if seat == HOLDER:
        return all(part.startswith("activation:") for part in spec.split("+"))
    return True


@dataclass(frozen=True)
class Probe:
    """An :class:`attacks.engine.Attack`: cross-validated logistic regression on a seat's features, the
    last ``known`` columns (what the baseline reads) kept as they are and the others, when wider than
    :data:`COMPONENTS`, reduced to their leading principal components and penalised as usual, while the
    known columns are almost unpenalised (:func:`_weighted`) — so a wide gradient or activation set cannot
    drown the few columns the attacker knew anyway: the probe does no worse than the baseline for want of
    regularisation. The image probe is the same probe on the block-averaged scans with their intensity and
    texture statistics in the known slot, penalised like the rest (``known_weight`` 1)."""

    name: str
    known: int = 0
    seed: int = 0
    known_weight: float = KNOWN_WEIGHT

    def fit(self, X: np.ndarray, y: np.ndarray, *, repeat: int) -> Any:
        width = X.shape[1] - self.known
        wide = width > COMPONENTS
        reduce = (make_pipeline(StandardScaler(), PCA(max(1, min(COMPONENTS, len(X) - 1)), random_state=self.seed + repeat))
                  if wide else StandardScaler())
        columns = ColumnTransformer([("features", reduce, slice(0, width)),
                                     *([("known", make_pipeline(StandardScaler(), FunctionTransformer(
                                         _weighted, kw_args={"weight": self.known_weight})),
                                         slice(width, X.shape[1]))] if self.known else [])])
        folds = max(2, min(3, int(np.bincount(y).min())))
        model = LogisticRegressionCV(Cs=_CS, cv=StratifiedKFold(folds, shuffle=True, random_state=self.seed + repeat),
                                     scoring="roc_auc", max_iter=2000, l1_ratios=(0.0,), use_legacy_attributes=False)
        return make_pipeline(columns, model).fit(X, y)

    def score(self, fitted: Any, X: np.ndarray) -> tuple[np.ndarray, float]:
        return attack_scores(fitted, X)


def _image_stats(v: np.ndarray) -> np.ndarray:
    """(B, IMAGE_STATS): each scan's intensity histogram (fractions of voxels), mean absolute first difference
    along each axis and mean absolute Laplacian."""
    hist = np.stack([np.histogram(x, bins=HISTOGRAM_BINS)[0] / x.size for x in v])
    diffs = [np.abs(np.diff(v, axis=k)).mean(axis=(1, 2, 3)) for k in (1, 2, 3)]
    laplacian = np.abs(sum(np.roll(v, s, axis=k) for k in (1, 2, 3) for s in (1, -1)) - 6 * v).mean(axis=(1, 2, 3))
    return np.concatenate([hist, np.stack([*diffs, laplacian], axis=1)], axis=1)


def _image_matrix(target: Target, chunk: int = 64) -> np.ndarray:
    """Every scan averaged over ``IMAGE_POOL``-cubed blocks, then its :func:`_image_stats`, one row per subject
    (cohort order)."""
    volumes = target.cohort.volumes
    n = len(volumes)
    parts = []
    for start in range(0, n, chunk):
        v = np.asarray(volumes[start:start + chunk], dtype=np.float32).reshape(min(chunk, n - start), *volumes.shape[-3:])
        d, h, w = (s // IMAGE_POOL * IMAGE_POOL for s in v.shape[1:])
        pooled = v[:, :d, :h, :w].reshape(len(v), d // IMAGE_POOL, IMAGE_POOL, h // IMAGE_POOL, IMAGE_POOL,
                                          w // IMAGE_POOL, IMAGE_POOL).mean(axis=(2, 4, 6))
        parts.append(np.concatenate([pooled.reshape(len(v), -1), _image_stats(v)], axis=1))
    return np.concatenate(parts)


def known_columns(target: Target, question: Question) -> np.ndarray:
    """What the attacker knows without the model: the age and, for a question other than site on a cohort
    with sites, the site (one column per site)."""
    columns = [np.asarray(target.cohort.ages, dtype=np.float32)[:, None]]
    manifest = target.manifest
    if question.attribute != "site" and manifest is not None and "site" in manifest.columns:
        site = manifest.set_index("subject_id")["site"].astype(str).reindex(target.cohort.subject_ids)
        if site.nunique() > 1:
            columns.append(pd.get_dummies(site).to_numpy(dtype=np.float32))
    return np.concatenate(columns, axis=1)


def _weighted(known: np.ndarray, weight: float) -> np.ndarray:
    """The known columns scaled up ``weight``-fold (:data:`KNOWN_WEIGHT`): their L2 penalty shrinks by its square,
    so the regularisation that tames a wide feature set barely touches what the baseline reads."""
    return known * weight


def _attack(spec: str, classifier: str, seed: int, known: int = 0, layout: Any = None) -> Any:
    """The attack on feature set ``spec``: the :class:`Probe`, or a membership-family classifier by name."""
    if classifier == DEFAULT_CLASSIFIER:
        return Probe(spec, known, seed)
    return ClassifierAttack(spec, spec, classifier, seed, layout)


def _usable(plan: list[Task], say_skipped: list[str]) -> list[Task]:
    """The tasks whose fit and test sets both hold :data:`MIN_PER_CLASS` of each class."""
    keep = []
    for task in plan:
        counts = [np.bincount(y, minlength=2) for y in (task.split.train()[1], task.split.test()[1])]
        if min(c.min() for c in counts) >= MIN_PER_CLASS:
            keep.append(task)
        else:
            say_skipped.append(f"{task.attacker}→{task.victim}")
    return keep


def attribute_attacks(
    target: Target, question: Question, *, rnd: int, seats: Sequence[str] | None = None,
    feature_sets: Sequence[str] | None = None, classifier: str = DEFAULT_CLASSIFIER, repeats: int = DEFAULT_REPEATS,
    seed: int = 0, controls: bool = True, cache: FeatureCache | None = None, progress: Progress | None = None,
) -> pd.DataFrame:
    """Every seat's attack on ``question`` at round ``rnd``, its round-0 control and the model-free rows.

    ``seats`` (default: :func:`seats_of`) and ``feature_sets`` (default: :func:`default_feature_sets`; given,
    each seat runs those it can read) choose the attacks; ``controls=False`` leaves out round 0 and the
    image probe (a sweep). One row per (seat, feature set, control, attacker, victim, repeat).
    """
    available = seats_of(target, rnd)
    seats = list(available if seats is None else seats)
    unknown = [s for s in seats if s not in available]
    if unknown:
        raise FedsimError(f"seat {unknown[0]!r} cannot attack round {rnd} of this run; seats here: {', '.join(available)}"
                          + ("" if CONTROLLER in available or is_centralized(target) else
                             " (the curious controller needs a run made with --snapshot-local)"))
    attacked_round(target, rnd, first=1)
    cache = cache or FeatureCache(target, progress=progress)
    community = load_snapshot(target.run_dir, rnd)
    defaults = default_feature_sets(community.model)
    for spec in feature_sets or ():
        parse_features(spec, community.model)
    specs = {seat: [s for s in (feature_sets or defaults[seat]) if _readable(seat, s)] for seat in seats}
    empty = [seat for seat, s in specs.items() if not s]
    if empty:
        raise FedsimError(f"no feature set of --features can be read by the {empty[0]}"
                          + (" (it sees predicted ages only, e.g. pred+label)" if empty[0] == OUTSIDER else
                             " (it holds activations only, e.g. activation:conv1)" if empty[0] == HOLDER else ""))
    skipped: list[str] = []
    plan = _usable(tasks(attribute_splits(target.partitions, question.labels, repeats=repeats, seed=seed)), skipped)
    if not plan:
        raise FedsimError(f"too few subjects of each class to attack {question.name}: every split has fewer than "
                          f"{MIN_PER_CLASS} of one class ({', '.join(skipped[:3])}…); in a federation by "
                          f"{question.attribute} each learner holds one value and cannot fit on its own subjects")
    if skipped:
        warnings.warn(f"{question.name}: {len(skipped)} attacker/victim pairs skipped (fewer than {MIN_PER_CLASS} "
                      f"subjects of one class): {', '.join(skipped)}", SkippedPairsWarning, stacklevel=2)
    row_of = {sid: i for i, sid in enumerate(target.cohort.subject_ids)}
    learners = learner_groups(target.partitions["group"])
    report = None if progress is None else (lambda done, total: progress(f"fitting attacks on {question.name}", done, total))
    base = {"attribute": question.name, "round": rnd, "classifier": classifier}

    known = known_columns(target, question)

    def fit_all(attacks: Sequence[Any], matrix: Callable[[str, Task], np.ndarray], columns: dict[str, Any],
                sees: Callable[[str], str] = lambda party: "model", with_known: bool = True) -> list[dict[str, Any]]:
        def view(attack: Any, model: str, rows: np.ndarray, task: Task) -> np.ndarray:
            X = matrix(model, task)[attack.name][rows]
            return np.concatenate([X, known[rows]], axis=1) if with_known else X
        return run_plan(plan, attacks, view, row_of=row_of, sees=sees, columns={**base, **columns}, progress=report)

    rows: list[dict[str, Any]] = []
    free = {LABEL_ONLY: known}
    free_attacks: list[Any] = [_attack(LABEL_ONLY, classifier, seed)]
    if controls:
        free[IMAGE] = _image_matrix(target)
        free_attacks.append(Probe(IMAGE, known=IMAGE_STATS, seed=seed, known_weight=1.0))
    rows += fit_all(free_attacks, lambda model, task: free, {"seat": NO_MODEL, "control": "none"}, with_known=False)
    takes_layout = classifier != DEFAULT_CLASSIFIER and "layout" in classifier_parameters(classifier)
    models: dict[tuple[str, int, bool, tuple[str, ...]], dict[str, np.ndarray]] = {}

    def features(name: str, at: int, released: bool, seat_specs: Sequence[str]) -> dict[str, np.ndarray]:
        key = (name, at, released, tuple(seat_specs))
        if key not in models:
            snapshot: Snapshot = community if (name, at) == ("model", rnd) else load_snapshot(target.run_dir, at, name=name)
            basic = sorted({f for spec in seat_specs for f in parse_features(spec, snapshot.model)})
            found = cache.get(snapshot, basic, released=released)
            models[key] = {spec: assemble(found, spec) for spec in seat_specs}
        return models[key]

    for seat in seats:
        seat_specs = specs[seat]
        released = seat == OUTSIDER
        attacks = [_attack(spec, classifier, seed, known.shape[1], (*feature_layout(spec, community.model),
                           Block("known", known.shape[1])) if takes_layout else None) for spec in seat_specs]
        for control, at in [("none", rnd), *([("round-0", 0)] if controls else [])]:
            if seat == CONTROLLER and at > 0:
                # fit through the attacker's local model, score a victim learner through its own, unseen ones through the attacker's
                def matrix(model: str, task: Task, at: int = at) -> dict[str, np.ndarray]:
                    return features(task.attacker if model == "unseen" else model, at, released, seat_specs)
                rows += fit_all(attacks, matrix, {"seat": seat, "control": control},
                                sees=lambda party: party if party in learners or party == "unseen" else "model")
            else:
                rows += fit_all(attacks, lambda model, task, at=at: features("model", at, released, seat_specs),
                                {"seat": seat, "control": control})
    frame = pd.DataFrame(rows)
    frame.insert(0, "victims", np.where(frame["victim"] == "unseen", "non-members", "members"))
    return frame
