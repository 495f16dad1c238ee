"""The feature cache: basic features of every subject of a run, keyed by what they were computed from.

A key hashes the snapshot file's content, whether the predictions are the released (perturbed) or
the clean ones, the training loss, the preprocessed cohort and :data:`FEATURES_VERSION` — never a
round number or a name alone — so a snapshot rewritten on disk (a resumed or retrained run) is
never attacked with the features of its predecessor. Files::

    RUN_DIR/attacks/features/<key>/<feature>.npy    rows in cohort order (``grad:conv6`` → ``grad_conv6``)
    RUN_DIR/attacks/features/<key>/source.json      which snapshot, round and release they came from
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from attacks.signals.features import FEATURES, compute_features
from attacks.target import Snapshot, Target
from fedsim import snapshots
from fedsim.device import resolve_device

__all__ = ["FEATURES_DIR", "FEATURES_VERSION", "FeatureCache", "Progress"]

FEATURES_DIR = Path("attacks") / "features"
#: Bump when a feature's definition changes, so features computed by older code are not reused.
FEATURES_VERSION = 2
#: ``progress(description, done, total)``: what a long computation reports (the command line draws it).
Progress = Callable[[str, int, int], None]


def _file(feature: str) -> str:
    return f"{feature.replace(':', '_')}.npy"


def _feature_of(stem: str) -> str:
    return stem if stem in FEATURES else stem.replace("_", ":", 1)


def _save_npy(path: str, values: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, values)


class FeatureCache:
    """Basic features of every subject of ``target``, per snapshot content and release, on disk."""

    def __init__(self, target: Target, *, method: str = "auto", progress: Progress | None = None) -> None:
        self.target = target
        self.method = method
        self.progress = progress
        self.root = target.run_dir / FEATURES_DIR
        volumes = target.cohort.volumes
        cohort = Path(str(getattr(volumes, "filename", "") or "")).name or "in-memory"
        self._cohort = hashlib.sha256(json.dumps(
            [cohort, list(target.cohort.subject_ids), np.asarray(target.cohort.ages).tolist()]).encode()).hexdigest()

    def key(self, snapshot: Snapshot, *, released: bool) -> str:
        """The folder name of ``snapshot``'s features (its released predictions' if ``released``)."""
        settings = {"version": FEATURES_VERSION, "weights": snapshot.digest, "loss": snapshot.loss,
                    "cohort": self._cohort, "release": snapshot.released if released else None}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def folder(self, snapshot: Snapshot, *, released: bool = False) -> Path:
        return self.root / self.key(snapshot, released=released)

    def get(self, snapshot: Snapshot, basic: Sequence[str], *, released: bool = False) -> dict[str, np.ndarray]:
        """The basic features ``basic`` of every subject (N rows, cohort order), computed once.

        ``released``: prediction-based features read the predictions the run releases
        (``[defense] prediction_noise``): what an outsider sees. Gradients and activations are those
        of the weights either way.
        """
        folder = self.folder(snapshot, released=released)
        missing = [f for f in basic if not (folder / _file(f)).is_file()]
        if missing:
            where = f"{snapshot.name} r{snapshot.round}"
            device = next(snapshot.model.parameters()).device
            fresh = compute_features(
                snapshot.model.to(resolve_device()), self.target.cohort, missing, loss=snapshot.loss, method=self.method,
                release=snapshot.release if released else None,
                progress=None if self.progress is None else
                (lambda done, total: self.progress(f"features of {where}", done, total)))
            snapshot.model.to(device)  # the caller's model stays where it was
            folder.mkdir(parents=True, exist_ok=True)
            source = {"run_dir": str(self.target.run_dir), "name": snapshot.name, "round": snapshot.round,
                      "weights_sha256": snapshot.digest, "release": snapshot.released if released else None}
            snapshots.write_text(folder / "source.json", json.dumps(source, indent=1))
            for feature, values in fresh.items():
                snapshots.atomic_write(folder / _file(feature), lambda tmp, v=values: _save_npy(tmp, v))
        return {f: np.load(folder / _file(f)) for f in basic}

    def read(self, snapshot: Snapshot, *, released: bool = False) -> dict[str, np.ndarray]:
        """Every feature already cached for ``snapshot``, memory-mapped (nothing is computed)."""
        folder = self.folder(snapshot, released=released)
        return {_feature_of(p.stem): np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}
