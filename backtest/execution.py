"""Execution against an exogenous historical path (MODEL.md section 5). Pure functions.

Square-root impact: a trade of notional q in a bar of quote volume V (over `bar_minutes`)
with 1-minute volatility sigma pays slippage eta * sigma * sqrt(q / (V / bar_minutes)),
as a fraction of the price, plus the venue's taker fee. Flows are priced against the path;
they do not move it (v1), unless the v2 feedback mode is on (end of this module).

Functions marked [vec] broadcast over numpy arrays (python floats for scalar input). The
v2 impact functions at the end (bar sigma, metaorders, feedback) are numba-compiled scalars
for the kernels, also callable from Python.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from backtest.checks import nonneg as _nonneg
from backtest.checks import positive as _positive
from backtest.checks import scalar_out as _out
from backtest.checks import side as _check_side
from backtest.kernel_cache import drop_stale
from backtest.paths import parkinson_sigma_1m

drop_stale(__file__, ["rng.py", "paths.py", "checks.py"])


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
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(v_min > 0, q / np.where(v_min > 0, v_min, 1.0), np.inf)
        raw = np.where(np.isfinite(ratio), e * sig * np.sqrt(ratio), np.inf)
    raw = np.where(q > 0, raw, 0.0)   # (v1 gave NaN for sigma 0 on a bar without volume)
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


# ------------------------------------------------------------------------------ impact v2
# MODEL.md 5 (v2): compiled scalar functions the kernels call. Pure: state lives in small
# arrays the caller owns and passes in (created by `new_metaorder_state` /
# `new_feedback_state`), updated in place.
#
# - bar_sigma_1m: the bar's own volatility (Parkinson, per minute, floored), not a window mean.
# - metaorders: flow of one kind and side inside `impact.bucket_s` is one metaorder. Its cost
#   is C(Q) = Q * min(eta * sigma * sqrt(Q / V_per_minute), max_slippage), the cost of one
#   order of the cumulative size Q (exactly v1's single-order cost); a fragment q arriving at
#   cumulative Q pays C(Q) - C(Q - q), i.e. slippage (C(Q) - C(Q - q)) / q: the average of
#   the marginal square-root impact over [Q - q, Q]. Fragments in one bar and bucket cost
#   exactly what one order of their sum costs; the first fragment of a bucket pays v1's
#   sqrt_impact.
# - feedback: with `impact.feedback` on, the flow beyond `impact.baseline_share` of it
#   moves the venue's path by permanent_share * (I(Q) - I(Q - q)) per fragment (I the
#   square-root impact of the bucket's cumulative excess flow, signed by the trade's side),
#   decaying with half-life `impact.decay_s`. Kernels price later ticks at
#   path * (1 + feedback_offset(...)).


# flow kinds (rows of the metaorder state); collateral coin i uses FLOW_COLLATERAL + i
FLOW_LIQUIDATION = 0      # the venue's own liquidation orders (Binance IOCs, FTX step-1)
FLOW_BLP_HEDGE = 1        # a BLP's hedges on the hedge venue
FLOW_COLLATERAL = 2       # first collateral coin's sales
# feedback state columns
FB_OFFSET, FB_T, FB_START_SELL, FB_CUM_SELL, FB_START_BUY, FB_CUM_BUY = range(6)
MAX_DOWN_OFFSET = -0.9    # the feedback never takes a price below 10% of its path


@njit(cache=True)
def bar_sigma_1m(h, lw, bar_minutes, floor):
    """The bar's own 1-minute volatility: max(Parkinson sigma of (h, l) per minute, floor)
    (`impact.sigma_floor_1m`; a flat or gap-filled bar would otherwise trade for free)."""
    return max(parkinson_sigma_1m(h, lw, bar_minutes), floor)


@njit(cache=True)
def bar_sigmas_1m(high, low, bar_minutes, floor):
    """bar_sigma_1m of every bar of a series (arrays)."""
    out = np.empty(high.shape[0])
    for i in range(high.shape[0]):
        out[i] = bar_sigma_1m(high[i], low[i], bar_minutes, floor)
    return out


@njit(cache=True)
def sqrt_impact_1(q_usd, bar_quote_volume_usd, sigma_1m, eta, bar_minutes, max_slippage):
    """Scalar, compiled `sqrt_impact`: min(eta * sigma * sqrt(q / (V / bar_minutes)), cap);
    0 for q <= 0, the cap for a bar without volume."""
    if q_usd <= 0.0:
        return 0.0
    v_min = bar_quote_volume_usd / bar_minutes
    ratio = q_usd / v_min if v_min > 0.0 else math.inf
    if not (ratio < math.inf):
        return max_slippage
    return min(eta * sigma_1m * math.sqrt(ratio), max_slippage)


@njit(cache=True)
def impact_cost_usd(q_usd, bar_quote_volume_usd, sigma_1m, eta, bar_minutes, max_slippage):
    """C(Q): the impact cost in USD of one order (or a whole metaorder) of notional Q."""
    return q_usd * sqrt_impact_1(q_usd, bar_quote_volume_usd, sigma_1m, eta, bar_minutes, max_slippage)


@njit(cache=True)
def new_metaorder_state(n_kinds):
    """(start_s, cum_usd), each float64 (n_kinds, 2) (column 0 sells, 1 buys): the open
    metaorder's start time and cumulative notional per flow kind and side; no metaorder open."""
    return np.full((n_kinds, 2), -np.inf), np.zeros((n_kinds, 2))  # (start_s, cum_usd)


@njit(cache=True)
def _bucket_add(start_s, cum, row, col, t_s, q, bucket_s):
    """Add q to the (row, col) bucket at t_s, opening a new bucket when t_s is bucket_s or
    more after the open one's start (or before it). Returns (Q before, Q after)."""
    if t_s >= start_s[row, col] + bucket_s or t_s < start_s[row, col]:
        start_s[row, col] = t_s
        cum[row, col] = 0.0
    q0 = cum[row, col]
    q1 = q0 + q
    cum[row, col] = q1
    return q0, q1


@njit(cache=True)
def metaorder_slippage(start_s, cum_usd, kind, side, t_s, q_usd, bar_quote_volume_usd, sigma_1m, eta,
                       bar_minutes, bucket_s, max_slippage):
    """Slippage (fraction of price, >= 0) of a fragment of q_usd of flow `kind`, trade side
    `side` (+1 buy, -1 sell), at time t_s (seconds), as part of its metaorder: (C(Q) -
    C(Q - q)) / q with Q the bucket's cumulative notional including q. Updates the state."""
    col = 1 if side > 0 else 0
    if q_usd <= 0.0:
        return 0.0
    q0, q1 = _bucket_add(start_s, cum_usd, kind, col, t_s, q_usd, bucket_s)
    c1 = impact_cost_usd(q1, bar_quote_volume_usd, sigma_1m, eta, bar_minutes, max_slippage)
    c0 = impact_cost_usd(q0, bar_quote_volume_usd, sigma_1m, eta, bar_minutes, max_slippage)
    return max(c1 - c0, 0.0) / q_usd


@njit(cache=True)
def new_feedback_state(n_venues):
    """float64 (n_venues, 6): per venue the price offset at its last update (FB_OFFSET), that
    time (FB_T), and per side the excess-flow bucket's start and cumulative notional."""
    st = np.zeros((n_venues, 6))
    st[:, FB_T] = -np.inf
    st[:, FB_START_SELL] = -np.inf
    st[:, FB_START_BUY] = -np.inf
    return st


@njit(cache=True)
def feedback_offset(state, venue, t_s, decay_s):
    """The venue's feedback price offset at t_s (a fraction: price = path * (1 + offset)),
    decayed with half-life decay_s since the last update. 0 before any flow."""
    off = state[venue, FB_OFFSET]
    if off == 0.0:
        return 0.0
    dt = t_s - state[venue, FB_T]
    if dt <= 0.0:
        return off
    if not (decay_s > 0.0):
        return 0.0
    return off * 0.5 ** (dt / decay_s)


@njit(cache=True)
def _fb_bucket(state, venue, c_start, c_cum, t_s, x, bucket_s):
    if t_s >= state[venue, c_start] + bucket_s or t_s < state[venue, c_start]:
        state[venue, c_start] = t_s
        state[venue, c_cum] = 0.0
    x0 = state[venue, c_cum]
    x1 = x0 + x
    state[venue, c_cum] = x1
    return x0, x1


@njit(cache=True)
def feedback_add(state, venue, t_s, side, q_usd, bar_quote_volume_usd, sigma_1m, eta, bar_minutes,
                 baseline_share, permanent_share, bucket_s, decay_s, max_slippage):
    """Record a modelled flow of q_usd (trade side +1 buy / -1 sell) on `venue` at t_s and
    return the venue's offset after it. Only the excess (1 - baseline_share) * q moves the
    path: by side * permanent_share * (I(X) - I(X - x)), X the excess accumulated in the
    side's bucket (bucket_s) and I the square-root impact (sqrt_impact_1). Flows must come
    in time order per venue."""
    off = feedback_offset(state, venue, t_s, decay_s)
    if t_s > state[venue, FB_T]:
        state[venue, FB_T] = t_s
    state[venue, FB_OFFSET] = off
    x = (1.0 - baseline_share) * q_usd
    if x <= 0.0 or permanent_share <= 0.0:
        return off
    if side > 0:
        x0, x1 = _fb_bucket(state, venue, FB_START_BUY, FB_CUM_BUY, t_s, x, bucket_s)
    else:
        x0, x1 = _fb_bucket(state, venue, FB_START_SELL, FB_CUM_SELL, t_s, x, bucket_s)
    d = permanent_share * (sqrt_impact_1(x1, bar_quote_volume_usd, sigma_1m, eta, bar_minutes, max_slippage)
                           - sqrt_impact_1(x0, bar_quote_volume_usd, sigma_1m, eta, bar_minutes, max_slippage))
    off = off + (d if side > 0 else -d)
    off = max(off, MAX_DOWN_OFFSET)
    state[venue, FB_OFFSET] = off
    return off


@njit(cache=True)
def metaorder_slippages(t_s, side, q_usd, bar_quote_volume_usd, sigma_1m, eta, bar_minutes, bucket_s,
                        max_slippage):
    """metaorder_slippage of a sequence of fragments of one flow kind, in the given (time)
    order: arrays t_s, side (+1 buy / -1 sell), q_usd, and each fragment's bar volume and
    sigma. A fresh metaorder state; returns the slippage of each fragment."""
    start, cum = new_metaorder_state(1)
    out = np.empty(t_s.shape[0])
    for j in range(t_s.shape[0]):
        out[j] = metaorder_slippage(start, cum, 0, side[j], t_s[j], q_usd[j], bar_quote_volume_usd[j], sigma_1m[j],
                                    eta, bar_minutes, bucket_s, max_slippage)
    return out


IMPACT_MODES = ("v1", "v2")


def impact_mode(params) -> str:
    """`impact.mode`: "v2" (MODEL.md 5: the bar's own sigma, metaorders per impact.bucket_s) or
    "v1" (each order alone at the window's sigma, the first release's rule)."""
    mode = params.impact.mode
    if mode not in IMPACT_MODES:
        raise ValueError(f"impact.mode = {mode!r}: use one of {', '.join(IMPACT_MODES)} (backtest/params.toml)")
    return mode


def bar_sigmas(high, low, bar_minutes: float, window_sigma: float, params) -> np.ndarray:
    """The sigma each bar's fills pay: v2 the bar's own (bar_sigma_1m, floored by
    impact.sigma_floor_1m), v1 the window's `window_sigma` for every bar."""
    high = np.ascontiguousarray(high, dtype=np.float64)
    if impact_mode(params) == "v1":
        return np.full(high.shape[0], float(window_sigma))
    return bar_sigmas_1m(high, np.ascontiguousarray(low, dtype=np.float64), float(bar_minutes),
                         params.impact.sigma_floor_1m)


def impact_settings(params, venue: str) -> dict:
    """The impact parameters of one venue as plain numbers for the kernels: mode ("v1" |
    "v2"), metaorders (bool: v2), eta, taker_fee, max_slippage, bucket_s, sigma_floor_1m,
    feedback (bool), baseline_share, permanent_share, decay_s."""
    ex, imp = params.execution, params.impact
    mode = impact_mode(params)
    return {"mode": mode, "metaorders": mode == "v2", "eta": ex.eta[venue], "taker_fee": ex.taker_fee[venue],
            "max_slippage": ex.max_slippage, "bucket_s": imp.bucket_s, "sigma_floor_1m": imp.sigma_floor_1m,
            "feedback": imp.feedback, "baseline_share": imp.baseline_share,
            "permanent_share": imp.permanent_share, "decay_s": imp.decay_s}
