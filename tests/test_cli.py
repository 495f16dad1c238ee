"""One-line errors for what the user can fix; tracebacks only for bugs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.cli import run_cli
from fedsim.errors import FedsimError


def _raising(err: BaseException):
    def main(argv):
        raise err
    return main


@pytest.mark.parametrize("err, code", [(FedsimError("bad value"), 2), (NotADirectoryError(20, "Not a directory", "/x/f"), 1)])
def test_user_errors_are_one_line(err, code, capsys):
    assert run_cli(_raising(err)) == code
    err_text = capsys.readouterr().err
    assert err_text.startswith("error: ") and err_text.count("\n") == 1 and "Traceback" not in err_text


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_cli(_raising(ZeroDivisionError("bug")))


def test_an_output_path_that_is_a_file_is_one_line(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run([sys.executable, "-m", "fedsim.data.cohort", "--out", str(blocker / "cohort"),
                             "--subjects", "4", "--shape", "8", "8", "8"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr and str(blocker) in result.stderr
