"""The intra-bar price path and first-crossing times (MODEL.md section 1).

A bar of `n` engine ticks (tick k = 0 .. n-1, at bar open + k * tick_s) follows
O -> first extreme -> second extreme -> C, the extreme nearer the open first (a tie puts the
low first), linear in between. Each leg takes a share of the bar's n-1 tick intervals
proportional to its length in price (constant speed), rounded to whole ticks, and a leg of
non-zero length gets at least one tick, so O, both extremes and C are each sampled exactly.

Every price on the path comes from one formula, `_interp`, so the event-driven replay
(first crossings solved per leg) and the oracle (every tick) see bit-identical prices.
All functions are vectorised over bars.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BarPaths:
    """Vertices of the path of m bars: ticks k[:, 0..3] and prices p[:, 0..3]; n ticks per bar."""

    k: np.ndarray  # (m, 4) int64: 0, k1, k2, n-1
    p: np.ndarray  # (m, 4) float64: O, E1, E2, C
    n: int

    def __len__(self) -> int:
        return self.k.shape[0]

    def take(self, idx) -> "BarPaths":
        idx = np.atleast_1d(idx)
        return BarPaths(self.k[idx], self.p[idx], self.n)


def bar_paths(o, h, low, c, n_ticks: int) -> BarPaths:
    """Path vertices of bars (arrays or scalars) with `n_ticks` engine ticks per bar."""
    o, h, low, c = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (o, h, low, c))
    n = int(n_ticks)
    if n < 1:
        raise ValueError("a bar needs at least one tick")
    high_first = (h - o) < (o - low)
    e1 = np.where(high_first, h, low)
    e2 = np.where(high_first, low, h)
    d1, d2, d3 = np.abs(e1 - o), np.abs(e2 - e1), np.abs(c - e2)
    tot = d1 + d2 + d3
    span = n - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tot > 0, d1 / tot, 0.0)
        f2 = np.where(tot > 0, (d1 + d2) / tot, 0.0)
    k1 = np.rint(span * f1).astype(np.int64)
    k2 = np.rint(span * f2).astype(np.int64)
    if span >= 3:
        k1 = np.where(d1 > 0, np.maximum(k1, 1), k1)
        k2 = np.where(d3 > 0, np.minimum(k2, span - 1), k2)
        k2 = np.where(d2 > 0, np.maximum(k2, k1 + 1), np.maximum(k2, k1))
        k1 = np.where(d2 > 0, np.minimum(k1, k2 - 1), np.minimum(k1, k2))
    k1 = np.clip(k1, 0, span)
    k2 = np.clip(np.maximum(k2, k1), 0, span)
    k = np.stack([np.zeros_like(k1), k1, k2, np.full_like(k1, span)], axis=1)
    p = np.stack([o, e1, e2, c], axis=1)
    return BarPaths(k, p, n)


def _interp(ka, pa, kb, pb, k):
    """Price at tick k on the leg (ka, pa) -> (kb, pb). The single formula used everywhere."""
    dk = kb - ka
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(dk > 0, (k - ka) / np.where(dk > 0, dk, 1), 1.0)
    return pa + (pb - pa) * frac


def _leg_of(kv, k):
    """Index (0, 1, 2) of the leg that holds tick k; a tick shared by two vertices belongs to
    the later leg (so a vertex is priced by the leg it starts)."""
    leg = np.where(k >= kv[..., 2], 2, np.where(k >= kv[..., 1], 1, 0))
    return leg


def price_at(paths: BarPaths, bar_idx, k) -> np.ndarray:
    """Path price of bar(s) `bar_idx` at tick(s) `k` (broadcast together)."""
    bar_idx = np.asarray(bar_idx)
    k = np.asarray(k, dtype=np.int64)
    kv = paths.k[bar_idx]
    pv = paths.p[bar_idx]
    leg = _leg_of(kv, k)
    ka = np.take_along_axis(kv, leg[..., None], -1)[..., 0]
    kb = np.take_along_axis(kv, leg[..., None] + 1, -1)[..., 0]
    pa = np.take_along_axis(pv, leg[..., None], -1)[..., 0]
    pb = np.take_along_axis(pv, leg[..., None] + 1, -1)[..., 0]
    return _interp(ka, pa, kb, pb, k)


def tick_prices(paths: BarPaths, bar: int) -> np.ndarray:
    """All n tick prices of one bar (the oracle's view)."""
    ks = np.arange(paths.n, dtype=np.int64)
    return price_at(paths, np.full(paths.n, bar), ks)


def first_cross(paths: BarPaths, bar_idx, threshold, direction: int, k_from=0) -> np.ndarray:
    """First tick k >= k_from of bar(s) where the path is at or beyond `threshold`:
    direction -1: price <= threshold (a long's trigger); +1: price >= threshold (a short's).
    Vectorised over (bar_idx, threshold, k_from) broadcast; -1 where it never gets there."""
    bar_idx, threshold, k_from = np.broadcast_arrays(
        np.asarray(bar_idx), np.asarray(threshold, dtype=np.float64), np.asarray(k_from, dtype=np.int64))
    shape = threshold.shape
    bar_idx, threshold, k_from = bar_idx.ravel(), threshold.ravel(), k_from.ravel()
    kv = paths.k[bar_idx]
    pv = paths.p[bar_idx]
    s = -1.0 if direction < 0 else 1.0
    # work in "adverse" units: reached when s * price >= s * threshold
    best = np.full(threshold.shape, -1, dtype=np.int64)
    for leg in range(3):
        ka, kb = kv[:, leg], kv[:, leg + 1]
        pa, pb = pv[:, leg], pv[:, leg + 1]
        lo = np.maximum(ka, k_from)
        # the last leg includes its end tick; earlier legs end one tick before the next vertex
        hi = kb if leg == 2 else np.maximum(kb - 1, ka)
        if leg < 2:
            hi = np.where(kb == ka, ka - 1, hi)  # an empty leg (vertices on one tick)
        valid = lo <= hi
        p_lo = _interp(ka, pa, kb, pb, lo)
        hit_lo = valid & (s * p_lo >= s * threshold)
        moving = valid & ~hit_lo & (s * pb > s * pa)          # heading towards the threshold
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = (threshold - pa) / np.where(pb != pa, pb - pa, 1.0)
            kstar = ka + np.ceil(frac * np.where(kb > ka, kb - ka, 0)).astype(np.int64)
        kstar = np.where(moving, np.clip(kstar, lo, hi + 1), hi + 1)
        # fix the ceil against the exact formula: step back while the previous tick already hits,
        # forward while this one does not
        for _ in range(2):
            prev = np.maximum(kstar - 1, lo)
            p_prev = _interp(ka, pa, kb, pb, prev)
            back = moving & (kstar > lo) & (kstar <= hi + 1) & (s * p_prev >= s * threshold)
            kstar = np.where(back, kstar - 1, kstar)
        for _ in range(2):
            p_k = _interp(ka, pa, kb, pb, np.minimum(kstar, hi))
            fwd = moving & (kstar <= hi) & ~(s * p_k >= s * threshold)
            kstar = np.where(fwd, kstar + 1, kstar)
        hit_mv = moving & (kstar <= hi)
        cand = np.where(hit_lo, lo, np.where(hit_mv, kstar, -1))
        take = (cand >= 0) & (best < 0)
        best = np.where(take, cand, best)
    return best.reshape(shape)


@dataclass
class CollateralPath:
    """A collateral coin's price as a step function (MODEL.md 3.2): `price[i]` holds from
    `t_s[i]` (a bar's CLOSE time, epoch seconds) until the next step; before the first step
    the window-start price applies. `volume_quote[i]` is that bar's quote volume (impact of a
    BLP collateral sale), `bar_minutes` the bars' length, `sigma_1m` their 1-minute volatility."""

    coin: str
    t_s: np.ndarray
    price: np.ndarray
    volume_quote: np.ndarray
    bar_minutes: float
    sigma_1m: float = 0.001
    source: str = ""

    @classmethod
    def from_bars(cls, coin: str, ts_open_s, close, volume_quote, bar_seconds: int, *,
                  source: str = "") -> "CollateralPath":
        """From bars (open times in epoch seconds): each close steps in at its bar's close time."""
        t = np.asarray(ts_open_s, dtype=np.int64) + int(bar_seconds)
        c = np.asarray(close, dtype=float)
        v = np.asarray(volume_quote, dtype=float)
        ok = np.isfinite(c) & (c > 0)
        t, c, v = t[ok], c[ok], v[ok]
        order = np.argsort(t, kind="stable")
        t, c, v = t[order], c[order], v[order]
        bm = bar_seconds / 60.0
        r = np.diff(np.log(c)) if c.size > 2 else np.zeros(0)
        sig = float(np.std(r) / np.sqrt(bm)) if r.size > 1 and np.std(r) > 0 else 0.001
        return cls(coin, t, c, np.where(np.isfinite(v), v, 0.0), bm, sig, source)

    def steps_by_bar(self, bar_open_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bar, step index): the engine bar at whose start each step takes effect (the first
        bar opening at or after the step's time: a bar's value is never used before its
        close), keeping the last step per bar; steps after the path's last bar are dropped."""
        b = np.searchsorted(np.asarray(bar_open_s), self.t_s, side="left")
        keep = b < len(bar_open_s)
        b, i = b[keep], np.nonzero(keep)[0]
        if b.size == 0:
            return b.astype(np.int64), i
        last = np.r_[b[1:] != b[:-1], True]
        return b[last].astype(np.int64), i[last]
