"""The `liqreplay` console command: one parser assembled from each stage's cli module.

Each stage owns its subcommands in `<stage>/cli.py`, which exposes
`register(subparsers)`; every subcommand sets `func(args) -> int` on its parser.
This module is the composition root of `liqreplay`: it names the three stage CLIs
(`stage_clis`) and nothing imports it, so the stages stay independent of each other. The
machinery is fetch/cmdline.py; the errors live in fetch/errors.py (the bottom layer) and
are re-exported here for compatibility.
"""
from __future__ import annotations

import sys
from types import ModuleType

from fetch import cmdline
from fetch.errors import EnvironmentFault, TemporaryFailure, UserError

__all__ = ["UserError", "EnvironmentFault", "TemporaryFailure", "build_parser", "main", "stage_clis"]


def stage_clis() -> tuple[ModuleType, ...]:
    """The stages' cli modules, in data-flow order."""
    from backtest import calibrate_cli
    from backtest import cli as backtest_cli
    from backtest import cli_sweep as sweep_cli
    from fetch import cli as fetch_cli
    from reports import cli as reports_cli  # the composition root may name the top stage

    return (fetch_cli, backtest_cli, sweep_cli, calibrate_cli, reports_cli)


def _wired(stages):
    if stages is not None:
        return stages
    stages = stage_clis()
    from backtest.data_status import window_view
    from fetch import cli_local

    cli_local.set_window_view(window_view)  # `data status` shows the scenario windows by default
    return stages


def build_parser(stages=None):
    return cmdline.build_parser(_wired(stages))


def main(argv: list[str] | None = None, stages=None) -> int:
    return cmdline.main(argv, _wired(stages))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
