"""Human-readable figures for the backtest's printed lines (one money format for every command)."""
from __future__ import annotations

import math


def money(x) -> str:
    """$1.23B, $4.5M, $67k, $89; n/a for None or a non-finite value."""
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    a = abs(x)
    if a >= 1e9:
        return f"${x / 1e9:.2f}B"
    if a >= 1e6:
        return f"${x / 1e6:.1f}M"
    if a >= 1e3:
        return f"${x / 1e3:.0f}k"
    return f"${x:.0f}"
