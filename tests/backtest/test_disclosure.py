"""Binance's one-order-per-second stream on the real account count (MODEL.md 4.5)."""
from __future__ import annotations

import numpy as np
import pytest

from backtest.disclosure import binance_reported, binance_reported_sampled

REAL = 200_000          # real liquidations in the flow
TOTAL = 1.5e9           # their notional


def crash_flow(n_sim: int, seed: int):
    """One real liquidation flow (bursts in a sell-off, a few short squeezes, a quiet tail),
    represented by n_sim simulated liquidations that each stand for REAL/n_sim real ones on
    average; weights proportional to size (lognormal), as in the cohort book."""
    r = np.random.default_rng(seed)
    t0 = 1.65e9
    parts = [t0 + np.abs(r.normal(0, 900, int(n_sim * 0.5))),         # the crash hour
             t0 + 3600 + r.exponential(4 * 3600, int(n_sim * 0.3)),    # aftershocks
             t0 + r.uniform(0, 86400 * 3, n_sim - int(n_sim * 0.5) - int(n_sim * 0.3))]
    t = np.concatenate(parts)
    side = np.where(r.random(n_sim) < 0.7, 1, -1)
    size = r.lognormal(0.0, 1.5, n_sim)
    x = size / size.sum() * TOTAL
    w = size / size.sum() * REAL
    return t, x, w, side


def test_reported_total_stable_in_n():
    """The same real flow as 20,000 vs 200,000 simulated liquidations: reported within 15%."""
    t1, x1, w1, s1 = crash_flow(20_000, 1)
    t2, x2, w2, s2 = crash_flow(200_000, 2)
    r1 = binance_reported(t1, x1, w1, s1).sum()
    r2 = binance_reported(t2, x2, w2, s2).sum()
    assert r1 == pytest.approx(r2, rel=0.15)
    assert 0 < r1 < TOTAL


def test_throttle_on_simulated_events_is_not_stable():
    """The check above can fail: one order per simulated event (weight 1) moves with N."""
    t1, x1, _, s1 = crash_flow(20_000, 1)
    t2, x2, _, s2 = crash_flow(200_000, 2)
    r1 = binance_reported(t1, x1, np.ones_like(x1), s1, max_spread_s=1.0, bandwidth_real_orders=1.0).sum()
    r2 = binance_reported(t2, x2, np.ones_like(x2), s2, max_spread_s=1.0, bandwidth_real_orders=1.0).sum()
    assert r1 > 1.5 * r2


def test_expectation_matches_sampled_stream():
    t, x, w, s = crash_flow(3000, 3)
    w = w / 20.0        # keep the materialised orders small
    e = binance_reported(t, x, w, s).sum()
    draws = [binance_reported_sampled(t, x, np.maximum(w, 1.0), s, key=k).sum() for k in range(3)]
    e1 = binance_reported(t, x, np.maximum(w, 1.0), s).sum()
    assert np.mean(draws) == pytest.approx(e1, rel=0.03)
    assert e >= e1 * 0.999      # fractional weights add fewer orders than k = max(1, w): less throttling


def test_single_orders_far_apart_are_all_reported():
    t = np.array([0.0, 100_000.0, 200_000.0])
    x = np.array([1e6, 2e6, 3e6])
    np.testing.assert_allclose(binance_reported(t, x, np.ones(3), np.ones(3)), x, rtol=1e-3)  # Poisson approx.


def test_many_orders_in_one_second_show_one():
    """k real orders forced into one second (no room to spread) show one order: X/k."""
    rep = binance_reported(np.array([10.0]), np.array([1e6]), np.array([100.0]), np.array([1]), max_spread_s=1.0)
    assert rep[0] == pytest.approx(1e6 * (1 - np.exp(-100.0)) / 100.0, rel=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError):
        binance_reported([1.0], [1.0], [1.0], max_spread_s=0.0)
    with pytest.raises(ValueError):
        binance_reported([1.0, 2.0], [1.0], [1.0])
