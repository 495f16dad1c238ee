"""A user's own brain-age model, built by name like fedsim's: ``imported`` in the registry.

A model fedsim did not train (``fedsim import``, or a Flower app recorded with
:class:`fedsim.federation.recorder.RecordingStrategy`) is rebuilt from what every snapshot header
and ``config.toml`` record: the importable ``package.module:Name`` of its class or factory, its
keyword arguments, and what it expects of its input. The module returned *is* the user's module —
the same parameter names and state dict, so their checkpoints load as they are — whose class is
extended by :class:`ImportedModel` with what the attacks read off fedsim's own nets:

* ``forward`` takes fedsim's preprocessed volume (resampled to ``in_shape``, z-scored per scan),
  applies the intensity normalisation the model was trained with (then, if declared, takes the
  centre ``crop`` the model was trained on), and returns ages in years (``age_offset +
  target_scale * output``: a model trained on z-scored ages declares the mean and standard deviation
  it used, so fedsim's loss on ``(prediction - age) / target_scale`` is its own). A model with an
  output of its own (:class:`fedsim.training.OwnOutput`, e.g. SFCN's age bins) returns that output
  unchanged: training code and attacks read it through its ``output_loss`` and ``output_ages``;
* ``in_shape`` and ``target_scale``, as on :class:`fedsim.models.cnn3d.BrainAgeCNN3D`;
* ``fedsim_layers``: the layers the attacks name (:func:`fedsim.models.layer_paths`). Three of the
  user's layers take the names fedsim's nets give them — ``conv1`` (the first conv), ``conv6`` (the
  last hidden layer) and ``output`` — so every attack's default feature sets apply unchanged; every
  other layer with weights keeps its own dotted name (``features.3``). One of fedsim's registered
  models (``sfcn``, or ``fedsim.models.sfcn:SFCN``) keeps its own layers, as a run fedsim trained.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fedsim.errors import FedsimError
from fedsim.models import MODELS, register_model
from fedsim.models.blocks import check_in_shape, finite_real, positive_int
from fedsim.training import own_output

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


def _mean(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.reshape(-1, *[1] * (x.dim() - 1))
    mean = flat.mean(dim=1).reshape(-1, *[1] * (x.dim() - 1))
    return (x - lo) / (mean - lo).clamp_min(1e-12)


#: Per-scan intensity normalisations a model may expect. fedsim's cache holds each scan z-scored, and
#: every normalisation here is invariant to a scan's own affine rescaling, so it is computed exactly from
#: the z-scored volume (raw scanner intensities are not kept, so a model trained on them cannot be served).
INTENSITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "zscore": _zscore,  # (scan - mean) / std over the whole volume
    "minmax": _minmax,  # (scan - min) / (max - min): each scan in [0, 1]
    # (scan - min) / (mean - min): SFCN's scan / scan.mean() (Peng et al.) for a scan whose minimum is 0,
    # the background of a skull-stripped T1 in MNI space; a scan with negative voxels is shifted first
    "mean": _mean,
}


def _fedsim_models() -> dict[str, Callable[..., nn.Module]]:
    """fedsim's registered models a user may import by name (all but ``imported`` itself)."""
    return {name: build for name, build in MODELS.items() if name != "imported"}


def resolve_factory(path: str) -> Callable[..., nn.Module]:
    """The class or factory function named ``package.module:Name`` (``Name`` may be dotted: ``Outer.Inner``),
    or one of fedsim's registered models by its name (``sfcn``)."""
    if str(path) in _fedsim_models():
        return _fedsim_models()[str(path)]
    module_name, sep, name = str(path).partition(":")
    if not sep or not module_name or not name:
        raise FedsimError(f"the model must be named 'package.module:Class' (a class or a factory function) or be one "
                          f"of fedsim's ({', '.join(sorted(_fedsim_models()))}), got {path!r}")
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
    fedsim_crop: tuple[slice, slice, slice] | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ages in years of fedsim's z-scored volumes (B, 1, D, H, W): (B,); or, for an
        :class:`~fedsim.training.OwnOutput` model, its own output."""
        x = INTENSITIES[self.fedsim_intensity](x)
        if self.fedsim_crop is not None:
            x = x[(..., *self.fedsim_crop)]
        output = super().forward(x)
        if own_output(self) is not None:
            return output
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


def _build(factory: str, build: Callable[..., nn.Module], kwargs: Mapping[str, Any]) -> nn.Module:
    try:
        model = build(**dict(kwargs))
    except TypeError as err:
        raise FedsimError(f"{factory}(**{dict(kwargs)!r}) failed: {err}") from None
    if not isinstance(model, nn.Module):
        raise FedsimError(f"{factory} built a {type(model).__name__}, not a torch.nn.Module")
    return model


def _native_layers(model: nn.Module, layers: Mapping[str, str] | None, factory: str) -> dict[str, str]:
    """A fedsim model's own layer table (its children, as :func:`fedsim.models.layer_paths` names them),
    so an imported SFCN is attacked layer by layer like one fedsim trained; ``layers`` may only repeat it."""
    table = {name: name for name, _ in model.named_children()}
    moved = {role: name for role, name in (layers or {}).items() if name != role or role not in table}
    if moved:
        raise FedsimError(f"{factory} is one of fedsim's models and keeps its own layers ({', '.join(table)}); "
                          f"drop --layers (got {', '.join(f'{r}={n}' for r, n in moved.items())})")
    return table


def _centre(shape: tuple[int, int, int], crop: Sequence[int]) -> tuple[slice, slice, slice]:
    """The slices of the centre ``crop`` of a ``shape`` volume, as the reference SFCN code's ``crop_center``."""
    if isinstance(crop, (str, bytes)) or len(crop) != 3:
        raise FedsimError(f"crop must be three sizes (D, H, W), got {crop!r}")
    sizes = [positive_int("crop", c) for c in crop]
    if any(c > s for c, s in zip(sizes, shape)):
        raise FedsimError(f"crop {tuple(sizes)} does not fit in the declared shape {shape}: the model takes the centre "
                          "of each scan at that shape")
    d, h, w = (slice((s - c) // 2, (s - c) // 2 + c) for s, c in zip(shape, sizes))
    return d, h, w


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
    crop: Sequence[int] | None = None,
) -> nn.Module:
    """Build the user's model ``factory(**kwargs)`` and extend it for fedsim (see the module docstring).

    Parameters
    ----------
    factory
        ``package.module:Class`` (or a function returning the module), importable where fedsim runs, or the
        name of one of fedsim's models (``sfcn``).
    in_shape
        The volume (D, H, W) the model takes; fedsim resamples every scan to it.
    kwargs
        Keyword arguments of ``factory`` (plain TOML/JSON values: they are recorded in the run directory).
    intensity
        The per-scan normalisation the model was trained with: one of :data:`INTENSITIES`.
    target_scale, age_offset
        The model's output in years is ``age_offset + target_scale * output`` (a model regressing z-scored
        ages: the training ages' standard deviation and mean). A model with its own output
        (:class:`~fedsim.training.OwnOutput`) reads its ages itself, so it refuses any but 1 and 0.
    layers
        Role (``conv1``, ``conv6``, ``output``) -> the user's dotted layer name; default: :func:`default_layers`
        on a zero volume (one of fedsim's models: its own layers).
    crop
        The centre (D, H, W) of the normalised ``in_shape`` volume that the model takes, as SFCN's reference
        code crops 160x192x160 out of the 1 mm MNI grid (182x218x182) after dividing by the scan's mean;
        default: the whole volume.
    """
    shape = check_in_shape(in_shape)
    if intensity not in INTENSITIES:
        raise FedsimError(f"intensity {intensity!r} is not one of {', '.join(INTENSITIES)}; fedsim keeps each scan "
                          "z-scored, so a model trained on raw intensities cannot be served")
    if not finite_real("target_scale", target_scale) > 0:
        raise FedsimError(f"target_scale (years per output unit) must be positive, got {target_scale!r}")
    offset = finite_real("age_offset", age_offset)
    window = None if crop is None else _centre(shape, crop)
    build = resolve_factory(factory)
    model = _build(factory, build, kwargs or {})
    if own_output(model) is not None and (target_scale != 1 or offset != 0):
        raise FedsimError(f"{factory} reads its ages off its own output ({type(model).__name__}.output_ages), so it "
                          f"takes no output units: drop --output-scale/--output-offset (got {target_scale:g} and "
                          f"{offset:g})")
    model.__class__ = _extended(type(model))
    model.in_shape, model.target_scale = shape, float(target_scale)
    model.fedsim_factory, model.fedsim_intensity = str(factory), intensity
    model.fedsim_age_offset, model.fedsim_crop = offset, window
    if build in _fedsim_models().values():
        model.fedsim_layers = _native_layers(model, layers, str(factory))
        return model
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
