"""The FTX kernels' event sink: events go into fixed-size chunks of rows, one row per event
(EV_W floats: t_s, account, side, mechanism, qty_coin, price, mark_price, notional_usd,
user_loss_usd, fund_delta_usd, bar), and come out as typed columns in one pass.

A list of tuples grew by reallocation (copying the whole list each time it moved) and was then
copied twice more (to rows, then to typed columns): at 3 million events a series that was
~10% of the FTX replay, most of it page faults on fresh memory. A chunk is written once, and
`event_columns` reads each row once. The rows used in the last chunk are counted in
S.I[I_EVN] (accounts.py), passed as `ints`."""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest.replay.ftx.accounts import I_EVN, NJ

EV_W = 11
EV_CHUNK = 1 << 15          # rows per chunk (2.9 MB)


@njit(**NJ)
def new_sink(ints):
    """An empty sink (one chunk); resets the row count."""
    ints[I_EVN] = 0
    return [np.empty((EV_CHUNK, EV_W))]


@njit(inline="always", **NJ)
def ev_add(evs, ints, t_s, acc, side, mech, qty, price, mark, notional, user_loss, fund_delta, bar):
    k = ints[I_EVN]
    E = evs[len(evs) - 1]
    if k == EV_CHUNK:
        E = np.empty((EV_CHUNK, EV_W))
        evs.append(E)
        k = 0
    E[k, 0] = t_s
    E[k, 1] = acc
    E[k, 2] = side
    E[k, 3] = mech
    E[k, 4] = qty
    E[k, 5] = price
    E[k, 6] = mark
    E[k, 7] = notional
    E[k, 8] = user_loss
    E[k, 9] = fund_delta
    E[k, 10] = bar
    ints[I_EVN] = k + 1


@njit(**NJ)
def event_order(t, a):
    """Permutation putting events in (time, account) order, stable: the kernel emits them in time
    order, so only each tick's own run is sorted (the recorder then needs no frame sort)."""
    n = t.shape[0]
    out = np.arange(n)
    s = 0
    while s < n:
        e = s + 1
        srt = True
        while e < n and t[e] == t[s]:
            if a[e] < a[e - 1]:
                srt = False
            e += 1
        if not srt:
            o = np.argsort(a[s:e], kind="mergesort")
            for x in range(e - s):
                out[s + x] = s + o[x]
        s = e
    return out


@njit(**NJ)
def event_columns(evs, ints):
    """The sink's events as typed columns in (time, account) order (event_order; left as they are
    if not in time order): a float block (the recorder's FLOAT_COLS x n, C order: one contiguous row per
    column), account and bar int64, side and mechanism int8 (the values are small integers)."""
    nc = len(evs)
    n = (nc - 1) * EV_CHUNK + ints[I_EVN]
    t = np.empty(n)
    a = np.empty(n)
    r = 0
    for ci in range(nc):
        E = evs[ci]
        for k in range(EV_CHUNK if ci < nc - 1 else ints[I_EVN]):
            t[r] = E[k, 0]
            a[r] = E[k, 1]
            r += 1
    srt = True
    for r in range(1, n):
        if t[r] < t[r - 1]:
            srt = False
            break
    o = event_order(t, a) if srt and n > 1 else np.arange(n)
    blk = np.empty((7, n))
    acc = np.empty(n, np.int64)
    side = np.empty(n, np.int8)
    mech = np.empty(n, np.int8)
    bar = np.empty(n, np.int64)
    for r in range(n):
        q = o[r]
        E = evs[q // EV_CHUNK]
        k = q % EV_CHUNK
        blk[0, r] = E[k, 0]
        acc[r] = np.int64(E[k, 1])
        side[r] = np.int8(E[k, 2])
        mech[r] = np.int8(E[k, 3])
        for c in range(6):
            blk[1 + c, r] = E[k, 4 + c]
        bar[r] = np.int64(E[k, 10])
    return blk, acc, side, mech, bar
