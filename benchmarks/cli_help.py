"""How fast the command answers ``--help``: ``python benchmarks/cli_help.py [--repeats 5]``.

Runs ``fedsim --help`` and ``fedsim STAGE --help`` for every stage of ``fedsim/cli/main.py``'s
``STAGES``, each in a fresh process, once untimed (warm-up: the page cache holds the modules) then
``--repeats`` times, and notes which heavy libraries the help imported (``python -X importtime``):
a parser built from light modules answers at Python's start-up cost. Appends a row per command to
``benchmarks/results/cli_help.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_table import append_row, machine

from fedsim.cli.main import STAGES

RESULTS = Path(__file__).resolve().parent / "results" / "cli_help.md"
FEDSIM = Path(sys.executable).with_name("fedsim")  # the console script of this environment
HEAVY = ("torch", "sklearn", "matplotlib", "ray", "flwr", "nibabel", "nilearn", "pandas")


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([str(FEDSIM), *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_imports(argv: list[str]) -> list[str]:
    """The heavy top-level packages that ``fedsim ARGV`` imported, from ``-X importtime``'s report."""
    report = subprocess.run([sys.executable, "-X", "importtime", str(FEDSIM), *argv], check=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    loaded = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in report.splitlines() if "|" in line}
    return [name for name in HEAVY if name in loaded]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    columns = ["machine", "command", "runs", "seconds (median, range)", "heavy imports"]
    for stage in ["", *STAGES]:
        argv = [stage, "--help"] if stage else ["--help"]
        _seconds(argv)  # warm-up
        times = [_seconds(argv) for _ in range(args.repeats)]
        row = [machine(), f"`fedsim {' '.join(argv)}`", args.repeats,
               f"{statistics.median(times):.2f} ({min(times):.2f}–{max(times):.2f})",
               ", ".join(heavy_imports(argv)) or "none"]
        append_row(RESULTS, "`--help` of every stage (`python benchmarks/cli_help.py`; a fresh process each, "
                   "after a warm-up)", columns, row)
        print(" | ".join(map(str, row)))


if __name__ == "__main__":
    main()
