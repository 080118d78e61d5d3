"""Python side of the FTX replay: arrays in, kernel call, results out (MODEL.md 3, 7).

`prepare` turns a Population and a PathInput into the kernels' structure of arrays;
`replay` runs the event-driven kernel (loop.run_kernel) or the naive oracle's loop
(loop.run_oracle) and returns a SeriesResult through the recorder's `_finish`, with the
BLP book's accounting parts, the fund's gross flows and `oi_daily`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from backtest import execution
from backtest import rng as crng
from backtest.params import Params
from backtest.path import CollateralPath
from backtest.population import Population
from backtest.replay.ftx import accounts as A
from backtest.replay.ftx.blp import LOT_COLS, blp_book
from backtest.replay.ftx.collateral import other_collateral
from backtest.replay.ftx.loop import run_kernel, run_oracle
from backtest.replay.inputs import PathInput
from backtest.replay.recorder import FLOAT_COLS, MECHS, Recorder, SeriesResult, _finish
from backtest.venues import ftx


def prepare(inp: PathInput, pop: Population, params: Params, *, symbol: str, seed: int, deterministic: bool,
            collateral: dict[str, CollateralPath] | None, permute: bool = False):
    """The kernels' arrays. permute: hold the accounts sorted by (trigger direction, trigger
    price: descending for long-like accounts, ascending for short-like ones), so that the
    accounts a crash reaches together are adjacent in memory and in the order it reaches them
    (the state maps back through `aid`)."""
    n = len(pop)
    coin = ftx.coin_of(symbol)
    wt = A.real_weight(pop)         # size terms at one real account's size (MODEL.md 2)
    coins, obal, ow, oval, oprice, ohas, osig, obm, rv, holders = other_collateral(pop, params, coin, inp, collateral,
                                                                                   wt)
    usd = pop.wallet_usd.astype(float).copy() + (oval.sum(axis=0) if len(coins) else 0.0) + \
        np.asarray(pop.collateral.get("USD", np.zeros(n)), float)
    cbal = np.asarray(pop.collateral.get(coin, np.zeros(n)), float).copy()
    w, _, f = ftx.collateral_weights(coin, params)
    cw = np.asarray(ftx.effective_weight(cbal / wt, w, f), float).reshape(-1) if n else np.zeros(0)
    lev = np.asarray(pop.account_leverage if pop.account_leverage is not None else pop.leverage, float)
    qty = pop.qty_coin.astype(float).copy()
    side = pop.side.astype(np.int64)
    t0 = int(inp.ts_s[0]) if inp.n_bars else 0
    open_s = np.asarray(pop.open_s, np.int64)
    close_s = np.asarray(pop.close_s, np.int64)
    status = np.where((open_s <= t0) & (t0 < close_s), A.OPEN, np.where(open_s < close_s, A.PENDING, A.CLOSED))
    status = np.where((status == A.PENDING) & (open_s <= t0), A.CLOSED, status).astype(np.int8)
    alive = (status == A.OPEN) & (qty > 0)
    C = A.constants(inp, params, symbol, deterministic, len(coins))
    Z = np.zeros(A.NZ)
    Z[A.Z_FUND] = Z[A.Z_FUND_MIN] = C[A.C_FUND0]
    Z[A.Z_CUR_MIN] = Z[A.Z_CUR_HOUR] = -1.0
    Z[A.Z_BELOW_SINCE] = -1.0
    Z[A.Z_QL] = float(qty[alive & (side > 0)].sum())
    Z[A.Z_QS] = float(qty[alive & (side < 0)].sum())
    I = np.zeros(A.NI, np.int64)  # noqa: E741 (the int state vector, as Z is the float one: FtxArrays.I)
    I[A.I_POOL_NL] = I[A.I_POOL_NS] = -1
    nb = inp.n_bars
    if n and (np.any(~np.isfinite(lev)) or np.any(lev <= 0)):
        raise ftx.LeverageError("leverage must be a positive finite number")
    imf = np.maximum(1.0 / lev, C[A.C_IMF_F] * np.sqrt(np.abs(qty) / wt))
    mmf = np.maximum(C[A.C_MMF_FLOOR], C[A.C_MMF_RATIO] * imf)
    acmf = np.maximum(mmf * C[A.C_ACMF_RATIO], mmf - C[A.C_ACMF_OFF])
    entry = np.asarray(pop.entry_price, float)
    order = _trigger_order(side, qty, entry, usd, cbal, cw, mmf) if permute and n > 1 else None

    def perm(v):            # per-account array in the kernel's order
        return v if order is None else np.take(v, order, axis=-1)

    F = np.empty((A.NF, n))                          # one contiguous row per field, in the kernel's order
    cols = {A.F_QTY: qty, A.F_USD: usd, A.F_CBAL: cbal, A.F_CW: cw, A.F_SIDE: side, A.F_ENTRY: entry,
            A.F_MMF: mmf, A.F_ACMF: acmf, A.F_LEV: lev, A.F_WT: wt, A.F_ALIVE: alive,
            A.F_EXEMPT: np.asarray(pop.exempt, np.bool_), A.F_STATUS: status}
    for c in range(A.NF):
        F[c] = perm(cols[c]) if c in cols else 0.0
    aid = np.arange(n, dtype=np.int64) if order is None else order.astype(np.int64)
    S = A.FtxArrays(F=F, open_s=perm(open_s), close_s=perm(close_s), obal=perm(obal), ow=perm(ow), oval=perm(oval),
                    oprice=oprice, ovol=np.full(len(coins), np.nan), ohas=ohas, osig=osig, obm=obm, Z=Z, I=I,
                    chg=np.zeros(max(n, 1), np.int64), pool=np.zeros((2, max(n, 1)), np.int64),
                    bar_fund=np.full(nb, np.nan), bar_coll=np.zeros(nb), bar_ql=np.full(nb, np.nan),
                    bar_qs=np.full(nb, np.nan), aid=aid,
                    mo_start=np.full((A.MO_OTHER + len(coins), 2), -np.inf),
                    mo_cum=np.zeros((A.MO_OTHER + len(coins), 2)), fb=execution.new_feedback_state(1),
                    hid=A.counter_hashes(aid))
    if order is not None:
        holders = _holders(S.obal)
    status = F[A.F_STATUS, :]
    pend = np.nonzero(status == A.PENDING)[0]
    open_order = pend[np.argsort(S.open_s[pend], kind="stable")].astype(np.int64)
    cl = np.nonzero((status != A.CLOSED) & (S.close_s < np.iinfo(np.int64).max // 4))[0]
    close_order = cl[np.argsort(S.close_s[cl], kind="stable")].astype(np.int64)
    K = np.array([int(seed) & 0xFFFFFFFFFFFFFFFF, crng.name_id("ftx", symbol.upper())], dtype=np.uint64)
    return S, C, K, rv, holders, open_order, close_order


def _trigger_order(side, qty, entry, usd, cbal, cw, mmf):
    """The kernel's account order: long-like accounts by descending trigger, short-like by
    ascending (a move takes accounts from the trees in ascending index, so they join the end
    of the kernel's sorted active set); accounts without a trigger last in their group."""
    with np.errstate(divide="ignore", invalid="ignore"):
        trig = (side * qty * entry - usd) / (cbal * cw + side * qty - mmf * qty)
    trig = np.where(np.isfinite(trig) & (trig > 0), trig, np.inf)
    d = np.where(usd - side * qty * entry < 0, -1, 1)
    return np.lexsort((np.where(d < 0, -trig, trig), d)).astype(np.int64)


def _holders(obal):
    """Holders of each other coin (CSR: ptr, index) in the kernel's order."""
    ptr, idx = [0], []
    for c in range(obal.shape[0]):
        h = np.nonzero(obal[c] != 0)[0]
        idx.append(h)
        ptr.append(ptr[-1] + h.size)
    return np.array(ptr, np.int64), np.concatenate(idx).astype(np.int64) if idx else np.zeros(0, np.int64)


class FtxState:
    """The FTX replay's state after a run, as the recorder's `_finish` reads it."""

    def __init__(self, S, C, lots: dict, book: dict, inp: PathInput):
        self.S = S

        def orig(v):
            out = np.empty_like(v)
            out[S.aid] = v
            return out
        F = S.F
        self.qty, self.usd = orig(F[A.F_QTY, :]), orig(F[A.F_USD, :])
        self.liquidated = orig(F[A.F_LIQ, :] != 0)
        self.exempt = F[A.F_EXEMPT, :] != 0
        self.fund = float(S.Z[A.Z_FUND])
        self.fund_start = float(C[A.C_FUND0])
        self.fund_min = float(S.Z[A.Z_FUND_MIN])
        self.counterparty_usd = float(S.Z[A.Z_COUNTERPARTY])
        self.revaluations = int(S.I[A.I_REVALS])
        self.blp_collateral_other_usd = float(S.Z[A.Z_COLL_OTHER])
        self.takeover_usd = float(S.Z[A.Z_TAKEOVER])
        self.book = book
        self.inp = inp

    def blp_pnl(self) -> tuple[float, float]:
        return self.book["blp_pnl_usd"], self.takeover_usd

    def blp_pnl_by_bar(self) -> np.ndarray:
        return self.book["_by_bar"]

    def exempt_deficit(self) -> float:
        F = self.S.F
        ex = np.nonzero(self.exempt & (F[A.F_QTY, :] > 0) & (F[A.F_STATUS, :] == A.OPEN))[0]
        if ex.size == 0:
            return 0.0
        p = self.inp.close[-1]
        R = F[:, ex]
        tav = R[A.F_USD] + R[A.F_CBAL] * p * R[A.F_CW] + R[A.F_SIDE] * R[A.F_QTY] * (p - R[A.F_ENTRY])
        return float(np.maximum(-tav, 0.0).sum())

    def extra_totals(self) -> dict:
        """Loss accounting (MODEL.md 3.6, 3.7; brief interface 2)."""
        Z = self.S.Z
        end_t = float(self.inp.ts_s[-1] + self.inp.bar_seconds) if self.inp.n_bars else 0.0
        below = float(Z[A.Z_BELOW_S]) + (end_t - float(Z[A.Z_BELOW_SINCE]) if Z[A.Z_BELOW_SINCE] >= 0 else 0.0)
        out = {k: float(v) for k, v in self.book.items() if not k.startswith("_")}
        income, payouts = float(Z[A.Z_INCOME]), float(Z[A.Z_PAYOUT])
        exempt = self.exempt_deficit()
        out.update(fund_income_usd=income, fund_payouts_usd=payouts,
                   fund_drawdown_usd=max(0.0, self.fund_start - min(self.fund_min, self.fund)),
                   fund_time_below_start_s=below, exempt_deficit_usd=exempt)
        blp_loss = max(0.0, -out["blp_pnl_usd"])
        fund_net = max(0.0, payouts - income)
        out.update(blp_loss_usd=blp_loss, fund_net_payout_usd=fund_net,
                   house_loss_usd=blp_loss + fund_net + exempt,
                   house_loss_gross_usd=out["blp_loss_gross_usd"] + fund_net + exempt)
        return out


def replay(inp: PathInput, pop: Population, params: Params, *, symbol: str, seed: int, deterministic: bool,
           hedge: PathInput | None, collateral, oracle: bool = False) -> SeriesResult:
    S, C, K, rv, holders, open_order, close_order = prepare(inp, pop, params, symbol=symbol, seed=seed,
                                                            deterministic=deterministic, collateral=collateral,
                                                            permute=not oracle)
    fn = run_oracle if oracle else run_kernel
    q0 = (float(S.Z[A.Z_QL]), float(S.Z[A.Z_QS]))
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)   # noqa: E731
    pf = np.array([inp.near_first_prob, inp.vol_scale, inp.time_jitter], float)
    sig = execution.bar_sigmas(inp.high, inp.low, inp.bar_minutes, inp.sigma_1m, params)
    ev, lt = fn(S, C, K, inp.ts_s.astype(np.int64), f64(inp.volume_quote), sig, f64(inp.open), f64(inp.high),
                f64(inp.low), f64(inp.close), int(inp.path_mode), np.int64(inp.path_key), pf,
                int(inp.n_ticks), *rv, *holders, open_order, close_order)
    rec = Recorder(inp.n_bars)
    # ev: the events as typed columns in (time, account) order (events.event_columns)
    blk, acc, side, mech8, bar = ev
    rec.set_block(blk, acc, side, mech8)
    notional = blk[FLOAT_COLS.index("notional_usd")]
    mech = mech8.astype(np.int64)
    for mi, m in enumerate(MECHS):
        sel = mech == mi
        if sel.any():
            rec.bar_liq[m] = np.bincount(bar[sel], weights=notional[sel], minlength=inp.n_bars).astype(float)
    rec.bar_fund = S.bar_fund
    lots = dict(zip(LOT_COLS, lt.T, strict=True)) if len(lt) else {c: np.zeros(0) for c in LOT_COLS}
    book = blp_book(lots, inp, hedge, params, S.bar_coll)
    st = FtxState(S, C, lots, book, inp)
    res = _finish(st, rec, inp, "ftx", params)
    res.totals.update(st.extra_totals())
    res.oi_daily = oi_daily(S, inp, q0)
    return res


def oi_daily(S, inp: PathInput, q0: tuple[float, float]) -> pd.DataFrame:
    """Open notional of the live accounts per side at each UTC day's end (the last bar of the
    day, at its close price)."""
    if inp.n_bars == 0:
        return pd.DataFrame({"date": pd.Series([], dtype="datetime64[ns, UTC]"), "side": [], "oi_usd": []})
    ql = pd.Series(S.bar_ql).ffill().fillna(q0[0]).to_numpy()
    qs = pd.Series(S.bar_qs).ffill().fillna(q0[1]).to_numpy()
    day = inp.ts_s // 86400
    last = np.r_[day[1:] != day[:-1], True]
    idx = np.nonzero(last)[0]
    px = inp.close[idx]
    return pd.DataFrame({"date": pd.to_datetime(np.repeat(day[idx] * 86400, 2), unit="s", utc=True),
                         "side": np.tile(["long", "short"], idx.size),
                         "oi_usd": np.column_stack([ql[idx] * px, qs[idx] * px]).reshape(-1)})
