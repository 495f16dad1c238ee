"""A synchronous, in-process Flower ``Grid``: the ServerApp calls the ClientApp directly, no Ray.

For tests and benchmarks only — it is fedsim's shim, not a Flower feature. It runs the very same
``ServerApp``/``ClientApp`` objects as the Ray simulation in a second or two instead of ~11 s of Ray
start-up, one learner after another in the calling process. It touches two internal Flower modules (``supercore.run``,
``supercore.task_identity``) that may move between versions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import uuid4

import torch

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedsim.federation import keys

_FIRST_NODE_ID = 1000


class LocalGrid(Grid):
    """``num_nodes`` virtual nodes with ``partition-id`` 0..N-1, served by ``client_app`` in-process."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1) -> None:
        self._run = Run.create_empty(run_id=run_id)
        # Message() looks up the sender's identity, which the real runtimes set per process.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
        self._app = client_app
        self._contexts = {
            _FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=_FIRST_NODE_ID + i,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:  # type: ignore[override]
        self._run = run

    @property
    def run(self) -> Run:  # type: ignore[override]
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = mid = str(uuid4())  # as InMemoryGrid does
            self._replies[mid] = self._app(message, self._contexts[message.metadata.dst_node_id])
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_local(server_app: ServerApp, client_app: ClientApp, num_nodes: int, run_config: dict[str, Any]) -> None:
    """Run a whole federation in this process (what ``run_simulation`` does, minus Ray)."""
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    server_app(LocalGrid(client_app, num_nodes), context)


def federate_in_process(run_dir: Path, *, rounds: int | None = None) -> None:
    """Run (or continue) a prepared run directory's federation in this process, without Ray: the
    very ServerApp and ClientApp that Ray runs (the tests, the GPU check). The run directory is
    passed as :func:`fedsim.federation.simulation.run_federation` passes it; torch's thread count
    and the environment are restored afterwards (learners set threads for their Ray actor)."""
    from fedsim.federation.client_app import app as client_app
    from fedsim.federation.run_setup import RunSetup
    from fedsim.federation.server_app import app as server_app

    learners = len(RunSetup.load(run_dir).learners)
    run_config = {} if rounds is None else {keys.NUM_SERVER_ROUNDS: rounds}
    previous, threads = os.environ.get(keys.ENV_RUN_DIR), torch.get_num_threads()
    os.environ[keys.ENV_RUN_DIR] = str(Path(run_dir).resolve())
    try:
        run_local(server_app, client_app, learners, run_config)
    finally:
        torch.set_num_threads(threads)
        if previous is None:
            os.environ.pop(keys.ENV_RUN_DIR, None)
        else:
            os.environ[keys.ENV_RUN_DIR] = previous
