"""The `liqreplay` console command: one parser assembled from each stage's cli module.

Each stage owns its subcommands in `<stage>/cli.py`, which exposes
`register(subparsers)`; every subcommand sets `func(args) -> int` on its parser.
This module only assembles them, so the stages stay independent of each other.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

STAGE_CLIS = ("fetch.cli", "backtest.cli", "backtest.calibrate_cli", "reports.cli")


class UserError(Exception):
    """An error the user can fix: printed as one line, exit status 2."""


def build_parser(stages: tuple[str, ...] = STAGE_CLIS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liqreplay",
        description="Replay the 2022 crashes through FTX's and Binance's liquidation engines.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in stages:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None, stages: tuple[str, ...] = STAGE_CLIS) -> int:
    parser = build_parser(stages)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"liqreplay {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `liqreplay data status | head`: the reader left; stop quietly, no traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
