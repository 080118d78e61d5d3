"""Validation of canonical tables (its own module; used by Lake.write and the importers).

Checks:
- duplicate timestamps (on the row key) and non-monotonic order: reported, then sorted and
  deduped (the later row wins) by the lake;
- null keys, non-finite or non-positive prices, OHLC inconsistency (high < max(open, close,
  low) or low > min(open, close)), negative volumes: "bad rows", dropped and reported by
  count with the first examples;
- gaps in fixed-timeframe series: reported as a percentage of the expected bars and as
  ranges; never filled.

A table whose bad rows exceed `bad_row_threshold` (a fraction, default 0.5) is refused
with ValidationError: it is more likely a wrong file or a wrong unit than bad bars.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fetch import schema as S
from fetch import timerange

MAX_EXAMPLES = 5


class ValidationError(ValueError):
    """A table that is mostly bad; nothing of it is written."""


@dataclass
class ValidationReport:
    dataset: str
    rows: int = 0
    rows_dropped: int = 0
    problems: dict[str, int] = field(default_factory=dict)  # check name -> rows affected
    examples: dict[str, list[dict]] = field(default_factory=dict)  # check name -> first rows
    duplicates: int = 0
    non_monotonic: int = 0
    gaps: list[tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=list)
    gap_rows: int = 0
    expected_rows: int = 0

    @property
    def gap_pct(self) -> float:
        return 100.0 * self.gap_rows / self.expected_rows if self.expected_rows else 0.0

    @property
    def bad_fraction(self) -> float:
        return self.rows_dropped / self.rows if self.rows else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.duplicates and not self.non_monotonic

    def summary(self) -> str:
        parts = [f"{self.rows} rows"]
        if self.rows_dropped:
            parts.append(f"{self.rows_dropped} bad rows dropped ({100 * self.bad_fraction:.1f}%)")
        for name, n in self.problems.items():
            ex = self.examples.get(name, [])[:2]
            parts.append(f"{name}: {n} (e.g. {ex})")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate timestamps")
        if self.non_monotonic:
            parts.append(f"{self.non_monotonic} out-of-order timestamps")
        if self.gap_rows:
            parts.append(f"gaps {self.gap_pct:.2f}% in {len(self.gaps)} ranges")
        return "; ".join(parts)


def find_gaps(ts, step: timedelta) -> tuple[list[tuple[pd.Timestamp, pd.Timestamp]], int, int]:
    """Missing bars of a fixed-step series of bar opens.

    Returns (ranges, missing_rows, expected_rows): each range is (first missing bar open,
    next present bar open), i.e. the half-open hole; expected_rows counts the bars from the
    first to the last present one. Off-grid stamps count as present, never as gaps.
    """
    arr = np.unique(np.asarray(ts).astype("datetime64[us]"))
    if arr.size < 2:
        return [], 0, int(arr.size)
    step_us = np.timedelta64(int(step / timedelta(microseconds=1)), "us")
    diffs = np.diff(arr)
    idx = np.nonzero(diffs > step_us)[0]
    ranges, missing = [], 0
    for i in idx:
        lo, hi = arr[i] + step_us, arr[i + 1]
        n = int((hi - lo) // step_us) + (1 if (hi - lo) % step_us else 0)
        missing += n
        ranges.append((pd.Timestamp(lo, tz="UTC"), pd.Timestamp(hi, tz="UTC")))
    expected = arr.size + missing
    return ranges, missing, expected


def series_codes(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Integer code per row identifying its series (the combination of `columns`)."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    if len(columns) == 1:
        joined = pc.cast(table[columns[0]], pa.string())
    else:
        joined = pc.binary_join_element_wise(*[pc.cast(table[c], pa.string()) for c in columns], "\x1f")
    enc = pc.dictionary_encode(joined).combine_chunks()
    return np.asarray(enc.indices, dtype=np.int64)


def _examples(table: pa.Table, mask: np.ndarray) -> list[dict]:
    rows = np.nonzero(mask)[0][:MAX_EXAMPLES]
    out = []
    for r in rows:
        rec = table.slice(int(r), 1).to_pylist()[0]
        rec = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in rec.items()}
        out.append({"row": int(r), **rec})
    return out


def _np(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype="float64")


def validate(table: pa.Table, dataset: str, *, bad_row_threshold: float = 0.5,
             timeframe: str | None = None) -> tuple[pa.Table, ValidationReport]:
    """Check a canonical table; return (the table without bad rows, the report).

    Raises ValidationError when bad rows exceed `bad_row_threshold` of the table. Duplicate
    and out-of-order timestamps are counted per series, not dropped (the lake dedupes,
    later row wins). Gaps are computed when the table holds one fixed-timeframe series
    (or `timeframe` is given).
    """
    S.schema_for(dataset)
    report = ValidationReport(dataset=dataset, rows=table.num_rows)
    n = table.num_rows
    if n == 0:
        return table, report
    bad = np.zeros(n, dtype=bool)
    checks: dict[str, np.ndarray] = {}

    def price_check(cols: list[str], allow_null: bool = False):
        for c in cols:
            v = _np(table[c])
            nulls = np.isnan(v)
            m = ~np.isfinite(v) | (v <= 0)
            if allow_null:
                m &= ~nulls
            if m.any():
                checks[f"non-positive or non-finite {c}"] = m

    if dataset == "ohlcv":
        price_check(["open", "high", "low", "close"])
        o, h, lo, c = (_np(table[x]) for x in ("open", "high", "low", "close"))
        with np.errstate(invalid="ignore"):
            incons = (h < np.maximum(np.maximum(o, c), lo)) | (lo > np.minimum(o, c))
        if incons.any():
            checks["OHLC inconsistent"] = incons
        for vcol in ("volume_base", "volume_quote"):
            v = _np(table[vcol])
            m = (v < 0) | np.isinf(v)
            if m.any():
                checks[f"negative or infinite {vcol}"] = m
    elif dataset == "funding":
        r = _np(table["rate"])
        m = ~np.isfinite(r)
        if m.any():
            checks["non-finite rate"] = m
        iv = _np(table["interval_hours"])
        m = ~np.isfinite(iv) | (iv <= 0)
        if m.any():
            checks["non-positive interval_hours"] = m
        price_check(["mark_price"], allow_null=True)
    elif dataset == "open_interest":
        v = _np(table["oi_base"])
        m = ~np.isfinite(v) | (v < 0)
        if m.any():
            checks["negative or non-finite oi_base"] = m
    elif dataset == "liquidations":
        for c in ("qty", "notional_usd"):
            v = _np(table[c])
            m = ~np.isfinite(v) | (v < 0)
            if m.any():
                checks[f"negative or non-finite {c}"] = m
        price_check(["price"], allow_null=True)
        side = table["side"]
        m = ~np.asarray(pc.is_in(side, pa.array(list(S.SIDES))).to_numpy(zero_copy_only=False), dtype=bool)
        if m.any():
            checks["side not long/short"] = m
    for name, m in checks.items():
        report.problems[name] = int(m.sum())
        report.examples[name] = _examples(table, m)
        bad |= m
    report.rows_dropped = int(bad.sum())
    if n and report.rows_dropped / n > bad_row_threshold:
        first = next(iter(report.problems))
        raise ValidationError(
            f"{dataset}: {report.rows_dropped} of {n} rows are bad ({100 * report.rows_dropped / n:.0f}% > "
            f"{100 * bad_row_threshold:.0f}%), refusing the file; first problem: {first}, e.g. "
            f"{report.examples[first][:2]} (check the columns, units and timestamp format)"
        )
    if report.rows_dropped:
        table = table.filter(pa.array(~bad))

    # order and duplicates, per series
    series_cols = list(S.SERIES_COLUMNS[dataset])
    key = [c for c in S.row_key(dataset, timeframe or "1d") if c != "ts"]
    codes = series_codes(table, series_cols)
    ts = table["ts"].to_numpy().astype("datetime64[us]").astype("int64")
    same = codes[1:] == codes[:-1]
    report.non_monotonic = int(((ts[1:] < ts[:-1]) & same).sum())
    dup_cols = [codes, ts] + [np.asarray(pc.dictionary_encode(table[c]).combine_chunks().indices)
                              if not pa.types.is_floating(table[c].type) else _np(table[c]) for c in key]
    order = np.lexsort(dup_cols[::-1])
    stacked = np.stack([np.asarray(c, dtype="float64") for c in dup_cols])[:, order]
    report.duplicates = int((stacked[:, 1:] == stacked[:, :-1]).all(axis=0).sum()) if len(order) > 1 else 0
    if codes.size and codes.max() == 0:
        tf = timeframe or (table["timeframe"][0].as_py() if "timeframe" in table.column_names else "")
        if tf and dataset != "funding":
            try:
                step = timerange.timeframe_delta(tf)
            except timerange.TimeRangeError:
                step = None
            if step is not None:
                report.gaps, report.gap_rows, report.expected_rows = find_gaps(
                    ts.astype("datetime64[us]"), step)
    return table, report


def check(frame, dataset: str, *, bad_row_threshold: float = 0.5, timeframe: str | None = None) -> ValidationReport:
    """Conform `frame` (DataFrame or Arrow table) to the canonical schema and return only
    the report (raises ValidationError when mostly bad, SchemaError when not conformable)."""
    table = S.to_canonical(frame, dataset)
    return validate(table, dataset, bad_row_threshold=bad_row_threshold, timeframe=timeframe)[1]
