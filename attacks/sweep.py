"""``python -m attacks.sweep``: the command is :mod:`attacks.cli.sweep`."""

from attacks.cli.sweep import main

if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
