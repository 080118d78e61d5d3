"""The refresh config: a TOML file of `[refresh]` (lake, summary) and `[[job]]` entries, read
and checked into frozen `Job`s (unknown keys, sources, datasets, dates, timeframes and price
types are refused with a ConfigError naming the job and the key). fetch/refresh.py runs them.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from fetch import timerange
from fetch.lake import SeriesKey
from fetch.schema import venue_of
from fetch.timerange import utc

SOURCES = ("ccxt", "binance_vision", "tardis")
DATASETS = ("ohlcv", "funding", "open_interest", "liquidations")
DEFAULT_LAG = {"ccxt": "2m", "binance_vision": "8h", "tardis": "6h"}


class ConfigError(ValueError):
    """The refresh config is wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class Job:
    """One [[job]] of the config (unknown keys are refused)."""

    name: str
    source: str
    dataset: str
    symbols: tuple[str, ...]
    start: str
    exchange: str = "binanceusdm"
    market: str = ""  # spot | perp | future; default from the exchange / source
    venue: str = ""  # default from the exchange / source
    timeframes: tuple[str, ...] = ("1m",)
    price_types: tuple[str, ...] = ("trade",)
    end: str = ""  # default: now minus the source's lag
    api_url: str = ""  # base-URL override (mirror, loopback test server)
    tail: str = ""  # archive jobs: "ccxt" fills the recent days the archive lacks
    tail_api_url: str = ""
    lag: str = ""  # publication lag, e.g. "2m", "8h"
    timeout_s: float = 30.0
    requires_env: str = ""  # skip the job (status "skipped", not a failure) when unset
    verify_checksum: bool = True  # binance_vision: False reads zips that have no .CHECKSUM

    def series_keys(self) -> list[SeriesKey]:
        out = []
        tfs = self.timeframes if self.dataset in ("ohlcv", "open_interest") else ("",)
        if self.dataset == "open_interest" and self.source == "binance_vision":
            tfs = ("5m",)
        pts = self.price_types if self.dataset == "ohlcv" else ("trade",)
        for sym in self.symbols:
            for tf in tfs:
                for pt in pts:
                    out.append(SeriesKey(self.dataset, self.venue, self.market, sym,
                                         tf if self.dataset != "liquidations" else "", pt))
        return out


@dataclass(frozen=True)
class RefreshConfig:
    jobs: tuple[Job, ...]
    lake: str = ""
    summary: str = ""
    path: str = ""


def venue_market(source: str, exchange: str) -> tuple[str, str]:
    if source == "ccxt":
        ex = exchange.lower()
        return venue_of(ex), ("spot" if ex in ("binance", "bybit", "okx", "kraken", "coinbase")
                              else "perp")
    if source == "binance_vision":
        return "binance", "perp"
    return ("ftx" if exchange.startswith("ftx") else venue_of(exchange.split("-")[0])), "perp"


def load_config(path: str | Path) -> RefreshConfig:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"refresh config {p} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"refresh config {p}: not valid TOML: {exc}") from None
    top = raw.pop("refresh", {})
    jobs_raw = raw.pop("job", [])
    if raw:
        raise ConfigError(f"refresh config {p}: unknown section(s) {sorted(raw)}; "
                          f"allowed: [refresh], [[job]]")
    unknown = set(top) - {"lake", "summary"}
    if unknown:
        raise ConfigError(f"refresh config {p}: unknown key(s) {sorted(unknown)} in [refresh]; "
                          f"allowed: lake, summary")
    if not jobs_raw:
        raise ConfigError(f"refresh config {p}: no [[job]] entries")
    allowed = {f.name for f in fields(Job)}
    jobs = []
    for i, j in enumerate(jobs_raw):
        j = dict(j)
        j.setdefault("name", f"job{i + 1}")
        bad = set(j) - allowed
        if bad:
            raise ConfigError(f"refresh config {p}: job {j['name']!r}: unknown key(s) "
                              f"{sorted(bad)}; allowed: {sorted(allowed)}")
        for req in ("source", "dataset", "symbols", "start"):
            if req not in j:
                raise ConfigError(f"refresh config {p}: job {j['name']!r} lacks {req!r}")
        if j["source"] not in SOURCES:
            raise ConfigError(f"job {j['name']!r}: source {j['source']!r} is not one of {SOURCES}")
        if j["dataset"] not in DATASETS:
            raise ConfigError(f"job {j['name']!r}: dataset {j['dataset']!r} is not one of {DATASETS}")
        if j["source"] == "tardis":
            j.setdefault("exchange", "ftx")
        for k in ("symbols", "timeframes", "price_types"):
            if k in j:
                if isinstance(j[k], str):
                    j[k] = [j[k]]
                j[k] = tuple(j[k])
        for k in ("start", "end"):
            if k in j and not isinstance(j[k], str):
                j[k] = pd.Timestamp(j[k]).isoformat()  # TOML dates/datetimes
        venue, market = venue_market(j["source"], j.get("exchange", "binanceusdm"))
        j.setdefault("venue", venue)
        j["venue"] = j["venue"] or venue
        j["market"] = j.get("market") or market
        try:
            utc(j["start"])
            if j.get("end"):
                utc(j["end"])
            for tf in j.get("timeframes", ()):
                timerange.timeframe_delta(tf)
            if j.get("lag"):
                timerange.timeframe_delta(j["lag"])
        except (ValueError, timerange.TimeRangeError) as exc:
            raise ConfigError(f"job {j['name']!r}: {exc}") from None
        for pt in j.get("price_types", ()):
            if pt not in ("trade", "mark", "index"):
                raise ConfigError(f"job {j['name']!r}: price type {pt!r} is not trade/mark/index")
        jobs.append(Job(**j))
    return RefreshConfig(tuple(jobs), lake=top.get("lake", ""), summary=top.get("summary", ""),
                         path=str(p))
