"""``python -m attacks.study``: the command is :mod:`attacks.cli.study`."""

from attacks.cli.study import main

if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
