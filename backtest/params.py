"""Model parameters: one TOML file, every value with its source, dated values, sweep ranges.

The default file is `backtest/params.toml`. A leaf is a table with `value` (or `dated`, a
list of `{from = "YYYY-MM-DD", value = ...}`), `source`, and for uncertain numbers a
`range = [low, high]` that the sensitivity sweep covers. Keys are dotted paths
("ftx.blp.hedge_latency_s"). A user file may override a subset of the defaults, either with
leaf tables or with plain values; unknown keys are errors that name the key.

    p = load_params()                          # defaults
    p = load_params("mine.toml", overrides={"ftx.blp.hedge_ratio": 0.5})
    p.get("ftx.blp.hedge_latency_s")           # 5.0
    p.get("ftx.max_leverage", date=datetime.date(2021, 7, 1))   # 101.0

Typed sections (backtest/param_sections.py), built once per Params on first use:

    p.ftx.blp.hedge_latency_s                  # 5.0
    p.ftx.max_leverage.at("2021-07-01")         # 101.0
    p.section("population").n_accounts
"""
from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backtest.domains import check_domain_field, domain_for, pair_problems
from backtest.param_sections import (
    SECTION_NAMES,
    BinanceParams,
    DisclosureParams,
    ExecutionParams,
    FtxParams,
    ImpactParams,
    PathParams,
    PopulationParams,
    Sections,
    build_sections,
)
from fetch.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).with_name("params.toml")
_LEAF_FIELDS = {"value", "dated", "source", "range", "domain"}
# string parameters that take one of a few names (checked when a file or override sets them)
CHOICES: dict[str, tuple[str, ...]] = {"path.mode": ("bridge", "linear"), "impact.mode": ("v1", "v2")}


class ParamsError(UserError, ValueError):
    """A bad parameter file or key (the message names the key)."""


def as_date(d: Any) -> dt.date:
    if isinstance(d, dt.datetime):
        return d.date()
    if isinstance(d, dt.date):
        return d
    if isinstance(d, str):
        try:
            return dt.date.fromisoformat(d[:10])
        except ValueError as exc:
            raise ParamsError(f"bad date {d!r}: use YYYY-MM-DD") from exc
    if hasattr(d, "date"):  # pandas Timestamp, numpy datetime64 via pandas
        return d.date()
    raise ParamsError(f"bad date {d!r}: use a datetime.date or 'YYYY-MM-DD'")


def _is_leaf(node: Any) -> bool:
    return isinstance(node, dict) and "source" in node and ("value" in node or "dated" in node)


def _flatten(tree: dict, prefix: str = "") -> dict[str, dict]:
    out: dict[str, dict] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if _is_leaf(v):
            extra = set(v) - _LEAF_FIELDS
            if extra:
                raise ParamsError(f"parameter {key}: unknown field(s) {sorted(extra)}")
            out[key] = _check_leaf(key, dict(v))
        elif isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            raise ParamsError(f"parameter {key}: defaults need a table with value/dated and source")
    return out


def _check_leaf(key: str, leaf: dict) -> dict:
    if "dated" in leaf:
        dated = leaf["dated"]
        if not isinstance(dated, list) or not dated:
            raise ParamsError(f"parameter {key}: 'dated' must be a non-empty list")
        rows = []
        for row in dated:
            if not isinstance(row, dict) or set(row) != {"from", "value"}:
                raise ParamsError(f"parameter {key}: each dated entry needs exactly 'from' and 'value'")
            rows.append({"from": as_date(row["from"]).isoformat(), "value": row["value"]})
        rows.sort(key=lambda r: r["from"])
        leaf["dated"] = rows
    if "range" in leaf:
        r = leaf["range"]
        if (not isinstance(r, list) or len(r) != 2 or not all(isinstance(x, (int, float)) for x in r)
                or r[0] > r[1]):
            raise ParamsError(f"parameter {key}: range must be [low, high] numbers")
    _check_domain(key, leaf)
    return leaf


def _values(leaf: dict) -> list[Any]:
    return [leaf["value"]] if "value" in leaf else [r["value"] for r in leaf["dated"]]


def _check_domain(key: str, leaf: dict) -> None:
    """Hard limits (backtest/domains.py): an error naming key, value and domain; a valid
    value outside the documented sweep range is only a warning."""
    bad = check_domain_field(key, leaf)
    if bad:
        raise ParamsError(bad)
    dom = domain_for(key, leaf)
    if dom is None:
        return  # no rule covers the key: test_params asserts every params.toml key has one
    for v in _values(leaf):
        if not dom.contains(v):
            raise ParamsError(f"parameter {key} = {v!r} is outside its valid domain {dom}")
    if "range" in leaf:
        lo, hi = leaf["range"]
        if not dom.within(lo, hi):
            raise ParamsError(f"parameter {key}: range [{lo}, {hi}] leaves its valid domain {dom}")
        for v in _values(leaf):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not lo <= v <= hi:
                log.warning("parameter %s = %r is outside its documented sweep range [%s, %s] "
                            "(valid, but the sensitivity analysis did not cover it)", key, v, lo, hi)


def _check_pairs(leaves: dict[str, dict]) -> None:
    flat = {k: v["value"] for k, v in leaves.items() if "value" in v}
    problems = pair_problems(flat)
    if problems:
        raise ParamsError(problems[0])


def _flatten_overrides(tree: dict, known: dict[str, dict], prefix: str = "") -> dict[str, Any]:
    """User-file overrides: leaf tables or plain values; every key must exist in `known`."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if key in known:
            out[key] = v
        elif isinstance(v, dict) and any(kk.startswith(key + ".") for kk in known):
            out.update(_flatten_overrides(v, known, key))
        else:
            raise ParamsError(f"unknown parameter {key!r} (not in {DEFAULT_PATH.name})")
    return out


@dataclass(frozen=True, eq=False)
class Params:
    """Frozen parameter set. `_leaves` maps dotted key -> leaf dict (value/dated/source/range).
    Identity-hashable (usable as a cache key); compare sets with .hash()."""

    _leaves: dict[str, dict]
    path: str = str(DEFAULT_PATH)

    # -- access -----------------------------------------------------------------------
    def keys(self) -> list[str]:
        return sorted(self._leaves)

    def __contains__(self, key: str) -> bool:
        return key in self._leaves

    def _leaf(self, key: str) -> dict:
        try:
            return self._leaves[key]
        except KeyError:
            raise ParamsError(f"unknown parameter {key!r}") from None

    def get(self, key: str, date: Any = None) -> Any:
        """The value of `key`; for dated values the one in force on `date` (latest if None).

        A date before the first entry gets the first entry's value.
        """
        leaf = self._leaf(key)
        if "dated" not in leaf:
            return copy.deepcopy(leaf["value"])
        rows = leaf["dated"]
        if date is None:
            return copy.deepcopy(rows[-1]["value"])
        iso = as_date(date).isoformat()
        chosen = rows[0]
        for row in rows:
            if row["from"] <= iso:
                chosen = row
        return copy.deepcopy(chosen["value"])

    def dated(self, key: str) -> list[tuple[dt.date, Any]] | None:
        """The (from, value) list of a dated key, None for a plain one."""
        leaf = self._leaf(key)
        if "dated" not in leaf:
            return None
        return [(dt.date.fromisoformat(r["from"]), copy.deepcopy(r["value"])) for r in leaf["dated"]]

    def source(self, key: str) -> str:
        return self._leaf(key)["source"]

    def __getstate__(self) -> dict:
        """Pickled (Dask) without the cached sections: they are rebuilt on first use."""
        state = dict(self.__dict__)
        state.pop("sections", None)
        return state

    # -- typed sections (backtest/param_sections.py) ------------------------------------
    @functools.cached_property
    def sections(self) -> Sections:
        """Every section as a typed frozen dataclass, built on first use."""
        return build_sections(self)

    def section(self, name: str):
        """One section by name ("ftx", "binance", "population", ...)."""
        if name not in SECTION_NAMES:
            raise ParamsError(f"unknown parameter section {name!r}; known: {', '.join(SECTION_NAMES)}")
        return getattr(self.sections, name)

    @property
    def ftx(self) -> FtxParams:
        return self.sections.ftx

    @property
    def binance(self) -> BinanceParams:
        return self.sections.binance

    @property
    def population(self) -> PopulationParams:
        return self.sections.population

    @property
    def execution(self) -> ExecutionParams:
        return self.sections.execution

    @property
    def path_model(self) -> PathParams:
        """The `path` section (`Params.path` is the file the set was read from)."""
        return self.sections.path

    @property
    def impact(self) -> ImpactParams:
        return self.sections.impact

    @property
    def disclosure(self) -> DisclosureParams:
        return self.sections.disclosure

    def sources(self) -> dict[str, str]:
        return {k: v["source"] for k, v in sorted(self._leaves.items())}

    def sweep_ranges(self) -> dict[str, tuple[float, float]]:
        """Every uncertain value with the [low, high] the sweep covers."""
        return {k: (float(v["range"][0]), float(v["range"][1]))
                for k, v in sorted(self._leaves.items()) if "range" in v}

    def to_dict(self) -> dict[str, Any]:
        """Values only, flat dotted keys; dated values as [[from, value], ...]."""
        out: dict[str, Any] = {}
        for k, v in sorted(self._leaves.items()):
            out[k] = ([[r["from"], r["value"]] for r in v["dated"]] if "dated" in v
                      else copy.deepcopy(v["value"]))
        return out

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- derivation -------------------------------------------------------------------
    def with_overrides(self, overrides: dict[str, Any] | None) -> "Params":
        """A copy with `overrides` ({dotted key: value or leaf table}) applied."""
        if not overrides:
            return self
        leaves = copy.deepcopy(self._leaves)
        for key, new in overrides.items():
            if key not in leaves:
                raise ParamsError(f"unknown parameter {key!r} (not in {DEFAULT_PATH.name})")
            leaves[key] = _merge_leaf(key, leaves[key], new)
        _check_pairs(leaves)
        return Params(leaves, self.path)


def _merge_leaf(key: str, old: dict, new: Any) -> dict:
    leaf = {"source": old["source"]}
    if "range" in old:
        leaf["range"] = list(old["range"])
    if "domain" in old:
        leaf["domain"] = list(old["domain"])
    if isinstance(new, dict) and (set(new) & _LEAF_FIELDS) and set(new) <= _LEAF_FIELDS:
        if "value" in new and "dated" in new:
            raise ParamsError(f"parameter {key}: give value or dated, not both")
        if "value" in new:
            leaf["value"] = new["value"]
        elif "dated" in new:
            leaf["dated"] = new["dated"]
        else:
            leaf.update({k: v for k, v in old.items() if k in ("value", "dated")})
        if "range" in new:
            leaf["range"] = new["range"]
        if "domain" in new:
            leaf["domain"] = new["domain"]
        leaf["source"] = new.get("source", f"override (default: {old['source']})")
    else:
        leaf["value"] = new
        leaf["source"] = f"override (default: {old['source']})"
    _check_type(key, old, leaf)
    _check_choice(key, leaf)
    return _check_leaf(key, leaf)


def _check_choice(key: str, leaf: dict) -> None:
    if key not in CHOICES:
        return
    vals = [leaf["value"]] if "value" in leaf else [r.get("value") for r in leaf["dated"]]
    for v in vals:
        if v not in CHOICES[key]:
            raise ParamsError(f"parameter {key}: {v!r} is not one of {', '.join(map(repr, CHOICES[key]))}")


def _check_type(key: str, old: dict, leaf: dict) -> None:
    ref = old["value"] if "value" in old else old["dated"][0]["value"]
    vals = [leaf["value"]] if "value" in leaf else [r.get("value") for r in leaf["dated"]]
    for v in vals:
        if isinstance(ref, bool):
            ok = isinstance(v, bool)
        elif isinstance(ref, (int, float)):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        elif isinstance(ref, str):
            ok = isinstance(v, str)
        else:
            ok = isinstance(v, type(ref))
        if not ok:
            raise ParamsError(f"parameter {key}: expected {type(ref).__name__}, got {v!r}")


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ParamsError(f"parameter file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ParamsError(f"parameter file {path} is not valid TOML: {exc}") from None


_DEFAULTS_CACHE: dict[str, dict] = {}


def _defaults() -> dict[str, dict]:
    if "leaves" not in _DEFAULTS_CACHE:
        leaves = _flatten(_read_toml(DEFAULT_PATH))
        _check_pairs(leaves)
        _DEFAULTS_CACHE["leaves"] = leaves
    return copy.deepcopy(_DEFAULTS_CACHE["leaves"])


def load_params(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Params:
    """The defaults (backtest/params.toml), then the user file `path` (a subset), then `overrides`.

    Raises ParamsError naming the key for unknown keys, bad types or bad ranges.
    """
    base = Params(_defaults(), str(DEFAULT_PATH))
    if path is not None and Path(path).resolve() != DEFAULT_PATH.resolve():
        user = _flatten_overrides(_read_toml(Path(path)), base._leaves)
        try:
            base = Params(base.with_overrides(user)._leaves, str(path))
        except ParamsError as exc:
            raise ParamsError(f"{path}: {exc}") from None
    return base.with_overrides(overrides)


@functools.lru_cache(maxsize=1)
def default_params() -> Params:
    """backtest/params.toml as loaded once (for entry points and tests; the engines take a Params)."""
    return load_params()
