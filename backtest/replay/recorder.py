"""Event recorder, per-bar accumulators and the series totals (MODEL.md 7)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from backtest.params import Params
from backtest.replay.inputs import PathInput
from backtest.venues import binance, ftx

MECHS = ("step1", "step2_blp", "overflow", "ioc", "fund", "adl")


class Recorder:
    """Collects events (column lists) and per-bar series accumulators."""

    def __init__(self, n_bars: int):
        self.ev: dict[str, list] = {k: [] for k in (
            "t_s", "account", "side", "mechanism", "qty_coin", "price", "mark_price", "notional_usd",
            "user_loss_usd", "fund_delta_usd")}
        self.bar_liq = {m: np.zeros(n_bars) for m in MECHS}
        self.bar_fund = np.full(n_bars, np.nan)

    def add(self, bar: int, mech: str, t_s, account, side, qty, price, mark, notional, user_loss, fund_delta):
        n = np.size(account)
        if n == 0:
            return
        cols = (("t_s", t_s, np.float64), ("account", account, np.int64), ("side", side, np.int8),
                ("qty_coin", qty, np.float64), ("price", price, np.float64), ("mark_price", mark, np.float64),
                ("notional_usd", notional, np.float64), ("user_loss_usd", user_loss, np.float64),
                ("fund_delta_usd", fund_delta, np.float64))
        for name, v, dt in cols:
            self.ev[name].append(np.array(np.broadcast_to(np.asarray(v, dtype=dt), (n,))))
        self.ev["mechanism"].append(np.full(n, MECHS.index(mech), dtype=np.int8))
        self.bar_liq[mech][bar] += float(np.sum(notional))

    def events_frame(self) -> pd.DataFrame:
        cols = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in self.ev.items()}
        mech = cols.pop("mechanism").astype(np.int64)
        df = pd.DataFrame(cols)
        df.insert(3, "mechanism", np.asarray(MECHS, dtype=object)[mech] if len(mech) else np.zeros(0, dtype=object))
        if len(df):
            df = df.sort_values(["t_s", "account"], kind="stable").reset_index(drop=True)
        return df


@dataclass
class SeriesResult:
    venue: str
    totals: dict
    events: pd.DataFrame          # t_s, account, side, mechanism, qty_coin, price, ...
    series: pd.DataFrame          # ts_s, price, liquidated_<mech>_usd, fund_balance_usd, ...
    final_qty: np.ndarray
    final_wallet: np.ndarray



def _finish(st, rec: Recorder, inp: PathInput, venue: str, params: Params) -> SeriesResult:
    ev = rec.events_frame()
    if venue == "binance":
        rep = binance.reported_mask(np.floor(ev["t_s"].to_numpy()).astype(np.int64) if len(ev) else np.zeros(0),
                                    np.arange(len(ev))) if len(ev) else np.zeros(0, bool)
    else:
        rep = ftx.reported_mask(ev["t_s"].to_numpy() if len(ev) else np.zeros(0))
    ev["reported"] = rep
    liq = {m: float(ev.loc[ev.mechanism == m, "notional_usd"].sum()) if len(ev) else 0.0 for m in MECHS}
    if venue == "binance":
        blp_pnl, takeover = 0.0, 0.0
        cp = st.adl_counterparty_usd
    else:
        blp_pnl, takeover = st.blp_pnl()
        cp = st.counterparty_usd
    fund_end = st.fund
    totals = {
        "liquidated_usd": float(sum(liq[m] for m in MECHS)),
        "reported_liquidated_usd": float(ev.loc[ev.reported, "notional_usd"].sum()) if len(ev) else 0.0,
        "liquidated_step1_usd": liq["step1"], "liquidated_step2_blp_usd": liq["step2_blp"],
        "liquidated_overflow_usd": liq["overflow"], "liquidated_ioc_usd": liq["ioc"],
        "liquidated_fund_usd": liq["fund"], "adl_usd": liq["adl"],
        "accounts": int(len(st.qty)), "accounts_liquidated": int(st.liquidated.sum()),
        "accounts_touched": int(ev["account"].nunique()) if len(ev) else 0,
        "blp_takeover_usd": float(takeover), "blp_pnl_usd": float(blp_pnl),
        "fund_start_usd": float(st.fund_start), "fund_min_usd": float(min(st.fund_min, fund_end)),
        "fund_end_usd": float(fund_end),
        "exempt_deficit_usd": float(st.exempt_deficit()),
        "user_loss_usd": float(ev["user_loss_usd"].sum()) if len(ev) else 0.0,
        "counterparty_loss_usd": float(max(0.0, -cp)),
        "events": int(len(ev)),
        "collateral_revaluations": int(getattr(st, "revaluations", 0)),
        "blp_collateral_other_usd": float(getattr(st, "blp_collateral_other_usd", 0.0)),
    }
    blp_loss = max(0.0, -totals["blp_pnl_usd"])
    deficit = max(0.0, -fund_end)
    totals.update(blp_loss_usd=blp_loss, fund_deficit_usd=deficit, house_loss_usd=blp_loss + deficit)
    fund = pd.Series(rec.bar_fund).ffill().fillna(st.fund_start).to_numpy()
    series = pd.DataFrame({"ts_s": inp.ts_s, "price": inp.close,
                           **{f"liquidated_{m}_usd": rec.bar_liq[m] for m in MECHS},
                           "fund_balance_usd": fund})
    if len(ev):
        bi = np.clip(np.searchsorted(inp.ts_s, ev["t_s"].to_numpy(), side="right") - 1, 0, inp.n_bars - 1)
        series["reported_liquidated_usd"] = np.bincount(bi, weights=np.where(ev["reported"], ev["notional_usd"], 0.0),
                                                        minlength=inp.n_bars)
    else:
        series["reported_liquidated_usd"] = 0.0
    series["adl_usd"] = series["liquidated_adl_usd"]
    series["blp_takeover_usd"] = series["liquidated_step2_blp_usd"]
    series["blp_pnl_cum_usd"] = st.blp_pnl_by_bar() if venue == "ftx" else 0.0
    return SeriesResult(venue, totals, ev, series, st.qty.copy(),
                        (st.wallet if venue == "binance" else st.usd).copy())


