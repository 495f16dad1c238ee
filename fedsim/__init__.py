"""fedsim: federated brain-age learning on 3D MRI, simulated with Flower + Ray, audited by :mod:`attacks`.

The notebook entry points are :func:`train`, :func:`resume`, :func:`cohort`, :func:`open_run` and :class:`RunDir`
(:mod:`fedsim.api`); the ``fedsim`` command is :mod:`fedsim.cli.main`. They are loaded on first
use, so ``import fedsim`` is cheap and changes no global state (plot backend, warning filters, logging).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from fedsim.api import RunDir, cohort, open_run, resume, train  # noqa: F401

__all__ = ["RunDir", "cohort", "open_run", "resume", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fedsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
