"""Bars as the backtest reads them: the timeframes it runs on, how many bars a span should
hold and when that counts as complete, and the frame operations on them (normalise,
fill gaps flat, resample to a coarser timeframe, 1-minute volatility). No I/O.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fetch.timerange import BAR_TIMEFRAMES, timeframe_delta, to_utc

TIMEFRAME_MINUTES = {tf: int(timeframe_delta(tf).total_seconds()) // 60 for tf in BAR_TIMEFRAMES}
# a timeframe whose bars cover at least this share of a span is "complete" (the series loader's
# choice and the catalog's default timeframe alike)
MIN_COVERAGE = 0.98
MIN_USABLE_COVERAGE = 0.9  # below this a series is treated as absent (a stand-in is tried)


def tf_minutes(tf: str) -> int:
    if tf not in TIMEFRAME_MINUTES:
        raise ValueError(f"unknown timeframe {tf!r}")
    return TIMEFRAME_MINUTES[tf]


def expected_bars(start, end, tf: str) -> int:
    """Bar opens on the UTC grid of `tf` (aligned to the epoch) inside [start, end)."""
    step = timeframe_delta(tf).total_seconds()
    s, e = to_utc(start).timestamp(), to_utc(end).timestamp()
    return max(0, math.ceil(e / step) - math.ceil(s / step))


def normalise_bars(df: pd.DataFrame) -> pd.DataFrame:
    """ts (UTC), OHLC, volume_quote (from volume_base x close where the quote volume is absent)."""
    out = pd.DataFrame({
        "ts": pd.to_datetime(df["ts"], utc=True),
        "open": df["open"].astype("float64"),
        "high": df["high"].astype("float64"),
        "low": df["low"].astype("float64"),
        "close": df["close"].astype("float64"),
    })
    vq = df["volume_quote"].astype("float64") if "volume_quote" in df else pd.Series(np.nan, index=df.index)
    vb = df["volume_base"].astype("float64") if "volume_base" in df else pd.Series(np.nan, index=df.index)
    vq = vq.where(vq.notna(), vb * out["close"])
    out["volume_quote"] = vq.fillna(0.0).to_numpy()
    return out.sort_values("ts").drop_duplicates("ts").reset_index(drop=True)


def fill_gaps(bars: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, tf: str) -> tuple[pd.DataFrame, int]:
    """Reindex onto the full bar grid of [start, end); missing bars are flat at the last close
    (no volume). Leading missing bars take the first open. Returns (bars, n_missing)."""
    grid = pd.date_range(start, end, freq=pd.Timedelta(minutes=tf_minutes(tf)), inclusive="left")
    b = bars.set_index("ts").reindex(grid)
    missing = int(b["close"].isna().sum())
    if missing:
        close = b["close"].ffill()
        close = close.fillna(b["open"].bfill().iloc[0] if b["open"].notna().any() else np.nan)
        for col in ("open", "high", "low"):
            b[col] = b[col].fillna(close)
        b["close"] = close
        b["volume_quote"] = b["volume_quote"].fillna(0.0)
    b.index.name = "ts"
    return b.reset_index(), missing


def resample_bars(bars: pd.DataFrame, tf: str) -> pd.DataFrame:
    """Aggregate finer bars to `tf` (bar open labels, UTC)."""
    rule = pd.Timedelta(minutes=tf_minutes(tf))
    g = bars.set_index("ts").resample(rule, label="left", closed="left", origin="epoch")
    out = pd.DataFrame({
        "open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
        "close": g["close"].last(), "volume_quote": g["volume_quote"].sum(),
    }).dropna(subset=["open"])
    out.index.name = "ts"
    return out.reset_index()


def sigma_1m_of(bars: pd.DataFrame, tf: str) -> float:
    """1-minute volatility estimated from the bars' close-to-close log returns."""
    c = bars["close"].to_numpy(dtype=float)
    c = c[c > 0]
    if c.size < 3:
        return 0.001
    r = np.diff(np.log(c))
    s = float(np.std(r))
    s1 = s / math.sqrt(tf_minutes(tf))
    return s1 if s1 > 0 else 0.001
