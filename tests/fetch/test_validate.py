"""Validation: bad rows, duplicates, order, gaps, refusal of mostly-bad files."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from fetch import schema as S
from fetch.validate import ValidationError, find_gaps, validate


def _canon(df):
    return S.to_canonical(df, "ohlcv")


def test_clean_table_passes(bars):
    t, rep = validate(_canon(bars(periods=5)), "ohlcv")
    assert rep.ok and rep.rows == 5 and rep.rows_dropped == 0 and t.num_rows == 5
    assert rep.gap_pct == 0.0 and rep.expected_rows == 5


def test_bad_prices_and_ohlc_inconsistency_dropped_with_examples(bars):
    df = bars(periods=10)
    df.loc[2, "close"] = -1.0                  # non-positive
    df.loc[4, "open"] = np.inf                 # non-finite
    df.loc[6, "high"] = df.loc[6, "low"] - 5   # high below low
    df.loc[7, "low"] = df.loc[7, "close"] + 3  # low above close
    t, rep = validate(_canon(df), "ohlcv")
    assert rep.rows_dropped == 4 and t.num_rows == 6
    assert rep.problems["non-positive or non-finite close"] == 1
    assert rep.problems["non-positive or non-finite open"] == 1
    assert rep.problems["OHLC inconsistent"] >= 2
    assert rep.examples["non-positive or non-finite close"][0]["row"] == 2
    assert "bad rows dropped" in rep.summary()


def test_mostly_bad_file_refused_with_threshold(bars):
    df = bars(periods=10)
    df.loc[:5, "close"] = 0.0  # 6 of 10
    with pytest.raises(ValidationError, match="6 of 10 rows are bad"):
        validate(_canon(df), "ohlcv")
    t, rep = validate(_canon(df), "ohlcv", bad_row_threshold=0.7)
    assert rep.rows_dropped == 6 and t.num_rows == 4


def test_duplicates_and_non_monotonic_reported_not_dropped(bars):
    df = bars(periods=6)
    df = pd.concat([df, df.iloc[[1]]], ignore_index=True)   # duplicate ts, out of order
    t, rep = validate(_canon(df), "ohlcv")
    assert rep.duplicates == 1 and rep.non_monotonic == 1 and t.num_rows == 7


def test_duplicates_are_per_series(bars):
    df = pd.concat([bars("AAA", periods=3), bars("BBB", periods=3)], ignore_index=True)
    _, rep = validate(_canon(df), "ohlcv")
    assert rep.duplicates == 0 and rep.non_monotonic == 0


def test_gaps_as_percentage_and_ranges_never_filled(bars):
    df = bars(periods=10).drop(index=[3, 4, 7]).reset_index(drop=True)
    t, rep = validate(_canon(df), "ohlcv")
    assert t.num_rows == 7
    assert rep.gap_rows == 3 and rep.expected_rows == 10
    assert rep.gap_pct == pytest.approx(30.0)
    assert rep.gaps == [(pd.Timestamp("2022-05-01 03:00", tz="UTC"), pd.Timestamp("2022-05-01 05:00", tz="UTC")),
                        (pd.Timestamp("2022-05-01 07:00", tz="UTC"), pd.Timestamp("2022-05-01 08:00", tz="UTC"))]


def test_find_gaps_off_grid_and_single():
    ts = np.array(["2022-01-01T00:00", "2022-01-01T00:01", "2022-01-01T00:04"], dtype="datetime64[us]")
    ranges, missing, expected = find_gaps(ts, timedelta(minutes=1))
    assert missing == 2 and expected == 5 and len(ranges) == 1
    assert find_gaps(ts[:1], timedelta(minutes=1)) == ([], 0, 1)


def test_funding_and_liquidation_checks():
    f = S.to_canonical(pd.DataFrame({"venue": "binance", "market": "perp", "symbol": "BTCUSDT",
                                     "ts": [0, 1, 2, 3], "rate": [0.0001, np.nan, 0.0, -0.02],
                                     "interval_hours": [8, 8, 0, 4]}), "funding")
    t, rep = validate(f, "funding")
    assert rep.problems == {"non-finite rate": 1, "non-positive interval_hours": 1} and t.num_rows == 2
    liq = S.to_canonical(pd.DataFrame({"venue": "binance", "market": "perp", "symbol": "BTCUSDT", "timeframe": "1d",
                                       "ts": [0, 0, 86400000], "side": ["long", "short", "sideways"],
                                       "qty": [1.0, 0.0, 1.0], "price": [10.0, 10.0, 10.0]}), "liquidations")
    t, rep = validate(liq, "liquidations")
    assert rep.problems == {"side not long/short": 1} and t.num_rows == 2


def test_check_returns_the_report_only(bars):
    from fetch.validate import ValidationReport, check

    df = bars(periods=4)
    df.loc[1, "low"] = 1e9
    rep = check(df, "ohlcv")
    assert isinstance(rep, ValidationReport) and rep.rows_dropped == 1 and rep.problems["OHLC inconsistent"] == 1
