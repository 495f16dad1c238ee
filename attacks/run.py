"""``python -m attacks.run``: the command is :mod:`attacks.cli.run`."""

from attacks.cli.run import main

if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
