"""Accounts: the Population container and the per-account draws (MODEL.md section 2). Pure.

`account_terms` draws one cohort's leverage, margin, Binance isolated/cross and FTX collateral
with counter-based draws keyed by (key, account id) (backtest/rng.py), and its liquidation
trigger; the v2 cohort book (book.py) asks a `TermsSpec` (the parameters worked out once per
book, a cohort's draws in one compiled call, its venue arithmetic in one compiled loop) for
every cohort.

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
from numba import njit

from backtest import rng as R
from backtest.kernel_cache import drop_stale
from backtest.params import Params
from backtest.params import as_date as _date
from backtest.venues import binance, ftx

drop_stale(__file__, ["rng.py"])

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
    (size-dependent margin terms are evaluated at qty / weight); count_weight float64, the
    expected number of real accounts given the account's notional (its group's real accounts
    per unit of notional x its qty: the sampled real sizes averaged out), what the disclosure
    throttle counts (MODEL.md 4.5, backtest/disclosure.py); cohort int32 (-1: none).
    Defaults: open for the whole run, weight 1, count_weight = weight, no cohort.
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
    count_weight: np.ndarray | None = None

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
        if self.count_weight is None:
            self.count_weight = np.asarray(self.weight, dtype=float).copy()

    def __len__(self) -> int:
        return len(self.side)

    @property
    def n(self) -> int:
        return len(self.side)

    def notional_usd(self, price) -> np.ndarray:
        """|position| notional at `price`."""
        return self.qty_coin * np.asarray(price, dtype=float)

    def collateral_value_usd(self, prices: dict[str, float] | None = None, *, params: Params) -> np.ndarray:
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
    pp = params.population
    low_share, lo, hi, scale = pp.leverage_low_share, pp.leverage_low_min, pp.leverage_low_max, pp.leverage_scale
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
        days = params.population.entry_lookback_days
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
    pp = params.population
    n = int(pp.n_accounts if n_accounts is None else n_accounts)
    if n < 2:
        raise ValueError("population.n_accounts must be >= 2")
    sigma = pp.notional_sigma
    long_share = float(pp.long_share if long_share is None else long_share)
    if sigma < 0 or not (0 < long_share < 1):
        raise ValueError("population.notional_sigma must be >= 0 and long_share in (0, 1)")

    # sides: a fixed count of longs, shuffled
    n_long = int(np.clip(round(n * long_share), 1, n - 1))
    side = np.full(n, -1, dtype=np.int8)
    side[rng.permutation(n)[:n_long]] = 1

    # exempt account
    exempt_on = pp.exempt_account
    ex_share = pp.exempt_notional_share if exempt_on else 0.0
    ex_side = pp.exempt_side
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
        cap = np.asarray(binance.max_leverage(symbol, d, qty * entry, params=params), float)
        cap = np.broadcast_to(cap, (n_all,)).copy()
    lev = _draw_leverage(n_all, cap, params, rng)
    if exempt_on:
        lev[-1] = min(pp.exempt_leverage, cap[-1])
    margin = qty * entry / lev
    exempt = np.zeros(n_all, dtype=bool)
    exempt[-1] = exempt_on

    meta: dict[str, Any] = {"oi_usd": float(oi_usd), "n_accounts": n_all, "seeded_start_price": p0}
    collateral: dict[str, np.ndarray] = {}
    cprices: dict[str, float] = {}
    isolated = np.zeros(n_all, dtype=bool)
    coin = ftx.coin_of(symbol)

    if v == "ftx":
        acct_lev = np.clip(np.maximum(pp.ftx_account_leverage, lev), 1.0, cap)
        shares = ftx_collateral_shares(params)
        prices = {k.upper(): float(x) for k, x in (collateral_prices or {}).items()}
        prices.setdefault(coin, p0)
        folded = []
        usd_share = shares.pop("USD", 0.0)
        numerator = params.ftx.collateral_haircut_numerator
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
        iso_share = pp.binance_isolated_share
        extra = pp.binance_cross_extra_margin
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
    return int(R.make_key(np.uint64(int(key) & 0xFFFFFFFFFFFFFFFF), np.uint64(kind), np.uint64(0), np.uint64(0)))


def keyed_uniforms(key: int, kind: int, ids: np.ndarray) -> np.ndarray:
    """U[0,1) per account id for one kind of draw: the same id always gets the same number."""
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
    return R.normals(np.uint64(kind_key(key, kind)), np.asarray(ids, dtype=np.int64))


def leverage_from_uniforms(u_low, u_tail, u_body, cap, params: Params) -> np.ndarray:
    """The v1 leverage mixture from given uniforms: `leverage_low_share` uniform on
    [low_min, low_max], the rest log-uniform from low_max to the cap; times leverage_scale,
    clipped to [1, cap]."""
    pp = params.population
    low_share, lo, hi, scale = pp.leverage_low_share, pp.leverage_low_min, pp.leverage_low_max, pp.leverage_scale
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
    shares = dict(params.population.ftx_collateral_share)
    if any(s_ < 0 for s_ in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError("population.ftx_collateral_share.* must be >= 0 and not all 0")
    total = sum(shares.values())
    return {k: s_ / total for k, s_ in shares.items()}


class TermsSpec:
    """Everything `account_terms` reads from the parameters, worked out once per (venue, symbol,
    date, parameters, collateral prices) so that a cohort's terms are a few array operations
    (the cohort book asks for them ~260 times per series). `draws(key, ids)` gives a cohort's
    keyed draws (one compiled call), `terms(side, qty, entry, draws, weight)` its terms; the
    arithmetic is the same, operation for operation, as the venue functions it replaces
    (venues.binance.liquidation_price, venues.ftx.* ; tests/backtest/_population_reference.py
    keeps the per-call version they are checked against, bit for bit)."""

    STRAT_KINDS = (KIND_SIZE, KIND_LEV_LOW, KIND_LEV_TAIL, KIND_LEV_BODY, KIND_ISOLATED, KIND_LEGACY)
    PLAIN_KINDS = (KIND_ENTRY, KIND_CLOSE)

    def __init__(self, venue: str, symbol: str, date, params: Params,
                 collateral_prices: dict[str, float] | None = None):
        v = venue.lower()
        if v not in VENUES:
            raise ValueError(f"unknown venue {venue!r}: use one of {VENUES}")
        self.venue, self.symbol, self.date = v, symbol, _date(date)
        d = self.date
        pp = params.population
        low_share, lo, hi, scale = pp.leverage_low_share, pp.leverage_low_min, pp.leverage_low_max, pp.leverage_scale
        if not (0 <= low_share <= 1) or lo < 1 or hi < lo or scale <= 0:
            raise ValueError("population leverage parameters: need 0<=low_share<=1, 1<=low_min<=low_max, scale>0")
        self.low_share, self.lo, self.hi, self.scale = low_share, lo, hi, scale
        self._keys: dict[int, np.ndarray] = {}
        if v == "ftx":
            self.f_imf = ftx.imf_factor_for(symbol, params)
            if not (self.f_imf >= 0):
                raise ValueError("imf_factor must be >= 0 (got a negative or NaN value)")
            self.max_lev = ftx.max_leverage(d, params)
            self.coin = ftx.coin_of(symbol)
            self.acct_lev_min = params.population.ftx_account_leverage
            shares = ftx_collateral_shares(params)
            prices = {k.upper(): float(x) for k, x in (collateral_prices or {}).items()}
            usd_share = shares.pop("USD", 0.0)
            self.numerator = params.ftx.collateral_haircut_numerator
            self.coll = []          # (coin, share, price or None for the entry, weight, imf factor)
            self.folded = []
            for c, sh in shares.items():
                if sh == 0:
                    continue
                px = None if c == self.coin else prices.get(c)
                if c != self.coin and (px is None or not np.isfinite(px) or px <= 0):
                    self.folded.append(c)
                    usd_share += sh
                    continue
                wt, _, f = ftx.collateral_weights(c, params)
                if not (f >= 0):
                    raise ValueError("imf_factor must be >= 0 (got a negative or NaN value)")
                self.coll.append((c, sh, px, wt, f))
            self.usd_share = usd_share
            # the same as arrays for the compiled part (price nan: the position's own coin, at entry)
            own = next((j for j, x in enumerate(self.coll) if x[2] is None), -1)
            self.coll_arrays = (np.array([x[1] for x in self.coll], float),
                                np.array([np.nan if x[2] is None else x[2] for x in self.coll], float),
                                np.array([x[3] for x in self.coll], float), np.array([x[4] for x in self.coll], float),
                                own)
            self.mmf_floor = params.ftx.mmf_floor
            self.mmf_ratio = params.ftx.mmf_imf_ratio
        else:
            self.br = binance.brackets_for(symbol, d, params)
            self.venue_cap = params.binance.max_leverage.at(d)
            legacy_cap = params.binance.max_leverage.at(dt.date(2021, 7, 26))
            self.legacy_cap = max(self.venue_cap, legacy_cap)
            self.legacy_share = params.population.binance_legacy_share
            self.iso_share = params.population.binance_isolated_share
            self.extra = params.population.binance_cross_extra_margin

    def _kind_keys(self, key: int) -> np.ndarray:
        k = self._keys.get(key)
        if k is None:
            kinds = [*self.STRAT_KINDS, *(x + 100 for x in self.STRAT_KINDS), *self.PLAIN_KINDS]
            k = np.array([kind_key(key, x) for x in kinds], np.uint64)
            self._keys[key] = k
        return k

    def draws(self, key: int, ids: np.ndarray) -> np.ndarray:
        """A cohort side's draws, rows in the order STRAT_KINDS (stratified over `ids`, as
        stratified_uniforms) then PLAIN_KINDS (keyed_uniforms)."""
        return _cohort_draws(self._kind_keys(key), len(self.STRAT_KINDS), np.asarray(ids, np.int64))

    def terms(self, side: np.ndarray, qty: np.ndarray, entry: np.ndarray, u: np.ndarray,
              weight: np.ndarray | None = None) -> dict:
        """account_terms of one cohort side from its draws `u` (see `draws`)."""
        n = len(side)
        side = np.asarray(side, np.int8)
        if not np.all((side == 1) | (side == -1)):
            raise ValueError("side must be +1 (long) or -1 (short)")
        w_real = np.ones(n) if weight is None else np.maximum(np.asarray(weight, float), 1e-12)
        qty = np.asarray(qty, float) / w_real
        entry = np.asarray(entry, float)
        if np.any(np.isnan(qty)) or np.any(qty < 0):
            raise ValueError("qty must be >= 0 (got a negative or NaN value)")
        if np.any(~np.isfinite(entry)) or np.any(entry <= 0):
            raise ValueError("entry_price must be finite and > 0 (got zero, negative or non-finite)")
        notional = qty * entry
        if self.venue == "ftx":
            size_imf = self.f_imf * np.sqrt(qty)
            with np.errstate(divide="ignore"):
                cap = np.minimum(self.max_lev, np.where(size_imf > 0, 1.0 / size_imf, np.inf))
            cap = np.maximum(cap, 1.0)
        else:
            br = self.br
            legacy = u[5] < self.legacy_share
            venue_caps = np.where(legacy, self.legacy_cap, self.venue_cap)
            tier = np.minimum(np.searchsorted(br.caps, notional, side="left"), len(br.caps) - 1)
            cap = np.minimum(venue_caps, br.max_leverage[tier]).astype(float)
        # leverage_from_uniforms
        hi = self.hi
        tail_hi = np.maximum(cap, hi)
        tail = np.exp(np.log(hi) + u[2] * (np.log(tail_hi) - np.log(hi)))
        body = self.lo + u[3] * (hi - self.lo)
        lev = np.where(u[1] < self.low_share, body, tail) * self.scale
        lev = np.clip(lev, 1.0, cap)
        out: dict[str, Any] = {"leverage": lev, "collateral": {}, "isolated": np.zeros(n, bool),
                               "folded": []}
        if self.venue == "ftx":
            acct_lev = np.clip(np.maximum(self.acct_lev_min, lev), 1.0, cap)
            if np.any(~np.isfinite(acct_lev)) or np.any(acct_lev <= 0):
                raise ValueError("leverage must be a positive finite number")
            out["folded"] = list(self.folded)
            sh, px, wt, f, own = self.coll_arrays
            bal, wallet_usd, trig = _ftx_terms(side, qty, entry, notional, lev, acct_lev, w_real, sh, px, wt, f, own,
                                               self.numerator, self.usd_share, self.f_imf, self.mmf_floor,
                                               self.mmf_ratio)
            for j, (c, *_rest) in enumerate(self.coll):
                out["collateral"][c] = bal[j]
            out.update(account_leverage=acct_lev, wallet_usd=wallet_usd, trigger=trig)
        else:
            br = self.br
            isolated = u[4] < self.iso_share
            wallet_usd, trig = _binance_terms(side, qty, entry, notional, lev, isolated, w_real, 1.0 + self.extra,
                                              br.cum, br.mmr, br.floors, br.caps)
            out.update(account_leverage=lev.copy(), wallet_usd=wallet_usd, isolated=isolated, trigger=trig)
        return out


# The venue arithmetic of one cohort after its leverage draw, compiled: the operations of
# venues.binance.liquidation_price and venues.ftx (collateral_value, effective_weight,
# margin_thresholds, price_at_margin_fraction) and _balance_for_value in the same order, so
# the numbers are the numpy ones bit for bit (only + - * / and sqrt, which IEEE rounds
# exactly; numba contracts nothing into FMAs without fastmath). np.maximum/np.minimum's NaN
# rule is kept by _mx/_mn.
@njit(cache=True, inline="always")
def _mx(a, b):
    return a if (a >= b or a != a) else b


@njit(cache=True, inline="always")
def _mn(a, b):
    return a if (a <= b or a != a) else b


@njit(cache=True, error_model="numpy")
def _binance_terms(side, q, ep, notional, lev, isolated, w_real, cross_mult, cum, mmr, floors, caps):
    n = side.shape[0]
    wallet_usd = np.empty(n)
    trig = np.empty(n)
    lo_tol = 1 - 1e-12
    hi_tol = 1 + 1e-12
    for i in range(n):
        margin = notional[i] / lev[i]
        wb = margin if isolated[i] else margin * cross_mult
        if not np.isfinite(wb):
            raise ValueError("wallet_balance must be finite")
        wallet_usd[i] = wb * w_real[i]
        s = float(side[i])
        sq = s * q[i]
        sqe = sq * ep[i]
        lp = 0.0
        for t in range(cum.shape[0]):
            x = (wb + cum[t] - sqe) / (q[i] * mmr[t] - sq)
            nt = q[i] * x
            if x > 0 and nt >= floors[t] * lo_tol and nt <= caps[t] * hi_tol:
                lp = x
                break
        if not q[i] > 0:
            lp = np.nan
        if np.isfinite(lp) and lp > 0:
            trig[i] = lp
        else:
            trig[i] = 0.0 if side[i] > 0 else np.inf
    return wallet_usd, trig


@njit(cache=True, error_model="numpy")
def _ftx_terms(side, qty, entry, notional, lev, acct_lev, w_real, sh, px, wt, f, own, num_, usd_share, f_imf,
               mmf_floor, mmf_ratio):
    n = side.shape[0]
    nc = sh.shape[0]
    bal_out = np.empty((nc, n))
    wallet_usd = np.empty(n)
    trig = np.empty(n)
    four_num = 4.0 * num_
    two_num = 2.0 * num_
    for i in range(n):
        margin = notional[i] / lev[i]
        other = 0.0
        same_bal = 0.0
        same_w = 0.0
        for j in range(nc):
            p = entry[i] if j == own else px[j]
            # _balance_for_value(margin * share, p, weight, imf factor, numerator)
            v = _mx(margin * sh[j], 0.0)
            b_plain = v / (p * wt[j])
            plain_ok = wt[j] <= num_ / (1.0 + f[j] * np.sqrt(b_plain))
            vf = v * f[j]
            x = (vf + np.sqrt(vf * vf + four_num * p * v)) / (two_num * p)
            b = b_plain if plain_ok else x * x
            bal_out[j, i] = b * w_real[i]
            eff = _mn(wt[j], num_ / (1.0 + f[j] * np.sqrt(_mx(b, 0.0))))
            if not b >= 0:
                eff = 1.0
            if j == own:
                same_bal = b
                same_w = eff
            else:
                other += b * p * eff          # numpy: zeros(n) += ..., coin by coin
        wallet = margin * usd_share
        imf = _mx(1.0 / acct_lev[i], f_imf * np.sqrt(abs(qty[i])))
        mmf = _mx(mmf_floor, mmf_ratio * imf)
        usd_other = wallet + other
        s = float(side[i])
        m = (s * qty[i] * entry[i] - usd_other) / (same_bal * same_w + s * qty[i] - mmf * qty[i])
        ok = np.isfinite(m) and m > 0 and qty[i] > 0
        t = m if ok else np.nan
        trig[i] = t if np.isfinite(t) else (0.0 if side[i] > 0 else np.inf)
        wallet_usd[i] = wallet * w_real[i]
    return bal_out, wallet_usd, trig


@njit(cache=True)
def _cohort_draws(keys, n_strat, ids):
    """Rows 0..n_strat-1: stratified_uniforms of kinds with keys[j] (rank keys keys[n_strat+j]);
    the rest: keyed_uniforms with keys[2*n_strat + j]."""
    n = ids.shape[0]
    n_plain = keys.shape[0] - 2 * n_strat
    out = np.empty((n_strat + n_plain, n))
    r = np.empty(n)
    rank = np.empty(n, np.int64)
    for j in range(n_strat):
        for i in range(n):
            r[i] = R.uniform(keys[n_strat + j], ids[i])
        order = np.argsort(r, kind="mergesort")
        for i in range(n):
            rank[order[i]] = i
        for i in range(n):
            out[j, i] = (rank[i] + R.uniform(keys[j], ids[i])) / n
    for j in range(n_plain):
        for i in range(n):
            out[n_strat + j, i] = R.uniform(keys[2 * n_strat + j], ids[i])
    return out


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
    held as USD). `cache` (a dict kept across calls with the same parameters) keeps the
    TermsSpec. u_low: the leverage mixture's body/tail uniforms when the caller chose them
    (the book's tail oversampling: `tail_uniforms`); default the stratified keyed draw.
    """
    cache = {} if cache is None else cache
    ck = ("terms_spec", venue.lower(), symbol, _date(date),
          tuple(sorted((k.upper(), float(x)) for k, x in (collateral_prices or {}).items())))
    spec = cache.get(ck)
    if spec is None:
        spec = cache[ck] = TermsSpec(venue, symbol, date, params, collateral_prices)
    u = spec.draws(key, ids)
    if u_low is not None:
        u[1] = u_low
    return spec.terms(side, qty, entry, u, weight)
