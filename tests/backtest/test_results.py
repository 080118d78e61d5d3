"""Results on disk (Contract 3): round trip, per-$1B figures, cross-venue ratios."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from backtest.results import MONEY_FIELDS, add_per_1b, cross_venue, load_results, write_results


def row(venue, window="2022-10", house=1e6, oi=2e9):
    r = {"window": window, "venue": venue, "market": "BTC", "symbol": "X", "open_interest_usd": oi,
         "oi_source": "test", "timeframe": "1h", "price_source": "own"}
    for k in MONEY_FIELDS:
        r[k] = 0.0
    r.update(house_loss_usd=house, liquidated_usd=10 * house, reported_liquidated_usd=5 * house, user_loss_usd=house)
    return r


def test_round_trip(tmp_path):
    rows = [row("ftx", house=3e6, oi=1e9), row("binance", house=1e6, oi=4e9)]
    ts = pd.date_range("2022-10-24", periods=3, freq="1h", tz="UTC")
    series = pd.DataFrame({"window": "2022-10", "venue": "ftx", "market": "BTC", "ts": ts, "price": [1.0, 2.0, 3.0]})
    events = pd.DataFrame({"window": ["2022-10"], "venue": ["ftx"], "market": ["BTC"], "ts": ts[:1], "account": [3],
                           "mechanism": ["step1"], "notional_usd": [5.0], "reported": [True]})
    meta = {"run_id": "t1", "data_snapshot": "abc", "params_hash": "ph", "params_file": "p.toml", "seed": 7,
            "params": {"a": 1}, "param_sources": {"a": "s"}, "param_ranges": {"a": (0, 2)}}
    windows = [{"id": "2022-10", "status": "ran", "reason": ""},
               {"id": "2022-05", "status": "skipped", "reason": "window 2022-05, venue ftx, market BTC: no bars"}]
    write_results(tmp_path / "r", meta=meta, windows=windows, rows=rows, series=[series], events=[events],
                  sweep=pd.DataFrame({"sample": [0], "window": ["2022-10"], "venue": ["ftx"], "market": ["BTC"]}),
                  sweep_quantiles=[{"window": "2022-10", "venue": "ftx", "market": "BTC", "metric": "house_loss_usd",
                                    "q05": 1.0, "q50": 2.0, "q95": 3.0}],
                  coverage=[{"window": "2022-10", "venue": "ftx", "market": "BTC", "timeframe": "1h", "rows": 3,
                             "gaps_pct": 0.0, "price_source": "own"}])
    res = load_results(tmp_path / "r")
    s = res.summary
    assert (s["data_snapshot"], s["params_hash"], s["seed"]) == ("abc", "ph", 7)
    assert s["windows"][1]["status"] == "skipped" and "market BTC" in s["windows"][1]["reason"]
    assert s["sweep"]["quantiles"][0]["q50"] == 2.0
    assert len(res.rows) == 2 and res.rows.loc[0, "house_loss_usd_per_1b_oi"] == pytest.approx(3e6)
    assert res.rows.loc[1, "house_loss_usd_per_1b_oi"] == pytest.approx(0.25e6)
    pd.testing.assert_frame_equal(res.series, series)
    assert res.events.loc[0, "account"] == 3 and len(res.sweep) == 1
    cv = s["cross_venue"][0]
    assert cv["ratio"] == pytest.approx(3.0) and cv["house_loss_per_1b_oi_ratio"] == pytest.approx(12.0)
    # plain JSON (no NaN tokens)
    json.loads((tmp_path / "r" / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_per_1b_and_ratios_edge_cases():
    r = add_per_1b({"open_interest_usd": 0.0, "house_loss_usd": 5.0})
    assert np.isnan(r["house_loss_usd_per_1b_oi"])
    cv = cross_venue([add_per_1b(row("ftx", house=2.0)), add_per_1b(row("binance", house=0.0))])
    assert cv[0]["ratio"] == float("inf")
    cv = cross_venue([add_per_1b(row("ftx", house=0.0)), add_per_1b(row("binance", house=0.0))])
    assert cv[0]["ratio"] is None
    assert cross_venue([row("ftx")]) == []


def test_load_missing_dir_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="liqreplay run"):
        load_results(tmp_path)
