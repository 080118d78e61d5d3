"""The compiled Binance USDⓈ-M replay of one series (MODEL.md 4): numba kernels over structure of arrays.

One call of `replay_kernel` replays one (venue, market) path over all its accounts: the fund
and the ADL queue are shared by the accounts of a series, so nothing here runs in parallel
across accounts (parallelism belongs across independent series, in the caller).

Cost grows with bars + events, not bars x accounts:
- funding is lazy: with F the cumulative funding per coin (sum of open price x rate over the
  funding times so far), a live account's wallet is wref - side*qty*(F - fref) and its
  bankruptcy price BP = z + F with z fixed between its own events. Since MM(N) = max over
  tiers j of (N*mmr_j - cum_j) (continuous, convex), a long is liquidatable at P iff
  P <= max_j (BP - cum_j/qty)/(1 - mmr_j) and a short iff P >= min_j (BP + cum_j/qty)/(1 + mmr_j):
  one line per tier, each a fixed key shifted by F. So each (side, tier) has a book keyed by the
  F-free part (long -(z - cum_j/qty), short z + cum_j/qty), whose order never changes with
  funding: a sorted array walked by a pointer (accounts live from the first tick, built in bulk)
  plus a binary min-heap (accounts entered later: opened mid-run, deleveraged, deferred); an
  account sits in the books of the tiers that can bind it for any F the run reaches (the
  binding tier is monotone in BP); a funding time costs O(1);
- deletion is lazy (an entry is live while its version matches the account's);
- the next bar that can hold an event is found with per-bar and per-block extremes; a bar's
  ticks are generated (`fill_bar_path`) only for bars whose range reaches a trigger, and the
  first crossing is a binary search on the bar's running minimum (maximum);
- accounts that open mid-run are pushed into the heaps at the bar where they open (a stop
  of the bar walk, in time order); an account's voluntary close at close_s is applied
  lazily: it can no longer fire or be deleveraged after its close tick, and its wallet
  realises the path price at that tick at the end;

Engine arithmetic is that of backtest/venues/binance.py (liquidation_outcome,
maintenance_margin, adl_scores, adl_allocate; the trigger as the envelope of the tier lines,
equal to liquidation_price) and execution.sqrt_impact / fill_price, written per scalar; the
oracle (backtest/reference.py) uses the numpy originals and checks MM >= WB + uPnL at every
tick, so the parity tests hold one against the other.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest.execution import (
    FLOW_LIQUIDATION,
    feedback_add,
    feedback_offset,
    metaorder_slippage,
    new_feedback_state,
    new_metaorder_state,
)
from backtest.kernel_cache import drop_stale
from backtest.paths import bar_prices_at
from backtest.replay.inputs import fill_bar_path

drop_stale(__file__, ["rng.py", "paths.py", "execution.py", "replay/inputs.py"])

# mechanism codes: the index in recorder.MECHS
M_IOC = 3
M_FUND = 4
M_ADL = 5
N_MECH = 6
# event matrix columns
EF_T, EF_QTY, EF_PRICE, EF_MARK, EF_NOTIONAL, EF_USER_LOSS, EF_FUND_DELTA = 0, 1, 2, 3, 4, 5, 6
EI_ACC, EI_SIDE, EI_MECH, EI_BAR = 0, 1, 2, 3


@njit(cache=True)
def maint_margin(notional, caps, mmr, cum):
    t = np.searchsorted(caps, notional)
    if t > caps.shape[0] - 1:
        t = caps.shape[0] - 1
    return notional * mmr[t] - cum[t]


# ----------------------------------------------------------------------------------------------
# binary min-heaps of (key, account, version), one per (side, tier): rows of 3-d arrays
# ----------------------------------------------------------------------------------------------
@njit(cache=True)
def heap_push(keys, accs, vers, size, key, acc, ver):
    """Push onto a heap row with room for one more; returns the new size."""
    i = size
    keys[i], accs[i], vers[i] = key, acc, ver
    while i > 0:
        p = (i - 1) // 2
        if keys[i] < keys[p]:
            keys[i], keys[p] = keys[p], keys[i]
            accs[i], accs[p] = accs[p], accs[i]
            vers[i], vers[p] = vers[p], vers[i]
            i = p
        else:
            break
    return size + 1


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
        if lft + 1 < size and keys[lft + 1] < keys[lft]:
            m = lft + 1
        if keys[m] < keys[i]:
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
def _books_push(K, A, V, seg, used, r, key, acc, ver):
    """Push onto heap row r of the segmented books (flat K/A/V; seg[r] = offset, capacity, size;
    used[0] = the flat length in use). A full row moves to the end with twice the room."""
    off, cap, size = seg[r, 0], seg[r, 1], seg[r, 2]
    if size == cap:
        ncap = max(16, 2 * cap)
        if used[0] + ncap > K.shape[0]:
            m = max(2 * K.shape[0], used[0] + ncap)
            K2, A2, V2 = np.empty(m), np.empty(m, np.int64), np.empty(m, np.int64)
            K2[:used[0]], A2[:used[0]], V2[:used[0]] = K[:used[0]], A[:used[0]], V[:used[0]]
            K, A, V = K2, A2, V2
        e = used[0]
        K[e:e + size], A[e:e + size], V[e:e + size] = K[off:off + size], A[off:off + size], V[off:off + size]
        seg[r, 0], seg[r, 1] = e, ncap
        used[0] = e + ncap
        off, cap = e, ncap
    seg[r, 2] = heap_push(K[off:off + cap], A[off:off + cap], V[off:off + cap], size, key, acc, ver)
    return K, A, V


@njit(cache=True)
def _row_clean_top(K, A, V, seg, r, version, alive):
    off, cap = seg[r, 0], seg[r, 1]
    seg[r, 2] = heap_clean_top(K[off:off + cap], A[off:off + cap], V[off:off + cap], seg[r, 2], version, alive)
    return seg[r, 2]


@njit(cache=True)
def _row_pop(K, A, V, seg, r):
    off, cap = seg[r, 0], seg[r, 1]
    seg[r, 2] = heap_pop(K[off:off + cap], A[off:off + cap], V[off:off + cap], seg[r, 2])


@njit(cache=True)
def tier_key(s, q, z, cum_j):
    """Heap key of an account in tier j: long -(z - cum_j/q), short z + cum_j/q (F-free)."""
    return -(z - cum_j / q) if s > 0 else z + cum_j / q


@njit(cache=True)
def tier_trigger(s, key, F, mmr_j):
    """Tier j's trigger line at cumulative funding F: long (F - key)/(1 - mmr_j), short (key + F)/(1 + mmr_j)."""
    return (F - key) / (1.0 - mmr_j) if s > 0 else (key + F) / (1.0 + mmr_j)


@njit(cache=True)
def trigger_now(s, q, z, F, mmr, cum):
    """The liquidation price at cumulative funding F of an account with F-free bankruptcy part z
    (BP = z + F): long max over tiers (0.0 if <= 0: never), short min over tiers."""
    best = -np.inf if s > 0 else np.inf
    for j in range(mmr.shape[0]):
        v = tier_trigger(s, tier_key(s, q, z, cum[j]), F, mmr[j])
        if (s > 0 and v > best) or (s < 0 and v < best):
            best = v
    if s > 0 and not best > 0:
        return 0.0
    return best


@njit(cache=True)
def _binding_tier(s, q, bp, mmr, cum):
    jb = 0
    if s > 0:
        best = -np.inf
        for j in range(mmr.shape[0]):
            v = (bp - cum[j] / q) / (1.0 - mmr[j])
            if v > best:
                best, jb = v, j
    else:
        best = np.inf
        for j in range(mmr.shape[0]):
            v = (bp + cum[j] / q) / (1.0 + mmr[j])
            if v < best:
                best, jb = v, j
    return jb


@njit(cache=True)
def _tier_range(s, q, z, f_min, f_max, mmr, cum):
    """Tiers that can bind an account (BP = z + F) for F in [f_min, f_max]; (-1, -1) for a long that
    can never be liquidated there."""
    if q <= 0.0 or (s > 0 and trigger_now(s, q, z, f_max, mmr, cum) <= 0.0):
        return -1, -1
    j0 = _binding_tier(s, q, z + f_min, mmr, cum)
    j1 = _binding_tier(s, q, z + f_max, mmr, cum)
    return min(j0, j1), max(j0, j1)


@njit(cache=True)
def _insert(K, A, V, seg, used, a, s, q, z, f_min, f_max, mmr, cum, version):
    """(Re-)enter account a in the heaps of every tier that can bind it for F in [f_min, f_max]."""
    version[a] += 1
    j0, j1 = _tier_range(s, q, z, f_min, f_max, mmr, cum)
    nt = mmr.shape[0]
    d = 0 if s > 0 else 1
    for j in range(j0, j1 + 1):
        if j < 0:
            break
        K, A, V = _books_push(K, A, V, seg, used, d * nt + j, tier_key(s, q, z, cum[j]), a, version[a])
    return K, A, V


@njit(cache=True)
def _bulk_books(idx, side, qty, wt, entry, wref, fref, f_min, f_max, mmr, cum, version):
    """Segmented books holding accounts idx, each row sorted by key (a sorted row is a heap)."""
    nt = mmr.shape[0]
    R = 2 * nt
    m = idx.shape[0]
    j0s = np.empty(m, np.int64)
    j1s = np.empty(m, np.int64)
    zs = np.empty(m)
    cnt = np.zeros(R, np.int64)
    for i in range(m):
        a = idx[i]
        s = side[a]
        z = entry[a] - s * wref[a] / qty[a] - fref[a]
        zs[i] = z
        version[a] += 1
        j0, j1 = _tier_range(s, qty[a] / wt[a], z, f_min, f_max, mmr, cum)
        j0s[i], j1s[i] = j0, j1
        d = 0 if s > 0 else 1
        for j in range(j0, j1 + 1):
            if j < 0:
                break
            cnt[d * nt + j] += 1
    sseg = np.zeros((R, 3), np.int64)        # sorted rows: offset, count, pointer
    tot = 0
    for r in range(R):
        sseg[r, 0] = tot
        tot += cnt[r]
    SK = np.empty(tot)
    SA = np.empty(tot, np.int64)
    SV = np.empty(tot, np.int64)
    for i in range(m):
        a = idx[i]
        s = side[a]
        d = 0 if s > 0 else 1
        for j in range(j0s[i], j1s[i] + 1):
            if j < 0:
                break
            r = d * nt + j
            p = sseg[r, 0] + sseg[r, 1]
            SK[p], SA[p], SV[p] = tier_key(s, qty[a] / wt[a], zs[i], cum[j]), a, version[a]
            sseg[r, 1] += 1
    for r in range(R):
        off, size = sseg[r, 0], sseg[r, 1]
        if size > 1:
            order = np.argsort(SK[off:off + size])
            SK[off:off + size] = SK[off:off + size][order]
            SA[off:off + size] = SA[off:off + size][order]
            SV[off:off + size] = SV[off:off + size][order]
    # heaps for accounts entered later, 16 slots a row to start
    seg = np.zeros((R, 3), np.int64)
    for r in range(R):
        seg[r, 0] = 16 * r
        seg[r, 1] = 16
    K = np.empty(16 * R)
    A = np.empty(16 * R, np.int64)
    V = np.empty(16 * R, np.int64)
    used = np.array([16 * R], np.int64)
    return SK, SA, SV, sseg, K, A, V, seg, used


@njit(cache=True)
def _row_top(SK, SA, SV, sseg, K, A, V, seg, r, version, alive):
    """(key, source) of row r's most imminent live entry: source 0 the sorted part, 1 the heap,
    -1 none (key inf). Stale entries on the way are dropped."""
    off, cnt, ptr = sseg[r, 0], sseg[r, 1], sseg[r, 2]
    while ptr < cnt and (SV[off + ptr] != version[SA[off + ptr]] or not alive[SA[off + ptr]]):
        ptr += 1
    sseg[r, 2] = ptr
    ks = SK[off + ptr] if ptr < cnt else np.inf
    kh = K[seg[r, 0]] if _row_clean_top(K, A, V, seg, r, version, alive) > 0 else np.inf
    if ptr >= cnt and seg[r, 2] == 0:
        return np.inf, -1
    if ks <= kh:
        return ks, 0
    return kh, 1


@njit(cache=True)
def _side_top(SK, SA, SV, sseg, K, A, V, seg, d, F, mmr, version, alive):
    """The most imminent trigger of a side at F: long max over tiers, short min (+-inf if none)."""
    nt = mmr.shape[0]
    best = -np.inf if d == 0 else np.inf
    for j in range(nt):
        key, src = _row_top(SK, SA, SV, sseg, K, A, V, seg, d * nt + j, version, alive)
        if src < 0:
            continue
        v = tier_trigger(1 if d == 0 else -1, key, F, mmr[j])
        if (d == 0 and v > best) or (d == 1 and v < best):
            best = v
    return best


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
    for r in range(n_ev):       # (loops: a slice assignment compiles numba's shape-error formatting)
        for c in range(ef.shape[1]):
            ef2[r, c] = ef[r, c]
        for c in range(ei.shape[1]):
            ei2[r, c] = ei[r, c]
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



# settlement scalars zz[...]
ZZ_FUND, ZZ_FUND_MIN, ZZ_PEND_LONG, ZZ_PEND_SHORT, ZZ_ADL_USD, ZZ_ADL_CP = range(6)
# impact switches / numbers imp[...] (execution.impact_settings)
IMP_MO, IMP_BUCKET, IMP_FB, IMP_BASE, IMP_PERM, IMP_DECAY = range(6)


@njit(cache=True)
def _settle(ef, ei, n_ev, zz, bar_liq, a, k, b, t, mark, F, side, qty, entry, wref, fref, alive, liquidated, vol_b,
            sig_b, bar_minutes, eta, max_slip, adl_enabled, imp, mo_start, mo_cum, fb):
    """Liquidate account a at tick k of bar b at `mark` (its IOC fills at mark minus impact:
    v1 its own square-root impact, v2 its share of the bar-bucket's metaorder; MODEL.md 5).
    With feedback on, the part of the flow that reaches the market moves the path (fb)."""
    s = side[a]
    q = qty[a]
    ep = entry[a]
    wb = wref[a] - s * q * (F - fref[a])
    notional_mark = q * mark
    if imp[IMP_MO] > 0:
        slip = metaorder_slippage(mo_start, mo_cum, FLOW_LIQUIDATION, -s, t, notional_mark, vol_b, sig_b, eta,
                                  bar_minutes, imp[IMP_BUCKET], max_slip)
    else:
        v_min = vol_b / bar_minutes
        if notional_mark > 0:
            raw = eta * sig_b * np.sqrt(notional_mark / v_min) if v_min > 0 else np.inf
            slip = min(raw, max_slip)
        else:
            slip = 0.0
    fill = mark * (1 + (-s) * slip) * (1 + (-s) * 0.0)
    bp = ep - s * wb / q
    per_coin = s * (fill - bp)
    q_mkt = q
    fund = zz[ZZ_FUND]
    if per_coin < 0 and adl_enabled:
        deficit = -per_coin * q
        if deficit > max(fund, 0.0):
            q_mkt = max(fund, 0.0) / -per_coin
    fund += per_coin * q_mkt
    zz[ZZ_FUND] = fund
    zz[ZZ_FUND_MIN] = min(zz[ZZ_FUND_MIN], fund)
    q_adl = q - q_mkt
    surplus = per_coin * q_mkt
    user_loss = wb + s * q * (mark - ep)
    if q_mkt > 0:
        mech = M_FUND if surplus < 0 else M_IOC
        ef, ei, n_ev = _record(ef, ei, n_ev, t, a, s, mech, b, q_mkt, fill, mark, q_mkt * fill,
                               0.0 if q_adl > 0 else user_loss, surplus)
        bar_liq[b, mech] += q_mkt * fill
        if imp[IMP_FB] > 0:
            feedback_add(fb, 0, t, -s, q_mkt * mark, vol_b, sig_b, eta, bar_minutes, imp[IMP_BASE], imp[IMP_PERM],
                         imp[IMP_BUCKET], imp[IMP_DECAY], max_slip)
    if q_adl > 0:
        # a market/ADL split books the user loss once, on the ADL row
        adl_not = q_adl * max(bp, 0.0)
        ef, ei, n_ev = _record(ef, ei, n_ev, t, a, s, M_ADL, b, q_adl, bp, mark, adl_not, user_loss, 0.0)
        bar_liq[b, M_ADL] += adl_not
        if s > 0:
            zz[ZZ_PEND_LONG] += q_adl
        else:
            zz[ZZ_PEND_SHORT] += q_adl
        zz[ZZ_ADL_USD] += adl_not
        zz[ZZ_ADL_CP] += s * q_adl * (mark - bp)
    wref[a] = wb
    fref[a] = F
    qty[a] = 0.0
    alive[a] = False
    liquidated[a] = True
    return ef, ei, n_ev


@njit(cache=True)
def _pop_batch(SK, SA, SV, sseg, K, A, V, seg, version, alive, side, qty, wt, entry, wref, fref, g_close, g0, F,
               mmr, cum, lo_thr, hi_thr, batch_acc, batch_k, batch_dir, batch_trig, nbatch):
    """Pop every live entry whose trigger a price in [lo_thr, hi_thr] reaches into the batch
    (accounts closed before the bar are dropped). Returns the batch arrays and its size."""
    nt = mmr.shape[0]
    for d in range(2):
        for j in range(nt):
            r = d * nt + j
            while True:
                key, src = _row_top(SK, SA, SV, sseg, K, A, V, seg, r, version, alive)
                if src < 0:
                    break
                v = tier_trigger(1 if d == 0 else -1, key, F, mmr[j])
                if (d == 0 and v < lo_thr) or (d == 1 and v > hi_thr):
                    break
                if src == 0:
                    a = SA[sseg[r, 0] + sseg[r, 2]]
                    sseg[r, 2] += 1
                else:
                    a = A[seg[r, 0]]
                    _row_pop(K, A, V, seg, r)
                version[a] += 1              # its entries in other tiers are stale from now
                if g_close[a] <= g0:
                    continue                 # closed before this bar: gone
                if nbatch == batch_acc.shape[0]:
                    batch_acc = np.concatenate((batch_acc, np.empty(nbatch, np.int64)))
                    batch_k = np.concatenate((batch_k, np.empty(nbatch, np.int64)))
                    batch_dir = np.concatenate((batch_dir, np.empty(nbatch, np.int64)))
                    batch_trig = np.concatenate((batch_trig, np.empty(nbatch)))
                s = side[a]
                z = entry[a] - s * wref[a] / qty[a] - fref[a]
                batch_acc[nbatch] = a
                batch_k[nbatch] = -1
                batch_dir[nbatch] = -1 if d == 0 else 1
                batch_trig[nbatch] = trigger_now(s, qty[a] / wt[a], z, F, mmr, cum)
                nbatch += 1
    return batch_acc, batch_k, batch_dir, batch_trig, nbatch


# ----------------------------------------------------------------------------------------------
# the kernel
# ----------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def replay_kernel(ts_s, o, h, lw, c, vol, n_ticks, tick_s, path_mode, path_key, near_first_prob, vol_scale,
                  time_jitter,
                  sig_bar, bar_minutes, lo, hi, blo, bhi, block, fund_bar, f_cum,
                  side, qty, wt, entry, wref, fref, exempt, g_open, g_close,
                  mmr, cum, caps, eta, max_slip, adl_enabled, fund_start, imp):
    """Replay one series. qty, wref and fref are updated in place (a wallet is wref - side*qty*(F -
    fref) at cumulative funding F; f_cum[k] = F after the first k funding bars). sig_bar: the
    sigma each bar's fills pay (v2 the bar's own, v1 the window's); imp: the impact switches
    (IMP_*: metaorders, bucket_s, feedback, baseline_share, permanent_share, decay_s). With
    feedback on, the triggers and fills see the path times (1 + the outstanding offset);
    ADL ranking, funding and voluntary closes stay on the path. Returns (ef, ei, bar_liq,
    bar_fund, alive, liquidated, fund, fund_min, adl_usd, adl_counterparty_usd, adl_take, adl_i)."""
    nb = o.shape[0]
    na = side.shape[0]
    n = n_ticks
    g_total = nb * n
    alive = qty > 0.0
    liquidated = np.zeros(na, np.bool_)
    version = np.zeros(na, np.int64)
    bar_liq = np.zeros((nb, N_MECH))
    bar_fund = np.full(nb, np.nan)
    ef = np.empty((64, 7))
    ei = np.empty((64, 4), np.int64)
    n_ev = np.int64(0)
    adl_f = np.empty((16, 1))            # take (coins)
    adl_i = np.empty((16, 3), np.int64)  # bar, side, account
    n_adl = 0
    zz = np.zeros(6)
    zz[ZZ_FUND] = fund_start
    zz[ZZ_FUND_MIN] = fund_start
    mo_start, mo_cum = new_metaorder_state(1)
    fb = new_feedback_state(1)
    fb_on = imp[IMP_FB] > 0
    decay = imp[IMP_DECAY]
    f_min = f_cum.min()
    f_max = f_cum.max()
    F = 0.0

    # activation order: accounts that can ever be live, by first live tick
    first = np.nonzero(alive & (g_open < g_close) & (g_open <= 0))[0]
    later = np.nonzero(alive & (g_open < g_close) & (g_open > 0) & (g_open < g_total))[0]
    later = later[np.argsort(g_open[later], kind="mergesort")]
    act_idx = np.concatenate((first, later))
    # accounts live from the first tick: books built in bulk (sorted rows)
    init = first[~exempt[first]]
    SK, SA, SV, sseg, K, A, V, seg, used = _bulk_books(init, side, qty, wt, entry, wref, fref, f_min, f_max, mmr, cum,
                                                       version)
    ai = first.shape[0]
    buf = np.empty(n)
    run = np.empty(n)
    eb = np.empty(n)
    fi = 0
    nf_total = fund_bar.shape[0]
    batch_acc = np.empty(16, np.int64)
    batch_k = np.empty(16, np.int64)
    batch_dir = np.empty(16, np.int64)
    batch_trig = np.empty(16)
    b = 0
    while b < nb:
        while fi < nf_total and fund_bar[fi] < b:
            fi += 1
            F = f_cum[fi]
        long_top = _side_top(SK, SA, SV, sseg, K, A, V, seg, 0, F, mmr, version, alive)
        short_top = _side_top(SK, SA, SV, sseg, K, A, V, seg, 1, F, mmr, version, alive)
        if fb_on:
            # the offset's size only shrinks until the next flow (which happens in a visited
            # bar): triggers on the moved path are those on the path at these bounds
            off = feedback_offset(fb, 0, float(ts_s[b]), decay)
            long_top = long_top / (1.0 + min(off, 0.0))
            short_top = short_top / (1.0 + max(off, 0.0))
        nxt = next_bar(b, lo, hi, blo, bhi, block, long_top, short_top)
        nf = fund_bar[fi] if fi < nf_total else nb
        nact = g_open[act_idx[ai]] // n if ai < act_idx.shape[0] else nb
        stop = min(nxt, min(nf, nact))
        if stop >= nb:
            break
        b = stop
        g0 = b * n
        # accounts opening in this bar (fref, set by the caller, says which funding they pay)
        while ai < act_idx.shape[0] and g_open[act_idx[ai]] < g0 + n:
            a = act_idx[ai]
            ai += 1
            if exempt[a] or not alive[a]:
                continue
            s = side[a]
            z = entry[a] - s * wref[a] / qty[a] - fref[a]
            K, A, V = _insert(K, A, V, seg, used, a, s, qty[a] / wt[a], z, f_min, f_max, mmr, cum, version)
        if nf == b:
            fi += 1
            F = f_cum[fi]
            bar_fund[b] = zz[ZZ_FUND]
        if not fb_on:
            # pop every live entry this bar's extremes reach
            batch_acc, batch_k, batch_dir, batch_trig, nbatch = _pop_batch(
                SK, SA, SV, sseg, K, A, V, seg, version, alive, side, qty, wt, entry, wref, fref, g_close, g0, F,
                mmr, cum, lo[b], hi[b], batch_acc, batch_k, batch_dir, batch_trig, 0)
            if nbatch == 0:
                b += 1
                continue
            fill_bar_path(o[b], h[b], lw[b], c[b], n, path_mode, path_key, ts_s[b], near_first_prob, buf, vol_scale,
                          time_jitter)
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
                    k = _first_cross(buf, run, n, kf, kc, batch_trig[j], direction)
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
            for jj in range(sel.shape[0]):
                j = sel[jj]
                k = batch_k[j]
                ef, ei, n_ev = _settle(ef, ei, n_ev, zz, bar_liq, batch_acc[j], k, b, ts_s[b] + k * tick_s, buf[k], F,
                                       side, qty, entry, wref, fref, alive, liquidated, vol[b], sig_bar[b],
                                       bar_minutes, eta, max_slip, adl_enabled, imp, mo_start, mo_cum, fb)
        else:
            # feedback: event by event. The moved path of the bar's remaining ticks, the entries it
            # reaches, the first tick any of them crosses; settle that tick (its flow moves the
            # path of the later ticks), repeat
            fill_bar_path(o[b], h[b], lw[b], c[b], n, path_mode, path_key, ts_s[b], near_first_prob, buf, vol_scale,
                          time_jitter)
            nbatch = 0
            kstart = 0
            while kstart < n:
                elo = np.inf
                ehi = -np.inf
                for k in range(kstart, n):
                    eb[k] = buf[k] * (1.0 + feedback_offset(fb, 0, ts_s[b] + k * tick_s, decay))
                    elo = min(elo, eb[k])
                    ehi = max(ehi, eb[k])
                batch_acc, batch_k, batch_dir, batch_trig, nbatch = _pop_batch(
                    SK, SA, SV, sseg, K, A, V, seg, version, alive, side, qty, wt, entry, wref, fref, g_close, g0, F,
                    mmr, cum, elo, ehi, batch_acc, batch_k, batch_dir, batch_trig, nbatch)
                kmin = n
                for j in range(nbatch):
                    a = batch_acc[j]
                    if not alive[a]:
                        continue
                    kf = max(g_open[a] - g0, kstart)
                    kc = min(g_close[a] - g0, n)
                    for k in range(kf, min(kc, kmin)):
                        if ((batch_dir[j] < 0 and eb[k] <= batch_trig[j])
                                or (batch_dir[j] > 0 and eb[k] >= batch_trig[j])):
                            kmin = k
                            break
                if kmin >= n:
                    break
                # the accounts crossing at kmin, in account order
                m = 0
                sel = np.empty(nbatch, np.int64)
                for j in range(nbatch):
                    a = batch_acc[j]
                    if not alive[a] or g_open[a] - g0 > kmin or g_close[a] - g0 <= kmin:
                        continue
                    if ((batch_dir[j] < 0 and eb[kmin] <= batch_trig[j])
                            or (batch_dir[j] > 0 and eb[kmin] >= batch_trig[j])):
                        sel[m] = j
                        m += 1
                sel = sel[:m]
                sel = sel[np.argsort(batch_acc[sel], kind="mergesort")]
                t = ts_s[b] + kmin * tick_s
                mark = eb[kmin]
                for jj in range(m):
                    j = sel[jj]
                    batch_k[j] = kmin
                    ef, ei, n_ev = _settle(ef, ei, n_ev, zz, bar_liq, batch_acc[j], kmin, b, t, mark, F,
                                           side, qty, entry, wref, fref, alive, liquidated, vol[b], sig_bar[b],
                                           bar_minutes, eta, max_slip, adl_enabled, imp, mo_start, mo_cum, fb)
                kstart = kmin + 1
            if nbatch == 0:
                b += 1
                continue
        # ADL at the bar's close against the opposite side, ranked at the close
        g_last = g0 + n - 1
        for liq_side in (1, -1):
            need = zz[ZZ_PEND_LONG] if liq_side > 0 else zz[ZZ_PEND_SHORT]
            if need <= 0:
                continue
            if liq_side > 0:
                zz[ZZ_PEND_LONG] = 0.0
            else:
                zz[ZZ_PEND_SHORT] = 0.0
            price = c[b]
            cand = np.nonzero(alive & (side == -liq_side) & (g_open <= g_last) & (g_close > g_last))[0]
            if cand.shape[0] == 0:
                continue
            sc = np.empty(cand.shape[0])
            for j in range(cand.shape[0]):
                a = cand[j]
                u = side[a] * qty[a] * (price - entry[a])
                w = wref[a] - side[a] * qty[a] * (F - fref[a])
                mm = wt[a] * maint_margin(qty[a] / wt[a] * price, caps, mmr, cum)
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
                wref[a] = (wref[a] - side[a] * qty[a] * (F - fref[a])) * (1.0 - frac)
                fref[a] = F
                qty[a] -= take
                if n_adl == adl_f.shape[0]:
                    adl_f = np.concatenate((adl_f, np.empty((n_adl, 1))))
                    adl_i = np.concatenate((adl_i, np.empty((n_adl, 3), np.int64)))
                adl_f[n_adl, 0] = take
                adl_i[n_adl, 0] = b
                adl_i[n_adl, 1] = side[a]
                adl_i[n_adl, 2] = a
                n_adl += 1
                if qty[a] <= 1e-12 * max(1.0, take):
                    adl_f[n_adl - 1, 0] += qty[a]
                    qty[a] = 0.0
                    alive[a] = False
                    version[a] += 1
                elif exempt[a]:
                    version[a] += 1
                else:
                    s = side[a]
                    z = entry[a] - s * wref[a] / qty[a] - fref[a]
                    K, A, V = _insert(K, A, V, seg, used, a, s, qty[a] / wt[a], z, f_min, f_max, mmr, cum, version)
        # triggers reached by the extreme but not crossed inside the account's live ticks (it opened
        # after the extreme): back into the heaps, unless it closed in this bar
        for j in range(nbatch):
            a = batch_acc[j]
            if batch_k[j] >= 0 or not alive[a] or g_close[a] < g0 + n:
                continue
            s = side[a]
            z = entry[a] - s * wref[a] / qty[a] - fref[a]
            K, A, V = _insert(K, A, V, seg, used, a, s, qty[a] / wt[a], z, f_min, f_max, mmr, cum, version)
        bar_fund[b] = zz[ZZ_FUND]
        b += 1
    return (ef[:n_ev].copy(), ei[:n_ev].copy(), bar_liq, bar_fund, alive, liquidated, zz[ZZ_FUND], zz[ZZ_FUND_MIN],
            zz[ZZ_ADL_USD], zz[ZZ_ADL_CP], adl_f[:n_adl, 0].copy(), adl_i[:n_adl].copy())


@njit(cache=True)
def close_prices(ts_s, o, h, lw, c, n_ticks, path_mode, path_key, near_first_prob, vol_scale, time_jitter, g):
    """Path price at global ticks g (each < n_bars * n_ticks): per distinct bar, the prices at
    the ticks asked for (paths.bar_prices_at: the numbers of fill_bar_path, without the price
    pass over the bar's other ticks)."""
    m = g.shape[0]
    out = np.empty(m)
    order = np.argsort(g, kind="mergesort")
    buf = np.empty(max(n_ticks, 1))
    ks = np.empty(m, np.int64)
    vals = np.empty(m)
    jj = 0
    while jj < m:
        b = g[order[jj]] // n_ticks
        e = jj
        while e < m and g[order[e]] // n_ticks == b:
            ks[e - jj] = g[order[e]] - b * n_ticks
            e += 1
        bar_prices_at(o[b], h[b], lw[b], c[b], n_ticks, path_mode, path_key, ts_s[b], near_first_prob,
                      ks[:e - jj], vals, buf, vol_scale, time_jitter)
        for i in range(jj, e):
            out[order[i]] = vals[i - jj]
        jj = e
    return out
