"""Brain-age regressors by name, and per-layer access for gradient-based attacks.

Configs and the command line name a model (``"cnn3d"``, ``"slice_mean2d"``, ``"sfcn"``);
:func:`build_model` turns the name and keyword arguments into a module and turns
typos into one-line :class:`~fedsim.errors.FedsimError` messages.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from fedsim.errors import FedsimError

__all__ = ["MODELS", "build_model", "get_layer", "layer_parameters", "layer_paths", "register_model"]

ModelT = TypeVar("ModelT", bound=Callable[..., nn.Module])

#: Registered model classes (or factories: ``imported`` builds a user's class) by name.
MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[ModelT], ModelT]:
    """Class decorator that makes a model buildable by ``name``.

    Raises
    ------
    ValueError
        If ``name`` is taken: two classes under one name is a programming error.
    """

    def register(cls: ModelT) -> ModelT:
        if name in MODELS:
            taken_by = MODELS[name].__name__
            raise ValueError(f"model name {name!r} is already registered to {taken_by}")
        MODELS[name] = cls
        return cls

    return register


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Construct the model registered as ``name`` with keyword arguments ``kwargs``.

    Arguments are checked against the constructor's signature first, so a
    misspelt config key names itself instead of surfacing as a TypeError.
    """
    if name not in MODELS:
        raise FedsimError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    allowed = list(inspect.signature(cls).parameters)
    unexpected = [key for key in kwargs if key not in allowed]
    if unexpected:
        raise FedsimError(
            f"model {name!r} got unexpected argument(s) {', '.join(map(repr, unexpected))}; "
            f"allowed: {', '.join(allowed)}"
        )
    return cls(**kwargs)


def layer_paths(model: nn.Module) -> dict[str, str]:
    """The layers attacks address by name, each with its dotted module path, in module order.

    A model's top-level children (``conv1`` … ``output``), unless it carries its own table as
    ``fedsim_layers`` (an imported model: :mod:`fedsim.models.imported` names the user's layers).
    """
    table = getattr(model, "fedsim_layers", None)
    if table is not None:
        return dict(table)
    return {name: name for name, _ in model.named_children()}


def layer_parameters(model: nn.Module) -> dict[str, list[str]]:
    """Map each layer (:func:`layer_paths`) that owns parameters to its full parameter names.

    Attacks build per-layer gradient features from this (e.g. ``"conv6"`` ->
    ``["conv6.0.weight", "conv6.0.bias"]``); the dict is in module order.
    """
    layers: dict[str, list[str]] = {}
    for name, path in layer_paths(model).items():
        names = [f"{path}.{param}" for param, _ in model.get_submodule(path).named_parameters()]
        if names:
            layers[name] = names
    return layers


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the layer ``name`` (e.g. ``"conv6"``, a top-level child), for hooks and attacks."""
    paths = layer_paths(model)
    if name not in paths:
        raise FedsimError(
            f"{type(model).__name__} has no layer {name!r}; choose one of: {', '.join(paths)}"
        )
    return model.get_submodule(paths[name])


# Imported last: the model modules register themselves with the decorator above.
from fedsim.models import cnn3d, sfcn, slice_mean  # noqa: E402, F401
from fedsim.models import imported  # noqa: E402, F401  (a user's own model: fedsim import)
