"""Fixtures of the data-stage tests: canonical frames and one import of the real data."""
from __future__ import annotations

import pandas as pd
import pytest

from fetch.lake import Lake
from fetch.sources.local import import_dir


def make_bars(symbol="BTCUSDT", start="2022-05-01", periods=10, freq="1h", *, venue="binance",
              market="spot", timeframe="1h", price=100.0, price_type="trade") -> pd.DataFrame:
    """A canonical OHLCV frame with distinct, consistent bars (close = price + i)."""
    ts = pd.date_range(start, periods=periods, freq=freq, tz="UTC")
    close = price + pd.Series(range(periods), dtype="float64")
    return pd.DataFrame({
        "venue": venue, "market": market, "symbol": symbol, "timeframe": timeframe,
        "price_type": price_type, "ts": ts, "open": close - 0.5, "high": close + 1.0,
        "low": close - 1.0, "close": close, "volume_base": 2.0,
    })


@pytest.fixture(scope="session")
def imported_lake(shared_data, tmp_path_factory):
    """The real ../shared/data imported once per session: (lake, ImportSummary)."""
    root = tmp_path_factory.mktemp("real_lake")
    lake = Lake(root)
    summary = import_dir(shared_data, lake, progress=False)
    return lake, summary


@pytest.fixture
def bars():
    """The `make_bars` factory."""
    return make_bars
