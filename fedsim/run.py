"""``python -m fedsim.run``, the product's entry point: the command is :mod:`fedsim.cli.train` (``fedsim train``)."""

from fedsim.cli.train import main

__all__ = ["main"]

if __name__ == "__main__":
    from fedsim.cli import exit_process, run_cli

    exit_process(run_cli(main))
