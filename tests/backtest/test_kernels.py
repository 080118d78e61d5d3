"""The compiled Binance replay: its path function, accounts opening and closing mid-run (fast kernel ==
naive oracle), the model's open interest per day, and the loss accounting identities."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from backtest.path import bar_paths, tick_prices
from backtest.paths import fill_bar_path
from backtest.population import NEVER, OPEN_ALWAYS
from backtest.reference import reference_binance
from backtest.replay import PathInput, run_binance
from backtest.replay.recorder import BLP_PARTS, loss_accounting
from tests.backtest._synth import DATE, crash_bars, gap_down_bars, setup
from tests.backtest.test_reference_parity import assert_same


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 60, 3600])
def test_linear_fill_bar_path_is_path_py_tick_for_tick(n):
    rng = np.random.default_rng(n)
    o = 100 + rng.normal(0, 1, 40)
    c = 100 + rng.normal(0, 1, 40)
    h = np.maximum(o, c) + rng.exponential(0.5, 40) * (rng.random(40) > 0.2)
    lo = np.minimum(o, c) - rng.exponential(0.5, 40) * (rng.random(40) > 0.2)
    o[:3], h[:3], lo[:3], c[:3] = 100.0, 100.0, 100.0, 100.0      # flat bars
    o[3], h[3], lo[3], c[3] = 100.0, 101.0, 100.0, 101.0          # open at the low
    paths = bar_paths(o, h, lo, c, n)
    out = np.empty(n)
    for b in range(40):
        fill_bar_path(o[b], h[b], lo[b], c[b], n, 0, np.uint64(0), np.int64(0), 0.5, out)
        np.testing.assert_array_equal(out, tick_prices(paths, b))


def _mid_run_population(pop, inp, seed=5, share=0.6):
    """Give a share of the accounts an open time and/or a close time inside the window."""
    rng = np.random.default_rng(seed)
    n = len(pop)
    t0, t1 = float(inp.ts_s[0]), float(inp.ts_s[-1] + inp.bar_seconds)
    open_s = np.full(n, OPEN_ALWAYS, np.int64)
    close_s = np.full(n, NEVER, np.int64)
    m_open = rng.random(n) < share
    m_close = rng.random(n) < share
    open_s[m_open] = (t0 + rng.random(m_open.sum()) * (t1 - t0) * 0.8).astype(np.int64)
    base = np.where(m_open, open_s, t0).astype(float)
    close_s[m_close] = (base[m_close] + rng.exponential((t1 - t0) / 3, m_close.sum())).astype(np.int64)
    close_s[:3] = open_s[:3]                                       # never live
    return dataclasses.replace(pop, open_s=open_s, close_s=close_s)


def _oi_equal(fast, ref):
    a = fast.oi_daily.sort_values(["date", "side"]).reset_index(drop=True)
    b = ref.oi_daily.sort_values(["date", "side"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[["date", "side"]], b[["date", "side"]])
    np.testing.assert_allclose(a.oi_usd.to_numpy(), b.oi_usd.to_numpy(), rtol=1e-9, atol=1e-3)


def test_binance_parity_accounts_open_and_close_mid_run_with_funding():
    bars = crash_bars(n_bars=60, crash=-0.02, squeeze=0.02)
    funding = pd.DataFrame({"ts": [bars.ts.iloc[5], bars.ts.iloc[33]], "rate": [0.004, -0.003]})
    params, pop, inp, sym = setup("binance", 300, {"population.leverage_scale": 1.6}, bars=bars, funding=funding)
    pop = _mid_run_population(pop, inp)
    fast = run_binance(inp, pop, params, symbol=sym, date=DATE)
    ref = reference_binance(inp, pop, params, symbol=sym, date=DATE)
    assert_same(fast, ref, min_events=10)
    # some liquidated accounts opened mid-run, and some accounts closed before the end
    g_open = inp.tick_index(pop.open_s)
    liq = fast.events.account.unique()
    assert (g_open[liq] > 0).any()
    closed = (inp.tick_index(pop.close_s) < inp.n_ticks_total) & (g_open < inp.tick_index(pop.close_s))
    assert (closed & (fast.final_qty == 0) & ~np.isin(np.arange(len(pop)), liq)).sum() > 10
    # never-live accounts are never touched and keep their wallet
    assert not np.isin([0, 1, 2], liq).any()
    np.testing.assert_array_equal(fast.final_wallet[:3], pop.wallet_usd[:3])
    _oi_equal(fast, ref)


def test_binance_parity_mid_run_fund_exhausted_adl_with_funding():
    bars = crash_bars(n_bars=60, crash=-0.03)
    i = len(bars) // 4 + 2
    bars.loc[i, "open"] = bars.loc[i - 1, "close"] * 0.93
    bars.loc[i, "low"] = min(bars.loc[i, "low"], bars.loc[i, "open"])
    bars.loc[i, "high"] = max(bars.loc[i, "high"], bars.loc[i, "open"])
    funding = pd.DataFrame({"ts": [bars.ts.iloc[4], bars.ts.iloc[20], bars.ts.iloc[40]], "rate": [0.01, -0.02, 0.015]})
    params, pop, inp, sym = setup("binance", 300, {"binance.insurance_fund_start_usd": 1000.0,
                                                   "population.leverage_scale": 2.0}, bars=bars, funding=funding)
    pop = _mid_run_population(pop, inp, seed=8, share=0.3)
    fast = run_binance(inp, pop, params, symbol=sym, date=DATE)
    ref = reference_binance(inp, pop, params, symbol=sym, date=DATE)
    assert_same(fast, ref, min_events=10)
    assert (fast.events.mechanism == "adl").any()
    _oi_equal(fast, ref)


def test_oi_daily_over_days_matches_the_oracle_and_the_population():
    # 3 days of hourly bars, 60 s engine ticks; no account touched -> OI = live quantity x close
    bars = crash_bars(n_bars=72, crash=-0.004, squeeze=0.004)
    bars["ts"] = pd.date_range(pd.Timestamp(DATE, tz="UTC"), periods=72, freq="1h")
    params, pop, inp, sym = setup("binance", 200, {"population.leverage_scale": 1.5}, bars=bars)
    inp = PathInput.from_bars(bars, 3600, tick_s=60.0, sigma_1m=0.002, adv_usd=1e9)
    pop = _mid_run_population(pop, inp, seed=3)
    fast = run_binance(inp, pop, params, symbol=sym, date=DATE)
    ref = reference_binance(inp, pop, params, symbol=sym, date=DATE)
    assert_same(fast, ref, min_events=0)
    _oi_equal(fast, ref)
    oi = fast.oi_daily
    assert len(oi) == 6 and set(oi.side) == {"long", "short"}
    assert str(oi.date.dtype) == "datetime64[ns, UTC]"
    # independent of both replays: the population's live quantity at the last tick, less the liquidated
    assert not (fast.events.mechanism == "adl").any()
    end = inp.ts_s[-1] + inp.bar_seconds - inp.tick_s
    live = (pop.open_s <= end) & (pop.close_s > end) & ~np.isin(np.arange(len(pop)), fast.events.account)
    for s_, name in ((1, "long"), (-1, "short")):
        want = float((pop.qty_coin * (live & (pop.side == s_))).sum() * inp.close[-1])
        assert oi[oi.side == name].oi_usd.iloc[-1] == pytest.approx(want, rel=1e-9)


def test_loss_accounting_traces_every_dollar_of_house_loss():
    # the ADL fixture: the fund pays deficits, is exhausted, then earns again
    bars = gap_down_bars()
    params, pop, inp, sym = setup("binance", 300, {"binance.insurance_fund_start_usd": 1000.0,
                                                   "population.leverage_scale": 2.0,
                                                   "population.exempt_account": True,
                                                   "population.exempt_notional_share": 0.1,
                                                   "population.exempt_leverage": 20.0}, bars=bars)
    res = run_binance(inp, pop, params, symbol=sym, date=DATE)
    t, ev = res.totals, res.events
    fd = ev.fund_delta_usd
    assert t["fund_payouts_usd"] > 0 and t["fund_income_usd"] > 0
    assert t["fund_income_usd"] == pytest.approx(fd[fd > 0].sum())
    assert t["fund_payouts_usd"] == pytest.approx(-fd[fd < 0].sum())
    assert t["fund_income_usd"] - t["fund_payouts_usd"] == pytest.approx(t["fund_end_usd"] - t["fund_start_usd"])
    assert t["fund_drawdown_usd"] == pytest.approx(t["fund_start_usd"] - t["fund_min_usd"])
    assert 0 < t["fund_time_below_start_s"] <= inp.n_bars * inp.bar_seconds
    assert t["fund_net_payout_usd"] == pytest.approx(max(0.0, t["fund_payouts_usd"] - t["fund_income_usd"]))
    for k in BLP_PARTS + ("blp_pnl_usd", "blp_loss_usd", "blp_loss_gross_usd"):
        assert t[k] == 0.0, k
    assert t["house_loss_usd"] == pytest.approx(t["blp_loss_usd"] + t["fund_net_payout_usd"] + t["exempt_deficit_usd"])
    assert t["house_loss_gross_usd"] == pytest.approx(
        t["blp_loss_gross_usd"] + t["fund_net_payout_usd"] + t["exempt_deficit_usd"])
    assert t["exempt_deficit_usd"] > 0          # the exempt long is under water after the gap
    assert t["house_loss_usd"] >= t["exempt_deficit_usd"] > 0


def test_loss_accounting_parts_by_hand():
    ev = pd.DataFrame({"t_s": [10.0, 10.0, 20.0, 50.0], "fund_delta_usd": [-60.0, 5.0, -50.0, 200.0]})
    a = loss_accounting(ev, 100.0, -5.0, 195.0, 7.0, 100.0, blp_pnl=-3.0,
                        extra={**{k: 0.0 for k in BLP_PARTS}, "blp_discount_usd": 2.0, "blp_move_usd": -5.0,
                               "blp_loss_gross_usd": 9.0})
    assert a["fund_income_usd"] == 205.0 and a["fund_payouts_usd"] == 110.0
    assert a["fund_net_payout_usd"] == 0.0 and a["fund_drawdown_usd"] == 105.0
    assert a["fund_time_below_start_s"] == 40.0          # below from t=10 to t=50
    assert a["blp_loss_usd"] == 3.0 and a["house_loss_usd"] == 10.0 and a["house_loss_gross_usd"] == 16.0
    assert sum(a[k] for k in BLP_PARTS) == pytest.approx(a["blp_pnl_usd"])
    # a $99 payout from a $100 fund with no income is a $99 loss, not zero
    ev = pd.DataFrame({"t_s": [1.0], "fund_delta_usd": [-99.0]})
    b = loss_accounting(ev, 100.0, 1.0, 1.0, 0.0, 10.0)
    assert b["house_loss_usd"] == 99.0 and b["fund_deficit_usd"] == 0.0 and b["fund_time_below_start_s"] == 9.0


def test_binance_parity_funding_moves_triggers_across_bracket_tiers():
    """Large positions near the bracket caps and heavy funding: the tier that binds an account's
    liquidation price changes during the run (the kernel keeps one book per tier)."""
    from backtest.population import Population
    from backtest.venues import binance
    bars = crash_bars(n_bars=80, crash=-0.015, squeeze=0.015)
    ts = bars.ts
    funding = pd.DataFrame({"ts": [ts.iloc[i] for i in (3, 9, 15, 30, 45, 60, 70)],
                            "rate": [0.02, 0.03, -0.015, 0.025, -0.04, 0.03, 0.02]})
    params, _, inp, sym = setup("binance", 10, {}, bars=bars, funding=funding)
    br = binance.brackets_for(sym, DATE, params)
    rng = np.random.default_rng(12)
    n = 400
    p0 = float(bars.open.iloc[0])
    caps = br.caps[:6]
    notional = caps[rng.integers(0, len(caps), n)] * rng.uniform(0.85, 1.15, n)
    side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
    lev = rng.uniform(3.0, 15.0, n)
    qty = notional / p0
    entry = p0 * rng.uniform(0.995, 1.005, n)
    wallet = notional / lev
    pop = Population(side=side, qty_coin=qty, entry_price=entry, leverage=lev, wallet_usd=wallet, collateral={},
                     isolated=np.ones(n, bool), exempt=np.zeros(n, bool), venue="binance", symbol=sym,
                     start_price=p0)
    pop = _mid_run_population(pop, inp, seed=4, share=0.25)
    fast = run_binance(inp, pop, params, symbol=sym, date=DATE)
    ref = reference_binance(inp, pop, params, symbol=sym, date=DATE)
    assert_same(fast, ref, min_events=20)
    # the binding tier did change for some account between the start and its liquidation
    ev = fast.events.drop_duplicates("account")
    a = ev.account.to_numpy()
    tier0 = np.asarray(binance.liquidation_tier(side[a], qty[a], entry[a], wallet[a], br))
    tier1 = br.tier(ev.qty_coin.to_numpy() * 0 + qty[a] * ev.mark_price.to_numpy()) + 1
    assert (tier0 != tier1).any()


def test_ftx_oi_fallback_from_events_matches_final_positions():
    from backtest.replay import run_ftx
    from backtest.replay.runner import oi_from_events
    params, pop, inp, sym = setup("ftx", 250, {"population.leverage_scale": 2.5})
    res = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    assert len(res.events) > 10
    oi = oi_from_events(inp, pop, res.events)
    for s_, name in ((1, "long"), (-1, "short")):
        want = float(res.final_qty[pop.side == s_].sum() * inp.close[-1])
        assert oi[oi.side == name].oi_usd.iloc[-1] == pytest.approx(want, rel=1e-9, abs=1e-3)


def test_binance_parity_with_real_account_weights():
    """Accounts standing for many real ones (Population.weight): brackets at one real account's
    size, in the kernel and in the oracle alike."""
    bars = crash_bars(n_bars=60, crash=-0.03, squeeze=0.02)
    params, pop, inp, sym = setup("binance", 300, {"population.leverage_scale": 1.6}, bars=bars)
    rng = np.random.default_rng(11)
    pop = dataclasses.replace(_mid_run_population(pop, inp), weight=np.exp(rng.uniform(0, 7, len(pop))))
    fast = run_binance(inp, pop, params, symbol=sym, date=DATE)
    ref = reference_binance(inp, pop, params, symbol=sym, date=DATE)
    assert_same(fast, ref, min_events=10)


def test_one_weighted_account_is_w_identical_real_accounts():
    """A simulated account of weight w liquidates exactly when w identical real accounts of 1/w
    its size would, for the same coins; at weight 1 a large position sits in a
    higher bracket and is liquidated sooner."""
    bars = crash_bars(n_bars=60, crash=-0.06, squeeze=0.0)
    # impact v1 (each order alone): under v2 the 40 identical $10M positions liquidated in one
    # second are one $400M metaorder whose slippage hits the cap, and the fund's deficit adds
    # ADL rows; this test is about the brackets at one real account's size
    params, pop, inp, sym = setup("binance", 40, {"population.leverage_scale": 1.0, "impact.mode": "v1"}, bars=bars)
    big = dataclasses.replace(pop, qty_coin=pop.qty_coin * 0 + 500.0,
                              wallet_usd=pop.wallet_usd * 0 + 500.0 * 20000 / 12,
                              entry_price=pop.entry_price * 0 + 20000.0, side=np.ones(len(pop), np.int8),
                              isolated=np.ones(len(pop), bool), exempt=np.zeros(len(pop), bool))
    w = 1000.0
    weighted = dataclasses.replace(big, weight=np.full(len(pop), w))
    small = dataclasses.replace(big, qty_coin=big.qty_coin / w, wallet_usd=big.wallet_usd / w)
    r_w = run_binance(inp, weighted, params, symbol=sym, date=DATE)
    r_s = run_binance(inp, small, params, symbol=sym, date=DATE)
    r_1 = run_binance(inp, big, params, symbol=sym, date=DATE)
    assert len(r_w.events) == len(r_s.events) > 0
    np.testing.assert_allclose(r_w.events.t_s.to_numpy(), r_s.events.t_s.to_numpy())
    # the same coins at the same ticks (fill prices differ by impact: one order of w real ones)
    np.testing.assert_allclose(r_w.events.qty_coin.sum(), w * r_s.events.qty_coin.sum(), rtol=1e-9)
    assert r_1.events.t_s.min() < r_w.events.t_s.min()
