"""The naive oracle: every account, every tick (MODEL.md 3-4), for the parity tests.

No trigger prices, no sorting, no event search: at each engine tick of each bar it asks the
venue engine, for every live account, whether the account is in trouble at that tick's
path price (Binance: `binance.is_liquidatable`, MM >= WB + uPnL; FTX: MF < MMF from
`ftx.account_tav_mf` / `ftx.margin_thresholds`), and settles those with the same
per-event arithmetic the fast replay uses (`BinanceState.settle`, the FTX engine tick).
Cost: bars x ticks x accounts. Small populations only.
"""
from __future__ import annotations

import numpy as np

from backtest.params import Params
from backtest.path import tick_prices
from backtest.population import Population
from backtest.replay import BinanceState, PathInput, Recorder, SeriesResult, _finish
from backtest.replay.ftx import resolve_seed
from backtest.replay.ftx.state import replay as ftx_replay
from backtest.venues import binance


def reference_binance(inp: PathInput, pop: Population, params: Params, *, symbol: str, date) -> SeriesResult:
    br = binance.brackets_for(symbol, date, params)
    st = BinanceState(pop, inp, params, br, symbol=symbol)
    rec = Recorder(inp.n_bars)
    fund_at = dict(zip(inp.funding_bar.tolist(), inp.funding_rate.tolist()))
    for b in range(inp.n_bars):
        if b in fund_at:
            st.apply_funding(b, fund_at[b])
        prices = tick_prices(inp.paths, b)
        for k in range(inp.n_ticks):
            cand = np.nonzero(st.alive & ~st.exempt)[0]
            if cand.size == 0:
                break
            hit = np.asarray(binance.is_liquidatable(st.side[cand], st.qty[cand], st.entry[cand], st.wallet[cand],
                                                     np.full(cand.size, prices[k]), br)).reshape(-1)
            acc = cand[hit]
            if acc.size:
                st.settle(rec, b, acc, np.full(acc.size, k, dtype=np.int64))
        st.run_adl(b)
        rec.bar_fund[b] = st.fund
    return _finish(st, rec, inp, "binance", params)


def reference_ftx(inp: PathInput, pop: Population, params: Params, *, symbol: str, date=None,
                  seed: int | None = None, deterministic: bool | None = None, hedge: PathInput | None = None,
                  collateral=None, rng: np.random.Generator | None = None) -> SeriesResult:
    """Every bar, every tick, every open account's MF against its MMF (ftx loop.run_oracle): no
    trigger prices, no trees, no skipping, overflow over all opposing accounts; the same engine
    tick and the same counter-based draws as the fast kernel."""
    seed, det = resolve_seed(seed, deterministic, rng)
    return ftx_replay(inp, pop, params, symbol=symbol, seed=seed, deterministic=det, hedge=hedge,
                      collateral=collateral, oracle=True)
