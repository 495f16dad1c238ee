"""Every seat at the table: the same victims attacked by the malicious learner, the curious
controller (trained and calibrated attacks) and the outsider.

Three adversaries attack the same victims with the same side knowledge — learner A's own subjects
(members) vs unseen ones, drawn exactly as :func:`attacks.threats.splits.learner_splits` draws them,
for every pair A → B — and differ only in what they see of the federation (:mod:`attacks.threats.seats`).

The controller also runs *calibrated* attacks (:mod:`attacks.membership.calibration`) without
training a single reference model: for victim B's subjects every other learner's local model of the
same round is a reference that did not train on them this round (all started from the community
model of round R − 1, which averaged B's earlier updates, so the test is conservative: it measures
what B's latest local training added). Offline LiRA asks how much better B's model fits a subject
than its peers do, RMIA compares that ratio with known non-members' (the unseen subjects not under
test). A's subjects serve only to pick the accuracy threshold; AUC and TPR at low FPR need no known member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attacks.engine import ScoreAttack, Task, run_plan, tasks
from attacks.evaluation.summary import controls_table, summarise
from attacks.membership.calibration import LIKELIHOOD_OF_LOSS, Evidence, attack_names, score_attacks
from attacks.membership.classifiers import DEFAULT_CLASSIFIER
from attacks.membership.trained import run_attacks
from attacks.signals.cache import FeatureCache
from attacks.signals.features import is_black_box
from attacks.target import Target, attacked_round, load_snapshot, missing_local_models
from attacks.threats.seats import SEAT_NAMES, plan
from attacks.threats.splits import DEFAULT_REPEATS
from fedsim import snapshots
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

__all__ = [
    "CALIBRATED", "SEATS", "best_sets", "controller_calibrated", "run_seats", "seat_table", "seats_dir", "victim_table",
]

LEARNER, CONTROLLER, OUTSIDER = SEAT_NAMES["learner"], SEAT_NAMES["controller"], SEAT_NAMES["outsider"]
SEATS = (LEARNER, CONTROLLER, OUTSIDER)
SEATS_DIR = "seats"
#: The controller's calibrated attacks: references are the other learners' local models, all OUT.
CALIBRATED_METHODS = ("lira-offline", "rmia")
CALIBRATED_STATISTICS = ("residual", "log-abs")
CALIBRATED = "calibrated"  # the classifier column of their rows
MIN_CALIBRATION_LEARNERS = 3  # LiRA fits its OUT Gaussians from at least 2 references per subject


def seats_dir(run_dir: Path, rnd: int) -> Path:
    """Where the seats of round ``rnd`` are written."""
    return Path(run_dir) / "attacks" / SEATS_DIR / f"round-{rnd:04d}"


def _check_local_models(target: Target, rnd: int, learners: Sequence[str]) -> None:
    missing = missing_local_models(target, rnd)
    if len(missing) == len(learners):
        raise FedsimError(
            f"{str(target.run_dir)!r} has no local models for round {rnd}: the curious controller "
            "needs a run made with `python -m fedsim.run --env … --snapshot-local`")
    if missing:
        raise FedsimError(
            f"round {rnd} of {str(target.run_dir)!r} has no local model of {', '.join(missing)} (did it fail that "
            "round? see metrics.jsonl); attack another --round")


def run_seats(
    target: Target, *, rnd: int, feature_sets: Sequence[str], classifier: str = DEFAULT_CLASSIFIER,
    repeats: int = DEFAULT_REPEATS, seed: int = 0, say: Callable[[str], object] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> pd.DataFrame:
    """Every seat's attacks on round ``rnd`` (the outsider: the last round), plain and age-matched.

    ``say(text)`` receives one line per step and the notes a person should read (the CLI prints them).
    """
    attacked_round(target, rnd, first=1)
    learners = learner_groups(target.partitions["group"])
    _check_local_models(target, rnd, learners)
    black_box = [s for s in feature_sets if is_black_box(s)]
    if not black_box:
        raise FedsimError("the outsider sees predicted ages only: --features needs a black-box set, e.g. pred+label or error")
    say = say or (lambda text: None)
    jobs = [(LEARNER, "learner", rnd, list(feature_sets)), (CONTROLLER, "controller", rnd, list(feature_sets)),
            (OUTSIDER, "outsider", target.rounds[-1], black_box)]
    cache, rows = FeatureCache(target, progress=progress), []
    for seat, threat, at, specs in jobs:
        say(f"[bold]{seat}[/]: round {at}, {len(specs)} feature sets")
        for matched in (False, True):
            rows += [{"seat": seat, **row} for row in run_attacks(
                target, threat=threat, rounds=[at], feature_sets=specs, classifier=classifier, repeats=repeats,
                seed=seed, age_matched=matched, cache=cache, progress=progress)]
    if len(learners) < MIN_CALIBRATION_LEARNERS:
        say(f"[yellow]note:[/] calibrated controller attacks skipped: they need {MIN_CALIBRATION_LEARNERS} "
            "learners (a victim's subjects need 2 other local models as OUT references)")
        return pd.DataFrame(rows)
    say(f"[bold]{CONTROLLER}[/], calibrated by the other local models: {', '.join(CALIBRATED_METHODS)}")
    for matched in (False, True):
        rows += [{"seat": CONTROLLER, **row} for row in controller_calibrated(
            target, rnd=rnd, repeats=repeats, seed=seed, age_matched=matched, cache=cache)]
    return pd.DataFrame(rows)


def controller_calibrated(
    target: Target, *, rnd: int, repeats: int, seed: int = 0, age_matched: bool = False, cache: FeatureCache | None = None,
) -> list[dict[str, Any]]:
    """The curious controller's calibrated attacks on every pair A → B of round ``rnd``, one row each.

    Victim B's attack-test subjects are scored against B's local model with the other learners'
    local models as references; the accuracy threshold is the best one on A's attack-train subjects,
    scored the same way against A's local model. Same splits as the classifier attacks. RMIA's
    population: the unseen subjects other than the victim's attack-test non-members.
    """
    cache = cache or FeatureCache(target)
    learners = learner_groups(target.partitions["group"])
    config = snapshots.read_config(target.run_dir)
    likelihood = LIKELIHOOD_OF_LOSS.get(config.get("train", {}).get("loss", "mse"), "gaussian")
    # the controller holds the weights: the clean predictions of every local model
    predictions = np.stack([cache.get(load_snapshot(target.run_dir, rnd, name=g), ["prediction"])["prediction"][:, 0]
                            for g in learners]).astype(np.float64)
    group_of = target.partitions.set_index("subject_id")["group"].reindex(target.cohort.subject_ids).to_numpy()
    keep = np.stack([group_of == g for g in learners])  # reference k trained on subject i
    age = target.cohort.ages.astype(np.float64)
    unseen = target.cohort.index_of(list(target.partitions.loc[target.partitions["group"] == "unseen", "subject_id"]))
    plan_ = tasks(plan("controller", target.partitions, repeats=repeats, seed=seed, age_matched=age_matched))
    names = attack_names(CALIBRATED_METHODS, CALIBRATED_STATISTICS)
    memo: dict[tuple, list[np.ndarray]] = {}

    def view(attack: ScoreAttack, model: str, rows: np.ndarray, task: Task) -> np.ndarray:
        """Scores of cohort ``rows`` against ``model``'s local model, the other local models as references
        (every row is ``model``'s learner's or unseen, so OUT for all of them)."""
        test_rows = task.split.test()[0]
        z = np.setdiff1d(unseen, target.cohort.index_of(list(test_rows)))  # RMIA's population: none under test
        key = (model, rows.tobytes(), z.tobytes())
        if key not in memo:
            cols = np.concatenate([rows, np.setdiff1d(z, rows)])  # each subject once
            position = {c: i for i, c in enumerate(cols)}
            k = learners.index(model)
            others = [j for j in range(len(learners)) if j != k]
            evidence = Evidence(age[cols], predictions[k, cols], predictions[others][:, cols], keep[others][:, cols],
                                np.array([position[c] for c in z]))
            found = score_attacks(evidence, CALIBRATED_METHODS, statistics=CALIBRATED_STATISTICS, likelihood=likelihood)
            memo[key] = [values[: len(rows)] for _, values in found]
        return memo[key][attack.index][:, None]

    columns = {"threat": "controller", "round": rnd, "classifier": CALIBRATED,
               "control": "age-matched" if age_matched else "none"}
    attacks = [ScoreAttack(name, i) for i, name in enumerate(names)]
    return run_plan(plan_, attacks, view, row_of={s: i for i, s in enumerate(target.cohort.subject_ids)},
                    sees=lambda party: party, columns=columns)


def seat_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per seat (in :data:`SEATS` order) and feature set: the attack on the seat's round, as
    :func:`controls_table` gives it (mean over attacker–victim pairs and repeats, with the bootstrap
    interval over victims, beside the age-matched control), with its AUC and TPR at 1 % FPR."""
    parts = []
    for seat, rows in results.groupby("seat", sort=False):
        rnd = int(rows["round"].max())
        table = controls_table(rows, rnd, by=["seat"])
        table.insert(1, "round", rnd)
        parts.append(table)
    table = pd.concat(parts, ignore_index=True)
    order = table["seat"].map({seat: i for i, seat in enumerate(SEATS)})
    return table.iloc[order.argsort(kind="stable")].reset_index(drop=True)


def best_sets(table: pd.DataFrame) -> dict[str, str]:
    """Each seat's strongest feature set, judged by its age-matched accuracy (membership, not shift)."""
    score = table["matched"].fillna(table["attack"])
    return {seat: table.loc[score[table["seat"] == seat].idxmax(), "features"] for seat in table["seat"].unique()}


def victim_table(results: pd.DataFrame, best: dict[str, str]) -> pd.DataFrame:
    """Per victim (rows) and seat (columns): accuracy of the seat's best feature set, mean over attackers
    and repeats — the same victims and subjects for every seat."""
    plain = results[results["control"] == "none"]
    cols = {seat: summarise(plain[(plain["seat"] == seat) & (plain["features"] == spec)], ["victim"]).set_index("victim")["accuracy"]
            for seat, spec in best.items()}
    table = pd.DataFrame(cols)
    return table.reindex(learner_groups(table.index))
