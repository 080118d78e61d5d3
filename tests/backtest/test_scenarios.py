"""Scenario windows, defaults with sources, series loading (stand-ins, gaps, skips)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.bars import fill_gaps, resample_bars
from backtest.params import default_params
from backtest.scenarios import DataUnavailable, load_scenarios
from backtest.series_loader import SeriesLoader, load_window_series

TF_MIN = {"1m": 1, "15m": 15, "1h": 60, "1d": 1440}


class FakeCatalog:
    """The Catalog API (Contract 1) over in-memory bars: {(venue, market, symbol, tf): frame}."""

    def __init__(self, bars: dict, oi: dict | None = None, funding: dict | None = None):
        self._bars, self._oi, self._funding = bars, oi or {}, funding or {}

    def _sel(self, key, start, end):
        df = self._bars.get(key)
        if df is None:
            return df
        return df[(df.ts >= pd.Timestamp(start)) & (df.ts < pd.Timestamp(end))].reset_index(drop=True)

    def timeframes(self, venue, market, symbol, start, end):
        out = []
        for (v, m, s, tf) in self._bars:
            if (v, m, s) == (venue, market, symbol):
                n = len(self._sel((v, m, s, tf), start, end))
                if n:
                    out.append((tf, n))
        return sorted(out, key=lambda x: TF_MIN[x[0]])

    def bars(self, venue, market, symbol, start, end, *, timeframe=None, price_type="trade"):
        tfs = self.timeframes(venue, market, symbol, start, end)
        if timeframe is None:
            if not tfs:
                return pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume_base", "volume_quote"])
            timeframe = tfs[0][0]
        df = self._sel((venue, market, symbol, timeframe), start, end)
        if df is None:
            return pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume_base", "volume_quote"])
        return df

    def adv_usd(self, venue, market, symbol, before, days=30):
        return None

    def open_interest(self, venue, symbol, at, *, market="perp"):
        return self._oi.get((venue, symbol))

    def funding(self, venue, symbol, start, end, *, market="perp"):
        return self._funding.get((venue, symbol), pd.DataFrame(columns=["ts", "rate", "interval_hours"]))


def make_bars(start, end, tf, p0=20000.0, seed=0):
    ts = pd.date_range(start, end, freq=pd.Timedelta(minutes=TF_MIN[tf]), inclusive="left", tz="UTC")
    rng = np.random.default_rng(seed)
    c = p0 * np.exp(np.cumsum(rng.normal(0, 0.002, len(ts))))
    o = np.r_[p0, c[:-1]]
    return pd.DataFrame({"ts": ts, "open": o, "high": np.maximum(o, c) * 1.001, "low": np.minimum(o, c) * 0.999,
                         "close": c, "volume_base": np.full(len(ts), 10.0), "volume_quote": np.nan})


@pytest.fixture()
def sc():
    return load_scenarios()


def test_the_five_windows_and_the_year(sc):
    ids = [w.id for w in sc.windows]
    assert ids == ["2022-01", "2022-05", "2022-06", "2022-10", "2022-11", "2022-year"]
    w = sc.window("2022-10")
    assert w.start == pd.Timestamp("2022-10-24", tz="UTC") and w.end == pd.Timestamp("2022-10-28", tz="UTC")
    assert sc.window("2022-year").whole_year and sc.window("2022-year").days == 365
    with pytest.raises(KeyError, match="unknown window"):
        sc.window("2021-05")


def test_defaults_carry_sources(sc):
    for coin in ("BTC", "ETH"):
        for w in sc.windows:
            for venue in ("ftx", "binance"):
                oi, src = sc.default_oi_coin(venue, coin, w.id)
                assert oi > 0 and src.startswith("default: ") and len(src) > 20
    oi, src = sc.default_oi_coin("ftx", "BTC", "2022-06")
    assert oi == pytest.approx(0.25 * 298500) and "Messari" in src and "K33" in src
    assert sc.symbol("ftx", "ETH") == "ETH-PERP" and sc.symbol("binance", "ETH") == "ETHUSDT"


def test_reference_venue_stands_in_and_is_recorded(sc):
    w = sc.window("2022-10")
    cat = FakeCatalog({("binance", "perp", "BTCUSDT", "1h"): make_bars("2022-09-01", "2022-11-01", "1h")},
                      oi={("binance", "BTCUSDT"): {"ts": pd.Timestamp("2022-10-23", tz="UTC"), "oi_base": 161041.0,
                                                   "oi_usd": None, "source": "coinalyze"}})
    sds, problems = load_window_series(SeriesLoader(cat, sc, params=default_params()), w, ("ftx", "binance"), ("BTC",))
    assert problems == []
    f, b = sds[("ftx", "BTC")], sds[("binance", "BTC")]
    assert f.price_source == "substituted: binance perp BTCUSDT" and b.price_source == "own"
    assert f.timeframe == "1h" and len(f.bars) == 96
    assert b.oi_coin == 161041.0 and b.oi_source.startswith("lake: coinalyze")
    # FTX without its own OI: Binance's lake OI x ftx.oi_ratio_to_binance.BTC (issue 8 item 6), not a constant
    assert f.oi_source.startswith("lake: binance BTCUSDT") and "ftx.oi_ratio_to_binance.BTC" in f.oi_source
    assert f.oi_coin == pytest.approx(161041.0 * default_params().get("ftx.oi_ratio_to_binance.BTC"))
    assert f.adv_source.startswith("default:")          # FTX ADV from the scenario file
    assert (f.bars.volume_quote > 0).all()             # quote volume from base volume x close
    assert any("stands in" in n for n in f.notes)


def test_missing_everything_names_window_venue_market(sc):
    w = sc.window("2022-05")
    cat = FakeCatalog({("binance", "perp", "BTCUSDT", "1h"): make_bars("2022-04-01", "2022-06-01", "1h")})
    sds, problems = load_window_series(SeriesLoader(cat, sc, params=default_params()), w, ("ftx", "binance"),
                                       ("BTC", "ETH"))
    assert set(sds) == {("ftx", "BTC"), ("binance", "BTC")}
    assert len(problems) == 2
    for venue, p in zip(("ftx", "binance"), problems, strict=True):
        assert "window 2022-05" in p and f"venue {venue}" in p and "market ETH" in p and "no usable bars" in p
    with pytest.raises(DataUnavailable, match="window 2022-05, venue binance, market ETH"):
        SeriesLoader(cat, sc, params=default_params()).choose_source(w, "binance", "ETH")


def test_small_gaps_are_filled_and_reported(sc):
    w = sc.window("2022-10")
    bars = make_bars("2022-09-01", "2022-11-01", "1h")
    bars = bars.drop(index=bars.index[(bars.ts >= "2022-10-25 03:00") & (bars.ts < "2022-10-25 06:00")])
    cat = FakeCatalog({("binance", "perp", "BTCUSDT", "1h"): bars})
    sd = SeriesLoader(cat, sc, params=default_params()).load(w, "binance", "BTC")
    assert len(sd.bars) == 96 and sd.rows == 93
    assert sd.gaps_pct == pytest.approx(100 * 3 / 96)
    assert any("3 of 96 1h bars missing" in n and "window 2022-10" in n for n in sd.notes)


def test_whole_year_runs_every_series_at_the_coarsest_common_timeframe(sc):
    w = sc.window("2022-year")
    cat = FakeCatalog({
        ("binance", "perp", "BTCUSDT", "1h"): make_bars("2021-12-01", "2023-01-02", "1h"),
        ("ftx", "perp", "BTC-PERP", "1d"): make_bars("2021-12-01", "2023-01-02", "1d"),
    })
    sds, problems = load_window_series(SeriesLoader(cat, sc, params=default_params()), w, ("ftx", "binance"), ("BTC",))
    assert not problems
    assert {sd.timeframe for sd in sds.values()} == {"1d"}
    assert len(sds[("binance", "BTC")].bars) == 365 and sds[("binance", "BTC")].gaps_pct == 0


def test_partial_own_series_gives_way_to_the_reference(sc):
    w = sc.window("2022-year")
    cat = FakeCatalog({
        ("binance", "perp", "BTCUSDT", "1h"): make_bars("2021-12-01", "2023-01-02", "1h"),
        ("ftx", "perp", "BTC-PERP", "1d"): make_bars("2021-12-01", "2022-08-13", "1d"),
    })
    sds, _ = load_window_series(SeriesLoader(cat, sc, params=default_params()), w, ("ftx", "binance"), ("BTC",))
    assert sds[("ftx", "BTC")].price_source.startswith("substituted")
    assert {sd.timeframe for sd in sds.values()} == {"1h"}


def test_fill_gaps_and_resample():
    b = make_bars("2022-01-01", "2022-01-01 03:00", "1h")
    b = b.assign(volume_quote=b.volume_base * b.close).drop(index=[1])
    filled, missing = fill_gaps(b[["ts", "open", "high", "low", "close", "volume_quote"]],
                                pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2022-01-01 03:00", tz="UTC"), "1h")
    assert missing == 1 and len(filled) == 3
    assert filled.loc[1, "open"] == filled.loc[1, "close"] == b.loc[0, "close"] and filled.loc[1, "volume_quote"] == 0
    m = make_bars("2022-01-01", "2022-01-01 02:00", "1m").assign(volume_quote=1.0)
    h = resample_bars(m, "1h")
    assert len(h) == 2 and h.loc[0, "high"] == m.high[:60].max() and h.loc[1, "close"] == m.close.iloc[-1]
    assert h.loc[0, "volume_quote"] == 60.0


def test_finer_own_spot_bars_proxy_for_coarse_perp_bars(sc):
    """FTX perps are daily in the lake; FTX's own 1h spot bars give the finer mark path."""
    w = sc.window("2022-06")
    cat = FakeCatalog({
        ("ftx", "perp", "BTC-PERP", "1d"): make_bars("2022-05-01", "2022-07-01", "1d"),
        ("ftx", "spot", "BTC/USD", "1h"): make_bars("2022-05-01", "2022-07-01", "1h", seed=1),
        ("binance", "perp", "BTCUSDT", "1h"): make_bars("2022-05-01", "2022-07-01", "1h", seed=2),
    })
    loader = SeriesLoader(cat, sc, params=default_params())
    src, tf, _, _ = loader.choose_source(w, "ftx", "BTC")
    assert (src.venue, src.market, src.symbol, tf) == ("ftx", "spot", "BTC/USD", "1h")
    sd = loader.load(w, "ftx", "BTC")
    assert sd.price_source == "proxy: ftx spot BTC/USD" and sd.symbol == "BTC-PERP"
    assert any("stand in for the coarser BTC-PERP bars" in n for n in sd.notes)
    # with no finer own series, the perp's own daily bars are kept (not another venue's)
    del cat._bars[("ftx", "spot", "BTC/USD", "1h")]
    src, tf, _, _ = loader.choose_source(w, "ftx", "BTC")
    assert (src.venue, src.market, tf) == ("ftx", "perp", "1d")
