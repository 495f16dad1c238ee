"""An executor that runs each task as a Ray worker would, without Ray's start-up: for checking that a task path
gives the serial numbers."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from attacks.execution import SerialExecutor, using_executor


class AsFreshWorkers:
    """Runs every task with the job and the task pickled there and the result back, in reverse order, calling
    ``forget()`` before each (a process-wide cache the driver filled is not there in a worker) and with the
    serial executor inside (a Ray worker's own); ``ran`` lists the tasks it ran."""

    def __init__(self, forget: Callable[[], None] = lambda: None) -> None:
        self.forget, self.ran = forget, []

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], *, done: Callable[[int, Any], None] | None = None) -> list[Any]:
        results: list[Any] = [None] * len(tasks)
        for i in reversed(range(len(tasks))):
            self.forget()
            self.ran.append(tasks[i])
            with using_executor(SerialExecutor()):
                found = pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(tasks[i])))
            results[i] = pickle.loads(pickle.dumps(found))
            if done is not None:
                done(i, results[i])
        return results
