"""backtest.api.run_windows: the run as a library a notebook can call."""
from __future__ import annotations

import pandas as pd
import pytest

import backtest.api as api
from fetch.errors import UserError


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


def test_daily_frames_of_the_replay_are_kept(small_lake, tmp_path):
    """run_series' 4th element `daily`: in results (daily.parquet), in the resume parts, and in
    each sweep sample's daily partition (written by the worker, not sent through the scheduler)."""
    out = tmp_path / "r"
    res = api.run_windows(["2022-10"], lake=small_lake, accounts=200, markets=["BTC"], out=out)
    parts = pd.read_parquet(out / ".parts" / "2022-10.daily.parquet")
    assert sorted(set(parts["venue"])) == ["binance", "ftx"]
    pd.testing.assert_frame_equal(res.daily.reset_index(drop=True), parts.reset_index(drop=True),
                                  check_dtype=False)

    from backtest.sweep import run_sweep
    sw = run_sweep(["2022-10"], lake=small_lake, out=tmp_path / "s", samples=2, accounts=100, markets=["BTC"],
                   workers=0, search=False)
    files = sorted((tmp_path / "s").glob(".sweep/*/daily/sample-*.parquet"))
    assert len(files) == 2
    d = pd.read_parquet(files[1])
    assert set(d["sample"]) == {1} and sorted(set(d["venue"])) == ["binance", "ftx"]
    assert sw.meta["daily_dir"]


def test_windows_in_parallel_processes_give_the_sequential_results(small_lake, tmp_path):
    """--workers: windows replayed in a pool of processes (the second job running its venues in
    reverse order) come back in the canonical order with the sequential run's figures bit for
    bit, one progress event per series, and resume parts for each window."""
    kw = dict(lake=small_lake, seed=5, accounts=300, markets=["BTC"])
    wins = ["2022-10", "2022-11", "2022-06"]
    seq = api.run_windows(wins, workers=1, **kw)
    events = []
    par = api.run_windows(wins, workers=2, out=tmp_path / "par", on_progress=events.append, **kw)
    key = ["window", "venue", "market"]
    assert par.rows[key].values.tolist() == seq.rows[key].values.tolist()
    num = [c for c in seq.rows.columns if pd.api.types.is_float_dtype(seq.rows[c])]
    pd.testing.assert_frame_equal(par.rows[num].reset_index(drop=True), seq.rows[num].reset_index(drop=True),
                                  check_exact=True)
    assert len(par.events) == len(seq.events) and par.events["notional_usd"].sum() > 0
    pd.testing.assert_frame_equal(par.events.reset_index(drop=True), seq.events.reset_index(drop=True),
                                  check_exact=True)
    series = [e for e in events if e["kind"] == "series"]
    assert [e["done"] for e in series] == list(range(1, 7)) and {e["total"] for e in series} == {6}
    assert sorted((e["window"], e["venue"]) for e in series) == sorted((w, v) for w in wins for v in ("binance", "ftx"))
    assert sorted(p.name for p in (tmp_path / "par" / ".parts").glob("*.json")) == sorted(f"{w}.json" for w in wins)


def test_one_window_series_in_threads_give_the_sequential_results(small_lake, monkeypatch):
    """--workers with one window: its series replay in threads (nogil kernels); rows, events and
    daily frames are the sequential run's bit for bit, one progress event per series."""
    kw = dict(lake=small_lake, seed=7, accounts=300, markets=["BTC"])     # (the small lake: BTC only)
    seq = api.run_windows(["2022-11"], workers=1, **kw)
    events, pools = [], []

    class Spy(api.ThreadPoolExecutor):
        def __init__(self, max_workers):
            pools.append(max_workers)
            super().__init__(max_workers=max_workers)
    monkeypatch.setattr(api, "ThreadPoolExecutor", Spy)
    monkeypatch.setattr(api.warmup, "kernel_cached", lambda venue: True)   # (threads wait while a cache is cold)
    thr = api.run_windows(["2022-11"], workers=3, on_progress=events.append, **kw)
    assert pools == [2]
    assert sorted(seq.rows["venue"]) == ["binance", "ftx"]
    pd.testing.assert_frame_equal(thr.rows.reset_index(drop=True), seq.rows.reset_index(drop=True), check_exact=True)
    assert len(thr.events) == len(seq.events) and thr.events["notional_usd"].sum() > 0
    pd.testing.assert_frame_equal(thr.events.reset_index(drop=True), seq.events.reset_index(drop=True),
                                  check_exact=True)
    pd.testing.assert_frame_equal(thr.daily.reset_index(drop=True), seq.daily.reset_index(drop=True),
                                  check_exact=True)
    series = [e for e in events if e["kind"] == "series"]
    assert [e["done"] for e in series] == [1, 2] and {e["status"] for e in series} == {"ran"}


def test_workers_resolution():
    assert api.resolve_workers(None, 1) == 1
    assert api.resolve_workers(3, 2) == 2
    assert api.resolve_workers(1, 6) == 1
    assert 1 <= api.resolve_workers(None, 6) <= api.MAX_AUTO_WORKERS
    assert api.resolve_threads(3, 1, 4) == 3 and api.resolve_threads(8, 1, 4) == 4
    assert api.resolve_threads(3, 2, 4) == 1 and api.resolve_threads(None, 1, 1) == 1
    assert 1 <= api.resolve_threads(None, 1, 4) <= api.MAX_AUTO_WORKERS


def test_one_thread_while_kernels_compile(monkeypatch):
    monkeypatch.setattr(api.warmup, "kernel_cached", lambda venue: venue == "binance")
    assert api.series_threads(2, 1, ["binance", "ftx"], ["BTC", "ETH"]) == 1
    assert api.series_threads(2, 1, ["binance"], ["BTC", "ETH"]) == 2
    monkeypatch.setattr(api.warmup, "kernel_cached", lambda venue: True)
    assert api.series_threads(2, 1, ["binance", "ftx"], ["BTC", "ETH"]) == 2
    with pytest.raises(UserError, match="--workers"):
        api.run_windows(["2022-10"], lake="nowhere", workers=0)
