"""The console machinery every stage shares: build a parser from cli modules, run the
chosen subcommand, turn the errors of fetch/errors.py into one line and an exit status.

Bottom layer (imports only fetch.errors), so `python -m fetch|backtest|reports` each run
their own stage through it without importing a layer above; backtest/console.py (the
composition root of `liqreplay`) passes all three stages.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType

from fetch.errors import EXIT_USER, LiqreplayError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix (`--help`), exit status 2."""

    def error(self, message: str):  # noqa: D401 (argparse's name)
        self.exit(EXIT_USER, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


LAKE_HELP = "lake folder (default $LIQREPLAY_LAKE, else ./lake)"


def add_lake_option(parser: argparse.ArgumentParser, help_text: str = LAKE_HELP) -> None:
    """`--lake DIR`, the option of every command that reads or writes the lake (resolved by
    fetch.lake.resolve_lake: the folder given, else $LIQREPLAY_LAKE, else ./lake)."""
    parser.add_argument("--lake", metavar="DIR", default=None, help=help_text)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds, sample counts)."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (account counts, sizes)."""
    return _int_at_least(text, 1)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}: give an integer >= {low}")
    return value


def _command_words(args: argparse.Namespace) -> str:
    """'data verify' for a nested subcommand, else the command."""
    words = [args.command] + [str(v) for k, v in sorted(vars(args).items())
                              if k.endswith("_command") and k != "command" and v]
    return " ".join(words)


def _module(stage: ModuleType | str) -> ModuleType:
    return stage if isinstance(stage, ModuleType) else importlib.import_module(stage)


def build_parser(stages, prog: str = "liqreplay") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Replay the 2022 crashes through FTX's and Binance's liquidation engines.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in stages:
        _module(stage).register(sub)
    return parser


def main(argv: list[str] | None, stages, prog: str = "liqreplay") -> int:
    parser = build_parser(stages, prog)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    try:
        return int(args.func(args) or 0)
    except LiqreplayError as exc:
        print(f"liqreplay {_command_words(args)}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `liqreplay data status | head`: the reader left; stop quietly, no traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
