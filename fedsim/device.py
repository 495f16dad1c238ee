"""Which device a step runs on: CUDA when torch sees it, the CPU otherwise, ``--device`` to choose.

Centralized training, the controller's evaluation, reference models, feature extraction and the
attack classifiers all ask here, so one flag moves a whole command; federated learners get theirs
from ``--gpus-per-learner`` (Ray places them).
"""

from __future__ import annotations

import torch

from fedsim.errors import FedsimError

AUTO = "auto"


def resolve_device(requested: str | torch.device | None = AUTO) -> torch.device:
    """``auto``/None: ``cuda`` if torch sees a GPU, else ``cpu``; ``cpu``, ``cuda`` or ``cuda:N`` as asked,
    with a one-line error when that device is not there."""
    if requested is None or str(requested) == AUTO:
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
