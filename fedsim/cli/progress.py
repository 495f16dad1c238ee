"""What the commands draw: rich progress bars for step callbacks, and one line per trained round."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedsim.progress import Progress as ProgressCallback
from fedsim.progress import listening

__all__ = ["echo_rounds", "progress_bars"]


@contextlib.contextmanager
def progress_bars(console: Console) -> Iterator[ProgressCallback]:
    """A callback ``report(description, done, total)`` drawing one transient bar per description,
    with its count, elapsed time and ETA (cohort generation, preprocessing, per-sample gradients and
    attack fitting are the minutes of a first run). Off when the console is not a terminal (CI logs stay clean)."""
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True,
                    disable=not console.is_terminal)
    tasks: dict[str, int] = {}

    def report(description: str, done: int, total: int) -> None:
        if description not in tasks:
            tasks[description] = bars.add_task(description, total=total)
        bars.update(tasks[description], completed=done, total=total)
        if done >= total:  # a finished step leaves the screen; the next "fitting attacks" starts afresh
            bars.remove_task(tasks.pop(description))

    with bars:
        yield report


@contextlib.contextmanager
def echo_rounds(console: Console) -> Iterator[None]:
    """Print the ``fedsim`` logger's lines (a round or epoch each) on ``console`` while inside."""
    def echo(record: logging.LogRecord) -> None:
        console.print(record.getMessage(), highlight=False, markup=False)

    with listening(echo):
        yield
