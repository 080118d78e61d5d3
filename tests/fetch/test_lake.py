"""The Parquet lake: merge, dedupe, late corrections, idempotency, atomicity, safe paths, coverage."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fetch.lake import Lake, SeriesKey, WriteResult, decode_part, encode_part, resolve_lake
from fetch.validate import ValidationError

UTC = timezone.utc


def _read_all(root, dataset="ohlcv"):
    return duckdb.sql(
        f"SELECT * FROM read_parquet('{root}/{dataset}/**/*.parquet', hive_partitioning=true) ORDER BY symbol, ts"
    ).df()


def _snapshot(root):
    """(relative path -> (bytes, mtime_ns)) of every file in the lake."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_resolve_lake_order(monkeypatch, tmp_path):
    monkeypatch.delenv("LIQREPLAY_LAKE", raising=False)
    assert str(resolve_lake(None)) == "lake"
    monkeypatch.setenv("LIQREPLAY_LAKE", str(tmp_path / "env"))
    assert resolve_lake(None) == tmp_path / "env"
    assert resolve_lake(str(tmp_path / "arg")) == tmp_path / "arg"


def test_write_then_read_back_with_duckdb_hive(tmp_path, bars):
    lake = Lake(tmp_path)
    df = bars(start="2022-05-31 20:00", periods=8)  # spans two months
    res = lake.write("ohlcv", df, source="test")
    assert isinstance(res, WriteResult)
    assert (res.rows_in, res.rows_written, res.rows_new, res.rows_updated) == (8, 8, 8, 0)
    assert len(res.files) == 2 and all(f.name == "data.parquet" for f in res.files)
    got = _read_all(tmp_path)
    assert len(got) == 8
    assert set(got["symbol"]) == {"BTCUSDT"} and set(got["timeframe"]) == {"1h"}
    assert list(got["close"]) == list(df["close"])
    assert sorted(got["period"].unique()) == ["2022-05", "2022-06"]


def test_merge_dedupe_later_value_wins_and_late_correction(tmp_path, bars):
    lake = Lake(tmp_path)
    lake.write("ohlcv", bars(periods=6), source="a")
    corr = bars(start="2022-05-01 03:00", periods=5, price=500.0)  # 3 overlap (corrections), 2 new
    res = lake.write("ohlcv", corr, source="b")
    assert (res.rows_new, res.rows_updated, res.rows_written) == (2, 3, 5)
    got = _read_all(tmp_path).set_index("ts")
    assert len(got) == 8
    assert got.loc[pd.Timestamp("2022-05-01 02:00", tz="UTC"), "close"] == 102.0
    assert got.loc[pd.Timestamp("2022-05-01 03:00", tz="UTC"), "close"] == 500.0
    # duplicates inside one frame: the later row wins
    dup = pd.concat([bars(periods=1, price=7.0), bars(periods=1, price=9.0)], ignore_index=True)
    lake.write("ohlcv", dup, source="c")
    got = _read_all(tmp_path).set_index("ts")
    assert got.loc[pd.Timestamp("2022-05-01 00:00", tz="UTC"), "close"] == 9.0 and len(got) == 8


def test_second_identical_write_changes_no_byte_or_mtime(tmp_path, bars):
    lake = Lake(tmp_path)
    key = SeriesKey("ohlcv", "binance", "spot", "BTCUSDT", "1h")
    lake.write("ohlcv", bars(start="2022-05-31 20:00", periods=8), source="x")
    lake.mark_complete("ohlcv", key, datetime(2022, 5, 31, 20, tzinfo=UTC), datetime(2022, 6, 1, 4, tzinfo=UTC))
    before = _snapshot(tmp_path)
    res = lake.write("ohlcv", bars(start="2022-05-31 20:00", periods=8), source="x")
    lake.mark_complete("ohlcv", key, datetime(2022, 5, 31, 20, tzinfo=UTC), datetime(2022, 6, 1, 4, tzinfo=UTC))
    assert res.rows_written == 0 and res.rows_unchanged == 8 and res.files == []
    assert _snapshot(tmp_path) == before


def test_crash_after_temp_file_keeps_old_data_and_rerun_completes(tmp_path, bars, monkeypatch):
    lake = Lake(tmp_path)
    lake.write("ohlcv", bars(start="2022-05-31 20:00", periods=2), source="a")   # May only
    may = next(tmp_path.rglob("period=2022-05/data.parquet"))
    old_bytes = may.read_bytes()
    seen = {}

    def boom(self, tmp, final):
        seen["tmp_existed"] = tmp.exists() and tmp.stat().st_size > 0
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(Lake, "_commit", boom)
    with pytest.raises(RuntimeError, match="killed"):
        lake.write("ohlcv", bars(start="2022-05-31 20:00", periods=8, price=300.0), source="b")
    assert seen["tmp_existed"]
    assert may.read_bytes() == old_bytes                       # untouched
    assert not list(tmp_path.rglob("*.tmp"))                   # no half-written leftovers
    assert len(_read_all(tmp_path)) == 2                       # still readable
    monkeypatch.undo()
    res = lake.write("ohlcv", bars(start="2022-05-31 20:00", periods=8, price=300.0), source="b")
    assert res.rows_written == 8
    got = _read_all(tmp_path)
    assert len(got) == 8 and got["close"].iloc[0] == 300.0
    cov = lake.coverage().iloc[0]
    assert cov["rows"] == 8 and cov["files"] == 2


def test_crash_between_months_then_rerun_records_both_in_manifest(tmp_path, bars, monkeypatch):
    lake = Lake(tmp_path)
    real = Lake._commit
    calls = []

    def second_fails(self, tmp, final):
        calls.append(final)
        if len(calls) == 2:
            raise RuntimeError("killed")
        real(self, tmp, final)

    monkeypatch.setattr(Lake, "_commit", second_fails)
    with pytest.raises(RuntimeError):
        lake.write("ohlcv", bars(start="2022-05-31 20:00", periods=8), source="a")
    monkeypatch.undo()
    assert len(_read_all(tmp_path)) == 4          # May landed, June did not
    lake.write("ohlcv", bars(start="2022-05-31 20:00", periods=8), source="a")
    cov = lake.coverage().iloc[0]
    assert cov["rows"] == 8 and cov["files"] == 2
    assert cov["first_ts"] == pd.Timestamp("2022-05-31 20:00", tz="UTC")


def test_leftover_temp_files_are_ignored_and_cleaned(tmp_path, bars):
    lake = Lake(tmp_path)
    lake.write("ohlcv", bars(periods=3), source="a")
    folder = next(tmp_path.rglob("period=2022-05"))
    junk = folder / ".data.parquet.dead.tmp"
    junk.write_bytes(b"PAR1 half a file")
    assert len(_read_all(tmp_path)) == 3          # readers skip it
    lake.write("ohlcv", bars(start="2022-05-01 03:00", periods=1), source="a")
    assert not junk.exists()


@pytest.mark.parametrize("symbols", [["BTC/USDT:USDT"], ["../x", "..", "."], ["a/b", "a_b", "a%2Fb", "a%5Fb"]])
def test_path_unsafe_symbols_neither_escape_nor_collide(tmp_path, bars, symbols):
    root = tmp_path / "lake"
    lake = Lake(root)
    for i, sym in enumerate(symbols):
        lake.write("ohlcv", bars(sym, price=100.0 * (i + 1)), source="t")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(root in p.parents for p in files)
    data = [p for p in files if p.name == "data.parquet"]
    assert len(data) == len(symbols)               # one file per symbol: no collision
    got = _read_all(root)
    assert sorted(got["symbol"].unique()) == sorted(symbols)      # hive values map back
    for i, sym in enumerate(symbols):
        assert got[got["symbol"] == sym]["close"].iloc[0] == 100.0 * (i + 1)
    assert sorted(lake.coverage()["symbol"]) == sorted(symbols)


def test_encoding_roundtrip():
    for s in ["BTC/USDT:USDT", "../x", "a_b", "a b", "é", "%", "BTC-PERP", "1000SHIBUSDT"]:
        enc = encode_part(s)
        assert "/" not in enc and enc not in (".", "..") and decode_part(enc) == s
    assert encode_part("a/b") != encode_part("a_b")


def test_missing_reads_only_the_manifest(tmp_path, bars, monkeypatch):
    lake = Lake(tmp_path)
    key = SeriesKey("ohlcv", "binance", "perp", "BTCUSDT", "1m")
    d = lambda day, h=0: datetime(2022, 5, day, h, tzinfo=UTC)  # noqa: E731
    assert lake.missing("ohlcv", key, d(1), d(10)) == [(d(1), d(10))]
    lake.mark_complete("ohlcv", key, d(2), d(4))
    lake.mark_complete("ohlcv", key, d(4), d(5))           # adjacent: merged
    lake.mark_complete("ohlcv", key, d(7), d(8))
    assert lake.complete(key) == [(d(2), d(5)), (d(7), d(8))]

    def no_data(*a, **k):
        raise AssertionError("missing() read data")

    monkeypatch.setattr(pq, "read_table", no_data)
    assert lake.missing("ohlcv", key, d(1), d(10)) == [(d(1), d(2)), (d(5), d(7)), (d(8), d(10))]
    assert lake.missing("ohlcv", key, d(2, 6), d(4)) == []
    assert lake.missing("ohlcv", key, d(4), d(7, 12)) == [(d(5), d(7))]


def test_coverage_gaps_and_snapshot_id(tmp_path, bars):
    lake = Lake(tmp_path)
    assert lake.coverage().empty
    s0 = lake.snapshot_id()
    lake.write("ohlcv", bars(periods=10).drop(index=[4, 5]), source="t")
    lake.write("ohlcv", bars("ETHUSDT", periods=3), source="t")
    cov = lake.coverage().set_index("symbol")
    btc = cov.loc["BTCUSDT"]
    assert btc["rows"] == 8 and btc["gap_pct"] == pytest.approx(20.0)
    assert btc["gaps"] == [(datetime(2022, 5, 1, 4, tzinfo=UTC), datetime(2022, 5, 1, 6, tzinfo=UTC))]
    assert cov.loc["ETHUSDT", "gap_pct"] == 0.0
    s1 = lake.snapshot_id()
    assert s1 != s0 and s1 == Lake(tmp_path).snapshot_id()
    lake.write("ohlcv", bars("ETHUSDT", periods=3), source="t")       # no change
    assert lake.snapshot_id() == s1
    lake.write("ohlcv", bars("ETHUSDT", periods=3, price=5.0), source="t")
    assert lake.snapshot_id() != s1
    m = json.loads(next(tmp_path.rglob("_coverage.json")).read_text())
    assert set(m) >= {"key", "files", "complete", "gaps"}


def test_mostly_bad_frame_refused_and_nothing_written(tmp_path, bars):
    lake = Lake(tmp_path)
    df = bars(periods=4)
    df.loc[:2, "close"] = float("nan")
    with pytest.raises(ValidationError, match="refusing"):
        lake.write("ohlcv", df, source="t")
    assert not list(tmp_path.rglob("*.parquet"))
    df = bars(periods=4)
    df.loc[0, "close"] = -5.0
    res = lake.write("ohlcv", df, source="t")
    assert res.rows_dropped == 1 and res.rows_written == 3 and res.report.problems


def test_other_datasets_partitions_and_keys(tmp_path):
    lake = Lake(tmp_path)
    liq = pd.DataFrame({"venue": "ftx", "market": "perp", "symbol": "BTC-PERP", "timeframe": "",
                        "ts": pd.to_datetime(["2022-11-08 10:00"] * 3, utc=True), "side": ["long", "long", "short"],
                        "qty": [1.0, 2.0, 1.0], "price": [20000.0, 20000.0, 20000.0], "source": "tardis"})
    assert lake.write("liquidations", liq, source="t").rows_written == 3   # same ts, different orders kept
    fund = pd.DataFrame({"venue": "binance", "market": "perp", "symbol": "BTCUSDT",
                         "ts": pd.to_datetime(["2022-11-08 08:00:00.005"], utc=True), "rate": [0.0001],
                         "interval_hours": [8.0]})
    lake.write("funding", fund, source="t")
    paths = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("data.parquet"))
    assert paths == [
        "funding/venue=binance/market=perp/symbol=BTCUSDT/period=2022/data.parquet",
        "liquidations/venue=ftx/market=perp/symbol=BTC-PERP/timeframe=/period=2022-11/data.parquet",
    ]
    got = _read_all(tmp_path, "funding")
    assert got["ts"].iloc[0] == pd.Timestamp("2022-11-08 08:00:00.005", tz="UTC")   # real time kept
    assert SeriesKey("funding", "binance", "perp", "BTCUSDT", "8h", "mark") == \
        SeriesKey("funding", "binance", "perp", "BTCUSDT")
    with pytest.raises(ValueError):
        SeriesKey("candles", "binance", "perp", "BTCUSDT", "1h")


def test_torn_manifest_is_rebuilt_from_the_files(tmp_path, bars):
    lake = Lake(tmp_path)
    lake.write("ohlcv", bars("BTC/USDT:USDT", start="2022-05-31 20:00", periods=8), source="t")
    manifest = next(tmp_path.rglob("_coverage.json"))
    manifest.write_text('{"key": ')          # torn by a power cut
    cov = lake.coverage()
    assert cov.iloc[0]["rows"] == 8 and cov.iloc[0]["symbol"] == "BTC/USDT:USDT"
    assert json.loads(manifest.read_text())["rows"] == 8
    manifest.write_text("")
    assert lake.write("ohlcv", bars("BTC/USDT:USDT", periods=1, start="2022-06-02"), source="t").rows_new == 1
    assert lake.coverage().iloc[0]["rows"] == 9


def test_funding_gaps_follow_the_interval(tmp_path):
    lake = Lake(tmp_path)
    ts = pd.to_datetime(["2022-11-09 00:00:00.004", "2022-11-09 08:00:00.013", "2022-11-10 00:00:00.002",
                         "2022-11-10 04:00:00.009", "2022-11-10 06:00:00.001"], utc=True)
    lake.write("funding", pd.DataFrame({"venue": "binance", "market": "perp", "symbol": "SOLUSDT", "ts": ts,
                                        "rate": 0.0001, "interval_hours": [8.0, 8.0, 4.0, 2.0, 2.0]}), source="t")
    cov = lake.coverage().iloc[0]
    # 16:00 on Nov 9 is missing (one settlement); the 4h -> 2h changes are not gaps
    assert cov["gaps"] == [(datetime(2022, 11, 9, 16, 0, 0, 13000, tzinfo=UTC),
                            datetime(2022, 11, 10, 0, 0, 0, 2000, tzinfo=UTC))]
    assert cov["gap_pct"] == pytest.approx(100 / 6)
