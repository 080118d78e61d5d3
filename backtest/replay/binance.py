"""Binance USDⓈ-M replay: liquidation-price triggers, IOC settlement, fund, ADL (MODEL.md 4)."""
from __future__ import annotations

import logging

import numpy as np

from backtest import execution
from backtest.params import Params
from backtest.path import first_cross, price_at
from backtest.population import Population
from backtest.replay.inputs import PathInput
from backtest.replay.recorder import Recorder, SeriesResult, _finish
from backtest.replay.triggers import TriggerBook
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

    def lp(self, idx) -> np.ndarray:
        return np.asarray(binance.liquidation_price(self.side[idx], self.qty[idx], self.entry[idx],
                                                    self.wallet[idx], self.br), float).reshape(-1)

    def apply_funding(self, bar: int, rate: float) -> None:
        a = self.alive
        price = self.inp.open[bar]
        self.wallet[a] -= self.side[a] * self.qty[a] * price * rate

    def settle(self, rec: Recorder, bar: int, acc: np.ndarray, k: np.ndarray) -> None:
        """Liquidate accounts `acc` (in settlement order) at ticks k of bar."""
        if acc.size == 0:
            return
        inp = self.inp
        mark = price_at(inp.paths, np.full(acc.size, bar), k)
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
            rec.add(bar, "adl", t_s[ma], acc[ma], s[ma], qa[ma], bp, mark[ma], qa[ma] * np.maximum(bp, 0.0),
                    np.where(qm[ma] > 0, 0.0, ul), 0.0)
            # a partial market/ADL split books the user loss once, on the ADL row
            for side_ in (1, -1):
                self.adl_pending[side_] += float(qa[ma][s[ma] == side_].sum())
            self.adl_usd += float(out["adl_notional_usd"].sum())
            self.adl_counterparty_usd += float(out["adl_counterparty_usd"].sum())
        self.qty[acc] = 0.0
        self.alive[acc] = False
        self.liquidated[acc] = True

    def run_adl(self, bar: int) -> np.ndarray:
        """Close the bar's pending ADL quantity against the opposite side, ranked at the bar's
        close. Returns the accounts whose position changed (their trigger must be recomputed)."""
        changed = []
        price = self.inp.close[bar]
        for liq_side, need in list(self.adl_pending.items()):
            if need <= 0:
                continue
            self.adl_pending[liq_side] = 0.0
            cand = np.nonzero(self.alive & (self.side == -liq_side))[0]
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
        ex = np.nonzero(self.exempt & (self.qty > 0))[0]
        if ex.size == 0:
            return 0.0
        eq = self.wallet[ex] + self.side[ex] * self.qty[ex] * (self.inp.close[-1] - self.entry[ex])
        return float(np.maximum(-eq, 0.0).sum())


def run_binance(inp: PathInput, pop: Population, params: Params, *, symbol: str, date) -> SeriesResult:
    """Fast event-driven Binance replay over one path."""
    br = binance.brackets_for(symbol, date, params)
    st = BinanceState(pop, inp, params, br, symbol=symbol)
    rec = Recorder(inp.n_bars)
    books = _binance_books(st)
    fund_at = dict(zip(inp.funding_bar.tolist(), inp.funding_rate.tolist())) if len(inp.funding_bar) else {}
    fund_bars = sorted(fund_at)
    fi = 0
    b = 0
    nb = inp.n_bars
    while b < nb:
        while fi < len(fund_bars) and fund_bars[fi] < b:
            fi += 1
        lt, stp = books[-1].top(), books[1].top()
        nxt = inp.next_bar(b, lt if lt == lt else -np.inf, stp if stp == stp else np.inf)
        nf = fund_bars[fi] if fi < len(fund_bars) else nb
        if nf <= nxt and nf < nb:
            b = nf
            st.apply_funding(b, fund_at[b])
            books = _binance_books(st)
            fi += 1
            rec.bar_fund[b] = st.fund
            lt, stp = books[-1].top(), books[1].top()
            if not ((lt == lt and inp._lo[b] <= lt) or (stp == stp and inp._hi[b] >= stp)):
                b += 1
                continue
        else:
            b = nxt
            if b >= nb:
                break
        acc_l, trig_l = books[-1].take(inp._lo[b])
        acc_s, trig_s = books[1].take(inp._hi[b])
        acc = np.concatenate([acc_l, acc_s])
        trig = np.concatenate([trig_l, trig_s])
        dirs = np.concatenate([np.full(acc_l.size, -1), np.full(acc_s.size, 1)])
        k = np.concatenate([first_cross(inp.paths, np.full(acc_l.size, b), trig_l, -1),
                            first_cross(inp.paths, np.full(acc_s.size, b), trig_s, +1)]).astype(np.int64)
        if np.any(k < 0):  # cannot happen: the extreme is sampled exactly
            bad = k < 0
            log.debug("binance: %d triggers not reached on the path; re-queued", int(bad.sum()))
            for d, book in ((-1, books[-1]), (1, books[1])):
                m = bad & (dirs == d)
                book.put(acc[m], trig[m])
            acc, k = acc[~bad], k[~bad]
        order = np.lexsort((acc, k))
        st.settle(rec, b, acc[order], k[order])
        changed = st.run_adl(b)
        if changed.size:
            live = changed[st.alive[changed]]
            dead = changed[~st.alive[changed]]
            for d, book in ((-1, books[-1]), (1, books[1])):
                book.remove(dead)
                m = st.side[live] == (1 if d == -1 else -1)
                if m.any():
                    book.put(live[m], st.lp(live[m]))
        rec.bar_fund[b] = st.fund
        b += 1
    return _finish(st, rec, inp, "binance", params)


def _binance_books(st: BinanceState) -> dict[int, TriggerBook]:
    n = len(st.qty)
    books = {}
    for d, side in ((-1, 1), (1, -1)):
        idx = np.nonzero(st.alive & ~st.exempt & (st.side == side))[0]
        books[d] = TriggerBook(idx, st.lp(idx) if idx.size else np.zeros(0), d, n)
    return books


