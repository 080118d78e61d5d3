"""`liqreplay` subcommands of the data stage (see backtest/console.py).

Local commands (import, data status/verify) and remote ones (fetch, refresh) live in two
modules so that each stays one responsibility.
"""
from __future__ import annotations

from fetch import cli_local, cli_remote


def register(subparsers) -> None:
    """Add the data stage's subcommands to the `liqreplay` parser."""
    cli_local.register(subparsers)
    cli_remote.register(subparsers)
