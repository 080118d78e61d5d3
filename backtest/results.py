"""Run results on disk (Contract 3): summary.json + Parquet tables, and their loader.

    write_results(out_dir, meta=..., windows=..., rows=..., series=..., events=..., daily=..., sweep=...)
    load_results(out_dir) -> Results(summary, rows, series, events, sweep, daily)

House loss (v2, MODEL.md 3.7) = BLP loss + fund payouts beyond its income + the exempt
account's deficit, each also a row field (backtest/replay/recorder.py `loss_accounting`).
daily.parquet: per (window, venue, market, UTC day, liquidated side) actual and reported
liquidated notional and the model's open notional at the day's end (MODEL.md 7).
Every money figure of a row is also given per $1B of open interest.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from fetch import atomic

SUMMARY_JSON = "summary.json"
TABLES = ("summary", "series", "events", "sweep", "daily")

# money figures of a row (each also as <name>_per_1b_oi)
MONEY_FIELDS = (
    "liquidated_usd", "reported_liquidated_usd", "liquidated_step1_usd", "liquidated_step2_blp_usd",
    "liquidated_overflow_usd", "liquidated_ioc_usd", "liquidated_fund_usd", "adl_usd",
    "blp_takeover_usd", "blp_pnl_usd", "blp_loss_usd", "fund_start_usd", "fund_min_usd", "fund_end_usd",
    "fund_deficit_usd", "exempt_deficit_usd", "user_loss_usd", "house_loss_usd", "counterparty_loss_usd",
    "blp_discount_usd", "blp_move_usd", "blp_hedge_cost_usd", "blp_collateral_sales_usd", "blp_haircut_gain_usd",
    "blp_unhedged_mtm_usd", "blp_loss_gross_usd", "fund_income_usd", "fund_payouts_usd", "fund_drawdown_usd",
    "fund_net_payout_usd", "house_loss_gross_usd",
)
ROW_FIELDS = ("window", "venue", "market", "symbol") + MONEY_FIELDS + (
    "accounts", "accounts_liquidated", "open_interest_usd", "oi_source", "timeframe", "price_source",
    "adv_usd", "adv_source", "bars", "gaps_pct", "events", "fund_time_below_start_s",
)
DAILY_COLUMNS = ("window", "venue", "market", "date", "side", "liquidated_usd", "reported_usd", "oi_usd")
EVENT_COLUMNS = ("window", "venue", "market", "ts", "account", "side", "mechanism", "qty_coin",
                 "price", "mark_price", "notional_usd", "user_loss_usd", "fund_delta_usd", "reported", "reported_usd")
SERIES_MECHANISMS = ("step1", "step2_blp", "overflow", "ioc", "fund", "adl")


def house_loss(blp_pnl_usd: float, fund_end_usd: float) -> tuple[float, float, float]:
    """v1 definition, kept for old result sets: (blp_loss, fund_deficit, house_loss) with BLP loss =
    max(0, -P&L) and fund deficit = max(0, -end balance). Rows now carry the v2 parts."""
    blp_loss = max(0.0, -float(blp_pnl_usd))
    deficit = max(0.0, -float(fund_end_usd))
    return blp_loss, deficit, blp_loss + deficit


def add_per_1b(row: dict) -> dict:
    oi = float(row.get("open_interest_usd") or 0.0)
    for name in MONEY_FIELDS:
        if name in row:
            v = row[name]
            ok = oi > 0 and v is not None and np.isfinite(v)
            row[f"{name}_per_1b_oi"] = (float(v) * 1e9 / oi) if ok else float("nan")
    return row


def cross_venue(rows: list[dict]) -> list[dict]:
    """FTX / Binance ratios per (window, market)."""
    by = {}
    for r in rows:
        by[(r["window"], r["market"], r["venue"])] = r
    out = []
    keys = sorted({(r["window"], r["market"]) for r in rows})
    for w, m in keys:
        f, b = by.get((w, m, "ftx")), by.get((w, m, "binance"))
        if f is None or b is None:
            continue
        item = {"window": w, "market": m}
        for name in ("house_loss_usd", "liquidated_usd", "reported_liquidated_usd", "user_loss_usd"):
            fv, bv = float(f[name]), float(b[name])
            short = name.replace("_usd", "")
            item[f"ftx_{name}"] = fv
            item[f"binance_{name}"] = bv
            item[f"{short}_ratio"] = _ratio(fv, bv)
            fp, bp = f.get(f"{name}_per_1b_oi"), b.get(f"{name}_per_1b_oi")
            item[f"{short}_per_1b_oi_ratio"] = _ratio(fp, bp)
        item["ratio"] = item["house_loss_ratio"]
        item["ftx_price_source"] = f.get("price_source")
        item["binance_price_source"] = b.get("price_source")
        out.append(item)
    return out


def _ratio(a, b):
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b):
        return None
    if b == 0:
        return None if a == 0 else float("inf")
    return float(a) / float(b)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        f = float(o)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (pd.Timestamp, datetime)):
        return pd.Timestamp(o).isoformat()
    return o


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic.write_bytes(path, data)


def _atomic_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic.atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, compression="zstd")


def _frame(obj, columns=None) -> pd.DataFrame:
    if obj is None:
        return pd.DataFrame(columns=list(columns or []))
    if isinstance(obj, pd.DataFrame):
        return obj
    if isinstance(obj, list):
        if obj and isinstance(obj[0], pd.DataFrame):
            frames = [f for f in obj if len(f)]
            return pd.concat(frames, ignore_index=True) if frames else obj[0].iloc[0:0]
        return pd.DataFrame(obj, columns=list(columns) if (columns and not obj) else None)
    raise TypeError(f"cannot make a frame of {type(obj).__name__}")


def write_results(out_dir: Path | str, *, meta: dict, windows: list[dict], rows: list[dict],
                  series=None, events=None, sweep=None, sweep_quantiles=None, coverage=None, daily=None) -> Path:
    """Write summary.json and the Parquet tables into out_dir (created). `meta` carries
    run_id, data_snapshot, params_hash, params_file, seed, params, param_sources, param_ranges."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [add_per_1b(dict(r)) for r in rows]
    summary = {
        "run_id": meta.get("run_id") or out.name,
        "created_utc": meta.get("created_utc") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_snapshot": meta.get("data_snapshot"),
        "params_hash": meta.get("params_hash"),
        "params_file": meta.get("params_file"),
        "seed": meta.get("seed"),
        "params": meta.get("params", {}),
        "param_sources": meta.get("param_sources", {}),
        "param_ranges": {k: list(v) for k, v in (meta.get("param_ranges") or {}).items()},
        "windows": windows,
        "rows": rows,
        "cross_venue": cross_venue(rows),
        "sweep": ({"params": list(meta.get("sweep_params") or []), "samples": meta.get("sweep_samples"),
                   "quantiles": sweep_quantiles or []} if sweep_quantiles is not None else None),
        "coverage": coverage or [],
    }
    for k in ("n_accounts", "lake", "notes", "command"):
        if k in meta:
            summary[k] = meta[k]
    ev = _frame(events, EVENT_COLUMNS)
    se = _frame(series, ("window", "venue", "market", "ts", "price"))
    sw = _frame(sweep, ("sample", "window", "venue", "market"))
    da = _frame(daily, DAILY_COLUMNS)
    _atomic_parquet(out / "summary.parquet", pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(ROW_FIELDS)))
    _atomic_parquet(out / "series.parquet", se)
    _atomic_parquet(out / "events.parquet", ev)
    _atomic_parquet(out / "sweep.parquet", sw)
    _atomic_parquet(out / "daily.parquet", da)
    # summary.json last: its presence marks a complete write
    _atomic_write_bytes(out / SUMMARY_JSON, json.dumps(_jsonable(summary), indent=2, allow_nan=False).encode())
    return out


@dataclass
class Results:
    summary: dict
    rows: pd.DataFrame
    series: pd.DataFrame
    events: pd.DataFrame
    sweep: pd.DataFrame
    daily: pd.DataFrame = None

    @property
    def cross_venue(self) -> list[dict]:
        return self.summary.get("cross_venue", [])


def load_results(out_dir: Path | str) -> Results:
    d = Path(out_dir)
    p = d / SUMMARY_JSON
    if not p.exists():
        raise FileNotFoundError(f"no {SUMMARY_JSON} in {d}: run `liqreplay run --out {d}` first")
    summary = json.loads(p.read_text())

    def rd(name):
        f = d / f"{name}.parquet"
        return pd.read_parquet(f) if f.exists() else pd.DataFrame()
    return Results(summary, rd("summary"), rd("series"), rd("events"), rd("sweep"), rd("daily"))
