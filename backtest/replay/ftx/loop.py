"""The event-driven FTX tick kernel (MODEL.md 3), compiled with numba.

Every account outside step 1/2 sits in one of two trigger trees (a max-tree of the marks at
which a long-like account's MF reaches MMF, a min-tree for short-like ones: segment trees
over the account index, O(log n) insert/remove/pop). The kernel walks bars; a bar is visited
only when its low/high reaches a tree's root, a collateral price steps, an account opens or
closes in it, or accounts are in step 1/2. In a visited bar the ticks are walked with the
same path formula as backtest/path.py; accounts reached by the price leave the trees and join
the active set, which the shared engine tick (engine.tick) processes; those that leave step
1/2, or whose position changed by overflow, go back with fresh triggers. In random mode
ticks on which nothing can happen (no account in step 2, the market not firing, no threshold
reached, nothing opening) are skipped; the draws are counter-based, so skipping changes
nothing. Cost grows with bars + events, not bars x accounts.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest.replay.ftx.accounts import (C_DET, C_TICK, NJ, OPEN, price_at_mf, tav_mf, trig_dir)
from backtest.replay.ftx.collateral import revalue
from backtest.replay.ftx.engine import abs_tick, fires, open_close, tick

EPS = 1e-9      # relative margin: a tick near a threshold is processed, never skipped


@njit(**NJ)
def fill_ticks(kv, pv, b, n, out):
    """Tick prices of bar b on the v1 linear path (path._interp, operation for operation)."""
    for k in range(n):
        leg = 2 if k >= kv[b, 2] else (1 if k >= kv[b, 1] else 0)
        ka, kb = kv[b, leg], kv[b, leg + 1]
        pa, pb = pv[b, leg], pv[b, leg + 1]
        dk = kb - ka
        frac = (k - ka) / dk if dk > 0 else 1.0
        out[k] = pa + (pb - pa) * frac


# ---- segment trees: tl (max of long-like triggers), ts (min of short-like triggers)
@njit(inline="always", **NJ)
def _upd_max(t, size, i, v):
    p = size + i
    t[p] = v
    p >>= 1
    while p >= 1:
        t[p] = max(t[2 * p], t[2 * p + 1])
        p >>= 1


@njit(inline="always", **NJ)
def _upd_min(t, size, i, v):
    p = size + i
    t[p] = v
    p >>= 1
    while p >= 1:
        t[p] = min(t[2 * p], t[2 * p + 1])
        p >>= 1


@njit(inline="always", **NJ)
def _arg_max(t, size):
    p = 1
    while p < size:
        p = 2 * p if t[2 * p] >= t[2 * p + 1] else 2 * p + 1
    return p - size


@njit(inline="always", **NJ)
def _arg_min(t, size):
    p = 1
    while p < size:
        p = 2 * p if t[2 * p] <= t[2 * p + 1] else 2 * p + 1
    return p - size


@njit(**NJ)
def _key(S, i):
    """(direction, trigger) of account i; direction 0 = in no tree."""
    if not S.alive[i] or S.exempt[i] or S.qty[i] <= 0 or S.status[i] != OPEN:
        return 0, np.nan
    tr = price_at_mf(S, i, S.mmf[i])
    if not (tr > 0):
        return 0, np.nan
    return trig_dir(S, i), tr


@njit(**NJ)
def _put(S, tl, ts, size, i):
    d, tr = _key(S, i)
    _upd_max(tl, size, i, tr if d == -1 else -np.inf)
    _upd_min(ts, size, i, tr if d == 1 else np.inf)


@njit(**NJ)
def _drop(tl, ts, size, i):
    _upd_max(tl, size, i, -np.inf)
    _upd_min(ts, size, i, np.inf)


@njit(**NJ)
def _build(S, tl, ts, size, in_act):
    n = S.qty.shape[0]
    tl[:] = -np.inf
    ts[:] = np.inf
    for i in range(n):
        if in_act[i]:
            continue
        d, tr = _key(S, i)
        if d == -1:
            tl[size + i] = tr
        elif d == 1:
            ts[size + i] = tr
    for p in range(size - 1, 0, -1):
        tl[p] = max(tl[2 * p], tl[2 * p + 1])
        ts[p] = min(ts[2 * p], ts[2 * p + 1])


@njit(**NJ)
def _quiet_bounds(S, act, nact):
    """Prices at or beyond which an active (step-1) account may change state."""
    lo, hi = -np.inf, np.inf
    for x in range(nact):
        i = act[x]
        up = price_at_mf(S, i, S.mmf[i])
        dn = price_at_mf(S, i, S.acmf[i])
        if trig_dir(S, i) == -1:      # MF rises with the price
            if up == up:
                hi = min(hi, up)
            if dn == dn:
                lo = max(lo, dn)
        else:
            if up == up:
                lo = max(lo, up)
            if dn == dn:
                hi = min(hi, dn)
    return lo * (1 + EPS), hi * (1 - EPS)


@njit(**NJ)
def run_kernel(S, C, K, ts_s, vol, kv, pv, n_ticks, rv_bar, rv_coin, rv_price, rv_vol, hptr, hidx,
               open_order, close_order):
    n = S.qty.shape[0]
    nb = ts_s.shape[0]
    tick_s = C[C_TICK]
    det = C[C_DET] > 0
    evs = [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    evs.pop()
    lots = [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    lots.pop()
    size = 1
    while size < max(n, 1):
        size *= 2
    tl = np.empty(2 * size)
    ts = np.empty(2 * size)
    in_act = np.zeros(n, np.bool_)
    _build(S, tl, ts, size, in_act)
    act = np.empty(n, np.int64)
    nact = 0
    mark = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int64)
    lo_b = np.empty(nb)
    hi_b = np.empty(nb)
    for b in range(nb):
        lo_b[b] = min(min(pv[b, 0], pv[b, 1]), min(pv[b, 2], pv[b, 3]))
        hi_b[b] = max(max(pv[b, 0], pv[b, 1]), max(pv[b, 2], pv[b, 3]))
    prices = np.empty(n_ticks)
    nxt_oc = np.inf
    if open_order.shape[0]:
        nxt_oc = float(S.open_s[open_order[0]])
    if close_order.shape[0]:
        nxt_oc = min(nxt_oc, float(S.close_s[close_order[0]]))
    rvp = 0
    b = 0
    while b < nb:
        if nact == 0:
            while b < nb:
                if rvp < rv_bar.shape[0] and rv_bar[rvp] <= b:
                    break
                if lo_b[b] <= tl[1] * (1 + EPS) or hi_b[b] >= ts[1] * (1 - EPS):
                    break
                if nxt_oc <= ts_s[b] + (n_ticks - 1) * tick_s:
                    break
                b += 1
            if b >= nb:
                break
        if rvp < rv_bar.shape[0] and rv_bar[rvp] <= b:
            rvp, nch = revalue(S, rv_bar, rv_coin, rv_price, rv_vol, hptr, hidx, rvp, b, mark)
            if nch * 4 > n:
                _build(S, tl, ts, size, in_act)
                mark[:] = False
            elif nch:
                for i in range(n):
                    if mark[i]:
                        mark[i] = False
                        if not in_act[i]:
                            _put(S, tl, ts, size, i)
        fill_ticks(kv, pv, b, n_ticks, prices)
        bv = vol[b]
        k = 0
        while k < n_ticks:
            t = ts_s[b] + k * tick_s
            price = prices[k]
            if nxt_oc <= t:
                nbuf, nxt_oc = open_close(S, C, t, price, open_order, close_order, buf)
                removed = False
                for x in range(nbuf):
                    i = buf[x]
                    if S.status[i] == OPEN:
                        _put(S, tl, ts, size, i)
                    else:
                        _drop(tl, ts, size, i)
                        if in_act[i]:
                            in_act[i] = False
                            removed = True
                if removed:
                    m = 0
                    for x in range(nact):
                        if in_act[act[x]]:
                            act[m] = act[x]
                            m += 1
                    nact = m
            # accounts the price reaches leave the trees
            added = False
            while tl[1] * (1 + EPS) >= price:
                i = _arg_max(tl, size)
                _upd_max(tl, size, i, -np.inf)
                if not in_act[i]:
                    in_act[i] = True
                    act[nact] = i
                    nact += 1
                    added = True
            while ts[1] * (1 - EPS) <= price:
                i = _arg_min(ts, size)
                _upd_min(ts, size, i, np.inf)
                if not in_act[i]:
                    in_act[i] = True
                    act[nact] = i
                    nact += 1
                    added = True
            if added:
                act[:nact] = np.sort(act[:nact])
            if nact == 0:
                k += 1
                while k < n_ticks:
                    p = prices[k]
                    if p <= tl[1] * (1 + EPS) or p >= ts[1] * (1 - EPS) or nxt_oc <= ts_s[b] + k * tick_s:
                        break
                    k += 1
                continue
            S.I[0] = 0                                   # overflow-changed list
            new, any2 = tick(S, C, K, evs, lots, act, nact, b, t, price, bv, True)
            for x in range(nact):
                in_act[act[x]] = False
            for x in range(new.shape[0]):
                in_act[new[x]] = True
            for x in range(nact):
                i = act[x]
                if not in_act[i]:
                    _put(S, tl, ts, size, i)
            for x in range(S.I[0]):
                i = S.chg[x]
                if not in_act[i]:
                    _put(S, tl, ts, size, i)
            nact = new.shape[0]
            act[:nact] = new
            k += 1
            if not det and nact > 0 and not any2 and k < n_ticks:
                lo_h, hi_h = _quiet_bounds(S, act, nact)
                while k < n_ticks:
                    p = prices[k]
                    if p <= lo_h or p >= hi_h or p <= tl[1] * (1 + EPS) or p >= ts[1] * (1 - EPS):
                        break
                    tk = ts_s[b] + k * tick_s
                    if nxt_oc <= tk or fires(C, K, abs_tick(tk, tick_s)):
                        break
                    k += 1
        S.bar_fund[b] = S.Z[0]
        S.bar_ql[b] = S.Z[15]
        S.bar_qs[b] = S.Z[16]
        b += 1
    return _to_array(evs, 11), _to_array(lots, 8)


@njit(**NJ)
def _to_array(lst, w):
    out = np.empty((len(lst), w))
    for r in range(len(lst)):
        row = lst[r]
        for c in range(w):
            out[r, c] = row[c]
    return out


@njit(**NJ)
def run_oracle(S, C, K, ts_s, vol, kv, pv, n_ticks, rv_bar, rv_coin, rv_price, rv_vol, hptr, hidx,
               open_order, close_order):
    """The naive oracle's loop (used by backtest/reference.py): every bar, every tick, every
    account's MF against its MMF; no trigger prices, no trees, no skipping; overflow over all
    opposing accounts."""
    n = S.qty.shape[0]
    nb = ts_s.shape[0]
    tick_s = C[C_TICK]
    evs = [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    evs.pop()
    lots = [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    lots.pop()
    mark = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int64)
    prices = np.empty(n_ticks)
    sel = np.empty(n, np.int64)
    rvp = 0
    for b in range(nb):
        rvp, _ = revalue(S, rv_bar, rv_coin, rv_price, rv_vol, hptr, hidx, rvp, b, mark)
        mark[:] = False
        fill_ticks(kv, pv, b, n_ticks, prices)
        for k in range(n_ticks):
            t = ts_s[b] + k * tick_s
            price = prices[k]
            open_close(S, C, t, price, open_order, close_order, buf)
            m = 0
            for i in range(n):
                if S.alive[i] and not S.exempt[i] and S.status[i] == OPEN:
                    tav, mf = tav_mf(S, i, price)
                    if mf < S.mmf[i]:
                        sel[m] = i
                        m += 1
            if m:
                S.I[0] = 0
                tick(S, C, K, evs, lots, sel, m, b, t, price, vol[b], False)
        S.bar_fund[b] = S.Z[0]
        S.bar_ql[b] = S.Z[15]
        S.bar_qs[b] = S.Z[16]
    return _to_array(evs, 11), _to_array(lots, 8)
