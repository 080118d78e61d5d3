"""Event recorder, per-bar accumulators and the series totals (MODEL.md 7)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from backtest import disclosure
from backtest.params import Params
from backtest.replay.inputs import PathInput
from backtest.venues import ftx

MECHS = ("step1", "step2_blp", "overflow", "ioc", "fund", "adl")


class Recorder:
    """Collects events (column lists) and per-bar series accumulators."""

    def __init__(self, n_bars: int):
        self.ev: dict[str, list] = {k: [] for k in (
            "t_s", "account", "side", "mechanism", "qty_coin", "price", "mark_price", "notional_usd",
            "user_loss_usd", "fund_delta_usd")}
        self.bar_liq = {m: np.zeros(n_bars) for m in MECHS}
        self.bar_fund = np.full(n_bars, np.nan)
        self._block = None
        self.codes = np.zeros(0, np.int8)

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

    def set_block(self, block: np.ndarray, account, side, mechanism) -> None:
        """Take a kernel's events as they come: `block` the float columns (FLOAT_COLS x n, one row
        per column), account / side / mechanism (MECHS codes) aligned. The frame is built on the
        block without copying it where the events are in (time, account) order already."""
        blk = np.asarray(block, dtype=np.float64)
        if blk.ndim != 2 or blk.shape[0] != len(FLOAT_COLS):
            raise ValueError(f"event block must be {len(FLOAT_COLS)} x n")
        n = blk.shape[1]
        self._block = (blk, np.asarray(account, np.int64).reshape(n), np.asarray(side, np.int8).reshape(n),
                       np.asarray(mechanism, np.int8).reshape(n))

    def _columns(self):
        """(float block, account, side, mechanism codes) of every event, in (time, account) order."""
        if self._block is not None:
            blk, acc, side, mech = self._block
        else:
            cols = {k: (v[0] if len(v) == 1 else np.concatenate(v) if v else np.zeros(0)) for k, v in self.ev.items()}
            blk = np.empty((len(FLOAT_COLS), len(cols["t_s"])))
            for j, k in enumerate(FLOAT_COLS):
                blk[j] = cols[k]
            acc = np.asarray(cols["account"], np.int64)
            side = np.asarray(cols["side"], np.int8)
            mech = np.asarray(cols["mechanism"], np.int8)
        if blk.shape[1] > 1:
            t = blk[0]
            dt_, da = np.diff(t), np.diff(acc)
            if not np.all((dt_ > 0) | ((dt_ == 0) & (da >= 0))):     # a kernel's output is already in order
                o = np.lexsort((acc, t))                               # (stable: equal keys keep their order)
                blk, acc, side, mech = blk[:, o], acc[o], side[o], mech[o]
        return blk, acc, side, mech

    def events_frame(self) -> pd.DataFrame:
        """The events (t_s, account, side, mechanism, then FLOAT_COLS' others) in (time, account)
        order; the mechanisms' codes, aligned with its rows, are left in `self.codes`."""
        blk, acc, side, mech = self._columns()
        df = pd.DataFrame(blk.T, columns=list(FLOAT_COLS), copy=False)
        df.insert(1, "account", acc)
        df.insert(2, "side", side)
        df.insert(3, "mechanism", mechanism_column(mech))
        self.codes = mech
        return df


FLOAT_COLS = ("t_s", "qty_coin", "price", "mark_price", "notional_usd", "user_loss_usd", "fund_delta_usd")


def mechanism_column(codes: np.ndarray):
    """MECHS names of the codes, as this pandas's default string column (built through an Arrow
    dictionary where that default is Arrow-backed: ~10x faster than mapping objects)."""
    codes = np.asarray(codes, np.int8)
    dt = pd.Series(["step1"]).dtype
    if isinstance(dt, pd.StringDtype) and dt.storage == "pyarrow" and len(codes):
        arr = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(MECHS)).cast(pa.large_string())
        return pd.Series(arr, dtype=dt).array
    return np.asarray(MECHS, dtype=object)[codes] if len(codes) else np.zeros(0, dtype=object)


@dataclass
class SeriesResult:
    venue: str
    totals: dict
    events: pd.DataFrame          # t_s, account, side, mechanism, qty_coin, price, ...
    series: pd.DataFrame          # ts_s, price, liquidated_<mech>_usd, fund_balance_usd, ...
    final_qty: np.ndarray
    final_wallet: np.ndarray
    oi_daily: pd.DataFrame | None = None   # date (UTC day), side ('long'|'short'), oi_usd at the day's end


def reported_usd(ev: pd.DataFrame, venue: str, weight: np.ndarray | None, params: Params) -> np.ndarray:
    """Reported notional per event (MODEL.md 4.5): what an aggregator sees of each liquidation.

    The one place the disclosure rule is applied. Binance: one order per symbol-second on the
    *real* account count (backtest.disclosure: each simulated event stands for `weight` real
    orders: the account's count_weight, its expected real count given its notional), so the
    reported figure does not move with the simulated N. FTX: every fill is flagged."""
    if not len(ev):
        return np.zeros(0)
    notional = ev["notional_usd"].to_numpy(float)
    if venue == "binance":
        acc = ev["account"].to_numpy(np.int64)
        w = np.ones(len(ev)) if weight is None else np.asarray(weight, float)[acc]
        return np.asarray(disclosure.reported_for_params(ev["t_s"].to_numpy(float), notional, w,
                                                         ev["side"].to_numpy(np.int64), params), float)
    mask = ftx.reported_mask(ev["t_s"].to_numpy())
    return np.where(mask, notional, 0.0)


def oi_daily_frame(inp: PathInput, t_s, side, dq) -> pd.DataFrame:
    """Open notional per side at each UTC day's end from signed quantity changes (coins) at times
    t_s: the sum of live quantity at the day's last bar close times that close."""
    t_s = np.asarray(t_s, float)
    side = np.asarray(side, np.int64)
    dq = np.asarray(dq, float)
    day0 = int(inp.ts_s[0] // 86400)
    day1 = int(inp.ts_s[-1] // 86400)
    nd = day1 - day0 + 1
    bar_day = inp.ts_s // 86400 - day0
    last_bar = np.searchsorted(bar_day, np.arange(nd), side="right") - 1
    price = inp.close[np.clip(last_bar, 0, inp.n_bars - 1)]
    di = np.clip(np.floor(t_s / 86400.0).astype(np.int64) - day0, 0, nd - 1) if t_s.size else np.zeros(0, np.int64)
    rows = []
    dates = pd.to_datetime((np.arange(nd) + day0) * 86400, unit="s", utc=True).astype("datetime64[ns, UTC]")
    for s_, name in ((1, "long"), (-1, "short")):
        m = side == s_
        q = np.cumsum(np.bincount(di[m], weights=dq[m], minlength=nd)) if m.any() else np.zeros(nd)
        rows.append(pd.DataFrame({"date": dates, "side": name, "oi_usd": np.maximum(q, 0.0) * price}))
    return pd.concat(rows, ignore_index=True)


def loss_accounting(ev: pd.DataFrame, fund_start: float, fund_min: float, fund_end: float, exempt_deficit: float,
                    end_s: float, *, blp_pnl: float = 0.0, extra: dict | None = None) -> dict:
    """House loss in its parts (MODEL.md 3.6, 3.7; brief interface 2).

    Fund: gross income (surpluses in), gross payouts (deficits paid), drawdown start - min, time
    below its start balance (between events, to the end of the run). BLP: the net P&L and, where
    the venue state gives them (`extra`), its parts and the gross loss of loss-making takeovers;
    where it does not, the parts are NaN and the gross loss falls back to the net loss.
    house_loss = blp_loss + fund_net_payout + exempt_deficit; house_loss_gross likewise with the
    gross BLP loss."""
    fd = ev["fund_delta_usd"].to_numpy(float) if len(ev) else np.zeros(0)
    income = float(fd[fd > 0].sum())
    payouts = max(0.0, float(-fd[fd < 0].sum()))   # never -0.0
    below = 0.0
    if len(ev):
        t = ev["t_s"].to_numpy(float)
        last = np.r_[t[1:] != t[:-1], True]         # balance after all events of one time
        bal = fund_start + np.cumsum(fd)
        tt, bb = t[last], bal[last]
        nxt = np.r_[tt[1:], max(end_s, tt[-1])]
        below = float(np.sum(np.where(bb < fund_start - 1e-9 * max(1.0, abs(fund_start)), nxt - tt, 0.0)))
    parts = {k: 0.0 for k in BLP_PARTS} if extra is None and blp_pnl == 0.0 else {k: float("nan") for k in BLP_PARTS}
    out = {"blp_pnl_usd": float(blp_pnl), **parts}
    out.update({k: float(v) for k, v in (extra or {}).items()})
    blp_loss = max(0.0, -out["blp_pnl_usd"])
    out.setdefault("blp_loss_gross_usd", blp_loss)
    net_payout = max(0.0, payouts - income)
    out.update(
        blp_loss_usd=blp_loss,
        fund_income_usd=income, fund_payouts_usd=payouts,
        fund_drawdown_usd=max(0.0, fund_start - min(fund_min, fund_end)),
        fund_time_below_start_s=below, fund_net_payout_usd=net_payout,
        exempt_deficit_usd=float(exempt_deficit),
        fund_deficit_usd=max(0.0, -fund_end),
        house_loss_usd=blp_loss + net_payout + float(exempt_deficit),
        house_loss_gross_usd=out["blp_loss_gross_usd"] + net_payout + float(exempt_deficit),
    )
    return out


BLP_PARTS = ("blp_discount_usd", "blp_move_usd", "blp_hedge_cost_usd", "blp_collateral_sales_usd",
             "blp_haircut_gain_usd", "blp_unhedged_mtm_usd")


def distinct(a: np.ndarray) -> int:
    """Number of distinct values of a (a bincount where they are small non-negative integers)."""
    if a.size == 0:
        return 0
    if a.min() >= 0 and a.max() < 8 * a.size + 1024:
        return int(np.count_nonzero(np.bincount(a)))
    return int(np.unique(a).size)


def _finish(st, rec: Recorder, inp: PathInput, venue: str, params: Params) -> SeriesResult:
    """Series totals, per-bar series and the result. A venue state may provide `extra_totals()`
    (venue-specific keys merged into the loss accounting, e.g. FTX's BLP parts), `final_qty()`
    and `oi_daily` (DataFrame date, side, oi_usd)."""
    ev = rec.events_frame()
    w = getattr(st, "count_weight", None)
    rep = reported_usd(ev, venue, w if w is not None else getattr(st, "wt", getattr(st, "weight", None)), params)
    ev["reported_usd"] = rep
    ev["reported"] = rep > 0 if len(ev) else np.zeros(0, bool)
    notional = ev["notional_usd"].to_numpy(float)
    liq = {m: float(notional[rec.codes == j].sum()) for j, m in enumerate(MECHS)}     # (as pandas sums)
    if venue == "binance":
        blp_pnl, takeover = 0.0, 0.0
        cp = st.adl_counterparty_usd
    else:
        blp_pnl, takeover = st.blp_pnl()
        cp = st.counterparty_usd
    fund_end = st.fund
    final_qty = st.final_qty() if hasattr(st, "final_qty") else st.qty
    totals = {
        "liquidated_usd": float(sum(liq[m] for m in MECHS)),
        "reported_liquidated_usd": float(rep.sum()),
        "liquidated_step1_usd": liq["step1"], "liquidated_step2_blp_usd": liq["step2_blp"],
        "liquidated_overflow_usd": liq["overflow"], "liquidated_ioc_usd": liq["ioc"],
        "liquidated_fund_usd": liq["fund"], "adl_usd": liq["adl"],
        "accounts": int(len(st.qty)), "accounts_liquidated": int(st.liquidated.sum()),
        "accounts_touched": distinct(ev["account"].to_numpy(np.int64)),
        "blp_takeover_usd": float(takeover),
        "fund_start_usd": float(st.fund_start), "fund_min_usd": float(min(st.fund_min, fund_end)),
        "fund_end_usd": float(fund_end),
        "user_loss_usd": float(ev["user_loss_usd"].sum()) if len(ev) else 0.0,
        "counterparty_loss_usd": float(max(0.0, -cp)),
        "events": int(len(ev)),
        "collateral_revaluations": int(getattr(st, "revaluations", 0)),
        "blp_collateral_other_usd": float(getattr(st, "blp_collateral_other_usd", 0.0)),
    }
    extra = st.extra_totals() if hasattr(st, "extra_totals") else None
    end_s = float(inp.ts_s[-1] + inp.bar_seconds)
    totals.update(loss_accounting(ev, float(st.fund_start), float(st.fund_min), float(fund_end),
                                  float(st.exempt_deficit()), end_s, blp_pnl=float(blp_pnl), extra=extra))
    fund = pd.Series(rec.bar_fund).ffill().fillna(st.fund_start).to_numpy()
    series = pd.DataFrame({"ts_s": inp.ts_s, "price": inp.close,
                           **{f"liquidated_{m}_usd": rec.bar_liq[m] for m in MECHS},
                           "fund_balance_usd": fund})
    if len(ev):
        bi = np.clip(np.searchsorted(inp.ts_s, ev["t_s"].to_numpy(), side="right") - 1, 0, inp.n_bars - 1)
        series["reported_liquidated_usd"] = np.bincount(bi, weights=rep, minlength=inp.n_bars)
    else:
        series["reported_liquidated_usd"] = 0.0
    series["adl_usd"] = series["liquidated_adl_usd"]
    series["blp_takeover_usd"] = series["liquidated_step2_blp_usd"]
    series["blp_pnl_cum_usd"] = st.blp_pnl_by_bar() if venue == "ftx" else 0.0
    return SeriesResult(venue, totals, ev, series, np.asarray(final_qty, float).copy(),
                        (st.wallet if venue == "binance" else st.usd).copy(), getattr(st, "oi_daily", None))
