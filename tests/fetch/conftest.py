"""Fixtures of the data-stage tests: canonical frames, one import of the real data, the loopback
servers (fapi, data.binance.vision, tardis datasets) and a recording sleep()."""
from __future__ import annotations

import pandas as pd
import pytest

from fetch.lake import Lake
from fetch.sources.local import import_dir
from tests.fetch.servers.fapi import BarBook, FapiServer
from tests.fetch.servers.tardis import TardisServer
from tests.fetch.servers.vision import VisionServer


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



@pytest.fixture
def book() -> BarBook:
    """Synthetic 1m BTCUSDT bars, 2022-10-30 .. 2022-11-10 (deterministic)."""
    return BarBook().add_synthetic("BTCUSDT", "2022-10-30", "2022-11-10")


@pytest.fixture
def fapi(book):
    with FapiServer(book, extra_listed=("ETHUSDT",)) as srv:
        yield srv


@pytest.fixture
def vision():
    with VisionServer() as srv:
        yield srv


@pytest.fixture
def tardis_server():
    with TardisServer(api_key="test-key") as srv:
        yield srv


class Sleeps(list):
    """A sleep() that records the delays instead of waiting."""

    def __call__(self, s: float) -> None:
        self.append(s)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()
