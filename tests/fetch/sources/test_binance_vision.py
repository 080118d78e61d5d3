"""data.binance.vision archives from a loopback server (and a local mirror)."""
from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
import pandas as pd
import pytest

from fetch.sources.binance_vision import BinanceVision, ChecksumError, plan_files
from fetch.sources.ccxt_source import RetryPolicy, SourceError, utc
from tests.fetch.servers.fapi import BarBook
from tests.fetch.servers.vision import VisionServer

FAST = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.02)


def bv_for(server, **kw) -> BinanceVision:
    kw.setdefault("retry", FAST)
    kw.setdefault("today", date(2022, 12, 15))
    return BinanceVision(server.url if hasattr(server, "url") else server, **kw)


def test_plan_monthly_for_whole_past_months_daily_for_the_rest():
    plan = plan_files(utc("2022-09-29"), utc("2022-11-03"), date(2022, 11, 20))
    assert plan[:2] == [("daily", date(2022, 9, 29)), ("daily", date(2022, 9, 30))]
    assert ("monthly", date(2022, 10, 1)) in plan
    assert [p for p in plan if p[0] == "daily" and p[1].month == 11] == [
        ("daily", date(2022, 11, 1)), ("daily", date(2022, 11, 2))]
    # a month that has not ended (today inside it) is never monthly
    assert all(k == "daily" for k, _ in plan_files(utc("2022-11-01"), utc("2022-12-01"),
                                                   date(2022, 11, 20)))


def test_monthly_and_daily_files_combine(vision):
    book = BarBook().add_synthetic("BTCUSDT", "2022-10-01", "2022-11-06")
    vision.add_klines(book, "BTCUSDT", "1h", date(2022, 10, 1), date(2022, 10, 1), monthly=True)
    vision.add_klines(book, "BTCUSDT", "1h", date(2022, 10, 30), date(2022, 11, 5))
    df = bv_for(vision).fetch_klines("BTCUSDT", "1h", utc("2022-10-30"), utc("2022-11-03"))
    assert len(df) == 4 * 24 and df["ts"].is_unique
    paths = [r.path for r in vision.log]
    assert not any("/monthly/" in p for p in paths)  # Oct 30-31 is not a whole month
    df2 = bv_for(vision).fetch_klines("BTCUSDT", "1h", utc("2022-10-01"), utc("2022-11-02"))
    assert len(df2) == 32 * 24
    assert any(p.endswith("BTCUSDT-1h-2022-10.zip") for p in df2.attrs["files"])
    assert df2.attrs["missing_days"] == []


def test_header_and_headerless_ms_and_us_files_agree(book):
    with VisionServer() as srv:
        srv.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 1), market="perp",
                       header=True)
        srv.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 1), market="spot",
                       header=False, micro=True)
        bv = bv_for(srv)
        perp = bv.fetch_klines("BTCUSDT", "1m", utc("2022-11-01"), utc("2022-11-02"))
        spot = bv.fetch_klines("BTCUSDT", "1m", utc("2022-11-01"), utc("2022-11-02"), market="spot")
    assert len(perp) == len(spot) == 1440
    assert (perp["ts"].to_numpy() == spot["ts"].to_numpy()).all()
    assert perp["ts"].iloc[0] == pd.Timestamp("2022-11-01", tz="UTC")
    np.testing.assert_allclose(perp["close"], spot["close"])
    assert set(spot["market"]) == {"spot"} and set(perp["market"]) == {"perp"}


def test_bad_checksum_refused(vision, book, sleeps):
    rel = vision.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 2), date(2022, 11, 2))[0]
    vision.corrupt(rel)
    with pytest.raises(ChecksumError, match="does not match .CHECKSUM"):
        bv_for(vision, sleep=sleeps).fetch_klines("BTCUSDT", "1m", utc("2022-11-02"), utc("2022-11-03"))
    assert sum(r.path == "/" + rel for r in vision.log) == 2  # one refetch, then refused


def test_missing_checksum_refused(vision, book):
    rel = vision.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 2), date(2022, 11, 2))[0]
    del vision.files[rel + ".CHECKSUM"]
    with pytest.raises(ChecksumError, match="no .CHECKSUM"):
        bv_for(vision).fetch_klines("BTCUSDT", "1m", utc("2022-11-02"), utc("2022-11-03"))


def test_malformed_rows_reported(vision):
    lines = ["1667260800000,20000,20010,19990,20005,10,1667260859999,200050,5,1,1,0",
             "1667260860000,abc,20010,19990,20005,10,1667260919999,200050,5,1,1,0",
             "1667260920000,20005,20015,19995,20001,12,1667260979999,240012,5,1,1,0",
             "not-a-time,1,1,1,1,1,1,1,1,1,1,1"]
    vision.put("data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2022-11-01.zip", "\n".join(lines) + "\n")
    df = bv_for(vision).fetch_klines("BTCUSDT", "1m", utc("2022-11-01"), utc("2022-11-02"), market="spot")
    assert len(df) == 2
    assert df.attrs["bad_rows"] == 2
    assert "abc" in df.attrs["bad_examples"][0]


def test_404_days_reported_as_missing(vision, book):
    vision.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 2))
    df = bv_for(vision).fetch_klines("BTCUSDT", "1m", utc("2022-11-01"), utc("2022-11-05"))
    assert len(df) == 2 * 1440
    assert df.attrs["missing_days"] == [date(2022, 11, d) for d in (3, 4)]


def test_5xx_retried_then_surfaced(vision, book, sleeps):
    vision.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 1))
    vision.inject("/data/futures/um/daily/klines", "503", times=1)
    df = bv_for(vision, sleep=sleeps).fetch_klines("BTCUSDT", "1m", utc("2022-11-01"), utc("2022-11-02"))
    assert len(df) == 1440 and sleeps == [0.01]
    vision.inject("/data/futures/um/daily/klines", "429", times=10, retry_after=7)
    with pytest.raises(SourceError, match="gave up after 3 attempts") as ei:
        bv_for(vision, sleep=sleeps).fetch_klines("BTCUSDT", "1m", utc("2022-11-01"), utc("2022-11-02"))
    assert ei.value.temporary and sleeps[-2:] == [7.0, 7.0]


def test_funding_metrics_and_liquidation_snapshot(vision):
    t0 = int(pd.Timestamp("2022-11-01", tz="UTC").value // 10**6)
    times = [t0 + i * 8 * 3_600_000 + 5 for i in range(90)]
    vision.add_funding("BTCUSDT", date(2022, 11, 1), times, [1e-4] * 90)
    vision.add_metrics("BTCUSDT", date(2022, 11, 8), np.linspace(80000, 70000, 288), 18000.0)
    vision.add_liquidations("BTCUSDT", date(2022, 11, 8),
                            [(t0 + 7 * 86_400_000 + 1000, "SELL", 0.5, 19000.0),
                             (t0 + 7 * 86_400_000 + 2000, "BUY", 2.0, 19100.0)])
    bv = bv_for(vision)
    f = bv.fetch_funding("BTCUSDT", utc("2022-11-05"), utc("2022-11-07"))
    assert len(f) == 6 and (f["rate"] == 1e-4).all() and (f["interval_hours"] == 8).all()
    assert f["ts"].iloc[0] == pd.Timestamp("2022-11-05 00:00:00.005", tz="UTC")
    oi = bv.fetch_open_interest("BTCUSDT", utc("2022-11-08"), utc("2022-11-09"))
    assert len(oi) == 288 and set(oi["timeframe"]) == {"5m"}
    assert oi["oi_usd"].iloc[0] == pytest.approx(80000 * 18000.0)
    liq = bv.fetch_liquidations("BTCUSDT", utc("2022-11-08"), utc("2022-11-09"))
    assert list(liq["side"]) == ["long", "short"]  # a SELL order closes a long
    assert liq["notional_usd"].tolist() == pytest.approx([9500.0, 38200.0])


def test_local_mirror_directory(tmp_path, book):
    srv = VisionServer()  # not started: only used to build the files
    srv.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 1))
    srv.httpd.server_close()
    root = srv.write_tree(tmp_path / "mirror")
    df = BinanceVision(str(root), today=date(2022, 12, 1)).fetch_klines(
        "BTCUSDT", "1m", utc("2022-11-01"), utc("2022-11-02"))
    assert len(df) == 1440


def test_real_spot_daily_file_parses_to_the_real_bars(shared_data):
    """The real 2022-11-08 BTCUSDT bars, as a headerless spot daily zip with a real checksum."""
    real = pd.read_parquet(shared_data / "binance_spot_1m_nl2992" / "binance_spot_BTCUSDT_1m_ftx_2022.parquet")
    day = real[(real["ts"] >= "2022-11-08") & (real["ts"] < "2022-11-09")]
    cols = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
            "count", "taker_buy_volume", "taker_buy_quote_volume"]
    text = day[cols].assign(ignore=0).to_csv(header=False, index=False)
    with VisionServer() as srv:
        rel = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2022-11-08.zip"
        srv.put(rel, text)
        assert srv.files[rel + ".CHECKSUM"].split()[0].decode() == hashlib.sha256(srv.files[rel]).hexdigest()
        df = bv_for(srv).fetch_klines("BTCUSDT", "1m", utc("2022-11-08"), utc("2022-11-09"), market="spot")
    assert len(df) == 1440
    np.testing.assert_allclose(df["close"].to_numpy(), day["close"].to_numpy())
    np.testing.assert_allclose(df["volume_quote"].to_numpy(), day["quote_volume"].to_numpy())
    assert (df["ts"].to_numpy() == day["ts"].to_numpy()).all()


def test_local_liquidation_copies_without_checksum_opt_in(tmp_path):
    srv = VisionServer()
    srv.httpd.server_close()
    t0 = int(pd.Timestamp("2022-11-08", tz="UTC").value // 10**6)
    rel = srv.add_liquidations("BTCUSDT", date(2022, 11, 8), [(t0 + 1000, "SELL", 0.5, 19000.0)])
    del srv.files[rel + ".CHECKSUM"]
    root = srv.write_tree(tmp_path / "mine")
    with pytest.raises(ChecksumError, match="no .CHECKSUM"):
        BinanceVision(str(root)).fetch_liquidations("BTCUSDT", utc("2022-11-08"), utc("2022-11-09"))
    liq = BinanceVision(str(root), require_checksum=False).fetch_liquidations(
        "BTCUSDT", utc("2022-11-08"), utc("2022-11-09"))
    assert len(liq) == 1 and liq["side"].iloc[0] == "long"


def test_path_unsafe_symbol_cannot_leave_the_mirror(tmp_path):
    secret = tmp_path / "x-1m-2022-11-01.zip"
    secret.write_bytes(b"not yours")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    bv = BinanceVision(str(mirror), today=date(2022, 12, 1))
    for sym in ("../x", "BTC/USDT:USDT", "", "btc usdt"):
        with pytest.raises(SourceError, match="not a Binance symbol id"):
            bv.fetch_klines(sym, "1m", utc("2022-11-01"), utc("2022-11-02"))
    with pytest.raises(SourceError, match="no '7m' klines"):
        bv.fetch_klines("BTCUSDT", "7m", utc("2022-11-01"), utc("2022-11-02"))
