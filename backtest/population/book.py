"""The v2 cohort book: a population driven by the open-interest path (MODEL.md 2). Pure.

Per (venue, market), on a grid of `population.cohort_hours` steps T_k (epoch-aligned) from
the book start to the window end:

1. **Removals.** An account leaves at min(close_s, its expected liquidation): close_s is its
   voluntary close, drawn at opening from the holding-time hazard (exponential, mean
   `population.holding_days`; accounts of the leverage mixture's tail
   `population.holding_tail_ratio` times that: short-lived high-leverage positions, so that
   new triggers sit near the price every day); the expected liquidation is the first time the bars cross its
   trigger (Binance: the liquidation price; FTX: the price at which MF reaches MMF) on the
   v1 linear intra-bar path. The builder uses that time for its bookkeeping only: close_s is
   never set to it (the replay liquidates the account itself).
2. **Target.** OI_k = the lake's OI known at T_k (held: the latest sample whose as-of time,
   the end of the period it closes, is <= T_k; never a later one; no intraday interpolation),
   in coins, times the FTX ratio where the path is Binance's.
3. **Pro-rata closes.** Where a side's surviving OI exceeds OI_k, randomly chosen surviving
   accounts of that side (keyed draws per step and account: each account equally likely, so
   every position loses the same share in expectation) close at T_k until the excess is gone.
4. **Opens.** opens = OI_k - surviving OI per side (>= 0; the spec's max(0, OI_k -
   OI_{k-1} e^{-dt/tau}) with the realised survivors in place of their expectation, so the
   model's OI equals the lake's at every step). The cohort's accounts enter at prices drawn
   from the step's bars, volume-weighted (mean: the step's VWAP); the cohort is known only
   at T_k, so the accounts exist from open_s = T_k on (no look-ahead). An account whose trigger
   the path crossed between its entry bar and T_k (it would not be in the OI) enters at the
   price at T_k instead (meta n_entry_reset). The first cohort holds the whole OI, its entries
   drawn over `population.entry_lookback_days` weighted by volume x e^{-age/tau}.
   The side's opens are split over its simulated accounts equally, except that a share
   `population.tail_sim_share` of them is drawn from the leverage tail (importance
   sampling: accounts.tail_uniforms; a tail account then holds (1 - low_share) / share of
   an equal part and stands for as many fewer real accounts); the real accounts'
   sizes are lognormal(`notional_sigma`) (draws stratified within the cohort side:
   accounts.stratified_uniforms), so a simulated account stands for qty / real size of them; the number
   of accounts per side: see `build_book`; leverage, margin, isolated/cross and FTX
   collateral from accounts.account_terms (accounts.TermsSpec, worked out once per book).
5. **Weights.** A cohort side stands for opens / OI_k x real_accounts x side share real
   accounts (`population.real_accounts_per_market.<COIN>`, long side share
   `population.long_account_share` or the lake's daily long/short account ratio), spread
   over its simulated accounts in inverse proportion to their real account size (weight).
   Size-dependent margin terms are evaluated at the real size qty / weight.

The window's book keeps the accounts alive at its start (open_s <= start) and those opened in
it (open_s > start); the rest of the warm-up is dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit
from scipy.special import ndtri

from backtest import rng as R
from backtest.kernel_cache import drop_stale
from backtest.params import Params
from backtest.paths import linear_legs
from backtest.population.accounts import NEVER, Population, TermsSpec, tail_uniforms
from backtest.venues import ftx as ftx_venue

drop_stale(__file__, ["rng.py", "paths.py", "population/accounts.py"])

BLOCK = 256
KIND_COUNT = 11     # stochastic rounding of a cohort's account count (counter: step * 2 + side)
KIND_PRORATA = 12   # pro-rata close priority (key per step, counter: account id)


@dataclass
class BookBars:
    """The bars the book walks (warm-up then window), sorted, non-overlapping."""

    ts_s: np.ndarray      # int64 bar open
    dur_s: np.ndarray     # int64 bar length
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    vol: np.ndarray       # quote volume (>= 0)

    def __post_init__(self):
        # writable C arrays of one dtype (pandas gives read-only views): one compiled
        # specialisation of the kernels below whatever the source
        for name in ("ts_s", "dur_s"):
            setattr(self, name, np.require(getattr(self, name), np.int64, ["C", "W"]))
        for name in ("open", "high", "low", "close", "vol"):
            setattr(self, name, np.require(getattr(self, name), np.float64, ["C", "W"]))
        n = len(self.ts_s)
        nblk = (n + BLOCK - 1) // BLOCK
        pad = nblk * BLOCK - n
        self.blo = np.concatenate([self.low, np.full(pad, np.inf)]).reshape(nblk, BLOCK).min(axis=1)
        self.bhi = np.concatenate([self.high, np.full(pad, -np.inf)]).reshape(nblk, BLOCK).max(axis=1)
        self.end_s = self.ts_s + self.dur_s

    @classmethod
    def from_frames(cls, frames: list[tuple[pd.DataFrame, int]]) -> "BookBars":
        """(bars, bar seconds) frames with ts, open, high, low, close, volume_quote; later
        frames win where they overlap an earlier one."""
        parts = []
        for df, sec in frames:
            if df is None or len(df) == 0:
                continue
            ts = pd.to_datetime(df["ts"], utc=True)
            ts_s = ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy().astype(np.int64)
            parts.append(pd.DataFrame({"ts_s": ts_s, "dur_s": np.full(len(df), int(sec), np.int64),
                                       "open": df["open"].to_numpy(float), "high": df["high"].to_numpy(float),
                                       "low": df["low"].to_numpy(float), "close": df["close"].to_numpy(float),
                                       "vol": np.nan_to_num(df["volume_quote"].to_numpy(float), nan=0.0)}))
        if not parts:
            raise ValueError("the cohort book needs bars (warm-up and window)")
        # drop earlier-frame bars that overlap a later frame's span
        keep = [parts[-1]]
        lo = parts[-1]["ts_s"].min()
        for p in reversed(parts[:-1]):
            p = p[(p["ts_s"] + p["dur_s"]) <= lo]
            if len(p):
                keep.append(p)
                lo = min(lo, p["ts_s"].min())
        b = pd.concat(keep[::-1]).sort_values("ts_s").drop_duplicates("ts_s").reset_index(drop=True)
        return cls(b["ts_s"].to_numpy(np.int64), b["dur_s"].to_numpy(np.int64), b["open"].to_numpy(float),
                   b["high"].to_numpy(float), b["low"].to_numpy(float), b["close"].to_numpy(float),
                   np.maximum(b["vol"].to_numpy(float), 0.0))


# --------------------------------------------------------------------------- kernels
@njit(cache=True)
def _cross_time(side, trig, o, h, lw, c, ts, dur):
    """Seconds into a bar (as absolute time) when the v1 linear path O -> nearer extreme ->
    other extreme -> C (constant speed in price) first reaches `trig` (long: <=, short: >=)."""
    e1, e2, d1, d2, d3 = linear_legs(o, h, lw, c)
    tot = d1 + d2 + d3
    if tot <= 0.0:
        return ts
    seg_a = (o, e1, e2)
    seg_b = (e1, e2, c)
    done = 0.0
    for s in range(3):
        a = seg_a[s]
        b = seg_b[s]
        L = abs(b - a)
        if side > 0:
            if a <= trig:
                return ts + int(dur * done / tot)
            if b <= trig:
                return ts + int(dur * (done + (a - trig)) / tot)
        else:
            if a >= trig:
                return ts + int(dur * done / tot)
            if b >= trig:
                return ts + int(dur * (done + (trig - a)) / tot)
        done += L
    return ts + dur - 1


@njit(cache=True)
def first_cross(side, trig, from_s, until_s, ts, dur, o, h, lw, c, blo, bhi):
    """Per account: the first time >= from_s and < until_s at which the bars cross its trigger
    (long: low <= trigger; short: high >= trigger), on the linear path inside the bar; NEVER
    if none. Bars ordered by ts; block extremes skip quiet stretches."""
    n = side.shape[0]
    nb = ts.shape[0]
    out = np.empty(n, np.int64)
    never = np.int64(4611686018427387903)
    for i in range(n):
        out[i] = never
        b = np.searchsorted(ts, from_s[i])
        while b < nb and ts[b] < until_s[i]:
            if b % 256 == 0:
                blk = b // 256
                if (side[i] > 0 and blo[blk] > trig[i]) or (side[i] < 0 and bhi[blk] < trig[i]):
                    b += 256
                    continue
            if (side[i] > 0 and lw[b] <= trig[i]) or (side[i] < 0 and h[b] >= trig[i]):
                t = _cross_time(side[i], trig[i], o[b], h[b], lw[b], c[b], ts[b], dur[b])
                if t < until_s[i]:
                    out[i] = t
                break
            b += 1
    return out


@njit(cache=True)
def crossed_since(side, trig, first_bar, last_bar, lw, h):
    """True where bars first_bar .. last_bar-1 crossed the trigger."""
    n = side.shape[0]
    out = np.zeros(n, np.bool_)
    for i in range(n):
        for b in range(first_bar[i], last_bar):
            if (side[i] > 0 and lw[b] <= trig[i]) or (side[i] < 0 and h[b] >= trig[i]):
                out[i] = True
                break
    return out


# --------------------------------------------------------------------------- the book
def held_values(asof_s: np.ndarray, values: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    """The latest value whose as-of time is <= at (nan before the first): no look-ahead."""
    idx = np.searchsorted(asof_s, at_s, side="right") - 1
    out = np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan)
    return out


def cohort_step_s(cohort_hours: float) -> int:
    """The cohort interval in seconds, snapped so that the epoch-aligned grid lands on every UTC
    midnight (when a daily OI value becomes known): a whole number of steps per day that divides
    86,400 s (the nearest to 24 / cohort_hours), or whole days above 24 h. Off the grid, the book
    would hold yesterday's OI for up to one step past midnight (a 3.3 h grid missed the lake's OI
    by up to 21% at a day's end)."""
    h = float(cohort_hours)
    if not (h > 0 and math.isfinite(h)):
        return 0
    if h >= 24.0:
        return int(round(h / 24.0)) * 86400
    per_day = 24.0 / h
    ok = [n for n in range(1, 97) if 86400 % n == 0]
    n = min(ok, key=lambda m: (abs(m - per_day), m))
    return 86400 // n


def step_grid(start_s: int, end_s: int, step_s: int) -> np.ndarray:
    first = -(-int(start_s) // step_s) * step_s
    return np.arange(first, int(end_s), step_s, dtype=np.int64)


class _Store:
    """Growable account arrays."""

    FIELDS = {"side": np.int8, "qty": float, "entry": float, "lev": float, "acct_lev": float, "wallet": float,
              "isolated": bool, "trigger": float, "open_s": np.int64, "close_s": np.int64, "liq_s": np.int64,
              "end_s": np.int64, "end_k": np.int64, "weight": float, "count_weight": float,
              "cohort": np.int32}

    def __init__(self, cap: int = 1024):
        self.n = 0
        self.a = {k: np.zeros(cap, t) for k, t in self.FIELDS.items()}
        self.coll: dict[str, np.ndarray] = {}

    def add(self, cols: dict, coll: dict[str, np.ndarray]):
        m = len(cols["side"])
        need = self.n + m
        cap = len(self.a["side"])
        if need > cap:
            new = max(need, 2 * cap)
            for k in self.a:
                self.a[k] = np.concatenate([self.a[k], np.zeros(new - cap, self.a[k].dtype)])
            for c in self.coll:
                self.coll[c] = np.concatenate([self.coll[c], np.zeros(new - cap)])
        for k, v in cols.items():
            self.a[k][self.n:need] = v
        for c, v in coll.items():
            if c not in self.coll:
                self.coll[c] = np.zeros(len(self.a["side"]))
            self.coll[c][self.n:need] = v
        self.n = need

    def __getitem__(self, k):
        return self.a[k][:self.n]


def book_start_s(window_start_s: int, warmup_days: float, first_oi_s: int, first_bar_end_s: int) -> int:
    """When a book starts: `warmup_days` before the window, or later where the lake's OI path
    or bars start later (the whole year starts at the first OI: no look-ahead)."""
    return max(int(window_start_s - warmup_days * 86400), int(first_oi_s), int(first_bar_end_s))


def density_accounts(venue: str, n_accounts: int, book_days: float, params: Params) -> int:
    """Simulated accounts of a book spanning `book_days`. Binance's reported figure comes out of
    the disclosure throttle, which needs each liquidated simulated account to stand for fewer
    real orders than its bandwidth: a book longer than `population.accounts_reference_days`
    (the longest crash window's, warm-up included) gets n_accounts x book_days / reference
    accounts, so the whole year is as dense per day as a window. FTX reports nothing through
    the throttle and its liquidated notional does not move with the count: it keeps n_accounts."""
    ref = float(params.population.accounts_reference_days)
    if venue != "binance" or not (ref > 0) or book_days <= ref:
        return int(n_accounts)
    return int(math.ceil(n_accounts * book_days / ref))


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
    pp = params.population
    dt_s = cohort_step_s(pp.cohort_hours)
    tau_d = pp.holding_days
    tail_ratio = pp.holding_tail_ratio
    if not (0.0 < tail_ratio <= 1.0):
        raise ValueError("population.holding_tail_ratio must be in (0, 1]")
    warm_d = pp.warmup_days
    lookback_d = pp.entry_lookback_days
    sigma = pp.notional_sigma
    if dt_s <= 0 or tau_d <= 0 or warm_d < 0 or sigma < 0 or n_accounts < 2:
        raise ValueError("population: cohort_hours, holding_days > 0, warmup_days >= 0, n_accounts >= 2")
    tau_s = tau_d * 86400.0
    tau_tail_s = tau_s * tail_ratio
    # accounts of the leverage mixture's tail (above the body's top, low_max x scale) hold for
    # tail_ratio x holding_days on average: high-leverage positions are short-lived
    a_body = pp.leverage_low_share
    # importance sampling: this share of the simulated accounts is drawn from the tail (the
    # accounts that liquidate on ordinary days), each standing for proportionally less
    q_tail = max(pp.tail_sim_share, 1.0 - a_body)
    real = _real_accounts(params, coin)
    ls_default = pp.long_account_share
    oi_asof_s = np.asarray(oi_asof_s, np.int64)
    oi_coin = np.asarray(oi_coin, float)
    ok = np.isfinite(oi_coin) & (oi_coin > 0)
    oi_asof_s, oi_coin = oi_asof_s[ok], oi_coin[ok]
    if len(oi_asof_s) == 0:
        raise ValueError("no open interest for the book")
    order = np.argsort(oi_asof_s, kind="stable")
    oi_asof_s, oi_coin = oi_asof_s[order], oi_coin[order]
    book_from = book_start_s(window_start_s, warm_d, int(oi_asof_s[0]), int(bars.ts_s[0] + bars.dur_s[0]))
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
    # (a share a_body of the accounts opened is the body with mean holding tau, the rest the
    # tail with tau_tail: in a steady book the opens per step are OI / (a/(1-d) + (1-a)/(1-d_tail)))
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
    d0 = pd.Timestamp(int(window_start_s), unit="s", tz="UTC").date()
    spec = TermsSpec(venue, symbol, d0, params, collateral_prices)
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
            U = spec.draws(key, ids)     # rows: TermsSpec.STRAT_KINDS (size first), then entry, close
            # tail oversampling: U[1] (the body/tail uniform) remapped, each account's share of the notional
            U[1], mass = tail_uniforms(U[1], a_body, q_tail)
            qty = opens / n * mass
            size = np.exp(sigma * ndtri(np.clip(U[0], 1e-12, 1 - 1e-12)))
            inv = 1.0 / size
            wgt = opens / tgt * real * share * inv / inv.sum() * mass
            cwgt = mass * (wgt.sum() / mass.sum())     # E[wgt | qty]: the side's real accounts per coin x qty
            eb = b0 + np.minimum(np.searchsorted(cdf, U[6], side="right"), b1 - b0 - 1)
            entry = bars.close[eb].copy()
            sides = np.full(n, s, np.int8)
            terms = spec.terms(sides, qty, entry, U, wgt)
            bad = crossed_since(sides, terms["trigger"], (eb + 1).astype(np.int64), b1, bars.low, bars.high)
            bad |= (terms["trigger"] >= price[k]) if s > 0 else (terms["trigger"] <= price[k])
            if bad.any():
                n_reset += int(bad.sum())
                entry[bad] = price[k]
                terms = spec.terms(sides, qty, entry, U, wgt)
            folded.update(terms["folded"])
            u = U[7]
            tau_i = np.where(U[1] >= a_body, tau_tail_s, tau_s)
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
                    "weight": wgt, "count_weight": cwgt, "cohort": np.full(n, k, np.int32)},
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
                     cohort=st["cohort"][idx].copy(), count_weight=st["count_weight"][idx].copy())
    pop.meta["trigger"] = st["trigger"][idx].copy()
    if params.population.exempt_account:
        _add_exempt(pop, params, window_start_s)
    return pop


def _add_exempt(pop: Population, params: Params, start_s: int) -> None:
    """The exempt account (the Alameda scenario, MODEL.md 2): never liquidated, open through
    the window from its start at the start price, `exempt_notional_share` of the OI at the
    start on `exempt_side`, at `exempt_leverage` (margin in USD). Outside the OI bookkeeping."""
    pp = params.population
    share, side = pp.exempt_notional_share, pp.exempt_side
    if side not in (-1, 1) or not (0 <= share < 1):
        raise ValueError("population.exempt_side must be +1/-1 and exempt_notional_share in [0, 1)")
    lev = max(1.0, pp.exempt_leverage)
    q = share * pop.meta["oi_coin_start"]
    p0 = pop.start_price
    app = {"side": np.int8(side), "qty_coin": q, "entry_price": p0, "leverage": lev, "wallet_usd": q * p0 / lev,
           "isolated": False, "exempt": True, "account_leverage": lev, "open_s": np.int64(start_s),
           "close_s": NEVER, "weight": 1.0, "count_weight": 1.0, "cohort": np.int32(-1)}
    for k, v in app.items():
        arr = getattr(pop, k)
        setattr(pop, k, np.append(arr, np.asarray(v, dtype=arr.dtype)))
    for c in pop.collateral:
        pop.collateral[c] = np.append(pop.collateral[c], 0.0)
    pop.meta["expected_liq_s"] = np.append(pop.meta["expected_liq_s"], NEVER)
    pop.meta["trigger"] = np.append(pop.meta["trigger"], np.nan)
    pop.meta["n_accounts"] = len(pop.side)


def _real_accounts(params: Params, coin: str) -> float:
    table = params.population.real_accounts_per_market
    name = coin.upper() if coin.upper() in table else "default"
    v = table[name]
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{table.key}.{name} must be > 0")
    return v


def model_oi_coin(pop: Population, at_s, side: int | None = None) -> np.ndarray:
    """The book's open interest (coins) at times `at_s`: the qty of accounts with
    open_s <= t < min(close_s, expected liquidation), per side (or the mean of both)."""
    at = np.atleast_1d(np.asarray(at_s, np.int64))
    liq = pop.meta.get("expected_liq_s")
    end = np.minimum(pop.close_s, liq) if liq is not None else pop.close_s
    out = np.zeros(len(at))
    sides = (1, -1) if side is None else (side,)
    for s in sides:
        m = pop.side == s
        o, e, q = pop.open_s[m], end[m], pop.qty_coin[m]
        # sum q where o <= t < e: sorted cumulative sums
        oo = np.argsort(o)
        eo = np.argsort(e)
        co = np.concatenate([[0.0], np.cumsum(q[oo])])
        ce = np.concatenate([[0.0], np.cumsum(q[eo])])
        out += co[np.searchsorted(o[oo], at, side="right")] - ce[np.searchsorted(e[eo], at, side="right")]
    return out / len(sides)
