"""Time ranges, timeframes and month partitions."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fetch.timerange import (
    TimeRangeError,
    month_key,
    months,
    parse_timerange,
    timeframe_delta,
    to_utc,
)

UTC = timezone.utc


def test_closed_and_open_ranges():
    r = parse_timerange("20220505-20220516")
    assert r.start == datetime(2022, 5, 5, tzinfo=UTC) and r.end == datetime(2022, 5, 16, tzinfo=UTC)
    assert parse_timerange("20220505-").end is None
    assert parse_timerange("-20220516").start is None


@pytest.mark.parametrize("bad", ["", "-", "2022-05-05", "20220505", "20221305-20221306", "20220516-20220505",
                                 "20220505-20220505", "abc-def", "20220505--20220506"])
def test_bad_ranges_name_the_format(bad):
    with pytest.raises(TimeRangeError, match="YYYYMMDD|ends before|at least one"):
        parse_timerange(bad)


def test_timeframes():
    assert timeframe_delta("1m") == timedelta(minutes=1)
    assert timeframe_delta("15m") == timedelta(minutes=15)
    assert timeframe_delta("8h") == timedelta(hours=8)
    assert timeframe_delta("1d") == timedelta(days=1)
    for bad in ("1M", "0m", "m", "1x", "", "1.5h"):
        with pytest.raises(TimeRangeError, match="timeframe"):
            timeframe_delta(bad)


def test_month_helpers():
    got = months(datetime(2022, 11, 20, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC))
    assert [m[0] for m in got] == ["2022-11", "2022-12", "2023-01"]
    assert got[1][1] == datetime(2022, 12, 1, tzinfo=UTC) and got[1][2] == datetime(2023, 1, 1, tzinfo=UTC)
    assert month_key(datetime(2022, 5, 31, 23, 59, tzinfo=UTC)) == "2022-05"
    assert to_utc("2022-05-05T00:00:00Z") == datetime(2022, 5, 5, tzinfo=UTC)
    assert to_utc(datetime(2022, 5, 5)) == datetime(2022, 5, 5, tzinfo=UTC)
    with pytest.raises(TimeRangeError):
        to_utc("yesterday")
