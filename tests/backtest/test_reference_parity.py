"""Fast event-driven replay == naive oracle (every account, every tick) on small populations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.reference import reference_binance, reference_ftx
from backtest.replay import run_binance, run_ftx
from tests.backtest._synth import DATE, crash_bars, gap_down_bars, setup, with_path

EVENT_COLS = ["t_s", "account", "side", "mechanism"]
MONEY_COLS = ["qty_coin", "price", "notional_usd", "user_loss_usd", "fund_delta_usd"]
TOTALS = ["liquidated_usd", "reported_liquidated_usd", "liquidated_step1_usd", "liquidated_step2_blp_usd",
          "liquidated_overflow_usd", "liquidated_ioc_usd", "liquidated_fund_usd", "adl_usd", "accounts_liquidated",
          "blp_takeover_usd", "blp_pnl_usd", "fund_min_usd", "fund_end_usd", "user_loss_usd",
          "exempt_deficit_usd", "counterparty_loss_usd"]


def assert_same(fast, ref, min_events=1):
    assert len(fast.events) >= min_events
    assert len(fast.events) == len(ref.events)
    f = fast.events.sort_values(["t_s", "account", "mechanism"]).reset_index(drop=True)
    r = ref.events.sort_values(["t_s", "account", "mechanism"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(f[EVENT_COLS], r[EVENT_COLS])
    np.testing.assert_allclose(f[MONEY_COLS].to_numpy(float), r[MONEY_COLS].to_numpy(float), rtol=1e-9, atol=1e-6)
    for k in TOTALS:
        assert fast.totals[k] == pytest.approx(ref.totals[k], rel=1e-9, abs=1e-6), k
    np.testing.assert_allclose(fast.final_qty, ref.final_qty, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.final_wallet, ref.final_wallet, rtol=1e-9, atol=1e-6)


def test_binance_parity_with_funding():
    bars = crash_bars(crash=-0.02, squeeze=0.02)
    funding = pd.DataFrame({"ts": [bars.ts.iloc[10], bars.ts.iloc[30]], "rate": [0.004, -0.003]})
    params, pop, inp, sym = setup("binance", 300, {"population.leverage_scale": 1.5}, bars=bars, funding=funding)
    fast = run_binance(inp, pop, params, symbol=sym, date=DATE)
    ref = reference_binance(inp, pop, params, symbol=sym, date=DATE)
    assert_same(fast, ref, min_events=10)
    assert set(fast.events.mechanism) >= {"ioc"}


def test_binance_parity_fund_exhausted_adl():
    # a tiny fund, a gap-down bar and high leverage: deficits the fund cannot pay -> ADL
    bars = gap_down_bars()
    params, pop, inp, sym = setup("binance", 300, {"binance.insurance_fund_start_usd": 1000.0,
                                                   "population.leverage_scale": 2.0}, bars=bars)
    fast = run_binance(inp, pop, params, symbol=sym, date=DATE)
    ref = reference_binance(inp, pop, params, symbol=sym, date=DATE)
    assert_same(fast, ref, min_events=10)
    assert (fast.events.mechanism == "adl").any()
    assert fast.totals["adl_usd"] > 0


@pytest.mark.parametrize("path", ["linear", "bridge"])
def test_ftx_parity_deterministic_step1_step2_overflow(path):
    params, pop, inp, sym = setup("ftx", 250, {"ftx.blp.capacity_per_minute_usd": 200000.0,
                                               "population.leverage_scale": 2.0}, path=path)
    fast = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    ref = reference_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    assert_same(fast, ref, min_events=20)
    mech = set(fast.events.mechanism)
    assert {"step1", "step2_blp", "overflow"} <= mech
    # every event happens at the price of the path's tick (the shared intra-bar path)
    ev = fast.events
    np.testing.assert_allclose(ev.mark_price.to_numpy(), inp.price_at_time(ev.t_s.to_numpy()), rtol=1e-12)
    if path == "bridge":           # the bridge's ticks are not the linear path's
        _, _, lin, _ = setup("ftx", 250, {"ftx.blp.capacity_per_minute_usd": 200000.0,
                                          "population.leverage_scale": 2.0})
        other = run_ftx(lin, pop, params, symbol=sym, date=DATE, rng=None)
        assert len(other.events) != len(ev) or not np.allclose(other.events.mark_price, ev.mark_price)


@pytest.mark.parametrize("path", ["linear", "bridge"])
def test_ftx_parity_with_exempt_account(path):
    params, pop, inp, sym = setup("ftx", 150, {"population.exempt_account": True,
                                               "population.exempt_notional_share": 0.1,
                                               "population.exempt_leverage": 20.0}, path=path)
    assert pop.exempt[-1]
    fast = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    ref = reference_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    assert_same(fast, ref, min_events=5)
    assert len(pop) - 1 not in set(fast.events.account)  # never liquidated


@pytest.mark.parametrize("path", ["linear", "bridge"])
def test_ftx_parity_on_hourly_bars(path):
    bars = crash_bars(n_bars=4, crash=-0.03)
    bars["ts"] = pd.date_range(bars.ts.iloc[0], periods=4, freq="1h")
    params, pop, inp, sym = setup("ftx", 80, bars=bars)
    from backtest.replay import PathInput
    inp = with_path(PathInput.from_bars(bars, 3600, tick_s=1.0, sigma_1m=0.002, adv_usd=1e9), params, path)
    fast = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    ref = reference_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    assert_same(fast, ref, min_events=1)
