"""The one-run canary audit (Steinke, Nasr & Jagielski 2023): an empirical lower bound on a run's ε from
one more training run, without reference models.

m canaries are drawn from the run's unseen subjects (never trained on, so the audit needs no new data), and
each joins the run's training subjects with probability 1/2 (by seed, independently). One model is trained
ONCE on that set with the run's own recipe (``config.toml``: constructor, optimizer, loss, batch size and
``[defense]`` through :func:`fedsim.defenses.local_training` — DP-SGD's noise and clip included — from the
run's own initial weights, for as many epochs as the audited round; a federation's learners replayed round after
round with :func:`attacks.membership.learner_calibrated.federated_rounds`, its subjects dealt at random (the run's
non-IID assignment is not kept) into shards sized like the learners). Each canary's score is how much training
lowered its squared error against its label (initial model minus trained model), and :func:`attacks.evaluation.epsilon.canary_epsilon` guesses and bounds.

**Mislabeled canaries** (``shift``): Steinke et al. audit with input-space canaries, and a canary whose label no
other subject supports is memorised only if trained on — the standard way to make canaries easy to detect,
which DP must still hide (its guarantee holds for any data). ``shift`` moves every canary's age label by that
many standard deviations of the training ages (0: the subjects as they are, which measures the real subjects'
exposure instead of the guarantee's). Nothing else about the canaries is chosen.

Central DP (Flower's clipping wrappers around FedAvg) is not replayed, so a run with it is refused in one line.

Cache (by content: the run's configuration, round, initial weights, training subjects, canaries, their bits,
shift and seed), so a rerun does not retrain::

    RUN_DIR/attacks/canaries/<key>/plan.json    what the key hashes
    RUN_DIR/attacks/canaries/<key>/scores.csv   subject_id, included, label, loss_initial, loss_trained, score
    RUN_DIR/attacks/canaries/<key>/meta.json    written last: seconds, training MAE, the canary model's own ε
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from attacks.evaluation.epsilon import CanaryEpsilon, canary_epsilon
from attacks.membership.references import predict_rows
from attacks.target import Target, attacked_round, is_centralized, load_snapshot
from fedsim import snapshots
from fedsim.config import EnvConfig, from_resolved
from fedsim.data.cache import CohortArray, VolumeDataset
from fedsim.data.partition import learner_groups
from fedsim.defenses import defense_of, local_training, release_weights
from fedsim.device import resolve_device
from fedsim.errors import FedsimError
from fedsim.training import train_epochs

__all__ = ["CANARIES_DIR", "DEFAULT_SHIFT", "CanaryAudit", "canary_audit"]

#: Where the canary audit's scores live inside a run directory.
CANARIES_DIR = Path("attacks") / "canaries"
#: Canary labels: age + this many standard deviations of the training ages (mislabeled canaries).
DEFAULT_SHIFT = 3.0
#: Bump when the audit's training or scoring changes: it is part of the cache key.
CANARY_VERSION = 1
_STREAM = 6151  # SeedSequence stream of the canaries' draws and their model's seed (fixed: it names the cache)
_PLAN, _SCORES = "plan.json", "scores.csv"


@dataclass(frozen=True)
class CanaryAudit:
    """The bound (:class:`~attacks.evaluation.epsilon.CanaryEpsilon`), every canary's score, and how the model was
    trained: ``rounds`` (epochs of a centralized run), ``shift_years`` on the canaries' labels, the canary model's
    own accountant ε (DP-SGD on a centralized run; ``None`` otherwise) and whether this call ``trained`` it."""

    bound: CanaryEpsilon
    scores: pd.DataFrame
    folder: Path
    rounds: int
    shift: float
    shift_years: float
    accountant_epsilon: float | None
    trained: bool
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {**self.bound.as_dict(), "rounds": self.rounds, "shift": self.shift, "shift_years": self.shift_years,
                "canary_model_accountant_epsilon": self.accountant_epsilon, "seconds": round(self.seconds, 2),
                "cache": str(self.folder)}


def _seed(seed: int, *entropy: int) -> int:
    return int(np.random.SeedSequence([seed, _STREAM, *entropy]).generate_state(1)[0])


def _train(cfg: EnvConfig, cohort: CohortArray, rows: np.ndarray, *, start: nn.Module, rounds: int, shares: list[float],
           centralized: bool, seed: int, device: torch.device) -> tuple[nn.Module, float, float | None]:
    """One model of the run's recipe on cohort ``rows`` from ``start``'s weights: the trained (released) model, its
    last training MAE and, for a centralized run with DP-SGD, its own accountant ε."""
    if not centralized:
        from attacks.membership.learner_calibrated import federated_rounds

        state = {n: v.detach().cpu() for n, v in start.state_dict().items()}
        model, mae = federated_rounds(cfg, cohort, rows, start=state, rounds=rounds, shares=shares, seed=seed,
                                      device=device)
        return model, mae, None
    cfg = dataclasses.replace(cfg, seed=seed)  # the defenses' draws are this model's own
    torch.manual_seed(seed)
    model = copy.deepcopy(start).to(device).train()  # the run's initial weights; ``start`` itself scores the canaries
    session = local_training(cfg, model, VolumeDataset(cohort, rows), seed=seed)
    mae = train_epochs(session.model, session.loader, session.optimizer, loss=cfg.train.loss,
                       precision=cfg.train.precision, target_scale=cfg.model.target_scale, epochs=rounds, device=device)
    eps = session.epsilon(defense_of(cfg).dp_delta)
    if defense_of(cfg).model_noise > 0:  # the released weights, as the run's snapshots are
        model.load_state_dict(release_weights(cfg, model.state_dict(), rounds, seed))
    return model.eval(), mae, eps


def canary_audit(target: Target, *, rnd: int | None = None, canaries: int | None = None, shift: float = DEFAULT_SHIFT,
                 confidence: float = 0.95, seed: int = 0, device: torch.device | str | None = None) -> CanaryAudit:
    """The one-run canary audit of ``target`` at round ``rnd`` (default: a centralized run's best epoch, else the
    last round): ``canaries`` of its unseen subjects (default: all), each trained on with probability 1/2, labels
    shifted by ``shift`` standard deviations of the training ages; read from the cache or trained once."""
    config = snapshots.read_config(target.run_dir)
    cfg, defense = from_resolved(config), defense_of(config)
    if defense.central_dp is not None:
        raise FedsimError("the canary audit replays learner-side training only; central DP (Flower's clipping "
                          "wrappers around FedAvg) is out of scope for now")
    if not 0 < confidence < 1:
        raise FedsimError(f"confidence must be in (0, 1), got {confidence!r}")
    if shift < 0:
        raise FedsimError(f"the canaries' label shift must be a non-negative number of standard deviations, got {shift}")
    centralized = is_centralized(target)
    if rnd is None:
        rnd = target.best_round if centralized and target.best_round is not None else target.rounds[-1]
    rnd = attacked_round(target, rnd, first=1)
    if 0 not in target.rounds:
        raise FedsimError("the canary audit trains from the run's initial model (round 0), which is not on disk")
    groups = target.partitions.set_index("subject_id")["group"]
    pool = [s for s in target.cohort.subject_ids if groups.get(s) == "unseen"]
    m = len(pool) if canaries is None else canaries
    if not 2 <= m <= len(pool):
        raise FedsimError(f"the canary audit draws 2 to {len(pool)} canaries from the run's unseen subjects, got {m}")
    rng = np.random.default_rng([seed, _STREAM])
    chosen = np.sort(target.cohort.index_of(list(rng.choice(pool, size=m, replace=False))))
    included = rng.random(m) < 0.5
    owners = ["train"] if centralized else learner_groups(target.partitions["group"])
    train_rows = np.sort(target.cohort.index_of([s for s in target.cohort.subject_ids if groups.get(s) in owners]))
    shift_years = float(shift * np.std(target.cohort.ages[train_rows]))
    start = load_snapshot(target.run_dir, 0)
    counts = load_snapshot(target.run_dir, rnd).meta.get("sample_counts", {})
    shares = [float(counts.get(g, 1)) for g in owners]  # FedAvg's weights (a run without counts: equal)
    ids = [target.cohort.subject_ids[i] for i in chosen]
    plan = {"version": CANARY_VERSION, "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True, default=str)
                                                                       .encode()).hexdigest()[:16],
            "round": rnd, "start_sha256": start.digest, "seed": seed, "shift_years": shift_years,
            "train_sha256": hashlib.sha256("\n".join(target.cohort.subject_ids[i] for i in train_rows).encode())
            .hexdigest()[:16], "canaries": ids, "included": included.astype(int).tolist(), "shares": shares}
    folder = target.run_dir / CANARIES_DIR / hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:12]
    trained, begun = False, time.perf_counter()
    if not (folder / snapshots.META_FILE).is_file():
        device = resolve_device(device)
        ages = target.cohort.ages.astype(np.float64).copy()
        ages[chosen] += shift_years
        shifted = CohortArray(target.cohort.volumes, target.cohort.subject_ids, ages)  # the canaries as trained on
        model, mae, eps = _train(cfg, shifted, np.sort(np.concatenate([train_rows, chosen[included]])),
                                 start=start.model, rounds=rnd, shares=shares, centralized=centralized,
                                 seed=_seed(seed, rnd), device=device)
        labels = ages[chosen]
        initial = (predict_rows(start.model, target.cohort, chosen, device=device) - labels) ** 2
        final = (predict_rows(model, target.cohort, chosen, device=device) - labels) ** 2
        scores = pd.DataFrame({"subject_id": ids, "included": included.astype(int), "label": labels,
                               "loss_initial": initial, "loss_trained": final, "score": initial - final})
        snapshots.write_text(folder / _PLAN, json.dumps(plan, indent=1))
        snapshots.atomic_write(folder / _SCORES, lambda tmp: scores.to_csv(tmp, index=False))
        meta = {"seconds": round(time.perf_counter() - begun, 3), "train_mae": mae, "accountant_epsilon": eps}
        snapshots.write_text(folder / snapshots.META_FILE, json.dumps(meta, indent=1))
        trained = True
    meta = json.loads((folder / snapshots.META_FILE).read_text())
    scores = pd.read_csv(folder / _SCORES, dtype={"subject_id": str})
    bound = canary_epsilon(scores["score"].to_numpy(), scores["included"].to_numpy(dtype=bool),
                           delta=defense.dp_delta, confidence=confidence)
    return CanaryAudit(bound, scores, folder, rnd, shift, shift_years, meta["accountant_epsilon"], trained,
                       float(meta["seconds"]))
