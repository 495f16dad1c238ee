"""Record a Flower app that is not fedsim's own into a fedsim run directory, for the attacks.

Any Flower ``ServerApp`` puts :class:`RecordingStrategy` around its own strategy (FedAvg, FedProx, a DP
wrapper, …). The wrapper changes nothing the strategy does: it passes every protocol hook through and,
on the way, writes the community model of every round (round 0: the initial model, as sent in round 1)
and, with ``local_models=True``, each learner's returned model, into a run directory with the
``config.toml`` and ``partitions.csv`` that :func:`fedsim.importing.import_run` writes — so every attack
opens it as a run fedsim trained. Round loops stay Flower's (``Strategy.start``).

Learners are named by their partition: learner ``L{k}`` is ``partition-id`` ``k - 1``, as in fedsim's
own federation. Flower's node ids are random, so each reply must say its partition:
:func:`partition_id_mod` on the ``ClientApp`` adds it (``ClientApp(mods=[partition_id_mod])``), or the
app puts ``partition-id`` in a ConfigRecord (or MetricRecord) of its reply, or passes ``learner_of``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedsim import snapshots
from fedsim.data.partition import learner_groups, learner_label
from fedsim.data.volumes import load_volume
from fedsim.errors import FedsimError
from fedsim.checkpoints import load_weights
from fedsim.importing import ModelSpec, check_on_scan, read_membership, resolve_cohort, resolved, write_run_files

__all__ = ["LEARNER_RECORD", "PARTITION_ID", "RecordingStrategy", "partition_id_mod"]

PARTITION_ID = "partition-id"  # Flower's node_config key, and the key a reply names its learner by
LEARNER_RECORD = "fedsim-learner"  # the ConfigRecord partition_id_mod adds to a reply


def partition_id_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A ClientApp mod: tag each reply with the node's ``partition-id``, so a recorder knows whose it is.

    It adds a ConfigRecord (never averaged) and leaves the ArrayRecord and MetricRecord alone."""
    reply = call_next(msg, context)
    if not reply.has_error() and PARTITION_ID in context.node_config:
        reply.content[LEARNER_RECORD] = ConfigRecord({PARTITION_ID: int(context.node_config[PARTITION_ID])})
    return reply


def learner_of_reply(msg: Message) -> str:
    """``L{k}`` of a reply carrying ``partition-id`` ``k - 1`` in a ConfigRecord or MetricRecord."""
    for records in (msg.content.config_records, msg.content.metric_records):
        for record in records.values():
            if PARTITION_ID in record:
                return learner_label(int(record[PARTITION_ID]) + 1)
    raise FedsimError(f"a learner's reply does not say which learner sent it (node {msg.metadata.src_node_id}); "
                      "Please ensure the ClientApp uses fedsim.federation.recorder.partition_id_mod "
                      f"(ClientApp(mods=[partition_id_mod])) or replies with '{PARTITION_ID}' in a ConfigRecord")


class RecordingStrategy(Strategy):
    """Wrap ``strategy`` so that every round's community model (and each learner's) lands in ``run_dir``.

    Parameters
    ----------
    strategy : Strategy
        The app's own strategy; its behaviour is unchanged.
    run_dir : str or Path
        The run directory to write (a directory holding a finished run is refused).
    model : ModelSpec
        The app's model as fedsim rebuilds it (``package.module:Class``, kwargs, input shape, intensity,
        output units), checked against the cohort's first scan here and against the initial weights in round 1.
    cohort : str or Path
        The manifest CSV (or BIDS dataset) of the scans the learners train on.
    membership : str, Path or DataFrame
        ``subject_id, group``: which learner (``L1``…, partition-id + 1) holds which subject, and ``unseen``.
    local_models : bool (default: False)
        Also write each learner's returned model every round (the curious controller's seat).
    learner_of : callable (default: :func:`learner_of_reply`)
        Names the learner (``"L2"``) of a reply.
    loss : str (default: "mse")
        The loss the learners train with (``mse`` or ``l1``).
    name : str or None (default: the run directory's name)
        The run's name in ``config.toml``.
    seed : int (default: 0)
        Recorded as the run's seed (the attacks draw their splits from it).
    """

    def __init__(self, strategy: Strategy, run_dir: str | Path, *, model: ModelSpec, cohort: str | Path,
                 membership: str | Path | pd.DataFrame, local_models: bool = False,
                 learner_of: Callable[[Message], str] = learner_of_reply, loss: str = "mse", name: str | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.strategy = strategy
        self.run_dir = Path(run_dir)
        self.local_models = local_models
        self.learner_of = learner_of
        members = read_membership(membership)
        self.learners = learner_groups(members["group"])
        if not self.learners:
            raise FedsimError("a federation's membership table names learners L1, L2, … (group 'train' is one model)")
        if snapshots.complete_rounds(self.run_dir):
            raise FedsimError(f"{str(self.run_dir)!r} already holds a recorded run; choose another run directory")
        self.name = name or self.run_dir.name
        with snapshots.new_run_dir(self.run_dir, self.name):  # a bad table or model leaves no empty directory
            manifest_path, manifest = resolve_cohort(cohort, members, self.run_dir)
            self.net = model.build()
            first = manifest.iloc[0]
            where = f"subject {first['subject_id']!r}"
            check_on_scan(self.net, load_volume(first["path"], tuple(model.shape), where=where), where)
            self.spec = resolved(model, self.net)
            self.architecture = ("imported", self.spec.model_kwargs())
            self.partitions = write_run_files(
                self.run_dir, spec=self.spec, manifest_path=manifest_path, manifest=manifest, membership=members,
                name=self.name, description=f"{model.factory} recorded from a Flower app", seed=seed, loss=loss,
                local_models=local_models, source=f"{__name__}.{type(self).__name__}",
                imported={"recorded_by": f"{__name__}.{type(self).__name__}", "strategy": type(strategy).__name__})
        counts = self.partitions["group"].value_counts()
        self.counts = {g: int(counts.get(g, 0)) for g in [*self.learners, "unseen"]}
        self._checked = False

    # Protocol steps: the wrapped strategy's, with the models written on the way.

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Record the model sent this round if it is not on disk yet (round 0: the initial model)."""
        if server_round - 1 not in snapshots.complete_rounds(self.run_dir):
            self._record(server_round - 1, arrays, None)
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record each learner's returned model (``local_models``), aggregate, record the community model."""
        replies = list(replies)
        if self.local_models:
            for msg in (m for m in replies if not m.has_error()):
                learner = self.learner_of(msg)
                if learner not in self.learners:
                    raise FedsimError(f"{learner} replied, but the membership table's learners are {', '.join(self.learners)}")
                arrays = next(iter(msg.content.array_records.values()))
                snapshots.save_round(self.run_dir, server_round, arrays.to_torch_state_dict(), {}, name=learner,
                                     architecture=self.architecture)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            self._record(server_round, arrays, metrics)
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None) -> Result:
        """Flower's round loop, then ``DONE``: the run directory is complete and ready for the attacks."""
        config = snapshots.read_config(self.run_dir)
        config["federation"]["rounds"] = int(num_rounds)
        snapshots.write_config(self.run_dir, config)
        result = super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn)
        self.finish()
        return result

    def finish(self) -> None:
        """Write ``DONE`` (an app that runs its own loop instead of ``start`` calls this at the end)."""
        rounds = snapshots.complete_rounds(self.run_dir)
        if not rounds:
            raise FedsimError(f"no round was recorded in {str(self.run_dir)!r}; did the strategy run?")
        snapshots.mark_done(self.run_dir, {"final_round": rounds[-1], "recorded": True})

    def _record(self, rnd: int, arrays: ArrayRecord, metrics: MetricRecord | None) -> None:
        state = arrays.to_torch_state_dict()
        if not self._checked:  # the app's weights against the declared model, once, in one line
            load_weights(self.net, state, f"the model the ServerApp sent in round {rnd + 1}")
            self._checked = True
        line = {"round": rnd, **{k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}}
        snapshots.append_metrics(self.run_dir, line)
        snapshots.save_round(self.run_dir, rnd, state, {"env": self.name, "sample_counts": self.counts, "metrics": line},
                             architecture=self.architecture)
