"""A loopback data.binance.vision: zips + .CHECKSUM files in the real directory layout.

Files are built in memory from bar arrays (a `BarBook`) or given rows; `corrupt(rel)` flips
a byte of a zip after its checksum was computed (a bad download / tampered mirror).
`write_tree(dir)` lays the same files out on disk (a local mirror).
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from tests.fetch.servers.base import LoopbackServer
from tests.fetch.servers.fapi import BarBook

KLINE_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                "taker_buy_volume,taker_buy_quote_volume,ignore")


def make_zip(csv_name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(csv_name, text)
    return buf.getvalue()


class VisionServer(LoopbackServer):
    def __init__(self):
        super().__init__()
        self.files: dict[str, bytes] = {}

    # ---- content ----------------------------------------------------------------------
    def put(self, rel: str, csv_text: str, *, checksum: bool = True) -> None:
        name = rel.rsplit("/", 1)[-1]
        data = make_zip(name.replace(".zip", ".csv"), csv_text)
        self.files[rel] = data
        if checksum:
            self.files[rel + ".CHECKSUM"] = (
                f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode())

    def corrupt(self, rel: str) -> None:
        b = bytearray(self.files[rel])
        b[len(b) // 2] ^= 0xFF
        self.files[rel] = bytes(b)

    def add_klines(self, book: BarBook, symbol: str, timeframe: str, first: date, last: date, *,
                   market: str = "perp", kind: str = "klines", header: bool | None = None,
                   micro: bool = False, monthly: bool = False) -> list[str]:
        """Daily (or monthly) kline zips for [first, last] (inclusive days)."""
        prefix = "spot" if market == "spot" else "futures/um"
        header = (market != "spot") if header is None else header
        rels = []
        periods = []
        d = first
        while d <= last:
            if monthly:
                nxt = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
                periods.append(("monthly", d.strftime("%Y-%m"), d, nxt))
                d = nxt
            else:
                periods.append(("daily", d.isoformat(), d, d + timedelta(days=1)))
                d += timedelta(days=1)
        for freq, tag, a, b in periods:
            s = int(pd.Timestamp(a, tz="UTC").value // 1_000_000)
            e = int(pd.Timestamp(b, tz="UTC").value // 1_000_000) - 1
            rows = book.klines(symbol, timeframe, s, e, 10**9)
            lines = [KLINE_HEADER] if header else []
            for r in rows:
                r = list(r)
                if micro:
                    r[0], r[6] = r[0] * 1000, r[6] * 1000 + 999
                lines.append(",".join(str(x) for x in r))
            rel = f"data/{prefix}/{freq}/{kind}/{symbol}/{timeframe}/{symbol}-{timeframe}-{tag}.zip"
            self.put(rel, "\n".join(lines) + "\n")
            rels.append(rel)
        return rels

    def add_funding(self, symbol: str, month: date, times_ms: list[int], rates: list[float]) -> str:
        rel = (f"data/futures/um/monthly/fundingRate/{symbol}/"
               f"{symbol}-fundingRate-{month.strftime('%Y-%m')}.zip")
        lines = ["calc_time,funding_interval_hours,last_funding_rate"]
        lines += [f"{t},8,{r:.8f}" for t, r in zip(times_ms, rates, strict=True)]
        self.put(rel, "\n".join(lines) + "\n")
        return rel

    def add_metrics(self, symbol: str, day: date, oi_base: np.ndarray, price: float) -> str:
        rel = f"data/futures/um/daily/metrics/{symbol}/{symbol}-metrics-{day.isoformat()}.zip"
        lines = ["create_time,symbol,sum_open_interest,sum_open_interest_value,"
                 "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
                 "count_long_short_ratio,sum_taker_long_short_vol_ratio"]
        t0 = pd.Timestamp(day, tz="UTC")
        for i, oi in enumerate(oi_base):
            t = (t0 + pd.Timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{t},{symbol},{oi:.4f},{oi * price:.4f},1.1,1.2,1.3,0.9")
        self.put(rel, "\n".join(lines) + "\n")
        return rel

    def add_liquidations(self, symbol: str, day: date, rows: list[tuple]) -> str:
        """rows: (time_ms, side BUY|SELL, qty, avg_price)."""
        rel = (f"data/futures/um/daily/liquidationSnapshot/{symbol}/"
               f"{symbol}-liquidationSnapshot-{day.isoformat()}.zip")
        lines = ["time,side,order_type,time_in_force,original_quantity,price,average_price,"
                 "order_status,last_fill_quantity,accumulated_fill_quantity"]
        for t, side, q, p in rows:
            lines.append(f"{t},{side},LIMIT,IOC,{q},{p * 0.99:.2f},{p},FILLED,{q},{q}")
        self.put(rel, "\n".join(lines) + "\n")
        return rel

    def write_tree(self, root: Path) -> Path:
        for rel, data in self.files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return root

    # ---- HTTP -------------------------------------------------------------------------
    def route(self, path, q, *, malformed=False):
        rel = path.lstrip("/")
        if rel in self.files:
            return 200, {"Content-Type": "application/zip"}, self.files[rel]
        return 404, {"Content-Type": "application/xml"}, (
            b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>")
