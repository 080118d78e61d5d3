"""Data-stage subcommands (cli_local)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add these subcommands to the `liqreplay` parser."""
