"""HTML pages from Jinja2 templates (autoescaped), with figures inlined as base64 PNG.

Every page extends ``templates/base.html`` (inline CSS, no external file), so one file can be mailed
or archived alone. Text reaches a page only through template variables, which Jinja2 escapes; the
figures are the only markup passed in, as :func:`png` data.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from matplotlib.figure import Figure

from attacks.evaluation import verdicts
from fedsim import snapshots

__all__ = ["linked_to", "mean_pm", "png", "render", "write_page"]

_ENV = Environment(
    loader=PackageLoader("attacks.reporting", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a misspelt variable is an error, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)


def mean_pm(mean: float, std: float | None = None, *, scale: float = 100, digits: int = 1) -> str:
    """``mean ± std`` (in % by default) for a table cell; "—" for a missing mean, no "±" for a missing std."""
    if mean is None or pd.isna(mean):
        return "—"
    text = f"{scale * mean:.{digits}f}"
    return text if std is None or pd.isna(std) else f"{text} ± {scale * std:.{digits}f}"


def interval(mean: float, low: float, high: float, *, scale: float = 1, digits: int = 3) -> str:
    """``mean [low, high]``; the interval is left out where it is missing (a single attack)."""
    if mean is None or pd.isna(mean):
        return "—"
    text = f"{scale * mean:.{digits}f}"
    if low is None or pd.isna(low):
        return text
    return f"{text} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def bounds(low: float, high: float, *, scale: float = 1, digits: int = 3) -> str:
    """``[low, high]`` for a column of its own beside the mean; "—" where there is no interval."""
    if low is None or pd.isna(low):
        return "—"
    return f"[{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


_ENV.globals["verdict_words"] = verdicts.KINDS
_ENV.globals["verdict_rules"] = verdicts.RULES
_ENV.filters["pm"] = mean_pm
_ENV.filters["bounds"] = lambda row, name, scale=1, digits=3: bounds(
    row.get(f"{name}_low"), row.get(f"{name}_high"), scale=scale, digits=digits)
_ENV.filters["ci"] = lambda row, name, scale=1, digits=3: interval(
    row[name], row.get(f"{name}_low"), row.get(f"{name}_high"), scale=scale, digits=digits)


def png(fig: Figure, *, dpi: int = 110) -> str:
    """PNG bytes of ``fig`` as base64 text, for an ``<img src="data:image/png;base64,…">``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render(template: str, **context: Any) -> str:
    """The page ``template`` (a file under ``templates/``) filled with ``context``."""
    return _ENV.get_template(template).render(**context)


_INDEX: ContextVar[Path | None] = ContextVar("audit_index", default=None)


@contextlib.contextmanager
def linked_to(index: Path) -> Iterator[None]:
    """Every page written inside links back to ``index`` (the audit's summary), which links to them."""
    token = _INDEX.set(Path(index))
    try:
        yield
    finally:
        _INDEX.reset(token)


def write_page(path: Path, template: str, **context: Any) -> Path:
    """Render ``template`` and write it to ``path`` atomically; returns ``path``. Inside :func:`linked_to`
    the page opens with a link back to the audit's index."""
    index = _INDEX.get()
    back = None if index is None or Path(path) == index else os.path.relpath(index, Path(path).parent)
    snapshots.write_text(Path(path), render(template, **{"back": back, **context}))
    return Path(path)
