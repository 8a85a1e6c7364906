"""The ``speculate`` command and its subcommands (the terminal client among them)."""

from speculate.cli.main import main

__all__ = ["main"]
