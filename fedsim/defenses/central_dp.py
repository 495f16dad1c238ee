"""Central (learner-level) differential privacy with Flower's fixed-clipping strategy wrappers.

``[defense] central_dp = "server"`` wraps :class:`~fedsim.federation.strategy.SnapshotFedAvg` in
Flower's ``DifferentialPrivacyServerSideFixedClipping`` (the controller clips every learner's
update to ``central_clipping_norm``), ``"client"`` in ``DifferentialPrivacyClientSideFixedClipping``
(learners clip, with Flower's ``fixedclipping_mod``: :func:`clip_update`). Either way the
controller adds ``N(0, (z·C/n)²)`` to the average, ``z`` = ``central_noise_multiplier``.

fedsim's subclasses change three things and nothing of the clipping or noise arithmetic:

* failed learners stay data (SnapshotFedAvg's ``max_failures``) instead of voiding the round,
  and the noise is calibrated to the ``n`` learners that replied;
* the noise is drawn from ``SeedSequence([seed, round])``, not NumPy's global RNG, so a run is
  deterministic by seed (Flower's own draw is not);
* ε is reported per round. FedAvg here is weighted by sample count, so learner ``i`` moves the
  average by at most ``C·w_i/W``; the noise ``z·C/n`` then protects the largest learner with an
  effective multiplier ``z·W/(n·max w_i)``, composed over rounds by the RDP accountant (all
  learners train every round: no sampling amplification). Flower's own accountant accepts only
  equal weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_stdv

from fedsim import snapshots
from fedsim.config import EnvConfig
from fedsim.defenses.dp_sgd import epsilon

CENTRAL_STREAM = 0xCE17  # SeedSequence stream of the controller's noise
NOISE_KEY = "central_noise_multiplier"  # metrics.jsonl: effective multiplier of each round
EPSILON_KEY = "central_epsilon"  # metrics.jsonl: learner-level ε after each round


def update_norm(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> float:
    """L2 norm of a learner's update ``after − before`` over its floating-point tensors: what the
    clipping bounds, and what a controller screening updates would compare across learners."""
    return sum(float((after[k].double() - before[k].double().to(after[k].device)).pow(2).sum())
               for k in before if before[k].is_floating_point()) ** 0.5


def effective_noise_multiplier(noise_multiplier: float, weights: Iterable[float]) -> float:
    """``z·W/(n·max w)``: noise std ``z·C/n`` over the largest learner's sensitivity ``C·max w/W``."""
    w = np.asarray(list(weights), dtype=float)
    return float(noise_multiplier * w.sum() / (len(w) * w.max()))


class _FedsimCentralDP:
    """What fedsim adds to Flower's DP wrappers (see the module docstring)."""

    def __init__(self, strategy: Strategy, *, noise_multiplier: float, clipping_norm: float, seed: int,
                 delta: float, run_dir: str | Path | None = None) -> None:
        super().__init__(strategy, noise_multiplier, clipping_norm, strategy.min_train_nodes)  # type: ignore[call-arg]
        self.seed, self.delta = seed, delta
        self._round = 0
        # effective multiplier of every round so far (from metrics.jsonl when resuming)
        done = strategy.done_rounds
        self.history: dict[int, float] = {}
        if run_dir is not None:
            self.history = {m["round"]: m[NOISE_KEY] for m in snapshots.read_metrics(run_dir)
                            if 0 < m["round"] <= done and NOISE_KEY in m}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        inner = self.strategy
        ok = inner.screen_replies(server_round, replies)
        if not ok:
            return inner.aggregate_train(server_round, ok)
        rnd = self._round = server_round + inner.done_rounds
        self.num_sampled_clients = len(ok)
        weights = [next(iter(m.content.metric_records.values()))[inner.weighted_by_key] for m in ok]
        self.history[rnd] = z = effective_noise_multiplier(self.noise_multiplier, weights)
        arrays, metrics = super().aggregate_train(server_round, ok)  # type: ignore[misc]
        eps = epsilon([(self.history[r], 1.0, 1) for r in sorted(self.history) if r <= rnd], self.delta)
        inner.reports[rnd].setdefault("privacy", {}).update({NOISE_KEY: z, EPSILON_KEY: eps})
        return arrays, metrics

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        """Flower's noise, drawn from a seeded generator."""
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, CENTRAL_STREAM, self._round]))
        out = {}
        for name, array in zip(aggregated_arrays.keys(), aggregated_arrays.to_numpy_ndarrays(), strict=True):
            out[name] = Array(np.asarray(array + rng.normal(0.0, std, array.shape).astype(array.dtype)))
        return ArrayRecord(out)


class ServerSideFixedClipping(_FedsimCentralDP, DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping around SnapshotFedAvg (``central_dp = "server"``)."""


class ClientSideFixedClipping(_FedsimCentralDP, DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed clipping around SnapshotFedAvg (``central_dp = "client"``);
    learners clip with :func:`clip_update`."""


def wrap_strategy(strategy: Strategy, cfg: EnvConfig, run_dir: str | Path | None = None) -> Strategy:
    """``strategy`` wrapped as ``cfg [defense] central_dp`` says (itself without central DP)."""
    d = cfg.defense
    if d is None or d.central_dp is None:
        return strategy
    cls = ServerSideFixedClipping if d.central_dp == "server" else ClientSideFixedClipping
    return cls(strategy, noise_multiplier=d.central_noise_multiplier, clipping_norm=d.central_clipping_norm,
               seed=cfg.seed, delta=d.dp_delta, run_dir=run_dir)


def clip_update(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Learner mod: Flower's ``fixedclipping_mod`` when the controller asks for client-side
    clipping (its train config carries the clipping norm), a pass-through otherwise."""
    config = next(iter(msg.content.config_records.values()), {})
    if KEY_CLIPPING_NORM in config:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)
