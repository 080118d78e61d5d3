"""Scenario windows, per-venue/per-market defaults, and which series each (venue, coin) may run on.

`load_scenarios()` reads backtest/scenarios.toml (windows, venues, market defaults with
sources); `Scenarios.sources(venue, coin)` lists the price series in order of preference (own
perp, its spot proxies, the reference stand-ins). Loading the series from the lake is
backtest/series_loader.py; the bar arithmetic is backtest/bars.py.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from backtest.scenario_schema import ScenarioError, parse_time, validate

SCENARIOS_FILE = Path(__file__).with_name("scenarios.toml")
VENUES = ("ftx", "binance")
COINS = ("BTC", "ETH")


class DataUnavailable(Exception):
    """A (window, venue, market) that cannot run; the message names all three and why."""

    def __init__(self, window: str, venue: str, market: str, reason: str):
        self.window, self.venue, self.market, self.reason = window, venue, market, reason
        super().__init__(f"window {window}, venue {venue}, market {market}: {reason}")


@dataclass(frozen=True)
class Window:
    id: str
    label: str
    start: pd.Timestamp
    end: pd.Timestamp          # exclusive
    whole_year: bool = False

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400.0


@dataclass(frozen=True)
class PriceSource:
    venue: str
    market: str
    symbol: str

    def label(self) -> str:
        return f"{self.venue} {self.market} {self.symbol}"


@dataclass(frozen=True)
class Scenarios:
    windows: tuple[Window, ...]
    venues: dict
    markets: dict
    source_file: str

    def window(self, wid: str) -> Window:
        for w in self.windows:
            if w.id == wid:
                return w
        known = ", ".join(w.id for w in self.windows)
        raise KeyError(f"unknown window {wid!r}; known: {known}")

    def symbol(self, venue: str, coin: str) -> str:
        return self.venues[venue]["symbol_format"].format(coin=coin)

    def own_sources(self, venue: str, coin: str) -> list[PriceSource]:
        """The venue's own series: its perp first, then its spot proxies (`same_venue`)."""
        v = self.venues[venue]
        out = [PriceSource(venue, v["lake_market"], v["symbol_format"].format(coin=coin))]
        for ref in v.get("same_venue", []):
            out.append(PriceSource(ref["venue"], ref["market"], ref["symbol_format"].format(coin=coin)))
        return out

    def sources(self, venue: str, coin: str) -> list[PriceSource]:
        """Own series first, then the reference stand-ins in order."""
        v = self.venues[venue]
        out = self.own_sources(venue, coin)
        for ref in v.get("reference", []):
            out.append(PriceSource(ref["venue"], ref["market"], ref["symbol_format"].format(coin=coin)))
        return out

    def default_oi_coin(self, venue: str, coin: str, window_id: str) -> tuple[float, str]:
        m = self.markets.get(coin)
        if m is None:
            raise KeyError(f"no scenario defaults for market {coin!r}")
        bin_oi = m.get("binance_oi_coin", {}).get(window_id)
        if venue == "binance":
            if bin_oi is None:
                raise KeyError(f"no default Binance OI for {coin} in window {window_id}")
            return float(bin_oi), f"default: {m['binance_oi_source']}"
        if "ftx_oi_coin" in m:
            return float(m["ftx_oi_coin"]), f"default: {m['ftx_oi_source']}"
        if bin_oi is None:
            raise KeyError(f"no default FTX OI for {coin} in window {window_id}")
        return float(bin_oi) * float(m["ftx_oi_ratio_to_binance"]), f"default: {m['ftx_oi_source']}"

    def default_adv(self, venue: str, coin: str) -> tuple[float | None, str]:
        m = self.markets.get(coin, {})
        if venue == "ftx" and "ftx_adv_usd" in m:
            return float(m["ftx_adv_usd"]), f"default: {m['ftx_adv_source']}"
        return None, ""


def load_scenarios(path: Path | str | None = None) -> Scenarios:
    """Read and check a scenario file (backtest/scenario_schema.py: unknown or missing keys,
    impossible dates, end before start ... raise ScenarioError, one line, exit 2)."""
    p = Path(path) if path else SCENARIOS_FILE
    try:
        with open(p, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ScenarioError(f"scenario file {p} is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario file {p} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario file {p} cannot be read: {exc}") from None
    validate(raw, p)
    windows = tuple(
        Window(w["id"], w["label"], parse_time(p, f"window {w['id']}.start", w["start"]),
               parse_time(p, f"window {w['id']}.end", w["end"]), bool(w.get("whole_year", False)))
        for w in raw["window"]
    )
    return Scenarios(windows, raw["venue"], raw["market"], str(p))
