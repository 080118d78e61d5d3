"""FTX engine: MODEL.md 3 worked examples, properties, bad input."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backtest.params import default_params, load_params
from backtest.venues import ftx

P = default_params()  # the venue engines take their parameters explicitly


def test_thresholds_worked_examples():
    imf, mmf, acmf = ftx.margin_thresholds(20, 0.002, 0.5, params=P)
    assert (imf, mmf, acmf) == pytest.approx((0.05, 0.03, 0.015))
    imf, mmf, acmf = ftx.margin_thresholds(20, 0.002, 1_000, params=P)
    assert (round(imf * 100, 2), round(mmf * 100, 2), round(acmf * 100, 2)) == (6.32, 3.79, 1.90)


def test_thresholds_vectorised():
    imf, mmf, acmf = ftx.margin_thresholds(np.array([20.0, 20.0, 3.0]), 0.002, np.array([0.5, 1_000, 1.0]), params=P)
    assert imf.shape == (3,)
    assert np.round(mmf, 4).tolist() == [0.03, 0.0379, 0.2]
    assert acmf[2] == pytest.approx(0.2 - 0.06)  # large MMF: MMF - 0.06 > MMF / 2


@settings(max_examples=200, deadline=None)
@given(lev=st.floats(1.0, 20.0), f=st.floats(0.0, 0.01), size=st.floats(0.0, 1e6))
def test_thresholds_ordered(lev, f, size):
    # the 2022 regime (cap 20x). Above 33.3x (only possible before 2021-07-25) the 3% MMF
    # floor exceeds 1/leverage: a known limit of the published formula (see report).
    imf, mmf, acmf = ftx.margin_thresholds(lev, f, size, date=dt.date(2022, 6, 1), params=P)
    assert 0 < acmf < mmf < imf


def test_leverage_cap_by_date():
    assert ftx.max_leverage(dt.date(2021, 7, 24), params=P) == 101
    assert ftx.max_leverage(dt.date(2021, 7, 25), params=P) == 20
    ftx.margin_thresholds(50, 0.002, 1, date=dt.date(2021, 7, 1), params=P)
    with pytest.raises(ftx.LeverageError, match="above FTX's cap of 20x"):
        ftx.margin_thresholds(50, 0.002, 1, date=dt.date(2022, 5, 10), params=P)


def test_collateral_worked_examples():
    v = ftx.collateral_value(100_000, 22.0, 0.95, 0.0005)
    assert round(v) == 2_089_605
    assert round(ftx.effective_weight(100_000, 0.95, 0.0005), 4) == 0.9498
    assert round(ftx.effective_weight(10_000_000, 0.95, 0.0005), 3) == 0.426
    assert ftx.collateral_value(1.0, 20_000, 0.975, 0.002) == pytest.approx(19_500)
    assert ftx.collateral_weights("USDT", params=P) == (1.0, 1.0, 0.0)
    assert ftx.collateral_weights("FTT", params=P) == (0.95, 0.95, 0.0005)
    with pytest.raises(ValueError, match="DOGE"):
        ftx.collateral_weights("DOGE", params=P)


def test_zero_and_backstop_worked_examples():
    assert ftx.zero_price(1, 20_000, 0.012) == pytest.approx(19_760)
    assert ftx.backstop_price(1, 20_000, 0.012) == pytest.approx(19_840)
    out = ftx.step2_takeover(1, 1.0, 20_000, 0.012, 0.015, 240.0, params=P)
    per_coin = {k: out[k][0] / out["close_qty"][0] for k in ("user_loss_usd", "fund_delta_usd", "blp_discount_usd")}
    assert per_coin == pytest.approx({"user_loss_usd": 240, "fund_delta_usd": 80, "blp_discount_usd": 160})
    assert ftx.zero_price(1, 20_000, -0.01) == pytest.approx(20_200)
    assert round(ftx.backstop_price(1, 20_000, -0.01), 2) == 20_133.33
    # short mirror
    assert ftx.zero_price(-1, 20_000, 0.012) == pytest.approx(20_240)
    assert ftx.backstop_price(-1, 20_000, 0.012) == pytest.approx(20_160)


def test_negative_equity_split_parameter():
    assert ftx.backstop_price(1, 20_000, -0.01, negative_equity_blp_share=1.0) == pytest.approx(20_200)
    assert ftx.backstop_price(1, 20_000, -0.01, negative_equity_blp_share=0.0) == pytest.approx(20_000)
    p = load_params(overrides={"ftx.negative_equity_blp_share": 0.5})
    out = ftx.step2_takeover(1, 2.0, 20_000, -0.01, 0.015, -400.0, p)
    assert out["close_qty"][0] == 2.0  # MF < 0: everything
    assert out["fund_delta_usd"][0] == pytest.approx(-200)  # fund pays half of the 400 deficit
    assert out["blp_discount_usd"][0] == pytest.approx(-200)


def test_step2_fraction_and_minimum():
    out = ftx.step2_takeover(1, 10.0, 20_000, 0.0075, 0.015, 1_500.0, params=P)
    assert out["close_qty"][0] == pytest.approx(5.0)  # f = 1 - 0.0075/0.015
    out = ftx.step2_takeover(1, 10.0, 20_000, 0.01499, 0.015, 2_998.0, params=P)
    assert out["close_qty"][0] == pytest.approx(1_000 / 20_000)  # at least $1,000
    out = ftx.step2_takeover(1, 0.01, 20_000, 0.01499, 0.015, 3.0, params=P)
    assert out["close_qty"][0] == pytest.approx(0.01)  # ... but not more than the position
    out = ftx.step2_takeover(1, 10.0, 20_000, 0.02, 0.015, 4_000.0, params=P)
    assert out["close_qty"][0] == 0.0


def test_position_zero_price_single_position_equals_zp():
    assert ftx.position_zero_price(1, 20_000, 1.0, 240.0, 20_000) == pytest.approx(ftx.zero_price(1, 20_000, 0.012))
    # a position carrying half of the maintenance collateral uses half the TAV
    assert ftx.position_zero_price(1, 20_000, 0.5, 480.0, 20_000) == pytest.approx(19_760)


def test_states():
    codes = ftx.state(np.array([0.06, 0.04, 0.02, 0.01, -0.01]), 0.05, 0.03, 0.015)
    assert codes.tolist() == [ftx.NORMAL, ftx.REDUCE_ONLY, ftx.STEP1, ftx.STEP2, ftx.CLOSE_ALL]
    assert ftx.state(0.05, 0.05, 0.03, 0.015) == ftx.NORMAL


def test_tav_mf():
    tav, mf = ftx.account_tav_mf(1, 1.0, 20_000, 19_000, 1_000, 500)
    assert tav == pytest.approx(500) and mf == pytest.approx(500 / 19_000)


@settings(max_examples=200, deadline=None)
@given(side=st.sampled_from([1, -1]), qty=st.floats(0.01, 1_000), entry=st.floats(1_000, 60_000),
       usd_frac=st.floats(0.0, 0.5), coin_frac=st.floats(0.0, 0.5), target=st.floats(-0.05, 0.2))
def test_price_at_margin_fraction_inverts_mf(side, qty, entry, usd_frac, coin_frac, target):
    usd = usd_frac * qty * entry
    coin = coin_frac * qty
    w = ftx.effective_weight(coin, 0.975, 0.002)
    m = ftx.price_at_margin_fraction(side, qty, entry, usd, coin, w, target)
    assume(not np.isnan(m))  # nan: no positive price gives this MF (tested by the examples below)
    cv = ftx.collateral_value(coin, m, 0.975, 0.002) if coin > 0 else 0.0
    _, mf = ftx.account_tav_mf(side, qty, entry, m, usd, cv)
    assert mf == pytest.approx(target, abs=1e-9)


def test_price_at_margin_fraction_examples():
    # long 1 BTC at 20k with $1000 USD: MF = 3% at m with 1000 + m - 20000 = 0.03 m
    assert ftx.price_at_margin_fraction(1, 1, 20_000, 1_000, 0, 0, 0.03) == pytest.approx(19_000 / 0.97)
    # a fully funded 1x long can never reach MF 0: no positive price
    assert np.isnan(ftx.price_at_margin_fraction(1, 1, 20_000, 20_000, 0.0, 0.0, 0.0))
    # a short hedged 1:1 by its own coin (weight 1) has a constant TAV: MF 0 unreachable
    assert np.isnan(ftx.price_at_margin_fraction(-1, 1, 20_000, 0.0, 1.0, 1.0, 0.0))
    # coin collateral in the position's own coin: long 1 BTC at 20k, $-20k USD, 2 BTC at w=1
    # TAV = -20000 + 2m + (m - 20000) = 0 at m = 13,333.33
    assert ftx.price_at_margin_fraction(1, 1, 20_000, -20_000, 2.0, 1.0, 0.0) == pytest.approx(40_000 / 3)
    # vectorised: thresholds sorted for the replay
    ms = ftx.price_at_margin_fraction(1, 1.0, 20_000, 1_000, 0.0, 0.0, np.array([0.05, 0.03, 0.015]))
    assert np.all(np.diff(ms) < 0)


def test_step1_deterministic_budget_and_min():
    pos = np.array([1.0, 10.0, 0.01])
    qty, left = ftx.step1_order_qty(pos, 20_000.0, 1e9, params=P)
    # 10% (at least $1000 = 0.05 BTC, capped by the position) times the firing probability 1/6
    assert qty.tolist() == pytest.approx([0.1 / 6, 1.0 / 6, 0.01 / 6])
    qty, left = ftx.step1_order_qty(pos, 20_000.0, 3_000.0, params=P)
    # budget served in index order: account 0 wants $2,000, account 1 gets the remaining $1,000
    assert qty.tolist() == pytest.approx([0.1 / 6, 0.05 / 6, 0.0])
    assert left == pytest.approx(3_000 - 3_000 / 6)


def test_step1_random_mode_respects_caps():
    rng = np.random.default_rng(7)
    pos = np.abs(rng.lognormal(0, 1, 200))
    fired = 0
    for _ in range(120):
        qty, left = ftx.step1_order_qty(pos, 20_000.0, 50_000.0, rng=rng, params=P)
        assert np.all(qty >= 0) and np.all(qty <= pos + 1e-12)
        assert (qty * 20_000).sum() <= 50_000 + 1e-6
        assert left == pytest.approx(50_000 - (qty * 20_000).sum())
        fired += qty.sum() > 0
    assert 8 < fired < 40  # ~ 1/6 of 120 ticks


def test_step1_fill_and_outcome():
    f = ftx.step1_fill_price(1, 20_000, 0.001, params=P)
    assert f == pytest.approx(20_000 * (1 - 0.0003 - 0.001))
    out = ftx.step1_outcome(1, 1.0, 20_000, f, 0.0007)
    assert out["user_pnl_usd"] + out["fee_usd"] + out["market_usd"] == pytest.approx(0)


def test_blp_capacity():
    p = load_params(overrides={"ftx.blp.capacity_per_minute_usd": 1e6, "ftx.blp.capacity_per_hour_usd": 3e6})
    taken, over = ftx.blp_take(np.array([600e3, 600e3, 100e3]), 0.0, 0.0, p)
    assert taken.tolist() == pytest.approx([600e3, 400e3, 0.0])
    assert over.tolist() == pytest.approx([0.0, 200e3, 100e3])
    taken, over = ftx.blp_take(500e3, 0.0, 2.8e6, p)  # the hour cap binds
    assert (taken, over) == pytest.approx((200e3, 300e3))


def test_overflow_top_n_pro_rata():
    opp = np.array([1.0, 50.0, 20.0, 30.0, 0.0])
    got = ftx.overflow_allocate(opp, 10.0, top_n=3)
    assert got.tolist() == pytest.approx([0.0, 5.0, 2.0, 3.0, 0.0])
    got = ftx.overflow_allocate(opp, 100.5, top_n=3)  # more than the top 3 hold: spill to the next
    assert got.tolist() == pytest.approx([0.5, 50.0, 20.0, 30.0, 0.0])


def test_collateral_transfer_and_exempt():
    t = ftx.collateral_transfer(10.0, 20_000, 0.95, 0.5)
    assert t["coin_qty"] == pytest.approx(5.0)
    assert t["blp_pays_usd"] == pytest.approx(95_000) and t["blp_gain_usd"] == pytest.approx(5_000)
    assert ftx.exempt_deficit_usd(np.array([5.0, -7.0])).tolist() == [0.0, 7.0]


@pytest.mark.parametrize("call", [
    lambda: ftx.margin_thresholds(0, 0.002, 1, params=P),
    lambda: ftx.margin_thresholds(20, -0.1, 1, params=P),
    lambda: ftx.collateral_value(1.0, 0.0, 0.95, 0.002),
    lambda: ftx.zero_price(1, 0.0, 0.01),
    lambda: ftx.step2_takeover(1, -1.0, 20_000, 0.01, 0.015, 10, params=P),
    lambda: ftx.step1_order_qty(np.array([1.0]), 0.0, 1e6, params=P),
    lambda: ftx.account_tav_mf(1, -1, 20_000, 20_000, 0, 0),
    lambda: ftx.backstop_price(0, 20_000, 0.01),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


def test_account_thresholds_notional_weighted():
    # a 20x BTC position ($3M) and a $1M position with IMF 10%, MMF 6%
    imf, mmf, acmf = ftx.account_thresholds(np.array([3e6, -1e6]), np.array([0.05, 0.10]), np.array([0.03, 0.06]),
                                            params=P)
    assert (imf, mmf, acmf) == pytest.approx((0.0625, 0.0375, 0.01875))
    with pytest.raises(ValueError):
        ftx.account_thresholds(np.array([0.0]), 0.05, 0.03, params=P)
