"""The population's slow reference (tests only): account_terms and build_book as they were
before the cohort terms were vectorised (backtest.population.accounts.TermsSpec), one call
of the venue functions per cohort. tests/backtest/test_population_terms.py checks the fast
path against these bit for bit. Keep them as they are: they are the specification."""
from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtri

from backtest import rng as R
from backtest.params import Params
from backtest.params import as_date as _date
from backtest.population.accounts import (
    KIND_CLOSE,
    KIND_ENTRY,
    KIND_ISOLATED,
    KIND_LEGACY,
    KIND_LEV_BODY,
    KIND_LEV_LOW,
    KIND_LEV_TAIL,
    KIND_SIZE,
    NEVER,
    Population,
    _balance_for_value,
    ftx_collateral_shares,
    keyed_uniforms,
    leverage_from_uniforms,
    stratified_uniforms,
    tail_uniforms,
)
from backtest.population.book import (
    KIND_COUNT,
    KIND_PRORATA,
    BookBars,
    _add_exempt,
    _real_accounts,
    _Store,
    cohort_step_s,
    crossed_since,
    first_cross,
    held_values,
    step_grid,
)
from backtest.venues import binance, ftx
from backtest.venues import ftx as ftx_venue

__all__ = ["account_terms", "build_book", "BookBars"]


def account_terms(venue: str, symbol: str, *, side: np.ndarray, qty: np.ndarray, entry: np.ndarray,
                  ids: np.ndarray, key: int, date, params: Params,
                  collateral_prices: dict[str, float] | None = None, cache: dict | None = None,
                  weight: np.ndarray | None = None, u_low: np.ndarray | None = None) -> dict:
    """Leverage, margin and liquidation trigger of one cohort's accounts (MODEL.md 2).

    side/qty/entry per account; ids: the accounts' ids in the book (the counters of their
    keyed draws, so an account's draws do not depend on which other accounts exist).
    Binance: isolated with probability `binance_isolated_share`, a cross wallet holds
    `binance_cross_extra_margin` x the margin on top (leverage and isolated draws are
    stratified over `ids`, one cohort side: stratified_uniforms); trigger = the liquidation price
    (backtest.venues.binance.liquidation_price, the bracket at LP). FTX: the margin is held
    as USD and coins (`ftx_collateral_share.*`, coins valued at `collateral_prices`, the
    position's own coin at its entry; coins without a price are held as USD); trigger = the
    price at which MF reaches MMF (venues.ftx.price_at_margin_fraction; other coins held at
    their value). weight: the real accounts each simulated one stands for; every size-dependent
    term (Binance bracket and leverage cap, FTX size IMF and collateral haircut) is evaluated
    at the real position's size qty/weight, so the book does not change with N; balances are
    returned for the simulated account (x weight). Returns a dict of arrays: leverage,
    account_leverage, wallet_usd, isolated, collateral {coin: balance}, trigger, folded (coins
    held as USD).
    """
    v = venue.lower()
    d = _date(date)
    cache = {} if cache is None else cache
    n = len(side)
    side = np.asarray(side, np.int8)
    w_real = np.ones(n) if weight is None else np.maximum(np.asarray(weight, float), 1e-12)
    qty = np.asarray(qty, float) / w_real          # the real position's size
    entry = np.asarray(entry, float)
    notional = qty * entry
    if v == "ftx":
        f_imf = ftx.imf_factor_for(symbol, params)
        size_imf = f_imf * np.sqrt(qty)
        with np.errstate(divide="ignore"):
            cap = np.minimum(ftx.max_leverage(d, params), np.where(size_imf > 0, 1.0 / size_imf, np.inf))
        cap = np.maximum(cap, 1.0)
    else:
        ck = ("brackets", d)
        if ck not in cache:
            cache[ck] = binance.brackets_for(symbol, d, params)
        br = cache[ck]
        venue_cap = float(params.get("binance.max_leverage", d))
        # accounts opened before Binance's 2021-07-27 rule kept the older cap (the brackets' own);
        # `population.binance_legacy_share` of them (keyed draw per account)
        legacy_cap = float(params.get("binance.max_leverage", dt.date(2021, 7, 26)))
        legacy = stratified_uniforms(key, KIND_LEGACY, ids) < float(params.get("population.binance_legacy_share"))
        venue_caps = np.where(legacy, max(venue_cap, legacy_cap), venue_cap)
        cap = np.minimum(venue_caps, br.max_leverage[br.tier(notional)]).astype(float)
    lev = leverage_from_uniforms(stratified_uniforms(key, KIND_LEV_LOW, ids) if u_low is None else u_low,
                                 stratified_uniforms(key, KIND_LEV_TAIL, ids),
                                 stratified_uniforms(key, KIND_LEV_BODY, ids), cap, params)
    margin = notional / lev
    out: dict[str, Any] = {"leverage": lev, "collateral": {}, "isolated": np.zeros(n, bool), "folded": []}
    if v == "ftx":
        coin = ftx.coin_of(symbol)
        acct_lev = np.clip(np.maximum(float(params.get("population.ftx_account_leverage")), lev), 1.0, cap)
        shares = ftx_collateral_shares(params)
        prices = {k.upper(): float(x) for k, x in (collateral_prices or {}).items()}
        usd_share = shares.pop("USD", 0.0)
        numerator = float(params.get("ftx.collateral_haircut_numerator"))
        other_value = np.zeros(n)
        same_bal, same_w = np.zeros(n), np.zeros(n)
        for c, sh in shares.items():
            if sh == 0:
                continue
            px = entry if c == coin else prices.get(c)
            if px is None or (np.ndim(px) == 0 and (not np.isfinite(px) or px <= 0)):
                out["folded"].append(c)
                usd_share += sh
                continue
            wt, _, f = ftx.collateral_weights(c, params)
            bal = _balance_for_value(margin * sh, px, wt, f, numerator)
            out["collateral"][c] = bal * w_real
            if c == coin:
                same_bal = bal
                same_w = np.asarray(ftx.effective_weight(bal, wt, f, numerator=numerator), float).reshape(-1)
            else:
                other_value += np.asarray(ftx.collateral_value(bal, px, wt, f, numerator=numerator), float)
        wallet = margin * usd_share
        _, mmf, _ = ftx.margin_thresholds(acct_lev, f_imf, qty, params=params)
        trig = ftx.price_at_margin_fraction(side, qty, entry, wallet + other_value, same_bal, same_w,
                                            np.asarray(mmf, float))
        trig = np.where(np.isfinite(trig), trig, np.where(side > 0, 0.0, np.inf))
        out.update(account_leverage=acct_lev, wallet_usd=wallet * w_real, trigger=np.asarray(trig, float))
    else:
        iso_share = float(params.get("population.binance_isolated_share"))
        extra = float(params.get("population.binance_cross_extra_margin"))
        isolated = stratified_uniforms(key, KIND_ISOLATED, ids) < iso_share
        wallet = np.where(isolated, margin, margin * (1.0 + extra))
        lp = np.asarray(binance.liquidation_price(side, qty, entry, wallet, br), float).reshape(-1)
        # a long that cannot be liquidated gets 0 (never crossed); a short's LP is always > 0
        trig = np.where(np.isfinite(lp) & (lp > 0), lp, np.where(side > 0, 0.0, np.inf))
        out.update(account_leverage=lev.copy(), wallet_usd=wallet * w_real, isolated=isolated, trigger=trig)
    return out


def build_book(venue: str, symbol: str, coin: str, bars: BookBars, *, oi_asof_s: np.ndarray,
               oi_coin: np.ndarray, window_start_s: int, window_end_s: int, params: Params, key: int,
               n_accounts: int, collateral_prices: dict[str, float] | None = None,
               long_share_asof_s: np.ndarray | None = None, long_share: np.ndarray | None = None,
               oi_source: str = "") -> Population:
    """The cohort book of one (venue, market) for the window [window_start_s, window_end_s).

    oi_asof_s/oi_coin: the OI path in coins (already scaled for FTX), each value with the
    time it becomes known. n_accounts: the expected number of accounts in the returned book
    (alive at the window start or opened in the window): accounts per cohort and side are
    proportional to the side's opened notional x the chance an account of it survives to the
    window start (1 for cohorts in the window), at least one per side.
    """
    dt_s = cohort_step_s(float(params.get("population.cohort_hours")))   # the grid rule is shared, not under test
    tau_d = float(params.get("population.holding_days"))
    warm_d = float(params.get("population.warmup_days"))
    lookback_d = float(params.get("population.entry_lookback_days"))
    sigma = float(params.get("population.notional_sigma"))
    if dt_s <= 0 or tau_d <= 0 or warm_d < 0 or sigma < 0 or n_accounts < 2:
        raise ValueError("population: cohort_hours, holding_days > 0, warmup_days >= 0, n_accounts >= 2")
    tau_s = tau_d * 86400.0
    tau_tail_s = tau_s * float(params.get("population.holding_tail_ratio"))
    a_body = float(params.get("population.leverage_low_share"))
    q_tail = max(float(params.get("population.tail_sim_share")), 1.0 - a_body)
    real = _real_accounts(params, coin)
    ls_default = float(params.get("population.long_account_share"))
    oi_asof_s = np.asarray(oi_asof_s, np.int64)
    oi_coin = np.asarray(oi_coin, float)
    ok = np.isfinite(oi_coin) & (oi_coin > 0)
    oi_asof_s, oi_coin = oi_asof_s[ok], oi_coin[ok]
    if len(oi_asof_s) == 0:
        raise ValueError("no open interest for the book")
    order = np.argsort(oi_asof_s, kind="stable")
    oi_asof_s, oi_coin = oi_asof_s[order], oi_coin[order]
    book_from = max(int(window_start_s - warm_d * 86400), int(oi_asof_s[0]), int(bars.ts_s[0] + bars.dur_s[0]))
    T = step_grid(book_from, window_end_s, dt_s)
    if len(T) == 0:
        raise ValueError("the open-interest path starts after the window ends")
    K = len(T)
    target = held_values(oi_asof_s, oi_coin, T)
    if long_share_asof_s is not None and long_share is not None and len(long_share):
        ls = held_values(np.asarray(long_share_asof_s, np.int64), np.asarray(long_share, float), T)
        ls = np.where(np.isfinite(ls), ls, ls_default)
    else:
        ls = np.full(K, ls_default)
    ls = np.clip(ls, 0.01, 0.99)
    # price at T_k: close of the last bar ended by T_k
    last_bar = np.searchsorted(bars.end_s, T, side="right")          # bars [0, last_bar) ended by T
    price = np.where(last_bar > 0, bars.close[np.maximum(last_bar - 1, 0)], bars.open[0])

    # accounts per dollar opened, fixed at the book start from what is known then (no later
    # OI value may change any draw): a steady book of the first OI value, each cohort weighted
    # by its chance to survive to the window start, holds n_accounts in expectation
    decay, decay_t = math.exp(-dt_s / tau_s), math.exp(-dt_s / tau_tail_s)
    age = np.maximum(0.0, window_start_s - T)
    surv = (1.0 - q_tail) * np.exp(-age / tau_s) + q_tail * np.exp(-age / tau_tail_s)
    exp_share = np.full(K, 1.0 / (a_body / (1.0 - decay) + (1.0 - a_body) / (1.0 - decay_t)))
    exp_share[0] = 1.0
    denom = float(2.0 * target[0] * price[0] * np.sum(exp_share * surv))
    rate = n_accounts / denom if denom > 0 else 0.0

    st = _Store(max(1024, int(n_accounts * 1.3)))
    pending = np.zeros((2, K + 1))          # [side 0 long / 1 short, step]: qty leaving at that step
    S = np.zeros(2)
    n_reset = 0
    n_prorata = 0
    prorata_usd = 0.0
    cache: dict = {}
    d0 = pd.Timestamp(int(window_start_s), unit="s", tz="UTC").date()
    folded: set[str] = set()
    k_count = R.make_key(np.uint64(key & 0xFFFFFFFFFFFFFFFF), np.uint64(KIND_COUNT), np.uint64(0), np.uint64(0))
    for k in range(K):
        S += pending[:, k]
        S = np.maximum(S, 0.0)
        tk = int(T[k])
        tgt = float(target[k])
        if not np.isfinite(tgt):
            continue
        # pro-rata closes of the excess
        for si, s in enumerate((1, -1)):
            excess = S[si] - tgt
            if excess > 1e-9 * tgt:
                alive = np.nonzero((st["side"] == s) & (st["end_s"] > tk))[0]
                if len(alive):
                    pkey = R.make_key(np.uint64(key & 0xFFFFFFFFFFFFFFFF), np.uint64(KIND_PRORATA),
                                      np.uint64(k), np.uint64(0))
                    u = R.uniforms(np.uint64(pkey), alive.astype(np.int64))
                    alive = alive[np.argsort(u, kind="stable")]
                    cum = np.cumsum(st["qty"][alive])
                    m = int(min(len(alive), np.searchsorted(cum, excess * (1 - 1e-12)) + 1))
                    ch = alive[:m]
                    q = st["qty"][ch]
                    np.add.at(pending[si], np.minimum(st["end_k"][ch], K), q)   # cancel their scheduled exits
                    st.a["close_s"][ch] = tk
                    st.a["end_s"][ch] = tk
                    st.a["end_k"][ch] = k
                    S[si] -= q.sum()
                    n_prorata += m
                    prorata_usd += float(q.sum() * price[k])
        # opens
        if k == 0:
            lo_s = tk - int(lookback_d * 86400)
        else:
            lo_s = int(T[k - 1])
        b0 = int(np.searchsorted(bars.ts_s, lo_s, side="left"))
        b1 = int(last_bar[k])
        if b1 <= b0:    # no bar ended in the step: enter at the price at T_k
            b0, b1 = max(0, b1 - 1), max(1, b1)
        bw = bars.vol[b0:b1] * (bars.close[b0:b1] > 0)
        if k == 0:
            bw = bw * np.exp(-(tk - bars.end_s[b0:b1]) / tau_s)
        if not np.any(bw > 0):
            bw = np.ones(b1 - b0)
        cdf = np.cumsum(bw) / bw.sum()
        for si, s in enumerate((1, -1)):
            opens = tgt - S[si]
            if opens <= 1e-9 * tgt:
                continue
            share = ls[k] if s > 0 else 1.0 - ls[k]
            x = rate * opens * price[k] * surv[k] * 2.0 * share
            ucount = float(R.uniform(np.uint64(k_count), np.uint64(2 * k + si)))
            n = max(1, int(math.floor(x)) + (1 if ucount < x - math.floor(x) else 0))
            ids = np.arange(st.n, st.n + n, dtype=np.int64)
            # equal simulated notional; the real accounts' sizes are lognormal(sigma) and each
            # simulated account stands for qty / real size of them (the cohort side's real count
            # is its share of the OI x real accounts x side share)
            u_low, mass = tail_uniforms(stratified_uniforms(key, KIND_LEV_LOW, ids), a_body, q_tail)
            qty = opens / n * mass
            size = np.exp(sigma * ndtri(np.clip(stratified_uniforms(key, KIND_SIZE, ids), 1e-12, 1 - 1e-12)))
            inv = 1.0 / size
            wgt = opens / tgt * real * share * inv / inv.sum() * mass
            eb = b0 + np.minimum(np.searchsorted(cdf, keyed_uniforms(key, KIND_ENTRY, ids), side="right"), b1 - b0 - 1)
            entry = bars.close[eb].copy()
            sides = np.full(n, s, np.int8)
            terms = account_terms(venue, symbol, side=sides, qty=qty, entry=entry, ids=ids, key=key, date=d0,
                                  params=params, collateral_prices=collateral_prices, cache=cache, weight=wgt,
                                  u_low=u_low)
            bad = crossed_since(sides, terms["trigger"], (eb + 1).astype(np.int64), b1, bars.low, bars.high)
            bad |= (terms["trigger"] >= price[k]) if s > 0 else (terms["trigger"] <= price[k])
            if bad.any():
                n_reset += int(bad.sum())
                entry[bad] = price[k]
                terms = account_terms(venue, symbol, side=sides, qty=qty, entry=entry, ids=ids, key=key, date=d0,
                                      params=params, collateral_prices=collateral_prices, cache=cache, weight=wgt,
                                  u_low=u_low)
            folded.update(terms["folded"])
            u = keyed_uniforms(key, KIND_CLOSE, ids)
            tau_i = np.where(u_low >= a_body, tau_tail_s, tau_s)
            close = tk + np.maximum(1, np.rint(-np.log1p(-u) * tau_i)).astype(np.int64)
            liq = first_cross(sides.astype(np.int64), terms["trigger"], np.full(n, tk, np.int64),
                              np.minimum(close, window_end_s), bars.ts_s, bars.dur_s, bars.open, bars.high,
                              bars.low, bars.close, bars.blo, bars.bhi)
            end = np.minimum(close, liq)
            end_k = np.maximum(np.ceil((end - T[0]) / dt_s).astype(np.int64), k + 1)
            end_k = np.minimum(end_k, K)
            np.add.at(pending[si], end_k, -qty)
            S[si] += qty.sum()
            st.add({"side": sides, "qty": qty, "entry": entry, "lev": terms["leverage"],
                    "acct_lev": terms["account_leverage"], "wallet": terms["wallet_usd"],
                    "isolated": terms["isolated"], "trigger": terms["trigger"], "open_s": np.full(n, tk, np.int64),
                    "close_s": close, "liq_s": liq, "end_s": end, "end_k": end_k,
                    "weight": wgt, "cohort": np.full(n, k, np.int32)},
                   terms["collateral"])

    keep = st["end_s"] > window_start_s
    idx = np.nonzero(keep)[0]
    liq = st["liq_s"][idx]
    close = st["close_s"][idx]
    liq = np.where(liq < close, liq, NEVER)
    start_price = float(price[np.searchsorted(T, window_start_s)] if T[-1] >= window_start_s else price[-1])
    sp_bar = int(np.searchsorted(bars.ts_s, window_start_s))
    if sp_bar < len(bars.ts_s):
        start_price = float(bars.open[sp_bar])
    n_out = len(idx)
    meta = {
        "book": "v2 cohorts", "oi_source": oi_source,
        "book_start": pd.Timestamp(int(T[0]), unit="s", tz="UTC").isoformat(),
        "oi_first_known": pd.Timestamp(int(oi_asof_s[0]), unit="s", tz="UTC").isoformat(),
        "oi_intraday": "held: the latest lake value known at each step (no interpolation)",
        "cohort_s": dt_s, "n_cohorts": K, "n_accounts_built": int(st.n), "n_accounts": n_out,
        "n_entry_reset": n_reset, "n_prorata_closes": n_prorata, "prorata_closed_usd": prorata_usd,
        "real_accounts_per_market": real, "expected_liq_s": liq,
        "step_s": T, "step_target_coin": target, "step_price": price,
        "oi_coin_start": float(held_values(oi_asof_s, oi_coin, np.array([window_start_s]))[0]),
        "n_topped_up": 0,
    }
    meta["oi_usd_start"] = meta["oi_coin_start"] * start_price
    if folded:
        meta["collateral_folded_to_usd"] = sorted(folded)
    coll = {c: v[:st.n][idx] for c, v in st.coll.items()}
    cprices = {c: float(x) for c, x in (collateral_prices or {}).items() if c.upper() in coll}
    if venue == "ftx" and ftx_venue.coin_of(symbol) in coll:
        cprices.setdefault(ftx_venue.coin_of(symbol), start_price)
    pop = Population(side=st["side"][idx].copy(), qty_coin=st["qty"][idx].copy(), entry_price=st["entry"][idx].copy(),
                     leverage=st["lev"][idx].copy(), wallet_usd=st["wallet"][idx].copy(), collateral=coll,
                     isolated=st["isolated"][idx].copy(), exempt=np.zeros(n_out, bool),
                     account_leverage=st["acct_lev"][idx].copy(), venue=venue, symbol=symbol, date=d0,
                     start_price=start_price, collateral_prices=cprices, meta=meta,
                     open_s=st["open_s"][idx].copy(), close_s=close.copy(), weight=st["weight"][idx].copy(),
                     cohort=st["cohort"][idx].copy())
    pop.meta["trigger"] = st["trigger"][idx].copy()
    if bool(params.get("population.exempt_account")):
        _add_exempt(pop, params, window_start_s)
    return pop
