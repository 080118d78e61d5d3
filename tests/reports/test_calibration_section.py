"""The report's calibration section: model vs Coinalyze per day, training and held-out days
marked, monthly year totals, the metrics with their targets; and what it says without data."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture_results import write_fixture  # noqa: E402

from reports import figures as F  # noqa: E402
from reports.inputs import load  # noqa: E402
from reports.render import render  # noqa: E402
from reports.tables import all_tables, calibration_compare  # noqa: E402


@pytest.fixture(scope="module")
def cal_dir(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("cal") / "run", with_sweep=False)


@pytest.fixture(scope="module")
def bare_dir(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("cal") / "bare", with_sweep=False, calibration=False)


def test_run_files_are_there_and_held_out_marks_every_window(cal_dir):
    obs = pd.read_parquet(cal_dir / "observed_daily.parquet")
    cal = json.loads((cal_dir / "calibration.json").read_text())
    assert cal["validation"]["held_out"] is True and cal["training"]["held_out"] is False
    assert len(cal["year"]["months"]) == 12
    # 2022-06 is skipped in this fixture, yet its days are held out of the year's training days
    jun = obs[(obs["window"] == "2022-year") & (obs["date"] == pd.Timestamp("2022-06-15", tz="UTC"))]
    assert len(jun) and jun["held_out"].all()
    assert not obs.loc[obs["date"] == pd.Timestamp("2022-03-15", tz="UTC"), "held_out"].any()


def test_compare_takes_window_days_from_window_runs_and_the_rest_from_the_year(cal_dir):
    inp = load(cal_dir)
    c = calibration_compare(inp)
    held = c[c["held_out"]]
    train = c[~c["held_out"]]
    assert set(held["window"]) == {"2022-01", "2022-05", "2022-10", "2022-11"}
    assert set(train["window"]) == {"2022-year"}
    assert not set(held["date"]) & set(train["date"])
    assert pd.Timestamp("2022-06-15", tz="UTC") not in set(train["date"])
    # the held-out rows carry the window run's own numbers, not the year run's
    d = inp.daily
    one = held.iloc[0]
    want = d[(d["window"] == one["window"]) & (d["venue"] == "binance") & (d["market"] == one["market"])
             & (d["date"] == one["date"]) & (d["side"] == one["side"])]["reported_usd"].sum()
    assert one["model_usd"] == pytest.approx(want)


def test_page_has_the_section_with_targets_figures_and_tables(cal_dir):
    inp = load(cal_dir)
    tables = all_tables(inp)
    fit = tables["calibration_fit"].frame
    assert {"held-out window days", "training days (year run)", "whole year (year run)"} <= set(fit["set"])
    overall = fit[(fit["set"] == "held-out window days") & (fit["market"] == "all")].iloc[0]
    assert np.isfinite(overall["log_rmse"]) and "log rmse" in overall["meets_targets"]
    assert len(tables["calibration_months"].frame) == 12
    page = render(inp)
    start = page.index('<section id="calibration">')
    sec = page[start:page.index('</section>', start)]
    # the report opens with it (issue 8): the first section of the page
    assert start < page.index('<section id="answer">') and page.index("<section") == start
    for fid in ("fig-cal-daily", "fig-cal-scatter", "fig-cal-months"):
        assert f'id="{fid}"' in sec
    assert "log-RMSE (with a $0.1M floor) ≤ 1.0" in sec and "0.5–2×" in sec
    assert "Not in these results" not in sec
    figs = {f["id"]: f for f in json.loads(page.split('id="report-figures">')[1].split("</script>")[0])["figures"]}
    daily = figs["fig-cal-daily"]
    assert daily["layout"]["yaxis"]["type"] == "log" and daily["layout"]["shapes"]  # held-out days shaded
    assert figs["fig-cal-scatter"]["layout"]["xaxis"]["type"] == "log"


def test_without_the_files_the_section_says_so_in_one_line_per_chart(bare_dir):
    inp = load(bare_dir)
    # write_results may write an empty daily.parquet; the run's calibration files are absent
    assert (inp.daily is None or inp.daily.empty) and inp.observed is None and inp.calibration is None
    page = render(inp)
    start = page.index('<section id="calibration">')
    sec = page[start:page.index('</section>', start)]
    assert "Not in these results: daily.parquet" in sec and "observed_daily.parquet" in sec
    fig = F.calibration_daily_figure(calibration_compare(inp), "t")
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert texts == ["no daily model or Coinalyze data in these results: nothing to compare"]
    months = F.calibration_months_figure(pd.DataFrame(columns=["month", "model_usd", "observed_usd", "ratio"]), "t")
    assert months["layout"]["annotations"][0]["text"].startswith("no whole-year run")


def test_scatter_draws_model_zeros_at_the_floor():
    c = pd.DataFrame({"market": "BTC", "date": pd.to_datetime(["2022-05-01", "2022-05-02"], utc=True),
                      "side": "long", "model_usd": [0.0, 5e6], "observed_usd": [3e6, 4e6],
                      "held_out": [True, False], "window": ["w", "y"]})
    fig = F.calibration_scatter_figure(c, "t")
    import base64
    ys = [np.frombuffer(base64.b64decode(t["y"]["bdata"]), "<f8") for t in fig["data"] if t["mode"] == "markers"]
    assert sorted(np.concatenate(ys)) == [F.CAL_FLOOR_USD, 5e6]
    spans = F._held_out_spans(c["date"], c["held_out"])
    assert len(spans) == 1 and spans[0][1] - spans[0][0] == 86_400_000
