"""`liqreplay calibrate`: the split, the fit machinery on a synthetic simulator (whose best
parameters are known), resumability, the parameter writer, the FTX targets and run outputs."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from backtest import calibrate as C
from backtest import calibrate_metrics as M
from backtest.catalog import Catalog
from backtest.params import DEFAULT_PATH, load_params
from backtest.scenarios import load_scenarios
from fetch.lake import Lake

SC = load_scenarios()
CRASH = [w for w in SC.windows if not w.whole_year]


def test_no_window_day_is_a_training_day():
    train, valid = C.split_days(SC.windows)
    held = set().union(*[set(d) for d in valid.values()])
    assert set(valid) == {"2022-01", "2022-05", "2022-06", "2022-10", "2022-11"}
    assert not held & set(train)
    assert len(train) + len(held) == 365
    assert pd.Timestamp("2022-10-25", tz="UTC") in held and pd.Timestamp("2022-10-28", tz="UTC") in set(train)
    assert pd.Timestamp("2022-05-15", tz="UTC") in valid["2022-05"]
    assert pd.Timestamp("2022-05-16", tz="UTC") not in valid["2022-05"]  # windows end exclusive


# ------------------------------------------------------------------ a synthetic world
DAYS = pd.date_range("2022-02-01", periods=40, freq="D", tz="UTC")
TRUE = {"population.leverage_scale": 1.4, "population.notional_sigma": 1.2}


def _observed():
    rng = np.random.default_rng(3)
    rows = []
    for m in C.COINS:
        for s in M.SIDES:
            for d in DAYS:
                rows.append((d, m, s, float(rng.lognormal(15, 1.0))))
    return pd.DataFrame(rows, columns=["date", "market", "side", "observed_usd"])


class Synthetic:
    """daily reported = observed x exp(2 (scale - 1.4)) on longs and x exp(1.5 (sigma - 1.2) +
    3 (sigma - 1.2)^2) on shorts: the log-RMSE is 0 at TRUE only (inside the ranges), and no
    edge of the ranges gets there."""

    def __init__(self, obs):
        self.obs, self.calls = obs, 0

    def __call__(self, params):
        self.calls += 1
        a = float(params.get("population.leverage_scale"))
        b = float(params.get("population.notional_sigma"))
        x = b - TRUE["population.notional_sigma"]
        f_long = math.exp(2.0 * (a - TRUE["population.leverage_scale"]))
        f_short = math.exp(1.5 * x + 3.0 * x * x)
        d = self.obs.rename(columns={"observed_usd": "reported_usd"}).copy()
        d["reported_usd"] *= np.where(d["side"] == "long", f_long, f_short)
        d["liquidated_usd"] = d["reported_usd"] * 2
        d["window"], d["venue"], d["oi_usd"] = "2022-year", "binance", np.nan
        return d[C.DAILY_COLUMNS]


@pytest.mark.parametrize("method", ["powell", "de"])
def test_fit_recovers_the_known_parameters(method):
    obs = _observed()
    sim = Synthetic(obs)
    params = load_params()
    res = C.fit(sim, params, list(TRUE) + ["population.no_such_key"], C.binance_objective(obs, DAYS),
                method=method, max_evals=150, seed=1, progress=False)
    assert res.skipped == ["population.no_such_key"]
    assert res.objective < 0.05 < res.objective_start
    for k, v in TRUE.items():
        assert res.fitted[k] == pytest.approx(v, abs=0.05)


def test_fit_is_repeatable_and_resumes_from_its_cache(tmp_path):
    obs = _observed()
    params = load_params()
    a = C.fit(Synthetic(obs), params, list(TRUE), C.binance_objective(obs, DAYS), max_evals=40,
              cache=C.EvalCache(tmp_path / "evals.jsonl", "x"), progress=False)
    sim = Synthetic(obs)
    b = C.fit(sim, params, list(TRUE), C.binance_objective(obs, DAYS), max_evals=40,
              cache=C.EvalCache(tmp_path / "evals.jsonl", "x"), progress=False)
    assert a.fitted == b.fitted and a.objective == b.objective
    assert sim.calls == 0  # every evaluation came from the first run's cache
    c = C.fit(Synthetic(obs), params, list(TRUE), C.binance_objective(obs, DAYS), max_evals=40, progress=False)
    assert c.fitted == a.fitted  # without the cache too: the objective is deterministic


def test_space_maps_ranges_and_log_scales_wide_ones():
    params = load_params()
    sp = C.Space.from_params(params, ["population.leverage_scale", "population.binance_isolated_share"])
    assert list(sp.log) == [False, False]
    v = sp.to_values([0.0, 1.0])
    assert v == {"population.leverage_scale": 0.5, "population.binance_isolated_share": 0.8}
    assert sp.to_unit(v) == pytest.approx([0.0, 1.0])
    sp2 = C.Space.from_params(params, ["ftx.blp.capacity_per_minute_usd"])
    lo, hi = params.sweep_ranges()["ftx.blp.capacity_per_minute_usd"]
    if hi / lo > 4:
        mid = sp2.to_values([0.5])["ftx.blp.capacity_per_minute_usd"]
        assert sp2.log[0] and mid == pytest.approx(math.sqrt(lo * hi))


def test_params_are_written_in_place_with_provenance(tmp_path):
    p = tmp_path / "params.toml"
    shutil.copy(DEFAULT_PATH, p)
    before = p.read_text().splitlines()
    C.write_params_inplace(p, {"population.leverage_scale": 1.234567891},
                           {"population.leverage_scale": 'liqreplay calibrate 2026-11-30: "fitted"'})
    after = p.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(before) == len(after) and len(changed) == 2
    got = load_params(p)
    assert got.get("population.leverage_scale") == pytest.approx(1.234568)
    assert got.source("population.leverage_scale").startswith("liqreplay calibrate")
    assert got.sweep_ranges()["population.leverage_scale"] == (0.5, 2.0)  # range kept
    with pytest.raises(KeyError):
        C.write_params_inplace(p, {"population.nope": 1.0}, {"population.nope": "x"})
    out = tmp_path / "fitted.toml"
    C.write_params_file(out, {"population.notional_sigma": 1.7}, {"population.notional_sigma": "fit"}, load_params())
    assert load_params(out).get("population.notional_sigma") == 1.7


def test_published_targets_scaled_by_binance_coin_share(tmp_path):
    csv = tmp_path / "calibration.csv"
    csv.write_text(
        "date_from,date_to,venue,scope,metric,value,unit,source,note\n"
        "2022-05-12,2022-05-12,ftx,all markets,liquidated_24h,100000000,USD,a,\n"
        "2022-10-25,2022-10-26,ftx,all markets,liquidated_24h,600000000,USD,b,\n"
        "2022-10-25,2022-10-26,ftx,all markets,liquidated_shorts_24h,500000000,USD,b,\n"
        "2022-10-25,2022-10-26,binance,all markets,liquidated_24h,45000000,USD,b,\n"
        "2022-10-25,2022-10-26,ftx,all perps,open_interest_change,-0.34,fraction,c,\n")
    rows = C.read_published(csv)
    assert [(r["date_from"], r["total_usd"], r["shorts_usd"]) for r in rows] == [
        ("2022-05-12", 1e8, None), ("2022-10-25", 6e8, 5e8)]
    tg = C.published_targets(rows, lambda days: 0.5)
    assert [t.target_usd for t in tg] == [5e7, 3e8] and len(tg[1].days) == 2
    # a model that matches every scaled figure (mean of the two days for the 24 h) scores 0
    daily = pd.DataFrame({"window": "w", "venue": "ftx", "market": "BTC",
                          "date": pd.to_datetime(["2022-05-12", "2022-10-25", "2022-10-25", "2022-10-26"], utc=True),
                          "side": ["long", "short", "long", "short"],
                          "liquidated_usd": [5e7, 3e8, 1e8, 2e8], "reported_usd": 0.0, "oi_usd": np.nan})
    assert C.ftx_objective(tg)(daily) == pytest.approx(0.0, abs=1e-12)
    scaled = daily.assign(liquidated_usd=daily.liquidated_usd * math.e)
    assert C.ftx_objective(tg)(scaled) == pytest.approx(1.0, abs=1e-3)
    obs = pd.DataFrame({"date": pd.to_datetime(["2022-10-25", "2022-10-26"], utc=True), "market": "BTC",
                        "side": "short", "observed_usd": [10e6, 20e6]})
    bdaily = pd.concat([daily, daily.assign(venue="binance", reported_usd=1e7, liquidated_usd=0.0)])
    r = C.ftx_ratios(bdaily, tg, obs)[1]
    assert r["model_ftx_usd"] == pytest.approx(3e8) and r["coinalyze_binance_usd"] == pytest.approx(15e6)
    assert r["published_ftx_over_coinalyze"] == pytest.approx(20.0)
    assert r["model_ftx_short_share"] == pytest.approx(250 / 300)
    over, lines = C.oct25_scenario([{**r, "model_ftx_usd": 1e8}], load_params(), C.FTX_FIT_KEYS)
    assert "x3.0" in lines[1]


def _lake_with_liquidations(tmp_path):
    lk = Lake(tmp_path / "lake")
    days = list(pd.date_range("2022-01-18", "2022-01-28", freq="D", tz="UTC"))
    rows = []
    for d in days:
        for sym, px in (("BTCUSDT", 40000.0), ("ETHUSDT", 3000.0), ("SOLUSDT", 100.0)):
            rows += [(sym, d, "long", 10.0, px), (sym, d, "short", 5.0, px)]
    df = pd.DataFrame(rows, columns=["symbol", "ts", "side", "qty", "price"])
    lk.write("liquidations", df.assign(venue="binance", market="perp", timeframe="1d", source="coinalyze"), source="t")
    return lk


def test_binance_coin_share_from_the_lake(tmp_path):
    cat = Catalog(_lake_with_liquidations(tmp_path).root)
    share = C.binance_coin_share(cat, [pd.Timestamp("2022-01-20").date()])
    assert share == pytest.approx(430000 / 431000)


def test_run_outputs_for_the_report(tmp_path):
    cat = Catalog(_lake_with_liquidations(tmp_path).root)
    jan = SC.window("2022-01")
    daily = pd.DataFrame({"window": "2022-01", "venue": "binance", "market": "BTC",
                          "date": pd.date_range("2022-01-20", periods=6, tz="UTC"), "side": "long",
                          "liquidated_usd": 1e6, "reported_usd": 400000.0, "oi_usd": 1e9})
    out = tmp_path / "run"
    out.mkdir()
    cal = C.write_run_calibration(out, catalog=cat, daily=daily, windows=[jan])
    obs = pd.read_parquet(out / "observed_daily.parquet")
    assert set(obs["market"]) == {"BTC", "ETH"} and obs["held_out"].all()
    assert len(obs) == 6 * 2 * 2 and obs["date"].min() == pd.Timestamp("2022-01-20", tz="UTC")
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["kind"] == "run" and saved["validation"]["held_out"] is True
    v = saved["validation"]["by_market_side"]
    btc_long = next(r for r in v if r["market"] == "BTC" and r["side"] == "long")
    assert btc_long["log_rmse"] == pytest.approx(0.0)  # 400k model vs 10 BTC x 40,000
    assert saved["validation"]["overall"]["zero_share"] == pytest.approx(18 / 24)
    assert saved["year"] is None and cal["validation"]["overall"]["day_sides"] == 24


def test_cli_without_a_lake_is_one_line_and_exit_2(tmp_path, capsys):
    from backtest.console import main
    rc = main(["calibrate", "--lake", str(tmp_path / "none"), "--no-write", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "liqreplay import" in err[0]
    assert not (tmp_path / "o").exists()


def test_daily_from_events_v1_flag_and_v2_reported_usd():
    ev = pd.DataFrame({"ts": pd.to_datetime(["2022-05-09 10:00", "2022-05-09 10:00", "2022-05-10 01:00"], utc=True),
                       "side": np.array([1, 1, -1], np.int8), "notional_usd": [100.0, 50.0, 30.0],
                       "reported": [True, False, True]})
    d = C.daily_from_events(ev, "2022-05", "binance", "BTC").set_index(["date", "side"])
    assert d.loc[(pd.Timestamp("2022-05-09", tz="UTC"), "long"), "liquidated_usd"] == 150.0
    assert d.loc[(pd.Timestamp("2022-05-09", tz="UTC"), "long"), "reported_usd"] == 100.0
    assert d.loc[(pd.Timestamp("2022-05-10", tz="UTC"), "short"), "reported_usd"] == 30.0
    d2 = C.daily_from_events(ev.assign(reported_usd=[7.0, 8.0, 9.0]), "2022-05", "binance", "BTC")
    assert sorted(d2["reported_usd"]) == [9.0, 15.0]
    assert list(d2.columns) == C.DAILY_COLUMNS


def test_oct25_scenario_scales_the_ftx_oi_ratio_keys_when_the_file_has_them():
    from backtest.params import Params
    base = load_params()
    leaves = dict(base._leaves)
    for coin, v in (("BTC", 0.75), ("ETH", 0.88)):
        leaves[f"ftx.oi_ratio_to_binance.{coin}"] = {"value": v, "range": [0.4, 1.2], "source": "test"}
    params = Params(leaves)
    row = {"days": ["2022-10-25", "2022-10-26"], "published_ftx_all_usd": 618e6, "binance_coin_share": 0.5,
           "published_ftx_coins_usd": 309e6, "model_ftx_usd": 103e6, "model_binance_reported_usd": 20e6,
           "coinalyze_binance_usd": 17e6, "model_ftx_over_binance": 5.15, "published_ftx_over_coinalyze": 18.2,
           "published_short_share": 0.84, "model_ftx_short_share": 0.5}
    over, lines = C.oct25_scenario([row], params, C.FTX_FIT_KEYS)
    assert over["ftx.oi_ratio_to_binance.BTC"] == pytest.approx(2.25)
    assert over["ftx.oi_ratio_to_binance.ETH"] == pytest.approx(2.64)
    assert over["population.long_share"] == 0.4  # the short-share gap: a more crowded short book
    assert any("x3.0" in ln for ln in lines) and any("0.84" in ln for ln in lines)
    assert C.oct25_scenario([], params, C.FTX_FIT_KEYS)[0] == {}


def test_calibrate_end_to_end_on_a_small_lake_and_synthetic_simulators(tmp_path):
    """The command's library path: both stages, validation, outputs, params written with
    provenance, the Oct 25-26 file. Simulators are synthetic (the fit machinery is the test)."""
    lk = Lake(tmp_path / "lake")
    rng = np.random.default_rng(5)
    days = list(pd.date_range("2022-05-01", "2022-05-20", tz="UTC")) + \
        list(pd.date_range("2022-10-20", "2022-10-30", tz="UTC"))
    rows = []
    for d in days:
        for sym, px in (("BTCUSDT", 30000.0), ("ETHUSDT", 2000.0), ("SOLUSDT", 50.0)):
            for side in ("long", "short"):
                rows.append((sym, d, side, float(rng.lognormal(5, 0.8)) * (30 if sym == "ETHUSDT" else 1), px))
    lk.write("liquidations", pd.DataFrame(rows, columns=["symbol", "ts", "side", "qty", "price"]).assign(
        venue="binance", market="perp", timeframe="1d", source="coinalyze"), source="t")
    cat = Catalog(lk.root)
    obs = C.observed_daily(cat, pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2023-01-01", tz="UTC"))

    def binance_daily(params, window):
        f = math.exp(2.0 * (float(params.get("population.leverage_scale")) - 1.4))
        d = obs.rename(columns={"observed_usd": "reported_usd"}).assign(
            window=window, venue="binance", oi_usd=np.nan)
        d["reported_usd"] *= f
        d["liquidated_usd"] = d["reported_usd"]
        return d[C.DAILY_COLUMNS]

    def ftx_daily(params):
        g = math.exp(3.0 * (float(params.get("population.ftx_collateral_share.USD")) - 0.45))
        d = obs.assign(window="w", venue="ftx", oi_usd=np.nan)
        d["liquidated_usd"] = d["observed_usd"] * 20 * g
        d["reported_usd"] = d["liquidated_usd"]
        return d[C.DAILY_COLUMNS]

    csv = tmp_path / "calibration.csv"
    csv.write_text("date_from,date_to,venue,scope,metric,value,unit,source,note\n"
                   "2022-10-25,2022-10-26,ftx,all markets,liquidated_24h,618390000,USD,coinshots,\n")
    pfile = tmp_path / "params.toml"
    shutil.copy(DEFAULT_PATH, pfile)
    params = load_params(pfile)
    opts = C.CalibrateOptions(out=tmp_path / "out", params_path=str(pfile), oct25_out=str(tmp_path / "oct25.toml"),
                              keys=("population.leverage_scale",), max_evals=40, ftx_evals=30, progress=False,
                              calibration_csv=csv)
    said = []
    cal = C.calibrate(cat, SC, params, opts, say=said.append,
                      train_sim=lambda p: binance_daily(p, "2022-year"),
                      valid_sim=lambda p: pd.concat([binance_daily(p, "2022-05"), ftx_daily(p)]),
                      ftx_sim=ftx_daily)
    assert cal["fit"]["fitted"]["population.leverage_scale"] == pytest.approx(1.4, abs=0.02)
    assert cal["training"]["overall"]["log_rmse"] < 0.05
    assert set(cal["training_days"]).isdisjoint(set().union(*map(set, cal["validation_days"].values())))
    # stage 2 fits the FTX USD collateral share so the model meets the scaled published total
    r = cal["ftx_ratios"][0]
    assert r["model_over_published"] == pytest.approx(1.0, rel=0.15)
    written = load_params(pfile)
    assert written.get("population.leverage_scale") == pytest.approx(1.4, abs=0.02)
    src = written.source("population.leverage_scale")
    assert cat.snapshot_id() in src and "training days" in src and "objective" in src
    assert "ftx stage" in written.source("population.ftx_collateral_share.USD")
    out = tmp_path / "out"
    assert json.loads((out / "calibration.json").read_text())["validation"]["held_out"] is True
    comp = pd.read_parquet(out / "compared.parquet")
    assert set(comp["set"]) == {"training", "validation"}
    assert (tmp_path / "oct25.toml").read_text().startswith("# What it would take")
    text = "\n".join(said)
    assert "target <= 1.0" in text and "Oct 25-26" in text
    # seeded and cached: a second run (after the values were written) gives the same answer
    cal2 = C.calibrate(cat, SC, load_params(pfile), C.CalibrateOptions(**{**opts.__dict__, "write_params": False}),
                       say=lambda s: None, train_sim=lambda p: binance_daily(p, "2022-year"),
                       valid_sim=lambda p: pd.concat([binance_daily(p, "2022-05"), ftx_daily(p)]), ftx_sim=ftx_daily)
    assert cal2["fit"]["fitted"] == cal["fit"]["fitted"]
