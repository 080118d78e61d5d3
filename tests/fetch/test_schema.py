"""Canonical schemas and the conformer."""
from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest

from fetch import schema as S


def test_every_dataset_has_the_contract_columns():
    assert S.OHLCV.names == ["venue", "market", "symbol", "timeframe", "price_type", "ts", "open", "high",
                             "low", "close", "volume_base", "volume_quote"]
    assert S.FUNDING.names == ["venue", "market", "symbol", "ts", "rate", "interval_hours", "mark_price"]
    assert S.OPEN_INTEREST.names == ["venue", "market", "symbol", "timeframe", "ts", "oi_base", "oi_usd", "source"]
    assert S.LIQUIDATIONS.names == ["venue", "market", "symbol", "timeframe", "ts", "side", "qty", "price",
                                    "notional_usd", "source"]
    for schema in S.SCHEMAS.values():
        assert schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_quote_volume_derived_from_base_and_base_from_quote():
    df = pd.DataFrame({
        "venue": "binance", "market": "spot", "symbol": "BTCUSDT", "timeframe": "1h",
        "ts": pd.to_datetime(["2022-05-01 00:00", "2022-05-01 01:00"]),  # naive: taken as UTC
        "open": [10.0, 20.0], "high": [11.0, 21.0], "low": [9.0, 19.0], "close": [10.0, 20.0],
        "volume_base": [3.0, None], "volume_quote": [None, 100.0],
    })
    t = S.to_canonical(df, "ohlcv")
    assert t.schema == S.OHLCV
    assert t["volume_quote"].to_pylist() == [30.0, 100.0]
    assert t["volume_base"].to_pylist() == [3.0, 5.0]
    assert t["price_type"].to_pylist() == ["trade", "trade"]
    assert t["ts"][0].as_py().isoformat() == "2022-05-01T00:00:00+00:00"


def test_only_base_volume_column_present():
    df = pd.DataFrame({"venue": "ftx", "market": "perp", "symbol": "BTC-PERP", "timeframe": "1d",
                       "ts": [1651363200000], "open": [2.0], "high": [2.0], "low": [2.0], "close": [2.0],
                       "volume_quote": [8.0]})
    t = S.to_canonical(df, "ohlcv")
    assert t["volume_base"].to_pylist() == [4.0]
    assert t["ts"][0].as_py() == pd.Timestamp("2022-05-01", tz="UTC")  # epoch ms


def test_epoch_microseconds_and_other_timezones_become_utc():
    us = S._ts_array(pa.chunked_array([pa.array([1651363200000000], pa.int64())]))
    assert us[0].as_py() == pd.Timestamp("2022-05-01", tz="UTC")
    tokyo = pd.DataFrame({"ts": pd.to_datetime(["2022-05-01 09:00"]).tz_localize("Asia/Tokyo")})
    t = S._ts_array(pa.Table.from_pandas(tokyo)["ts"])
    assert t[0].as_py() == pd.Timestamp("2022-05-01 00:00", tz="UTC")


def test_missing_required_column_names_it():
    df = pd.DataFrame({"venue": ["binance"], "market": ["perp"], "symbol": ["BTCUSDT"], "ts": [0]})
    with pytest.raises(S.SchemaError, match="rate"):
        S.to_canonical(df, "funding")
    with pytest.raises(S.SchemaError, match="unknown dataset"):
        S.to_canonical(df, "trades")


def test_nullable_columns_filled_and_liquidation_notional_derived():
    f = S.to_canonical(pd.DataFrame({"venue": ["binance"], "market": ["perp"], "symbol": ["BTCUSDT"],
                                     "ts": [0], "rate": [0.0001], "interval_hours": [8]}), "funding")
    assert f["mark_price"].null_count == 1 and f["interval_hours"].to_pylist() == [8.0]
    liq = S.to_canonical(pd.DataFrame({"venue": ["ftx"], "market": ["perp"], "symbol": ["BTC-PERP"],
                                       "ts": [0], "side": ["long"], "qty": [2.0], "price": [30000.0],
                                       "source": ["tardis"]}), "liquidations")
    assert liq["notional_usd"].to_pylist() == [60000.0]
    assert liq["timeframe"].to_pylist() == [""]


def test_uncastable_value_is_a_schema_error():
    df = pd.DataFrame({"venue": ["binance"], "market": ["perp"], "symbol": ["BTCUSDT"], "timeframe": ["1d"],
                       "ts": [0], "oi_base": ["lots"]})
    with pytest.raises(S.SchemaError, match="oi_base"):
        S.to_canonical(df, "open_interest")


def test_row_keys():
    assert S.row_key("ohlcv") == ("ts",)
    assert S.row_key("liquidations", "1d") == ("ts", "side")
    assert S.row_key("liquidations", "") == ("ts", "side", "price", "qty")
    assert not math.isnan(0.0)
