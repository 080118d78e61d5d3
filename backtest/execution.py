"""Execution against an exogenous historical path (MODEL.md section 5). Pure functions.

Square-root impact: a trade of notional q in a bar of quote volume V (over `bar_minutes`)
with 1-minute volatility sigma pays slippage eta * sigma * sqrt(q / (V / bar_minutes)),
as a fraction of the price, plus the venue's taker fee. Flows are priced against the path;
they do not move it.

Functions marked [vec] broadcast over numpy arrays (python floats for scalar input).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from backtest.checks import nonneg as _nonneg, positive as _positive, scalar_out as _out
from backtest.checks import side as _check_side


def _trade_side(x):
    return _check_side(x, "trade_side must be +1 (buy) or -1 (sell)")


def sqrt_impact(notional_usd, bar_quote_volume_usd, sigma_1m, eta, bar_minutes=1.0, *,
                max_slippage: float = 0.5):
    """[vec] Slippage as a fraction of price: eta * sigma_1m * sqrt(q / (V / bar_minutes)).

    A bar with zero volume gives the cap `max_slippage` for any q > 0 (0 for q == 0).
    """
    q = _nonneg("notional_usd", notional_usd)
    v = _nonneg("bar_quote_volume_usd", bar_quote_volume_usd)
    sig = _nonneg("sigma_1m", sigma_1m)
    e = _nonneg("eta", eta)
    bm = _positive("bar_minutes", bar_minutes)
    v_min = v / bm
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = e * sig * np.sqrt(np.where(v_min > 0, q / v_min, np.inf))
    raw = np.where(q > 0, raw, 0.0)
    return _out(np.minimum(raw, max_slippage), notional_usd, bar_quote_volume_usd, sigma_1m, eta, bar_minutes)


def sigma_1m(close: np.ndarray | pd.Series, bar_minutes: float = 1.0, *, window: int | None = None):
    """1-minute volatility from a bar close series: std of log returns / sqrt(bar_minutes).

    window None: one number for the whole series; else a rolling series (same length, the
    first values back-filled). Bars of any timeframe: the per-bar std is scaled to 1 minute.
    """
    c = np.asarray(close, dtype=float)
    if len(c) < 2:
        return 0.0 if window is None else np.zeros(len(c))
    _positive("close", c)
    r = np.diff(np.log(c))
    if window is None:
        return float(np.std(r) / np.sqrt(bar_minutes))
    s = pd.Series(np.concatenate([[np.nan], r])).rolling(window, min_periods=2).std()
    s = s.bfill().fillna(0.0).to_numpy()
    return s / np.sqrt(bar_minutes)


def fill_price(trade_side, path_price, slippage_frac, fee_rate=0.0):
    """[vec] All-in price per coin of a taker trade: path * (1 + side*slippage) * (1 + side*fee).

    trade_side +1 buy (pays more), -1 sell (receives less). Use fill_breakdown for the parts.
    """
    s = _trade_side(trade_side)
    p = _positive("path_price", path_price)
    sl = _nonneg("slippage_frac", slippage_frac)
    f = _nonneg("fee_rate", fee_rate)
    return _out(p * (1 + s * sl) * (1 + s * f), trade_side, path_price, slippage_frac, fee_rate)


def fill_breakdown(trade_side, qty_coin, path_price, slippage_frac, fee_rate) -> dict[str, Any]:
    """[vec] A taker trade's parts: exec_price = path*(1 + side*slip); impact_usd =
    qty*|exec - path| (to the market); fee_usd = qty*exec*fee; cash_usd = -side*qty*exec - fee
    (the trader's cash change: a buy pays, a sell receives)."""
    s = _trade_side(trade_side)
    q = _nonneg("qty_coin", qty_coin)
    p = _positive("path_price", path_price)
    sl = _nonneg("slippage_frac", slippage_frac)
    f = _nonneg("fee_rate", fee_rate)
    ex = p * (1 + s * sl)
    fee = q * ex * f
    return {"exec_price": ex, "impact_usd": q * np.abs(ex - p), "fee_usd": fee,
            "cash_usd": -s * q * ex - fee, "notional_usd": q * ex}


def hedge_pnl(side_taken, qty_coin, takeover_price, mark_at_takeover, hedge_price_at_fill,
              mark_end, hedge_price_end, *, hedge_ratio=1.0, slippage_frac=0.0, fee_rate=0.0,
              hedge_price_at_takeover=None) -> dict[str, Any]:
    """[vec] P&L of a BLP takeover and its hedge, marked to market at the end.

    The BLP receives a position of side `side_taken` (+1 it is now long) and qty at
    `takeover_price` when the FTX mark is `mark_at_takeover`. After the latency it sells
    (buys) hedge_ratio*qty on the hedge venue at `hedge_price_at_fill` (that venue's path
    price at t + latency) with slippage and taker fee. At the end both legs are marked at
    `mark_end` (FTX) and `hedge_price_end` (hedge venue).
    Returns: discount_usd = side*q*(mark_t - takeover), position_move_usd =
    side*q*(mark_end - mark_t), hedge_move_usd = -side*h*q*(hedge_end - hedge_fill),
    hedge_cost_usd (impact + fee, <= 0), total_usd (their sum); and with
    hedge_price_at_takeover, unhedged_move_usd = side*h*q*(hedge_fill - hedge_t) (the move
    while unhedged, informative: already inside position_move + hedge_move).
    """
    s = _trade_side(side_taken)
    q = _nonneg("qty_coin", qty_coin)
    tp = _positive("takeover_price", takeover_price)
    mt = _positive("mark_at_takeover", mark_at_takeover)
    hf = _positive("hedge_price_at_fill", hedge_price_at_fill)
    me = _positive("mark_end", mark_end)
    he = _positive("hedge_price_end", hedge_price_end)
    h = _nonneg("hedge_ratio", hedge_ratio)
    hq = h * q
    sl = _nonneg("slippage_frac", slippage_frac)
    f = _nonneg("fee_rate", fee_rate)
    discount = s * q * (mt - tp)
    pos_move = s * q * (me - mt)
    hedge_move = -s * hq * (he - hf)
    cost = -(hq * hf * sl) - hq * hf * (1 - s * sl) * f
    out = {"discount_usd": discount, "position_move_usd": pos_move, "hedge_move_usd": hedge_move,
           "hedge_cost_usd": cost, "hedge_qty_coin": hq,
           "total_usd": discount + pos_move + hedge_move + cost}
    if hedge_price_at_takeover is not None:
        ht = _positive("hedge_price_at_takeover", hedge_price_at_takeover)
        out["unhedged_move_usd"] = s * hq * (hf - ht)
    return out


def collateral_sale(qty_coin, price, bar_quote_volume_usd, sigma_1m_, eta, bar_minutes=1.0,
                    fee_rate=0.0, *, max_slippage: float = 0.5) -> dict[str, Any]:
    """[vec] Sell `qty_coin` of a collateral coin at the path `price` with square-root impact
    and the taker fee. Returns proceeds_usd (cash received), impact_usd, fee_usd, slippage_frac,
    market_value_usd (qty*price). market_value - proceeds == impact + fee."""
    q = _nonneg("qty_coin", qty_coin)
    p = _positive("price", price)
    slip = np.asarray(sqrt_impact(q * p, bar_quote_volume_usd, sigma_1m_, eta, bar_minutes,
                                  max_slippage=max_slippage), float)
    b = fill_breakdown(-1, q, p, slip, fee_rate)
    return {"proceeds_usd": b["cash_usd"], "impact_usd": b["impact_usd"], "fee_usd": b["fee_usd"],
            "slippage_frac": slip, "market_value_usd": q * p}
