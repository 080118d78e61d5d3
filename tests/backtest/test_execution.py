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


# ------------------------------------------------------------------ impact v2 (MODEL.md 5)
V, SIG, ETA, BM, CAP, BUCKET = 600e6, 0.002, 1.0, 60.0, 0.5, 60.0


def test_bar_sigma_is_the_bars_own_parkinson_volatility():
    quiet = ex.bar_sigma_1m(20010.0, 20000.0, 1.0, 0.0)
    wild = ex.bar_sigma_1m(20500.0, 19500.0, 1.0, 0.0)
    assert wild == pytest.approx(np.log(20500 / 19500) / np.sqrt(4 * np.log(2)))
    assert wild > 50 * quiet
    assert ex.bar_sigma_1m(20000.0, 20000.0, 1.0, 1e-4) == 1e-4         # flat bar: the floor
    assert ex.bar_sigma_1m(20600.0, 20000.0, 60.0, 0.0) == pytest.approx(
        ex.bar_sigma_1m(20600.0, 20000.0, 1.0, 0.0) / np.sqrt(60))     # per minute
    h = np.array([101.0, 100.0, 110.0])
    lw = np.array([100.0, 100.0, 100.0])
    s = ex.bar_sigmas_1m(h, lw, 1.0, 1e-4)
    assert s[1] == 1e-4 and s[2] > s[0] > 1e-4
    # slippage follows the bar: 20x the sigma -> 20x the slippage
    assert ex.sqrt_impact_1(1e6, V, 20 * SIG, ETA, BM, CAP) == pytest.approx(
        20 * ex.sqrt_impact_1(1e6, V, SIG, ETA, BM, CAP))


@settings(max_examples=200, deadline=None)
@given(q=st.floats(0, 1e9), v=st.floats(0, 1e10), sig=st.floats(0, 0.05), bm=st.sampled_from([1.0, 5.0, 60.0]))
def test_sqrt_impact_1_equals_the_vectorised_formula(q, v, sig, bm):
    assert ex.sqrt_impact_1(q, v, sig, ETA, bm, CAP) == pytest.approx(
        float(ex.sqrt_impact(q, v, sig, ETA, bm, max_slippage=CAP)), rel=1e-12, abs=1e-15)


def _fragments(sizes, times, kind=ex.FLOW_BLP_HEDGE, side=-1, state=None):
    st_, cum = state if state is not None else ex.new_metaorder_state(3)
    cost = 0.0
    for q, t in zip(sizes, times, strict=True):
        slip = ex.metaorder_slippage(st_, cum, kind, side, t, q, V, SIG, ETA, BM, BUCKET, CAP)
        cost += q * slip
    return cost


@pytest.mark.parametrize("n", [2, 5, 37])
def test_fragments_in_one_bucket_cost_what_one_order_of_their_sum_costs(n):
    q = 3e6
    one = _fragments([n * q], [0.0])
    assert one == pytest.approx(n * q * ex.sqrt_impact_1(n * q, V, SIG, ETA, BM, CAP))   # v1's cost
    split = _fragments([q] * n, np.linspace(0, BUCKET - 1, n))
    assert split == pytest.approx(one, rel=1e-9)
    # n separate buckets (v1's fragment pricing) cost less: sqrt(n) times less
    apart = _fragments([q] * n, np.arange(n) * BUCKET)
    assert apart == pytest.approx(one / np.sqrt(n), rel=1e-9) and split > apart
    # uneven fragments too
    r = np.random.default_rng(n).uniform(1e5, 1e7, n)
    assert _fragments(r, np.sort(np.random.default_rng(1).uniform(0, 59, n))) == pytest.approx(
        _fragments([r.sum()], [0.0]), rel=1e-9)


def test_metaorders_are_per_kind_side_and_bucket():
    st_, cum = ex.new_metaorder_state(3)
    first = ex.metaorder_slippage(st_, cum, ex.FLOW_LIQUIDATION, -1, 100.0, 1e6, V, SIG, ETA, BM, BUCKET, CAP)
    assert first == pytest.approx(ex.sqrt_impact_1(1e6, V, SIG, ETA, BM, CAP))
    again = ex.metaorder_slippage(st_, cum, ex.FLOW_LIQUIDATION, -1, 130.0, 1e6, V, SIG, ETA, BM, BUCKET, CAP)
    assert again > first                                          # same metaorder: dearer
    other_kind = ex.metaorder_slippage(st_, cum, ex.FLOW_BLP_HEDGE, -1, 130.0, 1e6, V, SIG, ETA, BM, BUCKET, CAP)
    other_side = ex.metaorder_slippage(st_, cum, ex.FLOW_LIQUIDATION, 1, 130.0, 1e6, V, SIG, ETA, BM, BUCKET, CAP)
    assert other_kind == pytest.approx(first) and other_side == pytest.approx(first)
    later = ex.metaorder_slippage(st_, cum, ex.FLOW_LIQUIDATION, -1, 160.0, 1e6, V, SIG, ETA, BM, BUCKET, CAP)
    assert later == pytest.approx(first)                          # 60 s after the start: a new one
    assert cum[ex.FLOW_LIQUIDATION, 0] == 1e6 and st_[ex.FLOW_LIQUIDATION, 0] == 160.0
    assert ex.metaorder_slippage(st_, cum, 0, -1, 161.0, 0.0, V, SIG, ETA, BM, BUCKET, CAP) == 0.0
    # the cap holds for every fragment
    big = [ex.metaorder_slippage(st_, cum, 2, -1, 200.0, 1e12, V, SIG, ETA, BM, BUCKET, CAP) for _ in range(3)]
    assert max(big) <= CAP + 1e-12


FB = dict(eta=ETA, bar_minutes=BM, baseline_share=0.5, permanent_share=2 / 3, bucket_s=BUCKET,
          decay_s=900.0, max_slippage=CAP)


def _fb_add(state, venue, t, side, q, **kw):
    p = {**FB, **kw}
    return ex.feedback_add(state, venue, t, side, q, V, SIG, p["eta"], p["bar_minutes"], p["baseline_share"],
                           p["permanent_share"], p["bucket_s"], p["decay_s"], p["max_slippage"])


def test_feedback_zero_flow_gives_zero_offset():
    s = ex.new_feedback_state(2)
    assert ex.feedback_offset(s, 0, 1000.0, 900.0) == 0.0
    assert _fb_add(s, 0, 10.0, -1, 0.0) == 0.0
    assert ex.feedback_offset(s, 0, 20.0, 900.0) == 0.0


def test_feedback_sells_push_down_buys_up_and_it_decays_by_half_in_decay_s():
    s = ex.new_feedback_state(2)
    off = _fb_add(s, 1, 1000.0, -1, 5e7)
    excess = 0.5 * 5e7
    assert off == pytest.approx(-(2 / 3) * ex.sqrt_impact_1(excess, V, SIG, ETA, BM, CAP))
    assert off < 0 and s[0, ex.FB_OFFSET] == 0.0                  # the other venue untouched
    assert ex.feedback_offset(s, 1, 1000.0 + 900.0, 900.0) == pytest.approx(off / 2)
    assert ex.feedback_offset(s, 1, 1000.0 + 2700.0, 900.0) == pytest.approx(off / 8)
    up = ex.new_feedback_state(1)
    assert _fb_add(up, 0, 0.0, 1, 5e7) == pytest.approx(-off)
    # a later flow adds to the decayed offset
    off2 = _fb_add(s, 1, 1900.0, -1, 5e7)
    assert off2 == pytest.approx(off / 2 + off)                   # new bucket: same step again


def test_feedback_baseline_share_1_gives_no_offset():
    s = ex.new_feedback_state(1)
    for t in range(0, 600, 7):
        assert _fb_add(s, 0, float(t), -1, 1e8, baseline_share=1.0) == 0.0
    assert ex.feedback_offset(s, 0, 700.0, 900.0) == 0.0


def test_feedback_is_split_invariant_inside_a_bucket():
    whole = _fb_add(ex.new_feedback_state(1), 0, 0.0, -1, 6e7, decay_s=1e12)
    s = ex.new_feedback_state(1)
    for t in range(6):
        part = _fb_add(s, 0, float(t), -1, 1e7, decay_s=1e12)
    assert part == pytest.approx(whole, rel=1e-6)
    # never below the floor
    s = ex.new_feedback_state(1)
    for t in range(0, 6000, 61):
        o = _fb_add(s, 0, float(t), -1, 1e12, decay_s=1e12)
    assert o >= ex.MAX_DOWN_OFFSET


def test_impact_settings_read_params():
    from backtest.params import load_params
    p = load_params()
    s = ex.impact_settings(p, "binance")
    assert s["bucket_s"] == 60.0 and s["feedback"] is False and 0 <= s["baseline_share"] <= 1
    assert ex.impact_settings(p.with_overrides({"impact.feedback": True}), "ftx")["feedback"] is True
    for key in ("impact.bucket_s", "impact.feedback", "impact.baseline_share", "impact.decay_s",
                "impact.permanent_share", "impact.sigma_floor_1m"):
        assert p.source(key) and key in p.sweep_ranges()
