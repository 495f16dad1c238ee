"""Which device a step runs on: CUDA when torch sees it, the CPU otherwise, ``--device`` to choose.

Centralized training, the controller's evaluation, reference models, feature extraction and the
attack classifiers all ask here, so one flag moves a whole command: the command resolves
``--device`` once and runs inside :func:`using_device`, and every step that is not told otherwise
takes that device. Federated learners get theirs from ``--gpus-per-learner`` (Ray places them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from fedsim.errors import FedsimError

AUTO = "auto"
_chosen: ContextVar[str] = ContextVar("fedsim_device", default=AUTO)


@contextlib.contextmanager
def using_device(device: str | torch.device) -> Iterator[torch.device]:
    """Inside, :func:`resolve_device` with no explicit request gives ``device`` (checked first)."""
    resolved = resolve_device(device)
    token = _chosen.set(str(resolved))
    try:
        yield resolved
    finally:
        _chosen.reset(token)


def resolve_device(requested: str | torch.device | None = None) -> torch.device:
    """None: the device of the enclosing :func:`using_device`, else ``auto``; ``auto``: ``cuda`` if
    torch sees a GPU, else ``cpu``; ``cpu``, ``cuda`` or ``cuda:N`` as asked, with a one-line error
    when that device is not there."""
    if requested is None:
        requested = _chosen.get()
    if str(requested) == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(requested))
    except (RuntimeError, ValueError):
        raise FedsimError(f"--device {requested!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FedsimError(f"--device {requested} asks for a GPU but torch sees no CUDA device "
                              f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FedsimError(f"--device {requested}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise FedsimError(f"--device {requested!r}: fedsim runs on cpu or cuda")
    return device
