"""The report's tables, computed from the results (pure: frames in, frames out).

Each table is a `Table`: a name (its CSV/JSON file name), a title, the frame with raw
values (what the CSV/JSON hold) and a kind per column (how the page formats it).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from types import SimpleNamespace

import numpy as np
import pandas as pd

from backtest import calibrate_metrics as M
from backtest import sensitivity as S
from backtest.calibrate import run_calibration, window_days
from reports.inputs import ReportInput
from reports.sweep_answer import SweepAnswer, sweep_answer

YEAR_MIN_DAYS = 60  # a window at least this long is the whole-year ("24/7") run


@dataclass
class Table:
    name: str
    title: str
    frame: pd.DataFrame
    kinds: dict[str, str] = field(default_factory=dict)  # column -> usd|num|int|ratio|pct|text
    note: str = ""

    def kind(self, column: str) -> str:
        if column in self.kinds:
            return self.kinds[column]
        if column.endswith("_usd") or column.endswith("_per_1b_oi"):
            return "usd"
        s = self.frame[column]
        if pd.api.types.is_integer_dtype(s):
            return "int"
        if pd.api.types.is_float_dtype(s):
            return "num"
        return "text"


def is_year(window: dict) -> bool:
    if window.get("whole_year"):
        return True
    try:
        span = pd.Timestamp(window["end"]) - pd.Timestamp(window["start"])
    except (KeyError, ValueError, TypeError):
        return False
    return span >= pd.Timedelta(days=YEAR_MIN_DAYS)


def window_labels(inp: ReportInput) -> dict[str, str]:
    out = {}
    for w in inp.windows:
        wid = str(w.get("id", ""))
        label = str(w.get("label") or "")
        out[wid] = f"{wid} {label}".strip() if label and label != wid else wid
    return out


def ran_windows(inp: ReportInput) -> list[dict]:
    """Windows that ran and have rows, by start time; crash windows first, the whole year last."""
    have = set(inp.rows["window"].astype(str)) if len(inp.rows) else set()
    ran = [w for w in inp.windows if w.get("status", "ran") == "ran" and str(w.get("id")) in have]

    def start(w):
        try:
            t = pd.to_datetime(w.get("start"), utc=True)
        except (TypeError, ValueError):
            t = None
        return pd.Timestamp.max.tz_localize("UTC") if t is None or pd.isna(t) else t

    ran = sorted(ran, key=start)  # in time order, whatever order the run listed them
    return [w for w in ran if not is_year(w)] + [w for w in ran if is_year(w)]


def _per_1b(loss, oi):
    return float(loss) / float(oi) * 1e9 if oi and np.isfinite(oi) and oi > 0 else np.nan


def answer_table(inp: ReportInput) -> Table:
    """House loss per window, FTX vs Binance (summed over markets), absolute and per $1B OI."""
    labels = window_labels(inp)
    recs = []
    rows = inp.rows
    for w in ran_windows(inp):
        wid = str(w["id"])
        g = rows[rows["window"].astype(str) == wid]
        rec = {"window": wid, "window_label": labels.get(wid, wid), "whole_year": is_year(w)}
        for venue in ("ftx", "binance"):
            v = g[g["venue"] == venue]
            loss = float(v["house_loss_usd"].sum()) if len(v) else np.nan
            oi = float(v["open_interest_usd"].sum()) if "open_interest_usd" in v and len(v) else np.nan
            rec[f"{venue}_house_loss_usd"] = loss
            rec[f"{venue}_house_loss_per_1b_oi"] = _per_1b(loss, oi)
            rec[f"{venue}_open_interest_usd"] = oi
        b = rec["binance_house_loss_usd"]
        rec["ratio_ftx_to_binance"] = rec["ftx_house_loss_usd"] / b if b and np.isfinite(b) and b > 0 else np.nan
        ftx = g[g["venue"] == "ftx"]
        subs = sorted({str(s) for s in ftx.get("price_source", pd.Series(dtype=str)) if str(s) != "own"})
        rec["ftx_price_path"] = "; ".join(subs) if subs else "own"
        recs.append(rec)
    frame = pd.DataFrame(recs, columns=[
        "window", "window_label", "whole_year", "ftx_house_loss_usd", "binance_house_loss_usd",
        "ratio_ftx_to_binance", "ftx_house_loss_per_1b_oi", "binance_house_loss_per_1b_oi",
        "ftx_open_interest_usd", "binance_open_interest_usd", "ftx_price_path"])
    return Table("answer", "House loss (BLP loss + fund payouts beyond income + exempt deficit) per window", frame,
                 {"ratio_ftx_to_binance": "ratio", "whole_year": "text"},
                 "Summed over the markets replayed; per $1B = house loss / open interest at window start.")


def who_bore_table(inp: ReportInput) -> Table:
    """Per window x venue (summed over markets): who carried the losses.

    Uses the replay's own blp_loss_usd / fund_deficit_usd / counterparty_loss_usd where the
    rows have them, else derives BLP loss = max(0, -BLP P&L) and fund deficit = max(0, -end).
    """
    labels = window_labels(inp)
    order = {str(w["id"]): i for i, w in enumerate(ran_windows(inp))}
    r = inp.rows[inp.rows["window"].astype(str).isin(order)]

    def col(name, default=None):
        if name in r:
            return r[name].astype("float64").fillna(0.0)
        return default if default is not None else pd.Series(0.0, index=r.index)

    blp_pnl = col("blp_pnl_usd")
    fund_end = col("fund_end_usd")
    frame = pd.DataFrame({
        "window": r["window"].astype(str), "venue": r["venue"],
        "users_usd": col("user_loss_usd"),
        "blp_loss_usd": col("blp_loss_usd", (-blp_pnl).clip(lower=0)),
        "blp_loss_gross_usd": col("blp_loss_gross_usd", (-blp_pnl).clip(lower=0)),
        "fund_income_usd": col("fund_income_usd"),
        "fund_payouts_usd": col("fund_payouts_usd"),
        "fund_net_payout_usd": col("fund_net_payout_usd", col("fund_deficit_usd", (-fund_end).clip(lower=0))),
        "fund_drawdown_usd": col("fund_drawdown_usd", (col("fund_start_usd") - col("fund_min_usd")).clip(lower=0)),
        "exempt_deficit_usd": col("exempt_deficit_usd"),
        "house_loss_usd": col("house_loss_usd"),
        "house_loss_gross_usd": col("house_loss_gross_usd", col("house_loss_usd")),
        "counterparty_loss_usd": col("counterparty_loss_usd"),
        "adl_usd": col("adl_usd"),
        "closeout_usd": col("liquidated_overflow_usd"),
    })
    out = frame.groupby(["window", "venue"], sort=False).sum(numeric_only=True).reset_index()
    out.insert(1, "window_label", out["window"].map(labels))
    out = out.assign(_o=out["window"].map(order)).sort_values(["_o", "venue"], ascending=[True, False])
    return Table("who_bore", "Who bore the losses (summed over markets)", out.drop(columns="_o").reset_index(drop=True),
                 note="House loss (MODEL.md 3.7, v2) = BLP loss (net: max(0, -BLP P&L)) + fund payouts beyond its "
                      "income + the exempt account's deficit; the gross figure counts the BLPs' losing takeovers "
                      "without netting their gains elsewhere. A $99M payout from a $100M fund is a $99M loss. "
                      "Fund drawdown = start - minimum balance. Opposing traders = loss forced on them by ADL / "
                      "close-out; ADL and close-out columns are the notional closed against them.")


def blp_parts_table(inp: ReportInput) -> Table:
    """FTX's BLP P&L in its parts (MODEL.md 3.6), per window and market."""
    parts = ["blp_takeover_usd", "blp_discount_usd", "blp_move_usd", "blp_hedge_cost_usd", "blp_collateral_sales_usd",
             "blp_haircut_gain_usd", "blp_unhedged_mtm_usd", "blp_pnl_usd", "blp_loss_gross_usd"]
    order = {str(w["id"]): i for i, w in enumerate(ran_windows(inp))}
    r = inp.rows[inp.rows["window"].astype(str).isin(order) & (inp.rows["venue"] == "ftx")]
    cols = ["window", "market"] + [c for c in parts if c in r]
    frame = r[cols].copy() if len(r) else pd.DataFrame(columns=cols)
    frame = frame.assign(_o=frame["window"].astype(str).map(order)).sort_values(["_o", "market"]).drop(columns="_o")
    return Table("blp_parts", "FTX's backstop liquidity providers: P&L in its parts", frame.reset_index(drop=True),
                 {c: "usd" for c in parts},
                 "discount: the takeover price's discount to mark; move: the mark's move until hedged; hedge cost: "
                 "slippage and fees of the hedge; collateral sales and haircut gain: the non-USD collateral taken "
                 "over; unhedged MTM: what is left unhedged, marked at the window's end. The parts sum to the net "
                 "BLP P&L.")


def mechanism_table(inp: ReportInput) -> Table:
    r = inp.rows
    mech = [c for c in r.columns if c.startswith("liquidated_") and c.endswith("_usd") and c != "liquidated_usd"]
    cols = ["window", "venue", "market", "symbol", "liquidated_usd", "reported_liquidated_usd", *mech,
            "adl_usd", "accounts_liquidated", "price_source", "oi_source", "timeframe"]
    cols = [c for c in cols if c in r]
    frame = r[cols].copy()
    if "reported_liquidated_usd" in r:
        tot = r["liquidated_usd"].astype("float64")
        frame.insert(cols.index("reported_liquidated_usd") + 1, "reported_share",
                     np.where(tot > 0, r["reported_liquidated_usd"] / tot.where(tot > 0, 1), np.nan))
    return Table("liquidations", "Liquidated notional by mechanism, actual vs reported", frame,
                 {"reported_share": "pct", "accounts_liquidated": "int"},
                 "Reported = what a public aggregator would have seen under each venue's disclosure rule "
                 "(Binance: one order per symbol per second; FTX: every fill flagged).")


def results_table(inp: ReportInput) -> Table:
    return Table("results", "All result rows (one per window × venue × market)", inp.rows.copy())


def cross_venue_table(inp: ReportInput) -> Table:
    frame = pd.DataFrame(inp.summary.get("cross_venue") or [])
    return Table("cross_venue", "Cross-venue ratios (FTX / Binance) per window and market", frame,
                 {"ratio": "ratio"})


def windows_table(inp: ReportInput) -> Table:
    frame = pd.DataFrame(inp.windows)
    for c in ("id", "label", "start", "end", "status", "reason"):
        if c not in frame:
            frame[c] = ""
    frame = frame[["id", "label", "start", "end", "status", "reason"]]
    return Table("windows", "Windows: which ran, which were skipped and why", frame)


def coverage_table(inp: ReportInput) -> Table:
    frame = pd.DataFrame(inp.summary.get("coverage") or [])
    return Table("coverage", "Data coverage and gaps per window", frame,
                 {"gaps_pct": "num", "rows": "int"},
                 "gaps_pct: share of the window without bars at that timeframe; price_source other "
                 "than 'own' means another venue's path stood in.")


def parameters_table(inp: ReportInput) -> Table:
    s = inp.summary
    params = s.get("params") or {}
    sources = s.get("param_sources") or {}
    ranges = s.get("param_ranges") or {}
    swept = set((s.get("sweep") or {}).get("params") or [])
    recs = []
    for key in sorted(set(params) | set(sources) | set(ranges)):
        rng = ranges.get(key)
        lo, hi = (rng[0], rng[1]) if isinstance(rng, (list, tuple)) and len(rng) == 2 else (None, None)
        value = params.get(key)
        recs.append({"param": key, "value": value if not isinstance(value, (dict, list)) else str(value),
                     "range_low": lo, "range_high": hi, "swept": key in swept,
                     "source": sources.get(key, "")})
    frame = pd.DataFrame(recs, columns=["param", "value", "range_low", "range_high", "swept", "source"])
    frame["value"] = frame["value"].map(lambda v: "" if v is None else str(v))
    return Table("parameters", "Parameters, their sources and sweep ranges", frame,
                 {"value": "text", "range_low": "num", "range_high": "num", "swept": "text"})


def sweep_table(inp: ReportInput) -> Table:
    sweep = inp.summary.get("sweep") or {}
    frame = pd.DataFrame(sweep.get("quantiles") or [],
                         columns=["window", "venue", "market", "metric", "q05", "q50", "q95"])
    labels = window_labels(inp)
    frame.insert(1, "window_label", frame["window"].astype(str).map(labels).fillna(frame["window"].astype(str)))
    kinds = {c: "usd" for c in ("q05", "q50", "q95")}
    return Table("sweep_quantiles", "Sweep: 5th, 50th and 95th percentile per window, venue, market", frame, kinds)


def tornado_table(inp: ReportInput, metric: str = "house_loss_usd") -> Table:
    """Per venue and swept parameter: median crash-window house loss when the parameter is in
    the low vs the high third of its sampled values, minus the overall median."""
    cols = ["venue", "param", "median_usd", "low_delta_usd", "high_delta_usd", "swing_usd", "samples"]
    empty = Table("tornado", "Sensitivity ranking (tornado)", pd.DataFrame(columns=cols))
    sw = inp.sweep
    params = list(((inp.summary.get("sweep") or {}).get("params")) or [])
    if sw is None or sw.empty or metric not in sw:
        empty.note = "No sweep samples."
        return empty
    sample = next((c for c in ("sample", "sample_id", "draw", "i") if c in sw), None)
    params = [p for p in params if p in sw]
    if sample is None or not params:
        empty.note = "sweep.parquet names no sample column or no parameter columns: tornado not drawn."
        return empty
    crash = {str(w["id"]) for w in ran_windows(inp) if not is_year(w)}
    s = sw[sw["window"].astype(str).isin(crash)] if crash else sw
    recs = []
    for venue, g in s.groupby("venue", sort=True):
        per = g.groupby(sample).agg({metric: "sum", **{p: "first" for p in params}})
        if len(per) < 3:
            continue
        base = float(per[metric].median())
        for p in params:
            vals = per[p].astype("float64")
            lo_cut, hi_cut = vals.quantile(1 / 3), vals.quantile(2 / 3)
            lo = per.loc[vals <= lo_cut, metric]
            hi = per.loc[vals >= hi_cut, metric]
            if lo.empty or hi.empty:
                continue
            ld, hd = float(lo.median()) - base, float(hi.median()) - base
            recs.append({"venue": venue, "param": p, "median_usd": base, "low_delta_usd": ld,
                         "high_delta_usd": hd, "swing_usd": abs(hd - ld), "samples": int(len(per))})
    frame = pd.DataFrame(recs, columns=cols).sort_values(["venue", "swing_usd"], ascending=[True, False])
    return Table("tornado", "Sensitivity ranking: crash-window house loss, low vs high third of each parameter",
                 frame.reset_index(drop=True), {"samples": "int"},
                 "Summed over the crash windows (the whole year excluded) and markets, per sample.")


def load_calibration() -> pd.DataFrame:
    """The project's reference table of published figures (reports/calibration.csv)."""
    with resources.files("reports").joinpath("calibration.csv").open(encoding="utf-8") as fh:
        return pd.DataFrame(list(csv.DictReader(fh)))


def _calib_span(rec) -> tuple[pd.Timestamp, pd.Timestamp]:
    d0 = pd.Timestamp(rec["date_from"], tz="UTC")
    d1 = pd.Timestamp(rec["date_to"], tz="UTC")
    return (d0, d1) if d1 > d0 else (d0, d0 + pd.Timedelta(days=1))


def calibration_table(inp: ReportInput, published: pd.DataFrame | None = None) -> Table:
    """Each published figure beside the model's nearest output, with why when there is none."""
    pub = load_calibration() if published is None else published
    series, rows = inp.series, inp.rows
    windows = [w for w in ran_windows(inp)]
    recs = []
    for _, rec in pub.iterrows():
        d0, d1 = _calib_span(rec)
        venue, metric = rec["venue"], rec["metric"]
        model_actual = model_reported = np.nan
        basis = ""
        inside = [w for w in windows if pd.Timestamp(w["start"]) <= d0 and d1 <= pd.Timestamp(w["end"])]
        inside.sort(key=is_year)
        win = str(inside[0]["id"]) if inside else None
        if venue not in ("ftx", "binance"):
            basis = "not modelled (venue not replayed)"
        elif win is None:
            basis = "no replayed window covers these dates"
        elif metric == "liquidated_24h":
            s = series[(series["window"].astype(str) == win) & (series["venue"] == venue)]
            t = pd.to_datetime(s["ts"], utc=True)
            s = s[(t >= d0) & (t < d1)]
            if s.empty:
                basis = "no series in that day"
            else:
                mech = [c for c in s.columns if c.startswith("liquidated_") and c.endswith("_usd")
                        and c != "reported_liquidated_usd"]
                model_actual = float(s[mech].to_numpy(dtype="float64").sum())
                if "reported_liquidated_usd" in s:
                    model_reported = float(s["reported_liquidated_usd"].sum())
                markets = ", ".join(sorted(map(str, s["market"].unique())))
                basis = (f"window {win}, {d0:%Y-%m-%d %H:%M}–{d1:%Y-%m-%d %H:%M} UTC, markets {markets} "
                         "only (published: all markets, rolling 24 h)")
        elif metric in ("open_interest_start", "open_interest") and rec["unit"] not in ("USD", "fraction"):
            sym = str(rec["scope"]).split()[0]
            r = rows[(rows["window"].astype(str) == win) & (rows["venue"] == venue)]
            r = r[r.get("symbol", pd.Series("", index=r.index)).astype(str) == sym]
            s = series[(series["window"].astype(str) == win) & (series["venue"] == venue)]
            if len(r) and len(s):
                s = s[s["market"] == r.iloc[0]["market"]].sort_values("ts")
            if len(r) and len(s) and "open_interest_usd" in r:
                model_actual = float(r.iloc[0]["open_interest_usd"]) / float(s["price"].iloc[0])
                basis = f"window {win} start: open_interest_usd / first price ({r.iloc[0].get('oi_source', '')})"
            else:
                basis = f"no {sym} row in window {win}"
        else:
            basis = "no comparable model output"
        try:
            value = float(rec["value"])
        except (TypeError, ValueError):
            value = np.nan
        recs.append({
            "date_from": rec["date_from"], "date_to": rec["date_to"], "venue": venue, "scope": rec["scope"],
            "metric": metric, "published": value if np.isfinite(value) else rec["value"], "unit": rec["unit"],
            "model_actual": model_actual, "model_reported": model_reported,
            "model_over_published": (model_reported if np.isfinite(model_reported) else model_actual) / value
            if np.isfinite(value) and value and np.isfinite(model_actual) else np.nan,
            "model_basis": basis, "source": rec["source"], "note": rec.get("note", ""),
        })
    frame = pd.DataFrame(recs)
    return Table("calibration", "Calibration: model output beside published figures", frame,
                 {"published": "num", "model_actual": "num", "model_reported": "num",
                  "model_over_published": "ratio"},
                 "Published figures cover all markets of a venue; the model replays only the markets "
                 "listed, so a ratio below 1 is expected. Ratio uses the reported figure where there is one.")


# ---- the sweep's answer (reports/sweep_answer.py) -------------------------------------

def sweep_of(inp: ReportInput) -> SweepAnswer | None:
    return sweep_answer(inp, {str(w.get("id")) for w in inp.windows if is_year(w)})


def distribution_table(a: SweepAnswer) -> Table:
    d = a.sensitivity.get("distribution") or S.distribution(a.totals)
    recs = [{"measure": k, **v} for k, v in d.items() if k in ("ftx_2022", "binance_2022")]
    frame = pd.DataFrame(recs, columns=["measure", "n", "min", "q05", "q25", "median", "q75", "q95", "max", "mean"])
    kinds = {c: "usd" for c in ("min", "q05", "q25", "median", "q75", "q95", "max", "mean")}
    kinds["n"] = "int"
    t = Table("sweep_distribution", "House loss across the sweep, per venue",
              frame, kinds, f"Per sample, {a.scope}: with the whole-year run, the larger of it and the sum of the "
                            "crash windows (they overlap); summed over markets.")
    return t


def sensitivity_table(a: SweepAnswer) -> Table:
    recs = []
    for out, v in (a.sensitivity.get("outputs") or {}).items():
        for e in v.get("params", []):
            recs.append({"output": out, "param": e["param"], "rho": e.get("rho"), "rho_lo": e.get("rho_lo"),
                         "rho_hi": e.get("rho_hi"), "S1": e.get("S1"), "S1_conf": e.get("S1_conf")})
    frame = pd.DataFrame(recs, columns=["output", "param", "rho", "rho_lo", "rho_hi", "S1", "S1_conf"])
    return Table("sensitivity", "What drives the 2022 house loss: rank correlation and variance share", frame,
                 {c: "num" for c in ("rho", "rho_lo", "rho_hi", "S1", "S1_conf")},
                 "rho: Spearman rank correlation with its bootstrap 90% interval; S1: RBD-FAST first-order "
                 "share of variance (SALib), where the sweep has enough samples.")


def frontier_table(a: SweepAnswer) -> Table:
    recs = []
    for item in a.frontier.get("targets", []):
        for how in ("nearest_sample", "searched"):
            b = item.get(how)
            if not b:
                continue
            for s in b["setting"]:
                recs.append({"target_usd": item["target_usd"], "found_by": how.replace("_", " "),
                             "ftx_2022_usd": b["ftx_2022_usd"], "distance_total": b["distance"],
                             "param": s["param"], "value": s["value"], "default": s["default"],
                             "distance": s["distance"]})
    frame = pd.DataFrame(recs, columns=["target_usd", "found_by", "ftx_2022_usd", "distance_total", "param",
                                        "value", "default", "distance"])
    return Table("frontier", "What it would take: the least implausible settings reaching each target", frame,
                 {"distance_total": "num", "value": "num", "default": "num", "distance": "num"},
                 "distance: how far from the sourced default, in units of the parameter's range.")


def sweep_tables(inp: ReportInput) -> list[Table]:
    a = sweep_of(inp)
    return [] if a is None else [distribution_table(a), sensitivity_table(a), frontier_table(a)]


# ---- calibration against Coinalyze (model v2: daily.parquet vs observed_daily.parquet) ----
TARGET_NOTE = ("Targets (issue 8, held-out window days, Binance BTCUSDT+ETHUSDT, reported vs Coinalyze per day "
               "and side): log-RMSE (with a $0.1M floor) ≤ 1.0, correlation of logs ≥ 0.7, model zero on ≤ 5% "
               "of day-sides, long-share mean absolute error per window ≤ 0.15; whole year: every month within "
               "0.5–2× of Coinalyze.")


def _window_objs(inp: ReportInput) -> list:
    out = []
    for w in ran_windows(inp):
        try:
            start, end = pd.Timestamp(w["start"]), pd.Timestamp(w["end"])
        except (KeyError, ValueError, TypeError):
            continue
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        out.append(SimpleNamespace(id=str(w["id"]), start=start, end=end, whole_year=is_year(w)))
    return out


def calibration_compare(inp: ReportInput) -> pd.DataFrame:
    """Model (Binance, reported) vs Coinalyze per (market, date, side): crash-window days from
    the window runs (held out), the other days from the whole-year run (training days).
    Columns: market, date, side, model_usd, observed_usd, held_out, window."""

    cols = ["market", "date", "side", "model_usd", "observed_usd", "held_out", "window"]
    if inp.daily is None or inp.observed is None or not len(inp.daily) or not len(inp.observed):
        return pd.DataFrame(columns=cols)
    obs = inp.observed.drop_duplicates(["date", "market", "side"])[["date", "market", "side", "observed_usd"]]
    markets = sorted(set(obs["market"]) & set(inp.daily.loc[inp.daily["venue"] == "binance", "market"]))
    wins = _window_objs(inp)
    held: set = set()
    if "held_out" in inp.observed.columns:  # the run marked every crash window's days, run or not
        held = set(inp.observed.loc[inp.observed["held_out"].astype(bool), "date"])
    parts = []
    for w in wins:
        if w.whole_year:
            continue
        days = window_days(w)
        held |= set(days)
        c = M.compare(M.model_frame(inp.daily, window=w.id), obs, days, markets)
        parts.append(c.assign(held_out=True, window=w.id))
    for w in wins:
        if not w.whole_year:
            continue
        days = [d for d in window_days(w) if d not in held]
        c = M.compare(M.model_frame(inp.daily, window=w.id), obs, days, markets)
        parts.append(c.assign(held_out=False, window=w.id))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols].sort_values(["market", "date", "side"]).reset_index(drop=True)


def calibration_metrics(inp: ReportInput) -> dict | None:
    """calibration.json when the run wrote it, else the same metrics computed from the frames."""
    if inp.calibration is not None:
        return inp.calibration
    if inp.daily is None or inp.observed is None:
        return None
    obs = inp.observed.drop_duplicates(["date", "market", "side"])[["date", "market", "side", "observed_usd"]]
    return run_calibration(inp.daily, obs, _window_objs(inp))


METRIC_COLUMNS = ["set", "market", "side", "day_sides", "log_rmse", "corr_log", "zero_share", "long_share_mae",
                  "sum_ratio", "model_usd", "observed_usd", "meets_targets"]
SET_LABELS = {"validation": "held-out window days", "training": "training days (year run)",
              "year": "whole year (year run)"}


def calibration_fit_table(inp: ReportInput) -> Table:
    """The fit's metrics per set (held-out, training, year): overall and per market and side."""
    cal = calibration_metrics(inp) or {}
    recs = []
    for key in ("validation", "training", "year"):
        block = cal.get(key)
        if not block:
            continue
        o = dict(block.get("overall") or {})
        ok = block.get("pass") or {}
        verdict = "; ".join(f"{name.replace('_', ' ')} {'met' if v else 'missed'}"
                            for name, v in ok.items() if v is not None)
        recs.append({"set": SET_LABELS[key], "market": "all", "side": "both",
                     **{k: o.get(k) for k in METRIC_COLUMNS[3:-1]}, "meets_targets": verdict})
        for r in block.get("by_market_side") or []:
            recs.append({"set": SET_LABELS[key], "market": r.get("market"), "side": r.get("side"),
                         **{k: r.get(k) for k in METRIC_COLUMNS[3:-1]}, "meets_targets": ""})
    frame = pd.DataFrame(recs, columns=METRIC_COLUMNS)
    for c in METRIC_COLUMNS[3:-1]:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    note = TARGET_NOTE + (f" Measure: the model's {cal.get('measure', 'reported_usd')}; floor "
                          f"${float(cal.get('floor_usd', M.FLOOR_USD)) / 1e6:.1f}M." if cal else "")
    return Table("calibration_fit", "Calibration: model vs Coinalyze daily liquidations (metrics and targets)", frame,
                 {"day_sides": "int", "zero_share": "pct", "sum_ratio": "ratio", "log_rmse": "num",
                  "corr_log": "num", "long_share_mae": "num"}, note)


def calibration_months_table(inp: ReportInput) -> Table:
    cal = calibration_metrics(inp) or {}
    months = (cal.get("year") or {}).get("months") or []
    frame = pd.DataFrame(months, columns=["month", "model_usd", "observed_usd", "ratio", "within"])
    frame["ratio"] = pd.to_numeric(frame["ratio"], errors="coerce")
    return Table("calibration_months", "Whole year: monthly Binance BTC+ETH liquidations, model vs Coinalyze",
                 frame, {"ratio": "ratio"}, "Target: every month within 0.5–2× of Coinalyze's total.")


def all_tables(inp: ReportInput) -> dict[str, Table]:
    tables = [answer_table(inp), who_bore_table(inp), blp_parts_table(inp), cross_venue_table(inp),
              mechanism_table(inp), sweep_table(inp), tornado_table(inp), *sweep_tables(inp), calibration_table(inp),
              calibration_fit_table(inp), calibration_months_table(inp), parameters_table(inp),
              coverage_table(inp), windows_table(inp), results_table(inp)]
    return {t.name: t for t in tables}
