"""Accounts: the Population container and the per-account draws (MODEL.md section 2). Pure.

`account_terms` draws one cohort's leverage, margin, Binance isolated/cross and FTX collateral
with counter-based draws keyed by (key, account id) (backtest/rng.py), and its liquidation
trigger; the v2 cohort book (book.py) uses it for every cohort.

make_population (v1, kept for tests and parity fixtures) draws N accounts for one (venue, market, window):
- notional: lognormal(0, sigma) scaled so that long notional == short notional == oi_usd at
  the start price (the optional exempt account takes `exempt_notional_share` of its side);
- leverage: a mixture, `leverage_low_share` uniform on [1, 5]x and the rest log-uniform from
  5x to the venue's cap on that date (FTX 101x/20x and 1/(imfFactor*sqrt(size)); Binance 20x
  from 2021-07-27 and the bracket's cap for the notional), times `leverage_scale`, clipped
  to [1, cap];
- entry price: the close of a bar drawn with probability proportional to its quote volume;
- wallet: the margin at entry, qty*entry/leverage. Accounts that would already be past their
  liquidation trigger at the start price are topped up so their equity at the start price is
  qty*start/leverage ("survivors": the real book has already lost them); meta["n_topped_up"];
- FTX: the margin is held as USD and coins (`population.ftx_collateral_share.*`), each coin
  balance sized so its weighted FTX value (effective weight with the size haircut) equals its
  share; coins without a price (collateral_prices) are folded into USD (logged, meta);
- Binance: isolated with probability `binance_isolated_share`; cross wallets hold
  `binance_cross_extra_margin` times the position margin on top;
- an optional exempt account (the Alameda scenario), last index, exempt=True.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from backtest.params import Params
from backtest.venues import binance, ftx
from backtest.params import as_date as _date

log = logging.getLogger(__name__)

VENUES = ("ftx", "binance")
OPEN_ALWAYS = np.iinfo(np.int64).min // 2   # open_s of an account open before any bar
NEVER = np.iinfo(np.int64).max // 2         # close_s of an account that never closes voluntarily


@dataclass
class Population:
    """Accounts as parallel arrays (index i = one account, one position in `symbol`).

    side int8 (+1 long / -1 short); qty_coin (> 0); entry_price; leverage (at entry,
    notional/margin); wallet_usd (FTX: the USD balance; Binance: the isolated margin or the
    cross wallet); collateral {coin: balance} (FTX non-USD collateral, coins); isolated
    (Binance; False on FTX, where accounts are cross-margined); exempt (never liquidated);
    account_leverage (FTX leverage setting: IMF = 1/account_leverage; Binance: = leverage).

    v2 (MODEL.md 2): open_s / close_s int64 epoch seconds, the account holds its position in
    [open_s, close_s) (a voluntary close at close_s; the replay ignores it outside that
    interval); weight float64, the number of real accounts this simulated one stands for
    (the disclosure throttle acts on the real count, MODEL.md 4.5); cohort int32 (-1: none).
    Defaults: open for the whole run, weight 1, no cohort.
    """

    side: np.ndarray
    qty_coin: np.ndarray
    entry_price: np.ndarray
    leverage: np.ndarray
    wallet_usd: np.ndarray
    collateral: dict[str, np.ndarray]
    isolated: np.ndarray
    exempt: np.ndarray
    account_leverage: np.ndarray | None = None
    venue: str = ""
    symbol: str = ""
    date: dt.date | None = None
    start_price: float = float("nan")
    collateral_prices: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    open_s: np.ndarray | None = None
    close_s: np.ndarray | None = None
    weight: np.ndarray | None = None
    cohort: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.side)
        if self.open_s is None:
            self.open_s = np.full(n, OPEN_ALWAYS, dtype=np.int64)
        if self.close_s is None:
            self.close_s = np.full(n, NEVER, dtype=np.int64)
        if self.weight is None:
            self.weight = np.ones(n)
        if self.cohort is None:
            self.cohort = np.full(n, -1, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.side)

    @property
    def n(self) -> int:
        return len(self.side)

    def notional_usd(self, price) -> np.ndarray:
        """|position| notional at `price`."""
        return self.qty_coin * np.asarray(price, dtype=float)

    def collateral_value_usd(self, prices: dict[str, float] | None = None, params: Params | None = None) -> np.ndarray:
        """FTX weighted value of the non-USD collateral at `prices` (default: the start prices)."""
        prices = {**self.collateral_prices, **(prices or {})}
        total = np.zeros(self.n)
        for coin, bal in self.collateral.items():
            w, _, f = ftx.collateral_weights(coin, params)
            total += np.asarray(ftx.collateral_value(bal, prices[coin], w, f), float)
        return total

    def to_frame(self) -> pd.DataFrame:
        cols = {"side": self.side, "qty_coin": self.qty_coin, "entry_price": self.entry_price,
                "leverage": self.leverage, "wallet_usd": self.wallet_usd, "isolated": self.isolated,
                "exempt": self.exempt}
        if self.account_leverage is not None:
            cols["account_leverage"] = self.account_leverage
        for coin, bal in self.collateral.items():
            cols[f"collateral_{coin}"] = bal
        return pd.DataFrame(cols)


def _balance_for_value(value_usd: np.ndarray, price: float, weight: float, imf_factor: float,
                       numerator: float) -> np.ndarray:
    """Coin balance b >= 0 with b*price*min(w, num/(1+f*sqrt(b))) == value (closed form).

    Where the plain weight binds, b = v/(P*w); otherwise (the size haircut binds) with
    x = sqrt(b): num*P*x^2 - v*f*x - v = 0, x = (v*f + sqrt((v*f)^2 + 4*num*P*v)) / (2*num*P).
    """
    v = np.maximum(np.asarray(value_usd, float), 0.0)
    b_plain = v / (price * weight)
    plain_ok = weight <= numerator / (1.0 + imf_factor * np.sqrt(b_plain))
    vf = v * imf_factor
    x = (vf + np.sqrt(vf * vf + 4.0 * numerator * price * v)) / (2.0 * numerator * price)
    return np.where(plain_ok, b_plain, x * x)


def _draw_leverage(n: int, cap, params: Params, rng: np.random.Generator) -> np.ndarray:
    low_share = float(params.get("population.leverage_low_share"))
    lo, hi = float(params.get("population.leverage_low_min")), float(params.get("population.leverage_low_max"))
    scale = float(params.get("population.leverage_scale"))
    if not (0 <= low_share <= 1) or lo < 1 or hi < lo or scale <= 0:
        raise ValueError("population leverage parameters: need 0<=low_share<=1, 1<=low_min<=low_max, scale>0")
    cap = np.broadcast_to(np.asarray(cap, float), (n,))
    low = rng.random(n) < low_share
    u = rng.random(n)
    tail_hi = np.maximum(cap, hi)
    tail = np.exp(np.log(hi) + u * (np.log(tail_hi) - np.log(hi)))
    body = lo + rng.random(n) * (hi - lo)
    lev = np.where(low, body, tail) * scale
    return np.clip(lev, 1.0, cap)


def make_population(venue: str, symbol: str, *, oi_usd: float, entry_bars: pd.DataFrame, date,
                    params: Params, rng: np.random.Generator, start_price: float | None = None,
                    collateral_prices: dict[str, float] | None = None,
                    n_accounts: int | None = None, long_share: float | None = None) -> Population:
    """A reproducible population for one (venue, symbol, window).

    venue "ftx" | "binance"; symbol e.g. "BTC-PERP" / "BTCUSDT"; oi_usd the open interest at
    the window start (each side's notional at `start_price` equals it); entry_bars a frame with
    columns close and volume_quote (ts optional): the bars before the window; with a ts
    column only the last `population.entry_lookback_days` days are used; date: the window start (for
    the dated leverage caps and brackets); start_price default: the last close of entry_bars;
    collateral_prices: FTX collateral coin prices at the start (the position's own coin
    defaults to start_price; USD is 1); n_accounts default `population.n_accounts`;
    long_share (share of accounts that are long) default `population.long_share` (pass the
    lake's long/short account ratio here when there is one).
    """
    v = venue.lower()
    if v not in VENUES:
        raise ValueError(f"unknown venue {venue!r}: use one of {VENUES}")
    if oi_usd is None or not np.isfinite(oi_usd) or oi_usd <= 0:
        raise ValueError(f"oi_usd must be a positive number (got {oi_usd!r})")
    if entry_bars is None or len(entry_bars) == 0:
        raise ValueError("entry_bars is empty: the population needs the bars before the window")
    for col in ("close", "volume_quote"):
        if col not in entry_bars.columns:
            raise ValueError(f"entry_bars needs a {col!r} column")
    if "ts" in entry_bars.columns and len(entry_bars) > 1:
        # keep the `population.entry_lookback_days` before the last bar (a longer frame is trimmed)
        days = float(params.get("population.entry_lookback_days"))
        ts = pd.to_datetime(entry_bars["ts"], utc=True)
        entry_bars = entry_bars.loc[(ts >= ts.max() - pd.Timedelta(days=days)).to_numpy()]
    close = entry_bars["close"].to_numpy(dtype=float)
    vol = entry_bars["volume_quote"].to_numpy(dtype=float)
    if np.any(~np.isfinite(close)) or np.any(close <= 0):
        raise ValueError("entry_bars has zero, negative or missing close prices")
    vol = np.where(np.isfinite(vol) & (vol > 0), vol, 0.0)
    d = _date(date)
    p0 = float(close[-1] if start_price is None else start_price)
    if not np.isfinite(p0) or p0 <= 0:
        raise ValueError("start_price must be > 0")
    n = int(params.get("population.n_accounts") if n_accounts is None else n_accounts)
    if n < 2:
        raise ValueError("population.n_accounts must be >= 2")
    sigma = float(params.get("population.notional_sigma"))
    long_share = float(params.get("population.long_share") if long_share is None else long_share)
    if sigma < 0 or not (0 < long_share < 1):
        raise ValueError("population.notional_sigma must be >= 0 and long_share in (0, 1)")

    # sides: a fixed count of longs, shuffled
    n_long = int(np.clip(round(n * long_share), 1, n - 1))
    side = np.full(n, -1, dtype=np.int8)
    side[rng.permutation(n)[:n_long]] = 1

    # exempt account
    exempt_on = bool(params.get("population.exempt_account"))
    ex_share = float(params.get("population.exempt_notional_share")) if exempt_on else 0.0
    ex_side = int(params.get("population.exempt_side"))
    if exempt_on and (ex_side not in (-1, 1) or not (0 <= ex_share < 1)):
        raise ValueError("population.exempt_side must be +1/-1 and exempt_notional_share in [0, 1)")

    raw = rng.lognormal(0.0, sigma, n)
    notional = np.empty(n)
    for s in (1, -1):
        m = side == s
        target = oi_usd * (1.0 - ex_share) if (exempt_on and s == ex_side) else oi_usd
        notional[m] = raw[m] / raw[m].sum() * target
    if exempt_on:
        side = np.append(side, np.int8(ex_side))
        notional = np.append(notional, oi_usd * ex_share)
    n_all = len(side)
    qty = notional / p0

    # entry: volume-weighted bar draw
    w = vol / vol.sum() if vol.sum() > 0 else np.full(len(close), 1.0 / len(close))
    entry = close[rng.choice(len(close), size=n_all, p=w)]

    # leverage caps
    if v == "ftx":
        # the venue cap, and 1/IMF of the size term (a large position cannot be opened at 20x)
        size_imf = ftx.imf_factor_for(symbol, params) * np.sqrt(qty)
        with np.errstate(divide="ignore"):
            cap = np.minimum(ftx.max_leverage(d, params), np.where(size_imf > 0, 1.0 / size_imf, np.inf))
        cap = np.maximum(cap, 1.0)
    else:
        cap = np.asarray(binance.max_leverage(symbol, d, qty * entry, params), float)
        cap = np.broadcast_to(cap, (n_all,)).copy()
    lev = _draw_leverage(n_all, cap, params, rng)
    if exempt_on:
        lev[-1] = min(float(params.get("population.exempt_leverage")), cap[-1])
    margin = qty * entry / lev
    exempt = np.zeros(n_all, dtype=bool)
    exempt[-1] = exempt_on

    meta: dict[str, Any] = {"oi_usd": float(oi_usd), "n_accounts": n_all, "seeded_start_price": p0}
    collateral: dict[str, np.ndarray] = {}
    cprices: dict[str, float] = {}
    isolated = np.zeros(n_all, dtype=bool)
    coin = ftx.coin_of(symbol)

    if v == "ftx":
        acct_lev = np.clip(np.maximum(float(params.get("population.ftx_account_leverage")), lev), 1.0, cap)
        shares = {k.rsplit(".", 1)[1]: float(params.get(k)) for k in params.keys()
                  if k.startswith("population.ftx_collateral_share.")}
        if any(s_ < 0 for s_ in shares.values()) or sum(shares.values()) <= 0:
            raise ValueError("population.ftx_collateral_share.* must be >= 0 and not all 0")
        total = sum(shares.values())
        shares = {k: s_ / total for k, s_ in shares.items()}
        prices = {k.upper(): float(x) for k, x in (collateral_prices or {}).items()}
        prices.setdefault(coin, p0)
        folded = []
        usd_share = shares.pop("USD", 0.0)
        numerator = float(params.get("ftx.collateral_haircut_numerator"))
        for c, sh in shares.items():
            if sh == 0:
                continue
            if c not in prices or not np.isfinite(prices[c]) or prices[c] <= 0:
                folded.append(c)
                usd_share += sh
                continue
            wt, _, f = ftx.collateral_weights(c, params)
            collateral[c] = _balance_for_value(margin * sh, prices[c], wt, f, numerator)
            cprices[c] = prices[c]
        if folded:
            log.warning("FTX collateral %s has no price: its share is held as USD", ", ".join(folded))
            meta["collateral_folded_to_usd"] = folded
        wallet = margin * usd_share
        # survivors: MF at the start must be >= MMF
        def tav_at(wal):
            cv = sum((np.asarray(ftx.collateral_value(b, cprices[c], *ftx.collateral_weights(c, params)[::2],
                                                      numerator=numerator), float)
                      for c, b in collateral.items()), np.zeros(n_all))
            return wal + cv + side * qty * (p0 - entry)
        imf, mmf, _ = ftx.margin_thresholds(acct_lev, ftx.imf_factor_for(symbol, params), qty, params=params)
        tav = tav_at(wallet)
        bad = (tav < np.asarray(mmf) * qty * p0) & ~exempt
        target = np.maximum(qty * p0 / lev, np.asarray(imf) * qty * p0)
        wallet = np.where(bad, wallet + (target - tav), wallet)
        meta["n_topped_up"] = int(bad.sum())
        account_leverage = acct_lev
    else:
        iso_share = float(params.get("population.binance_isolated_share"))
        extra = float(params.get("population.binance_cross_extra_margin"))
        isolated = rng.random(n_all) < iso_share
        wallet = np.where(isolated, margin, margin * (1.0 + extra))
        br = binance.brackets_for(symbol, d, params)
        mm = np.asarray(binance.maintenance_margin(qty * p0, br), float)
        mb = wallet + side * qty * (p0 - entry)
        bad = (mm >= mb) & ~exempt
        target = np.maximum(qty * p0 / lev, 2.0 * mm)
        wallet = np.where(bad, wallet + (target - mb), wallet)
        meta["n_topped_up"] = int(bad.sum())
        account_leverage = lev.copy()

    return Population(side=side, qty_coin=qty, entry_price=entry, leverage=lev, wallet_usd=wallet,
                      collateral=collateral, isolated=isolated, exempt=exempt,
                      account_leverage=account_leverage, venue=v, symbol=symbol, date=d,
                      start_price=p0, collateral_prices=cprices, meta=meta)


# ---------------------------------------------------------------------------------------
# v2: one cohort's per-account terms, keyed draws (MODEL.md 2)
# ---------------------------------------------------------------------------------------
# draw kinds: each kind of draw has its own key, the counter is the account's id
KIND_LEV_LOW, KIND_LEV_TAIL, KIND_LEV_BODY, KIND_ISOLATED, KIND_SIZE, KIND_CLOSE, KIND_ENTRY, KIND_LEGACY = range(1, 9)


def kind_key(key: int, kind: int) -> int:
    """The key of one kind of draw under a series key."""
    from backtest import rng as R
    return int(R.make_key(np.uint64(int(key) & 0xFFFFFFFFFFFFFFFF), np.uint64(kind), np.uint64(0), np.uint64(0)))


def keyed_uniforms(key: int, kind: int, ids: np.ndarray) -> np.ndarray:
    """U[0,1) per account id for one kind of draw: the same id always gets the same number."""
    from backtest import rng as R
    return R.uniforms(np.uint64(kind_key(key, kind)), np.asarray(ids, dtype=np.int64))


def stratified_uniforms(key: int, kind: int, ids: np.ndarray) -> np.ndarray:
    """U[0,1) per account, stratified over the group `ids` (one cohort side): the i-th of n
    accounts in a keyed random order falls in [i/n, (i+1)/n), so a cohort's draws fill the
    distribution evenly (less sampling noise at small N) and stay keyed by account id."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    if n == 0:
        return np.zeros(0)
    rank = np.empty(n, np.int64)
    rank[np.argsort(keyed_uniforms(key, kind + 100, ids), kind="stable")] = np.arange(n)
    return (rank + keyed_uniforms(key, kind, ids)) / n


def keyed_normals(key: int, kind: int, ids: np.ndarray) -> np.ndarray:
    from backtest import rng as R
    return R.normals(np.uint64(kind_key(key, kind)), np.asarray(ids, dtype=np.int64))


def leverage_from_uniforms(u_low, u_tail, u_body, cap, params: Params) -> np.ndarray:
    """The v1 leverage mixture from given uniforms: `leverage_low_share` uniform on
    [low_min, low_max], the rest log-uniform from low_max to the cap; times leverage_scale,
    clipped to [1, cap]."""
    low_share = float(params.get("population.leverage_low_share"))
    lo, hi = float(params.get("population.leverage_low_min")), float(params.get("population.leverage_low_max"))
    scale = float(params.get("population.leverage_scale"))
    if not (0 <= low_share <= 1) or lo < 1 or hi < lo or scale <= 0:
        raise ValueError("population leverage parameters: need 0<=low_share<=1, 1<=low_min<=low_max, scale>0")
    cap = np.broadcast_to(np.asarray(cap, float), np.shape(u_low))
    tail_hi = np.maximum(cap, hi)
    tail = np.exp(np.log(hi) + u_tail * (np.log(tail_hi) - np.log(hi)))
    body = lo + u_body * (hi - lo)
    lev = np.where(u_low < low_share, body, tail) * scale
    return np.clip(lev, 1.0, cap)


def tail_uniforms(u: np.ndarray, low_share: float, tail_sim_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Importance sampling of the leverage mixture's tail: map uniforms so that a share
    `tail_sim_share` (>= the natural 1 - low_share) of the simulated accounts falls in the
    tail. `u`: one cohort side's stratified uniforms. Returns (u', mass): u' feeds
    leverage_from_uniforms (body when u' < low_share, each part still uniform inside); mass
    = the share of the cohort side's notional one simulated account stands for relative to
    an equal split: low_share x n / n_body in the body, (1 - low_share) x n / n_tail in the
    tail (about low_share / (1 - q) and (1 - low_share) / q), so the masses sum to n and the
    two parts hold their natural shares exactly. q = natural share gives u' = u and mass 1
    (exactly the draw without oversampling)."""
    u = np.asarray(u, float)
    a = float(low_share)
    q = max(float(tail_sim_share), 1.0 - a)
    if q >= 1.0 or a <= 0.0 or q <= 1.0 - a:
        return u, np.ones(len(u))
    body = u < 1.0 - q
    up = np.where(body, u / (1.0 - q) * a, a + (u - (1.0 - q)) / q * (1.0 - a))
    n, n_body = len(u), int(body.sum())
    if 0 < n_body < n:      # the group's share of the cohort exactly: masses sum to n
        mass = np.where(body, a * n / n_body, (1.0 - a) * n / (n - n_body))
    else:                   # one group only (a cohort side of very few accounts): it holds all
        mass = np.ones(n)
    return np.minimum(up, np.nextafter(1.0, 0.0)), mass


def ftx_collateral_shares(params: Params) -> dict[str, float]:
    shares = {k.rsplit(".", 1)[1]: float(params.get(k)) for k in params.keys()
              if k.startswith("population.ftx_collateral_share.")}
    if any(s_ < 0 for s_ in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError("population.ftx_collateral_share.* must be >= 0 and not all 0")
    total = sum(shares.values())
    return {k: s_ / total for k, s_ in shares.items()}


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
    held as USD). u_low: the leverage mixture's body/tail uniforms when the caller chose them
    (the book's tail oversampling: `tail_uniforms`); default the stratified keyed draw.
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
