"""REST history from any ccxt exchange (default binanceusdm) as canonical frames.

Raw schemas (what the exchange returns, before normalisation):
- klines (Binance family, through ccxt's implicit API so ccxt's error mapping applies):
  [open_time_ms, open, high, low, close, volume_base, close_time_ms, volume_quote, trades,
  taker_buy_base, taker_buy_quote, ignore]; `open_time_ms` is the bar OPEN. Other exchanges:
  ccxt's unified [ts_ms(open), open, high, low, close, volume_base]; volume_quote is then
  derived as volume_base * close (an approximation, logged once per call).
- funding: ccxt unified funding-rate history ({timestamp (settlement, ms), fundingRate, info}).
- open interest: ccxt unified open-interest history ({timestamp (period start, ms),
  openInterestAmount (base), openInterestValue (USD)}).

Fetchers never write files: they return frames in the canonical column order of
fetch/schema.py (Contract 1). Pagination is our own loop (since/limit, advance past the
last timestamp, dedupe, stop at the end); transient errors are retried with exponential
backoff honouring Retry-After; BadSymbol and other exchange errors fail fast naming the symbol.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any, Callable
from urllib.parse import urlsplit

import ccxt
import numpy as np
import pandas as pd

from fetch.retry import Retryable, RetryPolicy, SourceError, call_with_retry
from fetch.schema import venue_of
from fetch.timerange import (
    BAR_TIMEFRAMES,
    timeframe_delta,
    utc,  # re-exported: the sources' and tests' time parser
)

log = logging.getLogger(__name__)

DEFAULT_EXCHANGE = "binanceusdm"

OHLCV_COLUMNS = ["venue", "market", "symbol", "timeframe", "price_type", "ts",
                 "open", "high", "low", "close", "volume_base", "volume_quote"]
FUNDING_COLUMNS = ["venue", "market", "symbol", "ts", "rate", "interval_hours", "mark_price"]
OI_COLUMNS = ["venue", "market", "symbol", "timeframe", "ts", "oi_base", "oi_usd", "source"]

TIMEFRAME_MS = {tf: int(timeframe_delta(tf).total_seconds()) * 1000 for tf in BAR_TIMEFRAMES}

# Errors worth retrying: the network, timeouts, rate limits (HTTP 429/418 map to
# DDoSProtection / RateLimitExceeded, both NetworkError subclasses), exchange outages (5xx).
TRANSIENT = (ccxt.NetworkError, ccxt.ExchangeNotAvailable, ccxt.OnMaintenance)



def to_ms(t: datetime | pd.Timestamp | int) -> int:
    if isinstance(t, (int, np.integer)):
        return int(t)
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)


def _ts_col(ms: np.ndarray | list) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(ms, dtype="int64"), unit="ms", utc=True)
                     .as_unit("us"))


def override_urls(api: Any, api_url: str) -> Any:
    """Point every URL in ccxt's `urls['api']` tree at `api_url`, keeping each path.

    'https://fapi.binance.com/fapi/v1' with base 'http://127.0.0.1:8080' becomes
    'http://127.0.0.1:8080/fapi/v1'; a base with a path prefix is prepended to the path.
    """
    base = api_url.rstrip("/")
    if isinstance(api, dict):
        return {k: override_urls(v, base) for k, v in api.items()}
    if isinstance(api, str) and api.startswith(("http://", "https://")):
        parts = urlsplit(api)
        return base + parts.path
    return api


def make_exchange(exchange_id: str = DEFAULT_EXCHANGE, *, api_url: str | None = None,
                  timeout_s: float = 30.0, rate_limit_ms: int | None = None,
                  options: dict | None = None) -> ccxt.Exchange:
    """A ccxt exchange instance; `api_url` redirects all REST calls (mirrors, tests)."""
    try:
        cls = getattr(ccxt, exchange_id)
    except AttributeError:
        raise SourceError(f"unknown ccxt exchange {exchange_id!r} (see ccxt.exchanges)",
                          temporary=False) from None
    config: dict[str, Any] = {"timeout": int(timeout_s * 1000), "enableRateLimit": True}
    if exchange_id == "binance":  # the lake's venue "binance" market "spot": spot markets only
        options = {"fetchMarkets": {"types": ["spot"]}, **(options or {})}
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    if options:
        config["options"] = options
    ex = cls(config)
    if api_url:
        ex.urls["api"] = override_urls(ex.urls["api"], api_url)
    return ex


class CcxtSource:
    """One exchange's history as canonical frames.

    `sleep` is injectable so tests can run the backoff without waiting.
    """

    def __init__(self, exchange_id: str = DEFAULT_EXCHANGE, *, api_url: str | None = None,
                 timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 rate_limit_ms: int | None = None, exchange: ccxt.Exchange | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.exchange_id = exchange_id
        self.api_url = api_url
        self.ex = exchange or make_exchange(exchange_id, api_url=api_url, timeout_s=timeout_s,
                                            rate_limit_ms=rate_limit_ms)
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.venue = venue_of(exchange_id)
        self.requests = 0  # HTTP calls made (including retries)

    # ---- plumbing ---------------------------------------------------------------------
    def _call(self, what: str, symbol: str | None, fn: Callable, *args, **kwargs):
        """Run one ccxt call with retry on transient errors (fetch/retry.py); clear errors
        otherwise."""
        def once():
            try:
                return fn(*args, **kwargs)
            except ccxt.BadSymbol as exc:
                raise SourceError(f"{self.exchange_id}: unknown symbol {symbol!r} ({what}): "
                                  f"{_short(exc)}; check the symbol against the exchange's "
                                  f"market list", temporary=False) from exc
            except TRANSIENT as exc:
                raise Retryable(f"{type(exc).__name__}: {_short(exc)}", self._retry_after()) from None
            except ccxt.BaseError as exc:  # ExchangeError and everything else: a person must look
                raise SourceError(f"{self.exchange_id} {what} {symbol or ''}: "
                                  f"{type(exc).__name__}: {_short(exc)}", temporary=False) from exc

        def count():
            self.requests += 1

        return call_with_retry(once, what=f"{self.exchange_id} {what} {symbol or ''}".rstrip(),
                               policy=self.retry, sleep=self.sleep, on_attempt=count)

    def _retry_after(self) -> float | None:
        headers = getattr(self.ex, "last_response_headers", None) or {}
        for k, v in headers.items():
            if k.lower() == "retry-after":
                try:
                    return float(v)
                except (TypeError, ValueError):
                    return None
        return None

    def load_markets(self) -> dict:
        if not self.ex.markets:
            self._call("load_markets", None, self.ex.load_markets)
        return self.ex.markets

    def market(self, symbol: str) -> dict:
        """Resolve an exchange id ("BTCUSDT") or a unified symbol ("BTC/USDT:USDT")."""
        markets = self.load_markets()
        if symbol in markets:
            return markets[symbol]
        by_id = self.ex.markets_by_id or {}
        if symbol in by_id:
            found = by_id[symbol]
            found = found if isinstance(found, dict) else found[0]
            return found
        raise SourceError(f"{self.exchange_id}: unknown symbol {symbol!r}: not in the "
                          f"exchange's {len(markets)} markets (use the exchange id, e.g. "
                          f"BTCUSDT, or the ccxt symbol, e.g. BTC/USDT:USDT)", temporary=False)

    @staticmethod
    def market_type(m: dict) -> str:
        if m.get("spot"):
            return "spot"
        if m.get("swap"):
            return "perp"
        return "future"

    # ---- OHLCV ------------------------------------------------------------------------
    def fetch_ohlcv(self, symbol: str, timeframe: str, start: datetime, end: datetime, *,
                    price_type: str = "trade", limit: int = 1000) -> pd.DataFrame:
        """Bars with open time in [start, end), canonical `ohlcv` columns, sorted, deduped."""
        if price_type not in ("trade", "mark", "index"):
            raise SourceError(f"price_type must be trade, mark or index, not {price_type!r}",
                              temporary=False)
        if timeframe not in TIMEFRAME_MS:
            raise SourceError(f"unsupported timeframe {timeframe!r} "
                              f"(one of {', '.join(TIMEFRAME_MS)})", temporary=False)
        m = self.market(symbol)
        step = TIMEFRAME_MS[timeframe]
        start_ms, end_ms = to_ms(start), to_ms(end)
        if m.get("spot") and price_type != "trade":
            raise SourceError(f"{self.exchange_id} {m['id']}: spot markets have no "
                              f"{price_type} price bars", temporary=False)
        binance_raw = self.ex.id.startswith("binance") and bool(m.get("spot") or m.get("linear"))
        rows: dict[int, list] = {}
        since = start_ms
        derived = False
        while since < end_ms:
            if binance_raw:
                page = self._binance_klines(m, timeframe, price_type, since, end_ms - 1, limit)
            else:
                params = {} if price_type == "trade" else {"price": price_type}
                raw = self._call("fetch_ohlcv", m["id"], self.ex.fetch_ohlcv, m["symbol"],
                                 timeframe, since, limit, params)
                page = [[int(r[0]), r[1], r[2], r[3], r[4], r[5],
                         (r[5] or 0.0) * (r[4] or 0.0)] for r in raw]
                derived = True
            new_last = None
            for r in page:
                t = int(r[0])
                if start_ms <= t < end_ms:
                    rows[t] = r  # dedupe on open time, later page wins
                new_last = t if new_last is None else max(new_last, t)
            if not page or new_last is None or new_last < since:
                break  # the exchange has nothing more in this range
            since = new_last + step
        if derived:
            log.info("%s %s: volume_quote derived as volume_base * close", self.exchange_id, symbol)
        return self._ohlcv_frame(m, timeframe, price_type, [rows[k] for k in sorted(rows)])

    def _binance_klines(self, m: dict, timeframe: str, price_type: str, since: int,
                        until: int, limit: int) -> list[list]:
        """Raw Binance klines (keeps quote volume, which ccxt's unified OHLCV drops)."""
        req = {"interval": timeframe, "startTime": since, "endTime": until, "limit": limit}
        ex = self.ex
        if m.get("spot"):
            fn = ex.publicGetKlines
            req["symbol"] = m["id"]
        elif price_type == "trade":
            fn = ex.fapiPublicGetKlines
            req["symbol"] = m["id"]
        elif price_type == "mark":
            fn = ex.fapiPublicGetMarkPriceKlines
            req["symbol"] = m["id"]
        else:
            fn = ex.fapiPublicGetIndexPriceKlines
            req["pair"] = m["id"].split("_")[0]
        raw = self._call(f"klines[{price_type}]", m["id"], fn, req)
        out = []
        for r in raw or []:
            try:
                out.append([int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]),
                            float(r[5]), float(r[7])])
            except (TypeError, ValueError, IndexError):
                out.append([int(r[0]) if _is_int(r) else -1, np.nan, np.nan, np.nan, np.nan,
                            np.nan, np.nan])  # malformed: kept, validation reports it
        return out

    def _ohlcv_frame(self, m: dict, timeframe: str, price_type: str, rows: list) -> pd.DataFrame:
        arr = np.asarray([r[1:7] for r in rows], dtype="float64").reshape(-1, 6)
        ts = _ts_col([r[0] for r in rows])
        df = pd.DataFrame({
            "venue": self.venue, "market": self.market_type(m), "symbol": m["id"],
            "timeframe": timeframe, "price_type": price_type, "ts": ts,
            "open": arr[:, 0], "high": arr[:, 1], "low": arr[:, 2], "close": arr[:, 3],
            "volume_base": arr[:, 4], "volume_quote": arr[:, 5]}, columns=OHLCV_COLUMNS)
        if price_type != "trade":  # mark/index klines carry no volume
            df["volume_base"] = 0.0
            df["volume_quote"] = 0.0
        df.attrs["source"] = f"ccxt:{self.exchange_id}"
        return df

    # ---- funding ----------------------------------------------------------------------
    def fetch_funding(self, symbol: str, start: datetime, end: datetime, *,
                      limit: int = 1000) -> pd.DataFrame:
        """Funding settlements with ts in [start, end) (ts = settlement time)."""
        m = self.market(symbol)
        start_ms, end_ms = to_ms(start), to_ms(end)
        rows: dict[int, dict] = {}
        since = start_ms
        while since < end_ms:
            page = self._call("fetch_funding_rate_history", m["id"],
                              self.ex.fetch_funding_rate_history, m["symbol"], since, limit,
                              {"endTime": end_ms - 1})
            last = None
            for r in page or []:
                t = int(r["timestamp"])
                if start_ms <= t < end_ms:
                    rows[t] = r
                last = t if last is None else max(last, t)
            if not page or last is None or last < since:
                break
            since = last + 1
        keys = sorted(rows)
        rates = [rows[k].get("fundingRate") for k in keys]
        marks = [_float((rows[k].get("info") or {}).get("markPrice")) for k in keys]
        ts = _ts_col(keys)
        interval = _interval_hours(keys)
        df = pd.DataFrame({"venue": self.venue, "market": self.market_type(m), "symbol": m["id"],
                           "ts": ts, "rate": np.asarray(rates, dtype="float64"),
                           "interval_hours": interval,
                           "mark_price": np.asarray(marks, dtype="float64")},
                          columns=FUNDING_COLUMNS)
        df.attrs["source"] = f"ccxt:{self.exchange_id}"
        return df

    # ---- open interest ----------------------------------------------------------------
    def fetch_open_interest(self, symbol: str, timeframe: str, start: datetime, end: datetime,
                            *, limit: int = 500) -> pd.DataFrame:
        """Open-interest history (ts = period timestamp) in [start, end)."""
        m = self.market(symbol)
        step = TIMEFRAME_MS[timeframe]
        start_ms, end_ms = to_ms(start), to_ms(end)
        rows: dict[int, dict] = {}
        since = start_ms
        while since < end_ms:
            until = min(end_ms - 1, since + step * limit - 1)
            page = self._call("fetch_open_interest_history", m["id"],
                              self.ex.fetch_open_interest_history, m["symbol"], timeframe,
                              since, limit, {"endTime": until})
            for r in page or []:
                t = int(r["timestamp"])
                if start_ms <= t < end_ms:
                    rows[t] = r
            since = until + 1  # windows are explicit: an empty window is not the end
        keys = sorted(rows)
        df = pd.DataFrame({
            "venue": self.venue, "market": self.market_type(m), "symbol": m["id"],
            "timeframe": timeframe, "ts": _ts_col(keys),
            "oi_base": np.asarray([_float(rows[k].get("openInterestAmount")) for k in keys],
                                  dtype="float64"),
            "oi_usd": np.asarray([_float(rows[k].get("openInterestValue")) for k in keys],
                                 dtype="float64"),
            "source": f"ccxt:{self.exchange_id}"}, columns=OI_COLUMNS)
        df.attrs["source"] = f"ccxt:{self.exchange_id}"
        return df


def _interval_hours(keys: list[int]) -> np.ndarray:
    """Hours since the previous settlement (8.0 for the first row / when unknown)."""
    out = np.full(len(keys), 8.0)
    if len(keys) > 1:
        d = np.diff(np.asarray(keys, dtype="int64")) / 3_600_000
        # settlements are stamped a few ms after the hour: round to the hour
        out[1:] = np.maximum(np.round(d), 1.0)
        out[0] = out[1]
    return out


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _is_int(r) -> bool:
    try:
        int(r[0])
        return True
    except (TypeError, ValueError, IndexError):
        return False


def _short(exc: Exception, n: int = 200) -> str:
    s = str(exc).replace("\n", " ")
    return s if len(s) <= n else s[:n] + "…"


__all__ = ["CcxtSource", "RetryPolicy", "SourceError", "make_exchange", "override_urls",
           "venue_of", "DEFAULT_EXCHANGE", "TIMEFRAME_MS", "utc"]

