"""What produced a run: the versions of fedsim and the libraries that decide its numbers, and the
git commit of fedsim's source when it runs from a checkout. Written into every run's ``config.toml``."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("fedsim", "torch", "flwr", "opacus", "nibabel", "numpy")
PROVENANCE_TABLE = "provenance"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def git_commit(source: Path = Path(__file__).resolve().parent) -> str | None:
    """The commit of the checkout fedsim runs from (``+dirty`` when it has uncommitted changes),
    or None outside a git checkout or without git."""
    try:
        top = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        if not (Path(top) / "fedsim" / "provenance.py").is_file():
            return None  # fedsim installed inside someone else's repository: that commit is not fedsim's
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def provenance() -> dict[str, str]:
    """``{"fedsim": "0.1.0", "torch": …, "python": …, "git_commit": …}`` for ``config.toml``."""
    record = {package: _version(package) for package in PACKAGES}
    record["python"] = platform.python_version()
    commit = git_commit()
    if commit:
        record["git_commit"] = commit
    return record
