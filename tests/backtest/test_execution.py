"""Execution: square-root impact, fills, BLP hedge, collateral sales."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import execution as ex


def test_sqrt_impact_formula():
    # q = $1M, 60 min bar of $600M (=$10M/min), sigma 0.2%/min, eta 1: 0.002 * sqrt(0.1)
    assert ex.sqrt_impact(1e6, 600e6, 0.002, 1.0, 60) == pytest.approx(0.002 * np.sqrt(0.1))
    assert ex.sqrt_impact(0.0, 600e6, 0.002, 1.0, 60) == 0.0
    assert ex.sqrt_impact(1e6, 0.0, 0.002, 1.0, 1) == 0.5  # no volume: capped
    v = ex.sqrt_impact(np.array([1e5, 4e5]), 1e7, 0.001, 2.0, 1)
    assert v[1] == pytest.approx(2 * v[0])


@settings(max_examples=100, deadline=None)
@given(q1=st.floats(0, 1e8), q2=st.floats(0, 1e8), vol=st.floats(1e3, 1e10))
def test_impact_monotone_in_size(q1, q2, vol):
    lo, hi = sorted((q1, q2))
    assert ex.sqrt_impact(lo, vol, 0.001, 1.0) <= ex.sqrt_impact(hi, vol, 0.001, 1.0)


def test_sigma_1m():
    close = np.array([100.0, 101.0, 100.0, 101.0])
    s = ex.sigma_1m(close)
    r = np.diff(np.log(close))
    assert s == pytest.approx(np.std(r))
    assert ex.sigma_1m(close, bar_minutes=4) == pytest.approx(np.std(r) / 2)
    assert ex.sigma_1m(close, window=2).shape == (4,)


def test_fill_price_and_breakdown():
    assert ex.fill_price(1, 100.0, 0.01, 0.001) == pytest.approx(100 * 1.01 * 1.001)
    assert ex.fill_price(-1, 100.0, 0.01, 0.0) == pytest.approx(99.0)
    b = ex.fill_breakdown(-1, 2.0, 100.0, 0.01, 0.001)
    assert b["exec_price"] == pytest.approx(99.0)
    assert b["impact_usd"] == pytest.approx(2.0)
    assert b["fee_usd"] == pytest.approx(2 * 99 * 0.001)
    # a seller receives market value minus impact minus fee
    assert b["cash_usd"] == pytest.approx(200 - b["impact_usd"] - b["fee_usd"])


def test_hedge_pnl_components():
    # BLP takes 1 BTC long at 19,840 (mark 20,000); hedges (sells) at 19,900 on the hedge venue
    # 1% slippage, 0.04% fee; at the end FTX mark 18,000 and hedge venue 18,050.
    h = ex.hedge_pnl(1, 1.0, 19_840, 20_000, 19_900, 18_000, 18_050, hedge_ratio=1.0,
                     slippage_frac=0.01, fee_rate=0.0004, hedge_price_at_takeover=20_010)
    assert h["discount_usd"] == pytest.approx(160)
    assert h["position_move_usd"] == pytest.approx(-2_000)
    assert h["hedge_move_usd"] == pytest.approx(1_850)
    assert h["hedge_cost_usd"] == pytest.approx(-(199 + 19_900 * 0.99 * 0.0004))
    assert h["unhedged_move_usd"] == pytest.approx(-110)
    # direct: position bought at 19840 marked at 18000; hedge sold at 19701 marked at 18050, fee
    direct = (18_000 - 19_840) + (19_900 * 0.99 - 18_050) - 19_900 * 0.99 * 0.0004
    assert h["total_usd"] == pytest.approx(direct)
    unhedged = ex.hedge_pnl(-1, 2.0, 20_160, 20_000, 20_100, 21_000, 21_000, hedge_ratio=0.0)
    assert unhedged["total_usd"] == pytest.approx(2 * (20_160 - 20_000) + 2 * (20_000 - 21_000))


def test_collateral_sale():
    s = ex.collateral_sale(100.0, 22.0, 1e6, 0.002, 1.0, 1.0, 0.0007)
    assert s["slippage_frac"] == pytest.approx(0.002 * np.sqrt(2200 / 1e6))
    assert s["market_value_usd"] - s["proceeds_usd"] == pytest.approx(s["impact_usd"] + s["fee_usd"])


@pytest.mark.parametrize("call", [
    lambda: ex.sqrt_impact(-1.0, 1e6, 0.001, 1.0),
    lambda: ex.sqrt_impact(1.0, 1e6, 0.001, 1.0, 0),
    lambda: ex.fill_price(1, 0.0, 0.01, 0.0),
    lambda: ex.fill_price(0, 100.0, 0.01, 0.0),
    lambda: ex.hedge_pnl(1, -1.0, 1, 1, 1, 1, 1),
    lambda: ex.collateral_sale(-5.0, 22.0, 1e6, 0.002, 1.0),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()
