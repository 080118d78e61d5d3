"""tardis.dev source (its datasets URL scheme, our retry helper) against a loopback datasets endpoint."""
from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from fetch.lake import Lake
from fetch.sources.ccxt_source import SourceError, utc
from fetch.sources.tardis import TardisSource, free_days_only

LIQ = ("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
       "ftx,BTC-PERP,1667865600100000,1667865600200000,1,sell,20000,0.5\n"
       "ftx,BTC-PERP,1667865660100000,1667865660200000,2,buy,20100,1.5\n"
       "ftx,BTC-PERP,garbage,1667865660200000,3,buy,20100,1.5\n")
T0 = 1667260800000000  # 2022-11-01 00:00 UTC in µs


def ticker_csv(n_min: int = 180) -> str:
    out = ["exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
           "predicted_funding_rate,open_interest,last_price,index_price,mark_price"]
    for i in range(n_min):
        t = T0 + i * 60_000_000
        ft = T0 + (i // 60 + 1) * 3_600_000_000
        out.append(f"ftx,BTC-PERP,{t},{t},{ft},{1e-5 * (i // 60 + 1)},,{1000 + i},"
                   f"{20000 + i},{19990 + i},{20005 + i}")
    return "\n".join(out) + "\n"


def test_key_needed_said_plainly_before_any_request(tardis_server, monkeypatch):
    monkeypatch.delenv("TARDIS_API_KEY", raising=False)
    src = TardisSource(api_url=tardis_server.url + "/v1")
    msg = r"needs an API key: set TARDIS_API_KEY.*first day of each month is free"
    with pytest.raises(SourceError, match=msg) as ei:
        src.fetch_liquidations("ftx", "BTC-PERP", utc("2022-11-07"), utc("2022-11-09"))
    assert not ei.value.temporary
    assert tardis_server.count() == 0
    assert [d.day for d in free_days_only(utc("2022-10-31"), utc("2022-11-03"))] == [31, 2]


def test_first_day_of_month_is_free(tardis_server, monkeypatch):
    monkeypatch.delenv("TARDIS_API_KEY", raising=False)
    tardis_server.put("ftx", "derivative_ticker", date(2022, 11, 1), "BTC-PERP", ticker_csv())
    src = TardisSource(api_url=tardis_server.url + "/v1")
    oi = src.fetch_open_interest("ftx", "BTC-PERP", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert tardis_server.auth_seen == [""]
    assert list(oi["oi_base"]) == [1000.0, 1060.0, 1120.0]  # first tick at/after each hour open
    assert oi["oi_usd"].iloc[0] == pytest.approx(1000 * 20005.0)
    assert set(oi["venue"]) == {"ftx"} and set(oi["market"]) == {"perp"}


def test_liquidations_with_key_env(tardis_server, monkeypatch, tmp_path):
    monkeypatch.setenv("TARDIS_API_KEY", "test-key")
    tardis_server.put("ftx", "liquidations", date(2022, 11, 8), "BTC-PERP", LIQ)
    src = TardisSource(api_url=tardis_server.url + "/v1")
    liq = src.fetch_liquidations("ftx", "BTC-PERP", utc("2022-11-08"), utc("2022-11-09"))
    assert tardis_server.auth_seen == ["Bearer test-key"]
    assert list(liq["side"]) == ["long", "short"]  # a sell order closes a long
    assert liq["notional_usd"].tolist() == pytest.approx([10000.0, 30150.0])
    assert liq["ts"].iloc[0] == pd.Timestamp("2022-11-08 00:00:00.1", tz="UTC")
    assert liq.attrs["bad_rows"] == 1  # the garbage timestamp
    res = Lake(tmp_path).write("liquidations", liq, source="tardis")
    assert res.rows_written == 2


def test_wrong_key_and_unknown_symbol_are_clear(tardis_server):
    src = TardisSource(api_url=tardis_server.url + "/v1", api_key="wrong")
    with pytest.raises(SourceError, match="HTTP 401.*TARDIS_API_KEY"):
        src.fetch_liquidations("ftx", "BTC-PERP", utc("2022-11-08"), utc("2022-11-09"))
    ok = TardisSource(api_url=tardis_server.url + "/v1", api_key="test-key")
    with pytest.raises(SourceError, match="no liquidations for ftx NOPE-PERP.*check the symbol"):
        ok.fetch_liquidations("ftx", "NOPE-PERP", utc("2022-11-08"), utc("2022-11-09"))


def test_funding_and_mark_bars_from_derivative_ticker(tardis_server):
    tardis_server.put("ftx", "derivative_ticker", date(2022, 11, 1), "BTC-PERP", ticker_csv())
    src = TardisSource(api_url=tardis_server.url + "/v1", api_key="")
    f = src.fetch_funding("ftx", "BTC-PERP", utc("2022-11-01"), utc("2022-11-02"))
    assert f["ts"].tolist() == [pd.Timestamp(f"2022-11-01 0{h}:00", tz="UTC") for h in (1, 2, 3)]
    assert f["rate"].tolist() == pytest.approx([1e-5, 2e-5, 3e-5])  # last rate before settlement
    assert (f["interval_hours"] == 1.0).all()
    bars = src.fetch_mark_ohlcv("ftx", "BTC-PERP", "1h", utc("2022-11-01"), utc("2022-11-02"))
    assert bars[["open", "high", "low", "close"]].iloc[0].tolist() == [20005.0, 20064.0, 20005.0, 20064.0]
    assert set(bars["price_type"]) == {"mark"}


# ------------------------------------------------------------------ issue 11 item 5: bounded offline
def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused, as offline
    return port


def test_unreachable_host_gives_up_after_a_few_logged_retries(monkeypatch, caplog):
    from fetch.sources import tardis as T

    sleeps: list[float] = []
    src = TardisSource(api_url=f"http://127.0.0.1:{_closed_port()}/v1", api_key="k", sleep=sleeps.append)
    with pytest.raises(SourceError, match=r"gave up after 4 attempts: cannot reach 127.0.0.1") as ei:
        src.fetch_liquidations("ftx", "BTC-PERP", utc("2022-11-08"), utc("2022-11-09"))
    assert ei.value.temporary
    assert sleeps == [1.0, 2.0, 4.0] and src.requests == 4
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 3  # one line per retry
    # the worst case (every attempt hits its connect timeout) stays within a minute
    assert T.DEFAULT_RETRY.attempts * src.timeout_s + T.DEFAULT_RETRY.deadline_s <= 60


def test_fetch_command_offline_exits_75_and_leaves_no_temp_folder(monkeypatch, tmp_path, capsys):
    import tempfile

    from backtest.console import main
    from fetch.sources import tardis as T

    monkeypatch.setenv("TARDIS_API_KEY", "k")
    monkeypatch.setattr(T.time, "sleep", lambda s: None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    code = main(["fetch", "BTC-PERP", "--source", "tardis", "--exchange", "ftx", "--dataset", "liquidations",
                 "--timerange", "20221101-20221102", "--api-url", f"http://127.0.0.1:{_closed_port()}/v1",
                 "--lake", str(tmp_path / "lake")])
    assert code == 75
    err = capsys.readouterr().err
    assert "temporary failure, retry later" in err and "gave up after 4 attempts" in err
    assert list((tmp_path / "tmp").iterdir()) == []
