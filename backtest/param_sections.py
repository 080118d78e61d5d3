"""Typed, frozen views of the parameter sections: one slotted dataclass per section of
backtest/params.toml, built once from a loaded `Params` (which has already rejected unknown
keys and checked every value's domain).

    p = load_params()
    p.ftx.mmf_floor                              # 0.03 (float)
    p.ftx.max_leverage.at("2021-07-01")           # 101.0: a dated value
    p.ftx.imf_factor.of("BTC-PERP")               # a per-market table with a default
    p.ftx.collateral["BTC"].weight_total          # a per-coin table of sub-sections
    p.section("execution").taker_fee["ftx"]

Shapes: a plain key is a typed field; a key whose value changes on dates is `Dated`
(`.at(date)`, `.latest`); a sub-table keyed by coin, market or venue is a `Table` (a frozen
mapping; `.of(name)` falls back to its `default` entry where it has one); a nested group of
fixed keys is a nested section. `build_sections` reads every field from its dotted key and
fails (ParamsError) on a key the TOML lacks or a value of the wrong type;
`uncovered_keys` lists params.toml keys no field reads (the tests require none).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _as_date(d: Any) -> dt.date:
    from backtest.params import as_date  # params imports this module; as_date names the bad input

    return as_date(d)


@dataclass(frozen=True, slots=True)
class Dated(Generic[T]):
    """A value in force from given dates on: ((from, value), ...) sorted by date. A date
    before the first entry gets the first entry's value (as Params.get)."""

    key: str
    rows: tuple[tuple[dt.date, T], ...]

    def at(self, date: Any = None) -> T:
        """The value in force on `date` (the latest with None)."""
        if date is None:
            return self.rows[-1][1]
        d = _as_date(date)
        chosen = self.rows[0][1]
        for start, value in self.rows:
            if start <= d:
                chosen = value
        return chosen

    @property
    def latest(self) -> T:
        return self.rows[-1][1]


class Table(Mapping[str, T]):
    """A frozen name -> value mapping of one sub-table (per coin, market or venue)."""

    __slots__ = ("key", "_items")

    def __init__(self, key: str, items: Mapping[str, T]):
        self.key = key
        self._items = dict(items)  # never handed out: read through the Mapping interface

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"no parameter {self.key}.{name} (have: {', '.join(self._items)})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def of(self, name: str) -> T:
        """The entry for `name`, else the table's `default` entry."""
        if name in self._items:
            return self._items[name]
        return self["default"]

    def __repr__(self) -> str:
        return f"Table({self.key!r}, {self._items!r})"

    def __reduce__(self):
        return (Table, (self.key, self._items))


# ------------------------------------------------------------------------------ sections
@dataclass(frozen=True, slots=True)
class FtxBlp:
    capacity_per_hour_usd: float
    capacity_per_minute_usd: float
    hedge_latency_s: float
    hedge_ratio: float
    hedge_venue: str


@dataclass(frozen=True, slots=True)
class FtxStep1:
    budget_adv_fraction: float
    fraction: float
    jitter_high: float
    jitter_low: float
    min_usd: float
    offset_bp_high: float
    offset_bp_low: float
    probability: float


@dataclass(frozen=True, slots=True)
class FtxStep2:
    min_usd: float


@dataclass(frozen=True, slots=True)
class CollateralTerms:
    """One collateral coin on FTX: total and initial weights, the size haircut's IMF factor."""

    imf_factor: float
    weight_initial: float
    weight_total: float


@dataclass(frozen=True, slots=True)
class FtxParams:
    acmf_offset: float
    acmf_ratio: float
    blp: FtxBlp
    blp_price_zp_weight: float
    collateral: Table[CollateralTerms]       # coin -> terms (USD, BTC, ETH, FTT, SOL, BNB)
    collateral_haircut_numerator: float
    imf_factor: Table[float]                 # market symbol -> IMF factor, with `default`
    insurance_fund_start_usd: float
    max_leverage: Dated[float]
    mmf_floor: float
    mmf_imf_ratio: float
    negative_equity_blp_share: float
    oi_ratio_to_binance: Table[float]        # coin -> FTX OI / Binance OI, with `default`
    overflow_top_n: int
    reported_every_fill: bool
    step1: FtxStep1
    step2: FtxStep2
    tick_s: float


@dataclass(frozen=True, slots=True)
class BinanceBrackets:
    """binance.brackets: the symbols with their own dated tables (binance.brackets.<SYMBOL>)
    and the generic table for the others."""

    btcusdt_jan2022_table: str
    generic: dict
    generic_fallback: bool
    # every other key under binance.brackets: symbol -> its dated bracket table
    by_symbol: Table[Dated[dict]] = dataclasses.field(metadata={"rest": True})


@dataclass(frozen=True, slots=True)
class BinanceParams:
    adl_enabled: bool
    brackets: BinanceBrackets
    initial_margin_mmr_multiple: float
    insurance_fund_start_usd: float
    liq_fee_rate: float
    max_leverage: Dated[float]
    partial_liquidation: bool
    reported_one_per_second: bool


@dataclass(frozen=True, slots=True)
class DisclosureParams:
    bandwidth_real_orders: float
    max_spread_s: float


@dataclass(frozen=True, slots=True)
class ExecutionParams:
    adv_days: int
    eta: Table[float]                 # venue -> square-root impact coefficient
    max_slippage: float
    taker_fee: Table[float]           # venue -> taker fee rate


@dataclass(frozen=True, slots=True)
class ImpactParams:
    baseline_share: float
    bucket_s: float
    decay_s: float
    feedback: bool
    mode: str                                   # "v2" (bar sigma, metaorders) or "v1"
    permanent_share: float
    sigma_floor_1m: float


@dataclass(frozen=True, slots=True)
class PathParams:
    draws: int
    mode: str
    near_first_prob: float
    time_jitter: float
    vol_scale: float


@dataclass(frozen=True, slots=True)
class PopulationParams:
    accounts_reference_days: float
    binance_cross_extra_margin: float
    binance_isolated_share: float
    binance_legacy_share: float
    cohort_hours: float
    entry_lookback_days: float
    exempt_account: bool
    exempt_leverage: float
    exempt_notional_share: float
    exempt_side: int
    ftx_account_leverage: float
    ftx_collateral_share: Table[float]          # coin -> share of an FTX account's collateral
    holding_days: float
    holding_tail_ratio: float
    leverage_low_max: float
    leverage_low_min: float
    leverage_low_share: float
    leverage_scale: float
    long_account_share: float
    long_share: float
    n_accounts: int
    notional_sigma: float
    real_accounts_per_market: Table[float]      # coin -> real accounts, with `default`
    tail_sim_share: float
    warmup_days: float


@dataclass(frozen=True, slots=True)
class Sections:
    """Every section, built once per Params (Params.sections)."""

    binance: BinanceParams
    disclosure: DisclosureParams
    execution: ExecutionParams
    ftx: FtxParams
    impact: ImpactParams
    path: PathParams
    population: PopulationParams


SECTION_NAMES = tuple(f.name for f in dataclasses.fields(Sections))


# ------------------------------------------------------------------------------ building
def _params_error(msg: str) -> Exception:
    from backtest.params import ParamsError  # params imports this module

    return ParamsError(msg)


def _coerce(key: str, typ: Any, value: Any) -> Any:
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        out = float(value) if ok else None
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
        out = int(value) if ok else None
    elif typ is bool:
        ok, out = isinstance(value, bool), value
    elif typ is str:
        ok, out = isinstance(value, str), value
    elif typ is dict:
        ok, out = isinstance(value, dict), value
    else:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"{key}: unsupported field type {typ!r}")
    if not ok:
        raise _params_error(f"parameter {key}: expected {typ.__name__}, got {value!r}")
    return out


def _children(params, prefix: str) -> list[str]:
    """The distinct next path components under `prefix.`, in params order."""
    seen: dict[str, None] = {}
    for k in params.keys():
        if k.startswith(prefix + "."):
            seen.setdefault(k[len(prefix) + 1:].split(".", 1)[0], None)
    return list(seen)


def _build(cls: type, params, prefix: str, used: set[str]) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    named = {f.name for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if f.metadata.get("rest"):  # a Table of the section's keys no other field names
            (item,) = typing.get_args(hints[f.name])
            names = [n for n in _children(params, prefix) if n not in named]
            values[f.name] = Table(prefix, {n: _field(item, params, f"{prefix}.{n}", used) for n in names})
        else:
            values[f.name] = _field(hints[f.name], params, f"{prefix}.{f.name}", used)
    return cls(**values)


def _field(typ: Any, params, key: str, used: set[str]) -> Any:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        return _build(typ, params, key, used)
    if origin is Table:
        (item,) = typing.get_args(typ)
        names = _children(params, key)
        if not names:
            raise _params_error(f"parameter table {key} is missing from params.toml")
        return Table(key, {n: _field(item, params, f"{key}.{n}", used) for n in names})
    if key not in params:
        raise _params_error(f"parameter {key} is missing from params.toml")
    used.add(key)
    if origin is Dated:
        (item,) = typing.get_args(typ)
        rows = params.dated(key)
        if rows is None:
            return Dated(key, ((dt.date.min, _coerce(key, item, params.get(key))),))
        return Dated(key, tuple((d, _coerce(key, item, v)) for d, v in rows))
    if params.dated(key) is not None:
        raise _params_error(f"parameter {key} is dated; its section field must be Dated")
    return _coerce(key, typ, params.get(key))


def build_sections(params) -> Sections:
    """Every section of `params` as typed frozen dataclasses."""
    used: set[str] = set()
    return _build_all(params, used)


def _build_all(params, used: set[str]) -> Sections:
    hints = typing.get_type_hints(Sections)
    return Sections(**{name: _build(hints[name], params, name, used) for name in SECTION_NAMES})


def uncovered_keys(params) -> list[str]:
    """params.toml keys that no section field reads (a new key needs a field)."""
    used: set[str] = set()
    _build_all(params, used)
    return [k for k in params.keys() if k not in used]
