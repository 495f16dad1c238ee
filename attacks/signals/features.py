"""Features of (model, subject) pairs, by name, combinable like the rows of Table 1.

A feature set is a spec string such as ``"pred+label+grad:conv6+grad:output"``: the
rows of the paper's Table 1 are :data:`TABLE1`. Each basic feature (``prediction``,
``label``, ``error``, ``loss``, ``grad_norm``, ``activation:<layer>``, ``grad:<layer>``) is
named in :data:`FEATURES` (:mod:`attacks.signals.names`, where the commands' help reads it
without torch) and read off a pass by :data:`READERS`. :func:`compute_features` computes any
number of basic features for a subject set in one pass and returns them by name, so a caller
can cache them per (snapshot, subject set, feature) and :func:`assemble` every
combination without recomputing a gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks.signals.gradients import Method, choose_method, per_sample_gradients
from attacks.signals.names import FEATURES, Feature, feature_listing
from fedsim.data.cache import CohortArray
from fedsim.errors import FedsimError
from fedsim.models import get_layer, layer_parameters, layer_paths
from fedsim.training import model_ages, own_output

__all__ = [
    "FEATURES", "READERS", "TABLE1", "Batch", "Feature", "assemble", "compute_features",
    "extract", "feature_listing", "is_black_box", "parse_features", "register_feature",
]

#: The run's ``[train]`` loss: a regressor's (``fedsim.training.regression_loss``) or SFCN's own ``kl``;
#: gradient and loss features use the model's own loss where it has one, else the run's.
LOSSES = ("mse", "l1", "kl")

#: Table 1 of Gupta et al. (2021): row name -> feature spec (``activation`` = conv6 output, our choice).
TABLE1: dict[str, str] = {
    "activation": "activation:conv6",
    "error": "error",
    "gradient magnitude": "grad_norm",
    "gradient (conv 1)": "grad:conv1",
    "gradient (output)": "grad:output",
    "gradient (conv 6)": "grad:conv6",
    "prediction + label": "pred+label",
    "prediction + label + gradient (conv 6 + output)": "pred+label+grad:conv6+grad:output",
}


@dataclass(frozen=True)
class Batch:
    """What one pass over a chunk of subjects produced; features are read off it."""

    prediction: torch.Tensor  # (B,) years
    label: torch.Tensor  # (B,) years
    activations: dict[str, torch.Tensor]  # layer -> (B, d)
    gradients: dict[str, torch.Tensor]  # layer -> (B, n_params), in module order
    loss: str = "mse"  # the target's training loss
    losses: torch.Tensor | None = None  # (B,) each subject's own loss, for a model that has one (SFCN)


#: How a feature is read off a pass: ``read(batch, layer) -> (B, d)``.
Reader = Callable[[Batch, "str | None"], torch.Tensor]


#: How each basic feature of :data:`FEATURES` is read off a pass, by name.
READERS: dict[str, Reader] = {}


def register_feature(
    name: str, *, layers: str | None = None, gradients: str = "none", alias: str | None = None
) -> Callable[[Reader], Reader]:
    """Register ``read(batch, layer) -> (B, d) tensor`` as the new feature ``name``."""
    if name in FEATURES:
        raise ValueError(f"feature name {name!r} is already registered")
    FEATURES[name] = Feature(name, layers, gradients, alias)
    return _reads(name)


def _reads(name: str) -> Callable[[Reader], Reader]:
    """Register ``read`` as how the feature ``name`` of :data:`FEATURES` is read."""

    def register(read: Reader) -> Reader:
        READERS[name] = read
        return read

    return register


@_reads("prediction")
def _prediction(batch: Batch, layer: str | None) -> torch.Tensor:
    return batch.prediction[:, None]


@_reads("label")
def _label(batch: Batch, layer: str | None) -> torch.Tensor:
    return batch.label[:, None]


@_reads("error")
def _error(batch: Batch, layer: str | None) -> torch.Tensor:
    """Prediction minus label in years (the sign tells over- from under-estimation)."""
    return (batch.prediction - batch.label)[:, None]


@_reads("loss")
def _loss(batch: Batch, layer: str | None) -> torch.Tensor:
    """The per-sample training loss: the model's own (SFCN's KL divergence), else in years the squared
    error for an MSE run and the absolute error for L1 — the signal of the loss-based black-box attack of
    standard privacy libraries."""
    if batch.losses is not None:
        return batch.losses[:, None]
    error = batch.prediction - batch.label
    return (error**2 if batch.loss == "mse" else error.abs())[:, None]


@_reads("grad_norm")
def _grad_norm(batch: Batch, layer: str | None) -> torch.Tensor:
    """L2 norm of each parameterised layer's gradient (weights and bias together), in module order."""
    return torch.stack([g.norm(dim=1) for g in batch.gradients.values()], dim=1)


@_reads("activation")
def _activation(batch: Batch, layer: str | None) -> torch.Tensor:
    """A layer's output, flattened (for the slice net, before the slice mean: every slice's)."""
    return batch.activations[layer]


@_reads("grad")
def _grad(batch: Batch, layer: str | None) -> torch.Tensor:
    return batch.gradients[layer]


def _split(spec: str | Sequence[str]) -> list[str]:
    """Canonical names (aliases resolved) of a ``+``-joined spec, checked syntactically."""
    parts = spec.split("+") if isinstance(spec, str) else list(spec)
    parts = [p.strip() for p in parts]
    if not parts or any(not p for p in parts):
        raise FedsimError(f"feature spec {spec!r} has an empty part; write features joined by '+', e.g. 'pred+label'")
    aliases = {f.alias: f.name for f in FEATURES.values() if f.alias}
    names = []
    for part in parts:
        base, _, layer = part.partition(":")
        base = aliases.get(base, base)
        if base not in FEATURES:
            raise FedsimError(f"unknown feature {part!r} in {spec!r}; choose from: {feature_listing()}")
        if FEATURES[base].layers is None and layer:
            raise FedsimError(f"feature {base!r} takes no layer, got {part!r}")
        if FEATURES[base].layers is not None and not layer:
            raise FedsimError(f"feature {base!r} needs a layer, e.g. '{base}:conv6'")
        name = f"{base}:{layer}" if layer else base
        if name in names:
            raise FedsimError(f"feature {name!r} appears twice in {spec!r}")
        names.append(name)
    return names


def _valid_layers(model: nn.Module, kind: str) -> list[str]:
    if kind == "parameters":
        return list(layer_parameters(model))
    return list(layer_paths(model))  # top-level children; an imported model's named layers


def parse_features(spec: str | Sequence[str], model: nn.Module) -> tuple[str, ...]:
    """Check a spec against ``model`` and return its canonical basic feature names, in order.

    Errors list the valid features or layers, so a typo in a config names the fix.
    """
    names = _split(spec)
    for name in names:
        base, _, layer = name.partition(":")
        kind = FEATURES[base].layers
        if kind is not None and layer not in _valid_layers(model, kind):
            raise FedsimError(
                f"{type(model).__name__} has no layer {layer!r} for feature {base!r}; "
                f"choose from: {', '.join(_valid_layers(model, kind))}"
            )
    return tuple(names)


def is_black_box(spec: str | Sequence[str]) -> bool:
    """Whether a spec needs only released predictions and labels (no activation, no gradient):
    what an outsider who can only query the model for predicted ages can compute."""
    bases = [FEATURES[n.partition(":")[0]] for n in _split(spec)]
    return all(f.layers is None and f.gradients == "none" for f in bases)


def assemble(features: Mapping[str, np.ndarray], spec: str | Sequence[str]) -> np.ndarray:
    """Concatenate cached basic features into the (N, d) matrix of a spec, in spec order."""
    names = _split(spec)
    missing = [n for n in names if n not in features]
    if missing:
        raise FedsimError(
            f"feature(s) {', '.join(missing)} of {spec!r} were not computed; have: {', '.join(features) or 'none'}"
        )
    return np.concatenate([features[n] for n in names], axis=1)


def _needs(model: nn.Module, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Layers whose gradients, and layers whose activations, the features need."""
    grad_layers: set[str] = set()
    act_layers = []
    for name in names:
        base, _, layer = name.partition(":")
        if FEATURES[base].gradients == "all":
            grad_layers.update(layer_parameters(model))
        elif FEATURES[base].gradients == "layer":
            grad_layers.add(layer)
        if FEATURES[base].layers == "children":
            act_layers.append(layer)
    return [layer for layer in layer_parameters(model) if layer in grad_layers], act_layers


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eval-mode output of ``model`` (a regressor's: the ages) and the flattened outputs of ``layers``."""
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        return lambda _m, _i, out: captured.__setitem__(name, out.reshape(len(x), -1))

    handles = [get_layer(model, name).register_forward_hook(hook(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        output = model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return output, captured


def _subjects(
    model: nn.Module, subjects: torch.Tensor | np.ndarray | CohortArray, ages: Any, indices: Any
) -> tuple[Callable[[np.ndarray], torch.Tensor], np.ndarray]:
    """A loader of volume chunks (B, 1, D, H, W) by row, and the ages, for any subject source."""
    if isinstance(subjects, CohortArray):
        rows = np.arange(len(subjects.ages)) if indices is None else np.asarray(indices, dtype=np.int64)
        volumes = subjects.volumes
        if ages is None:
            ages = subjects.ages[rows]
    else:
        if ages is None:
            raise FedsimError("ages are required unless subjects is a CohortArray")
        volumes = subjects
        rows = np.arange(len(volumes)) if indices is None else np.asarray(indices, dtype=np.int64)
    shape = tuple(volumes.shape[1:])
    expected = tuple(model.in_shape)
    if shape not in (expected, (1, *expected)):
        raise FedsimError(f"volumes have shape {shape} per subject but the model expects in_shape {expected}")
    ages = np.asarray(ages, dtype=np.float32).reshape(-1)
    if len(ages) != len(rows):
        raise FedsimError(f"got {len(ages)} ages for {len(rows)} subjects")

    def load(chunk: np.ndarray) -> torch.Tensor:
        x = volumes[rows[chunk]]
        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))
        return x.float().reshape(len(chunk), 1, *expected)

    return load, ages


def compute_features(
    model: nn.Module,
    subjects: torch.Tensor | np.ndarray | CohortArray,
    features: str | Sequence[str],
    *,
    ages: Sequence[float] | np.ndarray | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
    loss: str = "mse",
    method: Method = "auto",
    max_grad_bytes: int = 2**30,
    batch_size: int = 32,
    release: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Compute basic features of a subject set in one batched pass; returns name -> (N, d) float32.

    Parameters
    ----------
    model
        The target model; its train/eval mode is restored afterwards, dropout is off meanwhile.
    subjects
        Volumes (N, 1, D, H, W) or (N, D, H, W) as a tensor or array, or a CohortArray
        (memory-mapped; only the chunk in use is read).
    features
        A spec (``"pred+label+grad:conv6"``) or a list of basic feature names.
    ages
        Ages in years, one per selected subject; taken from the CohortArray if omitted.
    indices
        Rows of ``subjects`` to use (default: all), in output order.
    loss
        The target's training loss (``mse`` or ``l1``) that gradients differentiate; a model with its
        own loss (:class:`fedsim.training.OwnOutput`, SFCN) uses that instead.
    method
        Per-sample gradient method (:func:`attacks.signals.gradients.per_sample_gradients`).
    max_grad_bytes
        Subjects are processed in chunks small enough that the per-sample gradients of one
        chunk fit this budget (and at most ``batch_size`` subjects, which bounds activations).
    release
        ``release(pred, x)``: the predictions as the run releases them (``[defense]
        prediction_noise``, :attr:`attacks.target.Snapshot.release`); prediction-based features
        read these, while gradients and activations stay those of the clean model (its weights are known).
    progress
        ``progress(done, total)``: called after every chunk with the subjects done so far.
    """
    names = parse_features(features, model)
    if loss not in LOSSES:
        raise FedsimError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    own = own_output(model)
    if own is not None and release is not None and "loss" in names:
        raise FedsimError(f"the 'loss' feature of {type(model).__name__} needs its output, which this run releases only as "
                          "a noisy age ([defense] prediction_noise); use 'error' instead")
    load, y_all = _subjects(model, subjects, ages, indices)
    grad_layers, act_layers = _needs(model, names)
    params = dict(model.named_parameters())
    table = layer_parameters(model)
    per_subject = 4 * sum(params[p].numel() for layer in grad_layers for p in table[layer])
    chunk = max(1, min(batch_size, max_grad_bytes // max(per_subject, 1)))
    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(y_all), chunk):
        rows = np.arange(start, min(start + chunk, len(y_all)))
        x, y = load(rows).to(device), torch.from_numpy(y_all[rows]).to(device)
        gradients: dict[str, torch.Tensor] = {}
        activations: dict[str, torch.Tensor] = {}
        if grad_layers:
            if method == "auto":  # timed on the first chunk, then fixed for the rest
                method = choose_method(model, x, y, grad_layers, loss=loss)
            pred, gradients = per_sample_gradients(model, x, y, grad_layers, loss=loss, method=method)
        losses = None
        if act_layers or not grad_layers or (own is not None and "loss" in names):
            output, activations = _forward(model, x, act_layers)
            pred = model_ages(model, output)
            if own is not None:
                losses = own.output_loss(output, y)
        if release is not None:
            pred = release(pred, x)
        batch = Batch(pred.float(), y, activations, gradients, loss, losses)
        for name in names:
            base, _, layer = name.partition(":")
            out[name].append(READERS[base](batch, layer or None).float().cpu().numpy())
        if progress is not None:
            progress(int(rows[-1]) + 1, len(y_all))
    return {n: np.concatenate(parts).astype(np.float32, copy=False) for n, parts in out.items()}


def extract(
    model: nn.Module, subjects: torch.Tensor | np.ndarray | CohortArray, spec: str, **kwargs: Any
) -> np.ndarray:
    """The (N, d) feature matrix of ``spec``: :func:`compute_features` then :func:`assemble`."""
    return assemble(compute_features(model, subjects, spec, **kwargs), spec)
