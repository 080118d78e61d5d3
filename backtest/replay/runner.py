"""One (window, venue, market) from loaded data: seed, population, replay -> row + frames."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from backtest.params import Params
from backtest.path import CollateralPath
from backtest.population import make_population
from backtest.replay.binance import run_binance
from backtest.replay.ftx import run_ftx
from backtest.replay.inputs import PathInput


def series_rng(seed: int, window_id: str, venue: str, coin: str) -> np.random.Generator:
    """One seeded generator per (window, venue, market), stable across runs and processes."""
    key = zlib.crc32(f"{window_id}|{venue}|{coin}".encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), key]))


def path_input(sd, params: Params) -> PathInput:
    return PathInput.from_bars(sd.bars, sd.bar_seconds, tick_s=float(params.get("ftx.tick_s")),
                               sigma_1m=sd.sigma_1m, adv_usd=sd.adv_usd,
                               funding=sd.funding if sd.venue == "binance" else None)


def run_series(sd, params: Params, seed: int, *, hedge=None, n_accounts: int | None = None,
               collateral_prices: dict[str, float] | None = None, deterministic: bool = False,
               collateral_paths: dict[str, CollateralPath] | None = None):
    """Replay one loaded SeriesData. Returns (row, series frame, events frame)."""
    rng = series_rng(seed, sd.window.id, sd.venue, sd.coin)
    date = sd.window.start.date()
    lb = float(params.get("population.entry_lookback_days"))
    eb = sd.entry_bars
    if "ts" in eb and len(eb):
        cut = sd.window.start - pd.Timedelta(days=lb)
        sel = eb[pd.to_datetime(eb["ts"], utc=True) >= cut]
        eb = sel if len(sel) else eb
    pop = make_population_for(sd, params, rng, eb, date, n_accounts, collateral_prices)
    inp = path_input(sd, params)
    if sd.venue == "binance":
        res = run_binance(inp, pop, params, symbol=sd.symbol, date=date)
    else:
        res = run_ftx(inp, pop, params, symbol=sd.symbol, date=date, rng=None if deterministic else rng,
                      hedge=hedge, collateral=collateral_paths)
    row = {"window": sd.window.id, "venue": sd.venue, "market": sd.coin, "symbol": sd.symbol,
           **res.totals, "open_interest_usd": float(sd.oi_usd), "open_interest_coin": float(sd.oi_coin),
           "oi_source": sd.oi_source, "timeframe": sd.timeframe, "price_source": sd.price_source,
           "adv_usd": float(sd.adv_usd), "adv_source": sd.adv_source, "bars": int(inp.n_bars),
           "gaps_pct": float(sd.gaps_pct), "start_price": float(sd.start_price),
           "end_price": float(inp.close[-1]), "n_topped_up": int(pop.meta.get("n_topped_up", 0) or 0),
           "funding_prints": int(len(inp.funding_bar))}
    key = {"window": sd.window.id, "venue": sd.venue, "market": sd.coin}
    series = res.series.assign(**key)
    series.insert(0, "ts", pd.to_datetime(series.pop("ts_s"), unit="s", utc=True))
    ev = res.events.assign(**key)
    if len(ev):
        ev.insert(0, "ts", pd.to_datetime(ev.pop("t_s"), unit="s", utc=True))
    else:
        ev = ev.drop(columns=["t_s"]).assign(ts=pd.Series([], dtype="datetime64[ns, UTC]"))
    return row, series, ev


def make_population_for(sd, params, rng, entry_bars, date, n_accounts, collateral_prices):
    return make_population(sd.venue, sd.symbol, oi_usd=float(sd.oi_usd), entry_bars=entry_bars, date=date,
                           params=params, rng=rng, start_price=float(sd.start_price),
                           collateral_prices=collateral_prices, n_accounts=n_accounts)
