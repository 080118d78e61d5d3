"""FTX accounts as one float matrix: margin thresholds, TAV/MF, trigger prices (MODEL.md 3.1-3.3).

`FtxArrays` is a namedtuple of numpy arrays handed to the compiled kernels. The per-account
fields the kernels read and write live in one C-ordered float64 matrix `F` (NF x n: a
contiguous row per field, F[F_QTY, i] ...): a kernel holds one array instead of fourteen
(numba reference-counts every array of a tuple it passes to an inlined helper, which cost ~30%
of the kernel's time with one array per field), while the passes over every account (trigger
book rebuilds, collateral revaluations) still stream one field at a time. The account's
population index `aid`, its draw hash `hid` and its open/close times stay integer arrays.
Side, the flags and the status are held as floats (+-1.0, 0.0/1.0, PENDING/OPEN/CLOSED): every
value is exact, so the arithmetic is the same as on the integer fields. Scalars shared by all
accounts of the market (fund, BLP capacity counters, overflow pools, accounting parts) live in
the float vector `Z` and the int vector `I`, constants in `C`; every index is a module constant
here."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from backtest import execution
from backtest import rng as crng
from backtest.params import Params
from backtest.venues import ftx

NJ = dict(cache=True, error_model="numpy", nogil=True)

# ---- constants C[...]
(C_IMF_F, C_MMF_FLOOR, C_MMF_RATIO, C_ACMF_RATIO, C_ACMF_OFF, C_BUDGET, C_ETA, C_FEE, C_MAXSLIP, C_TOPN,
 C_CAPMIN, C_CAPHOUR, C_PROB, C_S1FRAC, C_S1MIN, C_JLO, C_JHI, C_OLO, C_OHI, C_S2MIN, C_NEGSHARE, C_ZPW,
 C_SIGMA, C_BM, C_TICK, C_DET, C_FUND0, C_NC, C_MO, C_BUCKET, C_FB, C_BASE, C_PERM, C_DECAY) = range(34)
NC_CONST = 34
# ---- float scalars Z[...]
(Z_FUND, Z_FUND_MIN, Z_USED_MIN, Z_USED_HOUR, Z_CUR_MIN, Z_CUR_HOUR, Z_COUNTERPARTY, Z_TAKEOVER,
 Z_HAIRCUT, Z_SALECOST, Z_COLL_OTHER, Z_INCOME, Z_PAYOUT, Z_BELOW_SINCE, Z_BELOW_S, Z_QL, Z_QS,
 Z_POOL_OUT_L, Z_POOL_OUT_S) = range(19)
NZ = 19
# ---- int scalars I[...]
(I_NCHG, I_REVALS, I_POOL_NL, I_POOL_NS, I_PO, I_PC, I_TICKS, I_ACTSUM, I_INCR, I_FBN, I_SURE, I_FIRED,
 I_S1SUM, I_EVN) = range(14)
NI = 16     # I_TICKS .. I_S1SUM (and I_INCR: bars visited) are counters for profiling only; I_EVN: rows
            # used in the event sink's last chunk (events.py)
# ---- keys K[...] (uint64): seed, market id
K_SEED, K_MARKET = 0, 1
# ---- account status
PENDING, OPEN, CLOSED = 0, 1, 2
# ---- mechanisms (recorder.MECHS order)
M_STEP1, M_STEP2, M_OVERFLOW = 0, 1, 2

# ---- per-account columns of F[..., i]: the first eight are what tav_mf / price_at_mf read
(F_QTY, F_USD, F_CBAL, F_CW, F_SIDE, F_ENTRY, F_MMF, F_ACMF, F_LEV, F_WT, F_ALIVE, F_EXEMPT, F_STATUS,
 F_LIQ) = range(14)
NF = 14

FtxArrays = namedtuple("FtxArrays", [
    "F", "open_s", "close_s",
    "obal", "ow", "oval", "oprice", "ovol", "ohas", "osig", "obm",
    "Z", "I", "chg", "pool", "bar_fund", "bar_coll", "bar_ql", "bar_qs", "aid",
    "mo_start", "mo_cum", "fb", "hid"])
# metaorder rows of mo_start / mo_cum (execution.FLOW_*): 0 step-1 orders, 1 (unused here: the
# BLP's hedges are priced after the run, blp.py), 2 same-coin collateral sales, 3 + k the other
# collateral coin k's sales. fb: the venue's feedback state (execution.new_feedback_state(1)).
MO_OTHER = 3


@njit(**NJ)
def counter_hashes(aid):
    """Per account the inner half of rng.bits(key, aid), mix64(aid * golden + golden): a draw
    keyed by the account is then uniform_hashed(key, hid) with one mix instead of two."""
    out = np.empty(aid.shape[0], np.uint64)
    for x in range(aid.shape[0]):
        out[x] = crng.mix64(np.uint64(aid[x]) * crng._GOLDEN + crng._GOLDEN)
    return out


@njit(inline="always", **NJ)
def uniform_hashed(key, hid):
    """rng.uniform(key, aid) for hid = counter_hashes(aid): the same number."""
    return float(crng.mix64(np.uint64(key) ^ hid) >> np.uint64(11)) * crng._INV53


def real_weight(pop) -> np.ndarray:
    """Real accounts each simulated account stands for (MODEL.md 2): a simulated account is w
    identical real ones, so every size-dependent term (the IMF size term and with it MMF and
    ACMF, the collateral haircut, steps 1 and 2's minimum order) is evaluated at qty / w and
    balance / w and scaled back by w; flows are linear in qty and need no weight. The exempt
    account is one real account."""
    w = np.asarray(pop.weight, float)
    return np.where(np.asarray(pop.exempt, bool) | ~(w > 0), 1.0, w)


@njit(inline="always", **NJ)
def requalify(F, C, i):
    """MMF/ACMF of account i from its current size (IMF depends on it), at one real account's
    size qty / wt."""
    imf = max(1.0 / F[F_LEV, i], C[C_IMF_F] * np.sqrt(abs(F[F_QTY, i]) / F[F_WT, i]))
    mmf = max(C[C_MMF_FLOOR], C[C_MMF_RATIO] * imf)
    F[F_MMF, i] = mmf
    F[F_ACMF, i] = max(mmf * C[C_ACMF_RATIO], mmf - C[C_ACMF_OFF])


@njit(inline="always", **NJ)
def tav_mf(F, i, price):
    q = F[F_QTY, i]
    cv = F[F_CBAL, i] * price * F[F_CW, i]
    tav = F[F_USD, i] + cv + F[F_SIDE, i] * q * (price - F[F_ENTRY, i])
    mf = tav / (q * price) if q > 0 else np.inf
    return tav, mf


@njit(inline="always", **NJ)
def price_at_mf(F, i, target):
    """Mark at which MF == target (nan: never at a positive price)."""
    s, q = F[F_SIDE, i], F[F_QTY, i]
    num = s * q * F[F_ENTRY, i] - F[F_USD, i]
    den = F[F_CBAL, i] * F[F_CW, i] + s * q - target * q
    m = num / den
    if np.isfinite(m) and m > 0 and q > 0:
        return m
    return np.nan


@njit(inline="always", **NJ)
def trig_dir(F, i):
    """-1: MF falls when the price falls (long-like), +1: when it rises."""
    return -1 if F[F_USD, i] - F[F_SIDE, i] * F[F_QTY, i] * F[F_ENTRY, i] < 0 else 1


@njit(inline="always", **NJ)
def set_qty(F, Z, i, q):
    """Change account i's size, keeping the open-coin totals per side (daily OI) in step."""
    d = q - F[F_QTY, i]
    if F[F_SIDE, i] > 0:
        Z[Z_QL] += d
    else:
        Z[Z_QS] += d
    F[F_QTY, i] = q


@njit(inline="always", **NJ)
def close_out(F, Z, i):
    if F[F_QTY, i] <= 1e-12:
        set_qty(F, Z, i, 0.0)
        F[F_ALIVE, i] = 0.0
        F[F_LIQ, i] = 1.0


def constants(inp, params: Params, symbol: str, deterministic: bool, n_other: int) -> np.ndarray:
    f, ex = params.ftx, params.execution
    C = np.zeros(NC_CONST)
    C[C_IMF_F] = ftx.imf_factor_for(symbol, params)
    C[C_MMF_FLOOR], C[C_MMF_RATIO] = f.mmf_floor, f.mmf_imf_ratio
    C[C_ACMF_RATIO], C[C_ACMF_OFF] = f.acmf_ratio, f.acmf_offset
    C[C_BUDGET] = ftx.step1_budget_usd(inp.adv_usd, params)
    C[C_ETA], C[C_FEE], C[C_MAXSLIP] = ex.eta["ftx"], ex.taker_fee["ftx"], ex.max_slippage
    C[C_TOPN] = f.overflow_top_n
    C[C_CAPMIN], C[C_CAPHOUR] = f.blp.capacity_per_minute_usd, f.blp.capacity_per_hour_usd
    C[C_PROB], C[C_S1FRAC], C[C_S1MIN] = f.step1.probability, f.step1.fraction, f.step1.min_usd
    C[C_JLO], C[C_JHI] = f.step1.jitter_low, f.step1.jitter_high
    C[C_OLO], C[C_OHI] = f.step1.offset_bp_low, f.step1.offset_bp_high
    C[C_S2MIN], C[C_NEGSHARE], C[C_ZPW] = f.step2.min_usd, f.negative_equity_blp_share, f.blp_price_zp_weight
    if not 0.0 <= C[C_NEGSHARE] <= 1.0:
        raise ValueError("ftx.negative_equity_blp_share must be in [0, 1]")
    C[C_SIGMA], C[C_BM], C[C_TICK] = inp.sigma_1m, inp.bar_minutes, inp.tick_s
    C[C_DET] = 1.0 if deterministic else 0.0
    C[C_FUND0] = f.insurance_fund_start_usd
    C[C_NC] = n_other
    imp = execution.impact_settings(params, "ftx")
    C[C_MO] = 1.0 if imp["metaorders"] else 0.0
    C[C_BUCKET] = imp["bucket_s"]
    C[C_FB] = 1.0 if imp["feedback"] else 0.0
    C[C_BASE], C[C_PERM], C[C_DECAY] = imp["baseline_share"], imp["permanent_share"], imp["decay_s"]
    return C
