"""The event-driven FTX tick kernel (MODEL.md 3), compiled with numba.

Every account outside step 1/2 sits in one of two trigger trees (a max-tree of the marks at
which a long-like account's MF reaches MMF, a min-tree for short-like ones: segment trees
over the account index, O(log n) insert/remove/pop). The kernel walks bars; a bar is visited
only when its low/high reaches a tree's root, a collateral price steps, an account opens or
closes in it, or accounts are in step 1/2. In a visited bar the ticks are walked with the
shared path function (backtest.paths.fill_bar_path: linear or the Brownian
bridge, both inside the bar's [L, H]); accounts reached by the price leave the trees and join
the active set, which the shared engine tick (engine.tick) processes; those that leave step
1/2, or whose position changed by overflow, go back with fresh triggers. In random mode
ticks on which nothing can happen (no account in step 2, the market not firing, no threshold
reached, nothing opening) are skipped; the draws are counter-based, so skipping changes
nothing. Cost grows with bars + events, not bars x accounts.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest.execution import feedback_offset
from backtest.paths import fill_bar_path
from backtest.replay.ftx.accounts import (
    C_DECAY,
    C_DET,
    C_FB,
    C_TICK,
    F_ACMF,
    F_ALIVE,
    F_EXEMPT,
    F_MMF,
    F_QTY,
    F_STATUS,
    I_FBN,
    I_SURE,
    NJ,
    OPEN,
    price_at_mf,
    tav_mf,
    trig_dir,
)
from backtest.replay.ftx.collateral import revalue
from backtest.replay.ftx.engine import abs_tick, fires, open_close, step1, step2, tick
from backtest.replay.ftx.events import event_columns, new_sink

EPS = 1e-9      # relative margin: a tick near a threshold is processed, never skipped


@njit(inline="always", **NJ)
def fill_ticks(ts_s, o, h, lw, c, mode, key, pf, b, n, out):
    """Tick prices of bar b from the shared intra-bar path (backtest.paths.fill_bar_path, the
    one Binance's kernel reads too): mode, key (int64) and pf = (near_first_prob, vol_scale,
    time_jitter) from the PathInput."""
    fill_bar_path(o[b], h[b], lw[b], c[b], n, mode, key, ts_s[b], pf[0], out, pf[1], pf[2])


@njit(**NJ)
def moved_ticks(S, C, raw, prices, t0, tick_s, k0, n):
    """Feedback (MODEL.md 5): ticks k0.. of the bar starting at t0 as the triggers see them,
    the path times (1 + the venue's outstanding offset, decayed to each tick's time)."""
    for k in range(k0, n):
        prices[k] = raw[k] * (1.0 + feedback_offset(S.fb, 0, t0 + k * tick_s, C[C_DECAY]))


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


@njit(inline="always", **NJ)
def _key(F, i):
    """(direction, trigger) of account i; direction 0 = in no tree."""
    if F[F_ALIVE, i] == 0 or F[F_EXEMPT, i] != 0 or F[F_QTY, i] <= 0 or F[F_STATUS, i] != OPEN:
        return 0, np.nan
    tr = price_at_mf(F, i, F[F_MMF, i])
    if not (tr > 0):
        return 0, np.nan
    return trig_dir(F, i), tr


@njit(inline="always", **NJ)
def _still_active(F, i, price):
    """(account i stays in the active set: a position with MF below MMF, its MF below ACMF:
    step 2 may take it) at `price`."""
    if F[F_QTY, i] > 0:
        tav, mf = tav_mf(F, i, price)
        return mf < F[F_MMF, i], mf < F[F_ACMF, i]
    return False, False


# ---- re-inserted accounts: two max-heaps (longs keyed by trigger, shorts by -trigger) with
# lazy deletion (an entry counts only while its version is the account's and the account is in
# a heap); the big trees hold each account's first trigger only, so the churn of accounts going
# in and out of step 1 stays in the heaps. H[sd, j] = (key, account, version) (one cache line
# per heap level); hn = (entries of heap 0, of heap 1, soft capacity 0, soft capacity 1): a
# heap that reaches its soft capacity drops its stale entries, and its capacity becomes twice
# the live ones (at least HEAP_MIN), so stale entries never outnumber live ones by much.
# The book is passed as its arrays, never as a tuple: numba reference-counts every array of a
# tuple handed to an inlined helper, once per call.
HEAP_MIN = 4096


@njit(inline="always", **NJ)
def _hsift_down(H, sd, j, n):
    key, a, v = H[sd, j, 0], H[sd, j, 1], H[sd, j, 2]
    while True:
        c = 2 * j + 1
        if c >= n:
            break
        if c + 1 < n and H[sd, c + 1, 0] > H[sd, c, 0]:
            c += 1
        if H[sd, c, 0] <= key:
            break
        H[sd, j, 0], H[sd, j, 1], H[sd, j, 2] = H[sd, c, 0], H[sd, c, 1], H[sd, c, 2]
        j = c
    H[sd, j, 0], H[sd, j, 1], H[sd, j, 2] = key, a, v


@njit(inline="always", **NJ)
def _hpop(H, hn, sd):
    n = hn[sd] - 1
    hn[sd] = n
    if n > 0:
        H[sd, 0, 0], H[sd, 0, 1], H[sd, 0, 2] = H[sd, n, 0], H[sd, n, 1], H[sd, n, 2]
        _hsift_down(H, sd, 0, n)


@njit(inline="always", **NJ)
def _stale(H, sd, j, ver, where):
    x = np.int64(H[sd, j, 1])
    return H[sd, j, 2] != ver[x] or where[x] != 1


@njit(**NJ)
def _hcompact(H, hn, ver, where, sd):
    """Drop heap sd's stale entries, re-heapify, set its soft capacity."""
    m = 0
    for j in range(hn[sd]):
        if not _stale(H, sd, j, ver, where):
            H[sd, m, 0], H[sd, m, 1], H[sd, m, 2] = H[sd, j, 0], H[sd, j, 1], H[sd, j, 2]
            m += 1
    hn[sd] = m
    for j in range(m // 2 - 1, -1, -1):
        _hsift_down(H, sd, j, m)
    hn[2 + sd] = min(H.shape[1], max(2 * m, HEAP_MIN))


@njit(inline="always", **NJ)
def _hpush(H, hn, ver, where, sd, key, a, v):
    if hn[sd] >= hn[2 + sd]:
        _hcompact(H, hn, ver, where, sd)
    j = hn[sd]
    hn[sd] = j + 1
    while j > 0:
        p = (j - 1) // 2
        if H[sd, p, 0] >= key:
            break
        H[sd, j, 0], H[sd, j, 1], H[sd, j, 2] = H[sd, p, 0], H[sd, p, 1], H[sd, p, 2]
        j = p
    H[sd, j, 0], H[sd, j, 1], H[sd, j, 2] = key, float(a), float(v)


@njit(inline="always", **NJ)
def _ltop(tl, H, hn, ver, where):
    """Highest live long-like trigger (-inf if none); stale heap tops are discarded."""
    while hn[0] > 0 and _stale(H, 0, 0, ver, where):
        _hpop(H, hn, 0)
    v = tl[1]
    if hn[0] > 0 and H[0, 0, 0] > v:
        v = H[0, 0, 0]
    return v


@njit(inline="always", **NJ)
def _stop(ts, H, hn, ver, where):
    """Lowest live short-like trigger (inf if none)."""
    while hn[1] > 0 and _stale(H, 1, 0, ver, where):
        _hpop(H, hn, 1)
    v = ts[1]
    if hn[1] > 0 and -H[1, 0, 0] < v:
        v = -H[1, 0, 0]
    return v


@njit(**NJ)
def _take(tl, ts, where, ver, H, hn, price, in_act, newb, nn):
    """Accounts whose trigger the price reaches leave the book for the active set."""
    size = tl.shape[0] // 2
    while _ltop(tl, H, hn, ver, where) * (1 + EPS) >= price:
        if hn[0] > 0 and H[0, 0, 0] > tl[1]:
            i = np.int64(H[0, 0, 1])
            _hpop(H, hn, 0)
        else:
            i = _arg_max(tl, size)
            _upd_max(tl, size, i, -np.inf)
        where[i] = 2
        if not in_act[i]:
            in_act[i] = True
            newb[nn] = i
            nn += 1
    while _stop(ts, H, hn, ver, where) * (1 - EPS) <= price:
        if hn[1] > 0 and -H[1, 0, 0] < ts[1]:
            i = np.int64(H[1, 0, 1])
            _hpop(H, hn, 1)
        else:
            i = _arg_min(ts, size)
            _upd_min(ts, size, i, np.inf)
        where[i] = 2
        if not in_act[i]:
            in_act[i] = True
            newb[nn] = i
            nn += 1
    return nn


@njit(inline="always", **NJ)
def _put(F, tl, ts, where, ver, H, hn, i):
    """(Re-)insert account i with a fresh trigger (or nowhere if it has none)."""
    _off_trees(tl, ts, where, i)
    ver[i] += 1
    d, tr = _key(F, i)
    if d == -1:
        where[i] = 1
        _hpush(H, hn, ver, where, 0, tr, i, ver[i])
    elif d == 1:
        where[i] = 1
        _hpush(H, hn, ver, where, 1, -tr, i, ver[i])
    else:
        where[i] = 2


@njit(inline="always", **NJ)
def _off_trees(tl, ts, where, i):
    """Keep the big trees exact (their roots are read without checks): clear i's leaf."""
    if where[i] == 0:
        size = tl.shape[0] // 2
        _upd_max(tl, size, i, -np.inf)
        _upd_min(ts, size, i, np.inf)


@njit(inline="always", **NJ)
def _drop(tl, ts, where, ver, i):
    _off_trees(tl, ts, where, i)
    ver[i] += 1
    where[i] = 2


@njit(**NJ)
def _build(F, tl, ts, where, hn, in_act):
    """Every account outside the active set into the big trees (heaps emptied)."""
    n = F.shape[1]
    size = tl.shape[0] // 2
    tl[:] = -np.inf
    ts[:] = np.inf
    hn[0] = hn[1] = 0
    for i in range(n):
        where[i] = 2
        if in_act[i]:
            continue
        d, tr = _key(F, i)
        if d == -1:
            tl[size + i] = tr
            where[i] = 0
        elif d == 1:
            ts[size + i] = tr
            where[i] = 0
    for p in range(size - 1, 0, -1):
        tl[p] = max(tl[2 * p], tl[2 * p + 1])
        ts[p] = min(ts[2 * p], ts[2 * p + 1])


@njit(**NJ)
def _rekey(F, tl, ts, where, ver, in_act, mark, chl, nch):
    """The accounts chl[:nch], whose collateral was revalued (their triggers moved), back into
    the big trees with fresh triggers (any heap entry of theirs goes stale), as _build would
    put them, without recomputing every other account's: the trees' inner nodes are refreshed
    once bottom-up when many leaves changed, else leaf by leaf. Clears their marks."""
    size = tl.shape[0] // 2
    bulk = nch * 64 > size              # a leaf update walks ~log2(size) levels at random
    for y in range(nch):
        i = chl[y]
        mark[i] = False
        if in_act[i]:
            continue
        ver[i] += 1
        d, tr = _key(F, i)
        lv = tr if d == -1 else -np.inf          # i's new leaves
        sv = tr if d == 1 else np.inf
        where[i] = 0 if d != 0 else 2
        if bulk:
            tl[size + i] = lv
            ts[size + i] = sv
        else:
            if tl[size + i] != lv:
                _upd_max(tl, size, i, lv)
            if ts[size + i] != sv:
                _upd_min(ts, size, i, sv)
    if bulk:
        for p in range(size - 1, 0, -1):
            tl[p] = max(tl[2 * p], tl[2 * p + 1])
            ts[p] = min(ts[2 * p], ts[2 * p + 1])


@njit(inline="always", **NJ)
def _cache(F, act, x, a_up, a_dn, a_dir):
    """Per active slot: the marks at which the account recovers above MMF / falls below ACMF."""
    i = act[x]
    a_up[x] = price_at_mf(F, i, F[F_MMF, i])
    a_dn[x] = price_at_mf(F, i, F[F_ACMF, i])
    a_dir[x] = trig_dir(F, i)


@njit(**NJ)
def _quiet_bounds(a_up, a_dn, a_dir, nact):
    """Prices at or beyond which an active (step-1) account may change state (from the slot
    caches: a sequential scan, no account arrays touched)."""
    lo, hi = -np.inf, np.inf
    for x in range(nact):
        up, dn = a_up[x], a_dn[x]
        if a_dir[x] == -1:      # MF rises with the price
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


@njit(inline="always", **NJ)
def _bound(a_up, a_dn, a_dir, x, qb):
    """Fold slot x's cached thresholds into the raw quiet bounds qb = [lo, hi] (as _quiet_bounds);
    returns False when a threshold is nan (the slot is never 'sure')."""
    up, dn = a_up[x], a_dn[x]
    if a_dir[x] == -1:
        if up == up:
            qb[1] = min(qb[1], up)
        if dn == dn:
            qb[0] = max(qb[0], dn)
    else:
        if up == up:
            qb[0] = max(qb[0], up)
        if dn == dn:
            qb[1] = min(qb[1], dn)
    return up == up and dn == dn


@njit(**NJ)
def _sure_tick(S, C, K, evs, lots, act, nact, x0, a_up, a_dn, a_dir, a_ok, bar, t, price, bv, bs, in_act, F, tl, ts,
               where, ver, H, hn, qb):
    """_fast_tick when every slot with valid cached thresholds (a_ok) is known to be in step 1
    at this price (the raw quiet bounds qb are exact over them, none nan, and the price is
    strictly inside): only the new slots (x0.., a_ok False, just taken from the trees: every
    older slot has valid thresholds, as each tick leaves them valid) are evaluated, and if one
    of them is not in step 1 nothing is done (returns done=False: the caller runs _fast_tick).
    Otherwise there is no step 2, s1 is the active set itself, and after the tick only the new
    and the filled accounts are evaluated. Keeps qb exact (recomputed when a filled slot was
    binding or one leaves). Returns (new nact, any account in step 2, qb still valid, done)."""
    nnew = 0
    for x in range(x0, nact):
        if not a_ok[x]:
            i = act[x]
            tav, mf = tav_mf(F, i, price)
            if not (mf < F[F_MMF, i] and mf >= F[F_ACMF, i]):
                return nact, False, False, False
            nnew += 1
    any2 = False
    valid = True
    j = abs_tick(t, C[C_TICK])
    fired = fires(C, K, j)
    if not fired and nnew == 0:
        return nact, any2, valid, True
    if fired:
        qs = step1(S, C, K, evs, act, nact, bar, t, j, price, bv, bs)
    else:
        qs = np.zeros(0)
    rebound = False
    gone = 0
    for x in range(0 if fired else x0, nact):      # unfired: only the new slots can change
        new = not a_ok[x]
        if not new and not (fired and qs[x] > 0):
            continue
        i = act[x]
        if not new:
            up, dn = a_up[x], a_dn[x]
            if up == qb[0] or up == qb[1] or dn == qb[0] or dn == qb[1]:
                rebound = True
        keep, below2 = _still_active(F, i, price)
        any2 = any2 or below2
        if keep:
            _cache(F, act, x, a_up, a_dn, a_dir)
            a_ok[x] = True
            valid = _bound(a_up, a_dn, a_dir, x, qb) and valid
        else:
            in_act[i] = False
            _put(F, tl, ts, where, ver, H, hn, i)
            gone += 1
    if gone or rebound:
        qb[0], qb[1] = -np.inf, np.inf
        valid = True
        m = 0
        for x in range(nact):
            i = act[x]
            if not in_act[i]:
                continue
            if m != x:
                act[m] = i
                a_up[m] = a_up[x]
                a_dn[m] = a_dn[x]
                a_dir[m] = a_dir[x]
                a_ok[m] = a_ok[x]
            valid = _bound(a_up, a_dn, a_dir, m, qb) and valid
            m += 1
        nact = m
    return nact, any2, valid, True


@njit(**NJ)
def _fast_tick(S, C, K, evs, lots, act, nact, a_up, a_dn, a_dir, a_ok, bar, t, price, bv, bs, in_act, dirty,
               F, tl, ts, where, ver, H, hn, qb):
    """engine.tick over the active slots, touching the account arrays only where something can
    change: a slot whose cached thresholds put this price inside step 1 (with a margin) is in
    step 1 without evaluating its MF, and after the tick only new, filled, taken-over or
    overflow-hit accounts are evaluated again. Same results as engine.tick. Accounts that
    leave step 1/2 (and overflow-hit ones outside it) go back to the trees. Returns (new
    nact, any account in step 2, whether the raw quiet bounds written to qb cover every slot
    with valid non-nan thresholds)."""
    ints, chg = S.I, S.chg
    j = abs_tick(t, C[C_TICK])
    fired = fires(C, K, j)              # (a pure function of the tick: asked before step 2)
    s1 = np.empty(nact if fired else 0, np.int64)
    p1 = np.empty(nact if fired else 0, np.int64)
    s2 = np.empty(nact, np.int64)
    mf2 = np.empty(nact)
    ac2 = np.empty(nact)
    st = np.empty(nact, np.int8)        # 0 none, 1 step 1, 2 step 2, 3 sure step 1 (not evaluated), 4 filled
    n1 = np.int64(0)
    n2 = np.int64(0)
    for x in range(nact):
        i = act[x]
        cx = 0
        if a_ok[x]:
            up, dn = a_up[x], a_dn[x]
            if a_dir[x] == -1:
                if dn * (1 + EPS) < price < up * (1 - EPS):
                    cx = 3
            elif up * (1 + EPS) < price < dn * (1 - EPS):
                cx = 3
        if cx == 0:
            tav, mf = tav_mf(F, i, price)
            if mf < F[F_MMF, i]:
                if mf >= F[F_ACMF, i]:
                    cx = 1
                else:
                    cx = 2
                    s2[n2] = i
                    mf2[n2] = mf
                    ac2[n2] = F[F_ACMF, i]
                    n2 += 1
        st[x] = cx
        if fired and (cx == 1 or cx == 3):
            s1[n1] = i
            p1[n1] = x
            n1 += 1
    if n2:
        step2(S, C, evs, lots, s2, mf2, ac2, n2, bar, t, price, bv, bs, True)
        for y in range(ints[0]):
            dirty[chg[y]] = True
    anyd = ints[0] > 0                  # overflow-hit accounts this tick (dirty)
    if n1:
        qs = step1(S, C, K, evs, s1, n1, bar, t, j, price, bv, bs)
        for y in range(n1):
            if qs[y] > 0:
                st[p1[y]] = 4
    any2 = False
    m = 0
    qb[0], qb[1] = -np.inf, np.inf
    valid = True
    for x in range(nact):
        i = act[x]
        if st[x] == 3 and not (anyd and dirty[i]):      # unchanged, in step 1: thresholds kept
            if m != x:
                act[m] = i
                a_up[m] = a_up[x]
                a_dn[m] = a_dn[x]
                a_dir[m] = a_dir[x]
                a_ok[m] = True
            valid = _bound(a_up, a_dn, a_dir, m, qb) and valid
            m += 1
            continue
        keep, below2 = _still_active(F, i, price)
        any2 = any2 or below2
        if keep:
            act[m] = i
            _cache(F, act, m, a_up, a_dn, a_dir)
            a_ok[m] = True
            valid = _bound(a_up, a_dn, a_dir, m, qb) and valid
            m += 1
        else:
            in_act[i] = False
            _put(F, tl, ts, where, ver, H, hn, i)
    for y in range(ints[0]):
        i = chg[y]
        dirty[i] = False
        if not in_act[i]:
            _put(F, tl, ts, where, ver, H, hn, i)
    return m, any2, valid


@njit(**NJ)
def run_kernel(S, C, K, ts_s, vol, sig, o, h, lw, c, mode, key, pf, n_ticks, rv_bar, rv_coin, rv_price, rv_vol, hptr,
               hidx, open_order, close_order):
    """sig: the sigma each bar's fills pay (execution.bar_sigmas). With feedback on (C_FB) the
    ticks are the path moved by the step-1 flow's outstanding impact (moved_ticks)."""
    F = S.F
    n = F.shape[1]
    fb_on = C[C_FB] > 0
    nb = ts_s.shape[0]
    tick_s = C[C_TICK]
    det = C[C_DET] > 0
    evs = new_sink(S.I)
    lots = [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    lots.pop()
    size = 1
    while size < max(n, 1):
        size *= 2
    cap = 2 * n + 64
    # the book: trees, where each account is (0 tree, 1 heap, 2 neither), versions, heaps
    tl = np.empty(2 * size)
    ts = np.empty(2 * size)
    where = np.full(n, 2, np.int8)
    ver = np.zeros(n, np.int64)
    H = np.empty((2, cap, 3))
    hn = np.array([0, 0, min(cap, HEAP_MIN), min(cap, HEAP_MIN)], np.int64)
    in_act = np.zeros(n, np.bool_)
    _build(F, tl, ts, where, hn, in_act)
    act = np.empty(n, np.int64)
    a_up = np.empty(n)
    a_dn = np.empty(n)
    a_dir = np.empty(n, np.int64)
    nact = 0
    a_ok = np.zeros(n, np.bool_)      # a_up/a_dn/a_dir hold the slot's thresholds
    newb = np.empty(n, np.int64)
    dirty = np.zeros(n, np.bool_)
    mark = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int64)
    lo_b = np.empty(nb)
    hi_b = np.empty(nb)
    for b in range(nb):
        lo_b[b] = min(lw[b], min(o[b], c[b]))     # every path mode stays in [L, H] (O, C widen it)
        hi_b[b] = max(h[b], max(o[b], c[b]))
    prices = np.empty(n_ticks)
    raw = np.empty(n_ticks)
    qb = np.array([-np.inf, np.inf])   # raw quiet bounds of the active slots (valid while qv)
    qv = False
    nxt_oc = np.inf
    if open_order.shape[0]:
        nxt_oc = float(S.open_s[open_order[0]])
    if close_order.shape[0]:
        nxt_oc = min(nxt_oc, float(S.close_s[close_order[0]]))
    rvp = np.int64(0)
    b = 0
    while b < nb:
        if nact == 0:
            lt_top, st_top = _ltop(tl, H, hn, ver, where), _stop(ts, H, hn, ver, where)
            while b < nb:
                if rvp < rv_bar.shape[0] and rv_bar[rvp] <= b:
                    break
                if fb_on:
                    # the offset only shrinks until the next flow: bounds of the moved bar
                    off = feedback_offset(S.fb, 0, float(ts_s[b]), C[C_DECAY])
                    if (lo_b[b] * (1.0 + min(off, 0.0)) <= lt_top * (1 + EPS) or
                            hi_b[b] * (1.0 + max(off, 0.0)) >= st_top * (1 - EPS)):
                        break
                elif lo_b[b] <= lt_top * (1 + EPS) or hi_b[b] >= st_top * (1 - EPS):
                    break
                if nxt_oc <= ts_s[b] + (n_ticks - 1) * tick_s:
                    break
                b += 1
            if b >= nb:
                break
        if rvp < rv_bar.shape[0] and rv_bar[rvp] <= b:
            rvp, nch = revalue(S, rv_bar, rv_coin, rv_price, rv_vol, hptr, hidx, rvp, b, mark, buf)
            if nch:
                a_ok[:nact] = False                      # active accounts' thresholds moved
                qv = False
                _rekey(F, tl, ts, where, ver, in_act, mark, buf, nch)
        if fb_on:
            fill_ticks(ts_s, o, h, lw, c, mode, key, pf, b, n_ticks, raw)
            moved_ticks(S, C, raw, prices, ts_s[b], tick_s, 0, n_ticks)
        else:
            fill_ticks(ts_s, o, h, lw, c, mode, key, pf, b, n_ticks, prices)
        S.I[8] += 1                                  # bars visited
        bv = vol[b]
        bs = sig[b]
        k = 0
        while k < n_ticks:
            t = ts_s[b] + k * tick_s
            price = prices[k]
            if nxt_oc <= t:
                nbuf, nxt_oc = open_close(S, C, t, price, open_order, close_order, buf)
                removed = False
                for x in range(nbuf):
                    i = buf[x]
                    if F[F_STATUS, i] == OPEN:
                        _put(F, tl, ts, where, ver, H, hn, i)
                    else:
                        _drop(tl, ts, where, ver, i)
                        if in_act[i]:
                            in_act[i] = False
                            removed = True
                if removed:
                    qv = False
                    m = 0
                    for x in range(nact):
                        if in_act[act[x]]:
                            act[m] = act[x]
                            a_up[m] = a_up[x]
                            a_dn[m] = a_dn[x]
                            a_dir[m] = a_dir[x]
                            a_ok[m] = a_ok[x]
                            m += 1
                    nact = m
            # accounts the price reaches leave the book
            nn = _take(tl, ts, where, ver, H, hn, price, in_act, newb, 0)
            if nact == 0 and nn == 0:
                k += 1
                lt_top, st_top = _ltop(tl, H, hn, ver, where), _stop(ts, H, hn, ver, where)
                while k < n_ticks:
                    p = prices[k]
                    if p <= lt_top * (1 + EPS) or p >= st_top * (1 - EPS) or nxt_oc <= ts_s[b] + k * tick_s:
                        break
                    k += 1
                continue
            # the new accounts join the end of the active set (its order is not observable: step 1
            # serves by draw with ties and fills by account, step 2 by account)
            for x in range(nn):
                act[nact + x] = newb[x]
                a_ok[nact + x] = False
            nact += nn
            S.I[0] = 0                                   # overflow-changed list
            S.I[6] += 1
            S.I[7] += nact
            nfb = S.I[I_FBN]
            done = False
            if qv and not det and nact > 0 and qb[0] * (1 + EPS) < price < qb[1] * (1 - EPS):
                m2, any2, qv2, done = _sure_tick(S, C, K, evs, lots, act, nact, nact - nn, a_up, a_dn, a_dir, a_ok, b,
                                                 t, price, bv, bs, in_act, F, tl, ts, where, ver, H, hn, qb)
                if done:
                    nact, qv = m2, qv2
                    S.I[I_SURE] += 1
            if not done:
                nact, any2, qv = _fast_tick(S, C, K, evs, lots, act, nact, a_up, a_dn, a_dir, a_ok, b, t, price, bv,
                                            bs, in_act, dirty, F, tl, ts, where, ver, H, hn, qb)
            k += 1
            if fb_on and S.I[I_FBN] != nfb:
                moved_ticks(S, C, raw, prices, ts_s[b], tick_s, k, n_ticks)
            if not det and nact > 0 and not any2 and k < n_ticks:
                if qv:
                    lo_h, hi_h = qb[0] * (1 + EPS), qb[1] * (1 - EPS)
                else:
                    lo_h, hi_h = _quiet_bounds(a_up, a_dn, a_dir, nact)
                lt_top, st_top = _ltop(tl, H, hn, ver, where), _stop(ts, H, hn, ver, where)
                lo_h = max(lo_h, lt_top * (1 + EPS))
                hi_h = min(hi_h, st_top * (1 - EPS))
                while k < n_ticks:
                    p = prices[k]
                    if p <= lo_h or p >= hi_h:
                        break
                    tk = ts_s[b] + k * tick_s
                    if nxt_oc <= tk or fires(C, K, abs_tick(tk, tick_s)):
                        break
                    k += 1
        S.bar_fund[b] = S.Z[0]
        S.bar_ql[b] = S.Z[15]
        S.bar_qs[b] = S.Z[16]
        b += 1
    return event_columns(evs, S.I), _to_array(lots, 8)


@njit(**NJ)
def _to_array(lst, w):
    out = np.empty((len(lst), w))
    for r in range(len(lst)):
        row = lst[r]
        for c in range(w):
            out[r, c] = row[c]
    return out


@njit(**NJ)
def run_oracle(S, C, K, ts_s, vol, sig, o, h, lw, c, mode, key, pf, n_ticks, rv_bar, rv_coin, rv_price, rv_vol, hptr,
               hidx, open_order, close_order):
    """The naive oracle's loop (used by backtest/reference.py): every bar, every tick, every
    account's MF against its MMF; no trigger prices, no trees, no skipping; overflow over all
    opposing accounts."""
    F = S.F
    n = F.shape[1]
    nb = ts_s.shape[0]
    tick_s = C[C_TICK]
    evs = new_sink(S.I)
    lots = [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    lots.pop()
    mark = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int64)
    prices = np.empty(n_ticks)
    raw = np.empty(n_ticks)
    sel = np.empty(n, np.int64)
    rvp = np.int64(0)
    for b in range(nb):
        rvp, _ = revalue(S, rv_bar, rv_coin, rv_price, rv_vol, hptr, hidx, rvp, b, mark, sel)
        mark[:] = False
        fill_ticks(ts_s, o, h, lw, c, mode, key, pf, b, n_ticks, raw)
        fb_on = C[C_FB] > 0
        for k in range(n_ticks):
            prices[k] = raw[k] * (1.0 + feedback_offset(S.fb, 0, ts_s[b] + k * tick_s, C[C_DECAY])) if fb_on else raw[k]
        for k in range(n_ticks):
            t = ts_s[b] + k * tick_s
            price = prices[k]
            open_close(S, C, t, price, open_order, close_order, buf)
            m = 0
            for i in range(n):
                if F[F_ALIVE, i] != 0 and F[F_EXEMPT, i] == 0 and F[F_STATUS, i] == OPEN:
                    tav, mf = tav_mf(F, i, price)
                    if mf < F[F_MMF, i]:
                        sel[m] = i
                        m += 1
            if m:
                S.I[0] = 0
                nfb = S.I[I_FBN]
                tick(S, C, K, evs, lots, sel, m, b, t, price, vol[b], sig[b], False)
                if S.I[I_FBN] != nfb:      # the flow moved the path of the later ticks
                    for k2 in range(k + 1, n_ticks):
                        prices[k2] = raw[k2] * (1.0 + feedback_offset(S.fb, 0, ts_s[b] + k2 * tick_s, C[C_DECAY]))
        S.bar_fund[b] = S.Z[0]
        S.bar_ql[b] = S.Z[15]
        S.bar_qs[b] = S.Z[16]
    return event_columns(evs, S.I), _to_array(lots, 8)
