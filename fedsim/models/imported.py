"""A user's own brain-age model, built by name like fedsim's: ``imported`` in the registry.

A model fedsim did not train (``fedsim import``, or a Flower app recorded with
:class:`fedsim.federation.recorder.RecordingStrategy`) is rebuilt from what every snapshot header
and ``config.toml`` record: the importable ``package.module:Name`` of its class or factory, its
keyword arguments, and what it expects of its input. The module returned *is* the user's module —
the same parameter names and state dict, so their checkpoints load as they are — whose class is
extended by :class:`ImportedModel` with what the attacks read off fedsim's own nets:

* ``forward`` takes fedsim's preprocessed volume (resampled to ``in_shape``, z-scored per scan),
  applies the intensity normalisation the model was trained with, and returns ages in years
  (``age_offset + target_scale * output``: a model trained on z-scored ages declares the mean and
  standard deviation it used, so fedsim's loss on ``(prediction - age) / target_scale`` is its own);
* ``in_shape`` and ``target_scale``, as on :class:`fedsim.models.cnn3d.BrainAgeCNN3D`;
* ``fedsim_layers``: the layers the attacks name (:func:`fedsim.models.layer_paths`). Three of the
  user's layers take the names fedsim's nets give them — ``conv1`` (the first conv), ``conv6`` (the
  last hidden layer) and ``output`` — so every attack's default feature sets apply unchanged; every
  other layer with weights keeps its own dotted name (``features.3``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fedsim.errors import FedsimError
from fedsim.models import register_model
from fedsim.models.blocks import check_in_shape, finite_real

__all__ = ["INTENSITIES", "ROLES", "ImportedModel", "default_layers", "imported", "resolve_factory"]

#: The layer names of fedsim's nets that an imported model's layers take, in forward order.
ROLES = ("conv1", "conv6", "output")


def _zscore(x: torch.Tensor) -> torch.Tensor:
    return x  # fedsim's cache z-scores every scan already


def _minmax(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.reshape(-1, *[1] * (x.dim() - 1))
    hi = flat.max(dim=1).values.reshape(-1, *[1] * (x.dim() - 1))
    return (x - lo) / (hi - lo).clamp_min(1e-12)


#: Per-scan intensity normalisations a model may expect. fedsim's cache holds each scan z-scored, and
#: every normalisation here is invariant to a scan's own affine rescaling, so it is computed exactly from
#: the z-scored volume (raw scanner intensities are not kept, so a model trained on them cannot be served).
INTENSITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "zscore": _zscore,  # (scan - mean) / std over the whole volume
    "minmax": _minmax,  # (scan - min) / (max - min): each scan in [0, 1]
}


def resolve_factory(path: str) -> Callable[..., nn.Module]:
    """The class or factory function named ``package.module:Name`` (``Name`` may be dotted: ``Outer.Inner``)."""
    module_name, sep, name = str(path).partition(":")
    if not sep or not module_name or not name:
        raise FedsimError(f"the model must be named 'package.module:Class' (a class or a factory function), got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise FedsimError(f"cannot import {module_name!r} for model {path!r} ({type(err).__name__}: {err}); "
                          "is its package installed or on PYTHONPATH?") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise FedsimError(f"module {module_name!r} has no {name!r} (model {path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FedsimError(f"{path!r} is not a class or a function that builds a model")
    return obj


class ImportedModel(nn.Module):
    """What fedsim adds to a user's module (a mixin: :func:`imported` puts it before the user's class).

    Never constructed directly; :func:`imported` builds the user's model, then extends its class.
    """

    in_shape: tuple[int, int, int]
    target_scale: float
    fedsim_layers: dict[str, str]
    fedsim_age_offset: float
    fedsim_intensity: str
    fedsim_factory: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ages in years of fedsim's z-scored volumes (B, 1, D, H, W): (B,)."""
        output = super().forward(INTENSITIES[self.fedsim_intensity](x))
        if not isinstance(output, torch.Tensor) or output.numel() != x.shape[0]:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise FedsimError(f"{self.fedsim_factory} returned {got} for {x.shape[0]} scan(s); a brain-age model returns one "
                              "age per scan (shape (B,) or (B, 1))")
        return self.fedsim_age_offset + self.target_scale * output.reshape(x.shape[0])


@functools.cache
def _extended(cls: type) -> type:
    """``cls`` with :class:`ImportedModel` in front (one class per user class, so ``type(a) is type(b)``)."""
    return type(cls.__name__, (ImportedModel, cls), {"__module__": __name__, "__qualname__": f"imported({cls.__qualname__})"})


def _parameterised(model: nn.Module) -> list[str]:
    """Dotted names of the modules that own parameters themselves, in module order."""
    return [name for name, m in model.named_modules() if name and next(m.parameters(recurse=False), None) is not None]


def default_layers(model: nn.Module, probe: torch.Tensor) -> dict[str, str]:
    """``conv1``, ``conv6`` and ``output`` found by running ``model`` once on ``probe``: the first conv to run
    (the first layer with weights if it has no conv), the last conv or linear layer before the output, and
    the last layer with weights to run. A role is left out where the model has too few layers to fill it."""
    order: list[str] = []
    handles = [model.get_submodule(name).register_forward_hook(lambda *_, name=name: order.append(name))
               for name in _parameterised(model)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(probe)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    order = list(dict.fromkeys(order))
    if not order:
        raise FedsimError(f"{type(model).__name__} has no layer with weights; nothing to import")
    kinds = {name: model.get_submodule(name) for name in order}
    convs = [n for n in order if isinstance(kinds[n], nn.modules.conv._ConvNd)]
    roles = {"conv1": (convs or order)[0], "output": order[-1]}
    hidden = [n for n in order[:-1] if isinstance(kinds[n], (nn.modules.conv._ConvNd, nn.Linear)) and n != roles["conv1"]]
    if hidden:
        roles["conv6"] = hidden[-1]
    if roles["output"] == roles["conv1"]:
        del roles["conv1"]  # a single layer: it is the output
    return {role: roles[role] for role in ROLES if role in roles}


def _check_layers(model: nn.Module, layers: Mapping[str, str], factory: str) -> dict[str, str]:
    """``layers`` (role -> the user's dotted layer name), checked: one-line errors that list what exists."""
    unknown = [role for role in layers if role not in ROLES]
    if unknown:
        raise FedsimError(f"layer role {unknown[0]!r} is not one of {', '.join(ROLES)} (e.g. --layers conv6=fc1)")
    own = _parameterised(model)
    modules = dict(model.named_modules())
    for role, name in layers.items():
        if name not in modules or not name:
            raise FedsimError(f"{factory} has no layer {name!r} ({role}); its layers with weights: {', '.join(own)}")
        if next(modules[name].parameters(), None) is None:
            raise FedsimError(f"{factory}'s layer {name!r} ({role}) has no weights; choose one of: {', '.join(own)}")
    chosen = list(layers.values())
    twice = next((n for n in chosen if chosen.count(n) > 1), None)
    if twice is not None:
        raise FedsimError(f"{factory}'s layer {twice!r} is named for two roles; give each role its own layer")
    nested = next(((a, b) for a in chosen for b in chosen if b.startswith(a + ".")), None)
    if nested is not None:
        raise FedsimError(f"{factory}'s layer {nested[1]!r} is inside {nested[0]!r}; name layers that do not overlap")
    return {role: layers[role] for role in ROLES if role in layers}


def _table(model: nn.Module, roles: Mapping[str, str]) -> dict[str, str]:
    """Attack name -> dotted path: the roles under fedsim's names, every other layer with weights (outside
    them) under its own, in module order, so each parameter belongs to exactly one named layer."""
    by_path = {path: role for role, path in roles.items()}
    table = {}
    for name in [n for n, _ in model.named_modules() if n]:
        if name in by_path:
            table[by_path[name]] = name
        elif (next(model.get_submodule(name).parameters(recurse=False), None) is not None
              and not any(name.startswith(p + ".") for p in by_path)):
            table[name] = name
    return table


def _build(factory: str, kwargs: Mapping[str, Any]) -> nn.Module:
    build = resolve_factory(factory)
    try:
        model = build(**dict(kwargs))
    except TypeError as err:
        raise FedsimError(f"{factory}(**{dict(kwargs)!r}) failed: {err}") from None
    if not isinstance(model, nn.Module):
        raise FedsimError(f"{factory} built a {type(model).__name__}, not a torch.nn.Module")
    return model


@register_model("imported")
def imported(
    *,
    factory: str,
    in_shape: Sequence[int],
    kwargs: Mapping[str, Any] | None = None,
    intensity: str = "zscore",
    target_scale: float = 1.0,
    age_offset: float = 0.0,
    layers: Mapping[str, str] | None = None,
) -> nn.Module:
    """Build the user's model ``factory(**kwargs)`` and extend it for fedsim (see the module docstring).

    Parameters
    ----------
    factory
        ``package.module:Class`` (or a function returning the module), importable where fedsim runs.
    in_shape
        The volume (D, H, W) the model takes; fedsim resamples every scan to it.
    kwargs
        Keyword arguments of ``factory`` (plain TOML/JSON values: they are recorded in the run directory).
    intensity
        The per-scan normalisation the model was trained with: one of :data:`INTENSITIES`.
    target_scale, age_offset
        The model's output in years is ``age_offset + target_scale * output`` (a model regressing z-scored
        ages: the training ages' standard deviation and mean).
    layers
        Role (``conv1``, ``conv6``, ``output``) -> the user's dotted layer name; default: :func:`default_layers`
        on a zero volume.
    """
    shape = check_in_shape(in_shape)
    if intensity not in INTENSITIES:
        raise FedsimError(f"intensity {intensity!r} is not one of {', '.join(INTENSITIES)}; fedsim keeps each scan "
                          "z-scored, so a model trained on raw intensities cannot be served")
    if not finite_real("target_scale", target_scale) > 0:
        raise FedsimError(f"target_scale (years per output unit) must be positive, got {target_scale!r}")
    model = _build(factory, kwargs or {})
    model.__class__ = _extended(type(model))
    model.in_shape, model.target_scale = shape, float(target_scale)
    model.fedsim_factory, model.fedsim_intensity = str(factory), intensity
    model.fedsim_age_offset = finite_real("age_offset", age_offset)
    if layers is None:
        try:
            layers = default_layers(model, torch.zeros(1, 1, *shape))
        except FedsimError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's forward: report it in one line
            raise FedsimError(f"{factory} fails on a volume of shape {shape} ({type(err).__name__}: {err}); "
                              "declare the shape it was trained on") from None
    model.fedsim_layers = _table(model, _check_layers(model, layers, str(factory)))
    return model
