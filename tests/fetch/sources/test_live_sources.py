"""Live checks against the real hosts (off by default: run with `-m live` on a networked machine)."""
from __future__ import annotations

from datetime import date

import pytest

from fetch.sources.binance_vision import BinanceVision
from fetch.sources.ccxt_source import CcxtSource, utc

pytestmark = pytest.mark.live


def test_live_binanceusdm_klines_mark_funding_oi():
    src = CcxtSource("binanceusdm")
    bars = src.fetch_ohlcv("BTCUSDT", "1m", utc("2022-11-08"), utc("2022-11-08T02:00"))
    assert len(bars) == 120 and bars["volume_quote"].gt(0).all()
    mark = src.fetch_ohlcv("BTCUSDT", "1h", utc("2022-11-08"), utc("2022-11-09"), price_type="mark")
    assert len(mark) == 24
    f = src.fetch_funding("BTCUSDT", utc("2022-11-08"), utc("2022-11-09"))
    assert len(f) == 3


def test_live_binance_vision_daily_file_with_checksum():
    bv = BinanceVision(today=date.today())
    df = bv.fetch_klines("BTCUSDT", "1m", utc("2022-11-08"), utc("2022-11-09"))
    assert len(df) == 1440 and df.attrs["missing_days"] == []
