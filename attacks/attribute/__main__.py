"""``python -m attacks.attribute``: the command is :mod:`attacks.cli.attribute`."""

from attacks.cli.attribute import main

if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
