"""FTX liquidation engine, 2021-2022 (MODEL.md section 3). Pure functions.

Conventions: side +1 long / -1 short; qty in coins (>= 0); prices and money in USD;
functions marked [vec] take scalars or numpy arrays (broadcast) and return the same shape
(python floats for all-scalar input).

Margin: IMF = max(1/leverage, imfFactor*sqrt(size)), MMF = max(0.03, 0.6*IMF),
ACMF = max(MMF/2, MMF-0.06). TAV = collateral value + uPnL, MF = TAV / |notional|.
States: NORMAL (MF >= IMF), REDUCE_ONLY (MMF..IMF), STEP1 (ACMF..MMF: order-book
liquidation), STEP2 (0..ACMF: partial takeover by BLPs), CLOSE_ALL (MF < 0).
Step 2: fraction 1 - MF/ACMF (all if MF < 0), at least min($1,000, position); the account
closes at the zero price ZP = MP*(1 - side*MF), the BLP at 2/3*ZP + 1/3*MP (negative equity:
MP + s*(ZP - MP), s = negative_equity_blp_share); the fund gets the difference.

Money (mark-relative, per event): user_loss = fund_delta + blp_discount (the user's equity
on the closed part goes to fund and BLP/overflow counterparties); see step2_takeover.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from backtest.checks import finite as _finite
from backtest.checks import nonneg as _nonneg
from backtest.checks import positive as _positive
from backtest.checks import scalar_out as _out
from backtest.checks import side as _side
from backtest.params import Params
from backtest.params import as_date as _date

NORMAL, REDUCE_ONLY, STEP1, STEP2, CLOSE_ALL = 0, 1, 2, 3, 4
STATE_NAMES = {NORMAL: "normal", REDUCE_ONLY: "reduce_only", STEP1: "step1", STEP2: "step2",
               CLOSE_ALL: "close_all"}

class LeverageError(ValueError):
    """Leverage above FTX's cap on that date."""


# ---------------------------------------------------------------------------------------
# parameters by symbol / coin / date
# ---------------------------------------------------------------------------------------
def max_leverage(date, params: Params) -> float:
    """FTX's max leverage on `date` (101x, 20x from 2021-07-25)."""
    return params.ftx.max_leverage.at(_date(date))


def check_leverage(leverage, date, params: Params) -> None:
    """Raise LeverageError if any leverage is above FTX's cap on `date` (or not > 0)."""
    lev = np.asarray(leverage, dtype=float)
    if np.any(~np.isfinite(lev)) or np.any(lev <= 0):
        raise LeverageError("leverage must be a positive finite number")
    cap = max_leverage(date, params)
    if np.any(lev > cap * (1 + 1e-12)):
        raise LeverageError(
            f"leverage {float(np.max(lev)):g}x is above FTX's cap of {cap:g}x on {_date(date)}: lower it")


def imf_factor_for(symbol: str, params: Params) -> float:
    """Position imfFactor of a perp ("BTC-PERP"); `ftx.imf_factor.default` otherwise."""
    return params.ftx.imf_factor.of(symbol.upper())


def coin_of(symbol: str) -> str:
    """'BTC-PERP' -> 'BTC', 'BTCUSDT' -> 'BTC', 'BTC/USD' -> 'BTC'."""
    s = symbol.upper()
    for suffix in ("-PERP", "/USDT", "/USD", "USDT", "BUSD", "USD"):
        if s.endswith(suffix):
            return s[: -len(suffix)]
    return s


def collateral_weights(coin: str, params: Params) -> tuple[float, float, float]:
    """(weight_total, weight_initial, imf_factor) of a collateral coin (USDT/USDC/BUSD -> USD)."""
    c = "USD" if coin.upper() in ("USD", "USDT", "USDC", "BUSD", "TUSD") else coin.upper()
    terms = params.ftx.collateral.get(c)
    if terms is None:
        raise ValueError(f"no FTX collateral weights for {coin!r}: add ftx.collateral.{c}.* to the parameter file")
    return terms.weight_total, terms.weight_initial, terms.imf_factor


# ---------------------------------------------------------------------------------------
# margin
# ---------------------------------------------------------------------------------------
def margin_thresholds(leverage, imf_factor, size_coin, *, params: Params, date=None):
    """[vec] (IMF, MMF, ACMF) of a position.

    IMF = max(1/leverage, imf_factor*sqrt(|size|)); MMF = max(0.03, 0.6*IMF);
    ACMF = max(MMF/2, MMF - 0.06). `leverage` is the account's leverage setting. With `date`,
    leverage above FTX's cap on that date raises LeverageError.
    """
    lev = np.asarray(leverage, dtype=float)
    if np.any(~np.isfinite(lev)) or np.any(lev <= 0):
        raise LeverageError("leverage must be a positive finite number")
    if date is not None:
        check_leverage(lev, date, params)
    f = _nonneg("imf_factor", imf_factor)
    size = np.abs(_finite("size_coin", size_coin))
    imf = np.maximum(1.0 / lev, f * np.sqrt(size))
    mmf = np.maximum(params.ftx.mmf_floor, params.ftx.mmf_imf_ratio * imf)
    acmf = np.maximum(mmf * params.ftx.acmf_ratio, mmf - params.ftx.acmf_offset)
    return (_out(imf, leverage, imf_factor, size_coin), _out(mmf, leverage, imf_factor, size_coin),
            _out(acmf, leverage, imf_factor, size_coin))


def account_thresholds(notional_usd, imf, mmf, *, params: Params):
    """Account IMF, MMF, ACMF of a multi-position account: notional-weighted means of the
    positions' IMF and MMF (arrays over its positions); ACMF from the account MMF."""
    n = np.abs(_finite("notional_usd", notional_usd)).reshape(-1)
    i = np.broadcast_to(np.asarray(imf, float), n.shape)
    m = np.broadcast_to(np.asarray(mmf, float), n.shape)
    tot = n.sum()
    if tot <= 0:
        raise ValueError("an account with no open notional has no margin thresholds")
    a_imf = float((n * i).sum() / tot)
    a_mmf = float((n * m).sum() / tot)
    a_acmf = max(a_mmf * params.ftx.acmf_ratio, a_mmf - params.ftx.acmf_offset)
    return a_imf, a_mmf, a_acmf


def effective_weight(balance_coin, weight, imf_factor, *, numerator: float = 1.1):
    """[vec] min(w, 1.1 / (1 + imfFactor*sqrt(b))) for b >= 0; 1.0 for a negative balance
    (a borrow counts at full value)."""
    b = _finite("balance_coin", balance_coin)
    w = np.asarray(weight, dtype=float)
    f = _nonneg("imf_factor", imf_factor)
    eff = np.minimum(w, numerator / (1.0 + f * np.sqrt(np.maximum(b, 0.0))))
    return _out(np.where(b >= 0, eff, 1.0), balance_coin, weight, imf_factor)


def collateral_value(balance_coin, price, weight, imf_factor, *, numerator: float = 1.1):
    """[vec] USD value of a coin balance: b * P * min(w, 1.1 / (1 + imfFactor * sqrt(b)))."""
    p = _positive("price", price)
    w = effective_weight(balance_coin, weight, imf_factor, numerator=numerator)
    return _out(np.asarray(balance_coin, float) * p * w, balance_coin, price, weight, imf_factor)


def account_tav_mf(side, qty, entry, mark, usd, coin_value_usd):
    """[vec] (TAV, MF): TAV = usd + coin_value_usd + side*qty*(mark - entry);
    MF = TAV / (qty*mark) (inf for qty 0)."""
    s = _side(side)
    q = _nonneg("qty", qty)
    m = _positive("mark", mark)
    tav = np.asarray(usd, float) + np.asarray(coin_value_usd, float) + s * q * (m - np.asarray(entry, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        mf = np.where(q > 0, tav / (q * m), np.inf)
    ins = (side, qty, entry, mark, usd, coin_value_usd)
    return _out(tav, *ins), _out(mf, *ins)


def price_at_margin_fraction(side, qty, entry, usd_other, same_coin_qty, same_coin_weight, target_mf):
    """[vec] The mark price at which MF == target_mf, holding everything else fixed.

    TAV(m) = usd_other + c*w*m + side*q*(m - entry), with usd_other = USD plus the value of
    every collateral NOT in the position's coin, c = same_coin_qty (collateral in the
    position's own coin, e.g. BTC held against BTC-PERP) and w its EFFECTIVE weight
    (effective_weight(): the size haircut depends on the balance, not the price, so the
    solution is closed form). MF(m) = TAV(m)/(q*m) = t gives
        m = (side*q*entry - usd_other) / (c*w + side*q - t*q).
    MF is monotone in m, so the solution is unique; nan where there is no positive price
    (the account can never reach that MF), or qty is 0.
    """
    s = _side(side)
    q = _nonneg("qty", qty)
    e = _positive("entry", entry)
    u = _finite("usd_other", usd_other)
    c = _finite("same_coin_qty", same_coin_qty)
    w = _finite("same_coin_weight", same_coin_weight)
    t = _finite("target_mf", target_mf)
    with np.errstate(divide="ignore", invalid="ignore"):
        num = s * q * e - u
        den = c * w + s * q - t * q
        m = num / den
    ok = np.isfinite(m) & (m > 0) & (q > 0)
    return _out(np.where(ok, m, np.nan), side, qty, entry, usd_other, same_coin_qty, same_coin_weight,
                target_mf)


def state(mf, imf, mmf, acmf):
    """[vec] int8 state codes: NORMAL 0, REDUCE_ONLY 1, STEP1 2, STEP2 3, CLOSE_ALL 4."""
    mf = np.asarray(mf, dtype=float)
    imf, mmf, acmf = (np.asarray(x, dtype=float) for x in (imf, mmf, acmf))
    code = np.where(mf >= imf, NORMAL,
                    np.where(mf >= mmf, REDUCE_ONLY,
                             np.where(mf >= acmf, STEP1, np.where(mf >= 0, STEP2, CLOSE_ALL))))
    code = code.astype(np.int8)
    return code if code.ndim else int(code)


# ---------------------------------------------------------------------------------------
# step 1: order-book liquidation
# ---------------------------------------------------------------------------------------
def step1_budget_usd(adv_usd: float, params: Params) -> float:
    """The market's global step-1 budget per tick: budget_adv_fraction (1e-4) * ADV."""
    if adv_usd is None or not np.isfinite(adv_usd) or adv_usd < 0:
        raise ValueError("adv_usd must be a finite number >= 0")
    return params.ftx.step1.budget_adv_fraction * float(adv_usd)


def step1_order_qty(position_qty, mark, budget_usd: float, params: Params, rng=None):
    """Step-1 order sizes for the accounts of ONE market that are in step 1 this tick.

    Per account: q = fraction (10%) * |position|, at least min($1,000, position), times
    U(0.5, 1.5), capped by the position; the orders share the market's budget for the tick
    (budget_usd, e.g. step1_budget_usd(ADV)), served in random order. The market fires this
    tick with probability 1/6 (`ftx.step1.probability`).
    rng None = deterministic expected values: jitter 1, index order, every size times the
    firing probability (and the budget used likewise).
    Returns (qty_per_account (coins, aligned with position_qty), budget_left_usd).
    """
    pos = np.abs(_finite("position_qty", position_qty)).reshape(-1)
    m = np.broadcast_to(_positive("mark", mark), pos.shape).astype(float) if pos.size else np.zeros(0)
    if budget_usd < 0 or not np.isfinite(budget_usd):
        raise ValueError("budget_usd must be finite and >= 0")
    prob = params.ftx.step1.probability
    base = np.maximum(params.ftx.step1.fraction * pos,
                      np.minimum(params.ftx.step1.min_usd / np.where(m > 0, m, 1.0), pos))
    if rng is None:
        order = np.arange(len(pos))
        jitter = np.ones(len(pos))
        scale = prob
    else:
        if rng.random() >= prob:
            return np.zeros_like(pos), float(budget_usd)
        order = rng.permutation(len(pos))
        jitter = rng.uniform(params.ftx.step1.jitter_low, params.ftx.step1.jitter_high,
                             len(pos))
        scale = 1.0
    want = np.minimum(base * jitter, pos)
    want_usd = (want * m)[order]
    cum = np.cumsum(want_usd)
    got_usd = np.clip(budget_usd - (cum - want_usd), 0.0, want_usd)
    qty = np.zeros_like(pos)
    with np.errstate(divide="ignore", invalid="ignore"):
        qty[order] = np.where(want_usd > 0, want[order] * got_usd / want_usd, 0.0)
    qty *= scale
    used = float(np.sum(qty * m))
    return qty, float(budget_usd) - used


def step1_fill_price(side, mark, impact_frac=0.0, *, params: Params, rng=None):
    """[vec] Price at which a step-1 closing order fills: mark moved against the account by
    the limit offset (U(1, 5) bp; 3 bp with rng None) plus impact: mark*(1 - side*(off+impact))."""
    s = _side(side)
    m = _positive("mark", mark)
    imp = _nonneg("impact_frac", impact_frac)
    lo, hi = params.ftx.step1.offset_bp_low, params.ftx.step1.offset_bp_high
    shape = np.broadcast(s, m, imp).shape
    off = (np.full(shape, (lo + hi) / 2) if rng is None else rng.uniform(lo, hi, shape)) * 1e-4
    return _out(np.maximum(m * (1.0 - s * (off + imp)), 0.0), side, mark, impact_frac)


def step1_outcome(side, close_qty, mark, fill_price, fee_rate) -> dict[str, Any]:
    """[vec] Cash flows of a step-1 fill (mark-relative): user_pnl_usd = side*q*(fill - mark)
    - fee (<= 0), fee_usd, market_usd = side*q*(mark - fill) (the counterparties' gain vs mark),
    notional_usd. user_pnl + fee + market == 0."""
    s = _side(side)
    q = _nonneg("close_qty", close_qty)
    m = _positive("mark", mark)
    f = _positive("fill_price", fill_price)
    fee = q * f * _nonneg("fee_rate", fee_rate)
    return {"notional_usd": q * f, "fee_usd": fee, "market_usd": s * q * (m - f),
            "user_pnl_usd": s * q * (f - m) - fee}


# ---------------------------------------------------------------------------------------
# step 2: backstop takeover
# ---------------------------------------------------------------------------------------
def zero_price(side, mark, margin_fraction):
    """[vec] ZP = MP*(1 - MF) long, MP*(1 + MF) short."""
    s = _side(side)
    m = _positive("mark", mark)
    mf = _finite("margin_fraction", margin_fraction)
    return _out(m * (1.0 - s * mf), side, mark, margin_fraction)


def position_zero_price(side, mark, mm_share, tav, notional_usd):
    """[vec] Per-position zero price: PZP = MP*(1 - side*PMPD),
    PMPD = mm_share * TAV / |notional| (mm_share: the position's share of the account's
    maintenance collateral; 1 for a single-position account, where PZP == ZP)."""
    n = _positive("notional_usd", np.abs(np.asarray(notional_usd, float)))
    pmpd = np.asarray(mm_share, float) * _finite("tav", tav) / n
    return zero_price(side, mark, pmpd)


def backstop_price(side, mark, margin_fraction, negative_equity_blp_share=2.0 / 3.0, *,
                   zp_weight: float = 2.0 / 3.0):
    """[vec] The price the BLP (or overflow counterparty) closes at.

    Equity >= 0: zp_weight*ZP + (1-zp_weight)*MP (2/3 ZP + 1/3 MP).
    Equity < 0: MP + s*(ZP - MP), s = negative_equity_blp_share (default 2/3: the same rule).
    """
    s = _side(side)
    m = _positive("mark", mark)
    mf = _finite("margin_fraction", margin_fraction)
    share = np.asarray(negative_equity_blp_share, float)
    if np.any(share < 0) or np.any(share > 1):
        raise ValueError("negative_equity_blp_share must be in [0, 1]")
    zp = m * (1.0 - s * mf)
    w = np.where(mf >= 0, zp_weight, share)
    return _out(m + w * (zp - m), side, mark, margin_fraction)


def step2_takeover(side, qty, mark, mf, acmf, tav, params: Params, *,
                   mm_share=None) -> dict[str, np.ndarray]:
    """[vec] One step-2 tick for accounts with MF < ACMF (others get close_qty 0).

    close fraction f = 1 - MF/ACMF (1 if MF < 0), close_qty = max(f*qty, min($1,000/mark, qty))
    capped at qty. The account closes at the zero price (per-position zero price if mm_share
    is given; PMPD = mm_share*TAV/(qty*mark)); the BLP at backstop_price.
    Returns arrays: close_qty, close_fraction (close_qty/qty: the share of the account's
    non-USD collateral that passes to the BLP, see collateral_transfer), zero_price,
    blp_price, notional_usd (close_qty*mark), user_loss_usd = side*close_qty*(mark - ZP)
    (the equity lost; < 0 when the account was under water), fund_delta_usd =
    side*close_qty*(blp - ZP) (1/3 E in, or (1-s) of a deficit out), blp_discount_usd =
    side*close_qty*(mark - blp) (the BLP's gain vs mark; < 0 on negative equity).
    user_loss == fund_delta + blp_discount on every element.
    """
    s = _side(side)
    q = _nonneg("qty", qty)
    m = _positive("mark", mark)
    mf_ = _finite("mf", mf)
    ac = _positive("acmf", acmf)
    tav_ = _finite("tav", tav)
    s, q, m, mf_, ac, tav_ = (np.array(a, dtype=float, ndmin=1) for a in np.broadcast_arrays(s, q, m, mf_, ac, tav_))
    frac = np.where(mf_ < 0, 1.0, np.where(mf_ < ac, 1.0 - mf_ / ac, 0.0))
    min_q = np.minimum(params.ftx.step2.min_usd / m, q)
    close = np.where(frac > 0, np.minimum(np.maximum(frac * q, min_q), q), 0.0)
    if mm_share is None:
        pmpd = mf_
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            pmpd = np.where(q > 0, np.asarray(mm_share, float) * tav_ / (q * m), mf_)
    zp = m * (1.0 - s * pmpd)
    blp = np.asarray(backstop_price(s, m, pmpd, params.ftx.negative_equity_blp_share,
                                    zp_weight=params.ftx.blp_price_zp_weight), float)
    with np.errstate(divide="ignore", invalid="ignore"):
        cf = np.where(q > 0, close / q, 0.0)
    return {
        "close_qty": close,
        "close_fraction": cf,
        "zero_price": zp,
        "blp_price": blp,
        "notional_usd": close * m,
        "user_loss_usd": s * close * (m - zp),
        "fund_delta_usd": s * close * (blp - zp),
        "blp_discount_usd": s * close * (m - blp),
    }


def collateral_transfer(balance_coin, price, eff_weight, fraction) -> dict[str, Any]:
    """[vec] The account's non-USD collateral passing to the BLP with the position.

    The fraction `fraction` of the coin balance moves with the USD debt that offsets its
    weighted value in the account (after a close at the zero price the account's TAV is 0,
    so its USD balance is minus its weighted coin value). The BLP thus pays
    coin*price*eff_weight and receives coins worth coin*price: the haircut is its gain
    (before the sale's impact and fees, execution.collateral_sale), the user's loss.
    Returns coin_qty, blp_pays_usd, market_value_usd, user_loss_usd (== blp_gain_usd), blp_gain_usd.
    """
    b = _finite("balance_coin", balance_coin)
    pr = _positive("price", price)
    w = _finite("eff_weight", eff_weight)
    f = _nonneg("fraction", fraction)
    c = b * f
    pays = c * pr * w
    val = c * pr
    return {"coin_qty": c, "blp_pays_usd": pays, "market_value_usd": val,
            "user_loss_usd": val - pays, "blp_gain_usd": val - pays}


def blp_take(notional_usd, used_minute_usd, used_hour_usd, params: Params):
    """[vec] Split takeover notionals between the BLPs and overflow, given what the BLPs
    already took this minute and hour (aggregate caps `ftx.blp.capacity_per_minute_usd`,
    `ftx.blp.capacity_per_hour_usd`). Array input is served in order against one shared
    capacity. Returns (taken_usd, overflow_usd)."""
    n = _nonneg("notional_usd", notional_usd)
    room = max(0.0, min(params.ftx.blp.capacity_per_minute_usd - float(used_minute_usd),
                        params.ftx.blp.capacity_per_hour_usd - float(used_hour_usd)))
    flat = np.array(n, dtype=float, ndmin=1).reshape(-1)
    cum = np.cumsum(flat)
    taken = np.minimum(cum, room) - np.minimum(cum - flat, room)
    taken = taken.reshape(np.shape(n))
    over = n - taken
    return _out(taken, notional_usd), _out(over, notional_usd)


def overflow_allocate(opposing_qty, qty_needed: float, top_n: int = 10) -> np.ndarray:
    """Close `qty_needed` coins against the top_n largest opposing accounts, pro rata to their
    size (aligned with the inputs). If they hold too little they are closed entirely and the
    rest goes to the next top_n, and so on; sum < qty_needed only if everybody is closed."""
    q = _nonneg("opposing_qty", opposing_qty).reshape(-1)
    if qty_needed < 0 or not np.isfinite(qty_needed):
        raise ValueError("qty_needed must be finite and >= 0")
    if top_n < 1:
        raise ValueError("top_n must be >= 1")
    out = np.zeros_like(q)
    order = np.lexsort((np.arange(len(q)), -q))
    order = order[q[order] > 0]
    remaining = float(qty_needed)
    for start in range(0, len(order), top_n):
        if remaining <= 0:
            break
        grp = order[start:start + top_n]
        total = float(q[grp].sum())
        if remaining >= total:
            out[grp] = q[grp]
            remaining -= total
        else:
            out[grp] = q[grp] * (remaining / total)
            remaining = 0.0
    return out


def exempt_deficit_usd(tav):
    """[vec] The exempt account's deficit: max(0, -TAV) (it is never liquidated)."""
    return _out(np.maximum(-_finite("tav", tav), 0.0), tav)


def reported_mask(ts_s) -> np.ndarray:
    """FTX flagged every liquidation fill: every event is reported (all True)."""
    return np.ones(np.asarray(ts_s).reshape(-1).shape, dtype=bool)
