"""The command-line layer: one-line errors and exit codes, parsers with examples, the front door.

Every stage has one parser, defined beside its ``main`` (``python -m fedsim.run`` and
``fedsim train`` are the same function with a different ``prog``); :mod:`fedsim.cli.main` is the
``fedsim`` command that dispatches to them. Only this layer prints. A parser is built from light
modules only (its choices and defaults from the registries' name modules); ``main`` imports the
library after the arguments parse, so that ``--help`` and a mistyped option answer before torch,
scikit-learn or pandas load (``tests/test_cli_imports.py``). The library never imports this layer.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from fedsim.errors import FedsimError

WIDTH = 78  # help text is wrapped here, so it reads at 80 columns


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main`` and turn a :class:`FedsimError` into ``error: …`` on stderr.

    So is an :class:`OSError` (a path that is a file, not writable, a full disk: the user's to
    fix, not a bug), with exit code 1. Anything else is a bug and keeps its traceback; Ctrl-C
    exits with 130 and no traceback.
    """
    try:
        return int(main(argv) or 0)
    except FedsimError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _stop_workers()


def _stop_workers() -> None:
    """Stop joblib's worker processes (parallel preprocessing, cohort writing) before the command
    exits: idle, they would linger for minutes holding its stdout and stderr open, so that
    ``fedsim cohort … | tee log`` or a parent reading the pipes would wait for them."""
    reusable_executor = sys.modules.get("joblib.externals.loky.reusable_executor")  # not loaded: none started
    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)


def exit_process(code: int) -> None:
    """Exit, even if Flower left a non-daemon thread waiting (its ServerApp thread can wait forever): never hang."""
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        os._exit(code)
    raise SystemExit(code)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (already wrapped); option help wrapped without breaking names at hyphens."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


def add_cohort_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cohort", type=Path, metavar="PATH",
                   help="your own cohort: a BIDS dataset (raw, or a derivative with space-MNI T1s) or a "
                   "manifest.csv (default: the embedded synthetic cohort)")


def add_out_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, metavar="DIR", help="run directory (default: runs/<env>-<timestamp>)")


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="auto, cpu, cuda or cuda:N for every step of this command (default: auto, CUDA when torch sees it)")


def command_parser(prog: str, summary: str, details: str = "", *, examples: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A stage's parser: a plain one-line ``summary``, a ``details`` paragraph, and ``examples``
    (argument lines, shown after ``prog``) at the end of ``--help``."""
    description = summary if not details else summary + "\n\n" + textwrap.fill(" ".join(details.split()), WIDTH)
    epilog = ("examples:\n" + "\n".join(f"  {prog} {e}" for e in examples)) if examples else None
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=_HelpFormatter)

