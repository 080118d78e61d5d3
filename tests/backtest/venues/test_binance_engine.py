"""Binance USDS-M engine: MODEL.md 4 worked examples, properties, bad input."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.params import default_params, load_params
from backtest.venues import binance

P = default_params()  # the venue engines take their parameters explicitly

NOV = dt.date(2022, 11, 9)


@pytest.fixture(scope="module")
def btc():
    return binance.brackets_for("BTCUSDT", NOV, params=P)


def test_btc_may_nov_table_cum_matches_model(btc):
    assert btc.cum.tolist() == pytest.approx(
        [0, 50, 1_300, 16_300, 266_300, 1_266_300, 2_516_300, 5_016_300, 25_016_300, 100_016_300])
    assert btc.mmr.tolist() == pytest.approx([0.004, 0.005, 0.01, 0.025, 0.05, 0.10, 0.125, 0.15, 0.25, 0.50])
    assert btc.caps[3] == 10_000_000 and np.isinf(btc.caps[-1])
    assert btc.max_leverage.tolist() == [125, 100, 50, 20, 10, 5, 4, 3, 2, 1]


def test_btc_feb05_variant_and_january_choice():
    feb = binance.brackets_for("BTCUSDT", dt.date(2022, 3, 1), params=P)
    assert feb.cum.tolist() == pytest.approx(
        [0, 50, 1_300, 16_300, 203_800, 2_203_800, 4_703_800, 9_703_800, 49_703_800, 199_703_800])
    jan_default = binance.brackets_for("BTCUSDT", dt.date(2022, 1, 22), params=P)
    assert jan_default.cum.tolist() == feb.cum.tolist()
    p = load_params(overrides={"binance.brackets.btcusdt_jan2022_table": "2022-05"})
    jan_may = binance.brackets_for("BTCUSDT", dt.date(2022, 1, 22), p)
    assert jan_may.cum[4] == pytest.approx(266_300)
    bad = load_params(overrides={"binance.brackets.btcusdt_jan2022_table": "2021"})
    with pytest.raises(binance.BracketError, match="btcusdt_jan2022_table"):
        binance.brackets_for("BTCUSDT", dt.date(2022, 1, 22), bad)


def test_eth_tables_by_date():
    feb = binance.brackets_for("ETHUSDT", dt.date(2022, 5, 10), params=P)
    assert feb.cum.tolist() == pytest.approx(
        [0, 15, 365, 5_365, 50_365, 250_365, 500_365, 1_000_365, 5_000_365, 42_500_365])
    aug = binance.brackets_for("ETHUSDT", dt.date(2022, 10, 25), params=P)
    assert aug.cum.tolist() == pytest.approx(
        [0, 150, 1_025, 11_025, 161_025, 661_025, 1_161_025, 2_161_025, 10_161_025, 47_661_025])


def test_generic_fallback_and_error():
    g = binance.brackets_for("SOLUSDT", NOV, params=P)
    assert "generic" in g.source and g.mmr[0] == pytest.approx(0.01)
    p = load_params(overrides={"binance.brackets.generic_fallback": False})
    with pytest.raises(binance.BracketError, match="SOLUSDT"):
        binance.brackets_for("SOLUSDT", NOV, p)


def test_worked_liquidation_prices(btc):
    assert round(binance.liquidation_price(1, 1, 20_000, 1_000, btc), 2) == 19_076.31
    assert round(binance.liquidation_price(-1, 1, 20_000, 1_000, btc), 2) == 20_916.33
    lp = binance.liquidation_price(1, 100, 20_000, 200_000, btc)
    assert round(lp, 2) == 18_294.36
    assert binance.liquidation_tier(1, 100, 20_000, 200_000, btc) == 4
    assert 1.0e6 < 100 * lp < 10e6


def test_worked_bankruptcy_prices():
    assert binance.bankruptcy_price(1, 1, 20_000, 1_000) == pytest.approx(19_000, abs=0.005)
    assert binance.bankruptcy_price(-1, 1, 20_000, 1_000) == pytest.approx(21_000, abs=0.005)


def test_vectorised_matches_scalar(btc):
    side = np.array([1, -1, 1])
    qty = np.array([1.0, 1.0, 100.0])
    wb = np.array([1_000.0, 1_000.0, 200_000.0])
    lp = binance.liquidation_price(side, qty, 20_000.0, wb, btc)
    assert lp.shape == (3,)
    assert np.round(lp, 2).tolist() == [19_076.31, 20_916.33, 18_294.36]


def test_unliquidatable_long_gets_zero(btc):
    # 1x long: wallet == notional: no positive liquidation price
    assert binance.liquidation_price(1, 1, 20_000, 20_000, btc) == 0.0


def test_cross_terms_shift_lp(btc):
    iso = binance.liquidation_price(1, 1, 20_000, 1_000, btc)
    cross = binance.liquidation_price(1, 1, 20_000, 3_000, btc, tmm_other=500, upnl_other=-1_500)
    assert cross == pytest.approx(iso)  # 3000 - 500 - 1500 == 1000


@settings(max_examples=200, deadline=None)
@given(side=st.sampled_from([1, -1]), qty=st.floats(0.01, 20_000), ep=st.floats(100, 100_000),
       lev=st.floats(1.05, 125))
def test_mm_equals_margin_balance_at_lp(side, qty, ep, lev):
    br = binance.brackets_for("BTCUSDT", NOV, params=P)
    wb = qty * ep / lev
    lp = binance.liquidation_price(side, qty, ep, wb, br)
    if lp == 0.0:
        assert side == 1
        return
    mm = binance.maintenance_margin(qty * lp, br)
    mb = wb + side * qty * (lp - ep)
    assert mm == pytest.approx(mb, rel=1e-9, abs=1e-6 * qty * ep)


@settings(max_examples=150, deadline=None)
@given(side=st.sampled_from([1, -1]), qty=st.floats(0.01, 5_000), ep=st.floats(1_000, 80_000),
       w1=st.floats(0.01, 0.9), w2=st.floats(0.01, 0.9))
def test_lp_monotone_in_wallet(side, qty, ep, w1, w2):
    br = binance.brackets_for("BTCUSDT", NOV, params=P)
    lo, hi = sorted((w1, w2))
    lp_lo = binance.liquidation_price(side, qty, ep, lo * qty * ep, br)
    lp_hi = binance.liquidation_price(side, qty, ep, hi * qty * ep, br)
    if side == 1:
        assert lp_hi <= lp_lo + 1e-9 * ep  # more wallet: a long liquidates lower
    else:
        assert lp_hi >= lp_lo - 1e-9 * ep  # a short liquidates higher


def test_trigger_consistent_with_lp(btc):
    lp = binance.liquidation_price(1, 2, 30_000, 3_000, btc)
    assert binance.is_liquidatable(1, 2, 30_000, 3_000, lp * 0.999, btc)
    assert not binance.is_liquidatable(1, 2, 30_000, 3_000, lp * 1.001, btc)


def test_liquidation_outcome_surplus_fee_and_deficit():
    # long 1 BTC at 20k, WB 1000 -> BP 19000; mark 19076.31 (LP)
    out = binance.liquidation_outcome(1, 1.0, 20_000, 1_000, 19_070.0, 0.0125, mark=19_076.31)
    assert out["bankruptcy_price"][0] == pytest.approx(19_000)
    assert out["fund_delta_usd"][0] == pytest.approx(70.0)  # everything above BP to the fund
    assert out["clearance_fee_usd"][0] == pytest.approx(70.0)  # fee capped by the surplus
    out = binance.liquidation_outcome(1, 1.0, 20_000, 1_000, 19_500.0, 0.0125, mark=19_500.0)
    assert out["clearance_fee_usd"][0] == pytest.approx(0.0125 * 19_500)
    assert out["fund_delta_usd"][0] == pytest.approx(500)
    gap = binance.liquidation_outcome(1, 1.0, 20_000, 1_000, 18_800.0, 0.0125, mark=18_900.0)
    assert gap["fund_delta_usd"][0] == pytest.approx(-200) and gap["clearance_fee_usd"][0] == 0


def test_fund_shortfall_goes_to_adl():
    # two gapped liquidations, each a 200 deficit; fund holds 300
    out = binance.liquidation_outcome([1, 1], [1.0, 1.0], 20_000, 1_000, 18_800.0, 0.0125,
                                      mark=18_800.0, fund_balance_usd=300.0)
    assert out["qty_market"].tolist() == pytest.approx([1.0, 0.5])
    assert out["qty_adl"].tolist() == pytest.approx([0.0, 0.5])
    assert out["fund_balance_after_usd"].tolist() == pytest.approx([100.0, 0.0])
    assert out["adl_notional_usd"][1] == pytest.approx(0.5 * 19_000)
    total = out["user_loss_usd"] - out["fund_delta_usd"] - out["adl_counterparty_usd"] - out["market_usd"]
    assert np.allclose(total, 0)


def test_adl_rank_and_allocate():
    sc = binance.adl_scores(np.array([500.0, -10.0, 2_000.0, 2_000.0]), np.array([1_000.0, 1_000.0, 1_000.0, 4_000.0]),
                            np.array([50.0, 50.0, 50.0, 50.0]))
    assert sc[1] == 0 and sc[2] > sc[0] and sc[2] > sc[3]
    got = binance.adl_allocate(sc, np.array([1.0, 5.0, 2.0, 1.0]), 2.5)
    # scores: #2 0.0333 > #0 0.0167 > #3 0.0042 > #1 0: #2 closes fully, #0 the rest
    assert got.tolist() == pytest.approx([0.5, 0.0, 2.0, 0.0])


def test_reported_mask_one_per_second_last():
    ts = np.array([10, 10, 10, 11, 12, 12])
    m = binance.reported_mask(ts)
    assert m.tolist() == [False, False, True, True, False, True]
    sym = np.array(["BTC", "ETH", "BTC", "BTC", "ETH", "ETH"])
    m = binance.reported_mask(ts, symbol=sym)
    assert m.tolist() == [False, True, True, True, False, True]
    m = binance.reported_mask(ts, order=np.array([3, 2, 1, 0, 0, 0]))
    assert m.tolist() == [True, False, False, True, False, True]


def test_leverage_caps_by_date():
    assert binance.max_leverage("BTCUSDT", dt.date(2021, 7, 26), params=P) == 125
    assert binance.max_leverage("BTCUSDT", dt.date(2021, 7, 27), params=P) == 20
    assert binance.max_leverage("BTCUSDT", NOV, 15e6, params=P) == 10  # bracket 5
    binance.check_leverage("BTCUSDT", NOV, 20, 5_000, params=P)
    with pytest.raises(binance.LeverageError, match="above Binance's cap"):
        binance.check_leverage("BTCUSDT", NOV, 25, 5_000, params=P)


@pytest.mark.parametrize("call", [
    lambda b: binance.liquidation_price(1, -1, 20_000, 1_000, b),
    lambda b: binance.liquidation_price(1, 1, 0.0, 1_000, b),
    lambda b: binance.bankruptcy_price(1, 0, 20_000, 1_000),
    lambda b: binance.bankruptcy_price(2, 1, 20_000, 1_000),
    lambda b: binance.maintenance_margin(-5, b),
    lambda b: binance.liquidation_outcome(1, 1, 20_000, 1_000, 0.0, 0.01),
])
def test_bad_input_raises(btc, call):
    with pytest.raises(ValueError):
        call(btc)


def test_partial_liquidation_parameter(btc):
    assert binance.liquidation_qty(100.0, 20_000, btc, params=P) == 100.0  # default: the whole position
    p = load_params(overrides={"binance.partial_liquidation": True})
    # 2M notional is tier 4: reduced to the tier-3 cap (1M) -> 50 BTC sent
    assert binance.liquidation_qty(100.0, 20_000, btc, p) == pytest.approx(50.0)
    # tier 1-2 positions go whole
    assert binance.liquidation_qty(np.array([1.0, 10.0]), 20_000, btc, p).tolist() == [1.0, 10.0]


def test_partial_outcome_is_a_pro_rata_split():
    whole = binance.liquidation_outcome(1, 100.0, 20_000, 200_000, 18_200.0, 0.0125, mark=18_294.36)
    half = binance.liquidation_outcome(1, 100.0, 20_000, 200_000, 18_200.0, 0.0125, mark=18_294.36,
                                       close_qty=50.0)
    assert half["bankruptcy_price"][0] == pytest.approx(whole["bankruptcy_price"][0])
    assert half["wallet_left_usd"][0] == pytest.approx(100_000)
    for k in ("user_loss_usd", "fund_delta_usd", "market_usd", "notional_usd"):
        assert half[k][0] == pytest.approx(whole[k][0] / 2)
    with pytest.raises(ValueError, match="close_qty"):
        binance.liquidation_outcome(1, 1.0, 20_000, 1_000, 19_000.0, 0.01, close_qty=2.0)
