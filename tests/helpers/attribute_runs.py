"""Tiny cohorts whose scans carry sex (and two sites), and federations planted on them: the attribute tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.config import load_env, with_overrides
from fedsim.data.prepare import prepare_data
from fedsim.data.synthetic import AnatomyParams
from fedsim.federation.local_grid import federate_in_process
from fedsim.federation.run_setup import write_run_setup

from federations import ENVIRONMENTS

#: strong effects, so that a tiny network on 16x20x16 volumes can pick sex up in seconds
SEXED = AnatomyParams(sex_gm_difference=0.3, male_atrophy_ratio=1.5)


def variant(manifest: Path, name: str, **columns) -> Path:
    """A manifest over the same scans with some columns replaced (``column=values``)."""
    table = pd.read_csv(manifest).assign(**columns)
    out = manifest.with_name(f"{name}.csv")
    table.to_csv(out, index=False)
    return out


def planted_federation(run_dir: Path, manifest: Path, shares: list[float], *, rounds: int = 1, seed: int = 0,
                       **train) -> Path:
    """A tiny federation of ``len(shares)`` learners whose cohorts hold these shares of women (local models
    kept; ``train``: [train] overrides): the partition is planted by hand, the subjects no learner holds unseen."""
    cfg = with_overrides(load_env(ENVIRONMENTS / "tiny-learners.toml"), seed=seed, federation={"rounds": rounds},
                         train=train)
    cfg = dataclasses.replace(cfg, partition=dataclasses.replace(cfg.partition, learners=len(shares),
                                                                 learner_weights=[1.0] * len(shares)))
    data = prepare_data(cfg, manifest)
    sex = pd.read_csv(manifest).set_index("subject_id")["sex"]
    table = data.partitions.copy()
    pool = table.index[table["group"] != "unseen"].to_numpy()
    table["group"] = "unseen"  # subjects no learner holds are never trained on: unseen
    women = [i for i in pool if sex[table.at[i, "subject_id"]] == "F"]
    men = [i for i in pool if sex[table.at[i, "subject_id"]] == "M"]
    size = min(len(women), len(men)) * 2 // len(shares)
    rng = np.random.default_rng(seed)
    rng.shuffle(women), rng.shuffle(men)
    for k, share in enumerate(shares):
        n_women = round(share * size)
        for i in [women.pop() for _ in range(n_women)] + [men.pop() for _ in range(size - n_women)]:
            table.at[i, "group"] = f"L{k + 1}"
    write_run_setup(run_dir, cfg, dataclasses.replace(data, partitions=table), {"cpus_per_learner": 1})
    federate_in_process(run_dir)
    return run_dir


def point_at(run_dir: Path, manifest: Path) -> Path:
    """Make a run read its subjects from another manifest over the same scans (other labels, same images):
    what an attacker knows about them changes, the models do not."""
    config = run_dir / "config.toml"
    text = config.read_text()
    old = next(line for line in text.splitlines() if line.startswith("manifest = "))
    config.write_text(text.replace(old, f"manifest = {str(Path(manifest).resolve())!r}".replace("'", '"')))
    return run_dir
