"""Small synthetic paths and populations for the replay tests (not a test module)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from backtest.params import load_params
from backtest.population import make_population
from backtest.replay import PathInput

DATE = dt.date(2022, 5, 5)


def crash_bars(n_bars: int = 40, seed: int = 3, p0: float = 20000.0, crash=-0.012, squeeze=0.01) -> pd.DataFrame:
    """1-minute bars: noise, a crash in the first third, a squeeze in the second."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.003, n_bars)
    r[n_bars // 4: n_bars // 4 + 8] += crash
    r[n_bars // 2: n_bars // 2 + 8] += squeeze
    c = p0 * np.exp(np.cumsum(r))
    o = np.r_[p0, c[:-1]]
    h = np.maximum(o, c) * (1 + rng.exponential(0.003, n_bars))
    lo = np.minimum(o, c) * (1 - rng.exponential(0.003, n_bars))
    ts = pd.date_range(pd.Timestamp(DATE, tz="UTC"), periods=n_bars, freq="1min")
    return pd.DataFrame({"ts": ts, "open": o, "high": h, "low": lo, "close": c,
                         "volume_quote": np.full(n_bars, 2e7)})


def gap_down_bars() -> pd.DataFrame:
    """crash_bars with a deeper crash and a 7% gap down at the open of a bar inside it: deficits a
    small fund cannot pay (the ADL fixture)."""
    bars = crash_bars(crash=-0.03)
    i = len(bars) // 4 + 2
    bars.loc[i, "open"] = bars.loc[i - 1, "close"] * 0.93
    bars.loc[i, "low"] = min(bars.loc[i, "low"], bars.loc[i, "open"])
    bars.loc[i, "high"] = max(bars.loc[i, "high"], bars.loc[i, "open"])
    return bars


def entry_bars(p0: float = 20000.0, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 200
    ts = pd.date_range(pd.Timestamp(DATE, tz="UTC") - pd.Timedelta(hours=n), periods=n, freq="1h")
    return pd.DataFrame({"ts": ts, "close": p0 * np.exp(rng.normal(0, 0.03, n)), "volume_quote": np.full(n, 1e7)})


# The population the synthetic fixtures were written for (the first release's defaults), so the
# fixtures do not drift when `liqreplay calibrate` moves the shipped defaults.
FIXTURE_POPULATION = {"population.leverage_low_share": 0.85, "population.leverage_scale": 1.0,
                      "population.notional_sigma": 1.5, "population.binance_isolated_share": 0.5,
                      "population.binance_legacy_share": 0.0, "population.holding_days": 2.0,
                      "population.holding_tail_ratio": 1.0, "population.tail_sim_share": 0.0}


def setup(venue: str, n_accounts: int = 200, overrides: dict | None = None, *, bars=None, funding=None,
          seed: int = 1, oi_usd: float = 5e7, path: str = "linear"):
    """path: "linear" (v1) or "bridge" (the seeded Brownian bridge with params.toml's path.*
    settings and the key of (seed 7, the coin))."""
    params = load_params(overrides={**FIXTURE_POPULATION, **(overrides or {})})
    bars = crash_bars() if bars is None else bars
    sym = "BTC-PERP" if venue == "ftx" else "BTCUSDT"
    pop = make_population(venue, sym, oi_usd=oi_usd, entry_bars=entry_bars(float(bars["open"].iloc[0])),
                          date=DATE, params=params, rng=np.random.default_rng(seed),
                          start_price=float(bars["open"].iloc[0]), n_accounts=n_accounts,
                          collateral_prices={"BTC": 20000.0, "ETH": 1500.0, "FTT": 25.0, "SOL": 40.0})
    inp = with_path(PathInput.from_bars(bars, 60, tick_s=1.0, sigma_1m=0.002, adv_usd=1e9, funding=funding),
                    params, path)
    return params, pop, inp, sym


def with_path(inp: PathInput, params, path: str = "linear", seed: int = 7, coin: str = "BTC") -> PathInput:
    """Set a PathInput's intra-bar path: "linear" or "bridge" (path.* settings, key (seed, coin))."""
    from backtest.paths import MODES, path_key, path_settings

    ps = path_settings(params)
    inp.path_mode = MODES[path]
    inp.path_key = int(path_key(seed, coin))
    inp.near_first_prob, inp.vol_scale, inp.time_jitter = ps["near_first_prob"], ps["vol_scale"], ps["time_jitter"]
    return inp
