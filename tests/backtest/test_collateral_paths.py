"""Other coins' FTX collateral follows its own price path (MODEL.md 3.2, 3.5, 3.6)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.path import CollateralPath
from backtest.reference import reference_ftx
from backtest.replay import run_ftx
from backtest.scenarios import Window
from backtest.series_loader import SeriesLoader
from tests.backtest._synth import DATE, crash_bars, setup
from tests.backtest.test_reference_parity import assert_same

FTT_HEAVY = {"population.ftx_collateral_share.USD": 0.1, "population.ftx_collateral_share.BTC": 0.0,
             "population.ftx_collateral_share.ETH": 0.0, "population.ftx_collateral_share.FTT": 0.9,
             "population.ftx_collateral_share.SOL": 0.0}


def ftt_path(bars: pd.DataFrame, p0=25.0, crash_from=3, to=3.0, step_min=5) -> CollateralPath:
    """5-minute FTT bars over the FTX bars' span: flat at p0, then down to `to` over 3 bars."""
    t0 = int(pd.Timestamp(bars.ts.iloc[0]).timestamp())
    n = (len(bars) + step_min - 1) // step_min
    close = np.full(n, p0)
    close[crash_from:crash_from + 3] = np.geomspace(p0, to, 4)[1:]
    close[crash_from + 3:] = to
    return CollateralPath.from_bars("FTT", t0 + 60 * step_min * np.arange(n), close, np.full(n, 5e6), step_min * 60)


def test_steps_join_at_bar_close_and_last_step_per_bar_wins():
    cp = CollateralPath.from_bars("FTT", np.array([0, 900, 1800]), np.array([10.0, 9.0, 8.0]), np.ones(3), 900)
    assert cp.t_s.tolist() == [900, 1800, 2700]       # close times
    bars, steps = cp.steps_by_bar(np.arange(0, 3600, 60))   # 1-minute engine bars
    assert bars.tolist() == [15, 30, 45] and steps.tolist() == [0, 1, 2]
    bars, steps = cp.steps_by_bar(np.array([0, 3600]))      # hourly engine bars: first bar opening after
    assert bars.tolist() == [1] and steps.tolist() == [2]


@pytest.mark.parametrize("path", ["linear", "bridge"])
def test_ftx_parity_with_collateral_crashing_mid_window(path):
    bars = crash_bars(crash=-0.004, squeeze=0.004)
    params, pop, inp, sym = setup("ftx", 200, {**FTT_HEAVY, "population.leverage_scale": 1.5,
                                               "ftx.blp.capacity_per_minute_usd": 300000.0}, bars=bars, path=path)
    cp = {"FTT": ftt_path(bars)}
    fast = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None, collateral=cp)
    ref = reference_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None, collateral=cp)
    assert_same(fast, ref, min_events=20)
    assert fast.totals["collateral_revaluations"] == len(cp["FTT"].steps_by_bar(inp.ts_s)[0])
    # the crash (first step at 25 -> lower closes at the end of FTT bar 3, i.e. t0 + 20 min) drives it
    flat = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    assert fast.totals["liquidated_usd"] > 2 * flat.totals["liquidated_usd"]
    assert fast.totals["blp_collateral_other_usd"] != 0.0
    assert fast.totals["blp_collateral_other_usd"] != flat.totals["blp_collateral_other_usd"]


@pytest.mark.parametrize("path", ["linear", "bridge"])
def test_ftx_parity_with_few_collateral_holders(path):
    bars = crash_bars(crash=-0.004, squeeze=0.004)
    params, pop, inp, sym = setup("ftx", 150, {**FTT_HEAVY, "population.leverage_scale": 1.5}, bars=bars, path=path)
    # few holders: their triggers are re-put one by one (not a book rebuild)
    holders = np.zeros(len(pop), bool)
    holders[::6] = True
    pop.collateral["FTT"] = np.where(holders, pop.collateral["FTT"], 0.0)
    cp = {"FTT": ftt_path(bars, to=2.0)}
    fast = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None, collateral=cp)
    ref = reference_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None, collateral=cp)
    assert_same(fast, ref, min_events=5)
    flat = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    assert set(fast.events.account) - set(flat.events.account) <= set(np.nonzero(holders)[0].tolist())
    assert fast.totals["liquidated_usd"] > flat.totals["liquidated_usd"]


def test_ftt_crash_liquidates_an_account_on_a_flat_btc_path():
    n = 60
    ts = pd.date_range(pd.Timestamp(DATE, tz="UTC"), periods=n, freq="1min")
    bars = pd.DataFrame({"ts": ts, "open": 20000.0, "high": 20000.0, "low": 20000.0, "close": 20000.0,
                         "volume_quote": 2e7})
    params, pop, inp, sym = setup("ftx", 50, {**FTT_HEAVY, "population.leverage_scale": 1.0}, bars=bars)
    assert (pop.collateral["FTT"] > 0).all()
    flat = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None)
    assert flat.totals["liquidated_usd"] == 0.0
    cp = {"FTT": ftt_path(bars, crash_from=4, to=2.0)}
    res = run_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None, collateral=cp)
    assert res.totals["accounts_liquidated"] > 0
    assert res.totals["liquidated_step2_blp_usd"] > 0
    # nothing happens before the first lower FTT close takes effect (close of FTT bar 4 = minute 25)
    t_first = int(pd.Timestamp(DATE, tz="UTC").timestamp()) + 25 * 60
    assert res.events["t_s"].min() >= t_first
    # the BLP receives FTT worth less than at the start and sells it with impact
    assert res.totals["blp_collateral_other_usd"] != 0.0
    ref = reference_ftx(inp, pop, params, symbol=sym, date=DATE, rng=None, collateral=cp)
    assert_same(res, ref, min_events=1)


class _Cat:
    def __init__(self, frames):
        self.frames = frames

    def timeframes(self, venue, market, symbol, start, end):
        return [(tf, len(df)) for (s, tf), df in self.frames.items() if s == symbol]

    def bars(self, venue, market, symbol, start, end, *, timeframe=None, price_type="trade"):
        return self.frames[(symbol, timeframe)]


def test_loader_uses_finest_covering_timeframe_at_close_times_and_notes_missing_coins():
    start = pd.Timestamp("2022-11-06", tz="UTC")
    def mk(freq, n, p):
        ts = pd.date_range(start, periods=n, freq=freq)
        return pd.DataFrame({"ts": ts, "open": p, "high": p, "low": p, "close": p * np.linspace(1, 0.1, n),
                             "volume_base": 1.0, "volume_quote": 1e6})
    frames = {("FTTUSDT", "1m"): mk("1min", 100, 22.0), ("FTTUSDT", "15m"): mk("15min", 96, 22.0)}
    loader = SeriesLoader.__new__(SeriesLoader)
    loader.catalog = _Cat(frames)
    w = Window("t", "t", start, start + pd.Timedelta(days=1))
    paths, notes = loader.collateral_paths(w, ["FTT", "SOL"])
    assert set(paths) == {"FTT"}
    cp = paths["FTT"]
    assert cp.t_s.size == 96 and cp.bar_minutes == 15      # 1m covers too little of the window
    assert cp.t_s[0] == int(start.timestamp()) + 900       # first close, not first open
    assert cp.price[-1] == pytest.approx(22.0 * 0.1)
    assert len(notes) == 1 and "SOL" in notes[0]
