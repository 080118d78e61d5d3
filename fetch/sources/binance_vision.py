"""data.binance.vision archives (or a local/mirrored copy) as canonical frames.

Layout (as the real site; BASE defaults to https://data.binance.vision):
  BASE/data/{spot|futures/um}/{daily|monthly}/{klines|markPriceKlines|indexPriceKlines}/
        SYM/TF/SYM-TF-YYYY-MM-DD.zip            (monthly: SYM-TF-YYYY-MM.zip)
  BASE/data/futures/um/monthly/fundingRate/SYM/SYM-fundingRate-YYYY-MM.zip
  BASE/data/futures/um/daily/metrics/SYM/SYM-metrics-YYYY-MM-DD.zip
  BASE/data/futures/um/daily/liquidationSnapshot/SYM/SYM-liquidationSnapshot-YYYY-MM-DD.zip
Each zip has a sibling `<zip>.CHECKSUM` holding "<sha256>  <name>"; a mismatch is refused.

Raw schemas (one CSV per zip; futures files carry a header line, spot and older files do not):
- klines: open_time, open, high, low, close, volume (base), close_time, quote_volume, count,
  taker_buy_volume, taker_buy_quote_volume, ignore. open_time is the bar OPEN, epoch ms, or
  epoch µs (Binance spot since 2025-01-01): detected per file by magnitude.
- fundingRate: calc_time (settlement, ms), funding_interval_hours, last_funding_rate.
- metrics: create_time ("YYYY-MM-DD HH:MM:SS", sample time UTC), symbol, sum_open_interest
  (base), sum_open_interest_value (USD), … (ratios, ignored).
- liquidationSnapshot (withdrawn by Binance in 2024; parse local copies): time (ms), side
  (of the liquidation ORDER: SELL closes a long), order_type, time_in_force,
  original_quantity, price, average_price, order_status, last_fill_quantity,
  accumulated_fill_quantity.

`api_url` (the base-URL override, as in the other sources) may be an http(s) URL or a local
directory (a mirror laid out as above).
Monthly files are used for whole months that have ended, daily files for the rest; what the
archive lacks (recent days) is reported in `frame.attrs["missing_days"]` so the caller can
fill the tail from REST (fetch/refresh.py does, through ccxt).
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from fetch.retry import Retryable, RetryPolicy, SourceError, call_with_retry
from fetch.timerange import utc

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://data.binance.vision"
KLINE_COLUMNS = ["open_time", "open", "high", "low", "close", "volume", "close_time",
                 "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
_SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9_]{1,39}")
KLINE_TIMEFRAMES = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                    "1d", "3d", "1w", "1mo")
KLINE_KIND = {"trade": "klines", "mark": "markPriceKlines", "index": "indexPriceKlines"}


class ChecksumError(SourceError):
    def __init__(self, message: str):
        super().__init__(message, temporary=True)


class NotInArchive(Exception):
    """The archive has no file for this day/month (HTTP 404 or absent in the mirror)."""


@dataclass
class FetchReport:
    files: list[str] = field(default_factory=list)
    missing_days: list[date] = field(default_factory=list)
    bad_rows: int = 0
    bad_examples: list[str] = field(default_factory=list)


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def plan_files(start: datetime, end: datetime, today: date, *, monthly_ok: bool = True,
               daily_ok: bool = True) -> list[tuple[str, date]]:
    """("monthly", first-of-month) for whole months inside [start, end) that ended before
    `today`; ("daily", day) for the other days overlapping [start, end)."""
    d0 = utc(start).date()
    e = utc(end)
    d1 = e.date() if e == pd.Timestamp(e).normalize() else e.date() + timedelta(days=1)
    out: list[tuple[str, date]] = []
    d = d0
    while d < d1:
        m_end = _next_month(d)
        if monthly_ok and d.day == 1 and m_end <= d1 and m_end <= today:
            out.append(("monthly", d))
            d = m_end
        elif daily_ok:
            out.append(("daily", d))
            d += timedelta(days=1)
        else:  # monthly-only dataset (fundingRate): the month containing d
            out.append(("monthly", _month_start(d)))
            d = m_end
    return out


class BinanceVision:
    def __init__(self, api_url: str | None = None, *, timeout_s: float = 60.0,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 today: date | None = None, require_checksum: bool = True):
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        # False: a zip without a .CHECKSUM beside it (e.g. a user's own copy of the withdrawn
        # liquidationSnapshot files) is read with a warning; a mismatching one is still refused
        self.require_checksum = require_checksum
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy(attempts=4)
        self.sleep = sleep
        self.today = today
        self.requests = 0

    # ---- transport --------------------------------------------------------------------
    def _is_local(self) -> bool:
        return not self.api_url.startswith(("http://", "https://"))

    def _get(self, rel: str) -> bytes:
        if self._is_local():
            p = Path(self.api_url.removeprefix("file://")) / rel
            if not p.exists():
                raise NotInArchive(rel)
            return p.read_bytes()
        url = f"{self.api_url}/{rel}"

        def once() -> bytes:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
                    return r.read()
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise NotInArchive(rel) from None
                if exc.code in (418, 429) or exc.code >= 500:
                    ra = exc.headers.get("Retry-After") if exc.headers else None
                    raise Retryable(f"HTTP {exc.code}", _float_or_none(ra)) from None
                raise SourceError(f"binance vision {rel}: HTTP {exc.code}", temporary=False) from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                raise Retryable(f"{type(exc).__name__}: {exc}") from None

        def count():
            self.requests += 1

        return call_with_retry(once, what=f"binance vision {rel}", policy=self.retry, sleep=self.sleep,
                               on_attempt=count)

    def _get_verified(self, rel: str) -> bytes:
        """The zip, checked against its .CHECKSUM; one refetch on mismatch, then refused."""
        for _attempt in range(2):
            data = self._get(rel)
            try:
                want = self._get(rel + ".CHECKSUM").decode().split()[0].strip().lower()
            except NotInArchive:
                if not self.require_checksum:
                    log.warning("binance vision %s: no .CHECKSUM beside it; read unverified", rel)
                    return data
                raise ChecksumError(f"binance vision {rel}: no .CHECKSUM file beside it; "
                                    f"refusing an unverified archive (verify_checksum = false "
                                    f"reads local copies that have none)") from None
            got = hashlib.sha256(data).hexdigest()
            if got == want:
                return data
            log.warning("binance vision %s: checksum mismatch (got %s, want %s)", rel, got[:12],
                        want[:12])
        raise ChecksumError(f"binance vision {rel}: sha256 {got} does not match .CHECKSUM "
                            f"{want}: file refused (corrupt download or tampered mirror)")

    @staticmethod
    def _csv(data: bytes, names: list[str]) -> pd.DataFrame:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [n for n in z.namelist() if n.endswith(".csv")]
            if not members:
                raise SourceError("zip holds no CSV", temporary=False)
            raw = z.read(members[0])
        first = raw.split(b"\n", 1)[0].decode(errors="replace")
        has_header = not first[:1].isdigit() and not first.startswith("-")
        df = pd.read_csv(io.BytesIO(raw), header=0 if has_header else None, dtype=str)
        if not has_header:
            df.columns = names[: df.shape[1]] + [f"extra{i}" for i in range(df.shape[1] - len(names))]
        return df

    def _files(self, prefix: str, symbol: str, stem: str, start, end, *,
               monthly_ok=True, daily_ok=True):
        """Yield (kind, day, bytes|None) for the planned files; None when not in the archive."""
        if not _SYMBOL_RE.fullmatch(symbol or ""):
            raise SourceError(f"binance vision: {symbol!r} is not a Binance symbol id (letters "
                              f"and digits, e.g. BTCUSDT)", temporary=False)
        today = self.today or datetime.utcnow().date()
        for kind, d in plan_files(start, end, today, monthly_ok=monthly_ok, daily_ok=daily_ok):
            tag = d.strftime("%Y-%m") if kind == "monthly" else d.isoformat()
            rel = f"data/{prefix}/{kind}/{stem.format(sym=symbol, tag=tag)}"
            try:
                yield kind, d, rel, self._get_verified(rel)
            except NotInArchive:
                if kind == "monthly" and daily_ok:  # monthly not published (yet): go daily
                    dd = d
                    while dd < _next_month(d):
                        rel2 = f"data/{prefix}/daily/{stem.format(sym=symbol, tag=dd.isoformat())}"
                        try:
                            yield "daily", dd, rel2, self._get_verified(rel2)
                        except NotInArchive:
                            yield "daily", dd, rel2, None
                        dd += timedelta(days=1)
                else:
                    yield kind, d, rel, None

    def _tables(self, prefix: str, symbol: str, stem: str, start, end, names: list[str],
                rep: FetchReport, **plan):
        """Yield (path, CSV frame) of each planned file the archive holds; the files read and
        the days it lacks go into `rep`. `plan`: monthly_ok / daily_ok, as `_files`."""
        for fkind, d, rel, data in self._files(prefix, symbol, stem, start, end, **plan):
            if data is None:
                rep.missing_days.extend(_days(fkind, d))
                continue
            rep.files.append(rel)
            yield rel, self._csv(data, names)

    # ---- datasets ---------------------------------------------------------------------
    def fetch_klines(self, symbol: str, timeframe: str, start, end, *, market: str = "perp",
                     price_type: str = "trade") -> pd.DataFrame:
        """Bars with open time in [start, end) from the archive's kline files."""
        if market not in ("spot", "perp"):
            raise SourceError(f"binance vision has spot and perp (USDⓈ-M) klines, not {market!r}",
                              temporary=False)
        if market == "spot" and price_type != "trade":
            raise SourceError("spot has no mark/index price klines", temporary=False)
        if timeframe not in KLINE_TIMEFRAMES:
            raise SourceError(f"binance vision has no {timeframe!r} klines (one of "
                              f"{', '.join(KLINE_TIMEFRAMES)})", temporary=False)
        prefix = "spot" if market == "spot" else "futures/um"
        kind = KLINE_KIND[price_type]
        stem = kind + "/{sym}/" + timeframe + "/{sym}-" + timeframe + "-{tag}.zip"
        rep = FetchReport()
        parts = [_klines_to_frame(raw, rel, rep)
                 for rel, raw in self._tables(prefix, symbol, stem, start, end, KLINE_COLUMNS, rep)]
        df = pd.concat(parts, ignore_index=True) if parts else _klines_to_frame(
            pd.DataFrame(columns=KLINE_COLUMNS), "", rep)
        df = _window(df, start, end)
        out = pd.DataFrame({"venue": "binance", "market": market, "symbol": symbol,
                            "timeframe": timeframe, "price_type": price_type, "ts": df["ts"],
                            "open": df["open"], "high": df["high"], "low": df["low"],
                            "close": df["close"], "volume_base": df["volume"],
                            "volume_quote": df["quote_volume"]})
        if price_type != "trade":
            out["volume_base"] = 0.0
            out["volume_quote"] = 0.0
        return _finish(out, rep, "binance-vision")

    def fetch_funding(self, symbol: str, start, end) -> pd.DataFrame:
        """USDⓈ-M funding settlements (monthly files only) with ts in [start, end)."""
        stem = "fundingRate/{sym}/{sym}-fundingRate-{tag}.zip"
        rep = FetchReport()
        parts = []
        names = ["calc_time", "funding_interval_hours", "last_funding_rate"]
        for _, raw in self._tables("futures/um", symbol, stem, start, end, names, rep, daily_ok=False):
            t = _epoch_to_ts(pd.to_numeric(raw["calc_time"], errors="coerce"))
            parts.append(pd.DataFrame({
                "ts": t, "rate": pd.to_numeric(raw["last_funding_rate"], errors="coerce"),
                "interval_hours": pd.to_numeric(raw["funding_interval_hours"], errors="coerce")}))
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {"ts": pd.Series([], dtype="datetime64[us, UTC]"), "rate": [], "interval_hours": []})
        df = _count_bad(df.dropna(subset=["ts"]) if len(df) else df, df, ["rate"], rep)
        df = _window(df, start, end)
        out = pd.DataFrame({"venue": "binance", "market": "perp", "symbol": symbol,
                            "ts": df["ts"], "rate": df["rate"].astype("float64"),
                            "interval_hours": df["interval_hours"].astype("float64"),
                            "mark_price": np.nan})
        return _finish(out, rep, "binance-vision")

    def fetch_open_interest(self, symbol: str, start, end) -> pd.DataFrame:
        """5-minute open interest from the daily `metrics` files, ts in [start, end)."""
        stem = "metrics/{sym}/{sym}-metrics-{tag}.zip"
        rep = FetchReport()
        parts = []
        names = ["create_time", "symbol", "sum_open_interest", "sum_open_interest_value"]
        for _, raw in self._tables("futures/um", symbol, stem, start, end, names, rep, monthly_ok=False):
            parts.append(pd.DataFrame({
                "ts": pd.to_datetime(raw["create_time"], utc=True, errors="coerce").dt.as_unit("us"),
                "oi_base": pd.to_numeric(raw["sum_open_interest"], errors="coerce"),
                "oi_usd": pd.to_numeric(raw["sum_open_interest_value"], errors="coerce")}))
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {"ts": pd.Series([], dtype="datetime64[us, UTC]"), "oi_base": [], "oi_usd": []})
        df = _count_bad(df.dropna(subset=["ts"]), df, ["oi_base"], rep)
        df = _window(df, start, end)
        out = pd.DataFrame({"venue": "binance", "market": "perp", "symbol": symbol,
                            "timeframe": "5m", "ts": df["ts"],
                            "oi_base": df["oi_base"].astype("float64"),
                            "oi_usd": df["oi_usd"].astype("float64"), "source": "binance-metrics"})
        return _finish(out, rep, "binance-vision")

    def fetch_liquidations(self, symbol: str, start, end) -> pd.DataFrame:
        """Single liquidation orders from `liquidationSnapshot` files (local copies)."""
        stem = "liquidationSnapshot/{sym}/{sym}-liquidationSnapshot-{tag}.zip"
        names = ["time", "side", "order_type", "time_in_force", "original_quantity", "price",
                 "average_price", "order_status", "last_fill_quantity",
                 "accumulated_fill_quantity"]
        rep = FetchReport()
        parts = []
        for _, raw in self._tables("futures/um", symbol, stem, start, end, names, rep, monthly_ok=False):
            qty = pd.to_numeric(raw["accumulated_fill_quantity"], errors="coerce")
            qty = qty.where(qty > 0, pd.to_numeric(raw["original_quantity"], errors="coerce"))
            px = pd.to_numeric(raw["average_price"], errors="coerce")
            px = px.where(px > 0, pd.to_numeric(raw["price"], errors="coerce"))
            side = raw["side"].str.upper().map({"SELL": "long", "BUY": "short"})
            parts.append(pd.DataFrame({"ts": _epoch_to_ts(pd.to_numeric(raw["time"],
                                                                         errors="coerce")),
                                       "side": side, "qty": qty, "price": px}))
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {"ts": pd.Series([], dtype="datetime64[us, UTC]"), "side": [], "qty": [], "price": []})
        df = _count_bad(df.dropna(subset=["ts", "side"]), df, ["qty", "price"], rep)
        df = _window(df, start, end)
        out = pd.DataFrame({"venue": "binance", "market": "perp", "symbol": symbol,
                            "timeframe": "", "ts": df["ts"], "side": df["side"].astype(str),
                            "qty": df["qty"].astype("float64"),
                            "price": df["price"].astype("float64"),
                            "notional_usd": (df["qty"] * df["price"]).astype("float64"),
                            "source": "binance-liquidationSnapshot"})
        return _finish(out, rep, "binance-vision")


# ---- helpers ---------------------------------------------------------------------------
def _days(kind: str, d: date) -> list[date]:
    if kind == "daily":
        return [d]
    out, dd = [], d
    while dd < _next_month(d):
        out.append(dd)
        dd += timedelta(days=1)
    return out


def _epoch_to_ts(v: pd.Series) -> pd.Series:
    """Epoch ms or µs (µs when > 1e14, i.e. after 1973 in µs / year 5138 in ms) → UTC ts."""
    v = v.astype("float64")
    us = np.where(v > 1e14, v, v * 1000.0)
    out = pd.to_datetime(pd.Series(us).round(), unit="us", utc=True, errors="coerce")
    out.index = v.index
    return out.dt.as_unit("us")


def _klines_to_frame(raw: pd.DataFrame, rel: str, rep: FetchReport) -> pd.DataFrame:
    num = {c: pd.to_numeric(raw[c], errors="coerce") if c in raw else
           pd.Series(np.nan, index=raw.index) for c in KLINE_COLUMNS[:8]}
    df = pd.DataFrame({"ts": _epoch_to_ts(num["open_time"]),
                       **{c: num[c].astype("float64") for c in
                          ("open", "high", "low", "close", "volume", "quote_volume")}})
    good = df.dropna(subset=["ts", "open", "high", "low", "close"])
    return _count_bad(good, df, [], rep, rel=rel, raw=raw)


def _count_bad(good: pd.DataFrame, all_: pd.DataFrame, cols: list[str], rep: FetchReport, *,
               rel: str = "", raw: pd.DataFrame | None = None) -> pd.DataFrame:
    if cols:
        good = good.dropna(subset=cols)
    n_bad = len(all_) - len(good)
    if n_bad:
        rep.bad_rows += n_bad
        bad_idx = all_.index.difference(good.index)[:3]
        src = raw if raw is not None else all_
        rep.bad_examples.extend(f"{rel} row {i}: {list(src.loc[i].values)[:6]}" for i in bad_idx)
        log.warning("binance vision %s: %d malformed row(s) dropped, e.g. %s", rel, n_bad,
                    rep.bad_examples[-1])
    return good


def _window(df: pd.DataFrame, start, end) -> pd.DataFrame:
    s, e = pd.Timestamp(utc(start)), pd.Timestamp(utc(end))
    df = df[(df["ts"] >= s) & (df["ts"] < e)]
    return df.sort_values("ts").drop_duplicates("ts", keep="last").reset_index(drop=True)


def _finish(out: pd.DataFrame, rep: FetchReport, source: str) -> pd.DataFrame:
    out = out.reset_index(drop=True)
    out.attrs.update(source=source, files=rep.files,
                     missing_days=sorted(set(rep.missing_days)), bad_rows=rep.bad_rows,
                     bad_examples=rep.bad_examples[:5])
    return out


def _float_or_none(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


__all__ = ["BinanceVision", "ChecksumError", "NotInArchive", "plan_files", "DEFAULT_API_URL"]
