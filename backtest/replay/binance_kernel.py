"""The compiled Binance USDⓈ-M replay of one series (MODEL.md 4): numba kernels over structure of arrays.

One call of `replay_kernel` replays one (venue, market) path over all its accounts: the fund
and the ADL queue are shared by the accounts of a series, so nothing here runs in parallel
across accounts (parallelism belongs across independent series, in the caller).

Cost grows with bars + events, not bars x accounts:
- each side's accounts sit in a sorted array keyed by their liquidation price (longs by -LP,
  shorts by LP) walked by a pointer, plus a binary min-heap for accounts (re)entered later
  (opened mid-run, deleveraged, deferred); deletion is lazy (an entry is live while its version
  matches the account's); a funding time rebuilds the sorted arrays and empties the heaps;
- the next bar that can hold an event is found with per-bar and per-block extremes; a bar's
  ticks are generated (`fill_bar_path`) only for bars whose range reaches a trigger, and the
  first crossing is a binary search on the bar's running minimum (maximum);
- accounts that open mid-run are pushed into the heaps at the bar where they open (a stop
  of the bar walk, in time order); an account's voluntary close at close_s is applied
  lazily: it can no longer fire or be deleveraged after its close tick, and its wallet
  realises the path price at that tick at the end;
- a funding time re-prices every live wallet and rebuilds both heaps (O(N log N) per funding
  time: the one place where cost grows with accounts rather than events).

Engine arithmetic is that of backtest/venues/binance.py (liquidation_price,
liquidation_outcome, maintenance_margin, adl_scores, adl_allocate) and execution.sqrt_impact /
fill_price, written per scalar; the oracle (backtest/reference.py) uses the numpy originals, so
the parity tests hold one against the other.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest.replay.inputs import fill_bar_path

# mechanism codes: the index in recorder.MECHS
M_IOC = 3
M_FUND = 4
M_ADL = 5
N_MECH = 6
# event matrix columns
EF_T, EF_QTY, EF_PRICE, EF_MARK, EF_NOTIONAL, EF_USER_LOSS, EF_FUND_DELTA = 0, 1, 2, 3, 4, 5, 6
EI_ACC, EI_SIDE, EI_MECH, EI_BAR = 0, 1, 2, 3


@njit(cache=True)
def liq_price(s, q, ep, wb, caps, mmr, cum, floors):
    """binance.liquidation_price for one isolated position (nan for q <= 0, 0.0 if none fits)."""
    if q <= 0.0:
        return np.nan
    for j in range(caps.shape[0]):
        num = wb + cum[j] - s * q * ep
        den = q * mmr[j] - s * q
        lp = num / den
        notional = q * lp
        if lp > 0 and notional >= floors[j] * (1 - 1e-12) and notional <= caps[j] * (1 + 1e-12):
            return lp
    return 0.0


@njit(cache=True)
def maint_margin(notional, caps, mmr, cum):
    t = np.searchsorted(caps, notional)
    if t > caps.shape[0] - 1:
        t = caps.shape[0] - 1
    return notional * mmr[t] - cum[t]


# ----------------------------------------------------------------------------------------------
# a binary min-heap of (key, account, version) in three arrays, lazy deletion by version
# ----------------------------------------------------------------------------------------------
@njit(cache=True)
def _less(keys, accs, i, j):
    return keys[i] < keys[j] or (keys[i] == keys[j] and accs[i] < accs[j])


@njit(cache=True)
def heap_push(keys, accs, vers, size, key, acc, ver):
    if size == keys.shape[0]:
        cap = max(16, 2 * size)
        k2, a2, v2 = np.empty(cap), np.empty(cap, np.int64), np.empty(cap, np.int64)
        k2[:size], a2[:size], v2[:size] = keys[:size], accs[:size], vers[:size]
        keys, accs, vers = k2, a2, v2
    i = size
    keys[i], accs[i], vers[i] = key, acc, ver
    while i > 0:
        p = (i - 1) // 2
        if _less(keys, accs, i, p):
            keys[i], keys[p] = keys[p], keys[i]
            accs[i], accs[p] = accs[p], accs[i]
            vers[i], vers[p] = vers[p], vers[i]
            i = p
        else:
            break
    return keys, accs, vers, size + 1


@njit(cache=True)
def heap_pop(keys, accs, vers, size):
    """Remove the root; returns the new size."""
    size -= 1
    if size <= 0:
        return 0
    keys[0], accs[0], vers[0] = keys[size], accs[size], vers[size]
    i = 0
    while True:
        lft = 2 * i + 1
        if lft >= size:
            break
        m = lft
        if lft + 1 < size and _less(keys, accs, lft + 1, lft):
            m = lft + 1
        if _less(keys, accs, m, i):
            keys[i], keys[m] = keys[m], keys[i]
            accs[i], accs[m] = accs[m], accs[i]
            vers[i], vers[m] = vers[m], vers[i]
            i = m
        else:
            break
    return size


@njit(cache=True)
def heap_clean_top(keys, accs, vers, size, version, alive):
    """Pop stale entries off the top; returns the new size (the top is then live or the heap empty)."""
    while size > 0 and (vers[0] != version[accs[0]] or not alive[accs[0]]):
        size = heap_pop(keys, accs, vers, size)
    return size


@njit(cache=True)
def _empty_heap():
    return np.empty(16), np.empty(16, np.int64), np.empty(16, np.int64), 0


@njit(cache=True)
def _clean_sorted(accs, vers, ptr, m, version, alive):
    """Advance a sorted book's pointer past stale entries."""
    while ptr < m and (vers[ptr] != version[accs[ptr]] or not alive[accs[ptr]]):
        ptr += 1
    return ptr


@njit(cache=True)
def heap_build(idx, trig, direction, version, n_cap):
    """A heap of accounts idx with triggers trig (only finite, > 0 enter), versions bumped."""
    m = 0
    keys = np.empty(max(n_cap, 16))
    accs = np.empty(max(n_cap, 16), np.int64)
    vers = np.empty(max(n_cap, 16), np.int64)
    for i in range(idx.shape[0]):
        t = trig[i]
        a = idx[i]
        version[a] += 1
        if np.isfinite(t) and t > 0:
            keys[m] = t * direction
            accs[m] = a
            vers[m] = version[a]
            m += 1
    order = np.argsort(keys[:m], kind="mergesort")
    k2, a2, v2 = keys[:m][order], accs[:m][order], vers[:m][order]
    # ties by account: a sorted (key, account) array is a valid heap under _less
    j = 0
    while j < m:
        e = j + 1
        while e < m and k2[e] == k2[j]:
            e += 1
        if e - j > 1:
            sub = np.argsort(a2[j:e], kind="mergesort")
            a2[j:e] = a2[j:e][sub]
            v2[j:e] = v2[j:e][sub]
        j = e
    keys[:m], accs[:m], vers[:m] = k2, a2, v2
    return keys, accs, vers, m


# ----------------------------------------------------------------------------------------------
# helpers of the bar walk
# ----------------------------------------------------------------------------------------------
@njit(cache=True)
def next_bar(start, lo, hi, blo, bhi, block, long_top, short_top):
    """First bar >= start whose low <= long_top or high >= short_top (n_bars if none)."""
    nb = lo.shape[0]
    b = start
    while b < nb:
        if b % block == 0:
            blk = b // block
            if not (blo[blk] <= long_top or bhi[blk] >= short_top):
                b += block
                continue
        if lo[b] <= long_top or hi[b] >= short_top:
            return b
        b += 1
    return nb


@njit(cache=True)
def _grow_events(ef, ei, n_ev):
    if n_ev < ef.shape[0]:
        return ef, ei
    cap = max(64, 2 * ef.shape[0])
    ef2 = np.empty((cap, ef.shape[1]))
    ei2 = np.empty((cap, ei.shape[1]), np.int64)
    ef2[:n_ev] = ef[:n_ev]
    ei2[:n_ev] = ei[:n_ev]
    return ef2, ei2


@njit(cache=True)
def _record(ef, ei, n_ev, t, acc, side, mech, bar, qty, price, mark, notional, user_loss, fund_delta):
    ef, ei = _grow_events(ef, ei, n_ev)
    ef[n_ev, EF_T] = t
    ef[n_ev, EF_QTY] = qty
    ef[n_ev, EF_PRICE] = price
    ef[n_ev, EF_MARK] = mark
    ef[n_ev, EF_NOTIONAL] = notional
    ef[n_ev, EF_USER_LOSS] = user_loss
    ef[n_ev, EF_FUND_DELTA] = fund_delta
    ei[n_ev, EI_ACC] = acc
    ei[n_ev, EI_SIDE] = side
    ei[n_ev, EI_MECH] = mech
    ei[n_ev, EI_BAR] = bar
    return ef, ei, n_ev + 1


@njit(cache=True)
def _first_cross(buf, run, n, kf, kc, trig, direction):
    """First tick k in [kf, kc) where the path is at or beyond trig (-1 if none). run is the
    running minimum (direction -1) or maximum (+1) of buf from tick 0."""
    if kf == 0:
        lo_, hi_ = 0, n           # binary search for the first k with run[k] beyond trig
        while lo_ < hi_:
            mid = (lo_ + hi_) // 2
            if (direction < 0 and run[mid] <= trig) or (direction > 0 and run[mid] >= trig):
                hi_ = mid
            else:
                lo_ = mid + 1
        k = lo_
        if k < n and k < kc:
            return k
        return -1
    for k in range(kf, min(kc, n)):
        if (direction < 0 and buf[k] <= trig) or (direction > 0 and buf[k] >= trig):
            return k
    return -1


# ----------------------------------------------------------------------------------------------
# the kernel
# ----------------------------------------------------------------------------------------------
@njit(cache=True)
def replay_kernel(ts_s, o, h, l, c, vol, n_ticks, tick_s, path_mode, path_key, near_first_prob,
                  sigma_1m, bar_minutes, lo, hi, blo, bhi, block, fund_bar, fund_rate,
                  side, qty, entry, wallet, exempt, g_open, g_close,
                  caps, mmr, cum, floors, eta, max_slip, adl_enabled, fund_start):
    """Replay one series. qty and wallet are updated in place (final state; voluntary closes
    realised). Returns (ef, ei, n_ev, bar_liq, bar_fund, alive, liquidated, fund, fund_min,
    adl_usd, adl_counterparty_usd, adl_log_f, adl_log_i, n_adl)."""
    nb = o.shape[0]
    na = side.shape[0]
    n = n_ticks
    g_total = nb * n
    alive = qty > 0.0
    liquidated = np.zeros(na, np.bool_)
    activated = np.zeros(na, np.bool_)
    version = np.zeros(na, np.int64)
    bar_liq = np.zeros((nb, N_MECH))
    bar_fund = np.full(nb, np.nan)
    ef = np.empty((64, 7))
    ei = np.empty((64, 4), np.int64)
    n_ev = 0
    adl_f = np.empty((16, 1))          # take (coins)
    adl_i = np.empty((16, 3), np.int64)  # bar, side, account
    n_adl = 0
    fund = fund_start
    fund_min = fund_start
    adl_usd = 0.0
    adl_cp = 0.0

    # activation order: accounts that can ever be live, by first live tick
    first = np.nonzero(alive & (g_open < g_close) & (g_open <= 0))[0]
    later = np.nonzero(alive & (g_open < g_close) & (g_open > 0) & (g_open < g_total))[0]
    later = later[np.argsort(g_open[later], kind="mergesort")]
    act_idx = np.concatenate((first, later))
    ai = 0
    # initial heaps: accounts live from tick 0
    while ai < act_idx.shape[0] and g_open[act_idx[ai]] <= 0:
        activated[act_idx[ai]] = True
        ai += 1
    Lk, La, Lv, Lm, Sk, Sa, Sv, Sm = _rebuild(side, qty, entry, wallet, exempt, alive, activated, g_close, 0,
                                              caps, mmr, cum, floors, version)
    Lp = 0
    Sp = 0
    lk, la, lv, ls = _empty_heap()
    sk, sa, sv, ss = _empty_heap()
    buf = np.empty(n)
    run = np.empty(n)
    fi = 0
    nf_total = fund_bar.shape[0]
    batch_acc = np.empty(16, np.int64)
    batch_k = np.empty(16, np.int64)
    batch_dir = np.empty(16, np.int64)
    batch_key = np.empty(16)
    pending_long = 0.0    # qty to deleverage from shorts (a long was closed by ADL)
    pending_short = 0.0
    b = 0
    while b < nb:
        while fi < nf_total and fund_bar[fi] < b:
            fi += 1
        ls = heap_clean_top(lk, la, lv, ls, version, alive)
        ss = heap_clean_top(sk, sa, sv, ss, version, alive)
        Lp = _clean_sorted(La, Lv, Lp, Lm, version, alive)
        Sp = _clean_sorted(Sa, Sv, Sp, Sm, version, alive)
        long_top = -min(Lk[Lp] if Lp < Lm else np.inf, lk[0] if ls > 0 else np.inf)
        short_top = min(Sk[Sp] if Sp < Sm else np.inf, sk[0] if ss > 0 else np.inf)
        nxt = next_bar(b, lo, hi, blo, bhi, block, long_top, short_top)
        nf = fund_bar[fi] if fi < nf_total else nb
        nact = g_open[act_idx[ai]] // n if ai < act_idx.shape[0] else nb
        stop = min(nxt, min(nf, nact))
        if stop >= nb:
            break
        b = stop
        g0 = b * n
        # accounts opening in this bar (before the funding at its open: one open at g0 pays)
        while ai < act_idx.shape[0] and g_open[act_idx[ai]] < g0 + n:
            a = act_idx[ai]
            ai += 1
            activated[a] = True
            if exempt[a] or not alive[a]:
                continue
            t = liq_price(side[a], qty[a], entry[a], wallet[a], caps, mmr, cum, floors)
            version[a] += 1
            if np.isfinite(t) and t > 0:
                if side[a] > 0:
                    lk, la, lv, ls = heap_push(lk, la, lv, ls, -t, a, version[a])
                else:
                    sk, sa, sv, ss = heap_push(sk, sa, sv, ss, t, a, version[a])
        if nf == b:
            rate = fund_rate[fi]
            price = o[b]
            for i in range(na):
                if alive[i] and g_open[i] <= g0 and g_close[i] > g0:
                    wallet[i] -= side[i] * qty[i] * price * rate
            Lk, La, Lv, Lm, Sk, Sa, Sv, Sm = _rebuild(side, qty, entry, wallet, exempt, alive, activated, g_close,
                                                      g0, caps, mmr, cum, floors, version)
            Lp = 0
            Sp = 0
            lk, la, lv, ls = _empty_heap()
            sk, sa, sv, ss = _empty_heap()
            fi += 1
            bar_fund[b] = fund
        # pop every live entry this bar's extremes reach
        nbatch = 0
        for direction in (-1, 1):
            while True:
                if direction < 0:
                    ls = heap_clean_top(lk, la, lv, ls, version, alive)
                    Lp = _clean_sorted(La, Lv, Lp, Lm, version, alive)
                    ks = Lk[Lp] if Lp < Lm else np.inf
                    kh = lk[0] if ls > 0 else np.inf
                    if min(ks, kh) > -lo[b]:
                        break
                    if ks <= kh:
                        a, key = La[Lp], ks
                        Lp += 1
                    else:
                        a, key = la[0], kh
                        ls = heap_pop(lk, la, lv, ls)
                else:
                    ss = heap_clean_top(sk, sa, sv, ss, version, alive)
                    Sp = _clean_sorted(Sa, Sv, Sp, Sm, version, alive)
                    ks = Sk[Sp] if Sp < Sm else np.inf
                    kh = sk[0] if ss > 0 else np.inf
                    if min(ks, kh) > hi[b]:
                        break
                    if ks <= kh:
                        a, key = Sa[Sp], ks
                        Sp += 1
                    else:
                        a, key = sa[0], kh
                        ss = heap_pop(sk, sa, sv, ss)
                version[a] += 1
                if g_close[a] <= g0:
                    continue                 # closed before this bar: gone
                if nbatch == batch_acc.shape[0]:
                    batch_acc = np.concatenate((batch_acc, np.empty(nbatch, np.int64)))
                    batch_k = np.concatenate((batch_k, np.empty(nbatch, np.int64)))
                    batch_dir = np.concatenate((batch_dir, np.empty(nbatch, np.int64)))
                    batch_key = np.concatenate((batch_key, np.empty(nbatch)))
                batch_acc[nbatch] = a
                batch_k[nbatch] = -1
                batch_dir[nbatch] = direction
                batch_key[nbatch] = key
                nbatch += 1
        if nbatch == 0:
            b += 1
            continue
        fill_bar_path(o[b], h[b], l[b], c[b], n, path_mode, path_key, ts_s[b], near_first_prob, buf)
        # crossing ticks; accounts that do not cross inside their live ticks go back (or are closed)
        nlive = 0
        for direction in (-1, 1):
            run[0] = buf[0]
            for k in range(1, n):
                run[k] = min(run[k - 1], buf[k]) if direction < 0 else max(run[k - 1], buf[k])
            for j in range(nbatch):
                if batch_dir[j] != direction:
                    continue
                a = batch_acc[j]
                kf = max(g_open[a] - g0, 0)
                kc = min(g_close[a] - g0, n)
                k = _first_cross(buf, run, n, kf, kc, batch_key[j] * direction, direction)
                batch_k[j] = k
                if k >= 0:
                    nlive += 1
        # settle in (tick, account) order
        sel = np.empty(nlive, np.int64)
        m = 0
        for j in range(nbatch):
            if batch_k[j] >= 0:
                sel[m] = j
                m += 1
        order = np.argsort(batch_acc[sel], kind="mergesort")
        sel = sel[order]
        order = np.argsort(batch_k[sel], kind="mergesort")
        sel = sel[order]
        v_min = vol[b] / bar_minutes
        for jj in range(sel.shape[0]):
            j = sel[jj]
            a = batch_acc[j]
            k = batch_k[j]
            s = side[a]
            q = qty[a]
            ep = entry[a]
            wb = wallet[a]
            mark = buf[k]
            notional_mark = q * mark
            if notional_mark > 0:
                raw = eta * sigma_1m * np.sqrt(notional_mark / v_min) if v_min > 0 else np.inf
                slip = min(raw, max_slip)
            else:
                slip = 0.0
            fill = mark * (1 + (-s) * slip) * (1 + (-s) * 0.0)
            bp = ep - s * wb / q
            per_coin = s * (fill - bp)
            q_mkt = q
            if per_coin < 0 and adl_enabled:
                deficit = -per_coin * q
                if deficit > max(fund, 0.0):
                    q_mkt = max(fund, 0.0) / -per_coin
            fund += per_coin * q_mkt
            fund_min = min(fund_min, fund)
            q_adl = q - q_mkt
            surplus = per_coin * q_mkt
            user_loss = wb + s * q * (mark - ep)
            t = ts_s[b] + k * tick_s
            if q_mkt > 0:
                mech = M_FUND if surplus < 0 else M_IOC
                ef, ei, n_ev = _record(ef, ei, n_ev, t, a, s, mech, b, q_mkt, fill, mark, q_mkt * fill,
                                       0.0 if q_adl > 0 else user_loss, surplus)
                bar_liq[b, mech] += q_mkt * fill
            if q_adl > 0:
                # a market/ADL split books the user loss once, on the ADL row
                adl_not = q_adl * max(bp, 0.0)
                ef, ei, n_ev = _record(ef, ei, n_ev, t, a, s, M_ADL, b, q_adl, bp, mark, adl_not, user_loss, 0.0)
                bar_liq[b, M_ADL] += adl_not
                if s > 0:
                    pending_long += q_adl
                else:
                    pending_short += q_adl
                adl_usd += adl_not
                adl_cp += s * q_adl * (mark - bp)
            qty[a] = 0.0
            alive[a] = False
            liquidated[a] = True
        # ADL at the bar's close against the opposite side, ranked at the close
        g_last = g0 + n - 1
        for liq_side in (1, -1):
            need = pending_long if liq_side > 0 else pending_short
            if need <= 0:
                continue
            if liq_side > 0:
                pending_long = 0.0
            else:
                pending_short = 0.0
            price = c[b]
            cand = np.nonzero(alive & (side == -liq_side) & (g_open <= g_last) & (g_close > g_last))[0]
            if cand.shape[0] == 0:
                continue
            sc = np.empty(cand.shape[0])
            for j in range(cand.shape[0]):
                a = cand[j]
                u = side[a] * qty[a] * (price - entry[a])
                w = wallet[a]
                mm = maint_margin(qty[a] * price, caps, mmr, cum)
                mb = w + u
                sc[j] = max(u, 0.0) / max(w, 1.0) * mm / mb if mb > 0 else 0.0
            order = np.argsort(-sc, kind="mergesort")
            cumq = 0.0
            for jj in range(order.shape[0]):
                j = order[jj]
                a = cand[j]
                qa_ = qty[a]
                cumq += qa_
                take = min(max(need - (cumq - qa_), 0.0), qa_)
                if take <= 0:
                    continue
                frac = take / qty[a]
                wallet[a] *= (1.0 - frac)
                qty[a] -= take
                if n_adl == adl_f.shape[0]:
                    adl_f = np.concatenate((adl_f, np.empty((n_adl, 1))))
                    adl_i = np.concatenate((adl_i, np.empty((n_adl, 3), np.int64)))
                adl_f[n_adl, 0] = take
                adl_i[n_adl, 0] = b
                adl_i[n_adl, 1] = side[a]
                adl_i[n_adl, 2] = a
                n_adl += 1
                version[a] += 1
                if qty[a] <= 1e-12 * max(1.0, take):
                    adl_f[n_adl - 1, 0] += qty[a]
                    qty[a] = 0.0
                    alive[a] = False
                elif not exempt[a]:
                    t = liq_price(side[a], qty[a], entry[a], wallet[a], caps, mmr, cum, floors)
                    if np.isfinite(t) and t > 0:
                        if side[a] > 0:
                            lk, la, lv, ls = heap_push(lk, la, lv, ls, -t, a, version[a])
                        else:
                            sk, sa, sv, ss = heap_push(sk, sa, sv, ss, t, a, version[a])
        # triggers reached by the extreme but not crossed inside the account's live ticks (it opened
        # after the extreme): back into the heap, unless it closed in this bar
        for j in range(nbatch):
            a = batch_acc[j]
            if batch_k[j] >= 0 or not alive[a] or g_close[a] < g0 + n:
                continue
            version[a] += 1
            if side[a] > 0:
                lk, la, lv, ls = heap_push(lk, la, lv, ls, batch_key[j], a, version[a])
            else:
                sk, sa, sv, ss = heap_push(sk, sa, sv, ss, batch_key[j], a, version[a])
        bar_fund[b] = fund
        b += 1
    return (ef[:n_ev].copy(), ei[:n_ev].copy(), n_ev, bar_liq, bar_fund, alive, liquidated, fund, fund_min,
            adl_usd, adl_cp, adl_f[:n_adl, 0].copy(), adl_i[:n_adl].copy())


@njit(cache=True)
def _rebuild(side, qty, entry, wallet, exempt, alive, activated, g_close, g0, caps, mmr, cum, floors, version):
    """Both heaps from scratch: every alive, activated, not exempt, not yet closed account."""
    na = side.shape[0]
    nl = 0
    ns = 0
    for i in range(na):
        if alive[i] and activated[i] and not exempt[i] and g_close[i] > g0:
            if side[i] > 0:
                nl += 1
            else:
                ns += 1
    il = np.empty(nl, np.int64)
    tl = np.empty(nl)
    is_ = np.empty(ns, np.int64)
    ts_ = np.empty(ns)
    jl = 0
    js = 0
    for i in range(na):
        if alive[i] and activated[i] and not exempt[i] and g_close[i] > g0:
            t = liq_price(side[i], qty[i], entry[i], wallet[i], caps, mmr, cum, floors)
            if side[i] > 0:
                il[jl] = i
                tl[jl] = t
                jl += 1
            else:
                is_[js] = i
                ts_[js] = t
                js += 1
    lk, la, lv, ls = heap_build(il, tl, -1, version, nl + 16)
    sk, sa, sv, ss = heap_build(is_, ts_, 1, version, ns + 16)
    return lk, la, lv, ls, sk, sa, sv, ss


@njit(cache=True)
def close_prices(ts_s, o, h, l, c, n_ticks, path_mode, path_key, near_first_prob, g):
    """Path price at global ticks g (each < n_bars * n_ticks), one bar path per distinct bar."""
    out = np.empty(g.shape[0])
    order = np.argsort(g, kind="mergesort")
    buf = np.empty(n_ticks)
    cur = -1
    for jj in range(order.shape[0]):
        j = order[jj]
        b = g[j] // n_ticks
        if b != cur:
            fill_bar_path(o[b], h[b], l[b], c[b], n_ticks, path_mode, path_key, ts_s[b], near_first_prob, buf)
            cur = b
        out[j] = buf[g[j] - b * n_ticks]
    return out
