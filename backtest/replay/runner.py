"""One (window, venue, market) from loaded data: seed, population, replay -> row + frames."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from backtest.params import Params
from backtest.path import CollateralPath
from backtest.paths import path_key, path_settings
from backtest.population import build_population, make_population
from backtest.replay import warmup
from backtest.replay.binance import run_binance
from backtest.replay.ftx import run_ftx
from backtest.replay.inputs import PathInput
from backtest.replay.recorder import oi_daily_frame

# venues whose replay honours accounts' open/close times (the v2 book needs it)
V2_BOOK_VENUES = ("binance", "ftx")


def series_rng(seed: int, window_id: str, venue: str, coin: str) -> np.random.Generator:
    """One seeded generator per (window, venue, market), stable across runs and processes."""
    key = zlib.crc32(f"{window_id}|{venue}|{coin}".encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), key]))


def path_input(sd, params: Params, seed: int = 0, draw: int = 0) -> PathInput:
    """The series' bars as a PathInput with the intra-bar path settings (MODEL.md 1): `path.mode`
    and its parameters, and the path key of (seed, coin, draw), the same for a venue and its
    stand-in so both see one path."""
    ps = path_settings(params)
    inp = PathInput.from_bars(sd.bars, sd.bar_seconds, tick_s=params.ftx.tick_s,
                              sigma_1m=sd.sigma_1m, adv_usd=sd.adv_usd,
                              funding=sd.funding if sd.venue == "binance" else None)
    inp.path_mode = int(ps["mode"])
    inp.path_key = int(path_key(seed, sd.coin, draw))
    inp.near_first_prob = float(ps["near_first_prob"])
    inp.vol_scale = float(ps["vol_scale"])
    inp.time_jitter = float(ps["time_jitter"])
    return inp


def population_for(sd, params: Params, seed: int, rng, n_accounts, collateral_prices):
    """The v2 OI-driven book (MODEL.md 2) where the series has an OI path and its venue's replay
    honours open/close times; else the v1 static book at the window start (the row's
    `population` says which)."""
    v2_venues = V2_BOOK_VENUES
    if sd.venue in v2_venues and getattr(sd, "oi_path", None) is not None and len(sd.oi_path):
        return build_population(sd, params, seed, n_accounts, collateral_prices=collateral_prices), "v2"
    date = sd.window.start.date()
    lb = params.population.entry_lookback_days
    eb = sd.entry_bars
    if "ts" in eb and len(eb):
        cut = sd.window.start - pd.Timedelta(days=lb)
        sel = eb[pd.to_datetime(eb["ts"], utc=True) >= cut]
        eb = sel if len(sel) else eb
    return make_population_for(sd, params, rng, eb, date, n_accounts, collateral_prices), "v1"


def run_series(sd, params: Params, seed: int, *, hedge=None, n_accounts: int | None = None,
               collateral_prices: dict[str, float] | None = None, deterministic: bool = False,
               collateral_paths: dict[str, CollateralPath] | None = None):
    """Replay one loaded SeriesData. Returns (row, series frame, events frame, daily frame); the
    daily frame per UTC day and liquidated side (see `daily_frame`)."""
    warmup.prefetch(sd.venue)       # a cold numba cache: the other venue's kernels compile alongside
    rng = series_rng(seed, sd.window.id, sd.venue, sd.coin)
    date = sd.window.start.date()
    pop, pop_kind = population_for(sd, params, seed, rng, n_accounts, collateral_prices)
    inp = path_input(sd, params, seed)
    warmup.wait(sd.venue)
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
           "funding_prints": int(len(inp.funding_bar)), "population": pop_kind,
           "accounts_simulated": int(len(pop)), "real_accounts": float(np.sum(pop.weight)),
           "path_mode": params.path_model.mode,
           "trigger_source": str(getattr(sd, "trigger_source", "trade bars"))}
    if sd.venue == "binance":
        row["reported_unresolved_share"] = unresolved_share(res.events, pop, params)
    if pop_kind == "v2":
        row["book_start"] = str(pop.meta.get("book_start", ""))
        # the book's own source: names the scale (FTX on Binance's path x ftx.oi_ratio_to_binance.<COIN>)
        row["oi_source"] = str(pop.meta.get("oi_source") or getattr(sd, "oi_path_source", "") or sd.oi_source)
    key = {"window": sd.window.id, "venue": sd.venue, "market": sd.coin}
    series = res.series.assign(**key)
    series.insert(0, "ts", pd.to_datetime(series.pop("ts_s"), unit="s", utc=True))
    ev = res.events.assign(**key)
    if len(ev):
        ev.insert(0, "ts", pd.to_datetime(ev.pop("t_s"), unit="s", utc=True))
    else:
        ev = ev.drop(columns=["t_s"]).assign(ts=pd.Series([], dtype="datetime64[ns, UTC]"))
    oi = res.oi_daily if res.oi_daily is not None else oi_from_events(inp, pop, res.events)
    daily = daily_frame(ev, oi, inp.ts_s, key)
    return row, series, ev, daily


def unresolved_share(events: pd.DataFrame, pop, params: Params) -> float:
    """Share of the liquidated notional from simulated accounts that stand for more real orders
    (count_weight) than `disclosure.bandwidth_real_orders`: the reported figure cannot resolve
    their cells, which the throttle then spreads halfway to the neighbours: the reported figure
    moves with --accounts once most of the notional is there (api.UNRESOLVED_WARN). 0 where
    nothing was liquidated."""
    if not len(events):
        return 0.0
    x = events["notional_usd"].to_numpy(float)
    cw = np.asarray(pop.count_weight, float)[events["account"].to_numpy(np.int64)]
    tot = float(x.sum())
    return float(x[cw > params.disclosure.bandwidth_real_orders].sum() / tot) if tot > 0 else 0.0


def oi_from_events(inp: PathInput, pop, events: pd.DataFrame) -> pd.DataFrame:
    """Fallback for a venue state without its own oi_daily (FTX until its kernel provides one):
    every account's quantity from the run's start, less the quantity of each liquidation event
    (step 1 partials, takeovers, close-outs, ADL). Ignores open_s/close_s."""
    q0 = pop.qty_coin.astype(float)
    t = np.concatenate([np.full(q0.size, float(inp.ts_s[0])), events["t_s"].to_numpy(float)])
    side = np.concatenate([pop.side.astype(np.int64), events["side"].to_numpy(np.int64)])
    dq = np.concatenate([q0, -events["qty_coin"].to_numpy(float)])
    return oi_daily_frame(inp, t, side, dq)


DAILY_COLUMNS = ("window", "venue", "market", "date", "side", "liquidated_usd", "reported_usd", "oi_usd")


def daily_frame(ev: pd.DataFrame, oi_daily: pd.DataFrame | None, bar_ts_s: np.ndarray, key: dict) -> pd.DataFrame:
    """Per UTC day of the path and liquidated side ('long'|'short'): actual and reported liquidated
    notional (every event of that side that day, zero where none) and the model's open notional
    of that side at the day's end (oi_usd; NaN where the venue state gives no oi_daily)."""
    d0 = pd.Timestamp(int(bar_ts_s[0] // 86400) * 86400, unit="s", tz="UTC")
    d1 = pd.Timestamp(int(bar_ts_s[-1] // 86400) * 86400, unit="s", tz="UTC")
    days = pd.date_range(d0, d1, freq="D").astype("datetime64[ns, UTC]")
    grid = pd.MultiIndex.from_product([days, ["long", "short"]], names=["date", "side"])
    if len(ev):
        g = pd.DataFrame({"date": ev["ts"].dt.floor("D").astype("datetime64[ns, UTC]"),
                          "side": np.where(ev["side"].to_numpy() > 0, "long", "short"),
                          "liquidated_usd": ev["notional_usd"].to_numpy(float),
                          "reported_usd": ev["reported_usd"].to_numpy(float)})
        agg = g.groupby(["date", "side"])[["liquidated_usd", "reported_usd"]].sum()
        agg = agg.reindex(grid.union(agg.index), fill_value=0.0)
    else:
        agg = pd.DataFrame({"liquidated_usd": 0.0, "reported_usd": 0.0}, index=grid)
    if oi_daily is not None and len(oi_daily):
        oi = oi_daily.assign(date=oi_daily["date"].astype("datetime64[ns, UTC]")).set_index(["date", "side"])["oi_usd"]
        agg["oi_usd"] = oi.reindex(agg.index).to_numpy(float)
    else:
        agg["oi_usd"] = np.nan
    out = agg.reset_index()
    for k, v in reversed(list(key.items())):
        out.insert(0, k, v)
    return out[list(DAILY_COLUMNS)].sort_values(["date", "side"], kind="stable").reset_index(drop=True)


def make_population_for(sd, params, rng, entry_bars, date, n_accounts, collateral_prices):
    return make_population(sd.venue, sd.symbol, oi_usd=float(sd.oi_usd), entry_bars=entry_bars, date=date,
                           params=params, rng=rng, start_price=float(sd.start_price),
                           collateral_prices=collateral_prices, n_accounts=n_accounts)
