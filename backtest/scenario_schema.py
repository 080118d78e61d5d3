"""What a scenario file (backtest/scenarios.toml) may hold, checked when it is read.

Like params.toml: unknown keys are errors naming the key, missing keys too, and each value
is checked (dates that exist, end after start, symbol formats with `{coin}`, positive
numbers). `validate(raw, path)` raises ScenarioError (a UserError: one line, exit 2).
New keys are added to the tables below.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pandas as pd

from fetch.errors import UserError


class ScenarioError(UserError, ValueError):
    """A bad scenario file; the message names the file, the entry and the fix."""


TOP = {"window", "venue", "market"}
WINDOW_REQUIRED = {"id", "label", "start", "end"}
WINDOW_OPTIONAL = {"whole_year"}
VENUE_REQUIRED = {"lake_market", "symbol_format"}
VENUE_OPTIONAL = {"same_venue", "reference", "reference_follows"}
REF_REQUIRED = {"venue", "market", "symbol_format"}
MARKET_TEXT = {"coin", "binance_oi_source", "ftx_oi_source", "ftx_adv_source"}
MARKET_NUMBER = {"ftx_oi_coin", "ftx_oi_ratio_to_binance", "ftx_adv_usd"}
MARKET_PER_WINDOW = {"binance_oi_coin"}
MARKETS = ("spot", "perp", "future")


def _fail(path, where: str, what: str) -> None:
    raise ScenarioError(f"scenario file {path}: {where}: {what}")


def _keys(path, where: str, table: Any, required: set, optional: set) -> None:
    if not isinstance(table, dict):
        _fail(path, where, f"expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - required - optional)
    if unknown:
        _fail(path, where, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(required | optional))})")
    missing = sorted(required - set(table))
    if missing:
        _fail(path, where, f"missing key(s) {', '.join(missing)}")


def parse_time(path, where: str, value: Any) -> pd.Timestamp:
    """A window bound: an ISO date-time string (UTC if no zone) or a TOML date/datetime."""
    if isinstance(value, (dt.datetime, dt.date)):
        t = pd.Timestamp(value)
    elif isinstance(value, str) and value.strip():
        try:
            t = pd.Timestamp(value)
        except (ValueError, OverflowError):
            _fail(path, where, f"{value!r} is not a date that exists: use YYYY-MM-DDTHH:MM:SSZ")
    else:
        _fail(path, where, f"{value!r} is empty or not a date: use YYYY-MM-DDTHH:MM:SSZ")
    if pd.isna(t):
        _fail(path, where, f"{value!r} is not a date: use YYYY-MM-DDTHH:MM:SSZ")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _text(path, where: str, v: Any) -> None:
    if not isinstance(v, str) or not v.strip():
        _fail(path, where, f"{v!r} should be a non-empty string")


def _positive(path, where: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        _fail(path, where, f"{v!r} should be a positive number")


def _ref(path, where: str, ref: Any) -> None:
    _keys(path, where, ref, REF_REQUIRED, set())
    if ref["market"] not in MARKETS:
        _fail(path, f"{where}.market", f"{ref['market']!r}: use one of {', '.join(MARKETS)}")
    _symbol_format(path, f"{where}.symbol_format", ref["symbol_format"])


def _symbol_format(path, where: str, v: Any) -> None:
    _text(path, where, v)
    if "{coin}" not in v:
        _fail(path, where, f"{v!r} must contain {{coin}}, e.g. \"{{coin}}USDT\"")


def validate(raw: dict, path) -> None:
    """Check a parsed scenario file; raise ScenarioError on the first problem."""
    _keys(path, "top level", raw, TOP, set())
    windows = raw["window"]
    if not isinstance(windows, list) or not windows:
        _fail(path, "window", "needs at least one [[window]] table")
    seen = set()
    for i, w in enumerate(windows, start=1):
        where = f"window {w.get('id', i) if isinstance(w, dict) else i}"
        _keys(path, where, w, WINDOW_REQUIRED, WINDOW_OPTIONAL)
        _text(path, f"{where}.id", w["id"])
        _text(path, f"{where}.label", w["label"])
        if w["id"] in seen:
            _fail(path, where, "the id is used twice")
        seen.add(w["id"])
        start = parse_time(path, f"{where}.start", w["start"])
        end = parse_time(path, f"{where}.end", w["end"])
        if end <= start:
            _fail(path, where, f"end {end:%Y-%m-%d %H:%M} is not after start {start:%Y-%m-%d %H:%M}")
        if "whole_year" in w and not isinstance(w["whole_year"], bool):
            _fail(path, f"{where}.whole_year", "use true or false")
    venues = raw["venue"]
    if not isinstance(venues, dict) or not venues:
        _fail(path, "venue", "needs at least one [venue.NAME] table")
    for name, v in venues.items():
        where = f"venue.{name}"
        _keys(path, where, v, VENUE_REQUIRED, VENUE_OPTIONAL)
        if v["lake_market"] not in MARKETS:
            _fail(path, f"{where}.lake_market", f"{v['lake_market']!r}: use one of {', '.join(MARKETS)}")
        _symbol_format(path, f"{where}.symbol_format", v["symbol_format"])
        for kind in ("same_venue", "reference"):
            refs = v.get(kind, [])
            if not isinstance(refs, list):
                _fail(path, f"{where}.{kind}", "should be a list of {venue, market, symbol_format} tables")
            for j, ref in enumerate(refs, start=1):
                _ref(path, f"{where}.{kind}[{j}]", ref)
        if "reference_follows" in v and v["reference_follows"] not in venues:
            _fail(path, f"{where}.reference_follows", f"{v['reference_follows']!r} is not a venue of this file")
    markets = raw["market"]
    if not isinstance(markets, dict) or not markets:
        _fail(path, "market", "needs at least one [market.COIN] table")
    for coin, m in markets.items():
        where = f"market.{coin}"
        _keys(path, where, m, set(), MARKET_TEXT | MARKET_NUMBER | MARKET_PER_WINDOW)
        for k in MARKET_TEXT & set(m):
            _text(path, f"{where}.{k}", m[k])
        for k in MARKET_NUMBER & set(m):
            _positive(path, f"{where}.{k}", m[k])
        for k in MARKET_PER_WINDOW & set(m):
            if not isinstance(m[k], dict):
                _fail(path, f"{where}.{k}", "should be a table { window id = value }")
            for wid, val in m[k].items():
                if wid not in seen:
                    _fail(path, f"{where}.{k}", f"window {wid!r} is not defined in this file")
                _positive(path, f"{where}.{k}.{wid}", val)
