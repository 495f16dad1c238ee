"""Tiny federations in this process, through Flower's LocalGrid: the very ServerApp and ClientApp that
Ray runs, in about a second each. Shared by the federation, seats and defense tests."""

from __future__ import annotations

from pathlib import Path

import torch

from fedsim import snapshots
from fedsim.config import load_env, with_overrides
from fedsim.data.prepare import prepare_data
from fedsim.federation import keys
from fedsim.federation.client_app import app as client_app
from fedsim.federation.local_grid import run_local
from fedsim.federation.run_setup import RunSetup, write_run_setup
from fedsim.federation.server_app import app as server_app

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "environments"
TINY = ENVIRONMENTS / "tiny.toml"


def federate(run_dir: Path, manifest: Path | None = None, *, env: Path | str = TINY, seed: int | None = None,
             rounds: int | None = None, **federation) -> Path:
    """Prepare ``run_dir`` for an environment (``manifest``: its cohort, else the environment's synthetic
    one) and run it, or continue it, with LocalGrid; torch's thread count is restored afterwards
    (learners set it for their Ray actor, here they run in this process)."""
    if not (run_dir / snapshots.CONFIG_FILE).is_file():
        cfg = with_overrides(load_env(env), seed=seed, federation=federation)
        write_run_setup(run_dir, cfg, prepare_data(cfg, manifest), {"cpus_per_learner": 1})
    setup = RunSetup.load(run_dir)
    run_config = {keys.RUN_DIR: str(run_dir)}
    if rounds is not None:
        run_config[keys.NUM_SERVER_ROUNDS] = rounds
    threads = torch.get_num_threads()
    try:
        run_local(server_app, client_app, len(setup.learners), run_config)
    finally:
        torch.set_num_threads(threads)
    return run_dir
