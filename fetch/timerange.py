"""Time ranges (`YYYYMMDD-YYYYMMDD`, open ends), timeframe strings, month partitions.

All datetimes returned are timezone-aware UTC. A range is half-open [start, end): the end
date of `20220505-20220515` is 2022-05-15 00:00, i.e. the 15th is NOT included (freqtrade's
convention); write `20220505-20220516` to include the 15th.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd

UTC = timezone.utc

_TF_RE = re.compile(r"^(\d+)([smhdw])$")
_TF_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TimeRangeError(ValueError):
    """Bad time range or timeframe text; the message names the expected format."""


@dataclass(frozen=True)
class TimeRange:
    """[start, end), either end may be None (open)."""

    start: datetime | None
    end: datetime | None


def _parse_day(text: str, whole: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        raise TimeRangeError(
            f"bad date {text!r} in time range {whole!r}: use YYYYMMDD-YYYYMMDD, e.g. 20220505-20220516"
        ) from None


def parse_timerange(text: str) -> TimeRange:
    """`YYYYMMDD-YYYYMMDD`, `YYYYMMDD-` (open end) or `-YYYYMMDD` (open start)."""
    if text is None or not isinstance(text, str) or "-" not in text or text.count("-") != 1:
        raise TimeRangeError(
            f"bad time range {text!r}: use YYYYMMDD-YYYYMMDD (either side may be empty), e.g. 20220505-20220516"
        )
    a, b = text.strip().split("-")
    if not a and not b:
        raise TimeRangeError(f"bad time range {text!r}: give at least one date, e.g. 20220505-")
    start = _parse_day(a, text) if a else None
    end = _parse_day(b, text) if b else None
    if start and end and end <= start:
        raise TimeRangeError(f"time range {text!r} ends before it starts: the end date is exclusive")
    return TimeRange(start, end)


def timeframe_delta(tf: str) -> timedelta:
    """'1m' -> 1 minute, '15m', '1h', '8h', '1d', '1w'. Months are refused (not fixed)."""
    m = _TF_RE.match(tf or "")
    if not m or int(m.group(1)) == 0:
        raise TimeRangeError(f"bad timeframe {tf!r}: use a number and one of s m h d w, e.g. 1m, 15m, 1h, 1d")
    return timedelta(**{_TF_UNITS[m.group(2)]: int(m.group(1))})


# the bar timeframes the REST sources fetch and the backtest runs on (Binance's kline intervals
# from 1m to 1d; the archive also has 1s, 3d, 1w, 1mo: binance_vision.KLINE_TIMEFRAMES)
BAR_TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")


def month_start(ts: datetime) -> datetime:
    """First instant of the UTC month containing `ts`."""
    ts = to_utc(ts)
    return ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(ts: datetime) -> datetime:
    m = month_start(ts)
    return m.replace(year=m.year + 1, month=1) if m.month == 12 else m.replace(month=m.month + 1)


def month_key(ts: datetime) -> str:
    """'YYYY-MM' partition value of the month containing `ts`."""
    return to_utc(ts).strftime("%Y-%m")


def months(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """(YYYY-MM, month start, month end) for every month overlapping [start, end)."""
    start, end = to_utc(start), to_utc(end)
    out = []
    cur = month_start(start)
    while cur < end:
        nxt = next_month(cur)
        out.append((month_key(cur), cur, nxt))
        cur = nxt
    return out


def utc(value) -> datetime:
    """Anything pandas reads as a time (str, date, datetime, Timestamp, datetime64) -> aware UTC
    datetime (naive = UTC). The loose parser of the sources and the lake; `to_utc` is the
    strict one for user input."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def to_utc(ts) -> datetime:
    """datetime/pandas Timestamp/ISO string -> aware UTC datetime (naive = UTC)."""
    if isinstance(ts, str):
        try:
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise TimeRangeError(f"bad timestamp {ts!r}: use ISO 8601, e.g. 2022-05-05T00:00:00Z") from None
    if hasattr(ts, "to_pydatetime"):
        ts = ts.to_pydatetime()
    if not isinstance(ts, datetime):
        raise TimeRangeError(f"bad timestamp {ts!r}")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
