"""Stand-in for `backtest.paths.fill_bar_path` (interface 3 of the v2 plan) until the "paths" work is
merged: the v1 linear bar path (MODEL.md 1) compiled, with the same signature.

    fill_bar_path(o, h, l, c, n_ticks, mode, key, bar_open_s, near_first_prob, out)

fills out[:n_ticks] with one bar's tick prices. Only mode 0 (linear: O -> nearer extreme ->
other extreme -> C) is implemented here; key, bar_open_s and near_first_prob are accepted and
ignored. The vertices and the interpolation are the arithmetic of backtest/path.py
(`bar_paths`, `_interp`, `_leg_of`) written per scalar, so the tick prices are bit-identical to
`path.tick_prices` (tests/backtest/test_kernels.py checks it).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def linear_vertices(o, h, l, c, n_ticks):
    """(k1, k2, e1, e2): ticks and prices of the two extremes, as path.bar_paths computes them."""
    high_first = (h - o) < (o - l)
    if high_first:
        e1, e2 = h, l
    else:
        e1, e2 = l, h
    d1, d2, d3 = abs(e1 - o), abs(e2 - e1), abs(c - e2)
    tot = d1 + d2 + d3
    span = n_ticks - 1
    if tot > 0:
        f1 = d1 / tot
        f2 = (d1 + d2) / tot
    else:
        f1 = 0.0
        f2 = 0.0
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
def _interp(ka, pa, kb, pb, k):
    dk = kb - ka
    if dk > 0:
        frac = (k - ka) / dk
    else:
        frac = 1.0
    return pa + (pb - pa) * frac


@njit(cache=True)
def fill_bar_path(o, h, l, c, n_ticks, mode, key, bar_open_s, near_first_prob, out):
    """One bar's tick prices into out[:n_ticks] (mode 0 only; see the module docstring)."""
    k1, k2, e1, e2 = linear_vertices(o, h, l, c, n_ticks)
    span = n_ticks - 1
    for k in range(n_ticks):
        if k >= k2:
            out[k] = _interp(k2, e2, span, c, k)
        elif k >= k1:
            out[k] = _interp(k1, e1, k2, e2, k)
        else:
            out[k] = _interp(0, o, k1, e1, k)
