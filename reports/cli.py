"""`liqreplay` subcommands of the reports stage (see backtest/console.py).

    liqreplay report RESULTS_DIR [--out FILE]

writes one self-contained HTML file (default RESULTS_DIR/report.html) and every table as
CSV and JSON in `<FILE stem>_tables/` beside it, then prints the HTML's path.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from fetch.errors import UserError

log = logging.getLogger(__name__)

COMMANDS = ("report",)


def register(subparsers) -> None:
    """Add this stage's subcommands to the `liqreplay` parser."""
    p = subparsers.add_parser(
        "report", help="write the HTML report of a results directory",
        description="Write one self-contained HTML report (no network needed to view it) of a "
                    "`liqreplay run` results directory, with every table as CSV and JSON beside it.")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="directory written by `liqreplay run --out`")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="HTML file to write (default: RESULTS_DIR/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from reports.inputs import load  # noqa: PLC0415 (keep `liqreplay --help` fast)
    from reports.render import write_report  # noqa: PLC0415

    t0 = time.perf_counter()
    inp = load(Path(args.results_dir))
    out = Path(args.out) if args.out else Path(args.results_dir) / "report.html"
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'report.html'}")
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out} should end in .html")
    try:
        html_path, tables_dir = write_report(inp, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from exc
    size = html_path.stat().st_size
    log.info("report: %s (%.1f MB), tables in %s/, %.1f s", html_path, size / 1e6, tables_dir,
             time.perf_counter() - t0)
    print(html_path)
    return 0
