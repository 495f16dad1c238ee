"""Per-sample gradients of the training loss, by three interchangeable methods.

White-box membership features are gradients of *one subject's* loss, so a batched
backward (which sums over subjects) is not enough. Three methods give the same
numbers at different speeds:

``loop``
    one forward/backward per subject: obviously correct, the reference in tests.
``vmap``
    ``torch.func.vmap(grad(functional_call(...)))``: one vectorised pass. On CPU the
    per-sample convolutions become grouped convolutions, which can be slower than the loop.
``opacus``
    Opacus ``GradSampleModule`` hooks: one batched forward/backward, then per-layer
    einsums over stored activations and backprops.

Which is fastest depends on the model and the device, so ``method="auto"`` times
all three once per (architecture, input shape, device, layers) and remembers the winner.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.defenses.dp_sgd import import_opacus
from fedsim.errors import FedsimError
from fedsim.models import layer_parameters
from fedsim.training import OPACUS_HOOK_WARNING, model_ages, model_loss

__all__ = ["GRAD_METHODS", "Method", "benchmark_methods", "choose_method", "per_sample_gradients"]

Method = Literal["loop", "vmap", "opacus", "auto"]

#: (predictions (B,), {parameter name: per-sample gradient (B, *shape)})
_Result = tuple[torch.Tensor, dict[str, torch.Tensor]]
_MethodFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, list[str], str, float], _Result]


@contextlib.contextmanager
def _mode(model: nn.Module, train_param_modules: bool = False) -> Iterator[None]:
    """Put ``model`` in eval mode (dropout off) for the duration, then restore every flag.

    With ``train_param_modules`` the modules that own parameters (convs, linears) are
    set to train mode: Opacus only records activations of training modules, and these
    layers compute the same thing in either mode, while dropout stays off.
    """
    flags = {m: m.training for m in model.modules()}
    model.eval()
    if train_param_modules:
        for m in model.modules():
            if any(True for _ in m.parameters(recurse=False)):
                m.training = True
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str], loss: str, scale: float) -> _Result:
    """One autograd.grad per subject; autograd only walks the paths to ``names``."""
    params = dict(model.named_parameters())
    wanted = [params[n] for n in names]
    preds, rows = [], []
    for i in range(len(x)):
        output = model(x[i : i + 1])
        rows.append(torch.autograd.grad(model_loss(model, output, y[i : i + 1], loss=loss, target_scale=scale), wanted))
        preds.append(model_ages(model, output).detach())
    grads = {n: torch.stack([row[k] for row in rows]) for k, n in enumerate(names)}
    return torch.cat(preds), grads


def _vmap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str], loss: str, scale: float) -> _Result:
    """``vmap(grad(...))`` over subjects, differentiating only the parameters in ``names``."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    wanted = {n: params.pop(n) for n in names}

    def subject_loss(w: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor):
        output = functional_call(model, {**params, **w}, (xi[None],))
        return model_loss(model, output, yi[None], loss=loss, target_scale=scale), model_ages(model, output)[0]

    grads, preds = vmap(grad(subject_loss, has_aux=True), in_dims=(None, 0, 0))(wanted, x, y)
    return preds, grads


def _opacus(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str], loss: str, scale: float) -> _Result:
    """Opacus hooks on a private copy, so the caller's model keeps no hooks or flags.

    The loss is summed (not averaged) over subjects, so each ``grad_sample`` row is
    that subject's own gradient. A module applied to k rows per subject (the slice
    net's 2D convs see B*S slices) yields B*k rows; they are summed per subject.
    """
    clone = copy.deepcopy(model)
    for n, p in clone.named_parameters():
        p.requires_grad_(n in names)
    with _mode(clone, train_param_modules=True):
        gsm = import_opacus().GradSampleModule(clone, batch_first=True, loss_reduction="sum", strict=True)
        try:
            output = gsm(x)
            with warnings.catch_warnings():
                # Opacus's backward hooks fire on layer outputs; the input needs no gradient.
                warnings.filterwarnings("ignore", message=OPACUS_HOOK_WARNING)
                (model_loss(model, output, y, loss=loss, target_scale=scale) * len(x)).backward()
            params = dict(clone.named_parameters())
            grads = {}
            for n in names:
                sample = params[n].grad_sample
                grads[n] = sample.reshape(len(x), -1, *sample.shape[1:]).sum(1)
        finally:
            gsm._close()
    return model_ages(model, output).detach(), grads


#: Per-sample gradient methods by name (``auto`` picks one of these).
GRAD_METHODS: dict[str, _MethodFn] = {"loop": _loop, "vmap": _vmap, "opacus": _opacus}

# Winner of :func:`choose_method` per (architecture, input shape, device, parameters).
_AUTO: dict[tuple, str] = {}


def _param_names(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """Full parameter names of ``layers``, in module order."""
    table = layer_parameters(model)
    unknown = [layer for layer in layers if layer not in table]
    if unknown:
        raise FedsimError(
            f"{type(model).__name__} has no parameterised layer {', '.join(map(repr, unknown))}; "
            f"choose from: {', '.join(table)}"
        )
    return [n for layer in table if layer in layers for n in table[layer]]


def _methods(model: nn.Module) -> list[str]:
    """The methods that apply to ``model``: Opacus' hooks run the layers that own parameters in training
    mode, which a layer with running statistics (BatchNorm: SFCN) would read off the batch instead."""
    stats = any(any(True for _ in m.parameters(recurse=False)) and any(True for _ in m.buffers(recurse=False))
                for m in model.modules())
    return [m for m in GRAD_METHODS if not (stats and m == "opacus")]


def _run(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str], loss: str, method: str
) -> _Result:
    """Run one named method in eval mode (dropout off) on ``model``'s device."""
    device = next(model.parameters()).device
    x, y = x.to(device, torch.float32), y.to(device, torch.float32)
    with _mode(model), torch.enable_grad():
        return GRAD_METHODS[method](model, x, y, names, loss, float(getattr(model, "target_scale", 1.0)))


def benchmark_methods(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: Sequence[str], *, loss: str = "mse"
) -> dict[str, float]:
    """Seconds per subject of every method that applies to ``model`` on this batch (after one untimed warm-up subject).

    Used by ``method="auto"``; pass a batch of the size that will be used for real,
    since vectorised methods gain from larger batches and the loop does not.
    """
    names = _param_names(model, layers)
    timings = {}
    for method in _methods(model):
        _run(model, x[:1], y[:1], names, loss, method)
        start = time.perf_counter()
        _run(model, x, y, names, loss, method)
        timings[method] = (time.perf_counter() - start) / len(x)
    return timings


def choose_method(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: Sequence[str], *, loss: str = "mse", probe: int = 8
) -> str:
    """The fastest method for this architecture, input shape, device and layers.

    Timed once on the first ``probe`` subjects of ``x`` (a probe costs about three
    times their gradients), then remembered for the rest of the process.
    """
    device = next(model.parameters()).device
    key = (
        type(model).__qualname__,
        tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
        tuple(x.shape[1:]),
        str(device),
        tuple(_param_names(model, layers)),
        loss,
    )
    if key not in _AUTO:
        timings = benchmark_methods(model, x[:probe], y[:probe], layers, loss=loss)
        _AUTO[key] = min(timings, key=timings.__getitem__)
    return _AUTO[key]


def per_sample_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layers: Sequence[str],
    *,
    loss: str = "mse",
    method: Method = "auto",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Predictions and each subject's loss gradient, flattened per layer.

    The loss is the training loss of one subject (:func:`fedsim.training.model_loss`): the model's
    own (SFCN's KL divergence) or :func:`fedsim.training.regression_loss`, i.e.
    ``((pred - age) / target_scale) ** 2`` for ``mse``; so the gradient is what one SGD step on
    that subject would apply. Dropout is off (and BatchNorm uses its running statistics).

    Parameters
    ----------
    model
        A fedsim model: a regressor (ages in years, ``target_scale`` attribute) or an
        :class:`fedsim.training.OwnOutput` (SFCN).
    x, y
        Volumes (B, 1, D, H, W) and ages in years (B,).
    layers
        Top-level layer names from :func:`fedsim.models.layer_parameters`.
    loss
        ``"mse"`` or ``"l1"``, as in the run's ``[train]`` table (a model with its own loss ignores it).
    method
        ``"loop"``, ``"vmap"``, ``"opacus"`` or ``"auto"`` (fastest, timed once per setting).

    Returns
    -------
    predictions : Tensor of shape (B,)
    gradients : dict of layer name -> Tensor of shape (B, n_layer_params), weights then bias
    """
    if method != "auto" and method not in GRAD_METHODS:
        raise FedsimError(f"unknown per-sample gradient method {method!r}; choose one of: auto, {', '.join(GRAD_METHODS)}")
    if method != "auto" and method not in _methods(model):
        raise FedsimError(f"{type(model).__name__} normalises with running statistics (BatchNorm), which Opacus' "
                          f"per-sample hooks do not support; choose one of: auto, {', '.join(_methods(model))}")
    if method == "auto":
        method = choose_method(model, x, y, layers, loss=loss)
    names = _param_names(model, layers)
    preds, grads = _run(model, x, y, names, loss, method)
    table = layer_parameters(model)
    flat = {
        layer: torch.cat([grads[n].reshape(len(x), -1) for n in table[layer]], dim=1)
        for layer in table
        if layer in layers
    }
    return preds.detach(), {k: v.detach() for k, v in flat.items()}
