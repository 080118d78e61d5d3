"""BLP side of step 2 (MODEL.md 3.5, 3.6): aggregate per-minute / per-hour capacity, overflow
to the top-n opposing accounts (compiled), and the BLP book's accounting: hedge after the
latency, P&L in its parts, marked to market per bar (Python, vectorised over lots)."""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest import execution
from backtest.params import Params
from backtest.replay.ftx.accounts import (
    C_CAPHOUR,
    C_CAPMIN,
    C_TOPN,
    F_ALIVE,
    F_ENTRY,
    F_QTY,
    F_SIDE,
    F_USD,
    I_NCHG,
    I_POOL_NL,
    NJ,
    Z_COUNTERPARTY,
    Z_CUR_HOUR,
    Z_CUR_MIN,
    Z_POOL_OUT_L,
    Z_USED_HOUR,
    Z_USED_MIN,
    close_out,
    requalify,
    set_qty,
)


@njit(**NJ)
def capacity_room(S, C, t_s):
    """What the BLPs can still take this tick (resets at each new minute / hour)."""
    minute, hour = np.floor(t_s / 60.0), np.floor(t_s / 3600.0)
    if minute != S.Z[Z_CUR_MIN]:
        S.Z[Z_CUR_MIN] = minute
        S.Z[Z_USED_MIN] = 0.0
    if hour != S.Z[Z_CUR_HOUR]:
        S.Z[Z_CUR_HOUR] = hour
        S.Z[Z_USED_HOUR] = 0.0
    return max(0.0, min(C[C_CAPMIN] - S.Z[Z_USED_MIN], C[C_CAPHOUR] - S.Z[Z_USED_HOUR]))


@njit(**NJ)
def _kth_smallest(a, k):
    """np.partition(a, k)[k] (a is reordered): quickselect with three-way partitions (equal
    values are common among sizes). Written out because numba's np.partition costs ~10 s of
    compilation on a cold cache; the value is the same order statistic."""
    lo, hi = 0, a.shape[0] - 1
    while lo < hi:
        x, y, z = a[lo], a[(lo + hi) // 2], a[hi]
        p = max(min(x, y), min(max(x, y), z))          # median of three
        lt, i, gt = lo, lo, hi
        while i <= gt:
            v = a[i]
            if v < p:
                a[i], a[lt] = a[lt], v
                lt += 1
                i += 1
            elif v > p:
                a[i], a[gt] = a[gt], v
                gt -= 1
            else:
                i += 1
        if k < lt:
            hi = lt - 1
        elif k > gt:
            lo = gt + 1
        else:
            return p
    return a[k]


@njit(**NJ)
def _pool(S, C, opp, need, use_pool):
    """Opposing accounts (side opp) eligible for overflow, ascending index. With use_pool: the
    largest ones only, enough to serve `need` exactly as all of them would (sizes only shrink;
    an account opening later raises the outside maximum and forces a rebuild)."""
    slot = 0 if opp > 0 else 1
    F = S.F
    n = F.shape[1]
    if use_pool:
        cnt = S.I[I_POOL_NL + slot]
        if cnt >= 0:
            m = 0
            mn = np.inf
            tot = 0.0
            for j in range(cnt):
                i = S.pool[slot, j]
                if F[F_ALIVE, i] != 0 and F[F_QTY, i] > 0:
                    S.pool[slot, m] = i
                    m += 1
                    mn = min(mn, F[F_QTY, i])
                    tot += F[F_QTY, i]
            S.I[I_POOL_NL + slot] = m
            if m > 0 and mn >= S.Z[Z_POOL_OUT_L + slot] and tot >= need:
                return S.pool[slot, :m].copy()
    cand = np.empty(n, np.int64)
    nc = 0
    for i in range(n):
        if F[F_ALIVE, i] != 0 and F[F_SIDE, i] == opp and F[F_QTY, i] > 0:
            cand[nc] = i
            nc += 1
    cand = cand[:nc].copy()
    if not use_pool:
        return cand
    K = max(64, 8 * int(C[C_TOPN]), nc // 256)
    while True:
        if nc <= K:
            idx = cand.copy()
            out_max = 0.0
        else:
            qv = np.empty(nc)
            for j in range(nc):
                qv[j] = -F[F_QTY, cand[j]]
            thr = -_kth_smallest(qv, K - 1)                # the K-th largest size
            sel = np.empty(nc, np.int64)
            m = 0
            out_max = 0.0
            for j in range(nc):
                q = F[F_QTY, cand[j]]
                if q >= thr:
                    sel[m] = cand[j]
                    m += 1
                elif q > out_max:
                    out_max = q
            idx = sel[:m].copy()
        tot = 0.0
        for i in idx:
            tot += F[F_QTY, i]
        if idx.shape[0] == nc or tot >= need * 1.5:
            break
        K *= 4
    for q in range(idx.shape[0]):                      # (a loop: a slice assignment compiles numba's
        S.pool[slot, q] = idx[q]                       # shape-mismatch error formatting, ~10 s cold)
    S.I[I_POOL_NL + slot] = idx.shape[0]
    S.Z[Z_POOL_OUT_L + slot] = out_max
    return idx.copy()


@njit(**NJ)
def overflow(S, C, side, qty, price_close, mark, use_pool):
    """Close `qty` coins of a side's overflow at its mean BLP price against the top-n largest
    opposing accounts, pro rata (ftx.overflow_allocate); they go on the changed list."""
    opp = -side
    F, aid = S.F, S.aid
    cand = _pool(S, C, opp, qty, use_pool)
    if cand.shape[0] == 0:
        return
    aids = np.empty(cand.shape[0], np.int64)
    for j in range(cand.shape[0]):
        aids[j] = aid[cand[j]]
    cand = cand[np.argsort(aids)]                        # ties go to the lower account id (unique keys)
    qv = np.empty(cand.shape[0])
    for j in range(cand.shape[0]):
        qv[j] = -F[F_QTY, cand[j]]
    order = np.argsort(qv, kind="mergesort")             # largest first, ties by index
    top_n = int(C[C_TOPN])
    remaining = qty
    take = np.zeros(cand.shape[0])
    for start in range(0, order.shape[0], top_n):
        if remaining <= 0:
            break
        end = min(start + top_n, order.shape[0])
        total = 0.0
        for j in range(start, end):
            total += F[F_QTY, cand[order[j]]]
        if remaining >= total:
            for j in range(start, end):
                take[order[j]] = F[F_QTY, cand[order[j]]]
            remaining -= total
        else:
            r = remaining / total
            for j in range(start, end):
                take[order[j]] = F[F_QTY, cand[order[j]]] * r
            remaining = 0.0
    for j in range(cand.shape[0]):
        q = take[j]
        if q <= 0:
            continue
        o = cand[j]
        so = F[F_SIDE, o]
        F[F_USD, o] += so * q * (price_close - F[F_ENTRY, o])
        set_qty(F, S.Z, o, F[F_QTY, o] - q)
        S.Z[Z_COUNTERPARTY] += so * q * (price_close - mark)
        S.chg[S.I[I_NCHG]] = o
        S.I[I_NCHG] += 1
        close_out(F, S.Z, o)
        if F[F_QTY, o] > 0:
            requalify(F, C, o)


# ---------------------------------------------------------------------------------------
# accounting (Python)
# ---------------------------------------------------------------------------------------
LOT_COLS = ("t_s", "side", "qty", "price", "mark", "haircut", "sale_cost", "bar")


def _hedge_prices(inp, hedge, t, t_fill, mark):
    """Hedge fill and end prices in the FTX mark's units: the hedge venue's relative move from
    the takeover to the fill (and to the end) applied to the takeover mark. On one path (no
    hedge venue, or a stand-in on the same bars) that is exactly the path price; on two bar
    sets it keeps the venues' interpolation basis out of the BLP's P&L (review 3.2 item 5)."""
    if hedge is None or hedge is inp or _same_bars(inp, hedge):
        return inp.price_at_time(t_fill), np.full(t.shape, inp.close[-1]), inp
    h_t = hedge.price_at_time(t)
    return mark * hedge.price_at_time(t_fill) / h_t, mark * hedge.close[-1] / h_t, hedge


def _same_bars(a, b) -> bool:
    return a.same_path(b)


def hedge_slippage(t_fill, side_taken, q_usd, hp, hb, params: Params, eta: float, max_slip: float) -> np.ndarray:
    """Slippage of each hedge (MODEL.md 5): v1 each alone at the hedge path's window sigma; v2
    at the sigma of the bar it fills in, the BLP's hedges of one side inside impact.bucket_s
    one metaorder (execution.metaorder_slippages, in fill-time order)."""
    n = len(t_fill)
    if n == 0:
        return np.zeros(0)
    if execution.impact_mode(params) == "v1":
        return np.asarray(execution.sqrt_impact(q_usd, hp.volume_quote[hb], hp.sigma_1m, eta, hp.bar_minutes,
                                                max_slippage=max_slip), float).reshape(-1)
    sig = execution.bar_sigmas(hp.high, hp.low, hp.bar_minutes, hp.sigma_1m, params)[hb]
    order = np.argsort(t_fill, kind="stable")
    f = lambda a: np.ascontiguousarray(np.asarray(a, float)[order])   # noqa: E731
    out = np.empty(n)
    out[order] = execution.metaorder_slippages(f(t_fill), f(-np.asarray(side_taken, float)), f(q_usd),
                                               f(np.asarray(hp.volume_quote, float)[hb]), f(sig), float(eta),
                                               float(hp.bar_minutes), params.impact.bucket_s,
                                               float(max_slip))
    return out


def blp_book(lots: dict, inp, hedge, params: Params, bar_coll: np.ndarray) -> dict:
    """The BLP book's P&L in its parts (MODEL.md 3.6) from the takeover lots, marked at the
    end of the window; plus the cumulative P&L per bar and the gross loss of loss-making
    takeovers. Parts: discount side*q*(mark - price); move until hedged side*h*q*(fill - mark);
    hedge cost (impact + fee); unhedged mark-to-market side*(1-h)*q*(end - mark) plus the
    hedged part's tracking side*h*q*(end - hedge end); collateral haircut gain and sale costs."""
    lat, h = params.ftx.blp.hedge_latency_s, params.ftx.blp.hedge_ratio
    fee, eta = params.execution.taker_fee["binance"], params.execution.eta["binance"]
    max_slip = params.execution.max_slippage
    t, s, q, tp, mk = (lots[k] for k in ("t_s", "side", "qty", "price", "mark"))
    t_fill = t + lat
    hf, he, hp = _hedge_prices(inp, hedge, t, t_fill, mk)
    hb = np.clip(np.searchsorted(hp.ts_s, t_fill, side="right") - 1, 0, hp.n_bars - 1)
    slip = hedge_slippage(t_fill, s, h * q * hf, hp, hb, params, eta, max_slip)
    hq = h * q
    cost = -(hq * hf * slip) - hq * hf * (1 - s * slip) * fee
    me = inp.close[-1]
    discount = s * q * (mk - tp)
    move = s * hq * (hf - mk)
    unhedged = s * (q - hq) * (me - mk) + s * hq * (me - he)
    hair, sale = lots["haircut"], -lots["sale_cost"]
    lot_pnl = discount + move + cost + unhedged + hair + sale
    parts = {"blp_discount_usd": float(discount.sum()), "blp_move_usd": float(move.sum()),
             "blp_hedge_cost_usd": float(cost.sum()), "blp_collateral_sales_usd": float(sale.sum()),
             "blp_haircut_gain_usd": float(hair.sum()), "blp_unhedged_mtm_usd": float(unhedged.sum())}
    parts["blp_pnl_usd"] = float(sum(parts.values()))
    parts["blp_loss_gross_usd"] = float(-lot_pnl[lot_pnl < 0].sum())
    # cumulative P&L per bar: positions marked at the bar close from the lot's bar on, hedges
    # from the bar holding their fill, collateral when sold
    nb = inp.n_bars
    close_t = inp.ts_s + inp.bar_seconds
    lot_bar = np.searchsorted(close_t, t, side="right")
    fill_bar = np.searchsorted(close_t, t_fill, side="right")

    def cum(values, at):
        return np.cumsum(np.bincount(np.minimum(at, nb), weights=values, minlength=nb + 1)[:nb])

    if hp is inp:
        hedge_close = np.broadcast_to(inp.price_at_time(close_t - 1e-6), (1, nb))
        ratio = np.ones(len(t))
    else:
        hedge_close = np.broadcast_to(hp.price_at_time(close_t - 1e-6), (1, nb))
        ratio = mk / hp.price_at_time(t)          # hedge prices in FTX mark units, per lot
    pos = inp.close * cum(s * q, lot_bar) - cum(s * q * tp, lot_bar)
    hedge_leg = -hedge_close[0] * cum(s * hq * ratio, fill_bar) + cum(s * hq * hf, fill_bar) + cum(cost, fill_bar)
    parts["_by_bar"] = np.cumsum(bar_coll) + pos + hedge_leg
    return parts
