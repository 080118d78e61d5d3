"""`liqreplay calibrate` as a library (MODEL.md 6; issue 8 item 7).

Stage 1 fits the population parameters both venues share to Coinalyze's Binance USD-M daily
long and short liquidations (BTCUSDT, ETHUSDT) on the **training days**: every 2022 day
outside the five windows. The objective is the training log-RMSE (the $0.1M floor) of the
model's *reported* Binance notional (the public stream's one-order-per-symbol-second rule),
per (market, day, side). Stage 2 fits only FTX's own parameters (OI ratio to Binance,
collateral mix) to FTX's published every-fill 24 h totals (reference calibration.csv),
scaled from all markets to the modelled coins by Binance's own share of those coins in its
all-market liquidations those days; those figures fall inside windows, so nothing the
Binance validation judges is touched by stage 2. Validation: the window runs' daily frames.

A simulator is any callable `(params) -> daily frame` (brief interface 1). `ReplaySimulator`
builds one on `backtest.replay.run_series`; the lead can hand `fit` any other (the whole-year
run of api.run_windows). The optimiser is scipy.optimize (bounded Powell from the current
defaults, or a seeded differential evolution) on the parameters mapped to [0, 1] over their
`range` (log scale where the range spans more than 4x). The simulator's own draws are seeded,
so the objective is a deterministic function and a re-run gives the same answer; evaluations
are cached in `<out>/evals.jsonl`, so an interrupted fit resumes where it stopped.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from scipy import optimize
from tqdm import tqdm

from backtest import calibrate_metrics as M
from backtest.calibrate_options import (  # noqa: F401 (FIT_KEYS, FTX_FIT_KEYS: re-exported, the library API)
    CALIBRATION_CSV,
    FIT_KEYS,
    FTX_FIT_KEYS,
    CalibrateOptions,
)
from backtest.disclosure import reported_for_params
from backtest.population import build_population
from backtest.replay import path_input, run_binance, run_ftx, run_series
from backtest.replay.runner import daily_frame
from backtest.results import _atomic_parquet
from backtest.scenarios import load_scenarios
from backtest.series_loader import SeriesLoader, load_window_series
from fetch import atomic
from fetch.errors import UserError

log = logging.getLogger(__name__)

YEAR = 2022
COINS = ("BTC", "ETH")
OCT25 = (dt.date(2022, 10, 25), dt.date(2022, 10, 26))

Simulator = Callable[["object"], pd.DataFrame]


# --------------------------------------------------------------------------- days
def window_days(w) -> pd.DatetimeIndex:
    """The UTC days a window covers ([start, end) on day opens)."""
    return pd.date_range(w.start.floor("D"), w.end, freq="D", inclusive="left", tz="UTC")


def split_days(windows, year: int = YEAR) -> tuple[pd.DatetimeIndex, dict[str, pd.DatetimeIndex]]:
    """(training days, {window id: validation days}): training = every day of `year` outside
    the (non-whole-year) windows; validation = the window days."""
    crash = [w for w in windows if not getattr(w, "whole_year", False)]
    valid = {w.id: window_days(w) for w in crash}
    held = set().union(*[set(d) for d in valid.values()]) if valid else set()
    all_days = pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="D", inclusive="left", tz="UTC")
    train = pd.DatetimeIndex([d for d in all_days if d not in held])
    return train, valid


# --------------------------------------------------------------------------- daily frames
DAILY_COLUMNS = ["window", "venue", "market", "date", "side", "liquidated_usd", "reported_usd", "oi_usd"]


def daily_from_events(ev: pd.DataFrame, window: str, venue: str, market: str) -> pd.DataFrame:
    """The daily frame of one series from its events (used until run_series returns it)."""
    if ev is None or len(ev) == 0:
        return pd.DataFrame(columns=DAILY_COLUMNS)
    side = np.where(ev["side"].to_numpy() > 0, "long", "short")
    n = ev["notional_usd"].to_numpy(float)
    if "reported_usd" in ev:      # v2 events: the reported notional per event (real account count)
        rep_usd = ev["reported_usd"].to_numpy(float)
    else:                         # v1 events: a reported flag
        rep = ev["reported"].to_numpy(bool) if "reported" in ev else np.ones(len(ev), bool)
        rep_usd = np.where(rep, n, 0.0)
    df = pd.DataFrame({"date": M.utc_day(ev["ts"]).to_numpy(), "side": side, "liquidated_usd": n,
                       "reported_usd": rep_usd})
    g = df.groupby(["date", "side"], as_index=False)[["liquidated_usd", "reported_usd"]].sum()
    g.insert(0, "market", market)
    g.insert(0, "venue", venue)
    g.insert(0, "window", window)
    g["oi_usd"] = np.nan
    return g[DAILY_COLUMNS]


class ReplaySimulator:
    """`(params) -> daily frame` over preloaded series: `backtest.replay.run_series` per
    (window, venue, coin) at `n_accounts`, seed fixed. Windows and series load once, with
    `params` (the warm-up span, the OI ratios); each call replays with the params it is given."""

    def __init__(self, catalog, scenarios, window_ids: Iterable[str], *, params, venues=("binance",), coins=COINS,
                 n_accounts: int = 5000, seed: int = 20221108, lookback_days: float = 14.0, book: str = "run"):

        if book not in ("run", "v2"):
            raise ValueError(f"book must be 'run' or 'v2', not {book!r}")
        self.n_accounts, self.seed, self.venues, self.book = int(n_accounts), int(seed), tuple(venues), book
        self.loader = SeriesLoader(catalog, scenarios, params=params, lookback_days=lookback_days)
        self.loaded, self.problems = [], []
        need = tuple(dict.fromkeys(list(venues) + (["binance"] if "ftx" in venues else [])))
        for wid in window_ids:
            w = scenarios.window(wid)
            sds, probs = load_window_series(self.loader, w, need, coins)
            self.problems += probs
            extra = {}
            if "ftx" in venues and sds:
                cprices = self.loader.coin_prices(w)
                cpaths, _ = self.loader.collateral_paths(w, sorted(cprices)) if cprices else ({}, [])
                extra = {"cprices": cprices, "cpaths": cpaths}
            self.loaded.append((w, sds, extra))
        self.ident = hashlib.sha256(json.dumps(
            [list(window_ids), list(venues), list(coins), self.n_accounts, self.seed, catalog.snapshot_id(), book]
        ).encode()).hexdigest()[:16]

    def __call__(self, params) -> pd.DataFrame:

        frames = []
        for w, sds, extra in self.loaded:
            for (venue, coin), sd in sds.items():
                if venue not in self.venues:
                    continue
                kw = {}
                if venue == "ftx":
                    h = sds.get(("binance", coin))
                    kw = {"hedge": path_input(h, params) if h is not None else None,
                          "collateral_prices": {**extra.get("cprices", {}), coin: sd.start_price},
                          "collateral_paths": extra.get("cpaths") or None}
                if self.book == "v2":
                    frames.append(v2_series_daily(sd, params, self.seed, self.n_accounts, **kw))
                    continue
                out = run_series(sd, params, self.seed, n_accounts=self.n_accounts, **kw)
                if len(out) >= 4 and out[3] is not None:
                    frames.append(out[3])
                else:
                    frames.append(daily_from_events(out[2], w.id, venue, coin))
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DAILY_COLUMNS)


def v2_series_daily(sd, params, seed: int, n_accounts: int, *, hedge=None, collateral_prices=None,
                    collateral_paths=None) -> pd.DataFrame:
    """The daily frame of one series on the v2 book (backtest.population.build_population, the
    OI-driven cohorts with warm-up) with Binance's reported figure from backtest.disclosure
    (the throttle on the real account count). For `--book v2` while run_series still builds
    the v1 population; once the run is wired to v2, `--book run` (the default) is the same."""

    pop = build_population(sd, params, seed, n_accounts, collateral_prices=collateral_prices)
    inp = path_input(sd, params)
    date = sd.window.start.date()
    if sd.venue == "binance":
        res = run_binance(inp, pop, params, symbol=sd.symbol, date=date)
    else:
        res = run_ftx(inp, pop, params, symbol=sd.symbol, date=date, rng=None, hedge=hedge,
                      collateral=collateral_paths)
    ev = res.events.copy()
    if len(ev) and sd.venue == "binance":
        w = np.asarray(pop.count_weight, float)[ev["account"].to_numpy(np.int64)]
        ev["reported_usd"] = reported_for_params(ev["t_s"].to_numpy(float), ev["notional_usd"].to_numpy(float), w,
                                                 ev["side"].to_numpy(np.int64), params)
    elif len(ev):
        ev["reported_usd"] = ev["notional_usd"].to_numpy(float)  # FTX flags every fill
    ev["ts"] = (pd.to_datetime(ev.pop("t_s"), unit="s", utc=True) if len(ev)
                else pd.Series([], dtype="datetime64[ns, UTC]"))
    key = {"window": sd.window.id, "venue": sd.venue, "market": sd.coin}
    return daily_frame(ev, res.oi_daily, inp.ts_s, key)


# --------------------------------------------------------------------------- observed data
def observed_daily(catalog, start, end, coins=COINS) -> pd.DataFrame:
    """Coinalyze's Binance daily long/short liquidations in USD: date, market, side, observed_usd."""
    liq = catalog.daily_liquidations("binance", start, end, symbols=[f"{c}USDT" for c in coins])
    return M.observed_frame(liq, coins)


def binance_coin_share(catalog, days: Iterable, coins=COINS) -> float:
    """Binance's own share of `coins` in its all-market (all symbols the lake holds) daily
    liquidations over `days` (Coinalyze: 66 symbols)."""
    d = M.days_index(days)
    liq = catalog.daily_liquidations("binance", d.min(), d.max() + pd.Timedelta(days=1))
    if liq.empty:
        return math.nan
    allm = M.observed_frame(liq)
    tot = float(allm["observed_usd"].sum())
    mine = float(allm.loc[allm["market"].isin(list(coins)), "observed_usd"].sum())
    return mine / tot if tot > 0 else math.nan


# --------------------------------------------------------------------------- parameter space
@dataclass
class Space:
    """Fitted keys mapped to the unit cube over their `range` (log scale for wide positive ranges)."""

    keys: list[str]
    lo: np.ndarray
    hi: np.ndarray
    log: np.ndarray
    integer: np.ndarray
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params, keys: Iterable[str]) -> "Space":
        ranges = params.sweep_ranges()
        use, skipped = [], []
        for k in keys:
            if k in params and k in ranges and ranges[k][1] > ranges[k][0]:
                use.append(k)
            else:
                skipped.append(k)
        lo = np.array([ranges[k][0] for k in use], float)
        hi = np.array([ranges[k][1] for k in use], float)
        lg = (lo > 0) & (hi / np.where(lo > 0, lo, 1) > 4.0)
        integer = np.array([isinstance(params.get(k), int) and not isinstance(params.get(k), bool) for k in use])
        return cls(use, lo, hi, lg, integer, skipped)

    def to_values(self, u) -> dict[str, float]:
        u = np.clip(np.asarray(u, float), 0.0, 1.0)
        x = np.where(self.log, np.exp(np.log(np.where(self.lo > 0, self.lo, 1)) +
                                      u * (np.log(np.where(self.hi > 0, self.hi, 1))
                                           - np.log(np.where(self.lo > 0, self.lo, 1)))),
                     self.lo + u * (self.hi - self.lo))
        x = np.clip(x, self.lo, self.hi)     # exp(log) can land a hair outside the range at its ends
        return {k: (int(round(v)) if i else float(v)) for k, v, i in zip(self.keys, x, self.integer, strict=True)}

    def to_unit(self, values: dict) -> np.ndarray:
        x = np.array([float(values[k]) for k in self.keys])
        x = np.clip(x, self.lo, self.hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(self.log, (np.log(x) - np.log(self.lo)) / (np.log(self.hi) - np.log(self.lo)),
                         (x - self.lo) / (self.hi - self.lo))
        return np.clip(np.nan_to_num(u), 0.0, 1.0)


class EvalCache:
    """Objective values by (simulator id, stage, parameter values), appended to a JSONL file."""

    def __init__(self, path: Path | None, ident: str):
        self.path, self.ident, self.memo = path, ident, {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("sim") == ident:
                    self.memo[r["key"]] = r["value"]

    @staticmethod
    def key(stage: str, values: dict) -> str:
        return stage + "|" + json.dumps({k: round(float(v), 10) for k, v in sorted(values.items())})

    def get(self, stage, values):
        return self.memo.get(self.key(stage, values))

    def put(self, stage, values, value: float) -> None:
        k = self.key(stage, values)
        self.memo[k] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"sim": self.ident, "key": k, "value": value}) + "\n")


def _minimise(f, space: Space, x0: np.ndarray, *, method: str, max_evals: int, seed: int) -> tuple[np.ndarray, float]:

    bounds = [(0.0, 1.0)] * len(space.keys)
    if method == "de":
        pop = 5
        maxiter = max(1, max_evals // (pop * len(space.keys)) - 1)
        r = optimize.differential_evolution(f, bounds, seed=seed, popsize=pop, maxiter=maxiter, tol=1e-3,
                                            polish=False, init="sobol", updating="immediate")
    else:
        r = optimize.minimize(f, x0, method="Powell", bounds=bounds,
                              options={"maxfev": max_evals, "xtol": 1e-2, "ftol": 1e-3})
    return np.clip(r.x, 0, 1), float(r.fun)


@dataclass
class FitResult:
    stage: str
    keys: list[str]
    skipped: list[str]
    start: dict               # the values at the start point (middle of the ranges)
    fitted: dict
    objective_start: float
    objective: float
    evaluations: int
    method: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def fit(simulate: Simulator, params, keys: Iterable[str], objective: Callable[[pd.DataFrame], float], *,
        stage: str = "binance", method: str = "powell", max_evals: int = 60, seed: int = 0,
        cache: EvalCache | None = None, progress: bool = True) -> FitResult:
    """Minimise `objective(simulate(params with the keys set))` over the keys' ranges."""
    space = Space.from_params(params, keys)
    start = space.to_values(np.full(len(space.keys), 0.5))
    if not space.keys:
        return FitResult(stage, [], space.skipped, {}, {}, math.nan, math.nan, 0, method)
    cache = cache or EvalCache(None, "")
    bar = None
    if progress:
        tty = sys.stderr.isatty()
        bar = tqdm(total=max_evals, desc=f"calibrate {stage}", unit="eval", leave=False,
                   mininterval=0.5 if tty else 30.0)  # a log file gets a line every 30 s, not every eval
    n = [0]
    seen = {"u": None, "value": math.inf}

    def f(u) -> float:
        vals = space.to_values(u)
        hit = cache.get(stage, vals)
        if hit is None:
            daily = simulate(params.with_overrides(vals))
            hit = float(objective(daily))
            if not math.isfinite(hit):
                hit = 1e6
            cache.put(stage, vals, hit)
        n[0] += 1
        if hit < seen["value"]:
            seen["u"], seen["value"] = np.clip(np.asarray(u, float), 0, 1).copy(), hit
        if bar is not None:
            bar.update(1)
            bar.set_postfix(obj=f"{hit:.4f}")
        return hit

    # start at the middle of the ranges, not at the current defaults: a re-run after the
    # fitted values were written starts from the same point and lands on the same answer
    x0 = np.full(len(space.keys), 0.5)
    obj0 = f(x0)
    u, best = _minimise(f, space, x0, method=method, max_evals=max_evals, seed=seed)
    # the best point evaluated, not the optimiser's last iterate: Powell stopped by maxfev in the
    # middle of a line search returns where the search began (the FTX stage's 8 evaluations
    # went 1.894 -> 1.72 and it reported 1.894 at the start point)
    if seen["u"] is not None and seen["value"] < best:
        u, best = seen["u"], seen["value"]
    if obj0 <= best:  # never return worse than where we started
        u, best = x0, obj0
    if bar is not None:
        bar.close()
    return FitResult(stage, space.keys, space.skipped, start, space.to_values(u), obj0, best, n[0], method)


# --------------------------------------------------------------------------- objectives
def binance_objective(observed: pd.DataFrame, days, coins=COINS, *, long_share_weight: float = 0.0,
                      long_share_windows: dict | None = None) -> Callable[[pd.DataFrame], float]:
    """Training log-RMSE of the model's reported Binance notional vs Coinalyze, per
    (market, day, side); optionally + w x the long-share MAE over `long_share_windows`
    (e.g. calendar months of the training days)."""
    def obj(daily: pd.DataFrame) -> float:
        c = M.compare(M.model_frame(daily, venue="binance", measure="reported_usd"), observed, days, coins)
        v = M.log_rmse(c)
        if long_share_weight and long_share_windows:
            ls = M.long_share_errors(c, long_share_windows)
            v += long_share_weight * float(ls["abs_error"].mean())
        return v
    return obj


def month_groups(days) -> dict[str, pd.DatetimeIndex]:
    d = M.days_index(days)
    return {k: d[d.strftime("%Y-%m") == k] for k in sorted(set(d.strftime("%Y-%m")))}


# --------------------------------------------------------------------------- FTX published figures
@dataclass
class Published:
    days: tuple[dt.date, ...]
    total_usd: float
    shorts_usd: float | None
    share: float              # Binance's BTC+ETH share of its all-market liquidations those days
    source: str

    @property
    def target_usd(self) -> float:
        return self.total_usd * self.share

    @property
    def label(self) -> str:
        return "-".join(d.strftime("%b %d") for d in (self.days[0], self.days[-1])) if len(self.days) > 1 \
            else self.days[0].strftime("%b %d")


def read_published(path: Path | str = CALIBRATION_CSV, venue: str = "ftx") -> list[dict]:
    """calibration.csv rows of `venue`'s all-market 24 h liquidation totals:
    {date_from, date_to, total_usd, shorts_usd, source}."""
    rows: dict[tuple, dict] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["venue"] != venue or r["scope"] != "all markets":
                continue
            key = (r["date_from"], r["date_to"])
            e = rows.setdefault(key, {"date_from": r["date_from"], "date_to": r["date_to"], "total_usd": None,
                                      "shorts_usd": None, "source": r["source"]})
            if r["metric"] == "liquidated_24h":
                e["total_usd"] = float(r["value"])
            elif r["metric"] == "liquidated_shorts_24h":
                e["shorts_usd"] = float(r["value"])
    return [e for e in rows.values() if e["total_usd"] is not None]


def published_targets(rows: list[dict], share_of: Callable[[Iterable], float]) -> list[Published]:
    out = []
    for r in rows:
        days = tuple(pd.date_range(r["date_from"], r["date_to"], freq="D").date)
        out.append(Published(days, r["total_usd"], r["shorts_usd"], float(share_of(days)), r["source"]))
    return out


def model_24h(daily: pd.DataFrame, days, *, venue: str, measure: str, side: str | None = None) -> float:
    """The model's mean daily notional over `days` (a published '24 h' figure spanning two
    dates is held against the mean of the two days)."""
    d = daily[(daily["venue"] == venue)]
    if side is not None:
        d = d[d["side"] == side]
    dd = set(M.days_index(days))
    d = d[M.utc_day(d["date"]).isin(dd).to_numpy()]
    return float(d[measure].sum()) / max(1, len(dd))


def ftx_objective(targets: list[Published]) -> Callable[[pd.DataFrame], float]:
    """RMS of log(model FTX every-fill 24 h / scaled published figure) over the published
    days (and the Oct 25-26 shorts where given), $0.1M floor."""
    def obj(daily: pd.DataFrame) -> float:
        errs = []
        for t in targets:
            if not math.isfinite(t.share):
                continue
            m = model_24h(daily, t.days, venue="ftx", measure="liquidated_usd")
            errs.append(math.log((m + M.FLOOR_USD) / (t.target_usd + M.FLOOR_USD)))
            if t.shorts_usd is not None:
                ms = model_24h(daily, t.days, venue="ftx", measure="liquidated_usd", side="short")
                errs.append(math.log((ms + M.FLOOR_USD) / (t.shorts_usd * t.share + M.FLOOR_USD)))
        return float(np.sqrt(np.mean(np.square(errs)))) if errs else math.nan
    return obj


def ftx_ratios(daily: pd.DataFrame, targets: list[Published], observed: pd.DataFrame) -> list[dict]:
    """Per published figure: model FTX every-fill 24 h, model Binance reported 24 h, their
    ratio, the scaled published figure, Coinalyze's Binance 24 h and the published ratio."""
    out = []
    for t in targets:
        f = model_24h(daily, t.days, venue="ftx", measure="liquidated_usd")
        fs = model_24h(daily, t.days, venue="ftx", measure="liquidated_usd", side="short")
        b = model_24h(daily, t.days, venue="binance", measure="reported_usd")
        dd = set(M.days_index(t.days))
        ob = float(observed.loc[observed["date"].isin(dd), "observed_usd"].sum()) / max(1, len(dd))
        out.append({"days": [d.isoformat() for d in t.days], "label": t.label,
                    "published_ftx_all_usd": t.total_usd, "binance_coin_share": t.share,
                    "published_ftx_coins_usd": t.target_usd, "model_ftx_usd": f, "model_ftx_short_usd": fs,
                    "model_ftx_short_share": fs / f if f > 0 else math.nan,
                    "published_short_share": (t.shorts_usd / t.total_usd) if t.shorts_usd else None,
                    "model_binance_reported_usd": b, "coinalyze_binance_usd": ob,
                    "model_ftx_over_binance": f / b if b > 0 else math.nan,
                    "published_ftx_over_coinalyze": t.target_usd / ob if ob > 0 else math.nan,
                    "model_over_published": f / t.target_usd if t.target_usd > 0 else math.nan})
    return out


def oct25_scenario(ratios: list[dict], params, ftx_keys: Iterable[str]) -> tuple[dict, list[str]]:
    """What it takes to reproduce Oct 25-26 on FTX: the OI multiplier that closes the total
    (liquidations scale ~linearly with the OI a population is sized to) and the short-share
    gap. Returns (overrides for a params file, explanation lines)."""
    row = next((r for r in ratios if r["days"] and r["days"][0] == OCT25[0].isoformat()), None)
    if row is None:
        return {}, ["Oct 25-26: no published FTX figure in calibration.csv"]
    lines = [f"Oct 25-26: FTX published ${row['published_ftx_all_usd'] / 1e6:,.0f}M all markets "
             f"(~${row['published_ftx_coins_usd'] / 1e6:,.0f}M on BTC+ETH at Binance's coin share "
             f"{row['binance_coin_share']:.2f}); model FTX ${row['model_ftx_usd'] / 1e6:,.1f}M per 24 h, "
             f"model Binance reported ${row['model_binance_reported_usd'] / 1e6:,.1f}M (Coinalyze "
             f"${row['coinalyze_binance_usd'] / 1e6:,.1f}M): model FTX/Binance "
             f"{row['model_ftx_over_binance']:.2f}x vs published {row['published_ftx_over_coinalyze']:.1f}x."]
    f = row["model_ftx_usd"]
    mult = row["published_ftx_coins_usd"] / f if f > 0 else math.inf
    over: dict = {}
    keys = [k for k in ftx_keys if k in params and k.startswith("ftx.oi_ratio_to_binance")]
    if math.isfinite(mult) and keys:
        for k in keys:
            over[k] = round(float(params.get(k)) * mult, 4)
        lines.append(f"  mechanism 1 (FTX book size): FTX's OI ratio to Binance x{mult:.1f} "
                     f"({', '.join(f'{k} = {v}' for k, v in over.items())}) closes the total if liquidations scale "
                     f"with the book; outside the fitted range if above its upper bound.")
    elif math.isfinite(mult):
        lines.append(f"  mechanism 1 (FTX book size): FTX's book x{mult:.1f} would close the total "
                     "(no ftx.oi_ratio_to_binance key in this parameter file to write it to).")
    else:
        lines.append("  mechanism 1: the model liquidates nothing on FTX on Oct 25-26; no OI multiple closes that.")
    pss, mss = row.get("published_short_share"), row.get("model_ftx_short_share")
    if pss is not None and mss == mss:
        if mss < pss - 0.05:
            lines.append(f"  mechanism 2 (who is positioned short): published short share {pss:.2f}, model {mss:.2f}: "
                         "a more crowded short book on FTX (population.long_share lower) closes it.")
            if "population.long_share" in params:
                over["population.long_share"] = float(params.sweep_ranges().get("population.long_share", (0.4, 0.6))[0])
        else:
            lines.append(f"  short share: published {pss:.2f}, model {mss:.2f} (no gap to close on the side).")
    ob, pb = row.get("coinalyze_binance_usd"), row.get("model_binance_reported_usd")
    if ob and pb:
        lines.append(f"  Binance side: model reported ${pb / 1e6:,.1f}M vs Coinalyze ${ob / 1e6:,.1f}M per 24 h "
                     f"(x{pb / ob:.1f}); FTX flags every fill while Binance's stream shows one order per "
                     "symbol-second, so part of the published FTX/Binance gap is disclosure, not liquidations.")
    return over, lines


# --------------------------------------------------------------------------- params writing
def provenance_text(result: FitResult, info: dict) -> str:
    errs = info.get("errors", {})
    err = ", ".join(f"{k} {v:.3f}" for k, v in errs.items() if isinstance(v, (int, float)) and math.isfinite(v))
    return (f"liqreplay calibrate {info['date']}: {result.stage} stage ({result.method}, {result.evaluations} evals), "
            f"{info['target']}, {info['training']}; lake snapshot {info['snapshot']}; objective "
            f"{result.objective_start:.4f} -> {result.objective:.4f}" + (f"; {err}" if err else ""))


_HEADER = re.compile(r"^\[([^\]]+)\]\s*$")


def write_params_inplace(path: Path, values: dict[str, float], sources: dict[str, str]) -> None:
    """Rewrite `value = ...` and `source = ...` of each fitted leaf in a params.toml, keeping
    every other line (comments, order, ranges) as it was. Written atomically."""
    lines = Path(path).read_text().splitlines(keepends=True)
    todo = set(values)
    cur = None
    for i, line in enumerate(lines):
        m = _HEADER.match(line.strip())
        if m:
            cur = m.group(1).strip()
            continue
        if cur in values:
            s = line.lstrip()
            if s.startswith("value") and "=" in s:
                lines[i] = f"value = {_toml(values[cur])}\n"
                todo.discard(cur)
            elif s.startswith("source") and "=" in s:
                lines[i] = f"source = {_toml(sources[cur])}\n"
    if todo:
        raise KeyError(f"not found in {path}: {sorted(todo)}")
    atomic.write_text(Path(path), "".join(lines))


def write_params_file(path: Path, values: dict, sources: dict, params) -> None:
    """A parameter file of just the fitted keys (leaf tables: value, source, range)."""
    out = ["# written by `liqreplay calibrate`; load with `liqreplay run --params FILE`\n"]
    ranges = params.sweep_ranges()
    for k in sorted(values):
        out.append(f"\n[{k}]\nvalue = {_toml(values[k])}\nsource = {_toml(sources[k])}\n")
        if k in ranges:
            out.append(f"range = [{_toml(ranges[k][0])}, {_toml(ranges[k][1])}]\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(Path(path), "".join(out))


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(round(v, 6)) if math.isfinite(v) else "nan"
    return json.dumps(str(v))


# --------------------------------------------------------------------------- run outputs
def run_calibration(daily: pd.DataFrame, observed: pd.DataFrame, windows, *, year: int = YEAR,
                    coins=COINS, measure: str = "reported_usd", held_windows=None) -> dict:
    """The calibration block of a run: metrics on the run's crash-window days (held out:
    never used by the fit) from the window runs, and the year run's monthly totals and
    training-day metrics when the run has the whole year. `held_windows`: the windows whose
    days are held out of training (default: the crash windows among `windows`)."""
    train, _ = split_days(list(windows) + list(held_windows or []), year)
    _, valid = split_days(windows, year)
    crash = [w for w in windows if not getattr(w, "whole_year", False)]
    yr = [w for w in windows if getattr(w, "whole_year", False)]
    out: dict = {"measure": measure, "targets": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in M.TARGETS.items()},
                 "floor_usd": M.FLOOR_USD, "markets": list(coins), "validation": None, "training": None, "year": None}
    if crash:
        frames = [M.model_frame(daily, venue="binance", measure=measure, window=w.id) for w in crash]
        mod = pd.concat(frames, ignore_index=True).groupby(["date", "market", "side"],
                                                           as_index=False)["model_usd"].sum() \
            if frames else M.model_frame(daily.iloc[:0])
        days = sorted(set().union(*[set(d) for d in valid.values()]))
        c = M.compare(mod, observed, days, coins)
        out["validation"] = {"held_out": True, "source": "window runs", **M.summarise(c, valid)}
    for w in yr:
        mod = M.model_frame(daily, venue="binance", measure=measure, window=w.id)
        cy = M.compare(mod, observed, window_days(w), coins)
        out["year"] = {"window": w.id, **M.summarise(cy, months=True)}
        ct = M.compare(mod, observed, train, coins)
        out["training"] = {"held_out": False, "source": f"{w.id} run on the training days", **M.summarise(ct)}
    return out


def write_run_calibration(out_dir: Path | str, *, catalog, daily: pd.DataFrame, windows, coins=COINS,
                          held_windows=None) -> dict:
    """Beside summary.json: observed_daily.parquet (Coinalyze per window/day/side/market for
    the run's days, `held_out` marking window days) and calibration.json (run_calibration),
    so the report never reads the lake. Returns the calibration dict. `windows`: the run's
    scenario Windows (crash windows and/or the whole year)."""
    frames = []
    for w in windows:
        obs = observed_daily(catalog, w.start.floor("D"), w.end, coins)
        obs = obs[obs["date"].isin(set(window_days(w)))]
        frames.append(obs.assign(window=w.id))
    observed = pd.concat(frames, ignore_index=True) if frames else None
    return write_run_calibration_frames(out_dir, daily=daily, observed=observed, windows=windows,
                                        snapshot=catalog.snapshot_id(), coins=coins, held_windows=held_windows)


def write_run_calibration_frames(out_dir: Path | str, *, daily: pd.DataFrame | None, observed: pd.DataFrame | None,
                                 windows, snapshot: str | None = None, coins=COINS, held_windows=None) -> dict:
    """The writer behind write_run_calibration, from frames: `observed` has window, date,
    market, side, observed_usd (one row per window it was fetched for). Days of every
    `held_windows` window (default: the five crash windows of backtest/scenarios.toml, run or
    not) are marked held out, so a year run's days never count as training days when they
    are window days."""

    out_dir = Path(out_dir)
    if held_windows is None:
        held_windows = [w for w in load_scenarios().windows if not w.whole_year]
    _, valid = split_days(list(windows) + list(held_windows))
    held = set().union(*[set(d) for d in valid.values()]) if valid else set()
    if observed is None or len(observed) == 0:
        observed = M.observed_frame(None).assign(window=pd.Series(dtype=object))
    obs_all = observed.assign(venue="binance")
    obs_all["held_out"] = obs_all["date"].isin(held)
    obs_all = obs_all[["window", "venue", "market", "date", "side", "observed_usd", "held_out"]].reset_index(drop=True)
    _atomic_parquet(out_dir / "observed_daily.parquet", obs_all)
    uniq = obs_all.drop_duplicates(["date", "market", "side"])[["date", "market", "side", "observed_usd"]]
    cal = run_calibration(daily if daily is not None and len(daily) else pd.DataFrame(columns=DAILY_COLUMNS),
                          uniq, windows, coins=coins, held_windows=held_windows)
    cal.update({"kind": "run", "data_snapshot": snapshot})
    atomic.write_text(out_dir / "calibration.json", json.dumps(_jsonable(cal), indent=1, allow_nan=False))
    return cal


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.bool_, bool)):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, (pd.Timestamp, dt.date)):
        return o.isoformat()
    return o


# --------------------------------------------------------------------------- the command
def calibrate(catalog, scenarios, params, opts: CalibrateOptions, *, say: Callable[[str], None] = print,
              train_sim: Simulator | None = None, valid_sim: Simulator | None = None,
              ftx_sim: Simulator | None = None) -> dict:
    """Both stages, validation, outputs. Simulators default to ReplaySimulator on the lake
    (train: the whole-year window, Binance; validation: the crash windows, both venues;
    FTX stage: the windows holding a published FTX figure). Returns calibration.json's dict."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    snapshot = catalog.snapshot_id()
    crash = [w for w in scenarios.windows if not w.whole_year]
    train, valid = split_days(crash)
    observed = observed_daily(catalog, pd.Timestamp(f"{YEAR}-01-01", tz="UTC"),
                              pd.Timestamp(f"{YEAR + 1}-01-01", tz="UTC"))
    n_train = int(observed["date"].isin(set(train)).sum())
    if n_train == 0:
        raise UserError("the lake has no Binance daily liquidations for 2022 (Coinalyze): "
                        "run `liqreplay import ../shared/data` into the lake first")
    published = published_targets(read_published(opts.calibration_csv),
                                  lambda days: binance_coin_share(catalog, days)) \
        if Path(opts.calibration_csv).exists() else []
    pub_windows = sorted({w.id for w in crash for t in published
                          if any(pd.Timestamp(d, tz="UTC") in set(window_days(w)) for d in t.days)})
    kw = dict(params=params, coins=COINS, n_accounts=opts.accounts, seed=opts.seed, book=opts.book)
    train_sim = train_sim or ReplaySimulator(catalog, scenarios, [opts.year_window], venues=("binance",), **kw)
    valid_sim = valid_sim or ReplaySimulator(catalog, scenarios, [w.id for w in crash], venues=("binance", "ftx"), **kw)
    if ftx_sim is None and pub_windows:
        ftx_sim = ReplaySimulator(catalog, scenarios, pub_windows, venues=("ftx",), **kw)
    ident = "|".join(getattr(s, "ident", type(s).__name__) for s in (train_sim, valid_sim, ftx_sim) if s is not None)
    # the cache key ignores the current values of the fitted keys (every evaluation sets them),
    # so a re-run after the fitted values were written still reuses the evaluations
    fitted_keys = [k for k in list(opts.keys) + list(opts.ftx_keys) if k in params]
    base = {k: v for k, v in params.to_dict().items() if k not in fitted_keys}
    base_hash = hashlib.sha256(json.dumps(base, sort_keys=True, default=str).encode()).hexdigest()
    cache = EvalCache(out / "evals.jsonl", hashlib.sha256(
        "|".join([ident, base_hash, snapshot, opts.method, str(opts.long_share_weight)]).encode()).hexdigest()[:16])

    say(f"calibrate: lake snapshot {snapshot}; training days {len(train)} (2022 outside the windows; "
        f"{n_train} Coinalyze day-sides there), validation days {sum(len(d) for d in valid.values())} "
        f"({', '.join(valid)}); {opts.accounts} simulated accounts per series, seed {opts.seed}")
    # ---- stage 1: Binance, shared population parameters
    objective = binance_objective(observed, train, long_share_weight=opts.long_share_weight,
                                  long_share_windows=month_groups(train) if opts.long_share_weight else None)
    r1 = fit(train_sim, params, opts.keys, objective, stage="binance", method=opts.method,
             max_evals=opts.max_evals, seed=opts.seed, cache=cache, progress=opts.progress)
    if r1.skipped:
        say(f"  not in this parameter file (or no range), not fitted: {', '.join(r1.skipped)}")
    say(f"stage 1 ({r1.method}, {r1.evaluations} evaluations): training log-RMSE {r1.objective_start:.3f} "
        f"at the range midpoints -> {r1.objective:.3f}")
    for k in r1.keys:
        say(f"  {k} = {r1.fitted[k]:.4g}   (was {params.get(k)})")
    p1 = params.with_overrides(r1.fitted) if r1.fitted else params
    # ---- stage 2: FTX's own parameters on the published figures
    r2 = None
    if ftx_sim is not None and published and opts.ftx_evals > 0:
        r2 = fit(ftx_sim, p1, opts.ftx_keys, ftx_objective(published), stage="ftx", method=opts.method,
                 max_evals=opts.ftx_evals, seed=opts.seed, cache=cache, progress=opts.progress)
        if r2.skipped:
            say(f"  FTX stage, not in this parameter file (or no range), not fitted: {', '.join(r2.skipped)}")
        if r2.keys:
            say(f"stage 2 (FTX, {r2.evaluations} evaluations): RMS log error vs the scaled published totals "
                f"{r2.objective_start:.3f} -> {r2.objective:.3f}")
            for k in r2.keys:
                say(f"  {k} = {r2.fitted[k]:.4g}   (was {p1.get(k)})")
    p2 = p1.with_overrides(r2.fitted) if r2 is not None and r2.fitted else p1
    # ---- validation and the year
    daily_year = train_sim(p2)
    daily_valid = valid_sim(p2)
    c_train = M.compare(M.model_frame(daily_year), observed, train, COINS)
    c_year = M.compare(M.model_frame(daily_year), observed, pd.date_range(f"{YEAR}-01-01", f"{YEAR + 1}-01-01",
                                                                           freq="D", inclusive="left", tz="UTC"), COINS)
    vdays = sorted(set().union(*[set(d) for d in valid.values()]))
    c_valid = M.compare(M.model_frame(daily_valid), observed, vdays, COINS)
    s_train = M.summarise(c_train)
    s_year = M.summarise(c_year, months=True)
    s_valid = M.summarise(c_valid, valid)
    for line in M.format_summary("training (year run, days outside the windows)", s_train):
        say(line)
    for line in M.format_summary("validation (window runs, held out)", s_valid):
        say(line)
    for line in M.format_summary("whole year (year run)", s_year)[:1] + \
            [ln for ln in M.format_summary("", s_year) if "months" in ln or ln.startswith("    20")]:
        say(line)
    both = pd.concat([daily_valid, daily_year], ignore_index=True)
    ratios = ftx_ratios(both[both["window"] != opts.year_window] if len(both) else both, published, observed) \
        if published else []
    for r in ratios:
        say(f"FTX {r['label']}: model ${r['model_ftx_usd'] / 1e6:,.1f}M per 24 h vs published (scaled to BTC+ETH) "
            f"${r['published_ftx_coins_usd'] / 1e6:,.1f}M (x{r['model_over_published']:.2f}); FTX/Binance model "
            f"{r['model_ftx_over_binance']:.2f}x, published {r['published_ftx_over_coinalyze']:.2f}x")
    oct_over, oct_lines = oct25_scenario(ratios, p2, opts.ftx_keys)
    for line in oct_lines:
        say(line)
    # ---- provenance, params, outputs
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    errors = {"train log-RMSE": s_train["overall"]["log_rmse"], "validation log-RMSE": s_valid["overall"]["log_rmse"],
              "validation corr(log)": s_valid["overall"]["corr_log"]}
    info1 = {"date": today, "snapshot": f"{snapshot} (simulator --book {opts.book}, {opts.accounts} accounts, "
                                        f"seed {opts.seed})", "errors": errors,
             "target": "Coinalyze Binance BTCUSDT+ETHUSDT daily long/short liquidations vs the model's reported figure",
             "training": f"{len(train)} training days (2022 outside the five windows)"}
    sources = {k: provenance_text(r1, info1) for k in r1.keys}
    values = dict(r1.fitted)
    if r2 is not None and r2.keys:
        info2 = {**info1, "target": "FTX published every-fill 24 h totals (calibration.csv) x Binance's BTC+ETH share",
                 "training": "published days " + ", ".join(t.label for t in published),
                 "errors": {"RMS log error": r2.objective}}
        sources.update({k: provenance_text(r2, info2) for k in r2.keys})
        values.update(r2.fitted)
    written = None
    if opts.write_params and values:
        if opts.params_out:
            write_params_file(Path(opts.params_out), values, sources, params)
            written = str(opts.params_out)
        else:
            target = Path(opts.params_path) if opts.params_path else Path(params.path)
            write_params_inplace(target, values, sources)
            written = str(target)
        say(f"fitted values written to {written} (with their provenance)")
    oct_file = None
    if opts.oct25_out:
        oct_file = Path(opts.oct25_out)
        body = ["# What it would take to reproduce FTX's Oct 25-26 2022 liquidations ($618M, $517M of it\n",
                "# shorts, while Binance's stream showed ~$45M), from `liqreplay calibrate` " + today + ".\n",
                f"# Simulator: --book {opts.book}, {opts.accounts} accounts per series, seed {opts.seed}.\n",
                "# Run: liqreplay run --window 2022-10 --params " + str(oct_file) + "\n"]
        body += [f"# {ln}\n" for ln in oct_lines]
        ranges = p2.sweep_ranges()
        for k, v in sorted(oct_over.items()):
            body.append(f"\n[{k}]\nvalue = {_toml(v)}\nsource = {_toml('oct25 scenario: see the header')}\n")
            if k in ranges and not ranges[k][0] <= v <= ranges[k][1]:  # say it leaves the fitted range
                lo, hi = min(ranges[k][0], v), max(ranges[k][1], v)
                body.append(f"range = [{_toml(float(lo))}, {_toml(float(hi))}]   "
                            f"# widened: the default range is {list(ranges[k])}\n")
        oct_file.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(oct_file, "".join(body))
        say(f"Oct 25-26 scenario written to {oct_file}")
    cal = {"kind": "fit", "data_snapshot": snapshot, "date": today, "seed": opts.seed, "accounts": opts.accounts,
           "measure": "reported_usd", "floor_usd": M.FLOOR_USD, "markets": list(COINS),
           "targets": {k: list(v) if isinstance(v, tuple) else v for k, v in M.TARGETS.items()},
           "training_days": [d.date().isoformat() for d in train],
           "validation_days": {k: [d.date().isoformat() for d in v] for k, v in valid.items()},
           "fit": r1.to_dict(), "ftx_fit": r2.to_dict() if r2 else None,
           "training": {"held_out": False, "source": f"{opts.year_window} run on the training days", **s_train},
           "validation": {"held_out": True, "source": "window runs", **s_valid},
           "year": {"window": opts.year_window, **s_year},
           "ftx_ratios": ratios, "oct25": {"lines": oct_lines, "overrides": oct_over,
                                           "file": str(oct_file) if oct_file else None},
           "params_written": written}
    _atomic_parquet(out / "daily.parquet", both)
    comp = pd.concat([c_train.assign(set="training"), c_valid.assign(set="validation")], ignore_index=True)
    _atomic_parquet(out / "compared.parquet", comp)
    atomic.write_text(out / "calibration.json", json.dumps(_jsonable(cal), indent=1, allow_nan=False))
    say(f"saved {out}/calibration.json, daily.parquet, compared.parquet")
    return cal
