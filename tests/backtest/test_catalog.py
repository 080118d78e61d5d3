"""The DuckDB Catalog over a hand-made lake (the real data is covered in tests/fetch)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.catalog import Catalog, expected_bars
from fetch.lake import Lake, LakeDamaged

T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731


def _bars(symbol, start, periods, freq, tf, *, market="perp", venue="binance", close=100.0, vq=None,
          price_type="trade"):
    ts = pd.date_range(start, periods=periods, freq=freq, tz="UTC")
    c = close + np.arange(periods, dtype="float64")
    df = pd.DataFrame({"venue": venue, "market": market, "symbol": symbol, "timeframe": tf,
                       "price_type": price_type, "ts": ts, "open": c, "high": c + 1, "low": c - 1, "close": c,
                       "volume_base": 1.0})
    if vq is not None:
        df["volume_quote"] = vq
    return df


@pytest.fixture
def lake(tmp_path):
    lk = Lake(tmp_path / "lake")
    # 1h bars for all of May 2022 .. June 2; 1m bars only for May 10 00:00-05:59
    lk.write("ohlcv", _bars("BTCUSDT", "2022-05-01", 24 * 33, "1h", "1h"), source="t")
    lk.write("ohlcv", _bars("BTCUSDT", "2022-05-10", 360, "1min", "1m", close=500.0), source="t")
    lk.write("ohlcv", _bars("BTCUSDT", "2022-05-10", 360, "1min", "1m", close=7.0, price_type="mark"), source="t")
    # daily bars with known quote volume for ADV
    lk.write("ohlcv", _bars("ETHUSDT", "2022-04-01", 40, "1D", "1d", vq=[float(i) * 1e6 for i in range(40)]),
             source="t")
    lk.write("ohlcv", _bars("BTC/USDT:USDT", "2022-05-01", 3, "1h", "1h", market="spot", close=42.0), source="t")
    days = pd.date_range("2022-10-23", periods=4, freq="1D", tz="UTC")
    lk.write("open_interest", pd.DataFrame({
        "venue": "binance", "market": "perp", "symbol": "BTCUSDT", "timeframe": "1d", "ts": days,
        "oi_base": [100.0, 110.0, 120.0, 130.0], "oi_usd": [1e6, 1.1e6, None, 1.3e6], "source": "coinalyze"}),
        source="t")
    lk.write("open_interest", pd.DataFrame({
        "venue": "binance", "market": "perp", "symbol": "BTCUSDT", "timeframe": "5m",
        "ts": pd.to_datetime(["2022-10-25 10:00", "2022-10-25 10:05"], utc=True),
        "oi_base": [121.0, 122.0], "oi_usd": [2e6, 2e6], "source": "binance-metrics"}), source="t")
    lk.write("funding", pd.DataFrame({
        "venue": "binance", "market": "perp", "symbol": "SOLUSDT",
        "ts": pd.to_datetime(["2022-11-09 08:00:00.013", "2022-11-09 16:00:00.004", "2022-11-09 20:00:00.018",
                              "2022-11-10 00:00:00.002"], utc=True),
        "rate": [-0.0075, -0.015, -0.02, -0.02], "interval_hours": [8.0, 8.0, 4.0, 4.0]}), source="t")
    lk.write("liquidations", pd.DataFrame({
        "venue": "binance", "market": "perp", "symbol": "BTCUSDT", "timeframe": "1d",
        "ts": [T("2022-10-25")] * 2 + [T("2022-10-26")] * 2, "side": ["long", "short"] * 2,
        "qty": [110.9, 280.5, 1.0, 2.0], "price": [20000.0] * 4, "source": "coinalyze"}), source="t")
    return lk


def test_bars_picks_the_finest_timeframe_that_covers_the_window(lake):
    cat = Catalog(lake.root)
    df = cat.bars("binance", "perp", "BTCUSDT", T("2022-05-10 01:00"), T("2022-05-10 03:00"))
    assert df.attrs["timeframe"] == "1m" and df.attrs["coverage"] == 1.0 and len(df) == 120
    assert list(df.columns) == ["ts", "open", "high", "low", "close", "volume_base", "volume_quote"]
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"
    assert df["ts"].iloc[0] == T("2022-05-10 01:00") and df["ts"].iloc[-1] == T("2022-05-10 02:59")
    assert df["close"].iloc[0] == 560.0                # 500 + 60th minute: the 1m series
    assert df["volume_quote"].iloc[0] == 560.0         # derived: base 1.0 * close
    # the 1m series ends at 05:59, so a whole day is only covered by 1h
    day = cat.bars("binance", "perp", "BTCUSDT", T("2022-05-10"), T("2022-05-11"))
    assert day.attrs["timeframe"] == "1h" and len(day) == 24 and day.attrs["coverage"] == 1.0
    # explicit timeframe: partial coverage reported
    part = cat.bars("binance", "perp", "BTCUSDT", T("2022-05-10"), T("2022-05-11"), timeframe="1m")
    assert len(part) == 360 and part.attrs["coverage"] == pytest.approx(360 / 1440)
    mark = cat.bars("binance", "perp", "BTCUSDT", T("2022-05-10"), T("2022-05-10 01:00"), price_type="mark")
    assert mark["close"].iloc[0] == 7.0


def test_bars_falls_back_to_the_finest_with_rows(lake):
    cat = Catalog(lake.root)
    # June 2 23:00 is the last 1h bar: [Jun 2 22:00, Jun 3 02:00) has 2 of 4 hours
    df = cat.bars("binance", "perp", "BTCUSDT", T("2022-06-02 22:00"), T("2022-06-03 02:00"))
    assert df.attrs["timeframe"] == "1h" and df.attrs["coverage"] == 0.5 and len(df) == 2
    none = cat.bars("binance", "perp", "NOPE", T("2022-05-01"), T("2022-05-02"))
    assert none.empty and none.attrs["timeframe"] is None and none.attrs["coverage"] == 0.0
    assert list(none.columns)[0] == "ts"


def test_timeframes_finest_first_with_rows(lake):
    cat = Catalog(lake.root)
    assert cat.timeframes("binance", "perp", "BTCUSDT", T("2022-05-10"), T("2022-05-11")) == [("1m", 360), ("1h", 24)]
    assert cat.timeframes("binance", "perp", "BTCUSDT", T("2022-05-11"), T("2022-05-12")) == [("1h", 24)]
    assert cat.timeframes("binance", "spot", "BTCUSDT", T("2022-05-11"), T("2022-05-12")) == []


def test_adv_usd_is_the_mean_daily_quote_volume_before(lake):
    cat = Catalog(lake.root)
    # ETH daily quote volume on day i (from Apr 1) is i * 1e6; 7 days before Apr 21 = days 13..19
    assert cat.adv_usd("binance", "perp", "ETHUSDT", T("2022-04-21"), days=7) == pytest.approx(16e6)
    # BTC 1h bars from May 1: quote = close (base 1.0); 2 days before May 3 = hours 0..47 -> mean close * 24
    want = np.mean(100.0 + np.arange(0, 48)) * 24
    assert cat.adv_usd("binance", "perp", "BTCUSDT", T("2022-05-03"), days=2) == pytest.approx(want)
    assert cat.adv_usd("binance", "perp", "ETHUSDT", T("2022-01-01")) is None


def test_adv_usd_is_the_exact_sum_whatever_duckdb_threads(tmp_path):
    """The ADV is the exactly rounded sum of the quote volumes (math.fsum), the same on every
    call: DuckDB's parallel sum() rounds differently from run to run, and the ratio of two ADVs
    scales a stand-in's bar volumes, so its last bits reached the fills."""
    import math
    lk = Lake(tmp_path / "lake")
    n = 60 * 24 * 60       # 1m bars over two monthly partitions
    vq = np.random.default_rng(3).lognormal(12.0, 2.0, n)
    lk.write("ohlcv", _bars("BTCUSDT", "2022-04-15", n, "1min", "1m", vq=vq), source="t")
    cat = Catalog(lk.root)
    before = T("2022-06-14")
    start = before - pd.Timedelta(days=30)
    ts = pd.date_range("2022-04-15", periods=n, freq="1min", tz="UTC")
    sel = vq[(ts >= start) & (ts < before)]
    want = math.fsum(sel) / (len(sel) / 1440.0)
    got = {cat.adv_usd("binance", "perp", "BTCUSDT", before, days=30) for _ in range(5)}
    assert got == {want}


def test_open_interest_as_of_never_looks_ahead(lake):
    cat = Catalog(lake.root)
    # the daily sample stamped Oct 24 (end-of-day value) is known from Oct 25 00:00
    rec = cat.open_interest("binance", "BTCUSDT", T("2022-10-25 09:00"))
    assert rec["oi_base"] == 110.0 and rec["ts"] == T("2022-10-24") and rec["as_of"] == T("2022-10-25")
    assert rec["source"] == "coinalyze" and rec["oi_usd"] == 1.1e6
    assert cat.open_interest("binance", "BTCUSDT", T("2022-10-24 23:59"))["oi_base"] == 100.0
    # a 5m sample is fresher once its bar has closed
    assert cat.open_interest("binance", "BTCUSDT", T("2022-10-25 10:07"))["oi_base"] == 121.0
    assert cat.open_interest("binance", "BTCUSDT", T("2022-10-25 10:10"))["oi_base"] == 122.0
    # at Oct 26 00:00 the daily Oct 25 close (120, oi_usd null) is fresher than the 10:05 sample
    rec = cat.open_interest("binance", "BTCUSDT", T("2022-10-26 00:00"))
    assert rec["oi_base"] == 120.0 and rec["oi_usd"] is None and rec["timeframe"] == "1d"
    assert cat.open_interest("binance", "BTCUSDT", T("2022-10-23 12:00")) is None
    assert cat.open_interest("binance", "ETHUSDT", T("2022-10-25")) is None


def test_funding_and_liquidations_windows(lake):
    cat = Catalog(lake.root)
    f = cat.funding("binance", "SOLUSDT", T("2022-11-09"), T("2022-11-10"))
    assert list(f.columns[:3]) == ["ts", "rate", "interval_hours"]
    assert len(f) == 3 and list(f["interval_hours"]) == [8.0, 8.0, 4.0]
    assert f["ts"].iloc[0] == T("2022-11-09 08:00:00.013")
    liq = cat.liquidations("binance", "BTCUSDT", T("2022-10-25"), T("2022-10-26"))
    assert list(liq["side"]) == ["long", "short"] and liq["notional_usd"].iloc[1] == pytest.approx(280.5 * 20000)
    assert cat.liquidations("binance", "BTCUSDT", T("2022-10-25"), T("2022-10-27"), timeframe="").empty
    assert cat.funding("binance", "BTCUSDT", T("2022-11-09"), T("2022-11-10")).empty


def test_gaps_inside_a_window(lake):
    Lake(lake.root).write("ohlcv", _bars("GAPPY", "2022-05-01", 10, "1h", "1h").drop(index=[3, 4]), source="t")
    cat = Catalog(lake.root)
    got = cat.gaps("binance", "perp", "GAPPY", "1h", T("2022-04-30 22:00"), T("2022-05-01 12:00"))
    assert got == [(T("2022-04-30 22:00"), T("2022-05-01 00:00")), (T("2022-05-01 03:00"), T("2022-05-01 05:00")),
                   (T("2022-05-01 10:00"), T("2022-05-01 12:00"))]
    assert cat.gaps("binance", "perp", "GAPPY", "1h", T("2022-05-01 05:00"), T("2022-05-01 10:00")) == []
    assert expected_bars(T("2022-05-01 00:30"), T("2022-05-01 03:00"), "1h") == 2


def test_partition_pruning_opens_only_the_window_files(lake):
    # corrupt June's file and another symbol's file: a May query must not open them
    june = next(lake.root.glob("ohlcv/*/*/symbol=BTCUSDT/timeframe=1h/*/period=2022-06/data.parquet"))
    june.write_bytes(b"not parquet")
    other = next(lake.root.glob("ohlcv/*/*/symbol=ETHUSDT/*/*/period=*/data.parquet"))
    other.write_bytes(b"not parquet")
    cat = Catalog(lake.root)
    df = cat.bars("binance", "perp", "BTCUSDT", T("2022-05-20"), T("2022-05-21"), timeframe="1h")
    assert len(df) == 24
    with pytest.raises(LakeDamaged, match="period=2022-06/data.parquet is damaged"):
        cat.bars("binance", "perp", "BTCUSDT", T("2022-06-01"), T("2022-06-02"), timeframe="1h")


def test_unsafe_symbols_series_and_snapshot(lake):
    cat = Catalog(lake.root)
    df = cat.bars("binance", "spot", "BTC/USDT:USDT", T("2022-05-01"), T("2022-05-01 03:00"))
    assert list(df["close"]) == [42.0, 43.0, 44.0]
    s = cat.series()
    assert {"dataset", "venue", "market", "symbol", "timeframe", "rows", "first_ts", "last_ts"} <= set(s.columns)
    assert "BTC/USDT:USDT" in set(s["symbol"])
    row = s[(s.dataset == "ohlcv") & (s.symbol == "BTCUSDT") & (s.timeframe == "1m") & (s.price_type == "trade")]
    assert int(row["rows"].iloc[0]) == 360
    snap = cat.snapshot_id()
    assert snap == Catalog(lake.root).snapshot_id()
    lake.write("ohlcv", _bars("BTCUSDT", "2022-05-10", 1, "1min", "1m", close=3.0), source="late fix")
    assert Catalog(lake.root).snapshot_id() != snap
    assert cat.sql("SELECT count(*) AS n FROM funding")["n"].iloc[0] == 4


def test_empty_lake(tmp_path):
    cat = Catalog(tmp_path / "nothing")
    assert cat.bars("binance", "perp", "BTCUSDT", T("2022-05-01"), T("2022-05-02")).empty
    assert cat.timeframes("binance", "perp", "BTCUSDT", T("2022-05-01"), T("2022-05-02")) == []
    assert cat.funding("binance", "BTCUSDT", T("2022-05-01"), T("2022-05-02")).empty
    assert cat.open_interest("binance", "BTCUSDT", T("2022-05-01")) is None
    assert cat.adv_usd("binance", "perp", "BTCUSDT", T("2022-05-01")) is None
    assert cat.series().empty


def test_single_order_liquidations_round_trip(lake):
    lake.write("liquidations", pd.DataFrame({
        "venue": "ftx", "market": "perp", "symbol": "BTC-PERP", "timeframe": "",
        "ts": pd.to_datetime(["2022-11-08 10:00:00.123456", "2022-11-08 10:00:00.123456"], utc=True),
        "side": ["long", "long"], "qty": [0.5, 0.25], "price": [19000.0, 18990.0], "source": "tardis"}),
        source="t")
    cat = Catalog(lake.root)
    got = cat.liquidations("ftx", "BTC-PERP", T("2022-11-08"), T("2022-11-09"), timeframe="")
    assert len(got) == 2 and set(got["timeframe"]) == {""}
    assert sorted(got["notional_usd"]) == [0.25 * 18990.0, 0.5 * 19000.0]
    assert got["ts"].iloc[0] == T("2022-11-08 10:00:00.123456")
