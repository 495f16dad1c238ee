"""Markdown tables and the study's ``summary.md`` (summary files are read as text, and pasted into docs)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fedsim import snapshots

__all__ = ["SUMMARY_CSV", "SUMMARY_MD", "markdown_table", "write_summary"]

SUMMARY_MD, SUMMARY_CSV, SUMMARY_ATTRIBUTE_CSV = "summary.md", "summary.csv", "summary-attribute.csv"


def markdown_table(frame: pd.DataFrame, digits: int = 1) -> str:
    """``frame`` as a Markdown table, floats with ``digits`` decimals."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "—" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


def write_summary(out: Path, t1: pd.DataFrame, envs: pd.DataFrame, command: str,
                  pairs: Mapping[str, tuple[str, pd.DataFrame]] | None = None, attribute: pd.DataFrame | None = None) -> Path:
    """``summary.md`` (the tables, with the command), ``summary.csv`` (the per-environment table) and, with
    ``attribute`` (:func:`attacks.experiments.study.attribute_row` rows), ``summary-attribute.csv``.

    ``pairs``: per federated environment, what its attacker × victim table shows (a caption) and the table.
    """
    pct = envs.copy()
    for col in ("attack", "attack_low", "attack_high", "age_matched", "round0"):
        pct[col] = 100 * pct[col]
    text = (
        f"# fedsim study\n\n`{command}`\n\n"
        "## Attack accuracy % by feature set (paper Table 1 layout; federated: mean over attacker × victim)\n\n"
        + markdown_table(t1)
        + "\n## Per environment: utility, memorisation, strongest attack and its controls\n\n"
        "MAE in years; `gap` = unseen − members MAE; the strongest feature set is chosen by its age-matched "
        "control (the attack with non-members drawn from the members' age bins), `attack_low`–`attack_high` is "
        "its 95 % bootstrap interval over victims and repeats, `round0` is the same attack on the untrained model.\n\n"
        + markdown_table(pct, digits=2)
        + "".join(f"\n## {env}: attacker × victim, {label}\n\nAccuracy % of learner A's attack on learner B's "
                  "subjects, mean over repeats: main attack / age-matched control.\n\n" + markdown_table(table)
                  for env, (label, table) in (pairs or {}).items())
    )
    if attribute is not None and len(attribute):
        text += ("\n## Attribute inference: each seat's strongest feature set\n\nAUC on the members of the model "
                 "(95 % bootstrap interval over victims), beside the label-only baseline (age, and site where known), the "
                 "untrained model (round 0), unseen subjects and the image probe (docs/attribute.md).\n\n"
                 + markdown_table(attribute, digits=3))
        snapshots.atomic_write(out / SUMMARY_ATTRIBUTE_CSV, lambda tmp: attribute.to_csv(tmp, index=False))
    else:
        (out / SUMMARY_ATTRIBUTE_CSV).unlink(missing_ok=True)  # no stale table beside a fresh summary
    snapshots.write_text(out / SUMMARY_MD, text)
    snapshots.atomic_write(out / SUMMARY_CSV, lambda tmp: envs.to_csv(tmp, index=False))
    return out / SUMMARY_MD
