"""Validity domains of the parameters (issue 11 item 3): what a value may be at all.

A domain is a hard limit (a share in [0, 1], money >= 0, leverage >= 1, counts >= 1); a
value outside it is an error naming the key, the value and the domain. The documented sweep
`range` of params.toml is narrower: a valid value outside it earns a warning only.

Domains come from rules on the key's name and unit (`*_usd` money, `*share*` a share,
`*_s` seconds ...), so a key added to params.toml is covered without editing this file; a
leaf may state its own with `domain = [lo, hi]` (closed; `inf` allowed), which wins.
`domain_for(key, leaf)` returns None for a key no rule covers: tests/backtest/test_params.py
asserts that every key of params.toml has a domain and that its default lies inside it.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

INF = math.inf


@dataclass(frozen=True)
class Domain:
    kind: str = "number"          # number | bool | text | brackets | choice
    lo: float = -INF
    hi: float = INF
    lo_open: bool = False
    integer: bool = False
    choices: tuple = ()
    what: str = ""                # a word on why ("money", "a share") for the message

    def contains(self, v: Any) -> bool:
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "text":
            return isinstance(v, str) and v.strip() != ""
        if self.kind == "choice":
            return not isinstance(v, bool) and v in self.choices
        if self.kind == "brackets":
            return _brackets_ok(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            return False
        if self.integer and float(v) != int(v):
            return False
        if v < self.lo or (self.lo_open and v == self.lo) or v > self.hi:
            return False
        return True

    def __str__(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "text":
            return "a non-empty string"
        if self.kind == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.kind == "brackets":
            return "brackets: caps > 0 increasing, mmr in (0, 1) non-decreasing, same length"
        lo = "-inf" if self.lo == -INF else _num(self.lo)
        hi = "inf" if self.hi == INF else _num(self.hi)
        text = f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi == INF else ']'}"
        if self.integer:
            text = f"integers in {text}"
        return f"{text} ({self.what})" if self.what else text

    def within(self, lo: float, hi: float) -> bool:
        """True when the interval [lo, hi] (a sweep range) lies inside the domain."""
        if self.kind != "number":
            return True
        return self.contains(lo if not self.integer else math.ceil(lo)) and \
            self.contains(hi if not self.integer else math.floor(hi))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _brackets_ok(v: Any) -> bool:
    if not isinstance(v, dict) or set(v) != {"caps", "mmr"}:
        return False
    caps, mmr = v["caps"], v["mmr"]
    if not (isinstance(caps, list) and isinstance(mmr, list) and caps and len(caps) == len(mmr)):
        return False
    nums = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in caps + mmr)
    return (nums and all(c > 0 for c in caps) and all(b > a for a, b in itertools.pairwise(caps))
            and all(0 < m < 1 for m in mmr) and all(b >= a for a, b in itertools.pairwise(mmr)))


SHARE = Domain(lo=0.0, hi=1.0, what="a share")
PROB = Domain(lo=0.0, hi=1.0, what="a probability")
MONEY = Domain(lo=0.0, what="money, USD")
SECONDS = Domain(lo=0.0, what="seconds")
POSITIVE = Domain(lo=0.0, lo_open=True, what="positive")
NONNEG = Domain(lo=0.0, what="non-negative")
COUNT = Domain(lo=1.0, integer=True, what="a count")
LEVERAGE = Domain(lo=1.0, hi=200.0, what="leverage: 1x up to 200x; venues offered at most 125x")

# (regex on the dotted key, domain), first match wins; the name's unit decides
RULES: tuple[tuple[str, Domain], ...] = (
    (r"(^|\.)tick_s$", Domain(lo=0.0, lo_open=True, what="seconds, positive")),
    (r"leverage_scale$", Domain(lo=0.0, lo_open=True, hi=100.0, what="a positive scale factor")),
    (r"leverage_low_share$", SHARE),
    (r"leverage", LEVERAGE),
    (r"(^|[._])n_accounts$|top_n$|(^|\.)n_[a-z_]+$|_count$", COUNT),
    (r"_days$", Domain(lo=0.0, lo_open=True, what="days, positive")),
    (r"_usd$", MONEY),
    (r"probability|_prob$", PROB),
    (r"ratio_to", NONNEG),
    (r"share|fraction|(^|[._])weight|_ratio$|fee(_|\.|$)|_rate$", SHARE),
    (r"_s$", SECONDS),
    (r"_bp(_|$)", Domain(lo=0.0, hi=10_000.0, what="basis points")),
    (r"sigma", NONNEG),
    (r"(^|\.)eta(\.|$)", NONNEG),
    (r"imf_factor", NONNEG),
    (r"mmf_floor|acmf_offset|max_slippage", SHARE),
    (r"_multiple$", Domain(lo=1.0, what="a multiple, >= 1")),
    (r"extra_margin$", NONNEG),
    (r"numerator$|jitter", POSITIVE),
    (r"(^|[._])side$", Domain(kind="choice", choices=(-1, 1))),
)


def domain_for(key: str, leaf: dict) -> Domain | None:
    """The domain of `key` (leaf: its params.toml table); None when no rule covers it."""
    if "domain" in leaf:
        lo, hi = leaf["domain"]
        return Domain(lo=float(lo), hi=float(hi), what="its stated domain")
    ref = leaf["value"] if "value" in leaf else leaf["dated"][0]["value"]
    if isinstance(ref, bool):
        return Domain(kind="bool")
    if isinstance(ref, str):
        return Domain(kind="text")
    if isinstance(ref, dict) and re.search(r"(^|\.)brackets\.", key):
        return Domain(kind="brackets")
    if not isinstance(ref, (int, float)):
        return None
    for pattern, dom in RULES:
        if re.search(pattern, key):
            return dom
    return None


def check_domain_field(key: str, leaf: dict) -> str | None:
    """A message when the leaf's own `domain` field is malformed, else None."""
    if "domain" not in leaf:
        return None
    d = leaf["domain"]
    if (not isinstance(d, list) or len(d) != 2 or
            not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in d) or d[0] > d[1]):
        return f"parameter {key}: domain must be [low, high] numbers (inf allowed)"
    return None


def pair_problems(values: dict[str, Any]) -> list[str]:
    """Low/high pairs that cross: `x_low` > `x_high`, `x_min` > `x_max` (same prefix)."""
    out = []
    for key, v in values.items():
        for a, b in (("_low", "_high"), ("_min", "_max")):
            if key.endswith(a):
                other = key[: -len(a)] + b
                w = values.get(other)
                if isinstance(v, (int, float)) and isinstance(w, (int, float)) and v > w:
                    out.append(f"parameter {key} = {v!r} is above {other} = {w!r}: low must not exceed high")
    return out
