"""Data-stage subcommands that talk to the network: `liqreplay fetch` and `liqreplay refresh`.

Thin: argument parsing here, the work in fetch/refresh.py (which both commands share).
"""
from __future__ import annotations

import sys

from fetch import timerange
from fetch.cmdline import add_lake_option
from fetch.errors import UserError
from fetch.lake import Lake, resolve_lake
from fetch.lock import RunLock, lake_lock_path


def register(subparsers) -> None:
    """Add these subcommands to the `liqreplay` parser."""
    f = subparsers.add_parser(
        "fetch", help="ad-hoc pull of missing data for a time range into the lake",
        description="Fetch exactly the partitions of --timerange that the lake lacks "
                    "(--force refetches them). Exit 0 done, 75 temporary failure, 2 user error.")
    f.add_argument("symbols", nargs="+", help="exchange ids, e.g. BTCUSDT ETHUSDT (FTX: BTC-PERP)")
    f.add_argument("--exchange", default="binanceusdm",
                   help="ccxt exchange id (default binanceusdm); tardis: ftx, binance-futures")
    f.add_argument("--source", default="ccxt", choices=["ccxt", "binance_vision", "tardis"])
    f.add_argument("--dataset", default="ohlcv",
                   choices=["ohlcv", "funding", "open_interest", "liquidations"])
    f.add_argument("-t", "--timeframe", action="append", dest="timeframes",
                   help="bar/sample interval, repeatable (default 1m; open interest 5m)")
    f.add_argument("--price-type", action="append", dest="price_types",
                   choices=["trade", "mark", "index"], help="repeatable (default trade)")
    f.add_argument("--market", default="", help="spot | perp | future (default from the source)")
    f.add_argument("--timerange", required=True, help="YYYYMMDD-YYYYMMDD, end exclusive")
    f.add_argument("--force", action="store_true", help="refetch even what the lake has")
    f.add_argument("--api-url", default="", help="base-URL override (mirror, test server)")
    f.add_argument("--tail", default="", choices=["", "ccxt"],
                   help="binance_vision: take days the archive lacks from REST")
    add_lake_option(f)
    f.set_defaults(func=cmd_fetch)

    r = subparsers.add_parser(
        "refresh", help="the nightly job: keep the configured series complete",
        description="Fetch what the lake is missing for every job of a TOML config. "
                    "Exit 0 all done, 75 temporary failure (retry later), 1 needs a person.")
    r.add_argument("--config", required=True, help="TOML file (see fetch/refresh.example.toml)")
    add_lake_option(r, "lake folder (default the config's, else $LIQREPLAY_LAKE, else ./lake)")
    r.add_argument("--summary", default=None,
                   help="JSON summary path (default <lake>/_refresh/summary.json)")
    r.set_defaults(func=cmd_refresh)


def cmd_fetch(args) -> int:
    from fetch import refresh as R  # imports ccxt (~2 s): paid by the network commands only

    try:
        tr = timerange.parse_timerange(args.timerange)
    except timerange.TimeRangeError as exc:
        raise UserError(str(exc)) from None
    if tr.start is None:
        raise UserError(f"--timerange {args.timerange!r} needs a start date, e.g. 20221106-20221113")
    tfs = tuple(args.timeframes or (("5m",) if args.dataset == "open_interest" else ("1m",)))
    for tf in tfs:
        try:
            timerange.timeframe_delta(tf)
        except timerange.TimeRangeError as exc:
            raise UserError(str(exc)) from None
    exchange = args.exchange
    if args.source == "tardis" and exchange == "binanceusdm":
        exchange = "ftx"
    venue, market = R.venue_market(args.source, exchange)
    job = R.Job(name="fetch", source=args.source, dataset=args.dataset,
                symbols=tuple(args.symbols), start=tr.start.isoformat(),
                end=tr.end.isoformat() if tr.end else "", exchange=exchange,
                venue=venue, market=args.market or market, timeframes=tfs,
                price_types=tuple(args.price_types or ("trade",)), api_url=args.api_url,
                tail=args.tail)
    lake = Lake(resolve_lake(args.lake))
    fx = R.Fetchers()
    with RunLock(lake_lock_path(lake.root), "fetch"):  # one writer per lake (import, refresh, fetch)
        results = R.refresh(lake, [job], fetchers=fx, force=args.force)
    for r in results:
        what = f"{r.symbol} {r.dataset} {r.timeframe} {r.price_type}".replace("  ", " ")
        if r.status in ("ok", "up_to_date"):
            note = "already complete" if r.status == "up_to_date" else (
                f"{r.chunks_done} chunk(s), {r.rows_written} rows written ({r.rows_new} new)")
            print(f"fetch: {what}: {note}")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise UserError(failed[0].error)
    temp = [r for r in results if r.status == "temporary_failure"]
    for r in temp:
        print(f"fetch: {r.symbol} {r.dataset}: temporary failure, retry later: {r.error}",
              file=sys.stderr)
    return R.EXIT_TEMPFAIL if temp else 0


def cmd_refresh(args) -> int:
    from fetch import refresh as R  # imports ccxt (~2 s): paid by the network commands only

    return R.run(args.config, args.lake, summary_path=args.summary)
