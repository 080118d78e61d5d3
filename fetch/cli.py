"""`liqreplay` subcommands of the fetch stage (see backtest/console.py)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add this stage's subcommands to the `liqreplay` parser."""
