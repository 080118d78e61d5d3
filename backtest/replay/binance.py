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
        self.alive = self.qty > 0
        self.fee_rate = float(params.get("binance.liq_fee_rate"))
        self.eta = float(params.get("execution.eta.binance"))
        self.max_slip = float(params.get("execution.max_slippage"))
        self.adl_enabled = bool(params.get("binance.adl_enabled"))
        self.fund = float(params.get("binance.insurance_fund_start_usd"))
        self.fund_start = self.fund
        self.fund_min = self.fund
        self.adl_pending = {1: 0.0, -1: 0.0}     # qty to take from the opposite side at bar end
        self.adl_usd = 0.0
        self.adl_counterparty_usd = 0.0
        self.liquidated = np.zeros(len(self.qty), dtype=bool)
        self.weight = pop.weight
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

    def settle(self, rec: Recorder, bar: int, acc: np.ndarray, k: np.ndarray) -> None:
        """Liquidate accounts `acc` (in settlement order) at ticks k of bar."""
        if acc.size == 0:
            return
        inp = self.inp
        mark = np.asarray(self._bar_ticks(bar))[k]
        s = self.side[acc]
        q = self.qty[acc]
        notional_mark = q * mark
        slip = np.asarray(execution.sqrt_impact(notional_mark, inp.volume_quote[bar], inp.sigma_1m, self.eta,
                                                inp.bar_minutes, max_slippage=self.max_slip), float)
        fill = np.asarray(execution.fill_price(-s, mark, slip, 0.0), float)
        out = binance.liquidation_outcome(s, q, self.entry[acc], self.wallet[acc], fill, self.fee_rate,
                                          mark=mark, fund_balance_usd=self.fund,
                                          adl_enabled=self.adl_enabled)
        bal = out["fund_balance_after_usd"]
        self.fund_min = min(self.fund_min, float(np.min(bal)))
        self.fund = float(bal[-1])
        t_s = inp.tick_time_s(bar, k)
        qm, qa = out["qty_market"], out["qty_adl"]
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
            mm = np.asarray(binance.maintenance_margin(self.qty[cand] * price, self.br), float)
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
    d = dict(zip(fb.tolist(), fr.tolist()))
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

    def exempt_deficit(self) -> float:
        return self.deficit

    def final_qty(self) -> np.ndarray:
        return self.final_qty_


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
    fund_start = float(params.get("binance.insurance_fund_start_usd"))
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
        int(n), float(inp.tick_s), int(inp.path_mode), np.uint64(inp.path_key), float(inp.near_first_prob),
        float(inp.sigma_1m), float(inp.bar_minutes), lo, hi, blo, bhi, int(BLOCK), fb, f_cum,
        side, qty, entry, wref, fref, exempt, g_open, g_close,
        br.mmr.astype(float), br.cum.astype(float), br.caps.astype(float),
        float(params.get("execution.eta.binance")), float(params.get("execution.max_slippage")),
        bool(params.get("binance.adl_enabled")), fund_start)
    # wallets: funding paid until the account's close (or the end), then closes realise the path price
    f_end = f_cum[np.maximum(np.searchsorted(fb_g, g_close, side="left"), i_open)]
    wallet = wref - side * qty * (f_end - fref)
    g_total = inp.n_ticks_total
    closing = np.nonzero(alive & (g_close < g_total) & (g_open < g_close) & (qty > 0))[0]
    q_close = qty[closing].copy()
    if closing.size:
        p = K.close_prices(inp.ts_s.astype(np.int64), inp.open, inp.high, inp.low, inp.close, int(inp.n_ticks),
                           int(inp.path_mode), np.uint64(inp.path_key), float(inp.near_first_prob), g_close[closing])
        wallet[closing] += side[closing] * qty[closing] * (p - entry[closing])
        qty[closing] = 0.0
    live_end = alive & (g_open <= g_total - 1) & (g_close > g_total - 1)
    final_qty = np.where(live_end, qty, 0.0)
    rec = Recorder(inp.n_bars)
    rec.set_arrays(t_s=ef[:, K.EF_T], account=ei[:, K.EI_ACC], side=ei[:, K.EI_SIDE], mechanism=ei[:, K.EI_MECH],
                   qty_coin=ef[:, K.EF_QTY], price=ef[:, K.EF_PRICE], mark_price=ef[:, K.EF_MARK],
                   notional_usd=ef[:, K.EF_NOTIONAL], user_loss_usd=ef[:, K.EF_USER_LOSS],
                   fund_delta_usd=ef[:, K.EF_FUND_DELTA])
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
                         weight=pop.weight, final_qty_=final_qty,
                         oi_daily=oi_daily_frame(inp, dt_, ds, dq))
    return _finish(out, rec, inp, "binance", params)


def _tick_time(inp: PathInput, g: np.ndarray) -> np.ndarray:
    g = np.asarray(g, np.int64)
    if g.size == 0:
        return np.zeros(0)
    n = inp.n_ticks
    return inp.ts_s[g // n] + (g % n) * inp.tick_s
