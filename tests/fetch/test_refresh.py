"""The nightly refresh against the loopback Binance server: fill, idempotency, resume, lock, exit codes.

"Done when" of issue 2: a refresh fills a multi-day 1-minute range, a second refresh fetches
nothing, and a run killed halfway resumes cleanly.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fetch.lake import Lake, SeriesKey
from fetch.refresh import EXIT_OK, EXIT_PERSON, EXIT_TEMPFAIL, Fetchers, RunLock, load_config, run
from fetch.sources.ccxt_source import RetryPolicy
from tests.fetch.jobs import write_job
from tests.fetch.servers.fapi import BarBook, FapiServer

REPO = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.02)
KEY = SeriesKey("ohlcv", "binance", "perp", "BTCUSDT", "1m", "trade")


def config(tmp_path: Path, url: str, *, start="2022-11-01", end="2022-11-05", symbols=("BTCUSDT",),
           extra: str = "") -> Path:
    return write_job(tmp_path / "refresh.toml", name="btc-1m", source="ccxt", exchange="binanceusdm", dataset="ohlcv",
                     symbols=list(symbols), timeframes=["1m"], start=start, end=end, api_url=url, extra=extra)


def fx(sleeps=None) -> Fetchers:
    return Fetchers(retry=FAST, sleep=sleeps if sleeps is not None else (lambda s: None),
                    rate_limit_ms=1)


def lake_rows(root: Path, key: SeriesKey = KEY) -> pd.DataFrame:
    files = Lake(root).series_files(key)
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def lake_state(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every lake file (the refresh's own state folder excluded)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "_refresh" not in p.parts:
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                             p.stat().st_mtime_ns)
    return out


def test_fills_multi_day_1m_then_second_run_fetches_nothing(fapi, book, tmp_path, capsys):
    cfg = config(tmp_path, fapi.url, start="2022-11-01", end="2022-11-05")
    lake = tmp_path / "lake"
    assert run(cfg, str(lake), fetchers=fx()) == EXIT_OK
    df = lake_rows(lake)
    assert len(df) == 4 * 1440 and df["ts"].is_unique and df["ts"].is_monotonic_increasing
    b = book.bars["BTCUSDT"]
    i0 = int(np.searchsorted(b["t"], int(pd.Timestamp("2022-11-01", tz="UTC").value // 10**6)))
    np.testing.assert_allclose(df["close"].to_numpy(), b["c"][i0:i0 + 4 * 1440])
    assert Lake(lake).missing("ohlcv", KEY, datetime(2022, 11, 1, tzinfo=timezone.utc),
                              datetime(2022, 11, 5, tzinfo=timezone.utc)) == []
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("refresh: ok: 1 series, 4 chunks fetched, 5760 rows")
    summary = json.loads((lake / "_refresh" / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["rows_written"] == 5760
    assert summary["tasks"][0]["chunks_done"] == 4

    before, n_requests = lake_state(lake), fapi.count()
    assert run(cfg, str(lake), fetchers=fx()) == EXIT_OK
    assert fapi.count() == n_requests  # not one request, not even exchangeInfo
    assert lake_state(lake) == before  # bytes and mtimes untouched
    summary = json.loads((lake / "_refresh" / "summary.json").read_text())
    assert summary["chunks_fetched"] == 0 and summary["requests"] == 0
    assert summary["tasks"][0]["status"] == "up_to_date"


def test_real_btcusdt_week_fills_with_real_values(shared_data, tmp_path):
    real = pd.read_parquet(shared_data / "binance_spot_1m_nl2992" / "binance_spot_BTCUSDT_1m_ftx_2022.parquet")
    with FapiServer(BarBook.from_shared(shared_data)) as srv:
        cfg = config(tmp_path, srv.url, start="2022-11-06", end="2022-11-13")
        assert run(cfg, str(tmp_path / "lake"), fetchers=fx()) == EXIT_OK
        n = srv.count()
        assert run(cfg, str(tmp_path / "lake"), fetchers=fx()) == EXIT_OK
        assert srv.count() == n
    df = lake_rows(tmp_path / "lake")
    want = real[(real["ts"] >= "2022-11-06") & (real["ts"] < "2022-11-13")].reset_index(drop=True)
    assert len(df) == len(want) == 7 * 1440
    np.testing.assert_allclose(df["close"].to_numpy(), want["close"].to_numpy())
    np.testing.assert_allclose(df["volume_quote"].to_numpy(), want["quote_volume"].to_numpy())


def _subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".unconfirmed"))]


def test_run_killed_with_sigkill_halfway_resumes_cleanly(fapi, tmp_path):
    """SIGKILL while a request hangs (after two whole days were written): the rerun takes over
    the stale lock, fetches only the rest, and the lake ends complete without duplicates."""
    cfg = config(tmp_path, fapi.url, start="2022-11-01", end="2022-11-07")
    lake = tmp_path / "lake"
    fapi.inject("/fapi/v1/klines", "hang", after=5, hang_s=30)  # 2 pages per day: in day 3
    proc = subprocess.Popen([sys.executable, "-m", "fetch", "refresh", "--config", str(cfg),
                             "--lake", str(lake)], cwd=REPO, env=_subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while fapi.hangs_started == 0 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert fapi.hangs_started == 1, proc.communicate()[1][-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (lake / "_refresh" / "refresh.lock").exists()  # left behind by the dead run
    done = Lake(lake).complete(KEY)
    assert done == [(datetime(2022, 11, 1, tzinfo=timezone.utc), datetime(2022, 11, 3, tzinfo=timezone.utc))]
    assert len(lake_rows(lake)) == 2 * 1440

    fapi.reset_log()
    assert run(cfg, str(lake), fetchers=fx()) == EXIT_OK
    starts = sorted(int(r.query["startTime"]) for r in fapi.log if r.path == "/fapi/v1/klines")
    assert min(starts) == int(pd.Timestamp("2022-11-03", tz="UTC").value // 10**6)  # resumed
    df = lake_rows(lake)
    assert len(df) == 6 * 1440 and df["ts"].is_unique and df["ts"].is_monotonic_increasing
    assert _no_temp_files(lake)
    assert not (lake / "_refresh" / "refresh.lock").exists()


def test_run_killed_mid_write_leaves_no_corrupt_file_and_resumes(fapi, tmp_path):
    """The process dies after writing a temp parquet file and before renaming it into place."""
    cfg = config(tmp_path, fapi.url, start="2022-11-01", end="2022-11-05")
    lake = tmp_path / "lake"
    script = textwrap.dedent("""
        import os, sys
        real_replace = os.replace
        calls = [0]
        def dying_replace(src, dst, *a, **k):
            if str(dst).endswith(".parquet"):
                calls[0] += 1
                if calls[0] == 3:
                    os._exit(137)  # as if killed: temp file written, never renamed
            return real_replace(src, dst, *a, **k)
        os.replace = dying_replace
        from fetch.refresh import run
        sys.exit(run(sys.argv[1], sys.argv[2]))
        """)
    p = subprocess.run([sys.executable, "-c", script, str(cfg), str(lake)], cwd=REPO,
                       env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 137, p.stderr[-2000:]
    leftovers = [x for x in lake.rglob("*.tmp")]
    assert leftovers  # the half-done write is visible as a temp file only
    for f in Lake(lake).series_files(KEY):
        pq.read_table(f)  # every data file in place is whole and readable
    assert len(Lake(lake).complete(KEY)) == 1  # days 1-2 complete, day 3 not marked

    assert run(cfg, str(lake), fetchers=fx()) == EXIT_OK
    df = lake_rows(lake)
    assert len(df) == 4 * 1440 and df["ts"].is_unique
    assert _no_temp_files(lake)


def test_lock_contention_second_run_exits_clearly(fapi, tmp_path, capsys):
    """A live holder of the OS lock (flock) makes a second run exit 75 without a request;
    once the holder is dead, its lock is gone with it (no stale lock to take over)."""
    cfg = config(tmp_path, fapi.url)
    lake = tmp_path / "lake"
    lock = lake / "_refresh" / "refresh.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from fetch.lock import RunLock
        RunLock({str(lock)!r}, "refresh").acquire()
        print("held", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run(cfg, str(lake), fetchers=fx()) == EXIT_TEMPFAIL
        err = capsys.readouterr().err
        assert f"another writer (pid {holder.pid}) holds" in err
        assert fapi.count() == 0 and lock.read_text().split()[0] == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: the kernel released its lock
    assert run(cfg, str(lake), fetchers=fx()) == EXIT_OK
    assert not (lake / "_refresh" / "refresh.lock").exists()


def test_runlock_is_exclusive_in_process(tmp_path):
    a = RunLock(tmp_path / "x.lock").acquire()
    with pytest.raises(Exception, match="holds"):
        RunLock(tmp_path / "x.lock").acquire()
    a.release()
    RunLock(tmp_path / "x.lock").acquire().release()


def test_exit_codes_temporary_vs_needs_a_person(fapi, tmp_path, sleeps, capsys):
    fapi.inject("/fapi/v1/klines", "503", times=1000)
    cfg = config(tmp_path, fapi.url, start="2022-11-01", end="2022-11-02")
    assert run(cfg, str(tmp_path / "l1"), fetchers=fx(sleeps)) == EXIT_TEMPFAIL
    assert sleeps == [0.01, 0.02]  # retried with backoff, then surfaced
    s = json.loads((tmp_path / "l1" / "_refresh" / "summary.json").read_text())
    assert s["status"] == "temporary failure: retry later"
    assert "gave up after 3 attempts" in s["tasks"][0]["error"]
    fapi.faults.clear()

    cfg = config(tmp_path, fapi.url, start="2022-11-01", end="2022-11-02", symbols=("BTCUSDT", "NOPEUSDT"))
    assert run(cfg, str(tmp_path / "l2"), fetchers=fx()) == EXIT_PERSON
    err = capsys.readouterr().err
    assert "unknown symbol 'NOPEUSDT'" in err
    assert len(lake_rows(tmp_path / "l2")) == 1440  # the good symbol still filled

    bad = write_job(tmp_path / "bad.toml", source="ccxt", dataset="ohlcv", symbols=["BTCUSDT"], start="2022-11-01",
                    colour="red")
    assert run(bad, str(tmp_path / "l3")) == EXIT_PERSON
    assert "unknown key(s) ['colour']" in capsys.readouterr().err


def test_publication_lag_and_open_end(fapi, tmp_path):
    cfg = write_job(tmp_path / "c.toml", source="ccxt", dataset="ohlcv", symbols=["BTCUSDT"], timeframes=["1m"],
                    start="2022-11-04", api_url=fapi.url)
    lake = tmp_path / "lake"
    now = datetime(2022, 11, 5, 12, 0, 30, tzinfo=timezone.utc)
    assert run(cfg, str(lake), now=now, fetchers=fx()) == EXIT_OK
    df = lake_rows(lake)
    # default lag 2 minutes: the last bar fetched opens 11:57 (closed 11:58 <= now - 2m)
    assert df["ts"].iloc[-1] == pd.Timestamp("2022-11-05 11:57", tz="UTC")
    assert len(df) == 1440 + 11 * 60 + 58
    fapi.reset_log()
    later = datetime(2022, 11, 5, 13, 0, 30, tzinfo=timezone.utc)
    assert run(cfg, str(lake), now=later, fetchers=fx()) == EXIT_OK
    kl = [r for r in fapi.log if r.path == "/fapi/v1/klines"]
    assert len(kl) == 1 and int(kl[0].query["startTime"]) == int(
        pd.Timestamp("2022-11-05 11:58", tz="UTC").value // 10**6)
    assert len(lake_rows(lake)) == 1440 + 12 * 60 + 58


def test_progress_only_on_a_terminal(fapi, tmp_path, capsys):
    assert run(config(tmp_path, fapi.url), str(tmp_path / "lake"), fetchers=fx()) == EXIT_OK
    assert "\r" not in capsys.readouterr().err


def test_example_and_demo_configs_parse():
    ex = load_config(REPO / "fetch" / "refresh.example.toml")
    demo = load_config(REPO / "fetch" / "demo_refresh.toml")
    assert ex.jobs and demo.jobs
    assert {j.source for j in demo.jobs} >= {"binance_vision", "tardis"}


def test_progress_line_drawn_on_a_terminal_only():
    """The shared tqdm helper (fetch/progress.py) draws on a terminal and stays silent on a pipe."""
    import io

    from fetch.progress import progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = progress_bar(total=2, desc="fetching", unit="chunk", file=stream, mininterval=0)
        p.set_postfix_str("BTCUSDT ohlcv 1m trade 2022-11-01")
        p.update()
        p.set_postfix_str("BTCUSDT ohlcv 1m trade 2022-11-02")
        p.update()
        p.close()
    assert "\r" in tty.getvalue() and "2/2" in tty.getvalue() and "2022-11-02" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_source_down_spares_the_other_series(fapi, tmp_path, sleeps, capsys):
    fapi.inject("/fapi/v1/klines", "503", times=1000)
    cfg = config(tmp_path, fapi.url, start="2022-11-01", end="2022-11-02",
                 symbols=("BTCUSDT", "ETHUSDT"))
    assert run(cfg, str(tmp_path / "lake"), fetchers=fx(sleeps)) == EXIT_TEMPFAIL
    assert fapi.count("/fapi/v1/klines") == 3  # BTCUSDT's three attempts; ETHUSDT not tried
    assert "1 more series not tried" in capsys.readouterr().err


def test_mostly_bad_data_refused_needs_a_person(fapi, tmp_path, capsys):
    fapi.inject("/fapi/v1/klines", "malformed_all", times=1)
    cfg = config(tmp_path, fapi.url, start="2022-11-01", end="2022-11-02")
    lake = tmp_path / "lake"
    assert run(cfg, str(lake), fetchers=fx()) == EXIT_PERSON
    assert "ValidationError" in capsys.readouterr().err
    assert Lake(lake).series_files(KEY) == [] and Lake(lake).complete(KEY) == []
    assert run(cfg, str(lake), fetchers=fx()) == EXIT_OK  # the source is fine again
    assert len(lake_rows(lake)) == 1440
