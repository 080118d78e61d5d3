"""Binance USDS-M liquidation engine, 2022 (MODEL.md section 4). Pure functions.

Conventions: side +1 long / -1 short; qty in coins (>= 0); prices and money in USD(T);
functions marked [vec] take scalars or numpy arrays (broadcast) and return the same shape.

- brackets: MM = notional * MMR - cum, cum_n = floor_n * (MMR_n - MMR_{n-1}) + cum_{n-1};
- liquidation price (one-way mode) in the bracket that holds the notional AT the LP;
- bankruptcy price; liquidation as an IOC at the bankruptcy price filling at the path price
  minus impact; surplus (clearance fee + rest) to the per-market insurance fund, deficit paid by
  it; ADL of opposing accounts at the bankruptcy price when the fund cannot pay;
- the public stream's one-order-per-symbol-per-second rule ("reported" liquidations).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from backtest.checks import nonneg_finite as _nonneg
from backtest.checks import positive as _positive
from backtest.checks import scalar_out as _out
from backtest.checks import side as _side
from backtest.params import Params, ParamsError
from backtest.params import as_date as _date


class BracketError(ParamsError):
    """No leverage brackets for a symbol (and the generic fallback is off)."""


class LeverageError(ValueError):
    """Leverage above the venue's cap on that date (or the bracket's cap)."""


@dataclass(frozen=True)
class Brackets:
    """One symbol's tiers on one date. caps: upper notional bound per tier (last = inf);
    floors: lower bound; mmr: maintenance margin rate; cum: maintenance amount;
    max_leverage: the tier's leverage cap (1 / (2 * MMR), floored)."""

    symbol: str
    caps: np.ndarray
    mmr: np.ndarray
    cum: np.ndarray
    floors: np.ndarray
    max_leverage: np.ndarray
    source: str = ""

    def tier(self, notional_usd):
        """[vec] 0-based tier index of a notional (tier i covers (floor_i, cap_i])."""
        n = np.asarray(notional_usd, dtype=float)
        idx = np.searchsorted(self.caps, n, side="left")
        return np.minimum(idx, len(self.caps) - 1)


def make_brackets(symbol: str, caps, mmr, *, source: str = "", im_multiple: float = 2.0) -> Brackets:
    """Tiers from caps and MMRs; cum derived; the last cap is made open-ended."""
    caps = np.asarray(caps, dtype=float).copy()
    mmr = np.asarray(mmr, dtype=float)
    if caps.shape != mmr.shape or caps.ndim != 1 or len(caps) == 0:
        raise BracketError(f"{symbol}: caps and mmr must be equal-length lists")
    if np.any(np.diff(caps) <= 0) or np.any(np.diff(mmr) < 0) or np.any(mmr <= 0) or np.any(mmr >= 1):
        raise BracketError(f"{symbol}: caps must increase and 0 < mmr < 1 be non-decreasing")
    caps[-1] = np.inf
    floors = np.concatenate([[0.0], caps[:-1]])
    cum = np.zeros_like(mmr)
    for i in range(1, len(mmr)):
        cum[i] = floors[i] * (mmr[i] - mmr[i - 1]) + cum[i - 1]
    max_lev = np.floor(1.0 / (im_multiple * mmr) + 1e-9)
    return Brackets(symbol, caps, mmr, cum, floors, np.maximum(max_lev, 1.0), source)


def brackets_for(symbol: str, date, params: Params) -> Brackets:
    """The leverage brackets of `symbol` in force on `date`.

    BTCUSDT: the 2022-02-05 variant from 2022-02-05, the May-Nov 2022 table from 2022-05-01;
    before 2022-02-05 the table chosen by `binance.brackets.btcusdt_jan2022_table`.
    ETHUSDT: Feb-Jul 2022 table (also Jan 2022), Aug-Nov table from 2022-08-01.
    Other symbols: `binance.brackets.generic` if `binance.brackets.generic_fallback`,
    else BracketError.
    """
    d = _date(date)
    sym = symbol.upper().replace("/", "").replace(":USDT", "")
    key = f"binance.brackets.{sym}"
    im = params.binance.initial_margin_mmr_multiple
    br = params.binance.brackets
    dated = br.by_symbol.get(sym)
    if dated is not None:
        if sym == "BTCUSDT" and d < dt.date(2022, 2, 5):
            choice = br.btcusdt_jan2022_table
            if choice not in ("2022-02-05", "2022-05"):
                raise BracketError(
                    f"binance.brackets.btcusdt_jan2022_table must be '2022-02-05' or '2022-05', got {choice!r}")
            table = dated.rows[0][1] if choice == "2022-02-05" else dated.at(dt.date(2022, 5, 1))
        else:
            table = dated.at(d)
        return make_brackets(sym, table["caps"], table["mmr"], source=f"{key} @ {d}: {params.source(key)}",
                             im_multiple=im)
    if not br.generic_fallback:
        raise BracketError(
            f"no Binance leverage brackets for {symbol!r} and binance.brackets.generic_fallback is false: "
            f"add binance.brackets.{sym} to the parameter file or turn the fallback on")
    table = br.generic
    return make_brackets(sym, table["caps"], table["mmr"],
                         source="binance.brackets.generic: " + params.source("binance.brackets.generic"),
                         im_multiple=im)


def max_leverage(symbol: str, date, notional_usd=None, *, params: Params):
    """[vec over notional] The leverage cap: min(venue cap on date, cap of the notional's tier)."""
    venue_cap = params.binance.max_leverage.at(_date(date))
    if notional_usd is None:
        return venue_cap
    b = brackets_for(symbol, date, params)
    return np.minimum(venue_cap, b.max_leverage[b.tier(notional_usd)])


def check_leverage(symbol: str, date, leverage, notional_usd=None, *, params: Params) -> None:
    """Raise LeverageError if any leverage exceeds the cap on that date (and tier)."""
    lev = np.asarray(leverage, dtype=float)
    if np.any(~np.isfinite(lev)) or np.any(lev <= 0):
        raise LeverageError("leverage must be a positive finite number")
    cap = max_leverage(symbol, date, notional_usd, params=params)
    bad = lev > np.asarray(cap) * (1 + 1e-12)
    if np.any(bad):
        worst = float(np.max(lev[bad] if lev.ndim else lev))
        raise LeverageError(
            f"leverage {worst:g}x is above Binance's cap on {_date(date)} for {symbol} "
            f"({float(np.min(cap)):g}x): lower the leverage")


# ---------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------
# margin
# ---------------------------------------------------------------------------------------
def maintenance_margin(notional_usd, brackets: Brackets):
    """[vec] MM = notional * MMR - cum in the notional's tier."""
    n = _nonneg("notional_usd", notional_usd)
    t = brackets.tier(n)
    return _out(n * brackets.mmr[t] - brackets.cum[t], notional_usd)


def liquidation_price(side, qty, entry_price, wallet_balance, brackets: Brackets, *,
                      tmm_other=0.0, upnl_other=0.0):
    """[vec] One-way-mode liquidation price.

    LP = (WB - TMM_other + UPNL_other + cum - side*qty*EP) / (qty*MMR - side*qty), with MMR and
    cum of the tier that holds qty*LP (every tier is tried; MM is continuous so exactly one
    fits). Isolated: tmm_other = upnl_other = 0 and WB is the position's isolated margin;
    cross: WB is the cross wallet and the *_other terms come from the account's other
    positions. A long that cannot be liquidated (the equation has no positive root) gets 0.0;
    qty 0 gets nan.
    """
    s = _side(side)
    q = _nonneg("qty", qty)
    ep = _positive("entry_price", entry_price)
    wb = np.asarray(wallet_balance, dtype=float)
    if np.any(~np.isfinite(wb)):
        raise ValueError("wallet_balance must be finite")
    tmm = np.asarray(tmm_other, dtype=float)
    upnl = np.asarray(upnl_other, dtype=float)
    s, q, ep, wb, tmm, upnl = np.broadcast_arrays(s, q, ep, wb, tmm, upnl)
    shape = s.shape
    s, q, ep, wb, tmm, upnl = (a.reshape(-1) for a in (s, q, ep, wb, tmm, upnl))
    # candidates per tier: shape (n, tiers)
    mmr = brackets.mmr[None, :]
    cum = brackets.cum[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        num = (wb - tmm + upnl)[:, None] + cum - (s * q * ep)[:, None]
        den = q[:, None] * mmr - (s * q)[:, None]
        lp = num / den
    notional = q[:, None] * lp
    fits = (lp > 0) & (notional >= brackets.floors[None, :] * (1 - 1e-12)) & (
        notional <= brackets.caps[None, :] * (1 + 1e-12))
    any_fit = fits.any(axis=1)
    first = np.argmax(fits, axis=1)
    out = np.where(any_fit, lp[np.arange(len(lp)), first], 0.0)
    out = np.where(q > 0, out, np.nan)
    return _out(out.reshape(shape), side, qty, entry_price, wallet_balance)


def liquidation_tier(side, qty, entry_price, wallet_balance, brackets: Brackets, **kw):
    """[vec] 1-based tier number that holds the notional at the liquidation price (0 if none)."""
    lp = np.asarray(liquidation_price(side, qty, entry_price, wallet_balance, brackets, **kw))
    n = np.asarray(qty, dtype=float) * lp
    t = np.where(lp > 0, brackets.tier(np.nan_to_num(n)) + 1, 0)
    return t if np.ndim(t) else int(t)


def bankruptcy_price(side, qty, entry_price, wallet_balance):
    """[vec] Isolated bankruptcy price: long EP - WB/qty, short EP + WB/qty (floored at 0)."""
    s = _side(side)
    q = _positive("qty", qty)
    ep = _positive("entry_price", entry_price)
    wb = np.asarray(wallet_balance, dtype=float)
    return _out(np.maximum(ep - s * wb / q, 0.0), side, qty, entry_price, wallet_balance)


def margin_balance(side, qty, entry_price, wallet_balance, mark):
    """[vec] WB + uPnL at `mark`."""
    s = _side(side)
    q = _nonneg("qty", qty)
    return _out(np.asarray(wallet_balance, float) + s * q * (np.asarray(mark, float) - entry_price),
                side, qty, entry_price, wallet_balance, mark)


def is_liquidatable(side, qty, entry_price, wallet_balance, mark, brackets: Brackets):
    """[vec] Trigger: MM >= WB + uPnL at `mark` (bool)."""
    m = _positive("mark", mark)
    q = _nonneg("qty", qty)
    mb = margin_balance(side, q, entry_price, wallet_balance, m)
    mm = maintenance_margin(q * m, brackets)
    res = (np.asarray(mm) >= np.asarray(mb)) & (q > 0)
    return res if np.ndim(res) else bool(res)


# ---------------------------------------------------------------------------------------
# liquidation
# ---------------------------------------------------------------------------------------
def liquidation_outcome(side, qty, entry_price, wallet_balance, fill_price, fee_rate, *,
                        mark=None, fund_balance_usd=None, adl_enabled=True,
                        close_qty=None) -> dict[str, np.ndarray]:
    """[vec] Liquidate whole positions: an IOC at the bankruptcy price filling at `fill_price`
    (the path price minus impact, computed by the caller).

    The user loses the whole (isolated) wallet. side*qty*(fill - BP) > 0 is a surplus: the
    clearance fee (fee_rate * notional at the fill, at most the surplus) and any rest go to
    the insurance fund; < 0 is a deficit the fund pays. If `fund_balance_usd` is given, the
    events are applied in array order against that running balance: a deficit the fund
    cannot pay is closed by ADL at the bankruptcy price (qty_adl; the fund pays only the part
    filled in the market). `mark` (default fill_price) is the path price at the event, for
    the mark-relative cash flows.

    Returns arrays: notional_usd (qty * fill), bankruptcy_price, qty_market, qty_adl,
    user_loss_usd (equity at mark lost), clearance_fee_usd, fund_delta_usd (surplus incl.
    fee > 0, deficit < 0), adl_notional_usd (qty_adl * BP), adl_counterparty_usd (the ADL'd
    accounts' gain vs mark), market_usd (what the market counterparties gain vs mark on the
    filled part: impact), fund_balance_after_usd (if a balance was given).
    Money: user + fund + adl_counterparty + market == 0 on every event.

    close_qty (partial liquidation, see liquidation_qty): only that part is liquidated, carrying
    the pro-rata share wallet*close_qty/qty of the wallet (as if it were its own isolated
    position: same bankruptcy price); `wallet_left_usd` is what stays with the rest.
    """
    s = _side(side)
    q = _positive("qty", qty)
    ep = _positive("entry_price", entry_price)
    wb = np.asarray(wallet_balance, dtype=float)
    fp = _positive("fill_price", fill_price)
    fr = _nonneg("fee_rate", fee_rate)
    mk = fp if mark is None else _positive("mark", mark)
    cq = q if close_qty is None else _nonneg("close_qty", close_qty)
    s, q, ep, wb, fp, fr, mk, cq = (np.array(a, dtype=float, ndmin=1) for a in np.broadcast_arrays(
        s, q, ep, wb, fp, fr, mk, cq))
    if np.any(cq > q * (1 + 1e-12)):
        raise ValueError("close_qty must not exceed qty")
    wb_left = wb * (1.0 - cq / q)
    wb = wb - wb_left
    q = cq
    bp = ep - s * wb / q  # may be <= 0 for a 1x long: the fill is then always "better"
    per_coin = s * (fp - bp)  # >0 surplus per coin
    q_mkt = q.copy()
    if fund_balance_usd is not None:
        bal = float(fund_balance_usd)
        bal_after = np.empty_like(q)
        for i in range(len(q)):
            if per_coin[i] < 0 and adl_enabled:
                deficit = -per_coin[i] * q[i]
                if deficit > max(bal, 0.0):
                    q_mkt[i] = max(bal, 0.0) / -per_coin[i]
            bal += per_coin[i] * q_mkt[i]
            bal_after[i] = bal
    q_adl = q - q_mkt
    surplus = per_coin * q_mkt
    fee = np.minimum(fr * q_mkt * fp, np.maximum(surplus, 0.0))
    user_loss = wb + s * q * (mk - ep)  # equity at mark, all lost
    market = s * q_mkt * (mk - fp)  # counterparties buy/sell at fill vs mark
    adl_cp = s * q_adl * (mk - bp)  # ADL'd accounts close at BP vs mark
    out = {
        "notional_usd": q * fp,
        "bankruptcy_price": bp,
        "qty_market": q_mkt,
        "qty_adl": q_adl,
        "user_loss_usd": user_loss,
        "clearance_fee_usd": fee,
        "fund_delta_usd": surplus,
        "adl_notional_usd": q_adl * np.maximum(bp, 0.0),
        "adl_counterparty_usd": adl_cp,
        "market_usd": market,
        "wallet_left_usd": wb_left,
    }
    if fund_balance_usd is not None:
        out["fund_balance_after_usd"] = bal_after
    return out


def liquidation_qty(qty, mark, brackets: Brackets, params: Params, *, min_tier: int = 3):
    """[vec] Quantity the engine sends at a trigger.

    `binance.partial_liquidation` false (default): the whole position. True: positions whose
    notional at `mark` is in tier >= min_tier (1-based) are reduced only to the cap of the tier
    below (Binance's gradual liquidation of large positions; the exact 2022 rule is
    unpublished, this is the documented assumption); the rest stays open and is checked again.
    """
    q = _nonneg("qty", qty)
    m = _positive("mark", mark)
    if not params.binance.partial_liquidation:
        return _out(np.array(q, dtype=float), qty, mark)
    n = q * m
    tier = brackets.tier(n) + 1
    lower_cap = brackets.caps[np.maximum(tier - 2, 0)]
    partial = tier >= min_tier
    keep = np.where(partial, np.minimum(lower_cap, n) / m, 0.0)
    return _out(np.clip(q - keep, 0.0, q), qty, mark)


def adl_scores(upnl_usd, wallet_usd, mm_usd):
    """[vec] ADL rank key (higher is deleveraged first):
    max(0, uPnL) / max(1, WB) * MM / (WB + uPnL); 0 where the margin balance is <= 0."""
    u = np.asarray(upnl_usd, dtype=float)
    w = np.asarray(wallet_usd, dtype=float)
    mm = np.asarray(mm_usd, dtype=float)
    mb = w + u
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.maximum(u, 0.0) / np.maximum(w, 1.0) * mm / mb
    sc = np.where(mb > 0, sc, 0.0)
    return _out(sc, upnl_usd, wallet_usd, mm_usd)


def adl_allocate(scores, qty_coin, qty_needed: float) -> np.ndarray:
    """Quantity closed per candidate (aligned with the inputs): candidates are taken in
    descending score order (ties: lower index first), each up to its whole qty, until
    qty_needed is covered. Sum < qty_needed only if the candidates hold too little."""
    sc = np.asarray(scores, dtype=float).reshape(-1)
    q = _nonneg("qty_coin", qty_coin).reshape(-1)
    if qty_needed < 0:
        raise ValueError("qty_needed must be >= 0")
    order = np.lexsort((np.arange(len(sc)), -sc))
    cum = np.cumsum(q[order])
    before = cum - q[order]
    take = np.clip(qty_needed - before, 0.0, q[order])
    out = np.zeros_like(q)
    out[order] = take
    return out


def reported_mask(ts_s, order=None, *, symbol=None) -> np.ndarray:
    """Binance's public stream: at most one liquidation per symbol per second, the latest.

    ts_s: integer seconds of the events; order: a tiebreak within a second (default the
    array position; the largest is the latest); symbol: optional per-event symbol array.
    Returns a bool mask, True for the reported event of each (symbol, second).
    """
    t = np.asarray(ts_s).astype(np.int64).reshape(-1)
    n = len(t)
    o = np.arange(n) if order is None else np.asarray(order).reshape(-1)
    if len(o) != n:
        raise ValueError("order must have one entry per event")
    if symbol is None:
        sym_code = np.zeros(n, dtype=np.int64)
    else:
        _, sym_code = np.unique(np.asarray(symbol).reshape(-1), return_inverse=True)
    idx = np.lexsort((o, t, sym_code))
    last = np.ones(n, dtype=bool)
    if n > 1:
        same = (sym_code[idx][1:] == sym_code[idx][:-1]) & (t[idx][1:] == t[idx][:-1])
        last[:-1] = ~same
    mask = np.zeros(n, dtype=bool)
    mask[idx[last]] = True
    return mask
