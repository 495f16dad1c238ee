"""``python -m attacks.seats``: the command is :mod:`attacks.cli.seats`."""

from attacks.cli.seats import main

if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
