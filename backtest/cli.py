"""`liqreplay` subcommands of the backtest stage (see backtest/console.py)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add this stage's subcommands to the `liqreplay` parser."""
