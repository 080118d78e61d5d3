"""Binance USDⓈ-M replay: liquidation-price triggers, IOC settlement, fund, ADL (MODEL.md 4).

`run_binance` is the fast path: setup and orchestration here, the bar walk in the compiled
kernel (backtest/replay/binance_kernel.py). `BinanceState` is the per-event arithmetic on numpy
arrays through backtest/venues/binance.py; the naive oracle (backtest/reference.py) drives it
tick by tick, so the parity tests hold the kernel against the venue module's own functions.

Accounts exist in [open_s, close_s) (Population.open_s/close_s): in engine ticks, live at global
ticks g_open <= g < g_close (PathInput.tick_index). A live account pays funding, can be
liquidated and deleveraged; at g_close it closes voluntarily at that tick's path price (its
wallet realises the P&L, no event); an account not live at the end has final qty 0.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backtest import execution
from backtest.params import Params
from backtest.population import Population
from backtest.replay import binance_kernel as K
from backtest.replay.inputs import BLOCK, PathInput
from backtest.replay.recorder import MECHS, Recorder, SeriesResult, _finish, oi_daily_frame
from backtest.venues import binance

log = logging.getLogger(__name__)


def real_weight(pop: Population) -> np.ndarray:
    """Real accounts each simulated account stands for (MODEL.md 2): a simulated account is w
    identical real ones, so every size-dependent term (the bracket of the maintenance margin)
    is evaluated at qty / w and scaled back by w; flows are linear in qty and need no weight.
    The exempt account is one real account."""
    w = np.asarray(pop.weight, float)
    return np.where(pop.exempt | ~(w > 0), 1.0, w)


class BinanceState:
    """Binance USDⓈ-M accounts (one position each, isolated-equivalent wallet) + the fund."""

    def __init__(self, pop: Population, inp: PathInput, params: Params, brackets, *, symbol: str):
        self.p = params
        self.inp = inp
        self.br = brackets
        self.side = pop.side.astype(np.int64)
        self.qty = pop.qty_coin.astype(float).copy()
        self.entry = pop.entry_price.astype(float).copy()
        self.wallet = pop.wallet_usd.astype(float).copy()
        self.exempt = pop.exempt.astype(bool)
        self.wt = real_weight(pop)
        self.alive = self.qty > 0
        self.imp = execution.impact_settings(params, "binance")
        self.sig_bar = _parkinson_sigmas(inp, params)
        self.mo = {1: [-np.inf, 0.0], -1: [-np.inf, 0.0]}   # trade side -> [bucket start, cumulative USD]
        self.fb = {"off": 0.0, "t": -np.inf, 1: [-np.inf, 0.0], -1: [-np.inf, 0.0]}
        self.fee_rate = params.binance.liq_fee_rate
        self.eta = params.execution.eta["binance"]
        self.max_slip = params.execution.max_slippage
        self.adl_enabled = params.binance.adl_enabled
        self.fund = params.binance.insurance_fund_start_usd
        self.fund_start = self.fund
        self.fund_min = self.fund
        self.adl_pending = {1: 0.0, -1: 0.0}     # qty to take from the opposite side at bar end
        self.adl_usd = 0.0
        self.adl_counterparty_usd = 0.0
        self.liquidated = np.zeros(len(self.qty), dtype=bool)
        self.weight = pop.weight
        self.count_weight = pop.count_weight
        self.g_open, self.g_close = live_ticks(inp, pop)
        self.closed = np.zeros(len(self.qty), dtype=bool)
        self.oi_daily = None

    def live(self, g: int) -> np.ndarray:
        """Accounts holding a position at global tick g."""
        return self.alive & (self.g_open <= g) & (self.g_close > g)

    def close_voluntary(self, g: int, price: float) -> None:
        """Accounts whose close_s falls on tick g leave at the path price (no event)."""
        acc = np.nonzero(self.alive & (self.g_close == g) & (self.g_open < g))[0]
        if acc.size:
            self.wallet[acc] += self.side[acc] * self.qty[acc] * (price - self.entry[acc])
            self.qty[acc] = 0.0
            self.alive[acc] = False
            self.closed[acc] = True

    def apply_funding(self, bar: int, rate: float) -> None:
        a = self.live(bar * self.inp.n_ticks)
        price = self.inp.open[bar]
        self.wallet[a] -= self.side[a] * self.qty[a] * price * rate

    def _cost(self, q_usd: float, bar: int) -> float:
        """C(Q): USD impact cost of one order of notional Q in the bar (MODEL.md 5)."""
        inp = self.inp
        return q_usd * float(execution.sqrt_impact(q_usd, inp.volume_quote[bar], self.sig_bar[bar], self.eta,
                                                   inp.bar_minutes, max_slippage=self.max_slip))

    def _metaorder_slip(self, bar: int, t_s: float, trade_side: int, q_usd: float) -> float:
        """A fragment's slippage as part of its side's metaorder: (C(Q) - C(Q - q)) / q over the
        bucket that holds t_s (a new one impact.bucket_s after the open one's start)."""
        if q_usd <= 0:
            return 0.0
        b = self.mo[trade_side]
        if t_s >= b[0] + self.imp["bucket_s"] or t_s < b[0]:
            b[0], b[1] = t_s, 0.0
        q0 = b[1]
        b[1] = q0 + q_usd
        return max(self._cost(b[1], bar) - self._cost(q0, bar), 0.0) / q_usd

    def feedback_offset(self, t_s: float) -> float:
        """The path's feedback offset at t_s (0 with feedback off): the last one, halved every decay_s."""
        off = self.fb["off"]
        if off == 0.0 or t_s <= self.fb["t"]:
            return off
        return off * 0.5 ** ((t_s - self.fb["t"]) / self.imp["decay_s"])

    def _feedback(self, bar: int, t_s: float, trade_side: int, q_usd: float) -> None:
        """The flow beyond baseline_share moves the path by permanent_share times the growth of
        its bucket's square-root impact (signed by the trade side), floored at -0.9."""
        imp, inp = self.imp, self.inp
        off = self.feedback_offset(t_s)
        self.fb["t"] = max(self.fb["t"], t_s)
        self.fb["off"] = off
        x = (1.0 - imp["baseline_share"]) * q_usd
        if x <= 0 or imp["permanent_share"] <= 0:
            return
        b = self.fb[trade_side]
        if t_s >= b[0] + imp["bucket_s"] or t_s < b[0]:
            b[0], b[1] = t_s, 0.0
        x0 = b[1]
        b[1] = x0 + x

        def i_(v):
            return float(execution.sqrt_impact(v, inp.volume_quote[bar], self.sig_bar[bar], self.eta,
                                               inp.bar_minutes, max_slippage=self.max_slip))
        d = imp["permanent_share"] * (i_(b[1]) - i_(x0))
        self.fb["off"] = max(off + trade_side * d, -0.9)

    def settle(self, rec: Recorder, bar: int, acc: np.ndarray, k: np.ndarray, mark=None) -> None:
        """Liquidate accounts `acc` (in settlement order) at ticks k of bar (at `mark`, default
        the path's ticks)."""
        if acc.size == 0:
            return
        inp = self.inp
        mark = np.asarray(self._bar_ticks(bar))[k] if mark is None else np.asarray(mark, float)
        s = self.side[acc]
        q = self.qty[acc]
        notional_mark = q * mark
        if self.imp["metaorders"]:
            t_ = inp.tick_time_s(bar, k)
            slip = np.array([self._metaorder_slip(bar, float(t_[j]), int(-s[j]), float(notional_mark[j]))
                             for j in range(acc.size)])
        else:
            slip = np.asarray(execution.sqrt_impact(notional_mark, inp.volume_quote[bar], self.sig_bar[bar],
                                                    self.eta, inp.bar_minutes, max_slippage=self.max_slip), float)
        fill = np.asarray(execution.fill_price(-s, mark, slip, 0.0), float)
        out = binance.liquidation_outcome(s, q, self.entry[acc], self.wallet[acc], fill, self.fee_rate,
                                          mark=mark, fund_balance_usd=self.fund,
                                          adl_enabled=self.adl_enabled)
        bal = out["fund_balance_after_usd"]
        self.fund_min = min(self.fund_min, float(np.min(bal)))
        self.fund = float(bal[-1])
        t_s = inp.tick_time_s(bar, k)
        qm, qa = out["qty_market"], out["qty_adl"]
        if self.imp["feedback"]:
            for j in range(acc.size):
                if qm[j] > 0:
                    self._feedback(bar, float(t_s[j]), int(-s[j]), float(qm[j] * mark[j]))
        deficit = out["fund_delta_usd"] < 0
        mk = qm > 0
        mech_ioc = mk & ~deficit
        mech_fund = mk & deficit
        for mech, m in (("ioc", mech_ioc), ("fund", mech_fund)):
            if m.any():
                rec.add(bar, mech, t_s[m], acc[m], s[m], qm[m], fill[m], mark[m], qm[m] * fill[m],
                        np.where(qa[m] > 0, 0.0, out["user_loss_usd"][m]), out["fund_delta_usd"][m])
        ma = qa > 0
        if ma.any():
            bp = out["bankruptcy_price"][ma]
            ul = out["user_loss_usd"][ma]
            rec.add(bar, "adl", t_s[ma], acc[ma], s[ma], qa[ma], bp, mark[ma], qa[ma] * np.maximum(bp, 0.0), ul, 0.0)
            # a partial market/ADL split books the user loss once, on the ADL row
            for side_ in (1, -1):
                self.adl_pending[side_] += float(qa[ma][s[ma] == side_].sum())
            # the ADL row carries the user loss (once) also when the fund filled part in the market
            self.adl_usd += float(out["adl_notional_usd"].sum())
            self.adl_counterparty_usd += float(out["adl_counterparty_usd"].sum())
        self.qty[acc] = 0.0
        self.alive[acc] = False
        self.liquidated[acc] = True

    def _bar_ticks(self, bar: int) -> np.ndarray:
        if getattr(self, "_ticks_bar", -1) != bar:
            self._ticks = self.inp.bar_ticks(bar)
            self._ticks_bar = bar
        return self._ticks

    def run_adl(self, bar: int) -> np.ndarray:
        """Close the bar's pending ADL quantity against the opposite side, ranked at the bar's
        close. Returns the accounts whose position changed (their trigger must be recomputed)."""
        changed = []
        price = self.inp.close[bar]
        for liq_side, need in list(self.adl_pending.items()):
            if need <= 0:
                continue
            self.adl_pending[liq_side] = 0.0
            g_last = (bar + 1) * self.inp.n_ticks - 1
            cand = np.nonzero(self.live(g_last) & (self.side == -liq_side))[0]
            if cand.size == 0:
                continue
            upnl = self.side[cand] * self.qty[cand] * (price - self.entry[cand])
            w = self.wt[cand]
            mm = w * np.asarray(binance.maintenance_margin(self.qty[cand] / w * price, self.br), float)
            sc = np.asarray(binance.adl_scores(upnl, self.wallet[cand], mm), float).reshape(-1)
            take = binance.adl_allocate(sc, self.qty[cand], need)
            hit = take > 0
            a = cand[hit]
            frac = take[hit] / self.qty[a]
            self.wallet[a] *= (1.0 - frac)
            self.qty[a] -= take[hit]
            gone = self.qty[a] <= 1e-12 * np.maximum(1.0, take[hit])
            self.qty[a[gone]] = 0.0
            self.alive[a[gone]] = False
            changed.append(a)
        return np.concatenate(changed) if changed else np.zeros(0, np.int64)

    def exempt_deficit(self) -> float:
        return exempt_deficit(self.inp, self.exempt, self.g_open, self.side, self.qty, self.entry, self.wallet)

    def final_qty(self) -> np.ndarray:
        return np.where(self.live(self.inp.n_ticks_total - 1), self.qty, 0.0)


def _parkinson_sigmas(inp: PathInput, params: Params) -> np.ndarray:
    """The sigma each bar's fills pay, in numpy (the oracle's own): v2 the bar's Parkinson
    sigma per minute, ln(H/L) / sqrt(4 ln 2) / sqrt(bar_minutes), floored by
    impact.sigma_floor_1m; v1 the window's sigma."""
    if execution.impact_mode(params) == "v1":
        return np.full(inp.n_bars, float(inp.sigma_1m))
    h, lo = np.asarray(inp.high, float), np.asarray(inp.low, float)
    ok = (h > 0) & (lo > 0) & (h > lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(ok, np.log(np.where(ok, h / np.where(ok, lo, 1.0), 1.0)) / np.sqrt(4 * np.log(2.0)), 0.0)
    return np.maximum(raw / np.sqrt(inp.bar_minutes), params.impact.sigma_floor_1m)


def live_ticks(inp: PathInput, pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """(g_open, g_close): the first and the first-after-last live global ticks of each account."""
    return inp.tick_index(pop.open_s), inp.tick_index(pop.close_s)


def exempt_deficit(inp, exempt, g_open, side, qty, entry, wallet) -> float:
    """Equity below zero of the exempt accounts that held a position in the run, at the last close
    (an account closed earlier holds its realised wallet)."""
    ex = np.nonzero(exempt & (g_open < inp.n_ticks_total))[0]
    if ex.size == 0:
        return 0.0
    eq = wallet[ex] + side[ex] * qty[ex] * (inp.close[-1] - entry[ex])
    return float(np.maximum(-eq, 0.0).sum())



def _funding_arrays(inp: PathInput) -> tuple[np.ndarray, np.ndarray]:
    """Funding bars ascending, one rate per bar (the last print of a bar wins)."""
    if not len(inp.funding_bar):
        return np.zeros(0, np.int64), np.zeros(0)
    fb = np.asarray(inp.funding_bar, np.int64)
    fr = np.asarray(inp.funding_rate, float)
    d = dict(zip(fb.tolist(), fr.tolist(), strict=True))
    bars = np.array(sorted(d), dtype=np.int64)
    return bars, np.array([d[b] for b in bars.tolist()], dtype=float)


def bar_extremes(inp: PathInput) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bar low/high of the path (every path mode stays inside the bar's vertices) and per-block."""
    return inp._lo, inp._hi, inp._blo, inp._bhi


@dataclass
class BinanceOutcome:
    """What the kernel leaves: the fields _finish reads (same names as BinanceState)."""

    qty: np.ndarray
    wallet: np.ndarray
    liquidated: np.ndarray
    fund: float
    fund_start: float
    fund_min: float
    adl_usd: float
    adl_counterparty_usd: float
    deficit: float
    weight: np.ndarray
    final_qty_: np.ndarray
    oi_daily: pd.DataFrame | None = None
    count_weight: np.ndarray | None = None

    def exempt_deficit(self) -> float:
        return self.deficit

    def final_qty(self) -> np.ndarray:
        return self.final_qty_


def impact_vector(params: Params) -> np.ndarray:
    """The kernel's impact switches (binance_kernel.IMP_*) from execution.impact_settings."""
    st = execution.impact_settings(params, "binance")
    v = np.zeros(6)
    v[K.IMP_MO] = 1.0 if st["metaorders"] else 0.0
    v[K.IMP_BUCKET] = st["bucket_s"]
    v[K.IMP_FB] = 1.0 if st["feedback"] else 0.0
    v[K.IMP_BASE], v[K.IMP_PERM], v[K.IMP_DECAY] = st["baseline_share"], st["permanent_share"], st["decay_s"]
    return v


def run_binance(inp: PathInput, pop: Population, params: Params, *, symbol: str, date) -> SeriesResult:
    """Fast Binance replay of one path: the compiled kernel over the population's arrays."""
    br = binance.brackets_for(symbol, date, params)
    side = pop.side.astype(np.int64)
    qty = pop.qty_coin.astype(float).copy()
    entry = pop.entry_price.astype(float).copy()
    wallet = pop.wallet_usd.astype(float).copy()
    exempt = pop.exempt.astype(bool)
    g_open, g_close = live_ticks(inp, pop)
    fb, fr = _funding_arrays(inp)
    lo, hi, blo, bhi = bar_extremes(inp)
    fund_start = params.binance.insurance_fund_start_usd
    qty0 = qty.copy()
    # lazy funding: F after the first k funding bars; an account pays the funding of bar b iff it
    # is live at the bar's first tick (g_open <= b*n < g_close)
    n = inp.n_ticks
    f_cum = np.concatenate([[0.0], np.cumsum(inp.open[fb] * fr)]) if fb.size else np.zeros(1)
    fb_g = fb * n
    i_open = np.searchsorted(fb_g, g_open, side="left")
    fref = f_cum[i_open]
    wref = wallet
    (ef, ei, bar_liq, bar_fund, alive, liquidated, fund, fund_min, adl_usd, adl_cp, adl_take, adl_i) = K.replay_kernel(
        inp.ts_s.astype(np.int64), inp.open, inp.high, inp.low, inp.close, inp.volume_quote.astype(float),
        int(n), float(inp.tick_s), int(inp.path_mode), np.int64(inp.path_key), float(inp.near_first_prob),
        float(inp.vol_scale), float(inp.time_jitter),
        execution.bar_sigmas(inp.high, inp.low, inp.bar_minutes, inp.sigma_1m, params), float(inp.bar_minutes),
        lo, hi, blo, bhi, int(BLOCK), fb, f_cum,
        side, qty, real_weight(pop), entry, wref, fref, exempt, g_open, g_close,
        br.mmr.astype(float), br.cum.astype(float), br.caps.astype(float),
        params.execution.eta["binance"], params.execution.max_slippage,
        params.binance.adl_enabled, fund_start, impact_vector(params))
    # wallets: funding paid until the account's close (or the end), then closes realise the path price
    f_end = f_cum[np.maximum(np.searchsorted(fb_g, g_close, side="left"), i_open)]
    wallet = wref - side * qty * (f_end - fref)
    g_total = inp.n_ticks_total
    closing = np.nonzero(alive & (g_close < g_total) & (g_open < g_close) & (qty > 0))[0]
    q_close = qty[closing].copy()
    if closing.size:
        p = K.close_prices(inp.ts_s.astype(np.int64), inp.open, inp.high, inp.low, inp.close, int(inp.n_ticks),
                           int(inp.path_mode), np.int64(inp.path_key), float(inp.near_first_prob),
                           float(inp.vol_scale), float(inp.time_jitter), g_close[closing])
        wallet[closing] += side[closing] * qty[closing] * (p - entry[closing])
        qty[closing] = 0.0
    live_end = alive & (g_open <= g_total - 1) & (g_close > g_total - 1)
    final_qty = np.where(live_end, qty, 0.0)
    rec = Recorder(inp.n_bars)
    rec.set_block(ef.T, ei[:, K.EI_ACC], ei[:, K.EI_SIDE], ei[:, K.EI_MECH])     # (EF_* is FLOAT_COLS' order)
    for j, m in enumerate(MECHS):
        rec.bar_liq[m] = bar_liq[:, j]
    rec.bar_fund = bar_fund
    # open interest per side at each day's end, from the quantity changes
    opened = np.nonzero((qty0 > 0) & (g_open < g_close) & (g_open < g_total))[0]
    t_adl = inp.ts_s[adl_i[:, 0]] + (n - 1) * inp.tick_s if len(adl_i) else np.zeros(0)
    dt_ = np.concatenate([_tick_time(inp, np.maximum(g_open[opened], 0)), ef[:, K.EF_T], t_adl,
                          _tick_time(inp, g_close[closing])])
    ds = np.concatenate([side[opened], ei[:, K.EI_SIDE], adl_i[:, 1], side[closing]])
    dq = np.concatenate([qty0[opened], -ef[:, K.EF_QTY], -adl_take, -q_close])
    out = BinanceOutcome(qty=qty, wallet=wallet, liquidated=liquidated, fund=float(fund), fund_start=fund_start,
                         fund_min=float(fund_min), adl_usd=float(adl_usd), adl_counterparty_usd=float(adl_cp),
                         deficit=exempt_deficit(inp, exempt, g_open, side, final_qty, entry, wallet),
                         weight=pop.weight, final_qty_=final_qty, count_weight=pop.count_weight,
                         oi_daily=oi_daily_frame(inp, dt_, ds, dq))
    return _finish(out, rec, inp, "binance", params)


def _tick_time(inp: PathInput, g: np.ndarray) -> np.ndarray:
    g = np.asarray(g, np.int64)
    if g.size == 0:
        return np.zeros(0)
    n = inp.n_ticks
    return inp.ts_s[g // n] + (g % n) * inp.tick_s
