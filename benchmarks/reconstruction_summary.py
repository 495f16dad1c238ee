"""Each reconstruction setting's summary and verdict, as the report shows them:
``python benchmarks/reconstruction_summary.py CSV [CSV …]``.

Reads the files ``python -m attacks.reconstruct`` writes (``RUN_DIR/attacks/reconstruct/results.csv``, and
``sweep.csv`` after ``--sweep``) and writes ``benchmarks/results/reconstruction_summary.md``: per setting the scans
reconstructed, the mean SSIM against the prior's, the SSIM gain with its Student-t 95 % interval, the share
identified (nearest scan, and by the residual's correlation) with Clopper–Pearson 95 % intervals, a model
inversion's closeness AUC, and the verdict (:func:`attacks.reporting.reconstruction.summary` and ``verdict``, the
report's own).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from results_table import machine

from attacks.reporting.reconstruction import ATTACK_KEYS, SWEEP_KEYS, summary, verdict

RESULTS = Path(__file__).resolve().parent / "results" / "reconstruction_summary.md"


def _share(row: pd.Series, col: str) -> str:
    return "—" if row[col] != row[col] else f"{row[col]:.3f} [{row[col + '_low']:.3f}, {row[col + '_high']:.3f}]"


def _name(r: pd.Series, sweep: bool) -> str:
    if sweep:
        return f"batch {r['batch_size']}, local steps {r['local_steps']} ({r['steps']} steps), {r['defense']}"
    return ", ".join(str(r[k]) for k in ("attack", "learner", "setting", "labels") if str(r[k]) not in ("", "nan"))


def table(frame: pd.DataFrame, sweep: bool) -> list[str]:
    """The summary rows of one results file: every image setting, then every model inversion."""
    images = frame[frame["attack"] != "model"]
    lines = []
    if len(images):
        lines += ["| setting | scans | SSIM / prior | SSIM gain [95 %] | identified [95 %] | identified by correlation "
                  "[95 %] | chance | verdict |", "|---|---|---|---|---|---|---|---|"]
        for _, r in summary(images, SWEEP_KEYS if sweep else ATTACK_KEYS).iterrows():
            lines.append(f"| {_name(r, sweep)} | {r['n']} | {r['ssim']:.3f} / {r['ssim_prior']:.3f} | "
                         f"{r['ssim_gain']:+.3f} [{r['ssim_gain_low']:+.3f}, {r['ssim_gain_high']:+.3f}] | "
                         f"{_share(r, 'identified')} | {_share(r, 'identified_corr')} | {r['chance']:.3f} | {verdict(r)} |")
    models = frame[frame["attack"] == "model"]
    if len(models):
        lines += ["", "| model inversion: round, target age | predicted age | closeness AUC | the prior's |",
                  "|---|---|---|---|"]
        lines += [f"| {r['round']}, {r['target_age']:g} | {r['predicted_age']:.1f} | {r['closeness_auc']:.3f} | "
                  f"{r['closeness_auc_prior']:.3f} |" for _, r in models.iterrows()]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", type=Path, nargs="+", help="results.csv or sweep.csv files of python -m attacks.reconstruct")
    args = p.parse_args()
    lines = ["# Reconstruction: each setting's summary and verdict", "",
             f"`python benchmarks/reconstruction_summary.py {' '.join(map(str, args.files))}`; {machine()}, "
             f"{time.strftime('%Y-%m-%d')}.", ""]
    for path in args.files:
        if not path.is_file():
            raise SystemExit(f"error: {path} does not exist; run python -m attacks.reconstruct on its run first")
        lines += [f"## `{path}`", "", *table(pd.read_csv(path), sweep=path.name == "sweep.csv"), ""]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
