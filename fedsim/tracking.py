"""Optional experiment tracking: every round's (or epoch's) metrics to TensorBoard.

The writer listens to the rounds that training reports (:mod:`fedsim.progress`), so federated and
centralized runs, the commands and :func:`fedsim.train` log the same scalars: ``mae/unseen``,
``mae/L1_train``, ``epsilon/L1``, ``seconds``… at step = round. Needs the ``tensorboard`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import numbers
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedsim.errors import FedsimError
from fedsim.progress import METRICS, listening

_GROUPS = ("mae", "rmse", "epsilon")  # a metric named <what>_<group> is logged as <group>/<what>


def scalar_tags(metrics: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tag → value for the numeric metrics of one round (counts and the round itself left out)."""
    tags = {}
    for key, value in metrics.items():
        if key == "round" or key.endswith("_n") or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        what, _, group = key.rpartition("_")
        tags[f"{group}/{what}" if what and group in _GROUPS else key] = float(value)
    return tags


def require_tensorboard() -> type:
    """TensorBoard's ``SummaryWriter``, or a one-line error naming the extra to install; called
    before any work, so a missing package fails at once and not after the data is prepared."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise FedsimError("TensorBoard logging needs the tensorboard package: pip install -e \".[tensorboard]\"") from err
    return SummaryWriter


@contextlib.contextmanager
def tensorboard(log_dir: Path | None) -> Iterator[None]:
    """Write the metrics of every round trained while inside to TensorBoard event files in ``log_dir``
    (``None``: nothing)."""
    if log_dir is None:
        yield
        return
    writer = require_tensorboard()(log_dir=str(log_dir))

    def log(record: logging.LogRecord) -> None:
        metrics = getattr(record, METRICS, None)
        if metrics is not None:
            for tag, value in scalar_tags(metrics).items():
                writer.add_scalar(tag, value, global_step=int(metrics["round"]))
            writer.flush()

    try:
        with listening(log):
            yield
    finally:
        writer.close()


def add_tensorboard_option(parser: argparse.ArgumentParser) -> None:
    """``--tensorboard DIR`` for a training command."""
    parser.add_argument("--tensorboard", type=Path, metavar="DIR",
                        help="also log every round's metrics to TensorBoard event files in DIR "
                        "(needs: pip install -e \".[tensorboard]\")")
