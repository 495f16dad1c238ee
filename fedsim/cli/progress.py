"""What the commands draw: rich progress bars for step callbacks, the run's first line, one line per trained round."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedsim.progress import Progress as ProgressCallback
from fedsim.progress import listening

__all__ = ["echo_rounds", "progress_bars", "say_start"]


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


def say_start(console: Console, env: str, manifest: Path, run_dir: Path) -> None:
    """What is trained on and where it goes; for a BIDS cohort, what was taken from it."""
    from fedsim.data.bids import describe  # nibabel and pandas: loaded when a run starts, not for --help

    console.print(f"[bold]{env}[/]: {manifest} → {run_dir}")
    bids = describe(manifest)
    if bids:
        console.print(bids, markup=False)


@contextlib.contextmanager
def echo_rounds(console: Console) -> Iterator[None]:
    """Print the ``fedsim`` logger's lines (a round or epoch each) on ``console`` while inside."""
    def echo(record: logging.LogRecord) -> None:
        console.print(record.getMessage(), highlight=False, markup=False, soft_wrap=True)

    with listening(echo):
        yield
