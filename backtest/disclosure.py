"""What Binance's public liquidation stream shows, computed on the real account count (MODEL.md 4.5).

Binance's `forceOrder` stream pushes at most one liquidation order per symbol per second (the
last one). The model simulates N accounts that stand for more real ones (`weight`, MODEL.md 2),
so the throttle must act on the real orders, not the simulated ones, or the reported figure
moves with N (review 1.3: 20x between N = 5k and 300k).

Representation: a simulated liquidation of notional X and weight w stands for
k = max(1, round(w)) real orders of X/k (the sampled form; the expectation below uses w
itself, so an account that stands for less than one real account adds less than one order:
with k rounded up, a book of many small simulated accounts would add orders that do not
exist). Their times spread uniformly over the event's cell: the span of the same side's
simulated liquidations around it that hold max(`disclosure.bandwidth_real_orders`, w) / 2
real orders before it and as many after it, at most `disclosure.max_spread_s` wide (both
calibrated parameters with ranges). A simulated account stands for the real ones whose
triggers lie near its own (the band the cohort's leverage and entry spread imply at that
sampling density); the path crosses that band in about the time its neighbours holding as
many real accounts take to liquidate, so the cell is the band in time: an adaptive kernel
measured in real orders. Ten times more simulated accounts give ten times fewer orders per
event and cells holding the same real count: the real order rate per second, and so the
reported figure, do not depend on N beyond sampling noise. We chose time over price so that
the step needs no price path (it runs on the events alone).

Per second, the real orders of all cells covering it arrive as a Poisson superposition with
rate Lambda(sec) = sum_i w_i / width_i; the second shows one order (the last), from event i
with probability (w_i/width_i) / Lambda, so the expected reported notional of the second is
(1 - e^-Lambda) / Lambda * sum_i X_i / width_i, and event i is credited X_i / width_i *
(1 - e^-Lambda) / Lambda for every second of its cell. `binance_reported` computes that
expectation exactly (no draws; O(n log n)); `binance_reported_sampled` draws the real orders
one by one (keyed by event and order) and is there to check it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest import rng as R
from backtest.kernel_cache import drop_stale

drop_stale(__file__, ["rng.py"])


@njit(cache=True)
def _time_at(c, mid, ts):
    """Time at cumulative real-order count c: linear between the events' weight midpoints
    (`mid`, increasing) and their seconds (`ts`), flat beyond the first and last."""
    m = mid.shape[0]
    if c <= mid[0]:
        return ts[0]
    if c >= mid[m - 1]:
        return ts[m - 1]
    j = np.searchsorted(mid, c)  # mid[j-1] < c <= mid[j]
    c0, c1 = mid[j - 1], mid[j]
    f = (c - c0) / (c1 - c0) if c1 > c0 else 1.0
    return ts[j - 1] + f * (ts[j] - ts[j - 1])


@njit(cache=True)
def _cells(t_s, side, weight, m_real, max_spread_s):
    """[a, b) integer-second cell of each event: the span of the same side's liquidations that
    holds max(m_real, w) real orders centred on the event's own (cumulative weight mapped to
    time linearly between the events' weight midpoints, so the cell holds the same real count
    whatever N: an adaptive kernel in real-order units; an event that stands for more than
    m_real real orders spreads them halfway to its neighbours), each half at most
    max_spread_s / 2; at least its own second."""
    n = t_s.shape[0]
    a = np.empty(n, np.int64)
    b = np.empty(n, np.int64)
    half = max_spread_s / 2.0
    order = np.argsort(t_s, kind="mergesort")
    for sd in (1, -1, 0):
        idx = np.empty(n, np.int64)
        m = 0
        for q in range(n):
            i = order[q]
            s = 1 if side[i] > 0 else (-1 if side[i] < 0 else 0)
            if s == sd:
                idx[m] = i
                m += 1
        if m == 0:
            continue
        ts = np.empty(m)
        mid = np.empty(m)
        c = 0.0
        for r in range(m):
            ts[r] = np.floor(t_s[idx[r]])
            w = weight[idx[r]]
            mid[r] = c + 0.5 * w
            c += w
        for r in range(m):
            bw = 0.5 * max(m_real, weight[idx[r]])
            t = ts[r]
            lo = max(_time_at(mid[r] - bw, mid, ts), t - half)
            hi = min(_time_at(mid[r] + bw, mid, ts) + 1.0, t + 1.0 + half)
            a[idx[r]] = np.int64(np.floor(min(lo, t)))
            b[idx[r]] = np.int64(np.ceil(max(hi, t + 1.0)))
    return a, b


@njit(cache=True)
def _reported_expected(t_s, notional, weight, side, m_real, max_spread_s):
    n = t_s.shape[0]
    out = np.zeros(n)
    if n == 0:
        return out
    a, b = _cells(t_s, side, weight, m_real, max_spread_s)
    lam = np.empty(n)
    for i in range(n):
        lam[i] = weight[i] / (b[i] - a[i])
    # breakpoints and Lambda per segment
    pts = np.unique(np.concatenate((a, b)))
    m = pts.shape[0]
    dl = np.zeros(m)
    ia = np.searchsorted(pts, a)
    ib = np.searchsorted(pts, b)
    for i in range(n):
        dl[ia[i]] += lam[i]
        dl[ib[i]] -= lam[i]
    # G[j] = sum over segments before pts[j] of length * f(Lambda)
    G = np.zeros(m)
    L = 0.0
    for j in range(m - 1):
        L += dl[j]
        if L < 1e-12:
            f = 1.0 if L > 0 else 0.0
        else:
            f = (1.0 - np.exp(-L)) / L
        G[j + 1] = G[j] + (pts[j + 1] - pts[j]) * f
    for i in range(n):
        out[i] = notional[i] / (b[i] - a[i]) * (G[ib[i]] - G[ia[i]])
    return out


def _args(t_s, notional_usd, weight, side, max_spread_s):
    t = np.asarray(t_s, dtype=np.float64).reshape(-1)
    x = np.asarray(notional_usd, dtype=np.float64).reshape(-1)
    w = np.broadcast_to(np.asarray(weight, dtype=np.float64), t.shape).copy()
    sd = np.zeros(t.shape, np.int64) if side is None else \
        np.broadcast_to(np.sign(np.asarray(side, dtype=np.float64)), t.shape).astype(np.int64)
    if t.shape != x.shape:
        raise ValueError("t_s and notional_usd must have the same length")
    if not np.isfinite(max_spread_s) or max_spread_s <= 0:
        raise ValueError("disclosure.max_spread_s must be > 0")
    if np.any(~np.isfinite(w)) or np.any(w < 0) or np.any(~np.isfinite(t)):
        raise ValueError("times and weights must be finite, weights >= 0")
    return t, x, w, sd


def binance_reported(t_s, notional_usd, weight, side=None, max_spread_s: float = 86400.0,
                     bandwidth_real_orders: float = 5000.0) -> np.ndarray:
    """Expected reported notional per liquidation event of ONE symbol on Binance's stream.

    t_s: event times (epoch seconds, float or int); notional_usd: the simulated liquidation's
    notional; weight: real accounts the liquidated simulated account stands for; side: the
    liquidated side (+1 long / -1 short; cells are formed per side, the stream throttles both
    sides together; None: one side); max_spread_s: `disclosure.max_spread_s`; bandwidth_real_orders:
    `disclosure.bandwidth_real_orders`. Returns reported_usd
    per event (<= notional_usd); the sum is the reported total, stable in the number of
    simulated accounts for a given real flow.
    """
    t, x, w, sd = _args(t_s, notional_usd, weight, side, max_spread_s)
    return _reported_expected(t, x, w, sd, float(bandwidth_real_orders), float(max_spread_s))


@njit(cache=True)
def _reported_sampled(t_s, notional, weight, side, key, m_real, max_spread_s):
    n = t_s.shape[0]
    a, b = _cells(t_s, side, weight, m_real, max_spread_s)
    ks = np.empty(n, np.int64)
    tot = 0
    for i in range(n):
        ks[i] = max(1, np.int64(np.rint(weight[i])))
        tot += ks[i]
    times = np.empty(tot)
    parent = np.empty(tot, np.int64)
    j = 0
    for i in range(n):
        ki = R.make_key(np.uint64(key), np.uint64(R.DISCLOSURE), np.uint64(i), np.uint64(0))
        for r in range(ks[i]):
            times[j] = a[i] + (b[i] - a[i]) * R.uniform(ki, np.uint64(r))
            parent[j] = i
            j += 1
    order = np.argsort(times)
    out = np.zeros(n)
    for q in range(tot):
        o = order[q]
        sec = np.floor(times[o])
        last = q == tot - 1 or np.floor(times[order[q + 1]]) != sec
        if last:
            p = parent[o]
            out[p] += notional[p] / ks[p]
    return out


def binance_reported_sampled(t_s, notional_usd, weight, side=None, key: int = 0,
                             max_spread_s: float = 86400.0, bandwidth_real_orders: float = 5000.0) -> np.ndarray:
    """The same, drawing every real order's time (keyed by event index and order): a check of
    the expectation, and a draw of the stream. Materialises sum(k) orders."""
    t, x, w, sd = _args(t_s, notional_usd, weight, side, max_spread_s)
    return _reported_sampled(t, x, w, sd, np.uint64(int(key) & 0xFFFFFFFFFFFFFFFF), float(bandwidth_real_orders),
                             float(max_spread_s))


def reported_for_params(t_s, notional_usd, weight, side, params) -> np.ndarray:
    """binance_reported with `disclosure.max_spread_s` and `disclosure.bandwidth_real_orders`."""
    d = params.disclosure
    return binance_reported(t_s, notional_usd, weight, side, max_spread_s=d.max_spread_s,
                            bandwidth_real_orders=d.bandwidth_real_orders)
