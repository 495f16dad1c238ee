"""A federated run from an environment to ``DONE``: check the options, create or resume its
directory, place its learners on Ray, run it.

``fedsim train`` (``python -m fedsim.run``) and :func:`fedsim.train` are thin layers over these
steps, so a notebook and the command produce the same run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim import snapshots
from fedsim.config import EnvConfig
from fedsim.data.prepare import prepare_data
from fedsim.errors import FedsimError
from fedsim.federation.run_setup import RUN_TABLE, RunSetup, update_config, write_run_setup
from fedsim.federation.server_app import finish_run
from fedsim.federation.simulation import PRIVATE_RAY, learner_resources, run_federation
from fedsim.pretrained import initial_model
from fedsim.progress import Progress


def check_options(*, rounds: int | None, address: str, cpus: float = 1.0, gpus: float | None = None) -> None:
    """The options that need no data, checked before any data work."""
    if rounds is not None and rounds < 1:
        raise FedsimError(f"--rounds must be at least 1, got {rounds}")
    if gpus is not None or cpus != 1.0:
        learner_resources(1, cpus=cpus, gpus=gpus, cluster=address != PRIVATE_RAY)


def new_run(cfg: EnvConfig, cohort: str | Path | None, out: Path | None, *, progress: Progress | None = None) -> Path:
    """Prepare the data of a federated ``cfg`` and write a fresh run directory (refusing one with rounds)."""
    if cfg.partition.learners == 0:
        raise FedsimError(f"environment {cfg.name!r} is centralized (learners = 0); train it with fedsim centralized")
    initial_model(cfg)  # a misfit [train] init: one line, before any data work
    with snapshots.new_run_dir(out, cfg.name) as run_dir:  # refused before any data work
        if snapshots.complete_rounds(run_dir):
            raise FedsimError(f"{str(run_dir)!r} already holds rounds of a run; continue it with "
                              f"fedsim train --resume {run_dir} (fedsim.resume in Python)")
        write_run_setup(run_dir, cfg, prepare_data(cfg, cohort, progress=progress), {})
    return run_dir


def resume_run(run_dir: Path, rounds: int | None) -> list[int]:
    """Check that ``run_dir`` can continue (to ``rounds``, extending it if given); returns its complete rounds."""
    setup = RunSetup.load(run_dir)
    done = snapshots.complete_rounds(run_dir)
    target = rounds or setup.cfg.federation.rounds
    if snapshots.is_done(run_dir) and done and done[-1] >= target:
        raise FedsimError(f"{str(run_dir)!r} finished all {done[-1]} rounds; pass --rounds N > {done[-1]} to extend it")
    if done and target < done[-1]:
        raise FedsimError(f"--rounds {target} is below the {done[-1]} rounds already in {str(run_dir)!r}")
    if rounds is not None:
        update_config(run_dir, "federation", rounds=rounds)
    (run_dir / snapshots.DONE_FILE).unlink(missing_ok=True)
    return done


def place_learners(run_dir: Path, *, address: str, cpus: float = 1.0, gpus: float | None = None) -> tuple[float, float]:
    """CPUs and GPUs per learner actor for this run on ``address``, recorded in its ``[run]`` table."""
    learners = len(RunSetup.load(run_dir).learners)
    cpus, gpus = learner_resources(learners, cpus=cpus, gpus=gpus, cluster=address != PRIVATE_RAY)
    update_config(run_dir, RUN_TABLE, cpus_per_learner=cpus, gpus_per_learner=gpus)
    return cpus, gpus


def federate(run_dir: Path, *, address: str, verbose: bool = False) -> dict[str, Any]:
    """Run (or continue) a placed run to its last round on Ray and return its ``DONE`` summary."""
    setup = RunSetup.load(run_dir)
    run = setup.run
    run_federation(run_dir, len(setup.learners), cpus=float(run["cpus_per_learner"]),
                   gpus=float(run["gpus_per_learner"]), address=address, verbose=verbose)
    done = snapshots.complete_rounds(run_dir)
    if not done or done[-1] < setup.cfg.federation.rounds:
        raise FedsimError(f"the federation stopped after round {done[-1] if done else 'none'}; "
                          f"continue it with fedsim train --resume {run_dir} (fedsim.resume in Python)")
    # the ServerApp finished the run (learning curve, DONE) after its final round
    return snapshots.read_done(run_dir) if snapshots.is_done(run_dir) else finish_run(setup)
