"""Issue 11: bad inputs and faults of the data stage end in one line, the right exit status
and nothing half-written; a damaged lake never changes an answer silently."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.catalog import Catalog
from backtest.console import main
from fetch.lake import Lake, LakeDamaged
from fetch.lock import RunLock, lake_lock_path
from tests.fetch.test_local_import import HEADER, _ohlc  # noqa: F401 (shared builders)

REPO = Path(__file__).resolve().parents[2]


def _dir_with(tmp_path, files: dict[str, bytes | pa.Table], lines: list[str]) -> Path:
    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    for name, content in files.items():
        if isinstance(content, pa.Table):
            pq.write_table(content, d / name)
        else:
            (d / name).write_bytes(content)
    (d / "datasets.csv").write_text(HEADER + "\n".join(lines) + "\n")
    return d


def _good(n=48, start="2022-05-01"):
    return pa.table({**_ohlc(n, start=start), "volume": [1.0] * n})


def _one_line(capsys) -> str:
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith(("WARNING", "INFO"))]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def small_lake(tmp_path):
    """Two months of BTCUSDT 1h spot bars imported into a lake: (lake, source dir, the May file)."""
    d = _dir_with(tmp_path, {"b.parquet": _good(24 * 45, "2022-05-01")},
                  ["b.parquet,ohlcv,binance,spot,BTCUSDT,1h,base,,"])
    lake = tmp_path / "lake"
    assert main(["import", str(d), "--lake", str(lake), "--no-progress"]) == 0
    may = next(lake.glob("ohlcv/**/period=2022-05/data.parquet"))
    return Lake(lake), d, may


# ------------------------------------------------------------------ item 1: damaged lake files
def test_a_truncated_file_changes_the_snapshot_and_the_catalog_refuses_it(small_lake):
    lake, _, may = small_lake
    before = lake.snapshot_id()
    cat = Catalog(lake.root)
    assert len(cat.bars("binance", "spot", "BTCUSDT", "2022-05-02", "2022-05-03", timeframe="1h")) == 24
    os.truncate(may, 1000)
    assert Lake(lake.root).snapshot_id() != before
    with pytest.raises(LakeDamaged, match=r"period=2022-05/data.parquet is damaged .*data verify --repair"):
        Catalog(lake.root).bars("binance", "spot", "BTCUSDT", "2022-05-02", "2022-05-03", timeframe="1h")
    # June, not damaged, still reads (only the files of the window are checked)
    assert len(Catalog(lake.root).bars("binance", "spot", "BTCUSDT", "2022-06-02", "2022-06-03")) == 24


def test_same_size_corruption_is_found_too(small_lake):
    lake, _, may = small_lake
    data = bytearray(may.read_bytes())
    data[len(data) // 2] ^= 0xFF
    may.write_bytes(bytes(data))
    with pytest.raises(LakeDamaged, match="content differs"):
        Catalog(lake.root).bars("binance", "spot", "BTCUSDT", "2022-05-02", "2022-05-03", timeframe="1h")


def test_reimport_heals_a_damaged_file(small_lake):
    lake, src, may = small_lake
    before = lake.snapshot_id()
    os.truncate(may, 1000)
    assert main(["import", str(src), "--lake", str(lake.root), "--no-progress"]) == 0
    assert Lake(lake.root).snapshot_id() == before
    assert Lake(lake.root).verify() == []


def test_data_verify_finds_and_repair_drops_then_reimports(small_lake, capsys):
    lake, src, may = small_lake
    os.truncate(may, 1000)
    orphan = may.parent.parent / "period=2022-01" / "data.parquet"
    orphan.parent.mkdir()
    orphan.write_bytes(may.with_name("x").read_bytes() if may.with_name("x").exists() else b"PAR1")
    assert main(["data", "verify", "--lake", str(lake.root)]) == 1
    out = capsys.readouterr().out
    assert "size" in out and "period=2022-05" in out and "orphan" in out and "period=2022-01" in out
    assert main(["data", "verify", "--repair", "--lake", str(lake.root)]) == 0
    assert not may.exists() and not orphan.exists()
    assert Lake(lake.root).verify() == []
    # May is no longer complete: an import or refresh will write it again
    assert not any(a.month == 5 for a, _ in Lake(lake.root).complete(Lake(lake.root).series()[0]))
    assert main(["data", "verify", "--repair", "--source", str(src), "--lake", str(lake.root)]) == 0
    assert may.exists() and Lake(lake.root).verify() == []


# ------------------------------------------------------------------ items 6-8: bad import inputs
@pytest.mark.parametrize("name, content, line, expect", [
    ("t.csv", b"open_time,open,high,low,close,volume\n1651363200000,1,2,0.5,1.5,1\n16513",
     "t.csv,ohlcv,binance,spot,X,1h,base,,", "t.csv: cannot import it"),
    ("p.parquet", b"PAR1 this is not parquet",
     "p.parquet,ohlcv,binance,spot,X,1h,base,,", "p.parquet: cannot import it"),
    ("n.csv", b"open_time,open,high,low,close,volume\n1651363200000,abc,2,0.5,1.5,1\n",
     "n.csv,ohlcv,binance,spot,X,1h,base,,", "n.csv: cannot import it"),
    ("h.csv", b"open_time,open,high,low,close,volume\n",
     "h.csv,ohlcv,binance,spot,X,1h,base,,", "h.csv: holds no rows"),
    ("z.csv", b"", "z.csv,ohlcv,binance,spot,X,1h,base,,", "z.csv: cannot import it"),
    ("d.csv", b"ts,open,high,low,close,volume\n2022-13-45 00:00,1,2,0.5,1.5,1\n",
     "d.csv,ohlcv,binance,spot,X,1h,base,,", "d.csv: cannot import it"),
    ("binance/BTC_USDT-1h.json", b"[[1651363200000, 1, 2]", None, "BTC_USDT-1h.json: not valid JSON"),
])
def test_bad_data_files_are_one_line_exit_2_nothing_written(tmp_path, capsys, name, content, line, expect):
    d = tmp_path / "src"
    (d / Path(name).parent).mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(content)
    if line:
        (d / "datasets.csv").write_text(HEADER + line + "\n")
    lake = tmp_path / "lake"
    assert main(["import", str(d), "--lake", str(lake), "--no-progress"]) == 2
    assert expect in _one_line(capsys)
    assert not lake.exists()  # refused before writing: not even an empty lake folder


@pytest.mark.parametrize("manifest, expect", [
    (b"", "datasets.csv is empty"),
    (bytes(range(256)) * 4, "datasets.csv is not a readable CSV"),
    (HEADER.encode(), "datasets.csv lists no files"),
    ((HEADER + "g.parquet,ohlcv,binance,spot,G,1h,base,,many\n").encode(), "rows 'many' is not a whole number"),
])
def test_bad_datasets_csv_is_one_line(tmp_path, capsys, manifest, expect):
    d = _dir_with(tmp_path, {"g.parquet": _good()}, [])
    (d / "datasets.csv").write_bytes(manifest)
    assert main(["import", str(d), "--lake", str(tmp_path / "lake")]) == 2
    assert expect in _one_line(capsys)


def test_a_bad_line_after_good_ones_writes_nothing(tmp_path, capsys):
    d = _dir_with(tmp_path, {"g.parquet": _good(), "h.parquet": _good()},
                  ["g.parquet,ohlcv,binance,spot,G,1h,base,,", "h.parquet,ohlcv,binance,spot,H,7q,base,,"])
    lake = tmp_path / "lake"
    assert main(["import", str(d), "--lake", str(lake)]) == 2
    assert "line 3: timeframe '7q' is not a fixed interval" in _one_line(capsys)
    assert not lake.exists() or not list(lake.rglob("*.parquet"))


# ------------------------------------------------------------------ item 10: lake and out paths
def test_lake_that_is_a_file_is_refused_by_every_command(tmp_path, capsys):
    f = tmp_path / "lakefile"
    f.write_text("x")
    d = _dir_with(tmp_path, {"g.parquet": _good()}, ["g.parquet,ohlcv,binance,spot,G,1h,base,,"])
    for argv in (["data", "status"], ["import", str(d)], ["data", "verify"],
                 ["run", "--window", "2022-10"]):
        assert main([*argv, "--lake", str(f)]) == 2, argv
        assert "is a file, not a folder" in _one_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_import_into_a_read_only_lake_is_an_environment_fault(tmp_path, capsys):
    d = _dir_with(tmp_path, {"g.parquet": _good()}, ["g.parquet,ohlcv,binance,spot,G,1h,base,,"])
    lake = tmp_path / "ro"
    lake.mkdir()
    lake.chmod(0o555)
    try:
        assert main(["import", str(d), "--lake", str(lake)]) == 1
        assert "cannot write to the lake" in _one_line(capsys)
    finally:
        lake.chmod(0o755)


def test_import_into_a_lake_on_a_read_only_path_is_one_line(tmp_path, capsys):
    """Works as root too: the lake's parent is a file, so nothing can be created there."""
    d = _dir_with(tmp_path, {"g.parquet": _good()}, ["g.parquet,ohlcv,binance,spot,G,1h,base,,"])
    (tmp_path / "f").write_text("x")
    assert main(["import", str(d), "--lake", str(tmp_path / "f" / "lake")]) == 1
    assert "cannot write to the lake" in _one_line(capsys)


# ------------------------------------------------------------------ item 11: manifests of the wrong shape
@pytest.mark.parametrize("content", ["[1, 2, 3]", '{"key": 5}', '{"key": {"dataset": "ohlcv"}, "files": []}',
                                     '{"files": {"2022-05": 7}}', "not json at all",
                                     '{"key": {"dataset": "ohlcv", "venue": "binance", "market": "spot", '
                                     '"symbol": "BTCUSDT", "timeframe": "1h", "price_type": "trade"}, '
                                     '"files": {"20xx": {"rows": 1}}}'])
def test_bad_coverage_json_is_rebuilt_not_a_traceback(small_lake, capsys, content):
    lake, _, may = small_lake
    manifest = may.parent.parent / "_coverage.json"
    manifest.write_text(content)
    assert main(["data", "status", "--lake", str(lake.root), "--all"]) == 0
    assert "BTCUSDT" in capsys.readouterr().out
    assert json.loads(manifest.read_text())["files"]  # rebuilt from the files


# ------------------------------------------------------------------ item 12: one writer at a time
def test_import_takes_the_refresh_lock(small_lake, capsys):
    lake, src, _ = small_lake
    with RunLock(lake_lock_path(lake.root), "refresh"):
        assert main(["import", str(src), "--lake", str(lake.root)]) == 75
        assert f"another writer (pid {os.getpid()}) holds" in _one_line(capsys)
    assert main(["import", str(src), "--lake", str(lake.root), "--no-progress"]) == 0


def test_a_dead_holder_never_blocks(small_lake, tmp_path):
    lake, src, _ = small_lake
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from fetch.lock import RunLock
        RunLock({str(lake_lock_path(lake.root))!r}).acquire()
        os._exit(9)   # dies holding it
        """)], check=False)
    assert lake_lock_path(lake.root).exists()
    assert main(["import", str(src), "--lake", str(lake.root), "--no-progress"]) == 0


# ------------------------------------------------------------------ item 13: interrupted import
def test_interrupted_import_is_invisible_to_readers_and_said_by_the_next_command(tmp_path, capsys):
    d = _dir_with(tmp_path, {"g.parquet": _good(), "h.parquet": _good()},
                  ["g.parquet,ohlcv,binance,spot,GUSDT,1h,base,,", "h.parquet,ohlcv,binance,spot,HUSDT,1h,base,,"])
    lake = tmp_path / "lake"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import fetch.lake as L
        real = L.Lake._save_manifest
        def interrupt(self, key, manifest):
            if key.symbol == "HUSDT":
                raise KeyboardInterrupt   # Ctrl-C after HUSDT's data file, before its manifest
            return real(self, key, manifest)
        L.Lake._save_manifest = interrupt
        from backtest.console import main
        sys.exit(main(["import", {str(d)!r}, "--lake", {str(lake)!r}, "--no-progress"]))
        """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == 130, p.stderr
    assert list(lake.glob("ohlcv/**/symbol=HUSDT/**/data.parquet"))   # the file is there ...
    cat = Catalog(lake)
    assert cat.timeframes("binance", "spot", "HUSDT", "2022-05-01", "2022-05-03") == []  # ... but not read
    assert len(cat.bars("binance", "spot", "GUSDT", "2022-05-01", "2022-05-03")) == 48
    assert main(["data", "status", "--lake", str(lake), "--all"]) == 0
    err = capsys.readouterr().err
    assert "was interrupted" in err and f"liqreplay import {d}" in err
    assert main(["import", str(d), "--lake", str(lake), "--no-progress"]) == 0
    capsys.readouterr()
    assert Lake(lake).interrupted_import() is None
    assert len(Catalog(lake).bars("binance", "spot", "HUSDT", "2022-05-01", "2022-05-03")) == 48


# ------------------------------------------------------------------ items 15, 16: what users see
def test_data_status_default_view_is_per_window_and_fits_100_columns(small_lake, capsys):
    lake, _, _ = small_lake
    assert main(["data", "status", "--lake", str(lake.root)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(map(len, lines)) <= 100
    may = lines.index(next(x for x in lines if x.startswith("2022-05 ")))
    row = next(x for x in lines[may:] if x.startswith("  binance  BTC "))
    assert "binance spot BTCUSDT" in row and "1h" in row and "100.0%" in row and row.endswith("proxy")
    assert "MISSING: no usable bars for ETHUSDT" in out
    assert "fetch: liqreplay fetch ETHUSDT -t 1m --timerange 20220505-20220516" in out
    assert main(["data", "status", "--lake", str(lake.root), "--venue", "binance", "--symbol", "BTC"]) == 0
    out = capsys.readouterr().out
    assert "ETH" not in out.split("own:")[0] and " ftx " not in out
    assert main(["data", "status", "--all", "--lake", str(lake.root), "--symbol", "ETHUSDT"]) == 0
    assert "BTCUSDT" not in capsys.readouterr().out


def test_data_status_all_fits_100_columns_on_the_real_lake(imported_lake, capsys):
    lake, _ = imported_lake
    assert main(["data", "status", "--all", "--lake", str(lake.root)]) == 0
    assert max(map(len, capsys.readouterr().out.splitlines())) <= 100


def test_run_help_lists_the_window_ids(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for wid in ("2022-01", "2022-05", "2022-06", "2022-10", "2022-11", "2022-year"):
        assert wid in out


def test_fetch_takes_the_writer_lock_too(small_lake, capsys):
    lake, _, _ = small_lake
    with RunLock(lake_lock_path(lake.root), "import"):
        code = main(["fetch", "BTCUSDT", "--timerange", "20221101-20221102", "--api-url", "http://127.0.0.1:9",
                     "--lake", str(lake.root)])
    assert code == 75
    assert "another writer" in _one_line(capsys)


def test_nested_commands_are_named_in_the_error_line(tmp_path, capsys):
    assert main(["data", "verify", "--lake", str(tmp_path / "none")]) == 2
    assert _one_line(capsys).startswith("liqreplay data verify: no lake at")


def test_max_bad_must_be_a_fraction(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["import", str(tmp_path), "--max-bad", "1.5"])
    assert exc.value.code == 2 and "is not a fraction in [0, 1]" in _one_line(capsys)
