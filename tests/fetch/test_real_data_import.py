"""The real 2022 data (../shared/data) imported once: row counts match datasets.csv.

This is the issue's "Done when": the coverage table after `liqreplay import` matches the
manifest's row counts. Expected counts per lake series are recomputed here from the
source files (distinct timestamps per series), independently of the importer.
"""
from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from backtest.catalog import Catalog
from fetch.cli_local import format_status


@pytest.fixture(scope="module")
def manifest(shared_data):
    return pd.read_csv(shared_data / "datasets.csv", dtype=str, keep_default_na=False)


def test_every_file_read_with_the_manifest_row_count(imported_lake, manifest):
    _, summary = imported_lake
    got = {f.file: f.rows for f in summary.files}
    want = {r.file: int(r.rows) for r in manifest.itertuples()}
    assert got == want
    assert summary.rows_read == sum(want.values())
    assert summary.rows_dropped == 0
    assert summary.rows_per_s > 0


def _expected_series_rows(shared_data, manifest) -> dict[tuple, int]:
    """(dataset, venue, market, symbol, timeframe) -> distinct row keys, from the raw files."""
    parts = []
    for r in manifest.itertuples():
        t = pq.read_table(shared_data / r.file, columns=["ts"] + ([r.symbol_column] if r.symbol == "*" else []))
        df = pd.DataFrame({"ts": t["ts"].to_pandas()})
        df["symbol"] = t[r.symbol_column].to_pandas().astype(str) if r.symbol == "*" else r.symbol
        if r.market == "mixed":  # FTX names: BTC-PERP -> perp; BTC-USD -> spot BTC/USD
            perp = df["symbol"].str.endswith("-PERP")
            df["market"] = perp.map({True: "perp", False: "spot"})
            df.loc[~perp, "symbol"] = df.loc[~perp, "symbol"].str.replace("-", "/")
        else:
            df["market"] = r.market
        df["dataset"], df["venue"] = r.kind, r.venue
        df["timeframe"] = "" if r.kind == "funding" else r.timeframe
        sides = ("long", "short") if r.kind == "liquidations" else ("",)
        parts += [df.assign(side=side) for side in sides]
    allrows = pd.concat(parts, ignore_index=True).drop_duplicates()
    counts = allrows.groupby(["dataset", "venue", "market", "symbol", "timeframe"]).size()
    return {k: int(v) for k, v in counts.items()}


def test_coverage_table_matches_the_manifest(imported_lake, shared_data, manifest):
    lake, _ = imported_lake
    cov = lake.coverage()
    got = {(r.dataset, r.venue, r.market, r.symbol, r.timeframe): int(r.rows) for r in cov.itertuples()}
    want = _expected_series_rows(shared_data, manifest)
    assert got == want
    # where one file feeds one series, the table shows exactly the manifest's count and range
    single = manifest[(manifest.symbol != "*") & (manifest.market != "mixed")]
    per_series = single.groupby(["kind", "venue", "market", "symbol", "timeframe"]).size()
    for r in single.itertuples():
        if per_series[(r.kind, r.venue, r.market, r.symbol, r.timeframe)] > 1:
            continue
        row = cov[(cov.dataset == r.kind) & (cov.venue == r.venue) & (cov.market == r.market)
                  & (cov.symbol == r.symbol) & (cov.timeframe == r.timeframe)].iloc[0]
        assert row["rows"] == int(r.rows), r.file
        assert row["first_ts"] == pd.Timestamp(r.first_ts) and row["last_ts"] == pd.Timestamp(r.last_ts), r.file
    totals = cov.groupby("dataset")["rows"].sum()
    assert totals["funding"] == 51823 and totals["open_interest"] == 47005
    assert totals["liquidations"] == 2 * 26070
    text = format_status(cov)
    assert "LUNAUSDT" in text and "2022-05-13 01:00..2022-05-31 06:00" in text


def test_known_values_through_the_catalog(imported_lake):
    lake, _ = imported_lake
    cat = Catalog(lake.root)
    # PROVENANCE: BTCUSDT USDT-M 1h lowest low in W5 = 15,462.6 at 2022-11-09 22:00
    w5 = cat.bars("binance", "perp", "BTCUSDT", "2022-11-06", "2022-11-13")
    assert w5.attrs["timeframe"] == "1h" and w5.attrs["coverage"] == 1.0
    low = w5.loc[w5["low"].idxmin()]
    assert low["low"] == 15462.6 and low["ts"] == pd.Timestamp("2022-11-09 22:00", tz="UTC")
    # W4: the 1m file covers only Oct 25 -> 1m chosen for that day, 1h for the whole window
    assert cat.bars("binance", "perp", "BTCUSDT", "2022-10-25", "2022-10-26").attrs["timeframe"] == "1m"
    w4 = cat.bars("binance", "perp", "BTCUSDT", "2022-10-24", "2022-10-28")
    assert w4.attrs["timeframe"] == "1h"
    # 1m: Oct 25 + 1st hour of Oct 26
    assert cat.timeframes("binance", "perp", "BTCUSDT", "2022-10-24", "2022-10-28") == [("1m", 1500), ("1h", 96)]
    # BTCUSDT OI: 146,294 (Oct 24) known at Oct 25 00:00; 164,610 (Oct 25) only from Oct 26
    oi = cat.open_interest("binance", "BTCUSDT", pd.Timestamp("2022-10-25 12:00", tz="UTC"))
    assert round(oi["oi_base"]) == 146294 and oi["source"] == "coinalyze"
    assert round(cat.open_interest("binance", "BTCUSDT", pd.Timestamp("2022-10-26", tz="UTC"))["oi_base"]) == 164610
    # SOL funding interval cut to 4 h on 2022-11-09 20:00
    f = cat.funding("binance", "SOLUSDT", "2022-11-09", "2022-11-10")
    assert list(f["interval_hours"])[-1] == 4.0
    assert f["ts"].iloc[-1].floor("min") == pd.Timestamp("2022-11-09 20:00", tz="UTC")
    # FTX perp daily, named BTC-PERP
    assert cat.bars("ftx", "perp", "BTC-PERP", "2022-06-18", "2022-06-19")["low"].iloc[0] == 17578
