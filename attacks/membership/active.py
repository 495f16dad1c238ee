"""The active malicious learner's membership test (Nasr et al. 2019), on a run trained with ``[attack] active``.

The attacker (:mod:`fedsim.federation.malicious`) ascended the loss on its target scans in round ``r``, so
the community model of round ``r`` fits them badly. In round ``r + 1`` a member target's owner trains on it
and pulls its loss back down; a non-member target has no owner. The attacker, a learner, receives both
community models and scores each target by its loss *drop* ``loss_r − loss_{r+1}``: higher for members.

Beside it, on the same targets, the passive attack of the same seat (the loss of round ``r + 1`` alone); the
drop on the subjects nobody ascended (their owners' ordinary training leaks through it too, by as much as
without the attack); and, given a run of the same environment and seed without the attack, the drop there.
:func:`defense_view` gives what a controller sees of the attack (every update's norm; central DP's clipping
norm) and what it costs (the unseen MAE).
Losses come from the content-keyed feature cache, one forward pass per subject and community model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attacks.evaluation.metrics import auc_interval, flat_metrics, roc_auc, tpr_at_fpr
from attacks.signals.cache import FeatureCache
from attacks.target import Target, load_snapshot, open_run
from attacks.threats.splits import MEMBER, NON_MEMBER
from fedsim import snapshots
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError
from fedsim.federation.malicious import read_attack_record

__all__ = ["DROP", "LOSS", "WITH_ASCENT", "WITHOUT_ASCENT", "active_attack", "active_name", "audit_rows", "is_active", "defense_view"]

DROP = "loss drop"  # the active attack's score: loss of round r minus loss of round r + 1
LOSS = "loss"  # the seat's passive attack: minus the loss of round r + 1
WITH_ASCENT, WITHOUT_ASCENT = "with ascent", "without ascent"
#: Low false-positive rate at which the TPR is read (with 10 + 10 targets this is the TPR at FPR 0: see its note).
FPR = 0.01


def _losses(target: Target, rnd: int, cache: FeatureCache | None) -> np.ndarray:
    """The loss of the community model of round ``rnd`` on every cohort subject (cohort order)."""
    cache = cache or FeatureCache(target)
    return cache.get(load_snapshot(target.run_dir, rnd), ["loss"])["loss"][:, 0].astype(np.float64)


def _scored(statistic: str, subjects: str, run: str, rnd: int, labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    auc = roc_auc(labels, scores)
    n1, n0 = int(np.sum(labels == MEMBER)), int(np.sum(labels == NON_MEMBER))
    low, high = auc_interval(auc, n1, n0)
    metrics = {"auc": auc, "auc_low": low, "auc_high": high, "n_members": n1, "n_nonmembers": n0,
               f"tpr@{FPR:g}": tpr_at_fpr(labels, scores, fpr=FPR)}
    return {"statistic": statistic, "subjects": subjects, "run": run, "round": rnd, **flat_metrics(metrics)}


def _ascent_round(target: Target, record: dict[str, Any], rnd: int | None) -> int:
    rnd = int(record["from_round"]) if rnd is None else rnd
    if rnd < int(record["from_round"]):
        raise FedsimError(f"round {rnd} precedes the attack, which starts in round {record['from_round']}")
    if rnd not in target.rounds or rnd + 1 not in target.rounds:
        raise FedsimError(f"the active test of round {rnd} needs the community models of rounds {rnd} and {rnd + 1}; "
                          f"rounds on disk: {target.rounds[0]}..{target.rounds[-1]}")
    return rnd


_ACTIVE = " (active)"


def active_name(rnd: int) -> str:
    """What a results table's ``features`` column calls the active attack of round ``rnd`` (its control keeps it)."""
    return f"loss drop after ascent, rounds {rnd}→{rnd + 1}{_ACTIVE}"


def is_active(features: str) -> bool:
    """Whether a results table's ``features`` names the active attack (:func:`active_name`)."""
    return str(features).endswith(_ACTIVE)


def _targets(target: Target, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The targets' mask over the cohort and every subject's label (a victim's member or not)."""
    ids, groups = target.cohort.subject_ids, target.partitions.set_index("subject_id")["group"].astype(str)
    group = groups.reindex(ids).to_numpy()
    victims = [g for g in learner_groups(groups) if g != record["learner"]]
    return np.isin(ids, record["targets"]), np.where(np.isin(group, victims), MEMBER, NON_MEMBER)


def audit_rows(target: Target, *, reported_round: int, cache: FeatureCache | None = None) -> list[dict[str, Any]]:
    """The active attack as rows of a membership results table (:func:`attacks.evaluation.summary.controls_table`
    judges them beside the seat's passive attacks): the loss drop on the targets (``control`` ``none``, filed
    under ``reported_round``, the round the audit reports) and its round-0 control — minus the untrained
    model's loss on the same targets, what a difference between the targeted members and non-members alone gives
    a loss score. One attacker and one draw of targets: the AUC interval is the attack's own (Hanley–McNeil)."""
    record = read_attack_record(target.run_dir)
    rnd = _ascent_round(target, record, None)
    chosen, labels = _targets(target, record)
    before, after = _losses(target, rnd, cache), _losses(target, rnd + 1, cache)
    untrained = _losses(target, 0, cache)
    name = active_name(rnd)
    rows = []
    for control, at, scores in (("none", reported_round, before - after), ("round-0", 0, -untrained)):
        row = _scored(name, "targets", WITH_ASCENT, at, labels[chosen], scores[chosen])
        row.pop("statistic"), row.pop("subjects"), row.pop("run")
        rows.append({**row, "features": name, "control": control, "classifier": "none",
                     "attacker": record["learner"], "victim": "targets", "repeat": 0, "accuracy": np.nan})
    return rows


def active_attack(run_dir: str | Path, *, rnd: int | None = None, passive_run: str | Path | None = None,
                  cache: FeatureCache | None = None) -> list[dict[str, Any]]:
    """Membership from the community models of rounds ``rnd`` and ``rnd + 1`` (default ``rnd``: the attack's
    first round), one row per statistic × subjects × run.

    * :data:`DROP` on the ``targets``, :data:`WITH_ASCENT`: the active attack;
    * :data:`LOSS` on the same targets: the passive attack of the same seat, on the same model;
    * :data:`DROP` on the ``untargeted`` (every other subject of the victims and of the unseen set): the control;
    * given ``passive_run`` (the same environment and seed without ``[attack]``), :data:`DROP` on the targets
      and on the untargeted there, :data:`WITHOUT_ASCENT`: what the drop shows without the ascent.

    Each row holds the AUC with its interval and the TPR at 1 % FPR with its interval and counts
    (:func:`attacks.evaluation.metrics.flat_metrics`); members are the positive class.
    """
    target = open_run(run_dir)
    record = read_attack_record(target.run_dir)
    rnd = _ascent_round(target, record, rnd)
    ids = target.cohort.subject_ids
    group = target.partitions.set_index("subject_id")["group"].astype(str).reindex(ids).to_numpy()
    chosen, labels = _targets(target, record)
    untargeted = ~chosen & ((labels == MEMBER) | (group == "unseen"))
    before, after = _losses(target, rnd, cache), _losses(target, rnd + 1, cache)
    rows = [
        _scored(DROP, "targets", WITH_ASCENT, rnd, labels[chosen], (before - after)[chosen]),
        _scored(LOSS, "targets", WITH_ASCENT, rnd, labels[chosen], -after[chosen]),
        _scored(DROP, "untargeted", WITH_ASCENT, rnd, labels[untargeted], (before - after)[untargeted]),
    ]
    if passive_run is not None:
        plain = open_run(passive_run)
        if list(plain.cohort.subject_ids) != list(ids) or not plain.partitions.equals(target.partitions):
            raise FedsimError(f"{str(passive_run)!r} has another cohort or partition than {str(run_dir)!r}; "
                              "train the same environment and seed without [attack]")
        drop = _losses(plain, rnd, None) - _losses(plain, rnd + 1, None)
        rows += [_scored(DROP, "targets", WITHOUT_ASCENT, rnd, labels[chosen], drop[chosen]),
                 _scored(DROP, "untargeted", WITHOUT_ASCENT, rnd, labels[untargeted], drop[untargeted])]
    return rows


def defense_view(run_dir: str | Path, *, passive_run: str | Path | None = None) -> list[dict[str, Any]]:
    """Per trained round: the attacker's update norm against the largest and the median of the others', its
    ascent's norm, whether central DP's clipping norm (if the run has one) is below it, and the unseen MAE
    of the community model (and of ``passive_run``'s, the same environment without the attack)."""
    run_dir = Path(run_dir)
    attacker = read_attack_record(run_dir)["learner"]
    clipping = snapshots.read_config(run_dir).get("defense", {}).get("central_clipping_norm")
    plain = {m["round"]: m for m in snapshots.read_metrics(Path(passive_run))} if passive_run is not None else {}
    rows = []
    for m in snapshots.read_metrics(run_dir):
        norms = {k.removesuffix("_update_norm"): v for k, v in m.items() if k.endswith("_update_norm")}
        if m["round"] == 0 or attacker not in norms:
            continue
        others = [v for k, v in norms.items() if k != attacker]
        row = {"round": m["round"], "attacker": attacker, "attacker_norm": norms[attacker],
               "ascent_norm": m.get(f"{attacker}_ascent_norm", 0.0),
               "others_max_norm": max(others), "others_median_norm": float(np.median(others)),
               "norm_ratio": norms[attacker] / float(np.median(others)), "unseen_mae": m["unseen_mae"]}
        if clipping is not None:
            row["clipping_norm"], row["clipped"] = clipping, norms[attacker] > clipping
        if m["round"] in plain:
            row["passive_unseen_mae"] = plain[m["round"]]["unseen_mae"]
        rows.append(row)
    return rows
