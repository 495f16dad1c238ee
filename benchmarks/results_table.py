"""One Markdown table per benchmark in ``benchmarks/results/``: each run adds a row, notes stay below it."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path


def machine() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and its core count, for a results row."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        name = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name")), name)
    return f"{name}, {os.cpu_count()} cores"


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
