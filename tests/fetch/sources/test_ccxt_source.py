"""ccxt source against the loopback fapi server: pagination, retries, errors, real values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fetch.lake import Lake
from fetch.sources.ccxt_source import CcxtSource, RetryPolicy, SourceError, make_exchange, override_urls, utc
from tests.fetch.servers.fapi import BarBook, FapiServer

FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)


def src_for(server, sleeps=None, **kw) -> CcxtSource:
    kw.setdefault("retry", FAST)
    if sleeps is not None:
        kw["sleep"] = sleeps
    return CcxtSource(api_url=server.url, timeout_s=kw.pop("timeout_s", 2.0), rate_limit_ms=1, **kw)


def test_override_points_every_api_url_at_the_base():
    ex = make_exchange("binanceusdm", api_url="http://127.0.0.1:9")
    flat = []

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, str):
            flat.append(v)
    walk(ex.urls["api"])
    assert flat and all(u.startswith("http://127.0.0.1:9/") for u in flat)
    assert ex.urls["api"]["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
    assert ex.urls["api"]["fapiData"] == "http://127.0.0.1:9/futures/data"
    assert override_urls({"a": "https://x.y/p/q"}, "http://h:1/mirror/") == {"a": "http://h:1/mirror/p/q"}


def test_multi_page_pagination_dedupes_and_stops(fapi, book):
    src = src_for(fapi)
    df = src.fetch_ohlcv("BTCUSDT", "1m", utc("2022-11-01"), utc("2022-11-04"), limit=500)
    assert len(df) == 3 * 1440
    assert df["ts"].is_monotonic_increasing and df["ts"].is_unique
    assert df["ts"].iloc[0] == pd.Timestamp("2022-11-01", tz="UTC")
    assert df["ts"].iloc[-1] == pd.Timestamp("2022-11-03 23:59", tz="UTC")
    # 4320 bars / 500 per page → 9 pages (the last one partial), plus exchangeInfo
    assert fapi.count("/fapi/v1/klines") == 9
    assert fapi.count("/fapi/v1/exchangeInfo") == 1
    b = book.bars["BTCUSDT"]
    i0 = int(np.searchsorted(b["t"], int(pd.Timestamp("2022-11-01", tz="UTC").value // 10**6)))
    np.testing.assert_allclose(df["close"].to_numpy(), b["c"][i0:i0 + 4320], rtol=1e-12)
    np.testing.assert_allclose(df["volume_quote"].to_numpy(), b["q"][i0:i0 + 4320], rtol=1e-9)
    assert set(df["venue"]) == {"binance"} and set(df["market"]) == {"perp"}
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"


def test_stops_at_the_end_of_available_data(fapi):
    src = src_for(fapi)
    # data ends 2022-11-10: asking to 11-20 returns what exists and stops (no endless loop)
    df = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-08"), utc("2022-11-20"))
    assert len(df) == 48
    assert fapi.count("/fapi/v1/klines") <= 2


def test_mark_and_index_klines_use_their_endpoints(fapi):
    src = src_for(fapi)
    mark = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"), price_type="mark")
    idx = src.fetch_ohlcv("BTC/USDT:USDT", "1h", utc("2022-11-01"), utc("2022-11-02"), price_type="index")
    trade = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert fapi.count("/fapi/v1/markPriceKlines") == 1
    idx_req = [r for r in fapi.log if r.path == "/fapi/v1/indexPriceKlines"]
    assert len(idx_req) == 1 and idx_req[0].query["pair"] == "BTCUSDT"
    np.testing.assert_allclose(mark["close"], trade["close"] * 1.0001, rtol=1e-9)
    np.testing.assert_allclose(idx["close"], trade["close"] * 0.9999, rtol=1e-9)
    assert set(mark["price_type"]) == {"mark"} and (mark["volume_base"] == 0).all()


def test_funding_and_open_interest_paginate(fapi):
    src = src_for(fapi)
    f = src.fetch_funding("BTCUSDT", utc("2022-10-31"), utc("2022-11-09"), limit=5)
    assert len(f) == 9 * 3 and f["ts"].is_unique and f["ts"].is_monotonic_increasing
    assert fapi.count("/fapi/v1/fundingRate") >= 6  # 27 rows, 5 per page
    assert (f["interval_hours"] == 8.0).all() and f["mark_price"].notna().all()
    oi = src.fetch_open_interest("BTCUSDT", "5m", utc("2022-11-01"), utc("2022-11-03"), limit=100)
    assert len(oi) == 2 * 288 and oi["ts"].is_unique
    assert fapi.count("/futures/data/openInterestHist") == 6
    assert (oi["oi_usd"] > oi["oi_base"]).all()


def test_429_retried_honouring_retry_after(fapi, sleeps):
    fapi.inject("/fapi/v1/klines", "429", times=2, retry_after=3)
    src = src_for(fapi, sleeps)
    df = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert len(df) == 24
    assert fapi.count("/fapi/v1/klines") == 3
    assert sleeps == [3.0, 3.0]  # Retry-After beats the (short) backoff


def test_418_and_5xx_retried_with_exponential_backoff(fapi, sleeps):
    fapi.inject("/fapi/v1/klines", "418", times=1)
    fapi.inject("/fapi/v1/klines", "503", times=1)
    fapi.inject("/fapi/v1/klines", "500", times=1)
    src = src_for(fapi, sleeps)
    df = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert len(df) == 24
    assert sleeps == [0.01, 0.02, 0.04]


def test_persistent_5xx_surfaces_as_temporary(fapi, sleeps):
    fapi.inject("/fapi/v1/klines", "503", times=100)
    src = src_for(fapi, sleeps)
    with pytest.raises(SourceError) as ei:
        src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert ei.value.temporary
    assert "gave up after 4 attempts" in str(ei.value)
    assert fapi.count("/fapi/v1/klines") == 4


def test_timeout_retried_then_surfaced(fapi, sleeps):
    fapi.inject("/fapi/v1/klines", "hang", times=1, hang_s=2.0)
    src = src_for(fapi, sleeps, timeout_s=0.3)
    df = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert len(df) == 24 and len(sleeps) == 1
    fapi.inject("/fapi/v1/klines", "hang", times=2, hang_s=2.0)
    src2 = src_for(fapi, sleeps, timeout_s=0.3, retry=RetryPolicy(attempts=2, base_s=0.01))
    with pytest.raises(SourceError, match="RequestTimeout") as ei:
        src2.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert ei.value.temporary


def test_unknown_symbol_fails_fast_naming_it(fapi, sleeps):
    src = src_for(fapi, sleeps)
    with pytest.raises(SourceError, match="unknown symbol 'DOGEUSDX'") as ei:
        src.fetch_ohlcv("DOGEUSDX", "1m", utc("2022-11-01"), utc("2022-11-02"))
    assert not ei.value.temporary
    # listed in exchangeInfo but the server answers -1121 Invalid symbol: BadSymbol, no retry
    with pytest.raises(SourceError, match=r"unknown symbol 'ETHUSDT'.*Invalid symbol") as ei:
        src.fetch_ohlcv("ETHUSDT", "1m", utc("2022-11-01"), utc("2022-11-02"))
    assert not ei.value.temporary
    assert sleeps == [] and fapi.count("/fapi/v1/klines") == 1


def test_malformed_rows_are_kept_for_validation_to_report(fapi, tmp_path):
    fapi.inject("/fapi/v1/klines", "malformed", times=1)
    src = src_for(fapi)
    df = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert len(df) == 24 and df["open"].isna().sum() == 1
    res = Lake(tmp_path).write("ohlcv", df, source="test")
    assert res.rows_dropped == 1 and res.rows_written == 23
    assert res.report is not None and not res.report.ok


def test_real_btcusdt_bars_round_trip(shared_data):
    book = BarBook.from_shared(shared_data)
    real = pd.read_parquet(shared_data / "binance_spot_1m_nl2992" / "binance_spot_BTCUSDT_1m_ftx_2022.parquet")
    with FapiServer(book) as srv:
        df = src_for(srv).fetch_ohlcv("BTCUSDT", "1m", utc("2022-11-08"), utc("2022-11-10"))
    want = real[(real["ts"] >= "2022-11-08") & (real["ts"] < "2022-11-10")].reset_index(drop=True)
    assert len(df) == len(want) == 2880
    for a, b in (("open", "open"), ("high", "high"), ("low", "low"), ("close", "close"),
                 ("volume_base", "volume"), ("volume_quote", "quote_volume")):
        np.testing.assert_allclose(df[a].to_numpy(), want[b].to_numpy(), rtol=1e-9)
    assert (df["ts"].to_numpy() == want["ts"].to_numpy()).all()


def test_binance_spot_through_the_same_loop(fapi):
    src = CcxtSource("binance", api_url=fapi.url, timeout_s=2.0, rate_limit_ms=1, retry=FAST)
    df = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert len(df) == 24 and set(df["market"]) == {"spot"} and set(df["venue"]) == {"binance"}
    assert fapi.count("/api/v3/klines") == 1 and fapi.count("/fapi/") == 0
    assert (df["volume_quote"] > df["volume_base"]).all()  # the kline's own quote volume
    with pytest.raises(SourceError, match="spot markets have no mark price bars"):
        src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-01"), utc("2022-11-02"), price_type="mark")
