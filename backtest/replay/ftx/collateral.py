"""Non-USD collateral (MODEL.md 3.2, 3.5): same-coin balances tracked exactly, other coins'
weighted value folded into USD and revalued at each step of their price paths, and the
step-2 transfer of collateral to the BLP (haircut gain, sale impact and fee)."""
from __future__ import annotations

import numpy as np
from numba import njit

from backtest.execution import FLOW_COLLATERAL, metaorder_slippage
from backtest.params import Params
from backtest.path import CollateralPath
from backtest.replay.ftx.accounts import (
    C_BM,
    C_BUCKET,
    C_ETA,
    C_FEE,
    C_MAXSLIP,
    C_MO,
    C_NC,
    F_CBAL,
    F_CW,
    F_USD,
    I_REVALS,
    MO_OTHER,
    NJ,
    Z_COLL_OTHER,
    Z_HAIRCUT,
    Z_SALECOST,
)
from backtest.venues import ftx


def other_collateral(pop, params: Params, coin: str, inp, paths: dict[str, CollateralPath] | None,
                     wt: np.ndarray | None = None):
    """Arrays of the other coins (not USD, not the market's coin) with a usable start price:
    balances, effective weights, folded values (nc x n), price, volume, path flags, and the
    revaluation schedule (bar, coin, price, volume) sorted by bar, plus holders (CSR). The
    haircut's size term is evaluated at one real account's balance (balance / wt; MODEL.md 2)."""
    n = len(pop)
    wt = np.ones(n) if wt is None else np.asarray(wt, float)
    paths = {c: cp for c, cp in (paths or {}).items() if c != coin}
    coins, bal, weff, val, price, ohas, osig, obm = [], [], [], [], [], [], [], []
    for c, b in pop.collateral.items():
        if c == coin or c == "USD":
            continue
        w, _, f = ftx.collateral_weights(c, params)
        p = pop.collateral_prices.get(c)
        if p is None or not np.isfinite(p) or p <= 0:
            continue
        b = np.asarray(b, float).copy()
        we = np.asarray(ftx.effective_weight(b / wt, w, f), float).reshape(-1) if n else np.zeros(0)
        coins.append(c)
        bal.append(b)
        weff.append(we)
        val.append(b * float(p) * we)
        price.append(float(p))
        cp = paths.get(c)
        ohas.append(1.0 if cp is not None else 0.0)
        osig.append(cp.sigma_1m if cp is not None else inp.sigma_1m)
        obm.append(cp.bar_minutes if cp is not None else inp.bar_minutes)
    nc = len(coins)
    mk = lambda L: np.array(L, float).reshape(nc, n) if nc else np.zeros((0, n))  # noqa: E731
    sched = []
    for ci, c in enumerate(coins):
        cp = paths.get(c)
        if cp is None:
            continue
        bars, steps = cp.steps_by_bar(inp.ts_s)
        for b_, i_ in zip(bars.tolist(), steps.tolist(), strict=True):
            sched.append((b_, ci, float(cp.price[i_]), float(cp.volume_quote[i_])))
    sched.sort(key=lambda r: (r[0], r[1]))
    rv = (np.array([r[0] for r in sched], np.int64), np.array([r[1] for r in sched], np.int64),
          np.array([r[2] for r in sched], float), np.array([r[3] for r in sched], float))
    ptr = [0]
    idx = []
    for ci in range(nc):
        h = np.nonzero(bal[ci] != 0)[0]
        idx.append(h)
        ptr.append(ptr[-1] + h.size)
    holders = (np.array(ptr, np.int64), np.concatenate(idx).astype(np.int64) if idx else np.zeros(0, np.int64))
    return coins, mk(bal), mk(weff), mk(val), np.array(price, float), np.array(ohas, float), \
        np.array(osig, float), np.array(obm, float), rv, holders


@njit(**NJ)
def revalue(S, rv_bar, rv_coin, rv_price, rv_vol, hptr, hidx, ptr, bar, mark, chl):
    """Apply the collateral steps scheduled at `bar` (from rv index `ptr`): the holders' folded
    value moves to the new price. Sets mark[i] for changed accounts and lists them in chl;
    returns (new ptr, count)."""
    nchg = 0
    F, obal, ow, oval = S.F, S.obal, S.ow, S.oval
    while ptr < rv_bar.shape[0] and rv_bar[ptr] < bar:
        ptr += 1
    while ptr < rv_bar.shape[0] and rv_bar[ptr] == bar:
        c = rv_coin[ptr]
        p = rv_price[ptr]
        S.oprice[c] = p
        S.ovol[c] = rv_vol[ptr]
        if hptr[c + 1] > hptr[c]:
            S.I[I_REVALS] += 1
        for h in range(hptr[c], hptr[c + 1]):
            i = hidx[h]
            new = obal[c, i] * p * ow[c, i]
            F[F_USD, i] += new - oval[c, i]
            oval[c, i] = new
            if not mark[i]:
                mark[i] = True
                chl[nchg] = i
                nchg += 1
        ptr += 1
    return ptr, nchg


@njit(inline="always", **NJ)
def sqrt_impact(q_usd, vol, sig, eta, bm, max_slip):
    """execution.sqrt_impact for one order."""
    if q_usd <= 0:
        return 0.0
    v_min = vol / bm
    raw = eta * sig * np.sqrt(q_usd / v_min) if v_min > 0 else np.inf
    return min(raw, max_slip)


@njit(inline="always", **NJ)
def sale_cost(S, row, t_s, qty, price, vol, sig, C, bm):
    """Impact + fee of selling `qty` coins at `price` (execution.collateral_sale): v1 the order
    alone, v2 as part of the coin's metaorder (row `row` of S.mo_*; MODEL.md 5)."""
    if C[C_MO] > 0:
        slip = metaorder_slippage(S.mo_start, S.mo_cum, row, -1, t_s, qty * price, vol, sig, C[C_ETA], bm,
                                  C[C_BUCKET], C[C_MAXSLIP])
    else:
        slip = sqrt_impact(qty * price, vol, sig, C[C_ETA], bm, C[C_MAXSLIP])
    ex = price * (1 - slip)
    return qty * abs(ex - price) + qty * ex * C[C_FEE]


@njit(**NJ)
def transfer(S, C, i, cf, price, bar_vol, bar_sig, bar, t_s):
    """Step 2: the fraction cf of account i's non-USD collateral passes to the BLP with the USD
    debt that offsets its weighted value; the BLP sells it (the market's coin at the bar's
    sigma, other coins at their path's). Returns (haircut gain, sale cost)."""
    hair = 0.0
    cost = 0.0
    F = S.F
    c = F[F_CBAL, i] * cf                    # same coin, at the market's price
    pays = c * price * F[F_CW, i]
    g = c * price - pays
    F[F_USD, i] += pays
    F[F_CBAL, i] -= c
    if c > 0:
        hair += g
        cost += sale_cost(S, FLOW_COLLATERAL, t_s, c, price, bar_vol, bar_sig, C, C[C_BM])
    other_hair = 0.0
    other_cost = 0.0
    for k in range(int(C[C_NC])):
        bal = S.obal[k, i]
        if bal <= 0:
            continue
        op = S.oprice[k]
        cq = bal * cf
        w = S.ow[k, i]
        pays = cq * op * w
        nb = bal - cq
        new = nb * op * w
        F[F_USD, i] += pays - (S.oval[k, i] - new)
        S.oval[k, i] = new
        S.obal[k, i] = nb
        if S.ohas[k] > 0:
            vol, sig, bm = S.ovol[k], S.osig[k], S.obm[k]
        else:
            vol, sig, bm = bar_vol, bar_sig, C[C_BM]
        if not np.isfinite(vol):
            vol = bar_vol
        other_hair += cq * op - pays
        other_cost += sale_cost(S, MO_OTHER + k, t_s, cq, op, vol, sig, C, bm)
    S.Z[Z_HAIRCUT] += hair + other_hair
    S.Z[Z_SALECOST] += cost + other_cost
    S.Z[Z_COLL_OTHER] += other_hair - other_cost
    gain = hair - cost + other_hair - other_cost
    S.bar_coll[bar] += gain
    return hair + other_hair, cost + other_cost
