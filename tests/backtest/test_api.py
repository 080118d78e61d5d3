"""backtest.api.run_windows: the run as a library a notebook can call."""
from __future__ import annotations

import pandas as pd
import pytest

import backtest.api as api
from backtest.console import UserError


def test_run_windows_in_memory_with_progress(small_lake):
    events = []
    res = api.run_windows(["2022-10", "2022-10"], lake=small_lake, seed=3, accounts=200, venues=["binance"],
                          markets=["btc"], on_progress=events.append)
    assert len(res.rows) == 1 and res.rows.iloc[0]["window"] == "2022-10"
    assert res.summary["seed"] == 3 and res.summary["n_accounts"] == 200
    series = [e for e in events if e["kind"] == "series"]
    assert [(e["done"], e["total"], e["status"]) for e in series] == [(1, 1, "ran")]
    assert [e["kind"] for e in events] == ["series", "window"]


def test_run_windows_rejects_unknowns_in_one_line(small_lake):
    with pytest.raises(UserError, match="unknown market 'DOGE'"):
        api.run_windows(["2022-10"], lake=small_lake, markets=["DOGE"])
    with pytest.raises(UserError, match="unknown venue"):
        api.run_windows(["2022-10"], lake=small_lake, venues=["kraken"])
    with pytest.raises(UserError, match="unknown window"):
        api.run_windows(["1999-01"], lake=small_lake)


def test_daily_frames_of_the_replay_are_kept(small_lake, tmp_path, monkeypatch):
    """run_series gains a 4th element `daily` (the kernels' change): collected, kept in the
    resume parts, and in each sweep sample's daily partition."""
    real = api.run_series

    def with_daily(sd, *a, **kw):
        row, se, ev = real(sd, *a, **kw)
        daily = pd.DataFrame({"window": [sd.window.id], "venue": [sd.venue], "market": [sd.coin],
                              "date": [sd.window.start.floor("D")], "side": ["long"],
                              "liquidated_usd": [row["liquidated_usd"]], "reported_usd": [0.0], "oi_usd": [1.0]})
        return row, se, ev, daily

    monkeypatch.setattr(api, "run_series", with_daily)
    out = tmp_path / "r"
    api.run_windows(["2022-10"], lake=small_lake, accounts=200, markets=["BTC"], out=out)
    daily = pd.read_parquet(out / ".parts" / "2022-10.daily.parquet")
    assert sorted(daily["venue"]) == ["binance", "ftx"]

    from backtest.sweep import run_sweep
    res = run_sweep(["2022-10"], lake=small_lake, out=tmp_path / "s", samples=2, accounts=100, markets=["BTC"],
                    workers=0, search=False)
    parts = sorted((tmp_path / "s").glob(".sweep/*/daily/sample-*.parquet"))
    assert len(parts) == 2
    d = pd.read_parquet(parts[1])
    assert set(d["sample"]) == {1} and len(d) == 2
    assert res.meta["daily_dir"]
