"""Run-directory layout and round snapshots: the contract between training and attacks.

::

    runs/<env>-<name>/
      config.toml          resolved configuration (model kwargs, partition, training)
      partitions.csv       subject_id, age, age_bin, group (L1..LK | train | val | unseen)
      metrics.jsonl        one JSON object per round
      rounds/0003/model.safetensors   community (or centralized) model after round 3; 0000 = initial
      rounds/0003/meta.json           round, environment, sample counts, metrics
      rounds/0003/L2.safetensors      learner L2's local model (only with snapshot_local)
      DONE                 written last: the run finished

Weights are safetensors, so a snapshot loads without pickle. Every file is written to a
temporary name and renamed, so a crash never leaves a half-written round.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import tomli_w
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fedsim.config import tomllib
from fedsim.errors import FedsimError
from fedsim.models import build_model

ROUNDS_DIR = "rounds"
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
PARTITIONS_FILE = "partitions.csv"
DONE_FILE = "DONE"


@contextmanager
def new_run_dir(out: Path | None, env_name: str) -> Iterator[Path]:
    """``out`` if given (must not hold a finished run), else ``runs/<env>-<timestamp>``, for setting up a run;
    a directory this call created is removed again if the setup fails (a bad cohort leaves no empty run)."""
    if out is None:
        out = Path("runs") / f"{env_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    if is_done(out):
        raise FedsimError(f"{str(out)!r} already holds a finished run; choose another --out")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; run dirs and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a small text file atomically."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def round_dir(run_dir: Path, rnd: int) -> Path:
    return Path(run_dir) / ROUNDS_DIR / f"{rnd:04d}"


def save_round(
    run_dir: Path,
    rnd: int,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    name: str = "model",
    architecture: tuple[str, dict[str, Any]] | None = None,
) -> Path:
    """Write one model of round ``rnd`` (``name`` = ``model`` or a learner id) plus, for the
    community model, its metadata. The metadata is written last: a round counts as complete
    once its ``meta.json`` exists. ``architecture`` (registry name, constructor arguments) goes
    into the safetensors header, so :func:`load_model` rebuilds the model from the file alone."""
    d = round_dir(run_dir, rnd)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    header = {"round": str(rnd)}
    if architecture is not None:
        header.update(model=architecture[0], model_kwargs=json.dumps(architecture[1]))
    atomic_write(d / f"{name}.safetensors", lambda tmp: save_file(tensors, tmp, metadata=header))
    if name == "model":
        write_text(d / META_FILE, json.dumps({"round": rnd, **meta}, indent=2))
    return d / f"{name}.safetensors"


def complete_rounds(run_dir: Path) -> list[int]:
    """Rounds whose community model and metadata are both on disk, ascending."""
    root = Path(run_dir) / ROUNDS_DIR
    if not root.is_dir():
        return []
    return sorted(
        int(d.name) for d in root.iterdir()
        if d.name.isdigit() and (d / MODEL_FILE).is_file() and (d / META_FILE).is_file()
    )


def load_round(run_dir: Path, rnd: int, *, name: str = "model") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata of one round; a clear error if that round is not on disk."""
    d = round_dir(run_dir, rnd)
    path = d / f"{name}.safetensors"
    if not path.is_file() or not (d / META_FILE).is_file():
        have = complete_rounds(run_dir)
        listed = f"rounds on disk: {have[0]}..{have[-1]}" if have else "it has no snapshots"
        raise FedsimError(f"run {str(run_dir)!r} has no {name} for round {rnd}; {listed}")
    return load_file(path), json.loads((d / META_FILE).read_text())


def load_model(path: str | Path) -> torch.nn.Module:
    """The model in a snapshot file, rebuilt from its own header (no run directory needed)."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if "model" not in header:
        raise FedsimError(f"{str(path)!r} does not record its model (written before fedsim recorded architectures)")
    kwargs = json.loads(header["model_kwargs"])
    if "in_shape" in kwargs:
        kwargs["in_shape"] = tuple(kwargs["in_shape"])
    model = build_model(header["model"], **kwargs)
    model.load_state_dict(load_file(str(path)))
    return model


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """The fully resolved configuration, so a run can be rebuilt and attacked later."""
    write_text(Path(run_dir) / CONFIG_FILE, tomli_w.dumps(config))


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FedsimError(f"{str(run_dir)!r} is not a fedsim run directory (no {CONFIG_FILE})")
    return tomllib.loads(path.read_text())


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """One JSON line per round; appended and flushed so a crash keeps every finished round."""
    with open(Path(run_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dp_sgd_epsilons(metrics: dict[str, Any]) -> list[float]:
    """The DP-SGD accountants' ε in one row of ``metrics.jsonl``: a centralized run's ``epsilon``, or every learner's
    ``<learner>_epsilon`` (never averaged); central DP's learner-level ``central_epsilon`` is another guarantee."""
    return [float(v) for k, v in metrics.items()
            if (k == "epsilon" or k.endswith("_epsilon")) and k != "central_epsilon"]


def mark_done(run_dir: Path, summary: dict[str, Any]) -> None:
    write_text(Path(run_dir) / DONE_FILE, json.dumps(summary, indent=2))


def read_done(run_dir: Path) -> dict[str, Any]:
    """The summary a finished run wrote last (e.g. ``best_round`` of a centralized run)."""
    return json.loads((Path(run_dir) / DONE_FILE).read_text())


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE_FILE).is_file()
