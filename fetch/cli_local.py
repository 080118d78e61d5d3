"""Data-stage subcommands on local state: `liqreplay import DIR`, `liqreplay data status`,
`liqreplay data verify [--repair]`."""
from __future__ import annotations

import argparse
import logging
import sys

import pandas as pd

from fetch.cmdline import add_lake_option
from fetch.errors import EnvironmentFault, UserError
from fetch.lake import Lake, resolve_lake
from fetch.lock import RunLock, lake_lock_path
from fetch.sources.local import ImportError_, import_dir
from fetch.validate import ValidationError

log = logging.getLogger(__name__)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return v


def register(subparsers) -> None:
    """Add `import` and `data status` to the `liqreplay` parser."""
    p = subparsers.add_parser(
        "import", help="import local files (datasets.csv manifest, freqtrade folders) into the lake",
        description="Import a folder described by datasets.csv and/or freqtrade-style data files "
                    "(<exchange>/<BASE>_<QUOTE>-<tf>.json, <exchange>/futures/...-futures.json). Idempotent.")
    p.add_argument("directory", metavar="DIR")
    add_lake_option(p)
    p.add_argument("--max-bad", type=_fraction, default=0.5, metavar="FRACTION",
                   help="refuse a file whose invalid rows exceed this fraction (default 0.5)")
    p.add_argument("--no-progress", action="store_true", help="no progress display even on a terminal")
    p.set_defaults(func=cmd_import)

    d = subparsers.add_parser("data", help="inspect the lake")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    s = dsub.add_parser("status", help="per window: the series it would use, coverage, what is missing",
                        description="Per scenario window: which series each venue and market would run on, "
                                    "how much of the window they cover, what is missing and the command that "
                                    "fetches it. --all: every series of the lake (rows, first/last, gaps).")
    add_lake_option(s)
    s.add_argument("--all", action="store_true", help="the full table: every series of the lake")
    s.add_argument("--venue", action="append", metavar="VENUE", help="only this venue (repeatable)")
    s.add_argument("--symbol", action="append", metavar="SYMBOL",
                   help="only this symbol or coin, e.g. BTCUSDT or BTC (repeatable)")
    s.add_argument("--dataset", choices=["ohlcv", "funding", "open_interest", "liquidations"], default=None,
                   help="with --all: only this dataset")
    s.add_argument("--gaps", type=int, default=3, metavar="N", help="with --all: gap ranges per series (default 3)")
    s.set_defaults(func=cmd_status)
    v = dsub.add_parser("verify", help="check every lake file against its manifest (size, sha256, Parquet)",
                        description="Read every data file and check it against its coverage manifest "
                                    "(size, sha256, readable Parquet, row count) and list files no manifest "
                                    "lists. Exit 0 all good, 1 problems found (or left after --repair).")
    add_lake_option(v)
    v.add_argument("--repair", action="store_true",
                   help="drop what is broken (file, manifest entry, complete marks) so it is written again")
    v.add_argument("--source", metavar="DIR", default=None,
                   help="with --repair: re-import this folder (as `liqreplay import DIR`) afterwards")
    v.set_defaults(func=cmd_verify)
    d.set_defaults(func=_data_help(d))


# The per-window view needs the scenario windows (backtest stage): the console hands it in
# (`set_window_view`); without it (`python -m fetch`) `data status` prints the full table.
_WINDOW_VIEW = None


def set_window_view(fn) -> None:
    """fn(lake_root, venues=, symbols=) -> str: the default view of `data status`."""
    global _WINDOW_VIEW
    _WINDOW_VIEW = fn


def _data_help(parser):
    def run(_args) -> int:
        parser.print_help()
        return 2
    return run


def _import(directory, lake, *, progress, bad_row_threshold):
    """import_dir with its errors as one line: a bad input is a UserError (2), a lake that
    cannot be written an EnvironmentFault (1), another writer a TemporaryFailure (75)."""
    try:
        return import_dir(directory, lake, progress=progress, bad_row_threshold=bad_row_threshold)
    except (ImportError_, ValidationError) as exc:
        raise UserError(str(exc)) from None
    except PermissionError as exc:
        raise EnvironmentFault(f"cannot write to the lake {lake.root}: {exc.strerror} ({exc.filename}); "
                               f"import into a folder you may write (--lake DIR)") from None
    except OSError as exc:
        if exc.filename and not str(exc.filename).startswith(str(lake.root)):
            raise UserError(f"cannot read {exc.filename}: {exc.strerror}") from None
        raise EnvironmentFault(f"cannot write to the lake {lake.root}: {exc.strerror or exc}"
                               f"{f' ({exc.filename})' if exc.filename else ''}") from None


def cmd_import(args) -> int:
    lake = Lake(resolve_lake(args.lake))
    summary = _import(args.directory, lake, progress=False if args.no_progress else None,
                      bad_row_threshold=args.max_bad)
    for f in summary.files:
        if f.issues:
            print(f"  {f.file}: {f.issues}")
    mismatched = [f for f in summary.files if f.matches is False]
    for f in mismatched:
        print(f"  row count differs: {f.file}: read {f.rows}, manifest says {f.expected_rows}")
    print(f"lake: {lake.root}")
    print(summary.line())
    return 1 if mismatched else 0


DATASET_SHORT = {"ohlcv": "ohlcv", "funding": "funding", "open_interest": "oi", "liquidations": "liqs"}
WIDTH = 100


def format_status(cov: pd.DataFrame, max_gaps: int = 3) -> str:
    """The coverage table as text: one line per series (fits 100 columns), its gap ranges on
    an indented line below."""
    if cov.empty:
        return "the lake is empty: run `liqreplay import DIR` or `liqreplay fetch ...`"
    lines = []
    header = (f"{'data':<7} {'venue':<7} {'market':<6} {'symbol':<13} {'tf':<3} {'price':<5} {'rows':>7} "
              f"{'first_ts':<16} {'last_ts':<16} {'gap%':>5}")
    lines.append(header)
    lines.append("-" * len(header))
    for r in cov.itertuples():
        ft = f"{r.first_ts:%Y-%m-%d %H:%M}" if pd.notna(r.first_ts) else "-"
        lt = f"{r.last_ts:%Y-%m-%d %H:%M}" if pd.notna(r.last_ts) else "-"
        lines.append(
            f"{DATASET_SHORT.get(r.dataset, r.dataset)[:7]:<7} {r.venue[:7]:<7} {r.market[:6]:<6} "
            f"{r.symbol[:13]:<13} {r.timeframe[:3]:<3} {r.price_type[:5]:<5} {r.rows:>7} {ft:<16} {lt:<16} "
            f"{r.gap_pct:>5.1f}"[:WIDTH])
        if r.gaps and max_gaps > 0:
            parts = [f"{a:%Y-%m-%d %H:%M}..{b:%Y-%m-%d %H:%M}" for a, b in r.gaps[:max_gaps]]
            if len(r.gaps) > max_gaps:
                parts.append(f"(+{len(r.gaps) - max_gaps} more)")
            line = "    gaps:"
            for part in parts:
                if len(line) + 1 + len(part) > WIDTH:
                    lines.append(line)
                    line = "         "
                line += " " + part
            lines.append(line)
    tot = cov.groupby("dataset")["rows"].agg(["count", "sum"])
    lines.append("")
    lines.append("totals:")
    lines += [f"  {ds:<14} {int(c):>5} series {int(s):>12,} rows" for ds, (c, s) in tot.iterrows()]
    return "\n".join(lines)


def cmd_verify(args) -> int:
    if args.source and not args.repair:
        raise UserError("--source re-imports after a repair: add --repair")
    lake = Lake(resolve_lake(args.lake))
    if not lake.root.exists():
        raise UserError(f"no lake at {lake.root}: nothing to verify (pass --lake DIR)")
    notice = lake.interrupted_import()
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    problems = lake.verify()
    n_files = sum(len(m.get("files", {})) for m in lake.manifests())
    for p in problems:
        print(p.line())
    if not problems:
        print(f"lake {lake.root}: {n_files} files, all match their manifests")
    if not args.repair:
        if problems:
            print(f"{len(problems)} problem(s): `liqreplay data verify --repair --lake {lake.root}` drops them "
                  f"(add --source DIR to re-import)", file=sys.stderr)
        return 1 if problems else 0
    with RunLock(lake_lock_path(lake.root), "verify --repair"):
        removed = lake.repair(problems) if problems else []
    if removed:
        print(f"dropped {len(removed)} file(s); their periods are no longer marked complete")
    if args.source:
        summary = _import(args.source, Lake(lake.root), progress=None, bad_row_threshold=0.5)
        print(summary.line())
    left = Lake(lake.root).verify()
    if left:
        print(f"{len(left)} problem(s) remain", file=sys.stderr)
        return 1
    if removed and not args.source:
        print(f"restore them with `liqreplay import DIR --lake {lake.root}` or `liqreplay fetch ...`")
    return 0


def cmd_status(args) -> int:
    lake = Lake(resolve_lake(args.lake))
    notice = lake.interrupted_import()
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    print(f"lake: {lake.root}  snapshot {lake.snapshot_id()}")
    if not args.all and _WINDOW_VIEW is not None and lake.root.exists():
        print(_WINDOW_VIEW(lake.root, venues=args.venue, symbols=args.symbol))
        return 0
    cov = lake.coverage()
    if args.dataset:
        cov = cov[cov["dataset"] == args.dataset]
    if args.venue:
        cov = cov[cov["venue"].isin(args.venue)]
    if args.symbol:
        want = {s.upper() for s in args.symbol}
        cov = cov[cov["symbol"].str.upper().isin(want) |
                  cov["symbol"].str.upper().str.extract(r"^([A-Z0-9]+?)(?:USDT|USD|-PERP|/USD|/USDT|BUSD)?$")[0]
                  .isin(want)]
    cov = cov.sort_values(["dataset", "venue", "market", "symbol", "timeframe", "price_type"])
    print(format_status(cov, args.gaps))
    return 0
