"""``python -m attacks.audit``: the command is :mod:`attacks.cli.audit`."""

from attacks.cli.audit import main

if __name__ == "__main__":
    from fedsim.cli import run_cli

    raise SystemExit(run_cli(main))
