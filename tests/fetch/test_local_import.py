"""`liqreplay import DIR`: hand-made datasets.csv manifests and freqtrade folders."""
from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from backtest.console import main
from fetch.lake import Lake, SeriesKey
from fetch.sources.local import ImportError_, ftx_market, import_dir
from fetch.validate import ValidationError

HEADER = "file,kind,venue,market,symbol,timeframe,volume_unit,symbol_column,rows\n"


def _ms(*stamps):
    out = []
    for s in stamps:
        t = pd.Timestamp(s)
        t = t.tz_localize("UTC") if t.tzinfo is None else t
        out.append(int(t.value // 1_000_000))
    return out


def _ohlc(n, start="2022-05-01", freq="1h", close=100.0):
    ts = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    c = [close + i for i in range(n)]
    return {"ts": ts, "open_time": _ms(*ts), "open": c, "high": [x + 1 for x in c], "low": [x - 1 for x in c],
            "close": c}


@pytest.fixture
def manifest_dir(tmp_path):
    d = tmp_path / "data"
    (d / "a").mkdir(parents=True)
    # Binance spot 1h, base volume, with a quote_volume column
    spot = _ohlc(3)
    pq.write_table(pa.table({**spot, "volume": [2.0, 3.0, 4.0], "quote_volume": [201.0, 303.0, 408.0]}),
                   d / "a" / "spot.parquet")
    # FTX spot 1h as CSV without ts column, quote volume
    ftx = _ohlc(2, close=50.0)
    pd.DataFrame({"open_time": ftx["open_time"], "open": ftx["open"], "high": ftx["high"], "low": ftx["low"],
                  "close": ftx["close"], "volume": [500.0, 1020.0]}).to_csv(d / "a" / "ftx.csv", index=False)
    # FTX daily mixed file: perps and spot in a market column
    mixed = _ohlc(2, freq="1D", close=10.0)
    pq.write_table(pa.table({"market": ["BTC-PERP", "BTC-USD"], "ts": mixed["ts"], "open": [10.0, 10.0],
                             "high": [11.0, 11.0], "low": [9.0, 9.0], "close": [10.0, 10.0],
                             "volume": [1000.0, 50.0]}), d / "a" / "mixed.parquet")
    # funding: settlement a few ms after the hour
    pq.write_table(pa.table({"symbol": ["BTCUSDT", "BTCUSDT", "SOLUSDT"],
                             "calc_time": [1651392000005, 1651420800013, 1651392000004],
                             "funding_interval_hours": [8, 8, 4], "last_funding_rate": [0.0001, -0.0002, 0.0003]}),
                   d / "a" / "funding.parquet")
    # Coinalyze daily OI and liquidations (base units, close in USDT)
    days = pd.date_range("2022-05-01", periods=2, freq="1D", tz="UTC")
    pq.write_table(pa.table({"symbol": ["BTCUSDT", "BTCUSDT"], "ts": days, "open_interest": [100.0, 110.0],
                             "close": [30000.0, 31000.0]}), d / "a" / "oi.parquet")
    pq.write_table(pa.table({"symbol": ["BTCUSDT", "BTCUSDT"], "ts": days, "long_liquidations": [2.0, 0.0],
                             "short_liquidations": [1.0, 3.0], "close": [30000.0, 31000.0]}), d / "a" / "liq.parquet")
    (d / "datasets.csv").write_text(HEADER + "\n".join([
        "a/spot.parquet,ohlcv,binance,spot,BTCUSDT,1h,base,,3",
        "a/ftx.csv,ohlcv,ftx,spot,BTC/USD,1h,quote,,2",
        "a/mixed.parquet,ohlcv,ftx,mixed,*,1d,quote,market,2",
        "a/funding.parquet,funding,binance,perp,*,8h,,symbol,3",
        "a/oi.parquet,open_interest,binance,perp,*,1d,base,symbol,2",
        "a/liq.parquet,liquidations,binance,perp,*,1d,base,symbol,2",
    ]) + "\n")
    return d


def _frame(lake, dataset):
    import duckdb

    return duckdb.sql(f"SELECT * FROM read_parquet('{lake.root}/{dataset}/**/data.parquet', "
                      f"hive_partitioning=true) ORDER BY symbol, ts").df()


def test_manifest_import_maps_every_kind(manifest_dir, tmp_path):
    lake = Lake(tmp_path / "lake")
    s = import_dir(manifest_dir, lake, progress=False)
    assert [f.rows for f in s.files] == [3, 2, 2, 3, 2, 2]
    assert all(f.matches for f in s.files)
    assert s.rows_read == 14 and s.rows_new == 16     # liquidations: one row per side
    o = _frame(lake, "ohlcv").set_index(["venue", "market", "symbol"])
    spot = o.loc[("binance", "spot", "BTCUSDT")]
    assert list(spot["volume_base"]) == [2.0, 3.0, 4.0] and list(spot["volume_quote"]) == [201.0, 303.0, 408.0]
    ftx = o.loc[("ftx", "spot", "BTC/USD")]
    ftx = ftx[ftx["timeframe"] == "1h"]
    assert list(ftx["volume_quote"]) == [500.0, 1020.0] and list(ftx["volume_base"]) == [10.0, 20.0]
    perp = o.loc[[("ftx", "perp", "BTC-PERP")]]
    assert perp["timeframe"].iloc[0] == "1d" and perp["volume_base"].iloc[0] == 100.0
    assert o.loc[("ftx", "spot", "BTC/USD")].query("timeframe == '1d'")["volume_quote"].iloc[0] == 50.0
    f = _frame(lake, "funding")
    btc = f[f["symbol"] == "BTCUSDT"]
    assert list(btc["ts"]) == [pd.Timestamp("2022-05-01 08:00:00.005", tz="UTC"),
                               pd.Timestamp("2022-05-01 16:00:00.013", tz="UTC")]
    assert list(btc["rate"]) == [0.0001, -0.0002]
    assert f[f["symbol"] == "SOLUSDT"]["interval_hours"].iloc[0] == 4.0
    oi = _frame(lake, "open_interest")
    assert list(oi["oi_base"]) == [100.0, 110.0] and list(oi["oi_usd"]) == [3_000_000.0, 3_410_000.0]
    assert set(oi["source"]) == {"a"}
    liq = _frame(lake, "liquidations").set_index(["ts", "side"])
    d1 = pd.Timestamp("2022-05-01", tz="UTC")
    assert liq.loc[(d1, "long"), "qty"] == 2.0 and liq.loc[(d1, "long"), "notional_usd"] == 60000.0
    assert liq.loc[(d1, "short"), "price"] == 30000.0
    assert liq.loc[(pd.Timestamp("2022-05-02", tz="UTC"), "long"), "qty"] == 0.0   # zero days kept
    key = SeriesKey("ohlcv", "binance", "spot", "BTCUSDT", "1h")
    assert lake.missing("ohlcv", key, d1, pd.Timestamp("2022-05-01 03:00", tz="UTC")) == []


def test_reimport_writes_nothing_and_leaves_files_unchanged(manifest_dir, tmp_path):
    lake = Lake(tmp_path / "lake")
    import_dir(manifest_dir, lake, progress=False)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in lake.root.rglob("*") if p.is_file()}
    s = import_dir(manifest_dir, lake, progress=False)
    assert s.rows_written == 0 and s.files_written == 0 and s.rows_unchanged == 16
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in lake.root.rglob("*") if p.is_file()}
    assert after == before


def test_overlapping_files_later_one_wins_stably(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    a, b = _ohlc(3), _ohlc(3)
    pq.write_table(pa.table({**a, "volume": [1.0, 1.0, 1.0]}), d / "old.parquet")
    pq.write_table(pa.table({**b, "volume": [1.0, 9.0, 1.0]}), d / "new.parquet")
    (d / "datasets.csv").write_text(HEADER + "old.parquet,ohlcv,binance,spot,X,1h,base,,3\n"
                                    "new.parquet,ohlcv,binance,spot,X,1h,base,,3\n")
    lake = Lake(tmp_path / "lake")
    import_dir(d, lake, progress=False)
    assert list(_frame(lake, "ohlcv")["volume_base"]) == [1.0, 9.0, 1.0]
    assert import_dir(d, lake, progress=False).rows_written == 0   # no flip-flop on re-import


def test_freqtrade_folders(tmp_path):
    d = tmp_path / "user_data" / "data"
    (d / "binance" / "futures").mkdir(parents=True)
    (d / "ftx" / "futures").mkdir(parents=True)
    rows = [[t, 10.0, 11.0, 9.0, 10.5, 3.0] for t in _ms("2022-05-01 00:00", "2022-05-01 01:00")]
    (d / "binance" / "BTC_USDT-1h.json").write_text(json.dumps(rows))
    (d / "binance" / "futures" / "BTC_USDT_USDT-1h-futures.json").write_text(json.dumps(rows))
    (d / "binance" / "futures" / "BTC_USDT_USDT-1h-mark.json").write_text(json.dumps(rows))
    (d / "binance" / "futures" / "BTC_USDT_USDT-8h-funding_rate.json").write_text(
        json.dumps([[_ms("2022-05-01 00:00")[0], 0.0001, 0, 0, 0, 0]]))
    (d / "ftx" / "BTC_USD-1h.json").write_text(json.dumps(rows))
    (d / "ftx" / "futures" / "BTC_USD_USD-1h-futures.json").write_text(json.dumps(rows))
    feather.write_feather(pa.table({
        "date": pd.date_range("2022-05-01", periods=2, freq="5min", tz="UTC"), "open": [1.0, 1.0],
        "high": [2.0, 2.0], "low": [0.5, 0.5], "close": [1.5, 1.5], "volume": [4.0, 4.0]}),
        d / "binance" / "ETH_USDT-5m.feather")
    (d / "binance" / "notes.json").write_text("{}")   # not a data file name: ignored
    lake = Lake(tmp_path / "lake")
    s = import_dir(d, lake, progress=False)
    assert len(s.files) == 7
    o = _frame(lake, "ohlcv")
    got = {(r.venue, r.market, r.symbol, r.timeframe, r.price_type) for r in o.itertuples()}
    assert got == {("binance", "spot", "BTCUSDT", "1h", "trade"), ("binance", "perp", "BTCUSDT", "1h", "trade"),
                   ("binance", "perp", "BTCUSDT", "1h", "mark"), ("ftx", "spot", "BTC/USD", "1h", "trade"),
                   ("ftx", "perp", "BTC-PERP", "1h", "trade"), ("binance", "spot", "ETHUSDT", "5m", "trade")}
    b = o[(o.venue == "binance") & (o.market == "spot") & (o.symbol == "BTCUSDT")]
    assert list(b["volume_base"]) == [3.0, 3.0] and list(b["volume_quote"]) == [31.5, 31.5]
    f = o[(o.venue == "ftx") & (o.market == "perp")]
    assert list(f["volume_quote"]) == [3.0, 3.0]        # FTX candles carry USD volume
    fund = _frame(lake, "funding")
    assert list(fund["rate"]) == [0.0001] and list(fund["symbol"]) == ["BTCUSDT"]


def test_ftx_market_names():
    assert ftx_market("BTC-PERP") == ("perp", "BTC-PERP")
    assert ftx_market("BTC-USD") == ("spot", "BTC/USD")
    assert ftx_market("eth/usdt") == ("spot", "ETH/USDT")
    assert ftx_market("BTC-0930") == ("future", "BTC-0930")


def test_mostly_bad_file_refused_before_anything_is_written(manifest_dir, tmp_path):
    bad = _ohlc(4)
    bad["close"] = [0.0, -1.0, 0.0, 5.0]
    pq.write_table(pa.table({**bad, "volume": [1.0] * 4}), manifest_dir / "a" / "bad.parquet")
    with open(manifest_dir / "datasets.csv", "a") as fh:
        fh.write("a/bad.parquet,ohlcv,binance,spot,BAD,1h,base,,4\n")
    lake = Lake(tmp_path / "lake")
    with pytest.raises(ValidationError, match="refusing"):
        import_dir(manifest_dir, lake, progress=False)
    assert not lake.root.exists() or not list(lake.root.rglob("*.parquet"))


def test_manifest_errors_are_clear(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "datasets.csv").write_text(HEADER + "../outside.parquet,ohlcv,binance,spot,X,1h,base,,1\n")
    with pytest.raises(ImportError_, match="outside"):
        import_dir(d, Lake(tmp_path / "lake"), progress=False)
    (d / "datasets.csv").write_text(HEADER + "x.parquet,trades,binance,spot,X,1h,base,,1\n")
    with pytest.raises(ImportError_, match="kind 'trades'"):
        import_dir(d, Lake(tmp_path / "lake"), progress=False)
    (d / "datasets.csv").write_text(HEADER + "missing.parquet,ohlcv,binance,spot,X,1h,base,,1\n")
    with pytest.raises(ImportError_, match="not found"):
        import_dir(d, Lake(tmp_path / "lake"), progress=False)
    with pytest.raises(ImportError_, match="not a folder"):
        import_dir(tmp_path / "nope", Lake(tmp_path / "lake"), progress=False)


def test_cli_import_and_status(manifest_dir, tmp_path, capsys):
    lake = tmp_path / "lake"
    assert main(["import", str(manifest_dir), "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert "imported 6 files, 14 rows read" in out and "rows/s" in out
    assert main(["data", "status", "--lake", str(lake)]) == 0  # per window: what each would use
    out = capsys.readouterr().out
    assert "2022-05 " in out and "MISSING: no usable bars for BTC-PERP" in out
    assert main(["data", "status", "--all", "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert "BTC-PERP" in out and "BTC/USD" in out and "snapshot" in out
    line = next(x for x in out.splitlines() if x.startswith("ohlcv") and "BTCUSDT" in x)
    assert " 3 " in line and "2022-05-01 00:00" in line and "2022-05-01 02:00" in line
    assert main(["import", str(tmp_path / "nope"), "--lake", str(lake)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_status_on_empty_lake_uses_env(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIQREPLAY_LAKE", str(tmp_path / "empty"))
    assert main(["data", "status"]) == 0
    assert "lake is empty" in capsys.readouterr().out


def test_cli_reports_bad_rows_per_file(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    x = _ohlc(4)
    x["high"] = [101.0, 50.0, 103.0, 104.0]       # row 1: high below low
    pq.write_table(pa.table({**x, "volume": [1.0] * 4}), d / "x.parquet")
    (d / "datasets.csv").write_text(HEADER + "x.parquet,ohlcv,binance,spot,X,1h,base,,4\n")
    assert main(["import", str(d), "--lake", str(tmp_path / "lake")]) == 0
    out = capsys.readouterr().out
    assert "x.parquet: 4 rows; 1 bad rows dropped" in out and "OHLC inconsistent: 1" in out
    assert "1 invalid dropped" in out and "3 written" in out


def test_progress_only_on_a_terminal(manifest_dir, tmp_path, capsys):
    import_dir(manifest_dir, Lake(tmp_path / "a"), progress=None)   # stderr is not a TTY here
    assert capsys.readouterr().err == ""
    import_dir(manifest_dir, Lake(tmp_path / "b"), progress=True)
    err = capsys.readouterr().err
    assert "reading" in err and "/6 " in err and "writing ohlcv" in err  # tqdm bars


def test_cli_help_texts_render(capsys):
    assert main(["data"]) == 2
    assert "status" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    assert "--lake" in capsys.readouterr().out
