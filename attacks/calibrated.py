"""``python -m attacks.calibrated``: the command is :mod:`attacks.cli.calibrated`."""

from attacks.cli.calibrated import main

if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
