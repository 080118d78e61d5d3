"""Counter-based random draws (MODEL.md 3.4): a draw is a pure function of its key.

Every random number the engines use is `uniform(key, counter)` with `key` built from
(seed, stream, ...) by `make_key`. A replay that skips quiet ticks and the naive oracle
that visits every tick therefore draw exactly the same numbers for the same
(seed, market, tick, account), whatever order they ask in. The mixer is SplitMix64's
finaliser (Steele, Lea & Flood 2014), which passes BigCrush when used as a counter-based
generator; draws are 53-bit uniforms in [0, 1).

All functions are numba `njit` and also callable from plain Python (scalars), so the
oracle and the compiled kernels share one implementation.
"""
from __future__ import annotations

import zlib

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_INV53 = 1.0 / 9007199254740992.0   # 2**-53

# stream ids: one per kind of draw, so two kinds never share numbers
STEP1_FIRE = 1        # FTX step-1 firing clock (per market, tick)
STEP1_ORDER = 2       # FTX step-1 order of accounts (per market, tick, account)
STEP1_JITTER = 3      # FTX step-1 size factor U(low, high)
STEP1_OFFSET = 4      # FTX step-1 limit offset (bp)
PATH = 5              # intra-bar path (per coin, bar)
DISCLOSURE = 6        # real-order placement behind one simulated liquidation
POPULATION = 7        # account draws
SWEEP = 8


@njit(cache=True, inline="always")
def mix64(x):
    """SplitMix64 finaliser: a bijection of uint64 with full avalanche."""
    x = np.uint64(x)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def make_key(seed, a, b, c):
    """Combine up to four integers (any sign) into one 64-bit key."""
    h = mix64(np.uint64(seed) + _GOLDEN)
    h = mix64(h ^ (np.uint64(a) + _GOLDEN))
    h = mix64(h ^ (np.uint64(b) + _GOLDEN))
    return mix64(h ^ (np.uint64(c) + _GOLDEN))


@njit(cache=True, inline="always")
def bits(key, counter):
    return mix64(np.uint64(key) ^ mix64(np.uint64(counter) * _GOLDEN + _GOLDEN))


@njit(cache=True, inline="always")
def uniform(key, counter):
    """U[0, 1) from (key, counter)."""
    return float(bits(key, counter) >> np.uint64(11)) * _INV53


@njit(cache=True)
def normal(key, counter):
    """N(0, 1) from (key, counter) by Box-Muller on the counters 2c and 2c+1."""
    u1 = uniform(key, np.uint64(2) * np.uint64(counter))
    u2 = uniform(key, np.uint64(2) * np.uint64(counter) + np.uint64(1))
    u1 = max(u1, 1e-300)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True)
def uniforms(key, counters):
    out = np.empty(counters.shape[0])
    for i in range(counters.shape[0]):
        out[i] = uniform(key, counters[i])
    return out


@njit(cache=True)
def normals(key, counters):
    out = np.empty(counters.shape[0])
    for i in range(counters.shape[0]):
        out[i] = normal(key, counters[i])
    return out


def name_id(*parts: object) -> int:
    """A stable 32-bit id of names (window, venue, coin ...), the same in every process."""
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def series_key(seed: int, stream: int, *names: object) -> int:
    """The key of one (seed, stream, names...) as a Python int (pass it to the kernels)."""
    return int(make_key(int(seed) & 0xFFFFFFFFFFFFFFFF, int(stream), name_id(*names), 0))
