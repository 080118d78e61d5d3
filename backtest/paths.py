"""Intra-bar price paths v2 (MODEL.md 1 "Intra-bar path (v2)"): compiled, one bar at a time.

`fill_bar_path(o, h, l, c, n_ticks, mode, key, bar_open_s, near_first_prob, out)` writes a
bar's `n_ticks` engine-tick prices into `out[:n_ticks]` (tick k at bar open + k * tick_s;
tick 0 holds O, tick n_ticks-1 holds C):

- mode 0 (`MODE_LINEAR`, `path.mode = "linear"`): the v1 path of backtest/path.py, bit for
  bit: O -> the extreme nearer the open (a tie puts the low first) -> the other -> C, linear
  in between, waypoint ticks proportional to the legs' lengths in price. No draws.
- mode 1 (`MODE_BRIDGE`, `path.mode = "bridge"`): a seeded Brownian bridge through O, the
  first extreme, the second extreme and C.
  * order: the extreme nearer the open comes first with probability `near_first_prob`
    (`path.near_first_prob`); an open at an extreme puts that extreme first, a close at an
    extreme puts that extreme last;
  * times: each free extreme's share of the bar is the arcsine quantile of its share of the
    path's length (as on the linear path) blended with a uniform draw (`path.time_jitter`),
    the two ordered; an extreme equal to O (C) sits at tick 0 (n_ticks - 1). Extremes near
    the open come early and the times spread like the arcsine law of a Brownian motion's
    extremes (checked against Binance BTC 1m bars inside 15m / 1h bars: backtest/pathcheck.py);
  * between waypoints: one Brownian motion per bar, in log price, with the bar's own
    Parkinson volatility (`parkinson_sigma_1m`) times `vol_scale` (`path.vol_scale`) per
    tick; each leg subtracts the motion's chord, so the path meets every waypoint exactly;
  * clipped into [L, H], with every tick other than the extremes' own kept strictly inside
    (1e-9 of the range), so the path touches H and L once each, at their ticks (twice only
    where O or C itself equals H or L).
  Bars with n_ticks < 4 or H == L take the linear path (4 ticks are needed for O, two
  extremes and C on distinct ticks). O, C outside [L, H] (bad data) widen [L, H] to hold them.

Randomness: every draw is `backtest.rng` keyed by (key, bar_open_s) and a counter inside the
bar, nothing else: a venue and its stand-in on the same bars (same `key`, same bars) get
the same ticks, and a replay that fills only some bars gets for them exactly the ticks of a
replay that fills them all. Build `key` with `path_key(seed, coin, draw)`: it leaves the
venue out on purpose, so both venues of one coin share their shocks (MODEL.md 1).

Also here: `fill_series` (all ticks of a short series, for tests and the oracle), `extreme_filled`,
`parkinson_sigma_1m` (a bar's own volatility per minute), `first_cross_filled` (first tick
at or beyond a level on a filled bar), `path_settings(params)` (the `path.*` parameters as
the kernels want them).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from backtest import rng
from backtest.kernel_cache import drop_stale

drop_stale(__file__, ["rng.py"])

MODE_LINEAR = 0
MODE_BRIDGE = 1
MODES = {"linear": MODE_LINEAR, "bridge": MODE_BRIDGE}

# Parkinson (1980): E[ln(H/L)^2] = 4 ln 2 * sigma^2 over the bar
_PARKINSON = 1.0 / math.sqrt(4.0 * math.log(2.0))
_INSIDE = 1e-9           # interior ticks stay this share of the range inside [L, H]

# counters of the per-bar uniforms (key make_key(key, bar_open_s, _U, 0)); the kernels pass them as
# np.int64, not literals: numba compiles a callee once per literal value it is called with
_U, _N = 1, 2
_C_ORDER, _C_T1, _C_T2 = 0, 1, 2


@njit(cache=True)
def parkinson_sigma_1m(h, lw, bar_minutes):
    """A bar's own volatility per minute (Parkinson 1980): ln(H/L) / sqrt(4 ln 2) over the
    bar, divided by sqrt(bar_minutes). 0 for a flat or invalid bar."""
    if not (h > 0.0 and lw > 0.0 and h > lw and bar_minutes > 0.0):
        return 0.0
    return math.log(h / lw) * _PARKINSON / math.sqrt(bar_minutes)


@njit(cache=True)
def linear_legs(o, h, lw, c):
    """The v1 linear path's legs O -> e1 -> e2 -> C, e1 the extreme nearer the open:
    (e1, e2, d1, d2, d3), d the legs' lengths in price (the path moves at constant speed in
    price). Shared by linear_vertices and the cohort book's crossing times."""
    high_first = (h - o) < (o - lw)
    e1 = h if high_first else lw
    e2 = lw if high_first else h
    return e1, e2, abs(e1 - o), abs(e2 - e1), abs(c - e2)


@njit(cache=True)
def linear_vertices(o, h, lw, c, n_ticks):
    """The v1 path's waypoints (backtest/path.py bar_paths, same arithmetic):
    (k1, k2, e1, e2) with O at tick 0, e1 at k1, e2 at k2, C at n_ticks - 1."""
    e1, e2, d1, d2, d3 = linear_legs(o, h, lw, c)
    tot = d1 + d2 + d3
    span = n_ticks - 1
    f1 = d1 / tot if tot > 0 else 0.0
    f2 = (d1 + d2) / tot if tot > 0 else 0.0
    k1 = np.int64(np.rint(span * f1))
    k2 = np.int64(np.rint(span * f2))
    if span >= 3:
        if d1 > 0:
            k1 = max(k1, 1)
        if d3 > 0:
            k2 = min(k2, span - 1)
        if d2 > 0:
            k2 = max(k2, k1 + 1)
            k1 = min(k1, k2 - 1)
        else:
            k2 = max(k2, k1)
            k1 = min(k1, k2)
    k1 = min(max(k1, 0), span)
    k2 = min(max(max(k2, k1), 0), span)
    return k1, k2, e1, e2


@njit(cache=True)
def _fill_linear(o, h, lw, c, n_ticks, out):
    k1, k2, e1, e2 = linear_vertices(o, h, lw, c, n_ticks)
    span = n_ticks - 1
    for k in range(n_ticks):
        if k >= k2:
            ka, kb, pa, pb = k2, span, e2, c
        elif k >= k1:
            ka, kb, pa, pb = k1, k2, e1, e2
        else:
            ka, kb, pa, pb = 0, k1, o, e1
        dk = kb - ka
        frac = (k - ka) / dk if dk > 0 else 1.0
        out[k] = pa + (pb - pa) * frac


@njit(cache=True)
def _arcsine(u):
    """A draw of the arcsine law on [0, 1] from U[0, 1): sin^2(pi u / 2)."""
    s = math.sin(0.5 * math.pi * u)
    return s * s


@njit(cache=True)
def _free_tick(t, lo, hi):
    """Tick in [lo, hi] for a time t in [0, 1)."""
    k = lo + np.int64(math.floor(t * (hi - lo + 1)))
    return min(max(k, lo), hi)


@njit(cache=True)
def bridge_vertices(o, h, lw, c, n_ticks, key, bar_open_s, near_first_prob, time_jitter=0.25):
    """The bridge's waypoints for a bar with n_ticks >= 4 and h > l (h, l already widened to
    hold o and c): (k1, k2, e1, e2), 0 <= k1 < k2 <= n_ticks - 1, drawn from (key, bar_open_s).

    Times: each extreme's share of the bar is the arcsine quantile sin^2(pi u / 2) of
    u = (1 - time_jitter) * (its share of the path's length, as on the linear path)
    + time_jitter * U[0, 1): extremes near the open in price come early, near the close late,
    and the times spread like the arcsine law of a Brownian motion's extremes."""
    ku = rng.make_key(key, bar_open_s, np.int64(_U), np.int64(0))
    span = n_ticks - 1
    if o == h:
        high_first = True
    elif o == lw:
        high_first = False
    elif c == h:
        high_first = False
    elif c == lw:
        high_first = True
    else:
        near_high = (h - o) < (o - lw)
        near = rng.uniform(ku, _C_ORDER) < near_first_prob
        high_first = near_high if near else not near_high
    e1 = h if high_first else lw
    e2 = lw if high_first else h
    fixed1 = o == e1
    fixed2 = c == e2
    d1 = abs(e1 - o)
    d2 = abs(e2 - e1)
    d3 = abs(c - e2)
    tot = d1 + d2 + d3
    ta = _arcsine((1.0 - time_jitter) * d1 / tot + time_jitter * rng.uniform(ku, _C_T1))
    tb = _arcsine((1.0 - time_jitter) * (d1 + d2) / tot + time_jitter * rng.uniform(ku, _C_T2))
    t1, t2 = min(ta, tb), max(ta, tb)
    if fixed1 and fixed2:
        k1, k2 = 0, span
    elif fixed1:
        k1, k2 = 0, _free_tick(t2, 1, span - 1)
    elif fixed2:
        k1, k2 = _free_tick(t1, 1, span - 1), span
    else:
        k1 = _free_tick(t1, 1, span - 2)
        k2 = _free_tick(t2, 1, span - 1)
        if k2 <= k1:
            k2 = k1 + 1
    return np.int64(k1), np.int64(k2), e1, e2


@njit(cache=True)
def _bridge_walk(o, hh, ll, c, n, key, bar_open_s, near_first_prob, time_jitter, vol_scale, w_out):
    """The bridge's vertices (k1, k2, e1, e2) and its Brownian motion W[k] (W[0] = 0) for ticks
    0..n-1 into w_out: every tick's draw, since W's end value sets the legs' chords."""
    k1, k2, e1, e2 = bridge_vertices(o, hh, ll, c, n, key, bar_open_s, near_first_prob, time_jitter)
    span = n - 1
    kn = rng.make_key(key, bar_open_s, np.int64(_N), np.int64(0))
    s_tick = vol_scale * math.log(hh / ll) * _PARKINSON / math.sqrt(span)
    w = 0.0
    w_out[0] = 0.0
    for k in range(1, n):
        w += s_tick * rng.normal(kn, k)
        w_out[k] = w
    return k1, k2, e1, e2


@njit(cache=True)
def _leg_price(k, wk, k1, k2, span, x0, x1, x2, x3, w1, w2, w3, lo_in, hi_in):
    """Price at inner tick k (not a vertex): its leg's chord in log price plus (W[k] - W's chord
    over the leg), clipped strictly inside the bar's range. W[0] = 0."""
    if k < k1:
        ka, kb, xa, xb, wa, wb = 0, k1, x0, x1, 0.0, w1
    elif k < k2:
        ka, kb, xa, xb, wa, wb = k1, k2, x1, x2, w1, w2
    else:
        ka, kb, xa, xb, wa, wb = k2, span, x2, x3, w2, w3
    f = (k - ka) / (kb - ka)
    x = xa + (xb - xa) * f + (wk - wa - f * (wb - wa))
    return min(max(math.exp(x), lo_in), hi_in)


@njit(cache=True)
def fill_bar_path(o, h, lw, c, n_ticks, mode, key, bar_open_s, near_first_prob, out, vol_scale=1.0,
                  time_jitter=0.25):
    """Fill out[:n_ticks] with one bar's tick prices (module docstring). mode 0 (MODE_LINEAR)
    linear v1, anything else the Brownian bridge. key: int64 (path_key). Draws depend on
    (key, bar_open_s) only. vol_scale and time_jitter default to params.toml's path.vol_scale
    and path.time_jitter (pass path_settings(params) values). Returns nothing."""
    n = n_ticks
    if n < 1:
        return
    hh = max(h, max(o, c))
    ll = min(lw, min(o, c))
    if mode == MODE_LINEAR or n < 4 or not (hh > ll) or not (ll > 0.0):
        _fill_linear(o, h, lw, c, n, out)
        return
    k1, k2, e1, e2 = _bridge_walk(o, hh, ll, c, n, key, bar_open_s, near_first_prob, time_jitter, vol_scale, out)
    span = n - 1
    x0, x1, x2, x3 = math.log(o), math.log(e1), math.log(e2), math.log(c)
    band = _INSIDE * (hh - ll)
    lo_in, hi_in = ll + band, hh - band
    w1, w2, w3 = out[k1], out[k2], out[span]
    # pass 2: per leg, chord in log price + (W - W's chord), clipped strictly inside
    for k in range(1, span):
        if k == k1 or k == k2:
            continue
        out[k] = _leg_price(k, out[k], k1, k2, span, x0, x1, x2, x3, w1, w2, w3, lo_in, hi_in)
    out[0] = o
    out[span] = c
    out[k1] = e1
    out[k2] = e2


@njit(cache=True)
def bar_prices_at(o, h, lw, c, n_ticks, mode, key, bar_open_s, near_first_prob, ks, out, buf, vol_scale=1.0,
                  time_jitter=0.25):
    """out[j] = the price fill_bar_path gives at tick ks[j] of this bar (the same numbers),
    without filling the whole bar: the bridge's Brownian motion still needs every tick's draw
    (its end value sets the chords), but the price pass runs only at the ticks asked for.
    buf: scratch of >= n_ticks floats."""
    n = n_ticks
    m = ks.shape[0]
    if n < 1 or m == 0:
        return
    hh = max(h, max(o, c))
    ll = min(lw, min(o, c))
    if mode == MODE_LINEAR or n < 4 or not (hh > ll) or not (ll > 0.0):
        _fill_linear(o, h, lw, c, n, buf)
        for j in range(m):
            out[j] = buf[ks[j]]
        return
    k1, k2, e1, e2 = _bridge_walk(o, hh, ll, c, n, key, bar_open_s, near_first_prob, time_jitter, vol_scale, buf)
    span = n - 1
    x0, x1, x2, x3 = math.log(o), math.log(e1), math.log(e2), math.log(c)
    band = _INSIDE * (hh - ll)
    lo_in, hi_in = ll + band, hh - band
    w1, w2, w3 = buf[k1], buf[k2], buf[span]
    for j in range(m):
        k = ks[j]
        # fill_bar_path writes O, C, e1, e2 last, in that order: the later wins a shared tick
        if k == k2:
            out[j] = e2
        elif k == k1:
            out[j] = e1
        elif k == span:
            out[j] = c
        elif k == 0:
            out[j] = o
        else:
            out[j] = _leg_price(k, buf[k], k1, k2, span, x0, x1, x2, x3, w1, w2, w3, lo_in, hi_in)


@njit(cache=True)
def fill_series(o, h, lw, c, n_ticks, mode, key, bar_open_s, near_first_prob, vol_scale=1.0, time_jitter=0.25):
    """All tick prices of m bars as an (m, n_ticks) array (tests, the oracle, short series)."""
    m = o.shape[0]
    out = np.empty((m, n_ticks))
    for i in range(m):
        fill_bar_path(o[i], h[i], lw[i], c[i], n_ticks, mode, key, bar_open_s[i], near_first_prob,
                      out[i], vol_scale, time_jitter)
    return out


@njit(cache=True)
def prices_at(o, h, lw, c, n_ticks, mode, key, bar_open_s, near_first_prob, bars, ks, vol_scale=1.0,
              time_jitter=0.25):
    """Tick prices at (bars[j], ks[j]) pairs, one bar path per run of equal bars (pairs sorted
    by bar are cheapest; any order works). Tick 0 is O and tick n_ticks - 1 is C in every
    mode; other ticks as fill_bar_path gives them (bar_prices_at: only the ticks asked for)."""
    m = bars.shape[0]
    out = np.empty(m)
    buf = np.empty(max(n_ticks, 1))
    kk = np.empty(m, np.int64)
    jj = np.empty(m, np.int64)
    vals = np.empty(m)
    j = 0
    while j < m:
        b = bars[j]
        cnt = 0
        e = j
        while e < m and bars[e] == b:
            k = ks[e]
            if k == n_ticks - 1:
                out[e] = c[b]
            elif k == 0:
                out[e] = o[b]
            else:
                kk[cnt] = k
                jj[cnt] = e
                cnt += 1
            e += 1
        if cnt:
            bar_prices_at(o[b], h[b], lw[b], c[b], n_ticks, mode, key, bar_open_s[b], near_first_prob, kk[:cnt],
                          vals, buf, vol_scale, time_jitter)
            for x in range(cnt):
                out[jj[x]] = vals[x]
        j = e
    return out


@njit(cache=True)
def first_cross_filled(prices, n_ticks, threshold, direction, k_from):
    """First tick k in [k_from, n_ticks) of a filled bar where the price is at or beyond
    `threshold`: direction -1 price <= threshold (a long's trigger), +1 price >= threshold
    (a short's); -1 if none."""
    for k in range(max(k_from, 0), n_ticks):
        p = prices[k]
        if direction < 0:
            if p <= threshold:
                return k
        elif p >= threshold:
            return k
    return -1


@njit(cache=True)
def extreme_filled(prices, n_ticks, direction, k_from):
    """The most adverse price over ticks [k_from, n_ticks) of a filled bar (min for -1, max for +1)."""
    k0 = max(k_from, 0)
    best = prices[k0]
    for k in range(k0 + 1, n_ticks):
        p = prices[k]
        if (direction < 0 and p < best) or (direction > 0 and p > best):
            best = p
    return best


def path_key(seed: int, coin: str, draw: int = 0) -> int:
    """The path key of one coin and path draw: (seed, rng.PATH, coin, draw). The venue is
    left out so a venue and the venue standing in for it share their shocks. Returned as a
    signed int64 (same bits as rng.series_key) so every key compiles to one numba signature."""
    k = rng.series_key(seed, rng.PATH, coin, int(draw))
    return k - (1 << 64) if k >= (1 << 63) else k


def path_settings(params) -> dict:
    """The `path.*` parameters for the kernels: mode (int), near_first_prob, vol_scale,
    time_jitter, draws.
    An unknown mode is a ParamsError naming the key and the choices."""
    from backtest.params import ParamsError

    pm = params.path_model
    name = pm.mode.strip().lower()
    if name not in MODES:
        raise ParamsError(f"parameter path.mode: {pm.mode!r} is not one of "
                          f"{', '.join(repr(m) for m in MODES)}")
    p = pm.near_first_prob
    if not 0.0 <= p <= 1.0:
        raise ParamsError(f"parameter path.near_first_prob: {p} is not in [0, 1]")
    draws = pm.draws
    if draws < 1:
        raise ParamsError(f"parameter path.draws: {draws} must be at least 1")
    vs = pm.vol_scale
    if vs < 0:
        raise ParamsError(f"parameter path.vol_scale: {vs} must be >= 0")
    tj = pm.time_jitter
    if not 0.0 <= tj <= 1.0:
        raise ParamsError(f"parameter path.time_jitter: {tj} is not in [0, 1]")
    return {"mode": MODES[name], "near_first_prob": p, "vol_scale": vs, "time_jitter": tj, "draws": draws}
