"""tardis.dev datasets (FTX and Binance-futures history), read over urllib (no tardis-dev client).

One gzipped CSV per day, symbol and data type from the datasets endpoint
(`{api_url}/{exchange}/{data_type}/{YYYY}/{MM}/{DD}/{SYMBOL}.csv.gz`, the URL scheme of
the tardis-dev client; `api_url=` is the base-URL override, as in the other sources), read in memory: no temporary
files, so nothing is left behind on any exit path. The requests go through the project's
retry helper (fetch/retry.py), not the client's 30 attempts with minutes of backoff (which
hung ~48 minutes offline): a connect timeout, a few attempts with a log line each, and a
bound on the total wait, so an unreachable host is a temporary failure (exit 75) within a
minute.

Raw schemas (tardis.dev normalised CSV; `timestamp` = exchange time, epoch µs):
- liquidations: exchange, symbol, timestamp, local_timestamp, id, side (of the liquidation
  ORDER: "sell" closes a long, "buy" closes a short), price, amount (base coins).
- derivative_ticker: exchange, symbol, timestamp, local_timestamp, funding_timestamp,
  funding_rate, predicted_funding_rate, open_interest (base coins), last_price, index_price,
  mark_price. Open interest is sampled at each bucket OPEN (first tick at or after it, no
  look-ahead); funding is the last rate seen before each `funding_timestamp` (settlement);
  mark-price bars are OHLC of the ticks inside each bucket (ts = bucket open).

API key: $TARDIS_API_KEY. Without one only the first day of each month is free; a request
for any other day fails before any download with a message saying so.
"""
from __future__ import annotations

import gzip
import io
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from typing import Callable

import numpy as np
import pandas as pd

from fetch import timerange
from fetch.retry import Retryable, RetryPolicy, SourceError, call_with_retry
from fetch.timerange import utc

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://datasets.tardis.dev/v1"
# 4 attempts, 1 + 2 + 4 s between them, at most 20 s of waiting: with an 8 s socket timeout
# an unreachable host is given up on well within a minute
DEFAULT_RETRY = RetryPolicy(attempts=4, base_s=1.0, cap_s=8.0, retry_after_cap_s=15.0, deadline_s=20.0)
VENUE = {"ftx": "ftx", "binance-futures": "binance", "binance": "binance", "bybit": "bybit",
         "okex-swap": "okx", "deribit": "deribit"}


def _market(exchange: str, symbol: str) -> str:
    if exchange == "ftx":
        return "perp" if symbol.upper().endswith("-PERP") else ("spot" if "/" in symbol else "future")
    if exchange in ("binance-futures", "bybit", "okex-swap", "deribit"):
        return "perp"
    return "spot"


def free_days_only(start: datetime, end: datetime) -> list[datetime]:
    """Days in [start, end) that need a key (any day but the 1st of a month)."""
    d = utc(start).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while d < utc(end):
        if d.day != 1:
            out.append(d)
        d += timedelta(days=1)
    return out


class TardisSource:
    def __init__(self, *, api_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 8.0, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] | None = None):
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.api_key = os.environ.get("TARDIS_API_KEY", "") if api_key is None else api_key
        self.timeout_s = timeout_s  # connect and read timeout of each request
        self.retry = retry or DEFAULT_RETRY
        self.sleep = sleep or time.sleep
        self.requests = 0

    def _day(self, exchange: str, data_type: str, symbol: str, day: datetime) -> bytes:
        """One day's CSV (decompressed), retried as fetch/retry.py says; b"" when empty."""
        sym = urllib.parse.quote(symbol.replace(":", "-").replace("/", "-").upper(), safe="")
        url = f"{self.api_url}/{exchange}/{data_type}/{day:%Y/%m/%d}/{sym}.csv.gz"
        headers = {"Accept-Encoding": "gzip", "User-Agent": "liqreplay"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        what = f"tardis.dev {exchange} {data_type} {symbol} {day:%Y-%m-%d}"

        def once() -> bytes:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                            timeout=self.timeout_s) as r:
                    return r.read()
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise SourceError(f"tardis.dev refused {exchange} {data_type} {symbol} "
                                      f"(HTTP {exc.code}): the API key is missing, invalid or "
                                      f"lacks this range; set TARDIS_API_KEY (without a key "
                                      f"only the first day of each month is free)",
                                      temporary=False) from None
                if exc.code == 404:
                    raise SourceError(f"tardis.dev has no {data_type} for {exchange} {symbol} "
                                      f"on {day:%Y-%m-%d} (HTTP 404): check the symbol (tardis "
                                      f"ids, e.g. BTC-PERP, BTCUSDT)", temporary=False) from None
                if exc.code in (408, 429) or exc.code >= 500:
                    ra = exc.headers.get("Retry-After") if exc.headers else None
                    raise Retryable(f"HTTP {exc.code}", float(ra) if ra and ra.isdigit() else None) from None
                raise SourceError(f"{what}: HTTP {exc.code}", temporary=False) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise Retryable(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {reason}") from None

        def count():
            self.requests += 1

        data = call_with_retry(once, what=what, policy=self.retry, sleep=self.sleep, on_attempt=count)
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data

    # ---- download ---------------------------------------------------------------------
    def _download(self, exchange: str, data_type: str, symbol: str, start, end) -> pd.DataFrame:
        """Raw rows of one data type for the whole UTC days overlapping [start, end)."""
        s = utc(start).replace(hour=0, minute=0, second=0, microsecond=0)
        e = utc(end)
        e_day = e.replace(hour=0, minute=0, second=0, microsecond=0)
        if e_day < e:
            e_day += timedelta(days=1)
        if not self.api_key:
            paid = free_days_only(s, e_day)
            if paid:
                raise SourceError(
                    f"tardis.dev {exchange} {data_type} {symbol} {paid[0]:%Y-%m-%d}"
                    f"{' … ' + format(paid[-1], '%Y-%m-%d') if len(paid) > 1 else ''}: needs an "
                    f"API key: set TARDIS_API_KEY (without one only the first day of each month "
                    f"is free)", temporary=False)
        parts = []
        day = s
        while day < e_day:
            text = self._day(exchange, data_type, symbol, day)
            if text.strip():
                try:
                    parts.append(pd.read_csv(io.BytesIO(text)))
                except (ValueError, pd.errors.ParserError) as exc:
                    raise SourceError(f"tardis.dev {exchange} {data_type} {symbol} {day:%Y-%m-%d}: "
                                      f"not a CSV ({exc})", temporary=False) from None
            day += timedelta(days=1)
        if not parts:
            return pd.DataFrame()
        df = pd.concat(parts, ignore_index=True)
        df["ts"] = pd.to_datetime(pd.to_numeric(df["timestamp"], errors="coerce"), unit="us",
                                  utc=True, errors="coerce").dt.as_unit("us")
        bad = int(df["ts"].isna().sum())
        if bad:
            log.warning("tardis %s %s: %d row(s) without a valid timestamp dropped", data_type,
                        symbol, bad)
        df = df.dropna(subset=["ts"])
        df = df[(df["ts"] >= pd.Timestamp(utc(start))) & (df["ts"] < pd.Timestamp(e))]
        df.attrs["bad_rows"] = bad
        return df.reset_index(drop=True)

    # ---- datasets ---------------------------------------------------------------------
    def fetch_liquidations(self, exchange: str, symbol: str, start, end) -> pd.DataFrame:
        raw = self._download(exchange, "liquidations", symbol, start, end)
        return self._liq_frame(raw, exchange, symbol, "tardis-liquidations")

    def _liq_frame(self, raw: pd.DataFrame, exchange: str, symbol: str, source: str):
        if not len(raw):
            raw = pd.DataFrame({"ts": pd.Series([], dtype="datetime64[us, UTC]"), "side": [],
                                "price": [], "amount": []})
        side = raw["side"].astype(str).str.lower().map({"sell": "long", "buy": "short"})
        qty = pd.to_numeric(raw["amount"], errors="coerce").astype("float64")
        px = pd.to_numeric(raw["price"], errors="coerce").astype("float64")
        out = pd.DataFrame({"venue": VENUE.get(exchange, exchange), "market": _market(exchange, symbol),
                            "symbol": symbol, "timeframe": "", "ts": raw["ts"], "side": side,
                            "qty": qty, "price": px, "notional_usd": qty * px, "source": source})
        bad = out["side"].isna() | out["qty"].isna() | out["price"].isna()
        out = out[~bad].reset_index(drop=True)
        out["side"] = out["side"].astype(str)
        out.attrs.update(source=source, bad_rows=int(bad.sum()) + raw.attrs.get("bad_rows", 0))
        return out

    def fetch_derivative_ticker(self, exchange: str, symbol: str, start, end) -> pd.DataFrame:
        return self._download(exchange, "derivative_ticker", symbol, start, end)

    def fetch_open_interest(self, exchange: str, symbol: str, timeframe: str, start,
                            end) -> pd.DataFrame:
        raw = self.fetch_derivative_ticker(exchange, symbol, start, end)
        step = pd.Timedelta(timerange.timeframe_delta(timeframe))
        if len(raw):
            raw = raw.dropna(subset=["open_interest"]).sort_values("ts")
            raw["bucket"] = raw["ts"].dt.floor(step)
            first = raw.groupby("bucket", sort=True).first()
            oi = pd.to_numeric(first["open_interest"], errors="coerce").astype("float64")
            mark = pd.to_numeric(first.get("mark_price"), errors="coerce").astype("float64")
            ts = pd.Series(first.index, dtype="datetime64[us, UTC]")
        else:
            oi = mark = pd.Series([], dtype="float64")
            ts = pd.Series([], dtype="datetime64[us, UTC]")
        out = pd.DataFrame({"venue": VENUE.get(exchange, exchange),
                            "market": _market(exchange, symbol), "symbol": symbol,
                            "timeframe": timeframe, "ts": ts.to_numpy(),
                            "oi_base": oi.to_numpy(), "oi_usd": (oi * mark).to_numpy(),
                            "source": "tardis"})
        out["ts"] = out["ts"].astype("datetime64[us, UTC]")
        out.attrs.update(source="tardis", bad_rows=raw.attrs.get("bad_rows", 0))
        return out

    def fetch_funding(self, exchange: str, symbol: str, start, end) -> pd.DataFrame:
        raw = self.fetch_derivative_ticker(exchange, symbol, start, end)
        rows = []
        if len(raw) and "funding_timestamp" in raw:
            raw = raw.dropna(subset=["funding_timestamp", "funding_rate"]).sort_values("ts")
            ft = pd.to_datetime(pd.to_numeric(raw["funding_timestamp"]), unit="us", utc=True)
            raw = raw.assign(ft=ft)
            for t, g in raw[raw["ts"] < raw["ft"]].groupby("ft", sort=True):
                rows.append((t, float(g["funding_rate"].iloc[-1]),
                             _float(g["mark_price"].iloc[-1]) if "mark_price" in g else np.nan))
        s, e = pd.Timestamp(utc(start)), pd.Timestamp(utc(end))
        rows = [r for r in rows if s <= r[0] < e]
        ts = pd.Series([r[0] for r in rows], dtype="datetime64[us, UTC]")
        hours = np.diff(ts.astype("int64").to_numpy()) / 3.6e9 if len(rows) > 1 else []
        default = 1.0 if exchange == "ftx" else 8.0
        interval = np.concatenate([[hours[0] if len(hours) else default], hours]) if rows else []
        out = pd.DataFrame({"venue": VENUE.get(exchange, exchange),
                            "market": _market(exchange, symbol), "symbol": symbol, "ts": ts,
                            "rate": np.asarray([r[1] for r in rows], dtype="float64"),
                            "interval_hours": np.round(np.asarray(interval, dtype="float64"), 6),
                            "mark_price": np.asarray([r[2] for r in rows], dtype="float64")})
        out.attrs["source"] = "tardis"
        return out

    def fetch_mark_ohlcv(self, exchange: str, symbol: str, timeframe: str, start, end,
                         *, price_type: str = "mark") -> pd.DataFrame:
        raw = self.fetch_derivative_ticker(exchange, symbol, start, end)
        col = {"mark": "mark_price", "index": "index_price", "trade": "last_price"}[price_type]
        step = pd.Timedelta(timerange.timeframe_delta(timeframe))
        if len(raw):
            px = pd.to_numeric(raw[col], errors="coerce").astype("float64")
            r = pd.DataFrame({"ts": raw["ts"], "p": px}).dropna().sort_values("ts")
            r["bucket"] = r["ts"].dt.floor(step)
            g = r.groupby("bucket", sort=True)["p"]
            bars = pd.DataFrame({"open": g.first(), "high": g.max(), "low": g.min(),
                                 "close": g.last()})
            ts = pd.Series(bars.index, dtype="datetime64[us, UTC]").to_numpy()
        else:
            bars = pd.DataFrame({c: pd.Series([], dtype="float64") for c in
                                 ("open", "high", "low", "close")})
            ts = pd.Series([], dtype="datetime64[us, UTC]").to_numpy()
        out = pd.DataFrame({"venue": VENUE.get(exchange, exchange),
                            "market": _market(exchange, symbol), "symbol": symbol,
                            "timeframe": timeframe, "price_type": price_type, "ts": ts,
                            "open": bars["open"].to_numpy(), "high": bars["high"].to_numpy(),
                            "low": bars["low"].to_numpy(), "close": bars["close"].to_numpy(),
                            "volume_base": 0.0, "volume_quote": 0.0})
        out["ts"] = out["ts"].astype("datetime64[us, UTC]")
        out.attrs["source"] = "tardis"
        return out

    def fetch(self, exchange: str, dataset: str, symbol: str, start, end, *, timeframe: str = "",
              price_type: str = "trade") -> pd.DataFrame:
        """Dispatch by lake dataset (used by fetch/refresh.py)."""
        if dataset == "liquidations":
            return self.fetch_liquidations(exchange, symbol, start, end)
        if dataset == "open_interest":
            return self.fetch_open_interest(exchange, symbol, timeframe or "1m", start, end)
        if dataset == "funding":
            return self.fetch_funding(exchange, symbol, start, end)
        if dataset == "ohlcv":
            if price_type == "trade":
                raise SourceError("tardis trade bars are not built here (derivative_ticker "
                                  "gives mark/index bars; use price_types = [\"mark\"])",
                                  temporary=False)
            return self.fetch_mark_ohlcv(exchange, symbol, timeframe or "1m", start, end,
                                         price_type=price_type)
        raise SourceError(f"tardis: unknown dataset {dataset!r}", temporary=False)


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


__all__ = ["TardisSource", "free_days_only", "DEFAULT_API_URL"]
