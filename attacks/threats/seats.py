"""Who attacks whom, seeing which model: the threat models as (attacker, victim, split) plans.

* ``centralized``: an adversary who knows some training subjects and some unseen ones attacks the
  model of a centralized run (white box; its black-box feature sets see released predictions).
* ``learner``: the malicious learner A holds the community model; it trains on its own subjects vs
  unseen ones and attacks every other learner B's subjects.
* ``controller``: the curious controller sees every learner's local model of a round (a run made
  with ``--snapshot-local``); it fits on A's local model and A's subjects, scores B's subjects on
  B's own local model. It gets the malicious learner's side knowledge and attacks the same victims,
  so the two seats differ only in the models they see.
* ``outsider``: the learner plan on the released predictions of the community model only.

Seats that hold the weights see the model's clean predictions; only an outsider (and the
centralized adversary's black-box feature sets) sees the released ones (``[defense]
prediction_noise``): :func:`sees_released`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import pandas as pd

from attacks.threats.splits import AttackSplit, centralized_splits, learner_splits
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

__all__ = [
    "SEAT_NAMES", "THREATS", "SkippedPairsWarning", "local_models", "plan", "sees_released", "skipped_pairs_said",
]

THREATS = ("centralized", "learner", "controller", "outsider")
#: How reports name each threat's seat.
SEAT_NAMES = {"centralized": "centralized adversary", "learner": "malicious learner",
              "controller": "curious controller", "outsider": "outsider"}


def sees_released(threat: str, black_box: bool) -> bool:
    """Whether the seat reads the predictions as the run releases them rather than the model's own:
    the outsider always, the centralized adversary on its black-box feature sets, never a seat that
    holds the weights (it computes clean predictions itself)."""
    return threat == "outsider" or (threat == "centralized" and black_box)


def local_models(threat: str) -> bool:
    """Whether the seat sees each learner's local model (else the one model of the run)."""
    return threat == "controller"


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
    learners = learner_groups(partitions["group"])
    if len(learners) < 2:
        raise FedsimError(f"the {SEAT_NAMES[threat]} threat needs a federated run with at least 2 learners")
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
