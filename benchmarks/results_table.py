"""One Markdown table per benchmark in ``benchmarks/results/``: each run adds a row, notes stay below it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path


def _head(columns: Sequence[str]) -> str:
    return "| " + " | ".join(["date", *columns]) + " |\n|" + "---|" * (len(columns) + 1)


def append_row(path: Path, title: str, columns: Sequence[str], values: Sequence[object]) -> None:
    """Add a row (dated now) to the table of ``path``, creating the file with ``title`` and ``columns``.

    The row goes right after the table's last row, so notes written under the table stay under it.
    """
    row = "| " + " | ".join([time.strftime("%Y-%m-%d %H:%M"), *map(str, values)]) + " |"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {title}\n\n{_head(columns)}\n{row}\n")
    else:
        lines = path.read_text().splitlines()
        rows = [i for i, line in enumerate(lines) if line.startswith("|")]
        if not rows:  # a file without its table (edited by hand): start the table again at the end
            lines += ["", *_head(columns).splitlines()]
            rows = [len(lines) - 1]
        path.write_text("\n".join(lines[: rows[-1] + 1] + [row] + lines[rows[-1] + 1:]) + "\n")
    print(f"added a row to {path}")
