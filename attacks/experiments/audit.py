"""The audit: every attack family and seat a run supports, in one call, and a line for each it skipped.

:func:`run_audit` opens the target once, asks each family what the run supports (a centralized run has one
seat; the curious controller needs local models; the attribute family needs the attribute in the manifest;
gradient inversion needs a learner's update), runs it at a :class:`Budget`, and returns every family's rows
and the skips. It adds no attack logic of its own: membership is :func:`attacks.api.attack_run` from every
seat with its controls plus the calibrated attacks (the malicious learner's with reference models that replay
the federation, :mod:`attacks.membership.learner_calibrated`) and the malicious learner's error over every round
(:mod:`attacks.membership.trajectory`) — and, on a run trained with ``[attack] active``, the simulated active
learner's loss-drop test (:mod:`attacks.membership.active`), and the empirical lower bounds on ε beside the
accountant's (:mod:`attacks.evaluation.epsilon`: the strongest membership attack's; at ``--budget full`` the one-run
canary audit, :mod:`attacks.membership.canaries`) — attribute is :func:`attacks.attribute.inference.attribute_attacks`,
reconstruction is :mod:`attacks.reconstruction.run` and :mod:`attacks.reconstruction.tasks`.
:mod:`attacks.reporting.audit` writes the pages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.errors import FedsimError

if TYPE_CHECKING:  # the command's --help reads FAMILIES and BUDGETS: this module imports nothing heavy until it runs
    import pandas as pd

    from attacks.signals.cache import FeatureCache
    from attacks.target import Target

__all__ = ["BUDGETS", "FAMILIES", "AuditResult", "Budget", "Skip", "parse_families", "run_audit"]

FAMILIES = ("membership", "attribute", "reconstruction")


@dataclass(frozen=True)
class Budget:
    """How hard each family tries: the feature sets, classifier and repeats of membership attacks (attribute attacks
    take the repeats), the
    calibrated attacks' reference models (0: none trained), the scans each reconstruction inverts and whether
    gradient inversion (the costly one: every scan of a learner's update, its local steps replayed) and the
    malicious learner's attack on the error over every round (a forward pass per round and subject) and the one-run
    canary audit of ε (one more training run) run."""

    name: str
    features: str
    repeats: int
    references: int
    classifier: str = "auto"
    attributes: tuple[str, ...] = ("sex", "site")
    scans: int = 4
    layers: tuple[str, ...] | None = None  # feature inversion's layers (None: every conv layer)
    gradient: bool = False
    trajectory: bool = False
    canaries: bool = False
    why_not: dict[str, str] = field(default_factory=dict)


BUDGETS = {
    "quick": Budget(
        "quick", features="error,pred+label,grad_norm", repeats=1, references=0, layers=("conv1",),
        classifier="auto-quick",
        why_not={"calibrated": "trains reference models (--budget full: 8)",
                 "layers": "feature inversion of the deeper conv layers (--budget full: every conv layer)",
                 "gradient": "inverts every scan of a learner's update with its local steps replayed (--budget full)",
                 "trajectory": "a forward pass of every subject through each round's community model (--budget full)",
                 "canaries": "trains one more model, with canaries, as the run trained (--canaries, or --budget full)"}),
    "full": Budget("full", features="table1", repeats=3, references=8, scans=8, gradient=True, trajectory=True,
                   canaries=True),
}


@dataclass(frozen=True)
class Skip:
    """A family or seat the audit did not run, and why — in the report, so no silence reads as a verdict."""

    family: str
    seat: str
    why: str


@dataclass
class AuditResult:
    """Each family's rows (``None``: not run), the skips, the seconds each family took and the budget."""

    run_dir: Path
    budget: Budget
    round: int
    membership: pd.DataFrame | None = None
    calibrated: pd.DataFrame | None = None
    calibrated_scores: pd.DataFrame | None = None
    attribute: pd.DataFrame | None = None
    properties: pd.DataFrame | None = None
    reconstruction: list[dict[str, Any]] = field(default_factory=list)
    examples: list[Any] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    active: list[dict[str, Any]] = field(default_factory=list)  # the active learner's update norms, per round
    epsilon: dict[str, Any] | None = None  # the accountant's ε beside the empirical lower bounds (_epsilon)
    seconds: dict[str, float] = field(default_factory=dict)


def parse_families(families: str | Sequence[str]) -> list[str]:
    """Family names from ``"membership,attribute"`` or a list; an unknown one is a one-line error."""
    names = [f.strip() for f in families.split(",")] if isinstance(families, str) else list(families)
    names = [f for f in names if f]
    bad = [f for f in names if f not in FAMILIES]
    if bad or not names:
        raise FedsimError(f"unknown attack family {bad[0]!r}; choose from: {', '.join(FAMILIES)}" if bad else
                          f"no attack family given; choose from: {', '.join(FAMILIES)}")
    return list(dict.fromkeys(names))


def run_audit(
    run_dir: str | Path, *, families: str | Sequence[str] = FAMILIES, budget: str | Budget = "quick", seed: int = 0,
    rnd: int | None = None, canaries: bool = False, progress: Callable[[str, int, int], None] | None = None,
    say: Callable[[str], object] | None = None,
) -> AuditResult:
    """Every family of ``families`` from every seat the run supports, at ``budget`` (``quick`` or ``full``).

    ``rnd``: the round attacked (default: a centralized run's best epoch, else the last round); a federation's
    early rounds say when it starts to leak. ``canaries``: the one-run canary audit of ε at any budget (a DP run's
    owner checking its ε without the full budget's reference models).

    ``say(text)`` hears each step (the command prints it); ``progress(description, done, total)`` the long ones.
    """
    chosen = parse_families(families)
    if canaries and "membership" not in chosen:
        raise FedsimError("--canaries audits ε beside the membership attacks: add membership to --families")
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise FedsimError(f"unknown --budget {budget!r}; choose from: {', '.join(BUDGETS)}")
        budget = BUDGETS[budget]
    if canaries and not budget.canaries:
        budget = replace(budget, canaries=True, why_not={k: v for k, v in budget.why_not.items()
                                                                     if k != "canaries"})
    from attacks.target import attacked_round, has_local_models, is_centralized, open_run, resolve_rounds

    say = say or (lambda text: None)
    target = open_run(run_dir)
    centralized = is_centralized(target)
    rnd = (resolve_rounds("default", target, centralized=centralized)[-1] if rnd is None else
           attacked_round(target, rnd, first=1))
    result = AuditResult(Path(run_dir), budget, rnd)
    local = not centralized and has_local_models(target, rnd)
    if not centralized and not local:
        result.skipped.append(Skip("every family", "curious controller",
                                   "the run kept no local models; train with --snapshot-local"))
    steps = {"membership": _membership, "attribute": _attribute, "reconstruction": _reconstruction}
    for family in chosen:
        say(f"[bold]{family}[/]")
        start = time.perf_counter()
        steps[family](target, result, centralized=centralized, local=local, seed=seed, progress=progress, say=say)
        result.seconds[family] = time.perf_counter() - start
    if "membership" in chosen:
        start = time.perf_counter()
        _epsilon(target, result, seed=seed, say=say)
        result.seconds["ε"] = time.perf_counter() - start
    return result


def _membership(target: Target, result: AuditResult, *, centralized: bool, local: bool, seed: int,
                progress: Callable[[str, int, int], None] | None, say: Callable[[str], object]) -> None:
    from attacks.api import feature_sets, seat_attacks
    from attacks.membership.calibrated import run_calibrated
    from attacks.membership.seats import MIN_CALIBRATION_LEARNERS, controller_calibrated
    from attacks.signals.cache import FeatureCache
    from attacks.threats.seats import SEAT_NAMES
    from fedsim.data.partition import learner_groups

    import pandas as pd

    budget, cache = result.budget, FeatureCache(target, progress=progress)
    seats = ["centralized"] if centralized else ["learner", "outsider"] + (["controller"] if local else [])
    specs = feature_sets(budget.features, classifier=budget.classifier, repeats=budget.repeats)
    result.membership = seat_attacks(target, seats, specs, rounds=str(result.round), classifier=budget.classifier,
                                     repeats=budget.repeats, seed=seed, controls=True, cache=cache, progress=progress,
                                     say=say)
    if not centralized:
        _trajectory(target, result, seed=seed, cache=cache, progress=progress, say=say)
        _learner_calibrated(target, result, seed=seed, cache=cache, progress=progress, say=say, local=local)
        _active(target, result, cache=cache, say=say)
    if centralized:
        if budget.references < 2:
            result.skipped.append(Skip("membership", "centralized adversary",
                                       f"calibrated attacks (LiRA, RMIA): {budget.why_not.get('calibrated', '')}"))
            return
        say(f"  calibrated: {budget.references} reference models")
        try:
            rows, scores, _ = run_calibrated(target, references=budget.references, seed=seed, target_round=result.round,
                                             progress=None if progress is None else
                                             (lambda done, total: progress("reference models", done, total)))
        except FedsimError as err:  # e.g. an imported model, which fedsim cannot train again
            result.skipped.append(Skip("membership", "centralized adversary", f"calibrated attacks (LiRA, RMIA): {err}"))
            return
        result.calibrated, result.calibrated_scores = pd.DataFrame(rows), scores
    elif local:
        if len(learner_groups(target.partitions["group"])) < MIN_CALIBRATION_LEARNERS:
            result.skipped.append(Skip("membership", SEAT_NAMES["controller"], "calibrated attacks need "
                                       f"{MIN_CALIBRATION_LEARNERS} learners (2 other local models as references)"))
            return
        say("  curious controller, calibrated by the other local models")
        rows = [r for matched in (False, True) for r in controller_calibrated(
            target, rnd=result.round, repeats=budget.repeats, seed=seed, age_matched=matched, cache=cache)]
        result.calibrated = pd.concat([result.calibrated, pd.DataFrame(rows).assign(seat=SEAT_NAMES["controller"])],
                                      ignore_index=True)  # after the malicious learner's, where they ran


def _epsilon(target: Target, result: AuditResult, *, seed: int, say: Callable[[str], object]) -> None:
    """Is the reported ε honest? The accountant's ε of the audited round (∞ without DP) beside two empirical lower
    bounds: the strongest membership attack's and, at ``--budget full`` or with ``--canaries``, the one-run canary
    audit's."""
    from attacks.evaluation.epsilon import attacks_epsilon
    from attacks.membership.canaries import canary_audit
    from fedsim import snapshots
    from fedsim.defenses import defense_of

    import pandas as pd

    defense = defense_of(snapshots.read_config(target.run_dir))
    metrics = next((m for m in snapshots.read_metrics(target.run_dir) if m.get("round") == result.round), {})
    learners = snapshots.dp_sgd_epsilons(metrics)
    frames = [f for f in (result.membership, result.calibrated) if f is not None and not f.empty]
    result.epsilon = {
        "round": result.round, "delta": defense.dp_delta,
        "dp_sgd": max(learners) if learners else None, "dp_sgd_accountants": len(learners),
        "central": metrics.get("central_epsilon"),
        "attack": attacks_epsilon(pd.concat(frames, ignore_index=True), rnd=result.round, delta=defense.dp_delta)
        if frames else None, "canaries": None}
    if result.epsilon["dp_sgd"] is None and result.epsilon["central"] is None:
        result.skipped.append(Skip("membership", "ε audit", "the one-run canary audit: the run has no DP accountant "
                                   "whose ε it could check (without DP the guarantee is ε = ∞)"))
        return
    if not result.budget.canaries:
        result.skipped.append(Skip("membership", "ε audit", f"the one-run canary audit at --budget "
                                   f"{result.budget.name}: {result.budget.why_not.get('canaries', '')}"))
        return
    say("  ε: the one-run canary audit (one model trained with canaries)")
    try:
        result.epsilon["canaries"] = canary_audit(target, rnd=result.round, seed=seed).as_dict()
    except FedsimError as err:
        result.skipped.append(Skip("membership", "ε audit", f"the one-run canary audit: {err}"))


def _trajectory(target: Target, result: AuditResult, *, seed: int, cache: FeatureCache,
                progress: Callable[[str, int, int], None] | None, say: Callable[[str], object]) -> None:
    """The malicious learner's attack on the error over rounds 1..R, its rows beside the seat's single-round ones."""
    from attacks.membership.trajectory import trajectory_attacks, trajectory_name
    from attacks.threats.seats import SEAT_NAMES

    import pandas as pd

    budget, seat = result.budget, SEAT_NAMES["learner"]
    rounds = [r for r in target.rounds if 1 <= r <= result.round]
    if not budget.trajectory:
        result.skipped.append(Skip("membership", seat, f"the error over rounds 1–{result.round} at --budget "
                                   f"{budget.name}: {budget.why_not['trajectory']}"))
        return
    if len(rounds) < 2:
        result.skipped.append(Skip("membership", seat, f"the error over rounds: round {result.round} is the first "
                                   "trained round, so there is no trajectory (audit a later --round)"))
        return
    say(f"  {seat}: {trajectory_name(rounds)}")
    rows = trajectory_attacks(target, rnd=result.round, classifier=budget.classifier, repeats=budget.repeats,
                              seed=seed, cache=cache, progress=progress)
    result.membership = pd.concat([result.membership, pd.DataFrame(rows).assign(seat=seat)], ignore_index=True)


def _active(target: Target, result: AuditResult, *, cache: FeatureCache, say: Callable[[str], object]) -> None:
    """On a run trained with ``[attack] active``: the active learner's test among the seat's attacks (judged with
    them), and what a controller sees of it (every round's update norms)."""
    from attacks.membership.active import active_name, audit_rows, defense_view
    from attacks.threats.seats import SEAT_NAMES
    from fedsim.federation.malicious import ATTACK_FILE, read_attack_record

    import pandas as pd

    if not (target.run_dir / ATTACK_FILE).is_file():
        return
    seat, first = SEAT_NAMES["learner"], int(read_attack_record(target.run_dir)["from_round"])
    if first + 1 > result.round:
        result.skipped.append(Skip("membership", seat, f"{active_name(first)}: the attacker holds the community "
                                   f"model of round {first + 1} only from then; audit --round {first + 1} or later"))
        return
    say(f"  {seat}: {active_name(first)}")
    rows = audit_rows(target, reported_round=result.round, cache=cache)
    result.membership = pd.concat([result.membership, pd.DataFrame(rows).assign(seat=seat)], ignore_index=True)
    result.active = [r for r in defense_view(target.run_dir) if r["round"] <= result.round]


def _learner_calibrated(target: Target, result: AuditResult, *, seed: int, cache: FeatureCache,
                        progress: Callable[[str, int, int], None] | None, say: Callable[[str], object],
                        local: bool) -> None:
    """The malicious learner's calibrated attacks (offline LiRA, RMIA), its references the federation replayed on
    what it holds; one attacker (the smallest learner: the cheapest to replay) and one draw, as each attacker and
    draw trains its own references. ``local``: the run kept local models, so the controller's run anyway."""
    from attacks.membership.learner_calibrated import (
        LEARNER_METHODS, MIN_REFERENCES, NOT_FROM_THIS_SEAT, learner_calibrated,
    )
    from attacks.threats.seats import SEAT_NAMES
    from fedsim.data.partition import learner_groups

    import pandas as pd

    budget, seat = result.budget, SEAT_NAMES["learner"]
    if budget.references < MIN_REFERENCES:
        result.skipped.append(Skip("membership", seat, "calibrated attacks (offline LiRA, RMIA) with reference models "
                                   f"that replay the federation: {budget.why_not.get('calibrated', '')}"
                                   + ("; the controller's calibrated attacks, which reuse the other learners' local "
                                      "models, still run" if local else "")))
        return
    counts = target.partitions["group"].value_counts()
    learners = learner_groups(target.partitions["group"])
    attacker = min(learners, key=lambda g: counts[g])
    say(f"  {seat} {attacker}, calibrated by {budget.references} reference models that replay the federation")
    try:
        rows = [r for matched in (False, True) for r in learner_calibrated(
            target, rnd=result.round, references=budget.references, repeats=1, seed=seed, age_matched=matched,
            controls=True, attackers=[attacker], cache=cache, progress=progress)]
    except FedsimError as err:  # e.g. an imported federation, which fedsim cannot replay
        result.skipped.append(Skip("membership", seat, f"calibrated attacks (offline LiRA, RMIA): {err}"))
        return
    if rows:
        result.calibrated = pd.DataFrame(rows).assign(seat=seat)
    others = [g for g in learners if g != attacker]
    if others:
        result.skipped.append(Skip("membership", seat, f"calibrated attacks ({', '.join(LEARNER_METHODS)}) by "
                                   f"{', '.join(others)}: each malicious learner trains its own reference models; the "
                                   f"audit ran {attacker}'s (the smallest learner's, the cheapest)"))
    for methods, why in NOT_FROM_THIS_SEAT.items():
        result.skipped.append(Skip("membership", seat, f"{methods}: {why}"))


def _attribute(target: Target, result: AuditResult, *, centralized: bool, local: bool, seed: int,
               progress: Callable[[str, int, int], None] | None, say: Callable[[str], object]) -> None:
    from attacks.attribute.inference import CONTROLLER, attribute_attacks, seats_of
    from attacks.attribute.labels import questions
    from attacks.attribute.properties import property_attack
    from attacks.signals.cache import FeatureCache

    import pandas as pd

    cache, frames = FeatureCache(target, progress=progress), []
    for attribute in result.budget.attributes:
        try:
            asked = questions(target, attribute)
        except FedsimError as err:
            result.skipped.append(Skip("attribute", "every seat", f"{attribute}: {err}"))
            continue
        for question in asked:
            say(f"  {getattr(question, 'name', attribute)}")
            frames.append(attribute_attacks(target, question, rnd=result.round, repeats=result.budget.repeats,
                                            seed=seed, cache=cache, progress=progress))
    result.attribute = pd.concat(frames, ignore_index=True) if frames else None
    if not centralized and CONTROLLER in seats_of(target, result.round) and "sex" in result.budget.attributes:
        try:
            result.properties = property_attack(target, rnd=result.round, seed=seed, progress=progress)
        except FedsimError as err:
            result.skipped.append(Skip("attribute", "curious controller", f"property inference: {err}"))


def _reconstruction(target: Target, result: AuditResult, *, centralized: bool, local: bool, seed: int,
                    progress: Callable[[str, int, int], None] | None, say: Callable[[str], object]) -> None:
    from attacks.reconstruction.run import gradient_attack
    from attacks.reconstruction.tasks import feature_attack

    budget = result.budget
    layers = "every conv layer" if budget.layers is None else ", ".join(budget.layers)
    say(f"  feature inversion of {layers}'s activations, {budget.scans} scans")
    outcomes = [feature_attack(target, subjects=budget.scans, rnd=result.round, layers=budget.layers, progress=progress)]
    if budget.layers is not None:
        result.skipped.append(Skip("reconstruction", "holder of deeper layers' activations",
                                   f"at --budget {budget.name}: {budget.why_not['layers']}"))
    result.skipped.append(Skip("reconstruction", "whoever holds the model", "model inversion: its verdict is a "
                               "closeness AUC on its own page (fedsim reconstruct RUN_DIR --attack model)"))
    if centralized:
        result.skipped.append(Skip("reconstruction", "curious controller", "gradient inversion attacks a learner's "
                                   "update: a centralized run has none"))
    elif not local:
        result.skipped.append(Skip("reconstruction", "curious controller", "gradient inversion needs the learner's "
                                   "update: train with --snapshot-local"))
    elif not budget.gradient:
        result.skipped.append(Skip("reconstruction", "curious controller",
                                   f"gradient inversion at --budget {budget.name}: {budget.why_not['gradient']}"))
    else:
        say("  gradient inversion of the first learner's update, every scan")
        try:
            outcomes.append(gradient_attack(target, rnd=result.round, progress=progress))
        except FedsimError as err:  # e.g. an imported federation, whose local training fedsim cannot replay
            result.skipped.append(Skip("reconstruction", "curious controller", f"gradient inversion: {err}"))
    for outcome in outcomes:
        result.reconstruction += outcome.rows
        result.examples += outcome.examples
