"""``python -m attacks.reconstruct``: the command is :mod:`attacks.cli.reconstruct`."""

from attacks.cli.reconstruct import main

if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
