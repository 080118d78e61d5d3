"""Calibration metrics: the model's daily liquidations held against Coinalyze (MODEL.md 6).

Pure functions on frames, no file, clock or network. Inputs:
- the model's daily frame (`daily.parquet`, brief interface 1): window, venue, market, date,
  side ('long'|'short' = the liquidated position), liquidated_usd, reported_usd, oi_usd;
- the observed daily frame (`observed_frame`): date, market, side, observed_usd (Coinalyze's
  Binance USD-M daily long/short liquidations, base units x the daily close).

`compare` aligns the two on (market, date, side) for a set of days (a day-side the model
did not write counts as a model zero); the metric functions then work on that frame:
log-RMSE of daily notional with a $0.1M floor, correlation of log daily notional, the share
of day-sides where the model is zero, the long share's mean absolute error per window,
the window-sum ratio, and monthly totals with the 0.5-2x check. `TARGETS` are issue 8's.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

FLOOR_USD = 1e5  # the $0.1M floor of the log-RMSE (so zero days count)
SIDES = ("long", "short")

# issue 8 targets (held-out window days, Binance BTCUSDT+ETHUSDT, reported vs Coinalyze)
TARGETS = {
    "log_rmse": ("<=", 1.0),
    "corr_log": (">=", 0.7),
    "zero_share": ("<=", 0.05),
    "long_share_mae": ("<=", 0.15),
    "month_ratio": ("within", (0.5, 2.0)),
}

COMPARE_COLUMNS = ["market", "date", "side", "model_usd", "observed_usd"]


def utc_day(x) -> pd.Series:
    """Any date-like column -> datetime64[ns, UTC] at 00:00."""
    s = pd.to_datetime(pd.Series(x), utc=True)
    return s.dt.floor("D").astype("datetime64[ns, UTC]")


def days_index(days: Iterable) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(utc_day(list(days))).unique().sort_values()


def observed_frame(liq: pd.DataFrame, coins: Iterable[str] | None = None) -> pd.DataFrame:
    """Catalog liquidation rows (symbol, ts, side, notional_usd) -> date, market, side, observed_usd.

    `market` is the coin: the symbol with its quote (USDT/BUSD) removed."""
    if liq is None or len(liq) == 0:
        return pd.DataFrame({"date": pd.Series(dtype="datetime64[ns, UTC]"), "market": pd.Series(dtype=object),
                             "side": pd.Series(dtype=object), "observed_usd": pd.Series(dtype=float)})
    df = pd.DataFrame({
        "date": utc_day(liq["ts"]).to_numpy(),
        "market": liq["symbol"].astype(str).str.replace(r"(USDT|BUSD)$", "", regex=True).to_numpy(),
        "side": liq["side"].astype(str).to_numpy(),
        "observed_usd": liq["notional_usd"].astype(float).to_numpy(),
    })
    if coins is not None:
        df = df[df["market"].isin(list(coins))]
    return df.groupby(["date", "market", "side"], as_index=False)["observed_usd"].sum()


def model_frame(daily: pd.DataFrame, *, venue: str = "binance", measure: str = "reported_usd",
                window: str | None = None) -> pd.DataFrame:
    """Model daily frame -> date, market, side, model_usd for one venue (optionally one window)."""
    d = daily[daily["venue"] == venue]
    if window is not None:
        d = d[d["window"] == window]
    out = pd.DataFrame({"date": utc_day(d["date"]).to_numpy(), "market": d["market"].astype(str).to_numpy(),
                        "side": d["side"].astype(str).to_numpy(), "model_usd": d[measure].astype(float).to_numpy()})
    return out.groupby(["date", "market", "side"], as_index=False)["model_usd"].sum()


def compare(model: pd.DataFrame, observed: pd.DataFrame, days: Iterable, markets: Iterable[str]) -> pd.DataFrame:
    """One row per (market, day, side) on `days` where Coinalyze has a value: model_usd
    (0 where the model wrote nothing), observed_usd. Days without observed data are left out."""
    idx = pd.MultiIndex.from_product([list(markets), days_index(days), list(SIDES)], names=["market", "date", "side"])
    obs = observed.set_index(["market", "date", "side"])["observed_usd"]
    mod = model.set_index(["market", "date", "side"])["model_usd"]
    out = pd.DataFrame(index=idx)
    out["model_usd"] = mod.reindex(idx).fillna(0.0).to_numpy()
    out["observed_usd"] = obs.reindex(idx).to_numpy()
    out = out.dropna(subset=["observed_usd"]).reset_index()
    return out[COMPARE_COLUMNS]


# ------------------------------------------------------------------ metrics on a compare frame
def log_errors(c: pd.DataFrame, floor: float = FLOOR_USD) -> np.ndarray:
    return np.log((c["model_usd"].to_numpy() + floor) / (c["observed_usd"].to_numpy() + floor))


def log_rmse(c: pd.DataFrame, floor: float = FLOOR_USD) -> float:
    e = log_errors(c, floor)
    return float(np.sqrt(np.mean(e ** 2))) if len(e) else math.nan


def corr_log(c: pd.DataFrame, floor: float = FLOOR_USD) -> float:
    """Pearson correlation of log(model + floor) and log(observed + floor)."""
    if len(c) < 3:
        return math.nan
    a = np.log(c["model_usd"].to_numpy() + floor)
    b = np.log(c["observed_usd"].to_numpy() + floor)
    if np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def zero_share(c: pd.DataFrame) -> float:
    """Share of day-sides where the model is zero (and Coinalyze is not)."""
    m = c["observed_usd"].to_numpy() > 0
    return float(np.mean(c["model_usd"].to_numpy()[m] <= 0)) if m.any() else math.nan


def sum_ratio(c: pd.DataFrame) -> float:
    o = float(c["observed_usd"].sum())
    return float(c["model_usd"].sum()) / o if o > 0 else math.nan


def long_share(c: pd.DataFrame, col: str) -> float:
    tot = float(c[col].sum())
    return float(c.loc[c["side"] == "long", col].sum()) / tot if tot > 0 else math.nan


def long_share_errors(c: pd.DataFrame, windows: dict[str, Iterable]) -> pd.DataFrame:
    """Per window and market: long share of the window's sum, model vs observed, abs error.
    A window where the model liquidated nothing counts as error 1 (no share is no match)."""
    rows = []
    for wid, days in windows.items():
        d = set(days_index(days))
        sub = c[c["date"].isin(d)]
        for market, g in sub.groupby("market"):
            lm, lo = long_share(g, "model_usd"), long_share(g, "observed_usd")
            err = abs(lm - lo) if not (math.isnan(lm) or math.isnan(lo)) else (1.0 if not math.isnan(lo) else math.nan)
            rows.append({"window": wid, "market": market, "long_share_model": lm, "long_share_observed": lo,
                         "abs_error": err, "sum_ratio": sum_ratio(g)})
    return pd.DataFrame(rows, columns=["window", "market", "long_share_model", "long_share_observed",
                                       "abs_error", "sum_ratio"])


def monthly_totals(c: pd.DataFrame, lo: float = 0.5, hi: float = 2.0) -> pd.DataFrame:
    """Per calendar month (all markets and sides summed): model, observed, ratio, within [lo, hi]."""
    if len(c) == 0:
        return pd.DataFrame(columns=["month", "model_usd", "observed_usd", "ratio", "within"])
    month = pd.to_datetime(c["date"]).dt.tz_convert("UTC").dt.strftime("%Y-%m")
    g = c.assign(month=month).groupby("month", as_index=False)[["model_usd", "observed_usd"]].sum()
    obs = g["observed_usd"]
    g["ratio"] = np.where(obs > 0, g["model_usd"] / obs.where(obs > 0), np.nan)
    g["within"] = (g["ratio"] >= lo) & (g["ratio"] <= hi)
    return g


def _block(c: pd.DataFrame) -> dict:
    return {"day_sides": int(len(c)), "log_rmse": log_rmse(c), "corr_log": corr_log(c),
            "zero_share": zero_share(c), "sum_ratio": sum_ratio(c),
            "model_usd": float(c["model_usd"].sum()), "observed_usd": float(c["observed_usd"].sum())}


def summarise(c: pd.DataFrame, windows: dict[str, Iterable] | None = None, *, months: bool = False) -> dict:
    """All metrics of one compare frame: overall, per market and side, per window (long-share
    error, window-sum ratio), monthly totals if `months`; each target checked in `pass`."""
    out: dict = {"overall": _block(c), "by_market_side": []}
    for (market, side), g in c.groupby(["market", "side"], sort=True):
        out["by_market_side"].append({"market": market, "side": side, **_block(g)})
    checks = {k: check(k, out["overall"][k]) for k in ("log_rmse", "corr_log", "zero_share")}
    if windows:
        ls = long_share_errors(c, windows)
        out["windows"] = ls.to_dict("records")
        mae = float(ls["abs_error"].mean()) if len(ls) else math.nan
        out["overall"]["long_share_mae"] = mae
        checks["long_share_mae"] = check("long_share_mae", mae)
    if months:
        mt = monthly_totals(c)
        out["months"] = mt.to_dict("records")
        checks["month_ratio"] = bool(len(mt)) and bool(mt["within"].all())
    out["pass"] = checks
    return out


def check(name: str, value) -> bool | None:
    """Does `value` meet the target `name`? None when the value is not a number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    op, t = TARGETS[name]
    if op == "<=":
        return bool(value <= t)
    if op == ">=":
        return bool(value >= t)
    return bool(t[0] <= value <= t[1])


def target_text(name: str) -> str:
    op, t = TARGETS[name]
    return f"{t[0]}-{t[1]}x" if op == "within" else f"{op} {t}"


def format_summary(title: str, s: dict) -> list[str]:
    """Printable lines: the metrics next to their targets."""
    o = s["overall"]

    def fmt(v, pct=False):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        return f"{100 * v:.1f}%" if pct else f"{v:.3f}"

    def mark(k):
        p = s["pass"].get(k)
        return "ok" if p else ("n/a" if p is None else "MISS")

    lines = [f"{title}: {o['day_sides']} day-sides, model ${o['model_usd'] / 1e6:,.1f}M vs "
             f"Coinalyze ${o['observed_usd'] / 1e6:,.1f}M (sum ratio {fmt(o['sum_ratio'])})",
             f"  log-RMSE     {fmt(o['log_rmse']):>8}  target {target_text('log_rmse'):<10} {mark('log_rmse')}",
             f"  corr(log)    {fmt(o['corr_log']):>8}  target {target_text('corr_log'):<10} {mark('corr_log')}",
             f"  model zero   {fmt(o['zero_share'], True):>8}  target <= 5%      {mark('zero_share')}"]
    if "long_share_mae" in o:
        lines.append(f"  long-sh MAE  {fmt(o['long_share_mae']):>8}  target {target_text('long_share_mae'):<10} "
                     f"{mark('long_share_mae')}")
    for r in s["by_market_side"]:
        lines.append(f"    {r['market']:<4} {r['side']:<5} n={r['day_sides']:<4} log-RMSE {fmt(r['log_rmse'])} "
                     f"corr {fmt(r['corr_log'])} zero {fmt(r['zero_share'], True)} sum ratio {fmt(r['sum_ratio'])}")
    for w in s.get("windows", []):
        lines.append(f"    window {w['window']} {w['market']}: long share model {fmt(w['long_share_model'])} "
                     f"vs {fmt(w['long_share_observed'])}, sum ratio {fmt(w['sum_ratio'])}")
    if "months" in s:
        n_ok = sum(1 for m in s["months"] if m["within"])
        lines.append(f"  months within 0.5-2x: {n_ok}/{len(s['months'])}  {mark('month_ratio')}")
        for m in s["months"]:
            lines.append(f"    {m['month']}: model ${m['model_usd'] / 1e6:,.1f}M vs ${m['observed_usd'] / 1e6:,.1f}M "
                         f"ratio {fmt(m['ratio'])}{'' if m['within'] else '  (outside)'}")
    return lines
