"""Progress bars for the commands: the engine reports ``(description, done, total)``, this draws it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["progress_bars"]


@contextlib.contextmanager
def progress_bars(console: Console) -> Iterator[Callable[[str, int, int], None]]:
    """A callback ``report(description, done, total)`` drawing one transient bar per description,
    with its count, elapsed time and ETA (per-sample gradients and attack fitting are the minutes
    of a first attack). Off when the console is not a terminal (CI logs stay clean)."""
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
