"""One engine tick of the FTX state machine over a set of accounts (MODEL.md 3.3-3.5), compiled.

Shared by the event-driven kernel (loop.py) and the naive oracle (backtest/reference.py):
step 2 (takeover at the zero price, BLP price, fund share, capacity, overflow) then step 1
(order-book liquidation under the market's per-tick budget). Step-1 draws are counter-based
(backtest/rng.py), keyed by (seed, market, absolute tick, account): whoever asks, in whatever
order, gets the same numbers.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest import rng as crng
from backtest.execution import FLOW_LIQUIDATION, feedback_add, metaorder_slippage
from backtest.replay.ftx.accounts import (
    C_BASE,
    C_BM,
    C_BUCKET,
    C_BUDGET,
    C_DECAY,
    C_DET,
    C_ETA,
    C_FB,
    C_FEE,
    C_FUND0,
    C_JHI,
    C_JLO,
    C_MAXSLIP,
    C_MO,
    C_NEGSHARE,
    C_OHI,
    C_OLO,
    C_PERM,
    C_PROB,
    C_S1FRAC,
    C_S1MIN,
    C_S2MIN,
    C_TICK,
    C_ZPW,
    CLOSED,
    F_ACMF,
    F_ALIVE,
    F_ENTRY,
    F_MMF,
    F_QTY,
    F_SIDE,
    F_STATUS,
    F_USD,
    F_WT,
    I_FBN,
    I_FIRED,
    I_PC,
    I_PO,
    I_S1SUM,
    K_MARKET,
    K_SEED,
    M_OVERFLOW,
    M_STEP1,
    M_STEP2,
    NJ,
    OPEN,
    Z_BELOW_S,
    Z_BELOW_SINCE,
    Z_FUND,
    Z_FUND_MIN,
    Z_INCOME,
    Z_PAYOUT,
    Z_POOL_OUT_L,
    Z_TAKEOVER,
    Z_USED_HOUR,
    Z_USED_MIN,
    close_out,
    requalify,
    set_qty,
    tav_mf,
    uniform_hashed,
)
from backtest.replay.ftx.blp import capacity_room, overflow
from backtest.replay.ftx.collateral import sqrt_impact, transfer
from backtest.replay.ftx.events import ev_add


@njit(inline="always", **NJ)
def abs_tick(t_s, tick_s):
    return np.int64(np.floor(t_s / tick_s + 0.5))


@njit(inline="always", **NJ)
def fires(C, K, j):
    """Does the market's step-1 engine fire at absolute tick j? Deterministic mode: always."""
    if C[C_DET] > 0:
        return True
    key = crng.make_key(K[K_SEED], crng.STEP1_FIRE, K[K_MARKET], np.int64(0))
    return crng.uniform(key, j) < C[C_PROB]


@njit(**NJ)
def _fund(S, C, delta, gross_in, gross_out, t_s):
    """The fund receives / pays one tick's net `delta` (gross parts kept apart)."""
    f1 = S.Z[Z_FUND] + delta
    S.Z[Z_FUND] = f1
    S.Z[Z_INCOME] += gross_in
    S.Z[Z_PAYOUT] += gross_out
    S.Z[Z_FUND_MIN] = min(S.Z[Z_FUND_MIN], f1)
    start = C[C_FUND0]
    if f1 < start and S.Z[Z_BELOW_SINCE] < 0:
        S.Z[Z_BELOW_SINCE] = t_s
    elif f1 >= start and S.Z[Z_BELOW_SINCE] >= 0:
        S.Z[Z_BELOW_S] += t_s - S.Z[Z_BELOW_SINCE]
        S.Z[Z_BELOW_SINCE] = -1.0


@njit(inline="always", **NJ)
def _s1_take(F, C, i, jit, price, budget, cum, scale):
    """One account's step-1 order against what is left of the tick's budget: (qty, new cum)."""
    pos = abs(F[F_QTY, i])
    base = max(C[C_S1FRAC] * pos, min(C[C_S1MIN] * F[F_WT, i] / price, pos))    # the minimum per real account
    want = min(base * jit, pos)
    wu = want * price
    cum += wu
    got = min(max(budget - (cum - wu), 0.0), wu)
    return (want * got / wu if wu > 0 else 0.0) * scale, cum


@njit(**NJ)
def _ties_by_index(bu, order, cand, s1):
    """Within runs of equal draws (order sorts bu), order by account index s1[cand[.]]: the
    serving order is (U, index) whatever the order of s1."""
    m = order.shape[0]
    a = 0
    while a < m:
        e = a + 1
        while e < m and bu[order[e]] == bu[order[a]]:
            e += 1
        if e - a > 1:
            idx = np.empty(e - a, np.int64)
            for y in range(e - a):
                idx[y] = s1[cand[order[a + y]]]
            o2 = np.argsort(idx, kind="mergesort")
            run = order[a:e].copy()
            for y in range(e - a):
                order[a + y] = run[o2[y]]
        a = e


@njit(**NJ)
def step1(S, C, K, evs, s1, n1, bar, t_s, j, price, bar_vol, bar_sig):
    """Step-1 orders of the accounts s1[:n1] (any order) sharing the market's budget for the
    tick, served in random order (counter-based U per account; deterministic: index order,
    sizes times the firing probability). Once the budget is spent every later order is zero,
    so accounts are taken in order by buckets of U and the walk stops there (the same orders as
    sorting all of them). Returns the filled quantities (aligned with s1)."""
    det = C[C_DET] > 0
    qs = np.zeros(n1)
    budget = C[C_BUDGET]
    cum = 0.0
    F, aid, hid, Z = S.F, S.aid, S.hid, S.Z        # locals: no reference counting per use
    S.I[I_FIRED] += 1
    S.I[I_S1SUM] += n1
    if det:
        aids = np.empty(n1, np.int64)
        for x in range(n1):
            aids[x] = aid[s1[x]]
        for x in np.argsort(aids):              # (unique keys: any sort gives this order)
            q, cum = _s1_take(F, C, s1[x], 1.0, price, budget, cum, C[C_PROB])
            qs[x] = q
            if cum >= budget:
                break
    else:
        ko = crng.make_key(K[K_SEED], crng.STEP1_ORDER, K[K_MARKET], j)
        kj = crng.make_key(K[K_SEED], crng.STEP1_JITTER, K[K_MARKET], j)
        # served in ascending U (ties: ascending account index) until the budget is spent. Once it is spent
        # every later order is zero, so only the accounts under a threshold of U are sorted and
        # walked, the threshold raised (x4) while budget is left: the same orders as sorting all.
        u = np.empty(n1)
        for x in range(n1):
            u[x] = uniform_hashed(ko, hid[s1[x]])
        cand = np.empty(n1, np.int64)
        t_lo = 0.0
        t_hi = min(1.0, 64.0 / n1)
        while True:
            m = 0
            if t_hi >= 1.0:
                for x in range(n1):
                    if u[x] >= t_lo:
                        cand[m] = x
                        m += 1
            else:
                for x in range(n1):
                    if t_lo <= u[x] < t_hi:
                        cand[m] = x
                        m += 1
            done = False
            if m:
                bu = np.empty(m)
                for y in range(m):
                    bu[y] = u[cand[y]]
                order = np.argsort(bu)             # (equal draws are ordered next)
                _ties_by_index(bu, order, cand, s1)
                for o in order:
                    x = cand[o]
                    i = s1[x]
                    jit = C[C_JLO] + (C[C_JHI] - C[C_JLO]) * uniform_hashed(kj, hid[i])
                    q, cum = _s1_take(F, C, i, jit, price, budget, cum, 1.0)
                    qs[x] = q
                    if cum >= budget:
                        done = True
                        break
            if done or t_hi >= 1.0:
                break
            t_lo = t_hi
            t_hi = min(1.0, 4.0 * t_hi)
    kf = np.uint64(0)
    if not det:
        kf = crng.make_key(K[K_SEED], crng.STEP1_OFFSET, K[K_MARKET], j)
    mid = (C[C_OLO] + C[C_OHI]) / 2
    mo = C[C_MO] > 0
    nf = 0
    for x in range(n1):
        if qs[x] > 0:
            nf += 1
    fill_order = np.empty(nf, np.int64)
    nf = 0
    for x in range(n1):
        if qs[x] > 0:
            fill_order[nf] = x
            nf += 1
    if nf > 1:                  # fills in account order (v2: the tick's metaorder by aid)
        aid1 = np.empty(nf, np.int64)
        for y in range(nf):
            aid1[y] = aid[s1[fill_order[y]]] if mo else s1[fill_order[y]]
        fill_order = fill_order[np.argsort(aid1)]              # (unique keys)
    mo_start, mo_cum, fb = S.mo_start, S.mo_cum, S.fb
    for xx in range(nf):
        x = fill_order[xx]
        q = qs[x]
        i = s1[x]
        s = F[F_SIDE, i]
        if mo:
            slip = metaorder_slippage(mo_start, mo_cum, FLOW_LIQUIDATION, -s, t_s, q * price, bar_vol, bar_sig,
                                      C[C_ETA], C[C_BM], C[C_BUCKET], C[C_MAXSLIP])
        else:
            slip = sqrt_impact(q * price, bar_vol, bar_sig, C[C_ETA], C[C_BM], C[C_MAXSLIP])
        if C[C_FB] > 0:
            feedback_add(fb, 0, t_s, -s, q * price, bar_vol, bar_sig, C[C_ETA], C[C_BM], C[C_BASE], C[C_PERM],
                         C[C_BUCKET], C[C_DECAY], C[C_MAXSLIP])
            S.I[I_FBN] += 1
        off = (mid if det else C[C_OLO] + (C[C_OHI] - C[C_OLO]) * uniform_hashed(kf, hid[i])) * 1e-4
        fill = max(price * (1.0 - s * (off + slip)), 0.0)
        fee = q * fill * C[C_FEE]
        user_pnl = s * q * (fill - price) - fee
        F[F_USD, i] += s * q * (fill - F[F_ENTRY, i]) - fee
        set_qty(F, Z, i, F[F_QTY, i] - q)
        close_out(F, Z, i)
        if F[F_QTY, i] > 0:
            requalify(F, C, i)
        ev_add(evs, S.I, t_s, float(aid[i]), float(s), float(M_STEP1), q, fill, price, q * fill, -user_pnl, 0.0,
               float(bar))
    return qs


@njit(**NJ)
def step2(S, C, evs, lots, s2, mf2, ac2, n2, bar, t_s, price, bar_vol, bar_sig, use_pool):
    F, aid, Z = S.F, S.aid, S.Z
    aids = np.empty(n2, np.int64)
    for x in range(n2):
        aids[x] = aid[s2[x]]
    o = np.argsort(aids)                             # BLP capacity is served in account order (unique)
    s2 = s2[:n2][o]
    mf2 = mf2[:n2][o]
    ac2 = ac2[:n2][o]
    a = np.empty(n2, np.int64)
    cq = np.empty(n2)
    zp = np.empty(n2)
    blp = np.empty(n2)
    cf = np.empty(n2)
    ul = np.empty(n2)
    fd = np.empty(n2)
    m = 0
    for x in range(n2):
        i = s2[x]
        q = F[F_QTY, i]
        s = F[F_SIDE, i]
        mf, ac = mf2[x], ac2[x]
        frac = 1.0 if mf < 0 else (1.0 - mf / ac if mf < ac else 0.0)
        if frac <= 0:
            continue
        close = min(max(frac * q, min(C[C_S2MIN] * F[F_WT, i] / price, q)), q)   # the minimum per real account
        if close <= 0:
            continue
        z = price * (1.0 - s * mf)
        w = C[C_ZPW] if mf >= 0 else C[C_NEGSHARE]
        bp = price + w * (z - price)
        a[m], cq[m], zp[m], blp[m] = i, close, z, bp
        cf[m] = close / q if q > 0 else 0.0
        ul[m] = s * close * (price - z)
        fd[m] = s * close * (bp - z)
        m += 1
    if m == 0:
        return
    hair = np.zeros(m)
    cost = np.zeros(m)
    fsum = fin = fout = 0.0
    for x in range(m):
        i = a[x]
        F[F_USD, i] += F[F_SIDE, i] * cq[x] * (zp[x] - F[F_ENTRY, i])
        hx, cx = transfer(S, C, i, cf[x], price, bar_vol, bar_sig, bar, t_s)
        hair[x] = hx
        cost[x] = cx
        set_qty(F, Z, i, F[F_QTY, i] - cq[x])
        fsum += fd[x]
        if fd[x] > 0:
            fin += fd[x]
        else:
            fout -= fd[x]
    _fund(S, C, fsum, fin, fout, t_s)
    # BLP capacity, served in account order; the rest overflows
    room = capacity_room(S, C, t_s)
    cum = 0.0
    used = 0.0
    tq = np.empty(m)
    for x in range(m):
        nt = cq[x] * price
        cum += nt
        taken = nt if cum <= room else max(room - (cum - nt), 0.0)    # (exact when all fits)
        used += taken
        tq[x] = cq[x] * (taken / nt) if nt > 0 else 0.0
    Z[Z_USED_MIN] += used
    Z[Z_USED_HOUR] += used
    for x in range(m):
        i = a[x]
        s = F[F_SIDE, i]
        if tq[x] > 0:
            w = tq[x] / cq[x]
            Z[Z_TAKEOVER] += tq[x] * price
            ev_add(evs, S.I, t_s, float(aid[i]), float(s), float(M_STEP2), tq[x], blp[x], price, tq[x] * price,
                   ul[x] * w, fd[x] * w, float(bar))
        if tq[x] > 0 or hair[x] != 0 or cost[x] != 0:
            lots.append((t_s, float(s), tq[x], blp[x], price, hair[x], cost[x], float(bar)))
    qsum_l = qsum_s = pq_l = pq_s = 0.0
    for x in range(m):
        oq = cq[x] - tq[x]
        if oq > 0:
            i = a[x]
            s = F[F_SIDE, i]
            w = oq / cq[x]
            ev_add(evs, S.I, t_s, float(aid[i]), float(s), float(M_OVERFLOW), oq, blp[x], price, oq * price,
                   ul[x] * w, fd[x] * w, float(bar))
            if s > 0:
                qsum_l += oq
                pq_l += oq * blp[x]
            else:
                qsum_s += oq
                pq_s += oq * blp[x]
    if qsum_l > 0:
        overflow(S, C, np.int64(1), qsum_l, pq_l / qsum_l, price, use_pool)
    if qsum_s > 0:
        overflow(S, C, np.int64(-1), qsum_s, pq_s / qsum_s, price, use_pool)
    for x in range(m):
        i = a[x]
        close_out(F, Z, i)
        if F[F_QTY, i] > 0:
            requalify(F, C, i)


@njit(**NJ)
def tick(S, C, K, evs, lots, sel, nsel, bar, t_s, price, bar_vol, bar_sig, use_pool):
    """Apply the state machine at one tick to sel[:nsel] (ascending). Returns (accounts still
    in step 1/2 after the tick, ascending; whether any of them is in step 2). use_pool: overflow
    looks at a pool of the largest opposing accounts (the oracle: at all of them)."""
    s1 = np.empty(nsel, np.int64)
    s2 = np.empty(nsel, np.int64)
    mf2 = np.empty(nsel)
    ac2 = np.empty(nsel)
    n1 = np.int64(0)
    n2 = np.int64(0)
    F = S.F
    for x in range(nsel):
        i = sel[x]
        tav, mf = tav_mf(F, i, price)
        if mf >= F[F_MMF, i]:
            continue
        if mf >= F[F_ACMF, i]:
            s1[n1] = i
            n1 += 1
        else:
            s2[n2] = i
            mf2[n2] = mf
            ac2[n2] = F[F_ACMF, i]
            n2 += 1
    if n2:
        step2(S, C, evs, lots, s2, mf2, ac2, n2, bar, t_s, price, bar_vol, bar_sig, use_pool)
    if n1:
        j = abs_tick(t_s, C[C_TICK])
        if fires(C, K, j):
            step1(S, C, K, evs, s1, n1, bar, t_s, j, price, bar_vol, bar_sig)
    out = np.empty(nsel, np.int64)
    no = 0
    any2 = False
    for x in range(nsel):
        i = sel[x]
        if F[F_QTY, i] > 0:
            tav, mf = tav_mf(F, i, price)
            if mf < F[F_ACMF, i]:
                any2 = True
            if mf < F[F_MMF, i]:
                out[no] = i
                no += 1
    return out[:no], any2


@njit(**NJ)
def open_close(S, C, t, price, open_order, close_order, buf):
    """Accounts whose open_s / close_s is at or before time t: they enter the book, or close
    voluntarily at the path price (no event). Writes the accounts touched to buf; returns
    their count and the next open/close time (inf if none)."""
    nb = 0
    F, Z = S.F, S.Z
    po, pc = S.I[I_PO], S.I[I_PC]
    while po < open_order.shape[0] and S.open_s[open_order[po]] <= t:
        i = open_order[po]
        po += 1
        if F[F_STATUS, i] != 0:
            continue
        F[F_STATUS, i] = OPEN
        if F[F_QTY, i] > 0:
            F[F_ALIVE, i] = 1.0
            q = F[F_QTY, i]
            F[F_QTY, i] = 0.0
            set_qty(F, Z, i, q)
            slot = 0 if F[F_SIDE, i] > 0 else 1
            Z[Z_POOL_OUT_L + slot] = max(Z[Z_POOL_OUT_L + slot], q)
        buf[nb] = i
        nb += 1
    while pc < close_order.shape[0] and S.close_s[close_order[pc]] <= t:
        i = close_order[pc]
        pc += 1
        if F[F_STATUS, i] != OPEN:
            continue
        F[F_STATUS, i] = CLOSED
        if F[F_ALIVE, i] != 0 and F[F_QTY, i] > 0:
            F[F_USD, i] += F[F_SIDE, i] * F[F_QTY, i] * (price - F[F_ENTRY, i])
            set_qty(F, Z, i, 0.0)
        F[F_ALIVE, i] = 0.0
        buf[nb] = i
        nb += 1
    S.I[I_PO] = po
    S.I[I_PC] = pc
    nxt = np.inf
    if po < open_order.shape[0]:
        nxt = float(S.open_s[open_order[po]])
    if pc < close_order.shape[0]:
        nxt = min(nxt, float(S.close_s[close_order[pc]]))
    return nb, nxt
