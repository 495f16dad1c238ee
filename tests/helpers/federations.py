"""Tiny federations in this process, through Flower's LocalGrid: the very ServerApp and ClientApp that
Ray runs, in about a second each. Shared by the federation, seats and defense tests."""

from __future__ import annotations

from pathlib import Path

from fedsim import snapshots
from fedsim.config import load_env, with_overrides
from fedsim.data.prepare import prepare_data
from fedsim.federation.local_grid import federate_in_process
from fedsim.federation.run_setup import write_run_setup

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "environments"
TINY = ENVIRONMENTS / "tiny.toml"


def federate(run_dir: Path, manifest: Path | None = None, *, env: Path | str = TINY, seed: int | None = None,
             rounds: int | None = None, **federation) -> Path:
    """Prepare ``run_dir`` for an environment (``manifest``: its cohort, else the environment's synthetic
    one) and run it, or continue it, with LocalGrid (:func:`fedsim.federation.local_grid.federate_in_process`)."""
    if not (run_dir / snapshots.CONFIG_FILE).is_file():
        cfg = with_overrides(load_env(env), seed=seed, federation=federation)
        write_run_setup(run_dir, cfg, prepare_data(cfg, manifest), {"cpus_per_learner": 1})
    federate_in_process(run_dir, rounds=rounds)
    return run_dir
