"""Canonical Arrow schemas of the lake and the conformer that casts frames onto them.

One `pyarrow.schema` per dataset (Contract 1). Timestamps are `timestamp[us, tz=UTC]`;
an OHLCV `ts` is the bar OPEN; a funding `ts` is the settlement time as stamped by the
venue (Binance stamps it a few ms after the hour, e.g. 08:00:00.005: kept as is; floor to
the minute before joining); open-interest `ts` is the sample time (daily files: the day
open); liquidation `ts` is the order time (single orders, timeframe "") or the bucket open
(aggregates, timeframe "1d" etc.).

Money is float64 in the quote currency (USD/USDT, taken as USD); quantities are in coins
(base asset).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TS = pa.timestamp("us", tz="UTC")

OHLCV = pa.schema(
    [
        pa.field("venue", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),  # spot | perp | future
        pa.field("symbol", pa.string(), nullable=False),  # exchange id: BTCUSDT, BTC-PERP, BTC/USD
        pa.field("timeframe", pa.string(), nullable=False),  # 1m 5m 15m 1h 1d
        pa.field("price_type", pa.string(), nullable=False),  # trade | mark | index
        pa.field("ts", TS, nullable=False),  # bar OPEN, UTC
        pa.field("open", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("volume_base", pa.float64()),  # coins
        pa.field("volume_quote", pa.float64()),  # quote currency (USD/USDT)
    ]
)

FUNDING = pa.schema(
    [
        pa.field("venue", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),  # settlement time as stamped by the venue
        pa.field("rate", pa.float64()),  # fraction per interval (0.0001 = 0.01 %)
        pa.field("interval_hours", pa.float64()),
        pa.field("mark_price", pa.float64(), nullable=True),
    ]
)

OPEN_INTEREST = pa.schema(
    [
        pa.field("venue", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),  # sampling interval: 5m, 1h, 1d
        pa.field("ts", TS, nullable=False),
        pa.field("oi_base", pa.float64()),  # coins
        pa.field("oi_usd", pa.float64(), nullable=True),
        pa.field("source", pa.string()),  # e.g. "coinalyze", "binance-metrics", "tardis"
    ]
)

LIQUIDATIONS = pa.schema(
    [
        pa.field("venue", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),  # "" single orders, "1d" aggregates
        pa.field("ts", TS, nullable=False),
        pa.field("side", pa.string(), nullable=False),  # long | short: the liquidated POSITION
        pa.field("qty", pa.float64()),  # coins
        pa.field("price", pa.float64()),  # fill price (aggregates: the bucket's close)
        pa.field("notional_usd", pa.float64()),
        pa.field("source", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "ohlcv": OHLCV,
    "funding": FUNDING,
    "open_interest": OPEN_INTEREST,
    "liquidations": LIQUIDATIONS,
}

# Columns that name a series (one Lake partition chain, before the month).
SERIES_COLUMNS: dict[str, tuple[str, ...]] = {
    "ohlcv": ("venue", "market", "symbol", "timeframe", "price_type"),
    "funding": ("venue", "market", "symbol"),
    "open_interest": ("venue", "market", "symbol", "timeframe"),
    "liquidations": ("venue", "market", "symbol", "timeframe"),
}

# Columns that identify one row inside a series (dedupe key: a later value wins).
ROW_KEY: dict[str, tuple[str, ...]] = {
    "ohlcv": ("ts",),
    "funding": ("ts",),
    "open_interest": ("ts",),
    # aggregates: one row per bucket and side; single orders (timeframe "") add price and qty
    "liquidations": ("ts", "side"),
}
LIQUIDATION_ORDER_KEY: tuple[str, ...] = ("ts", "side", "price", "qty")

# Columns a frame may omit (they become nulls); any other absent column is an error.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "ohlcv": (),
    "funding": ("mark_price",),
    "open_interest": ("oi_usd", "source"),
    "liquidations": ("source",),
}

MARKETS = ("spot", "perp", "future")
PRICE_TYPES = ("trade", "mark", "index")
SIDES = ("long", "short")


class SchemaError(ValueError):
    """A frame cannot be conformed to a canonical schema (names the column and the fix)."""


def schema_for(dataset: str) -> pa.Schema:
    """The canonical schema of `dataset` (ohlcv, funding, open_interest, liquidations)."""
    try:
        return SCHEMAS[dataset]
    except KeyError:
        raise SchemaError(
            f"unknown dataset {dataset!r}: use one of {', '.join(SCHEMAS)}"
        ) from None


def row_key(dataset: str, timeframe: str | None = None) -> tuple[str, ...]:
    """Dedupe key of one row inside a series (liquidation single orders: ts, side, price, qty)."""
    if dataset == "liquidations" and not timeframe:
        return LIQUIDATION_ORDER_KEY
    schema_for(dataset)
    return ROW_KEY[dataset]


def _ts_array(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """Any timestamp-like column -> timestamp[us, UTC]. Naive timestamps are taken as UTC;
    integers are epoch ms (< 1e14) or µs (>= 1e14)."""
    t = values.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            values = pc.assume_timezone(values, "UTC")
        return pc.cast(values, TS)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        ints = pc.cast(values, pa.int64())
        arr = np.asarray(ints.to_numpy(zero_copy_only=False), dtype="int64")
        big = np.abs(arr) >= 10**14
        us = np.where(big, arr, arr * 1000)
        return pa.chunked_array([pa.array(us, type=pa.int64()).cast(TS)])
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        s = pd.to_datetime(pd.Series(values.to_pylist()), utc=True)
        return pa.chunked_array([pa.array(s.array.as_unit("us"), type=TS)])
    raise SchemaError(f"column ts has type {t}: give timestamps, epoch ms or ISO strings")


def to_canonical(frame: pd.DataFrame | pa.Table, dataset: str) -> pa.Table:
    """Cast `frame` onto the canonical schema of `dataset` and return an Arrow table.

    - column order and types follow the schema; extra columns are dropped;
    - `ts` becomes timestamp[us, UTC] (naive values are UTC; ints are epoch ms or µs);
    - ohlcv: `volume_quote` is derived as volume_base * close where missing (column absent
      or null), `volume_base` as volume_quote / close where missing; `price_type`
      defaults to "trade";
    - optional columns absent from the input (OPTIONAL_COLUMNS: funding mark_price,
      open_interest oi_usd and source, liquidations source) become nulls; liquidations
      `notional_usd` defaults to qty * price and `timeframe` to "" (single orders);
    - a missing required column raises SchemaError naming it.
    """
    schema = schema_for(dataset)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    n = table.num_rows
    cols: dict[str, pa.ChunkedArray] = {name: table.column(name) for name in table.column_names}

    def missing_or_null(name: str) -> bool:
        return name not in cols or cols[name].null_count == n

    if dataset == "ohlcv":
        if "price_type" not in cols:
            cols["price_type"] = pa.chunked_array([pa.array(["trade"] * n, pa.string())])
        for c in ("close",):
            if c not in cols:
                raise SchemaError(f"ohlcv frame lacks column {c!r}")
        close = pc.cast(cols["close"], pa.float64())
        if missing_or_null("volume_base") and missing_or_null("volume_quote"):
            raise SchemaError("ohlcv frame has neither volume_base nor volume_quote")
        if "volume_quote" not in cols:
            cols["volume_quote"] = pa.chunked_array([pa.nulls(n, pa.float64())])
        if "volume_base" not in cols:
            cols["volume_base"] = pa.chunked_array([pa.nulls(n, pa.float64())])
        vb = pc.cast(cols["volume_base"], pa.float64())
        vq = pc.cast(cols["volume_quote"], pa.float64())
        cols["volume_quote"] = pc.coalesce(vq, pc.multiply(vb, close))
        cols["volume_base"] = pc.coalesce(vb, pc.divide(vq, close))
    elif dataset == "liquidations":
        if "notional_usd" not in cols and "qty" in cols and "price" in cols:
            cols["notional_usd"] = pc.multiply(
                pc.cast(cols["qty"], pa.float64()), pc.cast(cols["price"], pa.float64())
            )
        if "timeframe" not in cols:
            cols["timeframe"] = pa.chunked_array([pa.array([""] * n, pa.string())])

    arrays = []
    for field in schema:
        if field.name not in cols:
            if field.name in OPTIONAL_COLUMNS[dataset]:
                arrays.append(pa.nulls(n, field.type))
                continue
            raise SchemaError(
                f"{dataset} frame lacks required column {field.name!r} "
                f"(has: {', '.join(table.column_names)})"
            )
        col = cols[field.name]
        if field.name == "ts":
            col = _ts_array(col)
        else:
            try:
                col = pc.cast(col, field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"{dataset} column {field.name!r}: cannot cast to {field.type}: {exc}") from None
        if not field.nullable and col.null_count:
            raise SchemaError(f"{dataset} column {field.name!r} has {col.null_count} null values")
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)


def venue_of(exchange_id: str) -> str:
    """Lake venue for a ccxt id: binance, binanceusdm, binancecoinm -> "binance"."""
    return re.sub(r"(usdm|coinm)$", "", exchange_id.lower())
