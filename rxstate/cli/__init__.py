"""The ``rxstate`` command-line tool."""

from rxstate.cli.main import main

__all__ = ["main"]
