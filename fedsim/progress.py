"""How long work reports itself without printing: step callbacks and per-round log records.

Nothing below the command-line layer prints. Long loops take a ``progress`` callback
``report(description, done, total)`` (the commands draw it as a rich bar, a notebook may pass
its own or nothing); training reports every round or epoch as a record of the ``fedsim`` logger
carrying its metrics, which the commands print, :func:`fedsim.train` hands to ``on_round`` and
the TensorBoard writer (:mod:`fedsim.tracking`) logs. A Python logger without a handler shows no
INFO, so a library user sees nothing unless they ask.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

Progress = Callable[[str, int, int], None]
"""``report(description, done, total)``: the step callback of every long loop."""

logger = logging.getLogger("fedsim")
METRICS = "fedsim_metrics"  # the attribute of a round's log record that holds its metrics dict

T = TypeVar("T")


def counted(items: Iterable[T], total: int, description: str, progress: Progress | None) -> Iterator[T]:
    """``items``, reporting ``(description, done, total)`` to ``progress`` after each one."""
    if progress is not None:
        progress(description, 0, total)
    for done, item in enumerate(items, start=1):
        yield item
        if progress is not None:
            progress(description, done, total)


def report_round(line: str, metrics: dict[str, Any]) -> None:
    """One finished round (or epoch): a human line and its metrics, to whoever listens."""
    logger.info(line, extra={METRICS: metrics})


class _Listener(logging.Handler):
    def __init__(self, callback: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(logging.INFO)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        self.callback(record)


@contextlib.contextmanager
def listening(callback: Callable[[logging.LogRecord], None]) -> Iterator[None]:
    """Call ``callback`` with every INFO record of the ``fedsim`` logger while inside."""
    handler = _Listener(callback)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def on_rounds(callback: Callable[[dict[str, Any]], None] | None) -> Iterator[None]:
    """Call ``callback(metrics)`` after every round or epoch trained while inside (``None``: nothing).

    An exception in ``callback`` does not stop training (in a federation it would be raised in
    Flower's server thread, and lost): it stops the calls and is raised when the block ends.
    """
    if callback is None:
        yield
        return
    failed: list[BaseException] = []

    def forward(record: logging.LogRecord) -> None:
        metrics = getattr(record, METRICS, None)
        if metrics is not None and not failed:
            try:
                callback(metrics)
            except Exception as err:  # noqa: BLE001 - the caller's; re-raised below
                failed.append(err)

    with listening(forward):
        yield
    if failed:
        raise failed[0]
