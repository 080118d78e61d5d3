"""The vectorised cohort terms (accounts.TermsSpec, used by book.build_book) give exactly the
numbers of the per-cohort reference (tests/backtest/_population_reference.py: account_terms
and build_book as they were, one call of the venue functions per cohort): bit for bit, on
synthetic books of both venues and on the real data."""
from __future__ import annotations

import numpy as np
import pytest

from backtest.params import default_params
from backtest.population import build_book
from backtest.population.accounts import TermsSpec, account_terms
from backtest.series_loader import SeriesLoader
from tests.backtest import _population_reference as ref
from tests.backtest.test_population_v2 import DAY, T0, flat_bars

FIELDS = ("side", "qty_coin", "entry_price", "leverage", "wallet_usd", "isolated", "exempt", "account_leverage",
          "open_s", "close_s", "weight", "cohort")


def assert_same_terms(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if k == "collateral":
            assert a[k].keys() == b[k].keys()
            for c in a[k]:
                np.testing.assert_array_equal(a[k][c], b[k][c], strict=True)
        elif k == "folded":
            assert list(a[k]) == list(b[k])
        else:
            np.testing.assert_array_equal(a[k], b[k], strict=True, err_msg=k)


def assert_same_book(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), strict=True, err_msg=f)
    assert a.collateral.keys() == b.collateral.keys()
    for c in a.collateral:
        np.testing.assert_array_equal(a.collateral[c], b.collateral[c], strict=True, err_msg=c)
    assert a.meta.keys() == b.meta.keys()
    for k, v in a.meta.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, b.meta[k], strict=True, err_msg=k)
        else:
            assert v == b.meta[k] or (v != v and b.meta[k] != b.meta[k]), k
    assert a.start_price == b.start_price and a.collateral_prices == b.collateral_prices


CASES = [
    ("binance", "BTCUSDT", {}),
    ("binance", "ETHUSDT", {"population.binance_legacy_share": 0.4, "population.binance_isolated_share": 0.3}),
    ("binance", "BTCUSDT", {"population.leverage_scale": 3.0, "population.leverage_low_share": 0.1}),
    ("ftx", "BTC-PERP", {}),
    ("ftx", "ETH-PERP", {"population.ftx_account_leverage": 20.0, "population.leverage_scale": 2.5}),
]


@pytest.mark.parametrize("venue,symbol,over", CASES)
@pytest.mark.parametrize("date", ["2021-06-01", "2022-01-10", "2022-06-13", "2022-11-08"])
def test_terms_equal_the_reference(venue, symbol, over, date):
    p = default_params().with_overrides(over)
    rng = np.random.default_rng(3)
    n = 300
    side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
    qty = np.exp(rng.normal(0, 3, n))            # tiny to huge positions: every bracket and size IMF
    entry = 20000.0 * np.exp(rng.normal(0, 0.3, n))
    weight = np.exp(rng.normal(0, 2, n))
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    for cp in (None, {"BTC": 21000.0, "ETH": 1500.0, "SOL": 35.0, "FTT": 22.0},
               {"BTC": 21000.0, "ETH": float("nan")}):
        for w in (None, weight):
            kw = dict(side=side, qty=qty, entry=entry, ids=ids, key=12345, date=date, params=p, collateral_prices=cp,
                      weight=w)
            assert_same_terms(account_terms(venue, symbol, **kw), ref.account_terms(venue, symbol, **kw))


def test_terms_spec_draws_are_the_keyed_draws():
    from backtest.population.accounts import keyed_uniforms, stratified_uniforms
    spec = TermsSpec("binance", "BTCUSDT", "2022-06-01", default_params())
    ids = np.arange(57, 140, dtype=np.int64)
    u = spec.draws(99, ids)
    for row, kind in enumerate(spec.STRAT_KINDS):
        np.testing.assert_array_equal(u[row], stratified_uniforms(99, kind, ids))
    for j, kind in enumerate(spec.PLAIN_KINDS):
        np.testing.assert_array_equal(u[len(spec.STRAT_KINDS) + j], keyed_uniforms(99, kind, ids))


def wavy_bars(days, vol=0.03, seed=0):
    """Hourly bars with swings large enough that accounts are liquidated and entries reset."""
    bars = flat_bars(days)
    rng = np.random.default_rng(seed)
    c = 20000.0 * np.exp(np.cumsum(rng.normal(0, vol, len(bars.ts_s))))
    o = np.r_[20000.0, c[:-1]]
    wick = np.exp(np.abs(rng.normal(0, vol, len(c))))
    return ref.BookBars(bars.ts_s, bars.dur_s, o, np.maximum(o, c) * wick, np.minimum(o, c) / wick, c, bars.vol)


@pytest.mark.parametrize("venue,symbol,over", CASES)
def test_book_equals_the_reference(venue, symbol, over):
    # 6 h cohorts: the grid this fixture was built on (an entry drawn over 6 h of wavy bars can be crossed)
    p = default_params().with_overrides({"population.holding_days": 3.0, "population.warmup_days": 15.0,
                                         "population.cohort_hours": 6.0,
                                         "population.exempt_account": venue == "ftx", **over})
    bars = wavy_bars(45)
    asof = T0 + DAY * np.arange(1, 45)
    oi = 10_000.0 * (1.0 + 0.5 * np.sin(np.arange(len(asof)) / 3.0))
    kw = dict(bars=bars, oi_asof_s=asof, oi_coin=oi, window_start_s=T0 + 25 * DAY, window_end_s=T0 + 40 * DAY,
              params=p, key=41, n_accounts=3000, collateral_prices={"ETH": 1500.0, "SOL": 30.0, "USDT": 1.0},
              long_share_asof_s=asof, long_share=0.5 + 0.1 * np.cos(np.arange(len(asof))))
    a = build_book(venue, symbol, symbol[:3], **kw)
    b = ref.build_book(venue, symbol, symbol[:3], **kw)
    assert a.meta["n_entry_reset"] > 0 and a.meta["n_prorata_closes"] > 0 and (a.meta["expected_liq_s"] < 2**62).any()
    assert_same_book(a, b)


def test_real_books_equal_the_reference(lake, monkeypatch):
    """Every series of two windows (both venues, both coins) at a swept parameter set."""
    import backtest.population as pop_pkg
    from backtest import api
    from backtest.population import build_population
    p = default_params().with_overrides({"population.leverage_scale": 1.7, "population.binance_legacy_share": 0.3,
                                         "population.holding_days": 4.0})
    sc = api.as_scenarios(None)
    loader = SeriesLoader(api.open_catalog(lake), sc, params=p,
                          lookback_days=float(p.get("population.entry_lookback_days")))
    n = 0
    for wid in ("2022-06", "2022-11"):
        lw = api.load_window(loader, sc.window(wid), ["binance", "ftx"], ["BTC", "ETH"])
        for (_v, c), sd in lw.series.items():
            cp = {**lw.cprices, c: sd.start_price}
            a = build_population(sd, p, 5, 4000, collateral_prices=cp)
            with monkeypatch.context() as m:
                m.setattr(pop_pkg, "build_book", ref.build_book)
                b = build_population(sd, p, 5, 4000, collateral_prices=cp)
            assert_same_book(a, b)
            n += 1
    assert n >= 6


@pytest.fixture(scope="module")
def lake(shared_data, tmp_path_factory):
    from fetch.lake import Lake
    from fetch.sources.local import import_dir
    root = tmp_path_factory.mktemp("lake")
    import_dir(shared_data, Lake(root), progress=False)
    return root
