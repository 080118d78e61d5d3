"""`liqreplay data status` per window: which series each window would run on, how much of
the window they cover, what is missing and the command that fetches it.

The data stage prints the lake's full table (`data status --all`); this view needs the
scenario windows, so it lives in the backtest stage and the console hands it to the data
stage's command (backtest/console.py). Lines fit 100 columns.
"""
from __future__ import annotations

from pathlib import Path

from backtest.catalog import Catalog
from backtest.params import load_params
from backtest.scenarios import COINS, DataUnavailable, load_scenarios
from backtest.series_loader import SeriesLoader

WIDTH = 100


def _fetch_hint(venue: str, symbol: str, start, end) -> str:
    rng = f"{start:%Y%m%d}-{end:%Y%m%d}"
    if venue == "binance":
        return f"liqreplay fetch {symbol} -t 1m --timerange {rng}"
    return f"no source serves {venue} bars any more: import them (liqreplay import DIR)"


def window_view(lake_root: Path | str, *, venues=None, symbols=None, scenarios_file=None) -> str:
    """The per-window text (see the module docstring); `venues`/`symbols` filter (a symbol
    matches its coin, e.g. BTC, or the venue's own symbol, e.g. BTCUSDT)."""
    sc = load_scenarios(scenarios_file)
    cat = Catalog(lake_root)
    loader = SeriesLoader(cat, sc, params=load_params())  # a command: it reads the parameter file
    want_sym = {s.upper() for s in symbols} if symbols else None
    lines: list[str] = []
    for w in sc.windows:
        lines.append(f"{w.id:<10} {w.label} [{w.start:%Y-%m-%d}, {w.end:%Y-%m-%d})"[:WIDTH])
        for venue in sc.venues:
            if venues and venue not in venues:
                continue
            for coin in (c for c in COINS if c in sc.markets):
                own = sc.symbol(venue, coin)
                if want_sym and coin not in want_sym and own.upper() not in want_sym:
                    continue
                head = f"  {venue:<8} {coin:<4} "
                try:
                    src, tf, rows, cov = loader.choose_source(w, venue, coin)
                except DataUnavailable:
                    lines.append(f"{head}MISSING: no usable bars for {own}")
                    lines.append(f"{'':<16}fetch: {_fetch_hint(venue, own, w.start, w.end)}"[:WIDTH])
                    continue
                lake_market = sc.venues[venue]["lake_market"]
                substituted = (src.venue, src.market) != (venue, lake_market) or src.symbol != own
                kind = "own" if not substituted else ("proxy" if src.venue == venue else "substituted")
                lines.append(f"{head}{src.label():<26} {tf:>3} {rows:>7} bars {min(cov, 1.0):>7.1%}  {kind}"[:WIDTH])
                if cov < 0.999:
                    lines.append(f"{'':<16}missing {1 - min(cov, 1.0):.1%}; fetch: "
                                 f"{_fetch_hint(src.venue, src.symbol, w.start, w.end)}"[:WIDTH])
    lines.append("")
    lines.append("own: the venue's perp; proxy: its own spot bars; substituted: another venue's "
                 "bars stand in")
    lines.append("the full table of every series: liqreplay data status --all")
    return "\n".join(lines)
