"""``fedsim cohort`` / ``python -m fedsim.data.cohort``: write a synthetic cohort (:mod:`fedsim.data.cohort`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from fedsim.cli import command_parser
from fedsim.cli.progress import progress_bars
from fedsim.data.cohort import CohortSpec, write_cohort


def parser(prog: str = "python -m fedsim.data.cohort") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "Write a synthetic T1 cohort: NIfTI files, manifest.csv and a preview.",
        "Subjects are deformed copies of nilearn's MNI152 template (no download): a biological age that "
        "drives atrophy, their own anatomy, contrast, bias field and noise. Training commands generate the default cohort themselves; write one to look at it, "
        "or to hand a fixed cohort to --cohort.",
        examples=["--out runs/cohort", "--out runs/cohort-2mm --subjects 200 --shape 91 109 91"])
    p.add_argument("--out", type=Path, required=True, help="directory to write images/, manifest.csv, preview.png")
    p.add_argument("--subjects", type=int, default=1000, help="number of subjects (default: 1000)")
    p.add_argument("--shape", type=int, nargs=3, default=[36, 43, 36], metavar=("X", "Y", "Z"),
                   help="grid over the 182x218x182 mm MNI box (default: 36 43 36, ~5 mm; 91 109 91 = the paper's 2 mm)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m fedsim.data.cohort") -> int:
    args = parser(prog).parse_args(argv)
    console = Console(highlight=False)
    with progress_bars(console) as progress:
        manifest = write_cohort(CohortSpec(args.subjects, tuple(args.shape), args.seed), args.out, progress=progress)
    console.print(f"cohort: {manifest} ({args.subjects} subjects; preview: {manifest.parent / 'preview.png'})")
    return 0


