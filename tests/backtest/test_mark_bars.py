"""Mark-price bars for the triggers where the lake has them (MODEL.md 1 "Mark vs last"):
series_loader.SeriesLoader loads them into SeriesData.mark_bars and says so in trigger_source."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.catalog import Catalog
from backtest.params import default_params
from backtest.scenarios import load_scenarios
from backtest.series_loader import SeriesLoader
from fetch.lake import Lake

W0, W1 = pd.Timestamp("2022-10-24", tz="UTC"), pd.Timestamp("2022-10-28", tz="UTC")


def _bars(symbol, tf, freq, *, price_type="trade", venue="binance", market="perp", start=W0, end=W1,
          p0=20000.0, seed=0, drop=None):
    ts = pd.date_range(start, end, freq=freq, inclusive="left", tz="UTC")
    r = np.random.default_rng(seed)
    c = p0 * np.exp(np.cumsum(r.normal(0, 0.001, len(ts))))
    o = np.r_[p0, c[:-1]]
    df = pd.DataFrame({"venue": venue, "market": market, "symbol": symbol, "timeframe": tf,
                       "price_type": price_type, "ts": ts, "open": o, "high": np.maximum(o, c) * 1.0005,
                       "low": np.minimum(o, c) * 0.9995, "close": c,
                       "volume_base": 5.0 if price_type == "trade" else 0.0})
    if drop is not None:
        df = df.drop(index=df.index[drop]).reset_index(drop=True)
    return df


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lk = Lake(tmp_path_factory.mktemp("marklake"))
    lk.write("ohlcv", _bars("BTCUSDT", "1m", "1min"), source="t")
    lk.write("ohlcv", _bars("BTCUSDT", "1m", "1min", price_type="mark", p0=20001.0, seed=1,
                            drop=slice(100, 130)), source="t")           # 30 mark bars missing
    lk.write("ohlcv", _bars("ETHUSDT", "1m", "1min", p0=1500.0, seed=2), source="t")
    lk.write("ohlcv", _bars("SOLUSDT", "5m", "5min", p0=30.0, seed=3), source="t")
    lk.write("ohlcv", _bars("SOLUSDT", "1h", "1h", price_type="mark", p0=30.0, seed=4), source="t")
    lk.write("open_interest", pd.DataFrame({
        "venue": "binance", "market": "perp", "symbol": "SOLUSDT", "timeframe": "1d",
        "ts": [pd.Timestamp("2022-10-23", tz="UTC")], "oi_base": [1e6], "oi_usd": [3e7], "source": "t"}),
        source="t")
    return lk


@pytest.fixture(scope="module")
def loader(lake):
    return SeriesLoader(Catalog(lake.root), load_scenarios(), params=default_params())


def test_own_mark_bars_for_the_triggers(loader, lake):
    sc = load_scenarios()
    sd = loader.load(sc.window("2022-10"), "binance", "BTC")
    assert sd.trigger_source == "mark" and sd.price_source == "own"
    m = sd.mark_bars
    assert list(m.columns) == ["ts", "open", "high", "low", "close"]
    assert m["ts"].equals(sd.bars["ts"])                             # the trade bars' grid
    want = _bars("BTCUSDT", "1m", "1min", price_type="mark", p0=20001.0, seed=1)
    got_idx = np.r_[0:100, 130:len(want)]
    assert np.allclose(m["close"].to_numpy()[got_idx], want["close"].to_numpy()[got_idx])
    # the 30 missing mark bars take the trade bars' prices, and a note says so
    assert np.array_equal(m["close"].to_numpy()[100:130], sd.bars["close"].to_numpy()[100:130])
    assert any("30 of 5760 1m mark bars missing" in n for n in sd.notes)
    # fills keep the trade bars
    assert not np.allclose(sd.bars["close"].to_numpy()[:100], m["close"].to_numpy()[:100])


def test_a_stand_in_uses_the_stand_ins_mark_bars(loader):
    sd = loader.load(load_scenarios().window("2022-10"), "ftx", "BTC")
    assert sd.price_source.startswith("substituted: binance perp BTCUSDT")
    assert sd.trigger_source == "mark: binance perp BTCUSDT (the stand-in's)"
    assert sd.mark_bars is not None and len(sd.mark_bars) == len(sd.bars)


def test_without_mark_bars_triggers_use_the_trade_bars(loader):
    sd = loader.load(load_scenarios().window("2022-10"), "binance", "ETH")
    assert sd.mark_bars is None and sd.trigger_source == "trade bars: no mark bars in the lake"
    sol = loader.load(load_scenarios().window("2022-10"), "binance", "SOL")
    assert sol.mark_bars is None
    assert sol.trigger_source == ("trade bars: binance perp SOLUSDT has mark bars only at 1h, "
                                  "coarser than the 5m trade bars")


def test_finer_mark_bars_are_resampled_to_the_trade_timeframe(loader):
    sd = loader.load(load_scenarios().window("2022-10"), "binance", "BTC", timeframe="15m")
    assert sd.timeframe == "15m" and sd.trigger_source == "mark" and len(sd.mark_bars) == 4 * 96
    raw = _bars("BTCUSDT", "1m", "1min", price_type="mark", p0=20001.0, seed=1)
    first = raw.iloc[:15]
    row = sd.mark_bars.iloc[0]
    assert (row.open, row.high, row.low, row.close) == pytest.approx(
        (first.open.iloc[0], first.high.max(), first.low.min(), first.close.iloc[-1]))
