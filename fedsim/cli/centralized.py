"""``fedsim centralized`` / ``python -m fedsim.centralized``: the centralized baseline (:mod:`fedsim.centralized`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from fedsim.cli import add_cohort_option, add_device_option, add_out_option, command_parser
from fedsim.cli.progress import echo_rounds, progress_bars, say_start
from fedsim.config import available_environments, load_env, with_overrides
from fedsim.errors import FedsimError
from fedsim.tracking import add_tensorboard_option, require_tensorboard, tensorboard


def parser(prog: str = "python -m fedsim.centralized") -> argparse.ArgumentParser:
    p = command_parser(
        prog, "The centralized brain-age baseline: one model on all training subjects.",
        "Keeps the best-validation epoch (as Gupta et al. 2021) and writes the same run directory as a "
        "federation, epoch k being snapshot round k, so every attack reads it like any other run.",
        examples=["--out runs/centralized", "--env centralized-2d --out runs/centralized-2d", "--env centralized --epochs 10 --out runs/centralized-10"])
    p.add_argument("--env", default="centralized", help="environment name or .toml path (default: centralized); one of: "
                   + ", ".join(e for e in available_environments() if not load_env(e).partition.learners))
    add_cohort_option(p)
    add_out_option(p)
    p.add_argument("--epochs", type=int, metavar="N", help="override [train] epochs")
    p.add_argument("--seed", type=int, metavar="N", help="override the environment's seed")
    add_tensorboard_option(p)
    add_device_option(p)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m fedsim.centralized") -> int:
    args = parser(prog).parse_args(argv)
    from fedsim import snapshots
    from fedsim.centralized import new_centralized_run, train_centralized
    from fedsim.device import using_device

    with using_device(args.device):
        if args.tensorboard is not None:
            require_tensorboard()
        cfg = load_env(args.env)
        if args.epochs is not None and args.epochs < 1:
            raise FedsimError(f"--epochs must be at least 1, got {args.epochs}")
        cfg = with_overrides(cfg, seed=args.seed, train={"epochs": args.epochs})
        console = Console(highlight=False)
        with progress_bars(console) as progress:
            data, run_dir = new_centralized_run(cfg, args.cohort, args.out, progress=progress)
        say_start(console, cfg.name, data.manifest, run_dir)
        with echo_rounds(console), tensorboard(args.tensorboard):
            s = train_centralized(cfg, data, run_dir)
        table = Table(title=f"best validation epoch {s['best_round']}")
        for col in ("set", "subjects", "MAE (years)"):
            table.add_column(col)
        for name in ("train", "val", "unseen"):
            table.add_row(name, str(s[f"{name}_n"]), f"{s[f'{name}_mae']:.2f}")
        table.add_row("predict the mean", str(s["unseen_n"]), f"{s['predict_mean_mae']:.2f}")
        console.print(table)
        console.print(f"snapshots: {run_dir / snapshots.ROUNDS_DIR} (rounds 0..{snapshots.complete_rounds(run_dir)[-1]}); done.")
        return 0


