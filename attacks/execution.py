"""Where the attack side's independent trainings run: in this process, or as Ray tasks.

Reference models, property inference's shadow updates and the like are *tasks*: each depends only on its
own inputs and seed, never on the driver's random state or on the tasks before it. One executor runs them,
:class:`SerialExecutor` (the default: no start-up cost, what tests and small runs want) or :class:`RayExecutor`
(a private local Ray, or the cluster of ``--ray-address``, with CPUs and fractional GPUs per task, as training
places its learners), so the serial and the cluster path share every line but the dispatch and give the same
numbers. A command picks the executor once and runs inside :func:`using_executor`; every step that trains
tasks asks :func:`current_executor`, as every step asks :func:`fedsim.device.resolve_device` for its device.

A task's output is on disk under a key of the content it was computed from before the next task's result is
awaited (:func:`cached_map`, or the task's own files as reference models write them), so an interrupted audit,
serial or on Ray, resumes without redoing a finished task and starts no Ray for tasks that are all done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fedsim import snapshots
from fedsim.errors import FedsimError
from fedsim.federation.simulation import PRIVATE_RAY, ray_address
from fedsim.progress import Progress

__all__ = [
    "EXECUTORS", "TASKS_DIR", "Done", "Executor", "RayExecutor", "SerialExecutor", "cached_map", "content_key",
    "current_executor", "using_executor",
]

#: ``--executor`` choices.
EXECUTORS = ("serial", "ray")
#: Where :func:`cached_map` keeps task outputs inside a run directory, one folder per kind of task.
TASKS_DIR = Path("attacks") / "tasks"

T = TypeVar("T")
R = TypeVar("R")
#: ``done(index, result)``: called in the driver as each task finishes (on Ray, in any order).
Done = Callable[[int, Any], None]


class Executor(Protocol):
    """Runs ``fn`` over ``tasks``; results in task order, ``done(i, result)`` as each one finishes."""

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, done: Done | None = None) -> list[R]: ...


class SerialExecutor:
    """Every task in this process, in order, on the command's device: nothing to start, nothing to ship."""

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, done: Done | None = None) -> list[R]:
        results = []
        for i, task in enumerate(tasks):
            results.append(fn(task))
            if done is not None:
                done(i, results[-1])
        return results


def _in_worker(fn: Callable[[T], R], task: T, cpus: float, gpus: float) -> R:
    """One task in a Ray worker: the torch threads and device of its resources (as a learner actor's). Tasks it
    starts itself (a sweep value's reference models) are Ray tasks of the same resources: Ray lends the waiting
    task's CPU to them."""
    import torch

    from fedsim.device import using_device

    threads = max(1, int(cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with using_device("cuda" if gpus > 0 else "cpu"), using_executor(RayExecutor.in_task(cpus, gpus)):
        return fn(task)


def _check_reachable(address: str) -> None:
    """A ``HOST:PORT`` that accepts no connection is one line at once: ``ray.init`` would retry for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", a Ray client URL: ray.init resolves those
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise FedsimError(f"--ray-address {address}: no Ray head answers there ({err}); start one with "
                          "`ray start --head` (deploy/README.md) or drop --ray-address for a private local Ray") from None


class RayExecutor:
    """Every task a Ray task of ``cpus`` CPUs and ``gpus`` GPUs (fractions share a GPU), on the cluster at
    ``address`` (default: ``$RAY_ADDRESS``, else a private local Ray; never a cluster that was not named, as
    :func:`fedsim.federation.simulation.ray_address` decides for training). ``gpus`` defaults to one per task
    where torch sees CUDA, else none; GPUs that a private Ray cannot have are refused up front (Ray would wait
    for them forever), and so is a ``HOST:PORT`` where no Ray head answers.

    Ray starts at the first map with work to do (a rerun whose tasks are all on disk starts none) and stops at
    :meth:`close` if this executor started it; a Ray already initialised in this process is used as it is. A
    task runs on ``cuda`` when it has a GPU share, else on the CPU with ``max(1, int(cpus))`` torch threads. A
    failed task does not stop the others: every finished task still reaches ``done``, then the first failure
    is raised (its own exception, so a :class:`~fedsim.errors.FedsimError` stays one line).
    """

    def __init__(self, *, address: str | None = None, cpus: float = 1.0, gpus: float | None = None) -> None:
        import torch

        address = ray_address(address)
        if not (math.isfinite(cpus) and cpus > 0):
            raise FedsimError(f"--cpus-per-task must be a positive number, got {cpus}")
        if gpus is None:
            gpus = 1.0 if torch.cuda.is_available() else 0.0
        elif not (math.isfinite(gpus) and gpus >= 0):
            raise FedsimError(f"--gpus-per-task must be a non-negative number, got {gpus}")
        elif gpus > 0 and address == PRIVATE_RAY and not torch.cuda.is_available():
            raise FedsimError(f"--gpus-per-task {gpus:g} asks for GPUs but torch sees no CUDA device here; use "
                              "--gpus-per-task 0, or --ray-address of a cluster with GPU workers")
        if address != PRIVATE_RAY:
            _check_reachable(address)  # before any work, not after an hour of it
        self.address, self.cpus, self.gpus = address, float(cpus), float(gpus)
        self._started = False

    @classmethod
    def in_task(cls, cpus: float, gpus: float) -> RayExecutor:
        """The executor of a Ray task's own tasks: the Ray that runs it (initialised in every worker), the same
        resources per task, nothing to start or stop."""
        executor = cls.__new__(cls)
        executor.address, executor.cpus, executor.gpus, executor._started = "the task's own Ray", cpus, gpus, False
        return executor

    def _start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address == PRIVATE_RAY:
            # Ray runs workers at nice 15 by default: behind any other process they starve (as training's learners)
            os.environ.setdefault("RAY_worker_niceness", "0")
        try:
            with warnings.catch_warnings():  # Ray's notice of a future default (GPU visibility): not the user's concern
                warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise FedsimError(f"cannot start or reach Ray at {self.address!r} ({type(err).__name__}: {err}); "
                              "check --ray-address (HOST:PORT of the head) or drop it for a private local Ray") from None
        self._started = True

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, done: Done | None = None) -> list[R]:
        if not tasks:
            return []
        self._start()
        import ray

        shared = ray.put(fn)  # once in the object store, not once per task
        remote = ray.remote(_in_worker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
        pending = [remote.remote(shared, task, self.cpus, self.gpus) for task in tasks]
        index = {ref: i for i, ref in enumerate(pending)}
        results: list[Any] = [None] * len(tasks)
        failure: BaseException | None = None
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        results[index[ref]] = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        failure = failure or (err.cause if isinstance(err.cause, BaseException) else err)
                        continue
                    if done is not None:
                        done(index[ref], results[index[ref]])
        except BaseException:  # Ctrl-C, or done() failed: stop what has not finished
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        if failure is not None:
            raise failure
        return results

    def close(self) -> None:
        """Stop the Ray this executor started (a private one ends; a cluster is only left)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


_current: ContextVar[Executor | None] = ContextVar("attacks_executor", default=None)


@contextlib.contextmanager
def using_executor(executor: Executor) -> Iterator[Executor]:
    """Inside, :func:`current_executor` gives ``executor`` (which stays open: a :class:`RayExecutor` keeps its
    Ray, warm, for the next block until :meth:`RayExecutor.close`)."""
    token = _current.set(executor)
    try:
        yield executor
    finally:
        _current.reset(token)


def current_executor() -> Executor:
    """The executor of the enclosing :func:`using_executor`, else a :class:`SerialExecutor`."""
    return _current.get() or SerialExecutor()


def content_key(content: Any) -> str:
    """A short hash of JSON-able ``content``: what a task's output is stored under."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_map(fn: Callable[[T], Any], tasks: Sequence[T], *, keys: Sequence[str], folder: Path, description: str,
               progress: Progress | None = None) -> list[Any]:
    """``fn`` over ``tasks`` with the current executor, each JSON-able output stored as ``folder/<key>.json``
    as it arrives; tasks whose file exists are read, not run. ``progress(description, done, total)`` counts
    both. Outputs come back as JSON reads them, cached or not (floats round-trip exactly)."""
    if len(keys) != len(tasks):
        raise ValueError("cached_map needs one key per task")
    folder = Path(folder)
    results: list[Any] = [None] * len(tasks)
    todo = []
    for i, key in enumerate(keys):
        path = folder / f"{key}.json"
        if path.is_file():
            results[i] = json.loads(path.read_text())
        else:
            todo.append(i)
    finished = len(tasks) - len(todo)
    if progress is not None:
        progress(description, finished, len(tasks))

    def store(j: int, output: Any) -> None:
        nonlocal finished
        text = json.dumps(output)
        snapshots.write_text(folder / f"{keys[todo[j]]}.json", text)
        results[todo[j]] = json.loads(text)
        finished += 1
        if progress is not None:
            progress(description, finished, len(tasks))

    current_executor().map(fn, [tasks[i] for i in todo], done=store)
    return results
