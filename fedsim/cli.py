"""Shared command-line plumbing: one-line errors, exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from fedsim.errors import FedsimError


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
