"""What the study and the sweep run unless told otherwise, without the code that runs them (no pandas,
no torch): a command's parser reads it at Python's start-up cost, and :mod:`~attacks.experiments.study`
and :mod:`~attacks.experiments.sweep` import it from here."""

from __future__ import annotations

import dataclasses

from fedsim.config import DefenseConfig

__all__ = ["DEFAULT_ENVS", "DEFAULT_FEATURES", "SWEEPABLE"]

#: The study's environments: both centralized baselines and the four federations.
DEFAULT_ENVS = ("centralized", "centralized-2d", "uniform-iid", "uniform-noniid", "skewed-iid", "skewed-noniid")
DEFAULT_FEATURES = "error,pred+label,grad_norm"  # a sweep's: black-box and cheap white-box sets, one gradient pass
#: The [defense] keys a sweep can vary: those that take a number (``central_dp`` names who clips).
SWEEPABLE = tuple(f.name for f in dataclasses.fields(DefenseConfig) if f.type == "int" or "float" in f.type)
