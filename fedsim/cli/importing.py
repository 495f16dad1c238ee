"""``fedsim import`` / ``python -m fedsim.cli.importing``: a trained model of your own as a run directory
(:func:`fedsim.importing.import_run`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from fedsim.cli import add_out_option, command_parser
from fedsim.errors import FedsimError

PROG = "python -m fedsim.cli.importing"
ROLES = ("conv1", "conv6", "output")  # fedsim.models.imported.ROLES, without importing torch for --help
INTENSITIES = ("zscore", "minmax", "mean")  # fedsim.models.imported.INTENSITIES


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = command_parser(
        prog, "Import a model fedsim did not train, as a run directory every attack reads.",
        "Give your model class (importable: installed, or on PYTHONPATH), its checkpoints (state dicts or "
        "safetensors; pickled objects are refused), the cohort, and who trained on whom: a CSV of subject_id,group "
        "with groups train (one model) or L1, L2, ... (a federation's learners) and unseen. The declared input shape "
        "and intensity normalisation are checked on the first scan and recorded.",
        examples=["--model mynets.brainage:AgeNet --checkpoint ckpt/epoch40.pt \\\n"
                  "      --cohort manifest.csv --membership membership.csv --shape 36 43 36",
                  "--model mynets:AgeNet --checkpoint 0=a.pt --checkpoint 5=b.pt \\\n"
                  "      --local 5:L1=l1-r5.pt --cohort bids/ --membership fl.csv \\\n"
                  "      --shape 36 43 36 --output-scale 7.4 --output-offset 62.7 \\\n"
                  "      --layers conv6=fc1",
                  "--model sfcn --checkpoint run_20190719_00_epoch_best_mae.p \\\n"
                  "      --cohort ukb/manifest.csv --membership membership.csv \\\n"
                  "      --shape 182 218 182 --crop 160 192 160 --intensity mean"])
    p.add_argument("--model", required=True, metavar="PKG.MODULE:CLASS",
                   help="your model's class, or a function that builds it, or one of fedsim's models by name (sfcn: "
                   "checkpoints of the reference SFCN code load as they are)")
    p.add_argument("--model-kwargs", default="{}", metavar="JSON", help="its keyword arguments (default: {})")
    p.add_argument("--checkpoint", action="append", required=True, metavar="[ROUND=]FILE",
                   help="weights of the trained model, once per round or epoch (in order: rounds 1, 2, ...; or "
                   "ROUND=FILE, 0 being the untrained model; default round 0: a fresh model, seeded)")
    p.add_argument("--local", action="append", default=[], metavar="ROUND:LEARNER=FILE",
                   help="a learner's local model of a round (a federation; the curious controller's seat)")
    p.add_argument("--cohort", type=Path, required=True, metavar="PATH", help="a manifest.csv or a BIDS dataset")
    p.add_argument("--membership", type=Path, required=True, metavar="CSV",
                   help="subject_id,group: train (or L1, L2, ...) for subjects trained on, unseen for the others")
    p.add_argument("--shape", type=int, nargs=3, required=True, metavar=("X", "Y", "Z"),
                   help="the input volume the model takes; every scan is resampled onto the MNI box at this grid")
    p.add_argument("--intensity", default="zscore", choices=INTENSITIES,
                   help="per-scan normalisation it was trained with (default: zscore; mean: the scan divided by its "
                   "mean, SFCN's, for scans whose background is 0)")
    p.add_argument("--crop", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="the model takes the centre X Y Z of each normalised scan (SFCN's reference: 160 192 160 of "
                   "--shape 182 218 182; default: the whole scan)")
    p.add_argument("--output-scale", type=float, default=1.0, metavar="YEARS",
                   help="years per output unit, e.g. the age standard deviation of a model trained on z-scored ages "
                   "(default: 1: the output is in years; refused for a model that reads its own ages, as SFCN)")
    p.add_argument("--output-offset", type=float, default=0.0, metavar="YEARS",
                   help="the age of output 0, e.g. the mean age of a model trained on z-scored ages (default: 0)")
    p.add_argument("--layers", metavar="ROLE=LAYER,...",
                   help="which of your layers the white-box attacks name conv1 (the first conv), conv6 (the last "
                   "hidden layer) and output, e.g. conv6=fc1,output=head (default: found from the module)")
    p.add_argument("--loss", choices=("mse", "l1"), help="the loss it was trained with (default: mse; a model with a "
                   "loss of its own, as SFCN's KL to soft labels, is attacked with that and takes no --loss)")
    add_out_option(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh round-0 model (default: 0)")
    return p


def _split(value: str, sep: str, what: str, example: str) -> tuple[str, str]:
    left, found, right = value.partition(sep)
    if not found or not left or not right:
        raise FedsimError(f"{what} {value!r} must look like {example}")
    return left.strip(), right.strip()


def _round(text: str, what: str) -> int:
    if not text.isdigit():
        raise FedsimError(f"{what}: round {text!r} must be a non-negative integer")
    return int(text)


def checkpoints(values: Sequence[str]) -> list[str] | dict[int, str]:
    """``--checkpoint`` values: files in order (rounds 1, 2, …) or ``ROUND=FILE`` each, not a mix."""
    numbered = ["=" in v and v.partition("=")[0].isdigit() for v in values]
    if not any(numbered):
        return list(values)
    if not all(numbered):
        raise FedsimError("--checkpoint: give every file its ROUND=FILE, or none (then they are rounds 1, 2, ...)")
    out: dict[int, str] = {}
    for value in values:
        r, path = _split(value, "=", "--checkpoint", "ROUND=FILE")
        if _round(r, "--checkpoint") in out:
            raise FedsimError(f"--checkpoint: round {r} is given twice")
        out[int(r)] = path
    return out


def local_models(values: Sequence[str]) -> dict[tuple[int, str], str]:
    """``--local ROUND:LEARNER=FILE`` values."""
    out = {}
    for value in values:
        key, path = _split(value, "=", "--local", "ROUND:LEARNER=FILE, e.g. 5:L1=l1.pt")
        r, learner = _split(key, ":", "--local", "ROUND:LEARNER=FILE, e.g. 5:L1=l1.pt")
        out[(_round(r, "--local"), learner)] = path
    return out


def layers(value: str | None) -> dict[str, str] | None:
    """``--layers conv6=fc1,output=head`` (or three names in role order: conv1, conv6, output)."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if all("=" not in p for p in parts):
        if len(parts) != len(ROLES):
            raise FedsimError(f"--layers: give ROLE=LAYER pairs, or {len(ROLES)} names for {', '.join(ROLES)} in order")
        return dict(zip(ROLES, parts))
    return dict(_split(p, "=", "--layers", "ROLE=LAYER, e.g. conv6=fc1") for p in parts)


def model_kwargs(value: str) -> dict:
    try:
        kwargs = json.loads(value)
    except json.JSONDecodeError as err:
        raise FedsimError(f"--model-kwargs is not JSON ({err}); e.g. '{{\"width\": 8}}'") from None
    if not isinstance(kwargs, dict):
        raise FedsimError(f"--model-kwargs must be a JSON object of keyword arguments, got {value!r}")
    return kwargs


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)
    spec_args = dict(kwargs=model_kwargs(args.model_kwargs), intensity=args.intensity, output_scale=args.output_scale,
                     output_offset=args.output_offset, layers=layers(args.layers),
                     crop=None if args.crop is None else tuple(args.crop))
    rounds, local = checkpoints(args.checkpoint), local_models(args.local)
    from rich.console import Console

    from fedsim.cli.progress import progress_bars
    from fedsim.importing import ModelSpec, import_run
    from fedsim import snapshots

    console = Console(highlight=False)
    with progress_bars(console) as progress:
        run_dir = import_run(args.out, model=ModelSpec(args.model, tuple(args.shape), **spec_args), checkpoints=rounds,
                             cohort=args.cohort, membership=args.membership, local=local, loss=args.loss, seed=args.seed,
                             progress=progress)
    done = snapshots.read_done(run_dir)
    layers_ = snapshots.read_config(run_dir)["model"].get("layers", {})
    console.print(f"imported {args.model}: rounds {', '.join(map(str, snapshots.complete_rounds(run_dir)))}; "
                  f"layers {', '.join(f'{r}={n}' for r, n in layers_.items())}")
    console.print(f"unseen MAE {done['unseen_mae']:.2f} y, members {done['members_mae']:.2f} y "
                  f"(gap {done['memorisation_gap']:+.2f}); run directory: {run_dir}")
    console.print(f"next: fedsim audit {run_dir}")
    return 0


if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
