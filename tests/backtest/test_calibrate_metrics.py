"""Calibration metrics on hand-made frames whose answers are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest import calibrate_metrics as M
from backtest.catalog import Catalog
from fetch.lake import Lake

T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731


def _daily(rows):
    """rows: (window, venue, market, date, side, liquidated, reported)."""
    df = pd.DataFrame(rows, columns=["window", "venue", "market", "date", "side", "liquidated_usd", "reported_usd"])
    df["date"] = pd.to_datetime(df["date"], utc=True)
    df["oi_usd"] = 1e9
    return df


def _obs(rows):
    return pd.DataFrame({"date": pd.to_datetime([r[0] for r in rows], utc=True),
                         "market": [r[1] for r in rows], "side": [r[2] for r in rows],
                         "observed_usd": [float(r[3]) for r in rows]})


def test_log_rmse_with_floor_and_zero_share():
    # model 0.9M vs observed 0.9M (err 0), model 0 vs observed 0.9M (err log(0.1/1.0) = -ln 10)
    daily = _daily([("w", "binance", "BTC", "2022-05-01", "long", 5e6, 0.9e6)])
    obs = _obs([("2022-05-01", "BTC", "long", 0.9e6), ("2022-05-01", "BTC", "short", 0.9e6)])
    c = M.compare(M.model_frame(daily), obs, ["2022-05-01"], ["BTC"])
    assert len(c) == 2
    assert c.set_index("side").loc["short", "model_usd"] == 0.0  # a missing day-side is a model zero
    assert M.log_rmse(c) == pytest.approx(math.sqrt((math.log(10) ** 2) / 2))
    assert M.zero_share(c) == pytest.approx(0.5)
    assert M.sum_ratio(c) == pytest.approx(0.5)


def test_reported_not_liquidated_is_compared_and_other_venue_ignored():
    daily = _daily([("w", "binance", "ETH", "2022-05-01", "long", 9e6, 1.9e6),
                    ("w", "ftx", "ETH", "2022-05-01", "long", 50e6, 50e6)])
    obs = _obs([("2022-05-01", "ETH", "long", 0.9e6)])
    c = M.compare(M.model_frame(daily), obs, ["2022-05-01"], ["ETH"])
    # (1.9 + 0.1) / (0.9 + 0.1) = 2
    assert M.log_rmse(c) == pytest.approx(math.log(2))
    c2 = M.compare(M.model_frame(daily, measure="liquidated_usd"), obs, ["2022-05-01"], ["ETH"])
    assert M.log_rmse(c2) == pytest.approx(math.log(91 / 10))


def test_days_outside_the_set_or_without_observation_are_left_out():
    daily = _daily([("w", "binance", "BTC", d, "long", 1e6, 1e6) for d in ("2022-05-01", "2022-05-02", "2022-05-03")])
    obs = _obs([("2022-05-01", "BTC", "long", 1e6), ("2022-05-02", "BTC", "long", 1e6)])
    c = M.compare(M.model_frame(daily), obs, ["2022-05-02", "2022-05-03"], ["BTC"])
    assert list(c["date"].dt.day) == [2]


def test_corr_log_is_one_for_a_constant_multiple_and_negative_when_reversed():
    days = pd.date_range("2022-03-01", periods=5, tz="UTC")
    vals = np.array([1, 3, 10, 30, 100]) * 1e6
    obs = _obs([(d, "BTC", "long", v) for d, v in zip(days, vals, strict=True)])
    up = M.compare(_obs([(d, "BTC", "long", 2 * v) for d, v in zip(days, vals, strict=True)]).rename(
        columns={"observed_usd": "model_usd"}), obs, days, ["BTC"])
    assert len(up) == 5
    # log(2v + f) vs log(v + f) is not exactly linear; it is close to 1
    assert M.corr_log(up) > 0.99
    down = M.compare(_obs([(d, "BTC", "long", v) for d, v in zip(days, vals[::-1], strict=True)]).rename(
        columns={"observed_usd": "model_usd"}), obs, days, ["BTC"])
    assert M.corr_log(down) < -0.9


def test_long_share_mae_per_window():
    # window a: model 3:1 long (0.75), observed 1:1 (0.5) -> 0.25; window b: model nothing -> 1.0
    daily = _daily([("a", "binance", "BTC", "2022-05-01", "long", 3e6, 3e6),
                    ("a", "binance", "BTC", "2022-05-01", "short", 1e6, 1e6)])
    obs = _obs([("2022-05-01", "BTC", "long", 2e6), ("2022-05-01", "BTC", "short", 2e6),
                ("2022-06-01", "BTC", "long", 1e6), ("2022-06-01", "BTC", "short", 3e6)])
    c = M.compare(M.model_frame(daily), obs, ["2022-05-01", "2022-06-01"], ["BTC"])
    ls = M.long_share_errors(c, {"a": ["2022-05-01"], "b": ["2022-06-01"]})
    assert list(ls["abs_error"]) == pytest.approx([0.25, 1.0])
    assert list(ls["sum_ratio"]) == pytest.approx([1.0, 0.0])
    s = M.summarise(c, {"a": ["2022-05-01"], "b": ["2022-06-01"]})
    assert s["overall"]["long_share_mae"] == pytest.approx(0.625)
    assert s["pass"]["long_share_mae"] is False


def test_monthly_totals_and_the_half_to_double_check():
    daily = _daily([("y", "binance", "BTC", "2022-01-10", "long", 0, 3e6),
                    ("y", "binance", "ETH", "2022-01-11", "short", 0, 1e6),
                    ("y", "binance", "BTC", "2022-02-10", "long", 0, 1e6)])
    obs = _obs([("2022-01-10", "BTC", "long", 2e6), ("2022-01-11", "ETH", "short", 2e6),
                ("2022-02-10", "BTC", "long", 4e6)])
    c = M.compare(M.model_frame(daily), obs, pd.date_range("2022-01-01", "2022-02-28", tz="UTC"), ["BTC", "ETH"])
    mt = M.monthly_totals(c).set_index("month")
    assert mt.loc["2022-01", "ratio"] == pytest.approx(1.0)
    assert mt.loc["2022-02", "ratio"] == pytest.approx(0.25)
    assert list(mt["within"]) == [True, False]
    s = M.summarise(c, months=True)
    assert s["pass"]["month_ratio"] is False
    text = "\n".join(M.format_summary("training", s))
    assert "target <= 1.0" in text and "months within 0.5-2x: 1/2" in text


def test_targets_are_checked_both_ways():
    assert M.check("log_rmse", 0.9) is True and M.check("log_rmse", 1.1) is False
    assert M.check("corr_log", 0.71) is True and M.check("corr_log", 0.5) is False
    assert M.check("month_ratio", 2.1) is False and M.check("month_ratio", 0.5) is True
    assert M.check("zero_share", float("nan")) is None


def test_observed_frame_from_catalog_rows(tmp_path):
    lk = Lake(tmp_path / "lake")
    lk.write("liquidations", pd.DataFrame({
        "venue": "binance", "market": "perp", "symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"],
        "timeframe": "1d", "ts": [T("2022-10-25")] * 4, "side": ["long", "short", "long", "long"],
        "qty": [10.0, 20.0, 100.0, 5.0], "price": [20000.0, 20000.0, 1500.0, 30.0], "source": "coinalyze"}),
        source="t")
    cat = Catalog(lk.root)
    liq = cat.daily_liquidations("binance", T("2022-10-01"), T("2022-11-01"))
    assert sorted(liq["symbol"].unique()) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    only = cat.daily_liquidations("binance", T("2022-10-01"), T("2022-11-01"), symbols=["ETHUSDT"])
    assert list(only["symbol"]) == ["ETHUSDT"]
    assert cat.daily_liquidations("binance", T("2022-10-26"), T("2022-11-01")).empty
    obs = M.observed_frame(liq, coins=["BTC", "ETH"]).set_index(["market", "side"])["observed_usd"]
    assert obs[("BTC", "short")] == pytest.approx(400_000.0)  # 20 BTC x 20,000 (base units x close)
    assert obs[("ETH", "long")] == pytest.approx(150_000.0)
    assert ("SOL", "long") not in obs.index
