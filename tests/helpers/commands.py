"""A command's bad input, run in this process: :func:`fedsim.cli.run_cli` is what ``python -m`` and the console
script run, so the one ``error: …`` line is checked without a subprocess's seconds of imports (each command
keeps one real ``python -m`` or console-script case in its own tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from fedsim.cli import run_cli


def one_error_line(capsys: pytest.CaptureFixture, main: Callable[[Sequence[str] | None], int | None],
                   argv: Sequence[str]) -> str:
    """The single ``error: …`` line ``main(argv)`` ends with (exit code 2, nothing else on stderr)."""
    capsys.readouterr()
    code = run_cli(main, list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    return err.rstrip("\n")
