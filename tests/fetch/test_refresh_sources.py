"""Refresh jobs over the archive sources (lag, REST tail, checksum), tardis jobs, and `liqreplay fetch`."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pandas as pd
import pyarrow.parquet as pq

from backtest.console import main as liqreplay
from fetch.lake import Lake, SeriesKey
from fetch.refresh import EXIT_OK, EXIT_PERSON, EXIT_TEMPFAIL, Fetchers, run
from fetch.sources.ccxt_source import RetryPolicy
from tests.fetch.jobs import write_job

FAST = RetryPolicy(attempts=2, base_s=0.01, cap_s=0.02)
UTC = timezone.utc
KEY = SeriesKey("ohlcv", "binance", "perp", "BTCUSDT", "1m", "trade")


def fx(now=None) -> Fetchers:
    return Fetchers(retry=FAST, sleep=lambda s: None, rate_limit_ms=1, now=now)


def rows(root, key=KEY) -> pd.DataFrame:
    return pd.concat([pq.read_table(f).to_pandas() for f in Lake(root).series_files(key)],
                     ignore_index=True)


def vision_job(tmp_path, url, *, extra="", start="2022-11-01"):
    return write_job(tmp_path / "v.toml", name="arch", source="binance_vision", dataset="ohlcv", symbols=["BTCUSDT"],
                     timeframes=["1m"], start=start, api_url=url, extra=extra)


def test_archive_daily_lag_respected(vision, book, tmp_path):
    vision.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 5))
    cfg = vision_job(tmp_path, vision.url)
    lake = tmp_path / "lake"
    early = datetime(2022, 11, 5, 7, 0, tzinfo=UTC)  # day 4's file counts as published at 08:00 on day 5
    assert run(cfg, str(lake), now=early, fetchers=fx(early)) == EXIT_OK
    assert len(rows(lake)) == 3 * 1440
    assert not any("2022-11-04" in r.path for r in vision.log)
    later = datetime(2022, 11, 5, 9, 0, tzinfo=UTC)
    vision.reset_log()
    assert run(cfg, str(lake), now=later, fetchers=fx(later)) == EXIT_OK
    zips = [r.path for r in vision.log if r.path.endswith(".zip")]
    assert zips == ["/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2022-11-04.zip"]
    assert len(rows(lake)) == 4 * 1440


def test_archive_first_then_rest_for_the_tail(vision, fapi, book, tmp_path):
    vision.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 3))  # 4th not yet
    cfg = vision_job(tmp_path, vision.url, extra=f'tail = "ccxt"\ntail_api_url = "{fapi.url}"\n')
    now = datetime(2022, 11, 5, 9, 0, tzinfo=UTC)
    lake = tmp_path / "lake"
    assert run(cfg, str(lake), now=now, fetchers=fx(now)) == EXIT_OK
    df = rows(lake)
    assert len(df) == 4 * 1440 and df["ts"].is_unique
    kl = [r for r in fapi.log if r.path == "/fapi/v1/klines"]
    assert kl and all(int(r.query["startTime"]) >= int(pd.Timestamp("2022-11-04", tz="UTC").value // 10**6)
                      for r in kl)  # REST only for the day the archive lacks


def test_archive_not_published_yet_is_temporary_old_gap_needs_a_person(vision, book, tmp_path):
    vision.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 3))
    cfg = vision_job(tmp_path, vision.url)
    now = datetime(2022, 11, 5, 9, 0, tzinfo=UTC)
    lake = tmp_path / "lake"
    assert run(cfg, str(lake), now=now, fetchers=fx(now)) == EXIT_TEMPFAIL
    assert Lake(lake).complete(KEY) == [(datetime(2022, 11, 1, tzinfo=UTC), datetime(2022, 11, 4, tzinfo=UTC))]
    s = json.loads((lake / "_refresh" / "summary.json").read_text())
    assert "not in the archive yet: 2022-11-04" in s["tasks"][0]["error"]
    much_later = datetime(2022, 11, 20, 9, 0, tzinfo=UTC)
    assert run(cfg, str(lake), now=much_later, fetchers=fx(much_later)) == EXIT_PERSON
    s = json.loads((lake / "_refresh" / "summary.json").read_text())
    assert "archive has no file for BTCUSDT 2022-11-04" in s["tasks"][0]["error"]


def test_bad_checksum_refused_nothing_written(vision, book, tmp_path):
    rels = vision.add_klines(book, "BTCUSDT", "1m", date(2022, 11, 1), date(2022, 11, 2))
    vision.corrupt(rels[1])
    cfg = vision_job(tmp_path, vision.url, extra='end = "2022-11-03"\n')
    lake = tmp_path / "lake"
    now = datetime(2022, 11, 10, tzinfo=UTC)
    assert run(cfg, str(lake), now=now, fetchers=fx(now)) == EXIT_TEMPFAIL
    assert len(rows(lake)) == 1440  # day 1 only; the corrupt day refused
    assert Lake(lake).missing("ohlcv", KEY, datetime(2022, 11, 1, tzinfo=UTC), datetime(2022, 11, 3, tzinfo=UTC)) == [
        (datetime(2022, 11, 2, tzinfo=UTC), datetime(2022, 11, 3, tzinfo=UTC))]


def test_tardis_job_skipped_without_key_and_run_with_one(tardis_server, tmp_path, monkeypatch):
    tardis_server.put("ftx", "liquidations", date(2022, 11, 8), "BTC-PERP",
                      "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
                      "ftx,BTC-PERP,1667865600100000,1667865600200000,1,sell,20000,0.5\n")
    cfg = write_job(tmp_path / "t.toml", source="tardis", exchange="ftx", dataset="liquidations", symbols=["BTC-PERP"],
                    start="2022-11-08", end="2022-11-09", api_url=f"{tardis_server.url}/v1",
                    requires_env="TARDIS_API_KEY")
    lake = tmp_path / "lake"
    monkeypatch.delenv("TARDIS_API_KEY", raising=False)
    assert run(cfg, str(lake), fetchers=fx()) == EXIT_OK
    assert tardis_server.count() == 0
    assert json.loads((lake / "_refresh" / "summary.json").read_text())["tasks"][0]["status"] == "skipped"
    monkeypatch.setenv("TARDIS_API_KEY", "test-key")
    assert run(cfg, str(lake), fetchers=fx()) == EXIT_OK
    key = SeriesKey("liquidations", "ftx", "perp", "BTC-PERP", "", "")
    df = rows(lake, key)
    assert len(df) == 1 and df["side"].iloc[0] == "long"


def test_fetch_cli_timerange_fetches_exactly_the_missing_partitions(fapi, tmp_path, capsys):
    lake = str(tmp_path / "lake")
    assert liqreplay(["fetch", "BTCUSDT", "--timerange", "20221102-20221103", "--api-url", fapi.url,
                      "--lake", lake], stages=("fetch.cli",)) == 0
    fapi.reset_log()
    assert liqreplay(["fetch", "BTCUSDT", "--timerange", "20221101-20221105", "--api-url", fapi.url,
                      "--lake", lake], stages=("fetch.cli",)) == 0
    days = {pd.Timestamp(int(r.query["startTime"]), unit="ms").day for r in fapi.log
            if r.path == "/fapi/v1/klines"}
    assert days == {1, 3, 4}  # the 2nd was there already
    assert len(rows(tmp_path / "lake")) == 4 * 1440
    fapi.reset_log()
    assert liqreplay(["fetch", "BTCUSDT", "--timerange", "20221101-20221105", "--api-url", fapi.url,
                      "--lake", lake], stages=("fetch.cli",)) == 0
    assert fapi.count("/fapi/v1/klines") == 0
    assert "already complete" in capsys.readouterr().out
    assert liqreplay(["fetch", "BTCUSDT", "--timerange", "20221102-20221103", "--api-url", fapi.url,
                      "--lake", lake, "--force"], stages=("fetch.cli",)) == 0
    assert fapi.count("/fapi/v1/klines") == 2


def test_fetch_cli_user_errors_are_one_clear_line(fapi, tmp_path, capsys):
    lake = str(tmp_path / "lake")
    assert liqreplay(["fetch", "BTCUSDT", "--timerange", "2022-11", "--lake", lake],
                     stages=("fetch.cli",)) == 2
    assert "use YYYYMMDD-YYYYMMDD" in capsys.readouterr().err
    assert liqreplay(["fetch", "NOPEUSDT", "--timerange", "20221101-20221102", "--api-url",
                      fapi.url, "--lake", lake], stages=("fetch.cli",)) == 2
    assert "unknown symbol 'NOPEUSDT'" in capsys.readouterr().err.splitlines()[-1]


def test_rest_open_interest_older_than_a_month_is_not_marked_complete(tmp_path):
    """Binance's openInterestHist is empty beyond ~30 days: say so, do not mark it complete."""
    from tests.fetch.servers.fapi import BarBook, FapiServer

    with FapiServer(BarBook().add_synthetic("BTCUSDT", "2022-11-01", "2022-11-03")) as srv:
        cfg = write_job(tmp_path / "oi.toml", source="ccxt", dataset="open_interest", symbols=["BTCUSDT"],
                        timeframes=["5m"], start="2022-10-01", end="2022-10-02", api_url=srv.url)
        lake = tmp_path / "lake"
        assert run(cfg, str(lake), fetchers=fx()) == EXIT_PERSON
        s = json.loads((lake / "_refresh" / "summary.json").read_text())
        assert "binance_vision" in s["tasks"][0]["error"]
        key = SeriesKey("open_interest", "binance", "perp", "BTCUSDT", "5m", "")
        assert Lake(lake).complete(key) == []
        cfg.write_text(cfg.read_text().replace("2022-10-01", "2022-11-01").replace("2022-10-02", "2022-11-02"))
        now = datetime(2022, 11, 20, tzinfo=UTC)
        assert run(cfg, str(lake), now=now, fetchers=fx(now)) == EXIT_OK
        assert len(rows(lake, key)) == 288
