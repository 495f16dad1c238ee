"""User-facing errors: one sentence that names the file, row or key and the fix."""

from __future__ import annotations


class FedsimError(Exception):
    """An input or configuration problem the user can fix.

    Command-line entry points print ``str(error)`` as a single line and exit with
    ``exit_code`` instead of showing a traceback.
    """

    exit_code: int = 2
