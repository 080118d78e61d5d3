"""Data-stage subcommands on local state: `liqreplay import DIR`, `liqreplay data status`."""
from __future__ import annotations

import argparse
import logging

import pandas as pd

log = logging.getLogger(__name__)


def _add_lake(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lake", metavar="DIR", default=None,
                   help="lake folder (default: $LIQREPLAY_LAKE, else ./lake)")


def register(subparsers) -> None:
    """Add `import` and `data status` to the `liqreplay` parser."""
    p = subparsers.add_parser(
        "import", help="import local files (datasets.csv manifest, freqtrade folders) into the lake",
        description="Import a folder described by datasets.csv and/or freqtrade-style data files "
                    "(<exchange>/<BASE>_<QUOTE>-<tf>.json, <exchange>/futures/...-futures.json). Idempotent.")
    p.add_argument("directory", metavar="DIR")
    _add_lake(p)
    p.add_argument("--max-bad", type=float, default=0.5, metavar="FRACTION",
                   help="refuse a file whose invalid rows exceed this fraction (default 0.5)")
    p.add_argument("--no-progress", action="store_true", help="no progress display even on a terminal")
    p.set_defaults(func=cmd_import)

    d = subparsers.add_parser("data", help="inspect the lake")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    s = dsub.add_parser("status", help="coverage per series: rows, first/last ts, gap %%, gap ranges")
    _add_lake(s)
    s.add_argument("--dataset", choices=["ohlcv", "funding", "open_interest", "liquidations"], default=None)
    s.add_argument("--gaps", type=int, default=3, metavar="N", help="gap ranges shown per series (default 3)")
    s.set_defaults(func=cmd_status)
    d.set_defaults(func=_data_help(d))


def _data_help(parser):
    def run(args) -> int:
        parser.print_help()
        return 2
    return run


def cmd_import(args) -> int:
    from fetch.errors import UserError
    from fetch.lake import Lake, resolve_lake
    from fetch.sources.local import ImportError_, import_dir
    from fetch.validate import ValidationError

    lake = Lake(resolve_lake(args.lake))
    try:
        summary = import_dir(args.directory, lake, progress=False if args.no_progress else None,
                             bad_row_threshold=args.max_bad)
    except (ImportError_, ValidationError) as exc:
        raise UserError(str(exc)) from None
    for f in summary.files:
        if f.issues:
            print(f"  {f.file}: {f.issues}")
    mismatched = [f for f in summary.files if f.matches is False]
    for f in mismatched:
        print(f"  row count differs: {f.file}: read {f.rows}, manifest says {f.expected_rows}")
    print(f"lake: {lake.root}")
    print(summary.line())
    return 1 if mismatched else 0


def format_status(cov: pd.DataFrame, max_gaps: int = 3) -> str:
    """The coverage table as text (one line per series)."""
    if cov.empty:
        return "the lake is empty: run `liqreplay import DIR` or `liqreplay fetch ...`"
    lines = []
    header = f"{'dataset':<13} {'venue':<8} {'market':<6} {'symbol':<14} {'tf':<4} {'price':<5} {'rows':>8}  " \
             f"{'first_ts':<16}  {'last_ts':<16}  {'gap%':>6}  gaps"
    lines.append(header)
    lines.append("-" * len(header))
    for r in cov.itertuples():
        gaps = r.gaps[:max_gaps]
        gtxt = ", ".join(f"{a:%Y-%m-%d %H:%M}..{b:%Y-%m-%d %H:%M}" for a, b in gaps)
        if len(r.gaps) > max_gaps:
            gtxt += f" (+{len(r.gaps) - max_gaps} more)"
        ft = f"{r.first_ts:%Y-%m-%d %H:%M}" if pd.notna(r.first_ts) else "-"
        lt = f"{r.last_ts:%Y-%m-%d %H:%M}" if pd.notna(r.last_ts) else "-"
        lines.append(
            f"{r.dataset:<13} {r.venue:<8} {r.market:<6} {r.symbol:<14} {r.timeframe:<4} {r.price_type:<5} "
            f"{r.rows:>8}  {ft:<16}  {lt:<16}  {r.gap_pct:>6.2f}  {gtxt}")
    tot = cov.groupby("dataset")["rows"].agg(["count", "sum"])
    lines.append("")
    lines.append("totals: " + "; ".join(f"{ds} {int(c)} series, {int(s):,} rows" for ds, (c, s) in tot.iterrows()))
    return "\n".join(lines)


def cmd_status(args) -> int:
    from fetch.lake import Lake, resolve_lake

    lake = Lake(resolve_lake(args.lake))
    cov = lake.coverage()
    if args.dataset:
        cov = cov[cov["dataset"] == args.dataset]
    cov = cov.sort_values(["dataset", "venue", "market", "symbol", "timeframe", "price_type"])
    print(f"lake: {lake.root}  snapshot {lake.snapshot_id()}")
    print(format_status(cov, args.gaps))
    return 0
