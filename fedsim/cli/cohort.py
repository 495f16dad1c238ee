"""``fedsim cohort`` / ``python -m fedsim.data.cohort``: write a synthetic cohort (:mod:`fedsim.data.cohort`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from fedsim.cli import command_parser
from fedsim.cli.progress import progress_bars


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
    p.add_argument("--sites", type=int, default=1, help="scanners, each with its own signature and age/sex mix (default: 1)")
    p.add_argument("--sex-gm-difference", type=float, default=0.0, metavar="F",
                   help="women's grey-matter excess over men's, a fraction (default: 0; the attribute study: 0.05)")
    p.add_argument("--male-atrophy-ratio", type=float, default=1.0, metavar="R",
                   help="men's atrophy per year relative to women's (default: 1; the attribute study: 1.3)")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m fedsim.data.cohort") -> int:
    args = parser(prog).parse_args(argv)
    from fedsim.data.cohort import CohortSpec, write_cohort
    from fedsim.data.synthetic import AnatomyParams

    console = Console(highlight=False)
    with progress_bars(console) as progress:
        anatomy = AnatomyParams(sex_gm_difference=args.sex_gm_difference, male_atrophy_ratio=args.male_atrophy_ratio)
        spec = CohortSpec(args.subjects, tuple(args.shape), args.seed, anatomy=anatomy, sites=args.sites)
        manifest = write_cohort(spec, args.out, progress=progress)
    console.print(f"cohort: {manifest} ({args.subjects} subjects; preview: {manifest.parent / 'preview.png'})")
    return 0


