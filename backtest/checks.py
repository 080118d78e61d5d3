"""Input checks shared by the pure engine modules (venues, population, execution).

Each returns the input as a float ndarray, or raises ValueError with a message naming
the argument, so bad input fails at the boundary with one clear line.
"""
from __future__ import annotations

import numpy as np


def side(x, message: str = "side must be +1 (long) or -1 (short)") -> np.ndarray:
    s = np.asarray(x)
    if not np.all(np.isin(s, (-1, 1))):
        raise ValueError(message)
    return s.astype(float)


def nonneg(name: str, x) -> np.ndarray:
    """>= 0 and not NaN (+inf allowed: e.g. an open-ended cap)."""
    a = np.asarray(x, dtype=float)
    if np.any(np.isnan(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be >= 0 (got a negative or NaN value)")
    return a


def nonneg_finite(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and >= 0 (got a negative or non-finite value)")
    return a


def positive(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be finite and > 0 (got zero, negative or non-finite)")
    return a


def finite(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if np.any(~np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def scalar_out(x, *inputs):
    """A python float when every input was a scalar, else the array as is."""
    if all(np.ndim(i) == 0 for i in inputs):
        return float(np.asarray(x))
    return x
