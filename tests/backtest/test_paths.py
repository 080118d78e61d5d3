"""backtest/paths.py: the compiled linear (v1) and Brownian-bridge bar paths (MODEL.md 1)."""
from __future__ import annotations

import glob

import numpy as np
import pandas as pd
import pytest

from backtest import path as v1
from backtest import paths as P
from backtest.params import ParamsError, load_params


def random_bars(m, seed, *, degenerate=True):
    r = np.random.default_rng(seed)
    o = 100.0 * np.exp(r.normal(0, 0.01, m))
    c = o * np.exp(r.normal(0, 0.01, m))
    h = np.maximum(o, c) * np.exp(np.abs(r.normal(0, 0.005, m)))
    lw = np.minimum(o, c) * np.exp(-np.abs(r.normal(0, 0.005, m)))
    if degenerate:
        kind = r.integers(0, 8, m)
        h = np.where(kind == 1, np.maximum(o, c), h)          # close or open at the high
        lw = np.where(kind == 2, np.minimum(o, c), lw)
        flat = kind == 3
        o, h, lw, c = (np.where(flat, o, x) for x in (o, h, lw, c))
        oc = kind == 4                                         # O == C
        c = np.where(oc, o, c)
        h = np.where(kind == 5, o, h)                          # O at the high
        lw = np.where(kind == 5, np.minimum(lw, c), lw)
        h = np.where(kind == 6, np.maximum(h, o), h)
        lw = np.where(kind == 6, c, lw)                          # C at the low
        lw = np.minimum(lw, np.minimum(o, c))
        h = np.maximum(h, np.maximum(o, c))
    return o, h, lw, c


KEY = P.path_key(7, "BTC")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 60, 300])
def test_mode_0_is_the_v1_path_tick_for_tick(n):
    o, h, lw, c = random_bars(400, n)
    ts = np.arange(400, dtype=np.int64) * 60
    got = P.fill_series(o, h, lw, c, n, P.MODE_LINEAR, KEY, ts, 0.8)
    paths = v1.bar_paths(o, h, lw, c, n)
    want = np.stack([v1.tick_prices(paths, b) for b in range(400)])
    assert np.array_equal(got, want)          # bit for bit, degenerate bars included


def _touches(row, x):
    return np.flatnonzero(row == x)


@pytest.mark.parametrize("n", [4, 5, 7, 60, 300])
def test_bridge_passes_through_ohlc_and_stays_inside(n):
    m = 500
    o, h, lw, c = random_bars(m, 100 + n)
    ts = 1_650_000_000 + np.arange(m, dtype=np.int64) * 60
    got = P.fill_series(o, h, lw, c, n, P.MODE_BRIDGE, KEY, ts, 0.8)
    assert np.all(np.isfinite(got))
    assert np.array_equal(got[:, 0], o) and np.array_equal(got[:, -1], c)
    assert np.all(got.max(axis=1) == h) and np.all(got.min(axis=1) == lw)
    for i in range(m):
        if h[i] == lw[i]:
            assert np.all(got[i] == h[i])
            continue
        # H and L each touched once, at the extreme's tick; twice only where O or C sits there
        for x in (h[i], lw[i]):
            t = _touches(got[i], x)
            extra = int(o[i] == x) + int(c[i] == x)
            assert 1 <= t.size <= 1 + extra, (i, x, t)
            if extra == 0:
                assert t.size == 1 and 0 < t[0] < n - 1


def test_bridge_is_not_the_linear_path_and_has_texture():
    o, h, lw, c = random_bars(200, 5, degenerate=False)
    ts = np.arange(200, dtype=np.int64) * 60
    br = P.fill_series(o, h, lw, c, 60, P.MODE_BRIDGE, KEY, ts, 0.8)
    li = P.fill_series(o, h, lw, c, 60, P.MODE_LINEAR, KEY, ts, 0.8)
    assert not np.array_equal(br, li)
    # the linear path is monotone between waypoints (at most 3 direction changes per bar);
    # the bridge wiggles
    def turns(x):
        d = np.sign(np.diff(x, axis=1))
        return (d[:, 1:] * d[:, :-1] < 0).sum(axis=1)
    assert turns(li).max() <= 2 and turns(br).mean() > 10


def test_bridge_is_seeded_and_reproducible():
    o, h, lw, c = random_bars(50, 9, degenerate=False)
    ts = np.arange(50, dtype=np.int64) * 300
    a = P.fill_series(o, h, lw, c, 300, P.MODE_BRIDGE, KEY, ts, 0.8)
    b = P.fill_series(o, h, lw, c, 300, P.MODE_BRIDGE, KEY, ts, 0.8)
    assert np.array_equal(a, b)
    other = P.fill_series(o, h, lw, c, 300, P.MODE_BRIDGE, P.path_key(8, "BTC"), ts, 0.8)
    draw2 = P.fill_series(o, h, lw, c, 300, P.MODE_BRIDGE, P.path_key(7, "BTC", draw=1), ts, 0.8)
    eth = P.fill_series(o, h, lw, c, 300, P.MODE_BRIDGE, P.path_key(7, "ETH"), ts, 0.8)
    for x in (other, draw2, eth):
        # every interior differs (waypoints aside)
        assert np.mean(np.any(x[:, 1:-1] != a[:, 1:-1], axis=1)) == 1.0


def test_same_key_and_bar_give_the_same_ticks_in_any_call_order():
    """A venue and its stand-in (same key, same bars), and a replay filling only some bars
    in another order, see identical ticks."""
    o, h, lw, c = random_bars(30, 11, degenerate=False)
    ts = 1_652_000_000 + np.arange(30, dtype=np.int64) * 60
    full = P.fill_series(o, h, lw, c, 60, P.MODE_BRIDGE, KEY, ts, 0.8)
    buf = np.full(60, np.nan)
    for i in (17, 3, 29, 0, 17):
        P.fill_bar_path(o[i], h[i], lw[i], c[i], 60, P.MODE_BRIDGE, KEY, ts[i], 0.8, buf)
        assert np.array_equal(buf, full[i])
    # the same bar at another position of another series: same ticks
    one = P.fill_series(o[5:6], h[5:6], lw[5:6], c[5:6], 60, P.MODE_BRIDGE, KEY, ts[5:6], 0.8)
    assert np.array_equal(one[0], full[5])
    # the same bar at another time: other ticks
    moved = P.fill_series(o[5:6], h[5:6], lw[5:6], c[5:6], 60, P.MODE_BRIDGE, KEY, ts[5:6] + 60, 0.8)
    assert not np.array_equal(moved[0], full[5])


def test_order_of_extremes_follows_near_first_prob():
    m = 4000
    r = np.random.default_rng(3)
    o = np.full(m, 100.0)
    h = 100.0 + r.uniform(0.1, 1.0, m)
    lw = 100.0 - r.uniform(0.1, 1.0, m)
    c = 100.0 + r.uniform(-0.05, 0.05, m)
    ts = np.arange(m, dtype=np.int64) * 60
    near_high = (h - o) < (o - lw)
    for p in (0.0, 0.8, 1.0):
        x = P.fill_series(o, h, lw, c, 60, P.MODE_BRIDGE, KEY, ts, p)
        high_first = x.argmax(axis=1) < x.argmin(axis=1)
        share = np.mean(high_first == near_high)
        if p in (0.0, 1.0):
            assert share == p
        else:
            assert abs(share - p) < 0.03


def test_extreme_at_open_or_close_sits_on_its_tick():
    buf = np.empty(60)
    # O at the high: the high is tick 0 and the low comes later
    P.fill_bar_path(101.0, 101.0, 99.0, 100.0, 60, P.MODE_BRIDGE, KEY, 0, 0.0, buf)
    assert buf[0] == 101.0 and np.sum(buf == 101.0) == 1 and np.sum(buf == 99.0) == 1
    # C at the low: the low is the last tick
    P.fill_bar_path(100.0, 101.0, 99.0, 99.0, 60, P.MODE_BRIDGE, KEY, 0, 1.0, buf)
    assert buf[-1] == 99.0 and np.sum(buf == 99.0) == 1 and buf.argmax() < 59
    # flat bar
    P.fill_bar_path(100.0, 100.0, 100.0, 100.0, 60, P.MODE_BRIDGE, KEY, 0, 0.8, buf)
    assert np.all(buf == 100.0)


def test_first_cross_and_extreme_on_a_filled_bar():
    o, h, lw, c = random_bars(100, 21, degenerate=False)
    ts = np.arange(100, dtype=np.int64) * 60
    x = P.fill_series(o, h, lw, c, 60, P.MODE_BRIDGE, KEY, ts, 0.8)
    r = np.random.default_rng(0)
    for i in range(100):
        lvl = r.uniform(lw[i], h[i])
        k0 = int(r.integers(0, 60))
        for d in (-1, 1):
            k = P.first_cross_filled(x[i], 60, lvl, d, k0)
            hit = np.flatnonzero((x[i, k0:] <= lvl) if d < 0 else (x[i, k0:] >= lvl))
            assert k == (k0 + hit[0] if hit.size else -1)
            ext = P.extreme_filled(x[i], 60, d, k0)
            assert ext == (x[i, k0:].min() if d < 0 else x[i, k0:].max())
        assert P.first_cross_filled(x[i], 60, lw[i] * 0.99, -1, 0) == -1


def test_parkinson_sigma():
    assert P.parkinson_sigma_1m(101.0, 100.0, 1.0) == pytest.approx(np.log(1.01) / np.sqrt(4 * np.log(2)))
    assert P.parkinson_sigma_1m(101.0, 100.0, 60.0) == pytest.approx(
        P.parkinson_sigma_1m(101.0, 100.0, 1.0) / np.sqrt(60.0))
    assert P.parkinson_sigma_1m(100.0, 100.0, 1.0) == 0.0
    # the estimator recovers the volatility of simulated random walks
    r = np.random.default_rng(1)
    walks = np.cumsum(r.normal(0, 0.001, (2000, 600)), axis=1)
    est = np.mean([P.parkinson_sigma_1m(np.exp(w.max()), np.exp(w.min()), 1.0) ** 2 for w in walks])
    assert np.sqrt(est) == pytest.approx(0.001 * np.sqrt(600), rel=0.1)


def test_extreme_times_follow_their_distance_from_the_open():
    m = 3000
    r = np.random.default_rng(8)
    o = np.full(m, 100.0)
    up, dn = r.uniform(0.05, 1.0, m), r.uniform(0.05, 1.0, m)
    h, lw = o + up, o - dn
    c = lw + r.uniform(0.2, 0.8, m) * (h - lw)
    ts = np.arange(m, dtype=np.int64) * 60
    x = P.fill_series(o, h, lw, c, 600, P.MODE_BRIDGE, KEY, ts, 0.8)
    t_high = x.argmax(axis=1) / 599
    share = up / (up + dn)                         # a high near the open in price ...
    assert np.corrcoef(share, t_high)[0, 1] > 0.3  # ... comes early
    # times spread over the whole bar
    t = np.r_[t_high, x.argmin(axis=1) / 599]
    assert np.quantile(t, 0.02) < 0.1 and np.quantile(t, 0.98) > 0.9 and 0.3 < np.median(t) < 0.7
    # no jitter: the times follow from the bar alone, not from the key
    a = P.fill_series(o[:50], h[:50], lw[:50], c[:50], 600, P.MODE_BRIDGE, KEY, ts[:50], 1.0, 0.75, 0.0)
    b = P.fill_series(o[:50], h[:50], lw[:50], c[:50], 600, P.MODE_BRIDGE, P.path_key(1, "X"), ts[:50], 1.0, 0.75, 0.0)
    assert np.array_equal(a.argmax(axis=1), b.argmax(axis=1)) and not np.array_equal(a, b)


def test_path_settings_reads_and_checks_params():
    p = load_params()
    s = P.path_settings(p)
    assert s["mode"] == P.MODE_BRIDGE and s["draws"] == 1 and 0 < s["near_first_prob"] < 1
    # the compiled functions' optional arguments default to the parameter file's values
    import inspect
    for fn in (P.fill_bar_path.py_func, P.fill_series.py_func):
        sig = inspect.signature(fn).parameters
        assert sig["vol_scale"].default == p.get("path.vol_scale")
        assert sig["time_jitter"].default == p.get("path.time_jitter")
    assert P.path_settings(p.with_overrides({"path.mode": "linear"}))["mode"] == P.MODE_LINEAR
    with pytest.raises(ParamsError, match="path.mode"):
        p.with_overrides({"path.mode": "zigzag"})
    for key in ("path.near_first_prob", "path.vol_scale", "path.time_jitter", "path.draws"):
        assert p.source(key)


def _five_second_moves(bars: pd.DataFrame, mode: int) -> np.ndarray:
    ts = (pd.to_datetime(bars["ts"], utc=True).astype("int64") // 10**9).to_numpy()
    x = P.fill_series(bars["open"].to_numpy(float), bars["high"].to_numpy(float), bars["low"].to_numpy(float),
                      bars["close"].to_numpy(float), 60, mode, KEY, ts, 0.8).ravel()
    return np.abs(np.log(x[5:] / x[:-5])) * 1e4


def test_bridge_widens_the_5s_moves_of_real_1m_btc_bars(shared_data):
    files = sorted(glob.glob(str(shared_data / "binance_spot_1m_nl2992" / "binance_spot_BTCUSDT_1m_*.parquet")))
    if not files:
        pytest.skip("no Binance BTCUSDT 1m bars in the shared data")
    days = {"celsius": "2022-06-12", "ftx": "2022-11-07", "terra": "2022-05-09"}   # 4 crash days each
    for f in files:
        bars = pd.read_parquet(f, columns=["ts", "open", "high", "low", "close"]).sort_values("ts")
        start = next((pd.Timestamp(d, tz="UTC") for k, d in days.items() if k in f), bars["ts"].iloc[0])
        bars = bars[(bars.ts >= start) & (bars.ts < start + pd.Timedelta(days=4))]
        lin = np.percentile(_five_second_moves(bars, P.MODE_LINEAR), 99)
        bri = np.percentile(_five_second_moves(bars, P.MODE_BRIDGE), 99)
        print(f"{f.rsplit('/', 1)[-1]}: 99th pct |5 s move| linear {lin:.1f} bp, bridge {bri:.1f} bp")
        assert bri > 1.2 * lin


@pytest.mark.parametrize("mode", [P.MODE_LINEAR, P.MODE_BRIDGE])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 60, 300])
def test_bar_prices_at_gives_the_filled_bars_ticks(mode, n):
    """bar_prices_at (no price pass over the other ticks) = fill_bar_path at every tick asked
    for, bit for bit, including O, C and the extremes' ticks and degenerate bars."""
    o, h, lw, c = random_bars(200, 11)
    ts = 1_650_000_000 + 60 * np.arange(200, dtype=np.int64)
    buf = np.empty(n)
    full = np.empty(n)
    out = np.empty(n)
    r = np.random.default_rng(5)
    for b in range(200):
        P.fill_bar_path(o[b], h[b], lw[b], c[b], n, mode, KEY, ts[b], 0.6, full, 1.3, 0.25)
        ks = np.sort(r.choice(n, size=min(n, 7), replace=False)).astype(np.int64)
        ks = np.unique(np.r_[ks, 0, n - 1])
        P.bar_prices_at(o[b], h[b], lw[b], c[b], n, mode, KEY, ts[b], 0.6, ks, out, buf, 1.3, 0.25)
        np.testing.assert_array_equal(out[:len(ks)], full[ks])
        allk = np.arange(n, dtype=np.int64)
        P.bar_prices_at(o[b], h[b], lw[b], c[b], n, mode, KEY, ts[b], 0.6, allk, out, buf, 1.3, 0.25)
        np.testing.assert_array_equal(out, full)


@pytest.mark.parametrize("mode", [P.MODE_LINEAR, P.MODE_BRIDGE])
def test_binance_close_prices_equal_the_filled_paths(mode):
    from backtest.replay import binance_kernel as K
    o, h, lw, c = random_bars(300, 12)
    ts = 1_650_000_000 + 300 * np.arange(300, dtype=np.int64)
    n = 300
    g = np.random.default_rng(1).integers(0, 300 * n, 2000).astype(np.int64)   # repeats, any order
    got = K.close_prices(ts, o, h, lw, c, n, mode, KEY, 0.6, 1.0, 0.25, g)
    want = P.prices_at(o, h, lw, c, n, mode, KEY, ts, 0.6, g // n, g % n, 1.0, 0.25)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", [P.MODE_LINEAR, P.MODE_BRIDGE])
def test_prices_at_is_the_filled_bar_with_o_and_c_at_the_ends(mode):
    o, h, lw, c = random_bars(120, 13)
    ts = 1_650_000_000 + 60 * np.arange(120, dtype=np.int64)
    n = 60
    r = np.random.default_rng(2)
    bars = np.sort(r.integers(0, 120, 900)).astype(np.int64)
    bars[::7] = r.integers(0, 120, len(bars[::7]))          # some out of order
    ks = r.integers(0, n, 900).astype(np.int64)
    ks[::5] = n - 1
    ks[::11] = 0
    got = P.prices_at(o, h, lw, c, n, mode, KEY, ts, 0.6, bars, ks, 1.2, 0.3)
    buf = np.empty(n)
    for j in range(len(bars)):
        b, k = bars[j], ks[j]
        P.fill_bar_path(o[b], h[b], lw[b], c[b], n, mode, KEY, ts[b], 0.6, buf, 1.2, 0.3)
        want = c[b] if k == n - 1 else (o[b] if k == 0 else buf[k])
        assert got[j] == want, (j, b, k)
