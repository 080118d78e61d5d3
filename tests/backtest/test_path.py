"""The intra-bar path: vertex order, exact sampling of extremes, first crossings vs brute force."""
from __future__ import annotations

import numpy as np
import pytest

from backtest.path import bar_paths, first_cross, price_at, tick_prices


def test_low_first_when_low_is_nearer_the_open():
    p = bar_paths(100.0, 110.0, 95.0, 105.0, 60)
    assert list(p.p[0]) == [100.0, 95.0, 110.0, 105.0]
    prices = tick_prices(p, 0)
    assert prices[0] == 100.0 and prices[-1] == 105.0
    assert prices.min() == 95.0 and prices.max() == 110.0
    assert np.argmin(prices) < np.argmax(prices)


def test_high_first_when_high_is_nearer_the_open():
    p = bar_paths(100.0, 102.0, 90.0, 95.0, 60)
    prices = tick_prices(p, 0)
    assert list(p.p[0]) == [100.0, 102.0, 90.0, 95.0]
    assert np.argmax(prices) < np.argmin(prices)
    assert prices.max() == 102.0 and prices.min() == 90.0


def test_time_split_proportional_to_leg_length_and_linear():
    # legs 5, 15, 5 of total 25 over 60 ticks (59 intervals)
    p = bar_paths(100.0, 110.0, 95.0, 105.0, 60)
    assert list(p.k[0]) == [0, round(59 * 5 / 25), round(59 * 20 / 25), 59]
    prices = tick_prices(p, 0)
    k1 = p.k[0, 1]
    d = np.diff(prices[: k1 + 1])
    assert np.allclose(d, d[0])  # linear on the first leg


def test_flat_bar():
    p = bar_paths(10.0, 10.0, 10.0, 10.0, 60)
    assert np.all(tick_prices(p, 0) == 10.0)
    assert first_cross(p, 0, 10.0, -1) == 0
    assert first_cross(p, 0, 9.99, -1) == -1


def test_first_cross_matches_brute_force_on_random_bars():
    rng = np.random.default_rng(7)
    m = 300
    o = rng.uniform(90, 110, m)
    c = rng.uniform(90, 110, m)
    h = np.maximum(o, c) + rng.exponential(3, m) * (rng.random(m) < 0.8)
    low = np.minimum(o, c) - rng.exponential(3, m) * (rng.random(m) < 0.8)
    for n in (4, 60, 3600):
        paths = bar_paths(o, h, low, c, n)
        for b in range(0, m, 7 if n == 3600 else 1):
            prices = tick_prices(paths, b)
            thr = rng.uniform(low[b] - 1, h[b] + 1, 8)
            thr = np.concatenate([thr, [low[b], h[b], o[b], c[b]]])
            kf = rng.integers(0, n, thr.size)
            got_dn = first_cross(paths, np.full(thr.size, b), thr, -1, kf)
            got_up = first_cross(paths, np.full(thr.size, b), thr, +1, kf)
            for j, t in enumerate(thr):
                seg = prices[kf[j]:]
                hits = np.nonzero(seg <= t)[0]
                assert got_dn[j] == (hits[0] + kf[j] if hits.size else -1), (n, b, t)
                hits = np.nonzero(seg >= t)[0]
                assert got_up[j] == (hits[0] + kf[j] if hits.size else -1), (n, b, t)


def test_price_at_agrees_with_ticks():
    rng = np.random.default_rng(1)
    o, c = rng.uniform(99, 101, 20), rng.uniform(99, 101, 20)
    h, low = np.maximum(o, c) + 1, np.minimum(o, c) - 2
    paths = bar_paths(o, h, low, c, 60)
    for b in range(20):
        prices = tick_prices(paths, b)
        assert prices.min() == low[b] and prices.max() == h[b]
        for k in (0, 13, 59):
            assert price_at(paths, b, k) == prices[k]


def test_rejects_zero_ticks():
    with pytest.raises(ValueError):
        bar_paths(1, 1, 1, 1, 0)
