"""FedAvg with what an audited simulation needs, as overrides of Flower's protocol hooks only.

``SnapshotFedAvg`` changes no arithmetic of :class:`flwr.serverapp.strategy.FedAvg` (the average
is weighted by ``num-examples``); it

* numbers rounds absolutely, so a resumed run continues at round ``k + 1`` and learners derive
  the same seeds as in an uninterrupted run;
* aggregates replies in learner order, so floating-point sums do not depend on which Ray actor
  finished first (same seed ⇒ bit-identical community model);
* names failed learners and stops the run once more than ``max_failures`` fail in a round;
* with ``snapshot_local``, saves every learner's returned model (curious-controller audits);
* records the L2 norm of every learner's update as it arrived (before any central-DP clipping), the
  statistic a controller screening updates would look at (``L3_update_norm`` in ``metrics.jsonl``).

Central DP (``[defense] central_dp``) wraps it in Flower's DP strategy wrappers
(:mod:`fedsim.defenses.central_dp`), which screen replies with :meth:`SnapshotFedAvg.screen_replies`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsim import snapshots
from fedsim.defenses.central_dp import update_norm
from fedsim.errors import FedsimError
from fedsim.federation import keys


_LEARNER = re.compile(r"L[1-9][0-9]*")


class LearnerFailure(FedsimError):
    """More learners failed in one round than ``[federation] max_failures`` allows."""


class SnapshotFedAvg(FedAvg):
    """FedAvg over all ``learners`` every round, starting after round ``first_round - 1``.

    Parameters
    ----------
    run_dir : Path
        Where local models go (``rounds/<k>/L3.safetensors``).
    learners : int
        Every learner trains every round (synchronous FedAvg, as in the paper).
    done_rounds : int
        Rounds already on disk (0 for a fresh run); Flower's round ``r`` is fedsim's ``r + done_rounds``.
    snapshot_local : bool
        Save each learner's returned model per round.
    max_failures : int
        Failed learners tolerated per round; their updates are left out of that round's average.
    architecture : tuple[str, dict] | None
        Model name and constructor arguments, written into every snapshot's header.
    """

    def __init__(self, *, run_dir: Path, learners: int, done_rounds: int, snapshot_local: bool, max_failures: int,
                 architecture: tuple[str, dict[str, Any]] | None = None):
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,  # the controller evaluates the community model itself (unseen set)
            min_train_nodes=learners,
            min_available_nodes=learners,
            weighted_by_key=keys.NUM_EXAMPLES,
            arrayrecord_key=keys.ARRAYS,
            configrecord_key=keys.CONFIG,
        )
        self.run_dir = Path(run_dir)
        self.done_rounds = done_rounds
        self.snapshot_local = snapshot_local
        self.max_failures = max_failures
        self.architecture = architecture
        self.reports: dict[int, dict[str, Any]] = {}  # absolute round → learners' metrics and failures
        self._sent: set[int] = set()
        self._learner_of: dict[int, str] = {}  # node id → learner, learnt from replies
        self._failed: dict[int, dict[str, str]] = {}  # absolute round → failures screened, not yet reported
        self._current: dict[str, torch.Tensor] = {}  # the community model sent this round
        self._norms: dict[int, dict[str, float]] = {}  # absolute round → learner → update norm, as received

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the community model to every learner, tagged with the absolute round."""
        messages = list(super().configure_train(server_round + self.done_rounds, arrays, config, grid))
        self._current = arrays.to_torch_state_dict()
        self._sent = {m.metadata.dst_node_id for m in messages}
        return messages

    def screen_replies(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The successful replies in learner order; failures are recorded for the round (once,
        also when a DP wrapper screens before this strategy aggregates) and stop the run beyond
        ``max_failures``."""
        rnd = server_round + self.done_rounds
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        for m in ok:
            self._learner_of[m.metadata.src_node_id] = str(m.content[keys.INFO][keys.LEARNER])
        ok.sort(key=lambda m: int(self._learner_of[m.metadata.src_node_id].removeprefix("L")))
        if rnd in self._failed:
            return ok
        failed = {self._name(m.metadata.src_node_id, m.error.reason): m.error.reason or "no reason given"
                  for m in replies if m.has_error()}
        for node in self._sent - {m.metadata.src_node_id for m in replies}:
            failed[self._name(node)] = "no reply within [federation] round_timeout"
        if not ok:  # nothing to average: a "round" would be the previous model saved again
            why = next(iter(dict(sorted(failed.items())).values()), "no learner replied")
            raise LearnerFailure(
                f"every learner failed in round {rnd} ({', '.join(sorted(failed))}; first: {why}); "
                f"rounds 0..{rnd - 1} are on disk, continue with --resume RUN_DIR"
            )
        if len(failed) > self.max_failures:
            who, why = next(iter(sorted(failed.items())))
            raise LearnerFailure(
                f"{len(failed)} learner(s) failed in round {rnd} ({', '.join(sorted(failed))}; first: {why}); "
                f"[federation] max_failures = {self.max_failures}; rounds 0..{rnd - 1} are on disk, "
                "continue with --resume RUN_DIR"
            )
        self._failed[rnd] = failed
        self._norms[rnd] = {self._learner_of[m.metadata.src_node_id]:
                            update_norm(m.content[keys.ARRAYS].to_torch_state_dict(), self._current) for m in ok}
        return ok

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sort replies by learner, account for failures, save local models, then FedAvg."""
        rnd = server_round + self.done_rounds
        ok = self.screen_replies(server_round, replies)
        norms = self._norms.pop(rnd)
        learners = {}
        for m in ok:
            name = self._learner_of[m.metadata.src_node_id]
            metrics, info = m.content[keys.METRICS], m.content[keys.INFO]
            learners[name] = {"train_mae": float(metrics[keys.TRAIN_MAE]), "num_examples": int(metrics[keys.NUM_EXAMPLES]),
                              "update_norm": norms[name]}
            if keys.EPSILON in info:  # DP-SGD learners report the ε they have spent so far
                learners[name]["epsilon"] = float(info[keys.EPSILON])
            if keys.ATTACK in info:  # [attack] active: the simulated attacker says what it did
                learners[name].update({"attack": str(info[keys.ATTACK]), "normal_norm": float(info[keys.NORMAL_NORM]),
                                       "ascent_norm": float(info[keys.ASCENT_NORM])})
            if self.snapshot_local:
                snapshots.save_round(self.run_dir, rnd, m.content[keys.ARRAYS].to_torch_state_dict(), {}, name=name,
                                     architecture=self.architecture)
        self.reports[rnd] = {"learners": learners, "failed": self._failed.pop(rnd)}
        return super().aggregate_train(server_round, ok)

    def _name(self, node_id: int, reason: str | None = None) -> str:
        # fedsim's learners prefix their errors with "L2: " (client_app.report_failures); anything
        # else is known by the learner that node answered as before, or by its random node id
        head = (reason or "").split(":", 1)[0]
        if _LEARNER.fullmatch(head):
            return head
        return self._learner_of.get(node_id, f"node {node_id}")
