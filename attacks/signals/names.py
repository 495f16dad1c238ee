"""The signals a seat can read, by name, without the code that reads them (no torch).

A command's parser lists them in its help and choices from here, at Python's start-up cost;
:mod:`attacks.signals.features` and :mod:`attacks.signals.updates` import them from here and hold
how each is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFENSES", "FEATURES", "Feature", "feature_listing"]


@dataclass(frozen=True)
class Feature:
    """A basic feature (how it is read off a pass: :data:`attacks.signals.features.READERS`).

    ``layers`` says whether the name takes a ``:<layer>`` suffix and which layers
    are valid: ``None`` (no suffix), ``"children"`` (any top-level layer) or
    ``"parameters"`` (layers that own parameters). ``gradients`` is ``"none"``,
    ``"layer"`` (the suffix layer's) or ``"all"`` (every layer's).
    """

    name: str
    layers: str | None = None
    gradients: str = "none"
    alias: str | None = None


#: Basic features by name.
FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("prediction", alias="pred"),
    Feature("label"),
    Feature("error"),
    Feature("loss"),
    Feature("grad_norm", gradients="all"),
    Feature("activation", layers="children"),
    Feature("grad", layers="parameters", gradients="layer"),
)}


def feature_listing() -> str:
    """Every registered feature as a spec names it (``grad:<layer>``), with its alias: for errors and help texts."""

    def one(f: Feature) -> str:
        shown = f"{f.name}:<layer>" if f.layers else f.name
        return f"{shown} ({f.alias})" if f.alias else shown

    return ", ".join(one(f) for f in FEATURES.values())


#: Defenses of a learner's update (:func:`attacks.signals.updates.parse_defense`):
#: name -> (what its value is, default value)
DEFENSES: dict[str, tuple[str, float]] = {
    "none": ("", 0.0),
    "dp_sgd": ("noise multiplier (per-sample clip 1.0)", 1.0),
    "model_noise": ("std added to every shared weight", 1e-3),
    "clip": ("L2 bound of the update", 1e-3),
    "secagg": ("learners averaged", 4.0),
}
