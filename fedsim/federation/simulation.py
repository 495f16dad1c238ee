"""The Ray launcher: the one module that calls ``flwr.simulation.run_simulation``.

``run_simulation`` is deprecated upstream in favour of ``flwr run`` but is the only in-process
entry, so it is kept here and nowhere else. What this module guards against, each one observed
with Flower and Ray: a GPU request on a machine without one empties Ray's actor pool and leaves
Flower's ServerApp thread waiting forever; without an address Ray silently joins any cluster
already running on the machine, and a stale cluster file makes ``ray.init`` hang.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from fedsim.errors import FedsimError
from fedsim.federation import keys

PRIVATE_RAY = "local"  # RAY_ADDRESS value that makes ray.init start a fresh, private instance


class SimulationFailed(FedsimError):
    """Flower or Ray failed outside any learner (backend start, actor pool, ServerApp crash)."""


def learner_resources(
    learners: int, *, cpus: float = 1.0, gpus: float | None = None, cluster: bool = False
) -> tuple[float, float]:
    """CPUs and GPUs per learner actor.

    GPUs are used only where torch sees CUDA; when learners outnumber the GPUs they share them
    (``1/ceil(learners/gpus)`` each). An explicit GPU request without CUDA is refused, because
    Ray would then start no actor and Flower would wait forever — unless the run goes to a
    cluster (``cluster``), whose workers may have GPUs that this machine lacks.
    """
    if not (math.isfinite(cpus) and cpus > 0):
        raise FedsimError(f"--cpus-per-learner must be a positive number, got {cpus}")
    if gpus is None:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        gpus = 0.0 if n == 0 else 1.0 / math.ceil(learners / n)
    elif not (math.isfinite(gpus) and gpus >= 0):
        raise FedsimError(f"--gpus-per-learner must be a non-negative number, got {gpus}")
    elif gpus > 0 and not cluster and not torch.cuda.is_available():
        raise FedsimError(
            f"--gpus-per-learner {gpus} asks for GPUs but torch sees no CUDA device here; "
            "use --gpus-per-learner 0, or --ray-address of a cluster with GPU workers"
        )
    return float(cpus), float(gpus)


def ray_address(requested: str | None) -> str:
    """``--ray-address``, else ``$RAY_ADDRESS``, else a private local Ray (never a stray cluster)."""
    return requested or os.environ.get("RAY_ADDRESS") or PRIVATE_RAY


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Flower logs its deprecation banner, warnings and the tracebacks of Ray failures itself;
    fedsim reports progress, learner failures and a one-line error instead (``verbose``: all).
    Flower's log level and the warning filters are restored afterwards."""
    if verbose:
        yield
        return
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
            yield
    finally:
        flwr_logger.setLevel(level)


def run_federation(
    run_dir: Path, learners: int, *, cpus: float, gpus: float, address: str = PRIVATE_RAY, verbose: bool = False
) -> None:
    """Run the federation of a prepared run directory on Ray, one virtual node per learner.

    Raises
    ------
    FedsimError
        A learner failure beyond ``max_failures`` (from the ServerApp), or :class:`SimulationFailed`.
    """
    from flwr.simulation import run_simulation

    from fedsim.federation.client_app import app as client_app
    from fedsim.federation.server_app import app as server_app

    # The ServerApp runs in this process; run_simulation leaves its run_config empty.
    os.environ[keys.ENV_RUN_DIR] = str(Path(run_dir).resolve())
    os.environ["RAY_ADDRESS"] = address
    if address == PRIVATE_RAY:
        # Ray runs workers at nice 15 by default: on a shared machine the learners, which are the
        # whole job, then starve behind any other process. Be as nice as the launching command.
        os.environ.setdefault("RAY_worker_niceness", "0")
    backend_config = {
        "client_resources": {"num_cpus": cpus, "num_gpus": gpus},
        # actors' output (torch warnings, "Manually terminating ClientAppActor") is noise here:
        # learner errors come back as error replies that name the learner
        "init_args": {"log_to_driver": verbose, "logging_level": "WARNING"},
    }
    try:
        with _quiet(verbose):
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=learners,
                backend_config=backend_config,
                verbose_logging=verbose,
            )
    except FedsimError:
        raise
    except Exception as err:  # noqa: BLE001 - Ray/Flower internals: report in one line
        cause = err
        while cause.__cause__ is not None:  # Flower wraps the root cause twice
            cause = cause.__cause__
        raise SimulationFailed(
            f"the Flower/Ray simulation failed ({type(cause).__name__}: {cause}); "
            f"Ray address {address!r}, {cpus:g} CPU and {gpus:g} GPU per learner; rerun with --verbose for details"
        ) from err
