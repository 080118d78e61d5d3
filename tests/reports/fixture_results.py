"""A synthetic results directory shaped like Contract 3 (what `liqreplay run` writes).

Used by the report tests and by the size/time measurement. The numbers are made up but
internally consistent (cumulative columns are the cumsum of the flows, house loss = BLP
loss + fund deficit, per-$1B-OI columns match) so the report's arithmetic can be checked.
When `backtest.results.write_results` exists the files are written through it, so the
fixture follows the replay's real writer; otherwise they are written here to the contract.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

WINDOWS = [
    ("2022-01", "January sell-off (Jan 20-25)", "2022-01-20", "2022-01-26"),
    ("2022-05", "LUNA/UST collapse (May 5-15)", "2022-05-05", "2022-05-16"),
    ("2022-06", "Celsius / 3AC (Jun 10-20)", "2022-06-10", "2022-06-21"),
    ("2022-10", "Oct 25 short squeeze (Oct 24-27)", "2022-10-24", "2022-10-28"),
    ("2022-11", "FTX collapse (Nov 6-12)", "2022-11-06", "2022-11-13"),
    ("2022-year", "Whole year 2022 (the 24/7 machine)", "2022-01-01", "2023-01-01"),
]
VENUES = ("ftx", "binance")
MARKETS = {"BTC": 40_000.0, "ETH": 3_000.0}
SYMBOLS = {("ftx", "BTC"): "BTC-PERP", ("ftx", "ETH"): "ETH-PERP",
           ("binance", "BTC"): "BTCUSDT", ("binance", "ETH"): "ETHUSDT"}
MECHANISMS = {
    "ftx": ("step1", "step2_blp", "overflow", "fund"),
    "binance": ("ioc", "fund"),
}
ALL_MECHANISMS = ("step1", "step2_blp", "overflow", "ioc", "fund")
MONEY = (
    "liquidated_usd", "reported_liquidated_usd", "liquidated_step1_usd",
    "liquidated_step2_blp_usd", "liquidated_overflow_usd", "liquidated_ioc_usd",
    "liquidated_fund_usd", "adl_usd", "blp_takeover_usd", "blp_pnl_usd", "fund_start_usd",
    "fund_min_usd", "fund_end_usd", "exempt_deficit_usd", "user_loss_usd", "house_loss_usd",
)
PARAMS = {
    "ftx.blp.hedge_latency_s": (5.0, (1.0, 30.0), "MODEL.md 3.6 default; unknown in 2022"),
    "ftx.blp.hedge_ratio": (1.0, (0.5, 1.0), "MODEL.md 3.6"),
    "ftx.insurance_fund_start_usd": (1.0e8, (2.0e7, 2.5e8), "advertised >$100M (2021)"),
    "binance.liq_fee_rate": (0.0125, (0.005, 0.015), "Binance fee schedule 2022 (uncertain)"),
    "execution.eta.ftx": (1.0, (0.5, 2.0), "square-root law default"),
    "population.leverage_scale": (1.0, (0.5, 2.0), "sweep knob"),
}


def _window_frame(win_id, start, end, freq, rng, substituted_ftx):
    ts = pd.date_range(start, end, freq=freq, inclusive="left", tz="UTC")
    n = len(ts)
    frames = []
    for market, p0 in MARKETS.items():
        shocks = rng.normal(0, 0.0008, n)
        shocks[n // 2: n // 2 + max(1, n // 50)] -= 0.004  # a crash in the middle
        base = p0 * np.exp(np.cumsum(shocks))
        for venue in VENUES:
            price = base * (1 + (0.0 if venue == "binance" else rng.normal(0, 0.0002, n)))
            if venue == "ftx" and substituted_ftx:
                price = base.copy()  # the reference venue's path stands in
            data = {"window": win_id, "venue": venue, "market": market, "ts": ts, "price": price}
            stress = np.clip(-np.diff(np.log(price), prepend=np.log(price[0])), 0, None) * 5e9
            total = np.zeros(n)
            for mech in ALL_MECHANISMS:
                if mech in MECHANISMS[venue]:
                    flow = stress * rng.uniform(0.1, 1.0) * (rng.random(n) < 0.3)
                else:
                    flow = np.zeros(n)
                data[f"liquidated_{mech}_usd"] = flow
                total += flow
            data["reported_liquidated_usd"] = total * (0.2 if venue == "binance" else 0.95)
            blp = np.cumsum(-data["liquidated_step2_blp_usd"] * 0.01 + 100.0) if venue == "ftx" else np.zeros(n)
            data["blp_pnl_cum_usd"] = blp
            fund0 = 1.0e7 if venue == "ftx" else 2.0e6
            data["fund_balance_usd"] = fund0 + np.cumsum(total * 0.002 - data["liquidated_fund_usd"] * 0.05)
            adl = total * 0.01 * (rng.random(n) < 0.02) if venue == "binance" else np.zeros(n)
            data["liquidated_adl_usd"] = adl
            data["adl_usd"] = adl
            frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True)


def _row(series_part, win_id, venue, market, price_source, oi_usd):
    s = series_part
    row = {"window": win_id, "venue": venue, "market": market, "symbol": SYMBOLS[(venue, market)]}
    mech_sums = {m: float(s[f"liquidated_{m}_usd"].sum()) for m in ALL_MECHANISMS + ("adl",)}
    row["liquidated_usd"] = sum(mech_sums.values())
    row["reported_liquidated_usd"] = float(s["reported_liquidated_usd"].sum())
    for m, v in mech_sums.items():
        row[f"liquidated_{m}_usd"] = v
    row["adl_usd"] = float(s["adl_usd"].sum())
    row["accounts_liquidated"] = int(row["liquidated_usd"] // 25_000)
    row["blp_takeover_usd"] = mech_sums["step2_blp"]
    row["blp_pnl_usd"] = float(s["blp_pnl_cum_usd"].iloc[-1])
    fund = s["fund_balance_usd"].to_numpy()
    row["fund_start_usd"] = float(fund[0])
    row["fund_min_usd"] = float(fund.min())
    row["fund_end_usd"] = float(fund[-1])
    row["exempt_deficit_usd"] = 0.0
    row["user_loss_usd"] = row["liquidated_usd"] * 0.05
    row["blp_loss_usd"] = max(0.0, -row["blp_pnl_usd"])
    row["fund_deficit_usd"] = max(0.0, -row["fund_end_usd"])
    row["counterparty_loss_usd"] = row["adl_usd"] * 0.02 + row["liquidated_overflow_usd"] * 0.01
    row["house_loss_usd"] = row["blp_loss_usd"] + row["fund_deficit_usd"]
    row["open_interest_usd"] = oi_usd
    row["oi_source"] = "lake: coinalyze" if venue == "binance" else "scenario default (K33 x Messari)"
    row["timeframe"] = "1m"
    row["price_source"] = price_source
    return row


EVIL = "<script>alert(1)</script>"


def build_results(*, freq="15min", year_freq="1D", with_sweep=True, skip=("2022-06",),
                  label_suffix="", seed=7, n_samples=24, evil_param=False):
    """Return (summary dict, rows, series, events, sweep) shaped like Contract 3.

    `label_suffix` is appended to every window label and `evil_param` adds a parameter whose
    name and source are markup, so the escaping can be tested end to end.
    """
    rng = np.random.default_rng(seed)
    params = dict(PARAMS)
    if evil_param:
        params[f"evil.{EVIL}"] = (1.0, (0.0, 2.0), '<img src="x" onerror="alert(2)"> & co')
    windows, rows, series = [], [], []
    for win_id, label, start, end in WINDOWS:
        entry = {"id": win_id, "label": label + label_suffix, "start": f"{start}T00:00:00Z",
                 "end": f"{end}T00:00:00Z", "status": "ran", "reason": ""}
        if win_id in skip:
            entry.update(status="skipped", reason="no bars for ftx perp BTC-PERP <1h> in the lake")
            windows.append(entry)
            continue
        windows.append(entry)
        substituted = win_id in ("2022-10", "2022-11")
        f = year_freq if win_id == "2022-year" else freq
        frame = _window_frame(win_id, start, end, f, rng, substituted)
        series.append(frame)
        for (venue, market), part in frame.groupby(["venue", "market"], sort=False):
            src = (f"substituted: binance perp {SYMBOLS[('binance', market)]}"
                   if venue == "ftx" and substituted else "own")
            oi = (2.0e9 if market == "BTC" else 0.8e9) * (1.3 if venue == "binance" else 1.0)
            rows.append(_row(part, win_id, venue, market, src, oi))
    series = pd.concat(series, ignore_index=True)
    rows_df = pd.DataFrame(rows)
    cross = []
    for (win, market), g in rows_df.groupby(["window", "market"], sort=False):
        f_loss = float(g.loc[g.venue == "ftx", "house_loss_usd"].sum())
        b_loss = float(g.loc[g.venue == "binance", "house_loss_usd"].sum())
        cross.append({"window": win, "market": market, "ftx_house_loss_usd": f_loss,
                      "binance_house_loss_usd": b_loss,
                      "ratio": (f_loss / b_loss) if b_loss else None})
    ev = series[series["liquidated_step1_usd"] + series["liquidated_ioc_usd"] > 0].head(500)
    events = pd.DataFrame({"window": ev["window"], "venue": ev["venue"], "market": ev["market"],
                           "ts": ev["ts"], "mechanism": np.where(ev["venue"] == "ftx", "step1", "ioc"),
                           "notional_usd": ev["liquidated_step1_usd"] + ev["liquidated_ioc_usd"]})
    sweep_df, sweep_summary = None, None
    if with_sweep:
        recs = []
        for i in range(n_samples):
            draw = {k: float(rng.uniform(lo, hi)) for k, (_, (lo, hi), _) in params.items()}
            for r in rows:
                scale = (1 + 2 * (draw["ftx.blp.hedge_latency_s"] - 1) / 29) if r["venue"] == "ftx" else (
                    1.5 - (draw["binance.liq_fee_rate"] - 0.005) / 0.01)
                recs.append({"sample": i, "window": r["window"], "venue": r["venue"], "market": r["market"],
                             **draw, "house_loss_usd": r["house_loss_usd"] * scale * rng.uniform(0.9, 1.1),
                             "liquidated_usd": r["liquidated_usd"] * rng.uniform(0.8, 1.2)})
        sweep_df = pd.DataFrame(recs)
        q = []
        for (w, v, m), g in sweep_df.groupby(["window", "venue", "market"], sort=False):
            for metric in ("house_loss_usd", "liquidated_usd"):
                qs = g[metric].quantile([0.05, 0.5, 0.95]).to_numpy()
                q.append({"window": w, "venue": v, "market": m, "metric": metric,
                          "q05": float(qs[0]), "q50": float(qs[1]), "q95": float(qs[2])})
        sweep_summary = {"params": list(params), "quantiles": q}
    coverage = []
    for r in rows:
        coverage.append({"window": r["window"], "venue": r["venue"], "market": r["market"],
                         "timeframe": "1d" if r["window"] == "2022-year" else "1m", "rows": 1000,
                         "gaps_pct": 0.0 if r["price_source"] == "own" else 100.0,
                         "price_source": r["price_source"]})
    summary = {
        "run_id": "fixture-run", "created_utc": "2026-11-24T14:00:00Z", "data_snapshot": "snap-abc123",
        "params_hash": "ph-123", "params_file": "backtest/params.toml", "seed": seed,
        "params": {k: v[0] for k, v in params.items()},
        "param_sources": {k: v[2] for k, v in params.items()},
        "param_ranges": {k: list(v[1]) for k, v in params.items()},
        "windows": windows, "rows": rows, "cross_venue": cross, "sweep": sweep_summary,
        "coverage": coverage,
    }
    return summary, rows_df, series, events, sweep_df


def build_daily(series: pd.DataFrame, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(daily, observed): the model's daily frame (brief interface 1) from the fixture's
    series, split long/short by a drawn share, and a Coinalyze-like observed frame for the
    Binance markets: the model's reported figure x lognormal noise, so metrics are finite."""
    rng = np.random.default_rng(seed)
    s = series.copy()
    s["date"] = pd.to_datetime(s["ts"], utc=True).dt.floor("D")
    s["liq"] = s[[f"liquidated_{m}_usd" for m in ALL_MECHANISMS]].sum(axis=1)
    g = s.groupby(["window", "venue", "market", "date"], as_index=False)[["liq", "reported_liquidated_usd"]].sum()
    share = rng.uniform(0.3, 0.8, len(g))
    parts = []
    for side, f in (("long", share), ("short", 1 - share)):
        parts.append(pd.DataFrame({"window": g["window"], "venue": g["venue"], "market": g["market"],
                                   "date": g["date"], "side": side, "liquidated_usd": g["liq"] * f,
                                   "reported_usd": g["reported_liquidated_usd"] * f, "oi_usd": 1.0e9}))
    daily = pd.concat(parts, ignore_index=True).sort_values(["window", "venue", "market", "date", "side"])
    b = daily[daily["venue"] == "binance"]
    observed = pd.DataFrame({"window": b["window"], "date": b["date"], "market": b["market"], "side": b["side"],
                             "observed_usd": (b["reported_usd"] + 2e5) * rng.lognormal(0.0, 0.6, len(b))})
    return daily.reset_index(drop=True), observed.reset_index(drop=True)


def write_fixture(out_dir: Path, *, calibration: bool = True, **kwargs) -> Path:
    """Write a Contract 3 results directory through backtest.results.write_results, with the
    v2 calibration files (daily.parquet, observed_daily.parquet, calibration.json) unless
    `calibration` is False."""
    import inspect

    from backtest.results import write_results

    summary, rows, series, events, sweep = build_results(**kwargs)
    meta = {k: summary[k] for k in ("run_id", "created_utc", "data_snapshot", "params_hash", "params_file",
                                    "seed", "params", "param_sources", "param_ranges")}
    sw = summary["sweep"]
    if sw is not None:
        meta["sweep_params"] = sw["params"]
        meta["sweep_samples"] = int(sweep["sample"].nunique())
    daily, observed = build_daily(series)
    extra = {"daily": daily} if calibration and "daily" in inspect.signature(write_results).parameters else {}
    out = Path(write_results(out_dir, meta=meta, windows=summary["windows"], rows=rows.to_dict("records"),
                             series=series, events=events, sweep=sweep,
                             sweep_quantiles=None if sw is None else sw["quantiles"],
                             coverage=summary["coverage"], **extra))
    if calibration:
        from backtest.calibrate import write_run_calibration_frames
        from backtest.scenarios import Window

        if not extra:  # write_results does not write daily.parquet yet: the contract's file, written here
            daily.to_parquet(out / "daily.parquet", index=False)
        wins = [Window(w["id"], w["label"], pd.Timestamp(w["start"]), pd.Timestamp(w["end"]), w["id"] == "2022-year")
                for w in summary["windows"] if w.get("status") == "ran"]
        write_run_calibration_frames(out, daily=daily, observed=observed, windows=wins, snapshot="snap-abc123")
    return out
