"""Measure: refresh time for a week of 1-minute bars against the loopback servers (printed).

    .venv/bin/python -m tests.fetch.servers.bench_refresh [--real]

--real serves the real BTCUSDT 1m bars of 2022-11-06..12 from ../shared/data (else a
synthetic walk). Three runs, each into a fresh lake: REST (ccxt, binanceusdm) with ccxt's
own rate limiter as shipped, REST with the limiter at 1 ms (server-bound), and the
data.binance.vision archive path (7 daily zips). Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from fetch.refresh import Fetchers, run
from tests.fetch.jobs import write_job
from tests.fetch.servers.fapi import BarBook, FapiServer
from tests.fetch.servers.vision import VisionServer

SHARED = Path(os.environ.get("LIQREPLAY_SEED_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data"))


def _cfg(d: Path, source: str, url: str) -> Path:
    return write_job(d / f"{source}.toml", source=source, dataset="ohlcv", symbols=["BTCUSDT"], timeframes=["1m"],
                     start="2022-11-06", end="2022-11-13", api_url=url)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", action="store_true")
    a = ap.parse_args()
    book = (BarBook.from_shared(SHARED) if a.real
            else BarBook().add_synthetic("BTCUSDT", "2022-11-06", "2022-11-14"))
    now = datetime(2022, 12, 1, tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory() as tmp, FapiServer(book) as fapi, VisionServer() as vis:
        d = Path(tmp)
        vis.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 6), date(2022, 11, 12))
        runs = [("ccxt REST, ccxt default rate limiter", "ccxt", fapi, None),
                ("ccxt REST, rate limiter 1 ms", "ccxt", fapi, 1),
                ("data.binance.vision daily zips", "binance_vision", vis, 1)]
        for label, source, srv, rl in runs:
            srv.reset_log()
            lake = d / f"lake-{source}-{rl}"
            t0 = time.perf_counter()
            code = run(_cfg(d, source, srv.url), str(lake), now=now,
                       fetchers=Fetchers(rate_limit_ms=rl, now=now), out=io.StringIO())
            dt = time.perf_counter() - t0
            n = srv.count()
            t1 = time.perf_counter()
            run(_cfg(d, source, srv.url), str(lake), now=now,
                fetchers=Fetchers(rate_limit_ms=rl, now=now), out=io.StringIO())
            dt2 = time.perf_counter() - t1
            print(f"{label:<40} exit {code}: 10080 bars in {dt:.2f}s ({10080 / dt:,.0f} bars/s, "
                  f"{n} requests); second run {dt2 * 1000:.0f} ms, {srv.count() - n} requests")


if __name__ == "__main__":
    main()
