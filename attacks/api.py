"""The Python entry point for notebooks: :func:`audit` a run directory, get a pandas DataFrame.

>>> import attacks
>>> results = attacks.audit("runs/skewed-iid", features="error,pred+label", seats=["learner", "outsider"])
>>> results.groupby(["seat", "control", "features"])["accuracy"].mean()

Nothing here prints; progress goes to an optional callback. The commands call the same functions,
with the same defaults, so a notebook and ``python -m attacks.run`` give the same numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from attacks.membership.classifiers import CLASSIFIERS, DEFAULT_CLASSIFIER
from attacks.membership.trained import run_attacks
from attacks.signals.cache import FeatureCache
from attacks.signals.features import TABLE1, is_black_box, parse_features
from attacks.target import Target, has_local_models, is_centralized, load_snapshot, open_run, resolve_rounds
from attacks.threats.seats import SEAT_NAMES, THREATS
from attacks.threats.splits import DEFAULT_REPEATS
from fedsim.device import using_device
from fedsim.errors import FedsimError

__all__ = ["attack_run", "audit", "feature_sets", "seat_attacks"]


def feature_sets(features: str | Sequence[str], *, classifier: str = DEFAULT_CLASSIFIER, repeats: int = DEFAULT_REPEATS) -> list[str]:
    """The feature sets of ``features`` (``"table1"``, comma-separated specs or a list), once
    ``classifier`` and ``repeats`` are checked: callers that train first fail on a typo before it."""
    if repeats < 1:
        raise FedsimError(f"--repeats must be at least 1, got {repeats}")
    if classifier not in CLASSIFIERS:
        raise FedsimError(f"unknown attack classifier {classifier!r}; choose one of: {', '.join(CLASSIFIERS)}")
    if isinstance(features, str):
        sets = list(TABLE1.values()) if features == "table1" else [f.strip() for f in features.split(",")]
    else:
        sets = list(features)
    if classifier == "loss_threshold" and sets != ["error"]:
        raise FedsimError("the loss_threshold attack scores the error alone; use it with --features error")
    return sets


def attack_run(
    target: Target, *, threat: str, features: str | Sequence[str] = "table1", rounds: str = "default",
    classifier: str = DEFAULT_CLASSIFIER, repeats: int = DEFAULT_REPEATS, seed: int = 0, stack: bool = False,
    controls: bool = True, cache: FeatureCache | None = None, progress: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """One seat's attacks on the chosen rounds, with its controls: the same attack on the round-0
    (untrained) model and with age-matched non-members (``control`` column), and stacked rounds."""
    specs = feature_sets(features, classifier=classifier, repeats=repeats)
    model = load_snapshot(target.run_dir, target.rounds[0]).model
    for spec in specs:  # a typo in a layer fails before any gradient is computed
        parse_features(spec, model)
    chosen = resolve_rounds(rounds, target, centralized=threat == "centralized")
    if stack and len(set(chosen)) < 2:
        raise FedsimError(f"--stack needs at least 2 rounds to stack, got --rounds {rounds} = {chosen}")
    cache = cache or FeatureCache(target, progress=progress)
    common = dict(threat=threat, feature_sets=specs, classifier=classifier, repeats=repeats, seed=seed, cache=cache,
                  progress=progress)
    rows = run_attacks(target, rounds=chosen, **common)
    if stack:
        rows += run_attacks(target, rounds=chosen, stack=True, **common)
    if controls:
        if 0 not in chosen and threat != "controller":
            rows += [dict(r, control="round-0") for r in run_attacks(target, rounds=[0], **common)]
            if stack:  # the same stacked attack on the untrained model, as many times over
                rows += [dict(r, control="round-0") for r in run_attacks(target, rounds=[0] * len(chosen), stack=True, **common)]
        rows += run_attacks(target, rounds=chosen, age_matched=True, **common)
        if stack:
            rows += run_attacks(target, rounds=chosen, age_matched=True, stack=True, **common)
    return rows


def audit(
    run_dir: str | Path, *, features: str | Sequence[str] = "table1", seats: Sequence[str] | None = None,
    rounds: str = "default", classifier: str = DEFAULT_CLASSIFIER, repeats: int = DEFAULT_REPEATS, seed: int = 0,
    controls: bool = True, progress: Callable[[str, int, int], None] | None = None, device: str = "auto",
    families: str | Sequence[str] | None = None, budget: str = "quick",
) -> pd.DataFrame:
    """Membership attacks on a run directory from each seat: one row per attack, with a ``seat`` column.

    With ``families`` (``"membership,attribute,reconstruction"`` or a list) it is ``fedsim audit`` instead:
    every family from every seat the run supports at ``budget`` (``quick`` or ``full``), one row per attack
    with its family, question, seat, verdict and number (:func:`attacks.reporting.audit.attack_rows`); the
    skipped seats are in ``.attrs["skipped"]``. It writes the same pages (``RUN_DIR/audit/index.html``);
    ``rounds`` is then one round number (``fedsim audit --round``) or ``"default"``.

    ``seats``: threat names (:data:`attacks.threats.seats.THREATS`); by default ``centralized`` for a
    centralized run, else ``learner`` and ``outsider``, plus ``controller`` when the run kept local
    models. The outsider is given the black-box feature sets only. Features are cached on disk under
    the run directory, keyed by the snapshots' content, and shared with the commands. ``device``:
    where features are computed and classifiers trained (``auto``: CUDA when torch sees it).
    """
    with using_device(device):
        if families is not None:
            return _audit_families(run_dir, families=families, budget=budget, seed=seed, rounds=rounds,
                                   progress=progress)
        return _audit(run_dir, features=features, seats=seats, rounds=rounds, classifier=classifier,
                      repeats=repeats, seed=seed, controls=controls, progress=progress)


def _audit(
    run_dir: str | Path, *, features: str | Sequence[str], seats: Sequence[str] | None, rounds: str,
    classifier: str, repeats: int, seed: int, controls: bool, progress: Callable[[str, int, int], None] | None,
) -> pd.DataFrame:
    target = open_run(run_dir)
    centralized = is_centralized(target)
    if seats is None:
        seats = (["centralized"] if centralized else
                 ["learner", "outsider"] + (["controller"] if has_local_models(target, target.rounds[-1]) else []))
    unknown = [s for s in seats if s not in THREATS]
    if unknown:
        raise FedsimError(f"unknown seat {unknown[0]!r}; choose from: {', '.join(THREATS)}")
    if centralized and set(seats) - {"centralized"}:
        raise FedsimError("a centralized run has one seat: 'centralized'")
    if not centralized and "centralized" in seats:
        raise FedsimError("'centralized' is the seat of a centralized run; a federation has: learner, controller, outsider")
    specs = feature_sets(features, classifier=classifier, repeats=repeats)
    return seat_attacks(target, seats, specs, rounds=rounds, classifier=classifier, repeats=repeats, seed=seed,
                        controls=controls, cache=FeatureCache(target, progress=progress), progress=progress)


def seat_attacks(
    target: Target, seats: Sequence[str], specs: Sequence[str], *, rounds: str, classifier: str, repeats: int, seed: int,
    controls: bool, cache: FeatureCache, progress: Callable[[str, int, int], None] | None = None,
    say: Callable[[str], object] | None = None,
) -> pd.DataFrame:
    """:func:`attack_run` from each seat of ``seats`` (threat names), the outsider on the black-box sets of
    ``specs`` only: one row per attack with a ``seat`` column. ``say(text)`` hears each seat's feature sets."""
    frames = []
    for seat in seats:
        mine = [s for s in specs if is_black_box(s)] if seat == "outsider" else list(specs)
        if not mine:
            raise FedsimError("the outsider sees predicted ages only: give it a black-box feature set, e.g. pred+label or error")
        if say is not None:
            say(f"  {SEAT_NAMES[seat]}: {', '.join(mine)}")
        rows = attack_run(target, threat=seat, features=mine, rounds=rounds, classifier=classifier, repeats=repeats,
                          seed=seed, controls=controls, cache=cache, progress=progress)
        frames.append(pd.DataFrame(rows).assign(seat=SEAT_NAMES[seat]))
    return pd.concat(frames, ignore_index=True)


def _audit_families(run_dir: str | Path, *, families: str | Sequence[str], budget: str, seed: int, rounds: str,
                    progress: Callable[[str, int, int], None] | None) -> pd.DataFrame:
    from attacks.experiments.audit import run_audit
    from attacks.reporting.audit import write_audit

    if rounds != "default" and not re.fullmatch(r"[0-9]+", str(rounds)):
        raise FedsimError(f"the audit attacks one round: rounds='default' or one round number, got {rounds!r}")
    rnd = None if rounds == "default" else int(rounds)
    result = run_audit(run_dir, families=families, budget=budget, seed=seed, rnd=rnd, progress=progress)
    command = f"attacks.audit({str(run_dir)!r}, families={families!r}, budget={budget!r}, rounds={rounds!r})"
    rows = write_audit(result, command=command).attacks
    rows.attrs["skipped"] = [vars(s) for s in result.skipped]
    return rows
