"""Impact v2 in the replay kernels (MODEL.md 5): the bar's own sigma, metaorders per
impact.bucket_s, the optional feedback (cascade) mode; fast kernels == naive oracles in every
mode, and v1 mode keeps the first release's rule."""
from __future__ import annotations

import numpy as np
import pytest

from backtest import execution
from backtest.reference import reference_binance, reference_ftx
from backtest.replay import run_binance, run_ftx
from tests.backtest._synth import DATE, crash_bars, setup
from tests.backtest.test_reference_parity import assert_same

# thin books (a small bar volume) so that the impact is large enough to matter
THIN = 3e5
CASCADE = {"impact.feedback": True, "impact.baseline_share": 0.0, "execution.eta.binance": 3.0,
           "execution.eta.ftx": 3.0}


def _bars(volume=THIN, crash=-0.02):
    bars = crash_bars(crash=crash, squeeze=0.02)
    bars["volume_quote"] = volume
    return bars


def _impact(ev):
    """Slippage of each market fill as a fraction of its mark."""
    m = ev[ev.mechanism.isin(["ioc", "fund", "step1"])]
    return m, (m.mark_price - m.price).abs() / m.mark_price


MODES = [{"impact.mode": "v1"}, {}, {"impact.feedback": True}, {**CASCADE},
         {"impact.mode": "v1", "impact.feedback": True, "impact.baseline_share": 0.2}]


@pytest.mark.parametrize("over", MODES)
def test_binance_parity_in_every_impact_mode(over):
    params, pop, inp, sym = setup("binance", 300, {"population.leverage_scale": 1.5, **over}, bars=_bars())
    fast = run_binance(inp, pop, params, symbol=sym, date=DATE)
    ref = reference_binance(inp, pop, params, symbol=sym, date=DATE)
    assert_same(fast, ref, min_events=10)


@pytest.mark.parametrize("over", MODES)
@pytest.mark.parametrize("seed", [None, 3, 11])
def test_ftx_parity_in_every_impact_mode_deterministic_and_random(over, seed):
    params, pop, inp, sym = setup("ftx", 200, {"ftx.blp.capacity_per_minute_usd": 200000.0,
                                               "population.leverage_scale": 2.0, **over}, bars=_bars())
    fast = run_ftx(inp, pop, params, symbol=sym, date=DATE, seed=seed)
    ref = reference_ftx(inp, pop, params, symbol=sym, date=DATE, seed=seed)
    assert_same(fast, ref, min_events=10)
    assert (fast.events.mechanism == "step1").any()


def test_binance_fills_pay_the_sigma_of_their_own_bar():
    """v2: a fill alone in its bucket pays eta * sigma(bar) * sqrt(q / V) with sigma the bar's
    Parkinson volatility; v1 the window's sigma."""
    for mode in ("v1", "v2"):
        params, pop, inp, sym = setup("binance", 300, {"population.leverage_scale": 1.5, "impact.mode": mode,
                                                       "impact.bucket_s": 1.0}, bars=_bars())
        ev = run_binance(inp, pop, params, symbol=sym, date=DATE).events
        m, slip = _impact(ev)
        alone = ~m.duplicated(["t_s", "side"], keep=False)       # the only fill of its side in its second
        assert alone.sum() >= 5
        bar = ((m.t_s - inp.ts_s[0]) // 60).astype(int).to_numpy()
        sig = execution.bar_sigmas_1m(inp.high, inp.low, 1.0, float(params.get("impact.sigma_floor_1m")))[bar]
        want_sig = sig if mode == "v2" else np.full(len(m), inp.sigma_1m)
        want = np.asarray(execution.sqrt_impact(m.qty_coin * m.mark_price, inp.volume_quote[bar], want_sig, 1.0))
        np.testing.assert_allclose(slip[alone], want[alone.to_numpy()], rtol=1e-9)
        assert not np.allclose(sig[alone.to_numpy()], inp.sigma_1m, rtol=0.05)   # the bar's sigma is not the window's


def test_two_fills_in_one_bucket_pay_more_than_each_alone():
    """Metaorders: with impact.bucket_s = 60 the later fills of a minute pay the marginal impact
    of the cumulative flow, more than the same orders alone (bucket_s = 1 s, one tick)."""
    out = {}
    for bucket in (1.0, 60.0):
        params, pop, inp, sym = setup("binance", 300, {"population.leverage_scale": 1.5,
                                                       "impact.bucket_s": bucket}, bars=_bars())
        ev = run_binance(inp, pop, params, symbol=sym, date=DATE).events
        out[bucket] = _impact(ev)
    (m1, s1), (m60, s60) = out[1.0], out[60.0]
    assert len(m1) == len(m60) and len(m1) >= 10
    # the first fill of the run pays the same; later fills of a busy minute pay more
    assert s60.iloc[0] == pytest.approx(s1.iloc[0], rel=1e-12)
    assert (s60.to_numpy() >= s1.to_numpy() * (1 - 1e-12)).all()
    assert (s60.to_numpy() > s1.to_numpy() * 1.5).sum() >= 3
    assert (s60 * m60.notional_usd).sum() > 1.2 * (s1 * m1.notional_usd).sum()


def test_fragments_of_one_bar_and_bucket_cost_one_order_of_their_sum():
    """FTX step 1 in v2: the fills of one side inside one bar and one bucket together pay
    C(sum) = sum * eta * sigma(bar) * sqrt(sum / V) (before the limit offset)."""
    params, pop, inp, sym = setup("ftx", 200, {"ftx.blp.capacity_per_minute_usd": 200000.0,
                                               "population.leverage_scale": 2.0, "impact.bucket_s": 60.0,
                                               "ftx.step1.offset_bp_low": 0.0, "ftx.step1.offset_bp_high": 0.0},
                                  bars=_bars())
    ev = run_ftx(inp, pop, params, symbol=sym, date=DATE, deterministic=True).events
    m = ev[ev.mechanism == "step1"].copy()
    m["bar"] = ((m.t_s - inp.ts_s[0]) // 60).astype(int)
    sig = execution.bar_sigmas_1m(inp.high, inp.low, 1.0, float(params.get("impact.sigma_floor_1m")))
    # buckets start at a bar's first fill only if the bucket opened in the bar: bars whose first
    # step-1 fill is at the bar's first second and whose previous bar had none
    checked = 0
    for (b, s), g in m.groupby(["bar", "side"]):
        if len(g) < 2 or ((m.bar == b - 1) & (m.side == s)).any():
            continue
        q = (g.qty_coin * g.mark_price).to_numpy()
        paid = (g.qty_coin * (g.mark_price - g.price).abs()).sum()
        Q = q.sum()
        want = Q * float(execution.sqrt_impact(Q, inp.volume_quote[b], sig[b], 1.0))
        assert paid == pytest.approx(want, rel=1e-9)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("venue", ["binance", "ftx"])
def test_feedback_cascade_liquidates_more_than_the_exogenous_path(venue):
    """A crash in a thin book: with feedback on, the liquidations' flow moves the path down and
    reaches accounts the historical path alone does not."""
    res = {}
    for fb in (False, True):
        over = {**CASCADE, "impact.feedback": fb, "population.leverage_scale": 1.5}
        if venue == "ftx":
            over["ftx.blp.capacity_per_minute_usd"] = 200000.0
        params, pop, inp, sym = setup(venue, 300, over, bars=_bars())
        run = run_binance if venue == "binance" else run_ftx
        kw = {} if venue == "binance" else {"deterministic": True}
        res[fb] = run(inp, pop, params, symbol=sym, date=DATE, **kw)
    off, on = res[False], res[True]
    assert on.totals["accounts_liquidated"] > off.totals["accounts_liquidated"]
    assert on.totals["liquidated_usd"] > off.totals["liquidated_usd"]
    # the moved path: fills after the first flow happen at marks below the path's ticks
    ev = on.events
    moved = ev.mark_price.to_numpy() / inp.price_at_time(ev.t_s.to_numpy()) - 1.0
    assert moved.min() < -1e-3
    assert np.allclose(off.events.mark_price, inp.price_at_time(off.events.t_s.to_numpy()), rtol=1e-12)
