"""backtest/pathcheck.py: the intra-bar path against what finer bars show."""
from __future__ import annotations

import glob

import numpy as np
import pandas as pd
import pytest

from backtest import pathcheck as C
from backtest import paths as P
from backtest.params import load_params


def _fine(closes, start="2022-05-01"):
    c = np.asarray(closes, float)
    o = np.r_[c[0], c[:-1]]
    return pd.DataFrame({"ts": pd.date_range(start, periods=len(c), freq="1min", tz="UTC"), "open": o,
                         "high": np.maximum(o, c), "low": np.minimum(o, c), "close": c})


def test_near_first_share_and_extreme_times_by_hand():
    # bar 1: open 100, low 99 at minute 1 (nearer, first), high 103 at minute 3
    # bar 2: open 100, high 101 at minute 3 (nearer, last), low 97 at minute 1
    f = _fine([100, 99, 100, 103, 102, 100, 97, 99, 101, 100])
    f.loc[5, ["open", "high"]] = 100.0
    share, n = C.near_first_share(f, 5)
    assert n == 2 and share == 0.5
    t = C.real_extreme_times(f, 5)
    assert list(t) == [3 / 4, 3 / 4, 1 / 4, 1 / 4]            # highs then lows


def test_the_bridge_fits_real_minute_moves_better_than_the_linear_path(shared_data):
    files = sorted(glob.glob(str(shared_data / "binance_spot_1m_nl2992" / "binance_spot_BTCUSDT_1m_*.parquet")))
    if not files:
        pytest.skip("no Binance BTCUSDT 1m bars in the shared data")
    fines = [pd.read_parquet(f, columns=["ts", "open", "high", "low", "close"]).sort_values("ts")
             .reset_index(drop=True).iloc[: 3 * 1440] for f in files]
    s = P.path_settings(load_params())
    for agg in (15, 60):
        r = C.check(fines, agg, s, P.path_key(7, "BTC"))
        print(C.format_check(r))
        lin = np.mean([np.abs(np.log(r[f"linear_{g}"] / r[f"real_{g}"])).mean() for g in (1, 5)])
        assert r["bridge_error"] < lin
        assert abs(r["near_first_real"] - s["near_first_prob"]) < 0.1
