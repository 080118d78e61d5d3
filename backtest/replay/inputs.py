"""PathInput: one venue-market price path as arrays, and the block extremes that find the next bar
that can hold an event (MODEL.md 1)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backtest.path import BarPaths, bar_paths, price_at

# The one place the compiled replay gets its intra-bar path from (MODEL.md 1): linear (v1) or
# the seeded Brownian bridge. (A cached numba kernel is keyed on its own file only: touch
# backtest/replay/binance_kernel.py when the path function changes.)
from backtest.paths import fill_bar_path, prices_at

BLOCK = 512


@dataclass
class PathInput:
    """One venue-market price path as arrays (bar opens in epoch seconds)."""

    ts_s: np.ndarray              # int64 bar open, epoch seconds
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume_quote: np.ndarray
    bar_seconds: int
    tick_s: float = 1.0
    sigma_1m: float = 0.001
    adv_usd: float = 0.0
    funding_bar: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # bar index
    funding_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    path_mode: int = 0              # 0 linear (v1), 1 Brownian bridge (backtest.paths)
    path_key: int = 0               # counter-based key of the path draws (backtest.rng)
    near_first_prob: float = 0.5    # bridge: chance the extreme nearer the open comes first
    vol_scale: float = 1.0          # bridge: volatility x the bar's Parkinson sigma (path.vol_scale)
    time_jitter: float = 0.25       # bridge: weight of the uniform draw in the extremes' times

    def __post_init__(self):
        # one array type per field whatever the source (pandas/arrow give read-only views, tests
        # and the bench writable arrays): each compiled kernel then has one specialisation, so a
        # cold cache compiles it once for the demo, the bench and the tests alike
        for name in ("ts_s", "funding_bar"):
            setattr(self, name, np.require(getattr(self, name), np.int64, ["C", "W"]))
        for name in ("open", "high", "low", "close", "volume_quote", "funding_rate"):
            setattr(self, name, np.require(getattr(self, name), np.float64, ["C", "W"]))
        self.n_ticks = max(1, int(round(self.bar_seconds / self.tick_s)))
        self.paths: BarPaths = bar_paths(self.open, self.high, self.low, self.close, self.n_ticks)
        lo, hi = self.paths.p.min(axis=1), self.paths.p.max(axis=1)
        nb = len(lo)
        nblk = (nb + BLOCK - 1) // BLOCK
        pad = nblk * BLOCK - nb
        self._lo, self._hi = lo, hi
        self._blo = np.concatenate([lo, np.full(pad, np.inf)]).reshape(nblk, BLOCK).min(axis=1)
        self._bhi = np.concatenate([hi, np.full(pad, -np.inf)]).reshape(nblk, BLOCK).max(axis=1)

    @classmethod
    def from_bars(cls, bars: pd.DataFrame, bar_seconds: int, *, tick_s=1.0, sigma_1m=0.001, adv_usd=0.0,
                  funding: pd.DataFrame | None = None) -> "PathInput":
        ts = pd.to_datetime(bars["ts"], utc=True)
        ts_s = ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy().astype(np.int64)
        fb, fr = np.zeros(0, np.int64), np.zeros(0)
        if funding is not None and len(funding):
            fts = ((pd.to_datetime(funding["ts"], utc=True) - pd.Timestamp(0, tz="UTC"))
                   // pd.Timedelta(seconds=1)).to_numpy().astype(np.int64)
            idx = np.searchsorted(ts_s, fts, side="right") - 1
            ok = (idx >= 0) & (fts < ts_s[-1] + bar_seconds)
            fb, fr = idx[ok].astype(np.int64), funding["rate"].to_numpy(dtype=float)[ok]
        return cls(ts_s.astype(np.int64), bars["open"].to_numpy(float), bars["high"].to_numpy(float),
                   bars["low"].to_numpy(float), bars["close"].to_numpy(float),
                   bars["volume_quote"].to_numpy(float), int(bar_seconds), float(tick_s), float(sigma_1m),
                   float(adv_usd), fb, fr)

    @property
    def n_bars(self) -> int:
        return len(self.open)

    @property
    def bar_minutes(self) -> float:
        return self.bar_seconds / 60.0

    @property
    def n_ticks_total(self) -> int:
        return self.n_bars * self.n_ticks

    def bar_ticks(self, bar: int, out: np.ndarray | None = None) -> np.ndarray:
        """All tick prices of one bar through the shared path function (kernel and oracle)."""
        out = np.empty(self.n_ticks) if out is None else out
        fill_bar_path(float(self.open[bar]), float(self.high[bar]), float(self.low[bar]), float(self.close[bar]),
                      self.n_ticks, int(self.path_mode), np.int64(self.path_key), np.int64(self.ts_s[bar]),
                      float(self.near_first_prob), out, float(self.vol_scale), float(self.time_jitter))
        return out

    def tick_index(self, t_s) -> np.ndarray:
        """Global tick index g = bar * n_ticks + k of the first engine tick at or after each time
        (0 before the first bar, n_ticks_total after the last tick). An account with
        [open_s, close_s) is live at ticks g_open <= g < g_close."""
        t = np.asarray(t_s, dtype=np.float64)
        nb, n = self.n_bars, self.n_ticks
        out = np.where(t <= self.ts_s[0], 0, nb * n).astype(np.int64)
        inside = (t > self.ts_s[0]) & (t < self.ts_s[-1] + self.bar_seconds)
        if inside.any():                     # most accounts open before the path and never close in it
            ti = t[inside]
            b = np.searchsorted(self.ts_s.astype(np.float64), ti, side="right") - 1
            bc = np.clip(b, 0, nb - 1)
            k = np.ceil((ti - self.ts_s[bc]) / self.tick_s)
            g = np.where(k >= n, (bc + 1) * n, bc * n + np.maximum(k, 0))
            out[inside] = np.clip(g, 0, nb * n).astype(np.int64)
        return out

    def tick_time_s(self, bar, k):
        return self.ts_s[bar] + np.asarray(k) * self.tick_s

    def price_at_time(self, t_s) -> np.ndarray:
        """Path price at absolute times (clamped to the path's span), from the same ticks the
        kernels walk (`bar_ticks`: the PathInput's path mode and key), so the BLP's hedge and
        the takeover read one path (MODEL.md 1)."""
        t = np.asarray(t_s, dtype=float)
        b = np.clip(np.searchsorted(self.ts_s, t, side="right") - 1, 0, self.n_bars - 1)
        k = np.clip(np.floor((t - self.ts_s[b]) / self.tick_s).astype(np.int64), 0, self.n_ticks - 1)
        if self.path_mode == 0:
            return price_at(self.paths, b, k)
        bf, kf = b.reshape(-1).astype(np.int64), k.reshape(-1).astype(np.int64)
        o = np.argsort(bf, kind="stable")
        f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)   # noqa: E731
        got = prices_at(f64(self.open), f64(self.high), f64(self.low), f64(self.close), int(self.n_ticks),
                        int(self.path_mode), np.int64(self.path_key), self.ts_s.astype(np.int64),
                        float(self.near_first_prob), bf[o], kf[o], float(self.vol_scale), float(self.time_jitter))
        out = np.empty(bf.shape)
        out[o] = got
        return out.reshape(b.shape)

    def same_path(self, other: "PathInput") -> bool:
        """True when `other` has the same bars, ticks and path draws (a stand-in on this path)."""
        return (self.n_bars == other.n_bars and self.bar_seconds == other.bar_seconds and self.tick_s == other.tick_s
                and self.path_mode == other.path_mode and self.path_key == other.path_key
                and self.near_first_prob == other.near_first_prob and self.vol_scale == other.vol_scale
                and self.time_jitter == other.time_jitter and np.array_equal(self.ts_s, other.ts_s)
                and np.array_equal(self.open, other.open) and np.array_equal(self.high, other.high)
                and np.array_equal(self.low, other.low) and np.array_equal(self.close, other.close))

    def next_bar(self, start: int, long_top: float, short_top: float) -> int:
        """First bar >= start whose low <= long_top or high >= short_top; n_bars if none."""
        nb = self.n_bars
        if start >= nb:
            return nb
        b = start
        blk = b // BLOCK
        end_blk = min(nb, (blk + 1) * BLOCK)
        seg = np.nonzero((self._lo[b:end_blk] <= long_top) | (self._hi[b:end_blk] >= short_top))[0]
        if seg.size:
            return b + int(seg[0])
        nxt = np.nonzero((self._blo[blk + 1:] <= long_top) | (self._bhi[blk + 1:] >= short_top))[0]
        if not nxt.size:
            return nb
        bb = blk + 1 + int(nxt[0])
        s, e = bb * BLOCK, min(nb, (bb + 1) * BLOCK)
        seg = np.nonzero((self._lo[s:e] <= long_top) | (self._hi[s:e] >= short_top))[0]
        return s + int(seg[0])


