"""The ``manualnet`` command: argument parsing (``main``) and what each subcommand does (``commands``)."""

from manualnet.cli.main import main

__all__ = ["main"]
