"""A loopback server that answers like Binance USDⓈ-M futures REST (fapi).

Endpoints: /fapi/v1/exchangeInfo, /fapi/v1/klines, /fapi/v1/markPriceKlines,
/fapi/v1/indexPriceKlines (startTime/endTime inclusive, limit default 500 max 1500,
earliest first), /fapi/v1/fundingRate, /futures/data/openInterestHist, plus
/api/v3/exchangeInfo + /api/v3/klines (spot) so `binance` works too. Unknown symbols get
Binance's {"code": -1121, "msg": "Invalid symbol."} with HTTP 400.

Bars come from a `BarBook`: 1-minute bars per symbol (real ones from ../shared/data or a
deterministic synthetic walk); coarser intervals are aggregated on the fly.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.fetch.servers.base import LoopbackServer, json_response

MIN = 60_000
INTERVAL_MS = {"1m": MIN, "3m": 3 * MIN, "5m": 5 * MIN, "15m": 15 * MIN, "30m": 30 * MIN,
               "1h": 60 * MIN, "2h": 120 * MIN, "4h": 240 * MIN, "8h": 480 * MIN,
               "1d": 1440 * MIN}


class BarBook:
    """1-minute bars per symbol: arrays t (open, ms), o, h, l, c, v (base), q (quote)."""

    def __init__(self):
        self.bars: dict[str, dict[str, np.ndarray]] = {}

    def add_frame(self, symbol: str, df: pd.DataFrame) -> "BarBook":
        t = (pd.to_datetime(df["ts"], utc=True).astype("datetime64[ms, UTC]")
             .astype("int64").to_numpy())
        vol = df["volume"].to_numpy(dtype="float64")
        q = (df["quote_volume"].to_numpy(dtype="float64") if "quote_volume" in df
             else vol * df["close"].to_numpy(dtype="float64"))
        self.bars[symbol] = {"t": t, "o": df["open"].to_numpy(float), "h": df["high"].to_numpy(float),
                             "l": df["low"].to_numpy(float), "c": df["close"].to_numpy(float),
                             "v": vol, "q": q}
        return self

    def add_synthetic(self, symbol: str, start: str, end: str, *, price: float = 20000.0,
                      seed: int = 7) -> "BarBook":
        t0 = int(pd.Timestamp(start, tz="UTC").value // 1_000_000)
        t1 = int(pd.Timestamp(end, tz="UTC").value // 1_000_000)
        t = np.arange(t0, t1, MIN, dtype="int64")
        rng = np.random.default_rng(seed)
        c = price * np.exp(np.cumsum(rng.normal(0, 5e-4, len(t))))
        o = np.concatenate([[price], c[:-1]])
        h = np.maximum(o, c) * (1 + rng.uniform(0, 3e-4, len(t)))
        lo = np.minimum(o, c) * (1 - rng.uniform(0, 3e-4, len(t)))
        v = rng.uniform(10, 200, len(t))
        self.bars[symbol] = {"t": t, "o": o, "h": h, "l": lo, "c": c, "v": v, "q": v * c}
        return self

    @classmethod
    def from_shared(cls, shared_data: Path, symbol: str = "BTCUSDT") -> "BarBook":
        """The real Binance BTCUSDT 1m bars of 2022-11-06..14 (data.binance.vision spot files)."""
        f = shared_data / "binance_spot_1m_nl2992" / "binance_spot_BTCUSDT_1m_ftx_2022.parquet"
        return cls().add_frame(symbol, pd.read_parquet(f))

    def klines(self, symbol: str, interval: str, start: int | None, end: int | None,
               limit: int) -> list[list]:
        b = self.bars[symbol]
        step = INTERVAL_MS[interval]
        t = b["t"]
        g = t - t % step
        starts, idx = np.unique(g, return_index=True)
        if start is not None:
            keep = starts >= start
        else:
            keep = np.ones(len(starts), bool)
        if end is not None:
            keep &= starts <= end
        sel = np.nonzero(keep)[0]
        sel = sel[:limit] if start is not None or end is None else sel[-limit:]
        bounds = np.append(idx, len(t))
        out = []
        for i in sel:
            a, z = bounds[i], bounds[i + 1]
            out.append([int(starts[i]), f"{b['o'][a]:.8f}", f"{b['h'][a:z].max():.8f}",
                        f"{b['l'][a:z].min():.8f}", f"{b['c'][z - 1]:.8f}",
                        f"{b['v'][a:z].sum():.8f}", int(starts[i] + step - 1),
                        f"{b['q'][a:z].sum():.8f}", int(z - a), "0", "0", "0"])
        return out


def _market(symbol: str, base: str, quote: str, spot: bool = False) -> dict:
    m = {"symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
         "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
         "baseAsset": base, "quoteAsset": quote, "marginAsset": quote, "pricePrecision": 2,
         "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
         "underlyingType": "COIN", "settlePlan": 0, "triggerProtect": "0.0500",
         "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764",
                      "tickSize": "0.10"},
                     {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000",
                      "stepSize": "0.001"}],
         "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC", "FOK"]}
    if spot:
        m = {"symbol": symbol, "status": "TRADING", "baseAsset": base, "quoteAsset": quote,
             "baseAssetPrecision": 8, "quotePrecision": 8, "quoteAssetPrecision": 8,
             "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
             "isMarginTradingAllowed": False, "permissions": ["SPOT"],
             "filters": m["filters"]}
    return m


class FapiServer(LoopbackServer):
    def __init__(self, book: BarBook, *, funding_hours: int = 8, max_limit: int = 1500,
                 extra_listed: tuple[str, ...] = ()):
        super().__init__()
        self.book = book
        self.extra_listed = extra_listed  # in exchangeInfo but without data (-1121 on klines)
        self.funding_hours = funding_hours
        self.max_limit = max_limit

    def _symbols(self):
        out = []
        for s in list(self.book.bars) + list(self.extra_listed):
            quote = "USDT" if s.endswith("USDT") else s[-4:]
            out.append((s, s[: -len(quote)], quote))
        return out

    def route(self, path, q, *, malformed=False):
        if path in ("/fapi/v1/exchangeInfo", "/api/v3/exchangeInfo"):
            spot = path.startswith("/api/")
            return json_response({"timezone": "UTC", "serverTime": 0, "rateLimits": [],
                                  "assets": [], "symbols": [_market(s, b, qq, spot)
                                                            for s, b, qq in self._symbols()]})
        if path in ("/fapi/v1/klines", "/fapi/v1/markPriceKlines", "/fapi/v1/indexPriceKlines",
                    "/api/v3/klines"):
            sym = q.get("pair") if path.endswith("indexPriceKlines") else q.get("symbol")
            if sym not in self.book.bars:
                return json_response({"code": -1121, "msg": "Invalid symbol."}, 400)
            limit = min(int(q.get("limit", 500)), self.max_limit)
            rows = self.book.klines(sym, q["interval"], _int(q.get("startTime")),
                                    _int(q.get("endTime")), limit)
            if "markPrice" in path or "indexPrice" in path:
                f = 1.0001 if "markPrice" in path else 0.9999
                rows = [[r[0]] + [f"{float(x) * f:.8f}" for x in r[1:5]] + ["0", r[6], "0", 0,
                                                                          "0", "0", "0"]
                        for r in rows]
            if malformed == "malformed_all":
                rows = [[r[0], "not-a-price", "1", "1", "1"] for r in rows]
            elif malformed and rows:
                rows[len(rows) // 2] = [rows[len(rows) // 2][0], "not-a-price", "1", "1", "1"]
            return json_response(rows)
        if path == "/fapi/v1/fundingRate":
            sym = q.get("symbol")
            if sym not in self.book.bars:
                return json_response({"code": -1121, "msg": "Invalid symbol."}, 400)
            b = self.book.bars[sym]
            step = self.funding_hours * 3_600_000
            t0 = int(b["t"][0] - b["t"][0] % step + step)
            times = np.arange(t0, int(b["t"][-1]) + 1, step)
            s, e = _int(q.get("startTime")), _int(q.get("endTime"))
            times = times[(times >= (s or 0)) & (times <= (e if e is not None else times.max(initial=0)))]
            times = times[: min(int(q.get("limit", 100)), 1000)]
            out = []
            for t in times:
                i = int(np.searchsorted(b["t"], t))
                i = min(i, len(b["t"]) - 1)
                out.append({"symbol": sym, "fundingTime": int(t) + 5,  # a few ms after the hour
                            "fundingRate": f"{1e-4 * np.sin(t / 1e8):.8f}",
                            "markPrice": f"{b['c'][i]:.8f}"})
            return json_response(out)
        if path == "/futures/data/openInterestHist":
            sym = q.get("symbol")
            if sym not in self.book.bars:
                return json_response({"code": -1121, "msg": "Invalid symbol."}, 400)
            b = self.book.bars[sym]
            step = INTERVAL_MS[q.get("period", "5m")]
            t0 = int(b["t"][0] - b["t"][0] % step)
            times = np.arange(t0, int(b["t"][-1]) + 1, step)
            s, e = _int(q.get("startTime")), _int(q.get("endTime"))
            if s is not None:
                times = times[times >= s]
            if e is not None:
                times = times[times <= e]
            times = times[: min(int(q.get("limit", 30)), 500)]
            out = []
            for t in times:
                i = min(int(np.searchsorted(b["t"], t)), len(b["t"]) - 1)
                oi = 50_000 + 1000 * np.sin(t / 1e7)
                out.append({"symbol": sym, "sumOpenInterest": f"{oi:.8f}",
                            "sumOpenInterestValue": f"{oi * b['c'][i]:.8f}", "timestamp": int(t)})
            return json_response(out)
        return 404, {"Content-Type": "application/json"}, json.dumps(
            {"code": -5000, "msg": f"no route {path}"}).encode()


def _int(v):
    return None if v is None else int(v)
