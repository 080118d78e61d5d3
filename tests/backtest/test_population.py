"""Populations: OI per side, seeds, leverage caps by date, entry draws, collateral, survivors."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from backtest.params import default_params, load_params
from backtest.population import make_population
from backtest.venues import binance, ftx
from tests.backtest._synth import FIXTURE_POPULATION

P = default_params()  # the venue engines take their parameters explicitly

D = dt.date(2022, 6, 13)


@pytest.fixture(scope="module")
def params():
    return load_params(overrides={**FIXTURE_POPULATION, "population.n_accounts": 5_000})


@pytest.fixture(scope="module")
def bars():
    rng = np.random.default_rng(0)
    close = np.linspace(30_000, 22_000, 400)
    vol = rng.uniform(1e6, 5e6, 400)
    vol[:100] = 0.0  # these bars must never be drawn
    return pd.DataFrame({"close": close, "volume_quote": vol})


def _pop(venue, symbol, params, bars, seed=1, **kw):
    return make_population(venue, symbol, oi_usd=1e9, entry_bars=bars, date=kw.pop("date", D), params=params,
                           rng=np.random.default_rng(seed), start_price=22_000.0,
                           collateral_prices={"FTT": 25.0, "ETH": 1_200.0, "SOL": 30.0}, **kw)


@pytest.mark.parametrize("venue,symbol", [("ftx", "BTC-PERP"), ("binance", "BTCUSDT")])
def test_oi_each_side_and_reproducible(params, bars, venue, symbol):
    p = _pop(venue, symbol, params, bars)
    n = p.notional_usd(22_000.0)
    assert n[p.side == 1].sum() == pytest.approx(1e9) and n[p.side == -1].sum() == pytest.approx(1e9)
    assert len(p) == 5_000 and (p.side == 1).sum() == 2_500
    q = _pop(venue, symbol, params, bars)
    assert np.array_equal(p.qty_coin, q.qty_coin) and np.array_equal(p.entry_price, q.entry_price)
    r = _pop(venue, symbol, params, bars, seed=2)
    assert not np.array_equal(p.qty_coin, r.qty_coin)
    assert np.all(p.qty_coin > 0) and np.all(p.wallet_usd > 0)
    # lognormal sigma 1.5: heavy right tail
    assert np.median(n) < n.mean() / 2


def test_entry_prices_volume_weighted(params, bars):
    p = _pop("binance", "BTCUSDT", params, bars)
    drawn = set(np.round(p.entry_price, 6))
    allowed = set(np.round(bars["close"].to_numpy()[100:], 6))
    assert drawn <= allowed  # zero-volume bars never drawn
    assert len(drawn) > 100


def test_leverage_mix_and_caps_by_date(params, bars):
    p = _pop("ftx", "BTC-PERP", params, bars)
    assert p.leverage.max() <= 20 and p.leverage.min() >= 1
    assert np.mean(p.leverage <= 5) > 0.8 and p.leverage.max() > 15
    ftx.check_leverage(p.leverage, D, params=P)
    old = _pop("ftx", "BTC-PERP", params, bars, date=dt.date(2021, 6, 1))
    assert old.leverage.max() > 20 and old.leverage.max() <= 101
    b = _pop("binance", "BTCUSDT", params, bars)
    cap = binance.max_leverage("BTCUSDT", D, b.qty_coin * b.entry_price, params=P)
    assert np.all(b.leverage <= cap + 1e-9)
    scaled = _pop("binance", "BTCUSDT", params.with_overrides({"population.leverage_scale": 2.0}), bars)
    assert scaled.leverage.mean() > b.leverage.mean() * 1.3


def test_no_account_starts_past_its_trigger(params, bars):
    b = _pop("binance", "BTCUSDT", params, bars)
    br = binance.brackets_for("BTCUSDT", D, params=P)
    assert not np.any(binance.is_liquidatable(b.side, b.qty_coin, b.entry_price, b.wallet_usd, 22_000.0, br))
    assert b.meta["n_topped_up"] > 0  # entries at 30k with high leverage had to be topped up
    f = _pop("ftx", "BTC-PERP", params, bars)
    tav, mf = ftx.account_tav_mf(f.side, f.qty_coin, f.entry_price, 22_000.0, f.wallet_usd,
                                 f.collateral_value_usd(params=params))
    _, mmf, _ = ftx.margin_thresholds(f.account_leverage, 0.002, f.qty_coin, params=P)
    assert np.all(mf >= mmf - 1e-12)


def test_ftx_collateral_mix(params, bars):
    f = _pop("ftx", "BTC-PERP", params, bars)
    assert set(f.collateral) == {"BTC", "ETH", "FTT", "SOL"}
    margin = f.qty_coin * f.entry_price / f.leverage
    w, _, fac = ftx.collateral_weights("FTT", params=P)
    v = np.asarray(ftx.collateral_value(f.collateral["FTT"], 25.0, w, fac))
    # FTT's share of the margin at its weighted value (top-ups go to the USD balance only); the
    # shares are normalised to sum to 1
    sh = dict(params.population.ftx_collateral_share)
    total = sum(sh.values())
    assert v == pytest.approx(sh["FTT"] / total * margin, rel=1e-9)
    big = f.collateral["FTT"] > 1e5  # the size haircut bites: more coins than value/(price*0.95)
    if big.any():
        assert np.all(f.collateral["FTT"][big] * 25.0 * 0.95 > v[big])
    assert np.all(f.wallet_usd >= sh["USD"] / total * margin * (1 - 1e-12))  # the USD share at least
    assert f.account_leverage.min() >= 1 and np.all(f.account_leverage >= f.leverage - 1e-12)
    assert not f.isolated.any()
    # a coin without a price folds into USD
    g = make_population("ftx", "BTC-PERP", oi_usd=1e9, entry_bars=bars, date=D, params=params,
                        rng=np.random.default_rng(1), start_price=22_000.0)
    assert set(g.collateral) == {"BTC"} and set(g.meta["collateral_folded_to_usd"]) == {"ETH", "FTT", "SOL"}


def test_binance_isolated_share_and_cross_wallets(params, bars):
    b = _pop("binance", "BTCUSDT", params, bars)
    assert 0.45 < b.isolated.mean() < 0.55
    margin = b.qty_coin * b.entry_price / b.leverage
    fresh = b.wallet_usd <= margin * 1.5 + 1e-6
    assert np.allclose(b.wallet_usd[b.isolated & fresh], margin[b.isolated & fresh])


def test_exempt_account(params, bars):
    p = params.with_overrides({"population.exempt_account": True, "population.exempt_notional_share": 0.1})
    f = _pop("ftx", "BTC-PERP", p, bars)
    assert len(f) == 5_001 and f.exempt.sum() == 1 and f.exempt[-1]
    n = f.notional_usd(22_000.0)
    assert n[-1] == pytest.approx(1e8) and f.side[-1] == 1
    assert n[f.side == 1].sum() == pytest.approx(1e9) and n[f.side == -1].sum() == pytest.approx(1e9)


def test_bad_input(params, bars):
    with pytest.raises(ValueError, match="oi_usd"):
        make_population("ftx", "BTC-PERP", oi_usd=0, entry_bars=bars, date=D, params=params,
                        rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty"):
        make_population("ftx", "BTC-PERP", oi_usd=1e9, entry_bars=bars.iloc[:0], date=D, params=params,
                        rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="venue"):
        make_population("okx", "BTC-PERP", oi_usd=1e9, entry_bars=bars, date=D, params=params,
                        rng=np.random.default_rng(0))
    zero = bars.assign(close=0.0)
    with pytest.raises(ValueError, match="close"):
        make_population("ftx", "BTC-PERP", oi_usd=1e9, entry_bars=zero, date=D, params=params,
                        rng=np.random.default_rng(0))
    nofb = params.with_overrides({"binance.brackets.generic_fallback": False})
    with pytest.raises(binance.BracketError):
        make_population("binance", "DOGEUSDT", oi_usd=1e9, entry_bars=bars, date=D, params=nofb,
                        rng=np.random.default_rng(0))


def test_entry_lookback_trims_older_bars(params):
    ts = pd.date_range("2022-05-01", periods=30 * 24, freq="1h", tz="UTC")
    close = np.where(ts < ts.max() - pd.Timedelta(days=14), 50_000.0, 30_000.0)
    frame = pd.DataFrame({"ts": ts, "close": close, "volume_quote": 1e6})
    p = make_population("binance", "BTCUSDT", oi_usd=1e9, entry_bars=frame, date=D, params=params,
                        rng=np.random.default_rng(0), start_price=30_000.0)
    assert np.all(p.entry_price == 30_000.0)
    longer = params.with_overrides({"population.entry_lookback_days": 30})
    p = make_population("binance", "BTCUSDT", oi_usd=1e9, entry_bars=frame, date=D, params=longer,
                        rng=np.random.default_rng(0), start_price=30_000.0)
    assert np.any(p.entry_price == 50_000.0)


def test_long_share_keyword(params, bars):
    p = make_population("ftx", "BTC-PERP", oi_usd=1e9, entry_bars=bars, date=D, params=params,
                        rng=np.random.default_rng(0), start_price=22_000.0, long_share=0.7)
    assert (p.side == 1).sum() == 3_500
    n = p.notional_usd(22_000.0)
    assert n[p.side == 1].sum() == pytest.approx(n[p.side == -1].sum())


def test_collateral_balance_inverts_ftx_valuation():
    from backtest.population import _balance_for_value
    # MODEL.md 3.2 backwards: $2,089,604.52 of FTT at $22 is 100,000 FTT (haircut binds)
    b = _balance_for_value(np.array([2_089_604.5160201294, 1_000.0]), 22.0, 0.95, 0.0005, 1.1)
    assert b[0] == pytest.approx(100_000, rel=1e-12)
    assert b[1] == pytest.approx(1_000 / (22 * 0.95), rel=1e-12)  # small: the plain weight binds
    v = np.logspace(0, 10, 50)
    back = ftx.collateral_value(_balance_for_value(v, 25.0, 0.95, 0.0005, 1.1), 25.0, 0.95, 0.0005)
    assert np.allclose(back, v, rtol=1e-10)


def test_large_positions_respect_size_imf_and_start_solvent(bars):
    # few accounts, huge OI: positions of thousands of BTC, where IMF's size term binds
    p = load_params(overrides={"population.n_accounts": 50, "population.leverage_scale": 2.0})
    f = make_population("ftx", "BTC-PERP", oi_usd=5e9, entry_bars=bars, date=D, params=p,
                        rng=np.random.default_rng(3), start_price=22_000.0)
    assert f.qty_coin.max() > 5_000
    imf, mmf, _ = ftx.margin_thresholds(f.account_leverage, 0.002, f.qty_coin, params=P)
    assert np.all(f.leverage <= 1 / (0.002 * np.sqrt(f.qty_coin)) + 1e-9)
    _, mf = ftx.account_tav_mf(f.side, f.qty_coin, f.entry_price, 22_000.0, f.wallet_usd,
                               f.collateral_value_usd(params=p))
    assert np.all(mf >= mmf - 1e-12)
    b = make_population("binance", "BTCUSDT", oi_usd=5e9, entry_bars=bars, date=D, params=p,
                        rng=np.random.default_rng(3), start_price=22_000.0)
    br = binance.brackets_for("BTCUSDT", D, params=P)
    assert not np.any(binance.is_liquidatable(b.side, b.qty_coin, b.entry_price, b.wallet_usd, 22_000.0, br))
