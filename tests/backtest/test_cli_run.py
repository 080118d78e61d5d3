"""End to end: `liqreplay run` on a small lake imported from real shared-data files."""
from __future__ import annotations

import pandas as pd
import pytest

from backtest.console import main
from backtest.results import load_results
from backtest.scenarios import SCENARIOS_FILE


@pytest.fixture()
def scenarios_with_empty_window(tmp_path):
    """The shipped windows plus one in 2019, where the lake has nothing."""
    text = SCENARIOS_FILE.read_text() + '''
[[window]]
id = "2019-06"
label = "nothing in the lake"
start = "2019-06-01T00:00:00Z"
end = "2019-06-03T00:00:00Z"
'''
    p = tmp_path / "scen.toml"
    p.write_text(text)
    return p


def test_run_writes_results_and_skips_a_window_without_data(small_lake, scenarios_with_empty_window, tmp_path, capsys):
    out = tmp_path / "run1"
    argv = ["run", "--window", "2022-10", "--window", "2019-06", "--market", "BTC", "--accounts", "3000",
            "--seed", "5", "--lake", str(small_lake), "--out", str(out),
            "--scenarios", str(scenarios_with_empty_window)]
    assert main(argv) == 0
    err = capsys.readouterr()
    res = load_results(out)
    s = res.summary
    assert s["seed"] == 5 and s["params_hash"] and s["data_snapshot"]
    wins = {w["id"]: w for w in s["windows"]}
    assert wins["2022-10"]["status"] == "ran"
    assert wins["2019-06"]["status"] == "skipped"
    assert "window 2019-06" in wins["2019-06"]["reason"] and "venue ftx" in wins["2019-06"]["reason"]
    assert "window 2019-06 skipped" in err.err
    rows = res.rows.set_index("venue")
    assert rows.loc["ftx", "price_source"] == "substituted: binance perp BTCUSDT"
    assert rows.loc["binance", "price_source"] == "own"
    assert rows.loc["binance", "oi_source"].startswith("lake:")
    assert "ftx.oi_ratio_to_binance.BTC" in rows.loc["ftx", "oi_source"]     # Binance's lake OI x the ratio
    assert rows.loc["binance", "funding_prints"] == 12      # 4 days x 3 settlements
    for col in ("liquidated_usd", "reported_liquidated_usd", "blp_takeover_usd", "blp_pnl_usd", "fund_min_usd",
                "fund_end_usd", "adl_usd", "house_loss_usd", "user_loss_usd", "open_interest_usd",
                "house_loss_usd_per_1b_oi"):
        assert col in res.rows.columns
    assert (res.rows.liquidated_usd > 0).all()
    assert set(res.series.venue) == {"ftx", "binance"} and len(res.series) == 2 * 96
    assert len(res.events) == int(res.rows.events.sum())
    # daily.parquet: every day x side of each series; sums are the rows' totals; Binance OI from the model
    d = res.daily
    assert list(d.columns) == ["window", "venue", "market", "date", "side", "liquidated_usd", "reported_usd", "oi_usd"]
    assert str(d.date.dtype) == "datetime64[ns, UTC]" and set(d.side) == {"long", "short"}
    assert len(d) == 2 * 2 * 4                                    # 2 venues x 2 sides x 4 days
    by = d.groupby("venue")[["liquidated_usd", "reported_usd"]].sum()
    for v in ("ftx", "binance"):
        assert by.loc[v, "liquidated_usd"] == pytest.approx(rows.loc[v, "liquidated_usd"])
        assert by.loc[v, "reported_usd"] == pytest.approx(rows.loc[v, "reported_liquidated_usd"])
    assert d.oi_usd.notna().all() and (d.oi_usd > 0).all()
    for k in ("fund_income_usd", "fund_payouts_usd", "fund_drawdown_usd", "fund_time_below_start_s",
              "fund_net_payout_usd", "exempt_deficit_usd", "house_loss_gross_usd", "blp_loss_gross_usd"):
        assert k in res.rows.columns
    assert s["cross_venue"][0]["window"] == "2022-10"
    assert {c["timeframe"] for c in s["coverage"]} == {"1h"}
    assert "results:" in err.out and "skipped" in err.out

    # same parameters, seed and data: the finished window is reused, the result identical
    mtime = (out / ".parts" / "2022-10.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / ".parts" / "2022-10.json").stat().st_mtime_ns == mtime
    again = load_results(out)
    pd.testing.assert_frame_equal(again.rows, res.rows)
    # another seed recomputes
    assert main(argv[:-6] + ["--seed", "6", "--lake", str(small_lake), "--out", str(out), "--scenarios",
                             str(scenarios_with_empty_window)]) == 0
    assert load_results(out).summary["seed"] == 6
    assert (out / ".parts" / "2022-10.json").stat().st_mtime_ns != mtime


def test_run_sweep_reports_quantiles(small_lake, tmp_path):
    out = tmp_path / "sw"
    assert main(["run", "--window", "2022-10", "--market", "BTC", "--venue", "binance", "--accounts", "200",
                 "--sweep", "3", "--sweep-accounts", "200", "--lake", str(small_lake), "--out", str(out)]) == 0
    res = load_results(out)
    q = pd.DataFrame(res.summary["sweep"]["quantiles"])
    assert set(q.metric) >= {"house_loss_usd", "liquidated_usd"}
    assert (q.q05 <= q.q50).all() and (q.q50 <= q.q95).all()
    assert len(res.sweep) == 3 and "binance.liq_fee_rate" in res.sweep.columns
    assert res.sweep["binance.liq_fee_rate"].between(0.005, 0.015).all()
    assert res.sweep["binance.liq_fee_rate"].nunique() == 3


def test_run_user_errors(small_lake, tmp_path, capsys):
    assert main(["run", "--lake", str(small_lake)]) == 2
    assert "--window" in capsys.readouterr().err
    assert main(["run", "--window", "1999-01", "--lake", str(small_lake), "--out", str(tmp_path / "x")]) == 2
    assert "unknown window" in capsys.readouterr().err
    assert main(["run", "--all", "--lake", str(tmp_path / "nope")]) == 2
    assert "liqreplay import" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[ftx.blp]\nno_such_knob = 1\n")
    assert main(["run", "--all", "--params", str(bad), "--lake", str(small_lake)]) == 2
    assert "no_such_knob" in capsys.readouterr().err


def test_repeated_window_counts_once(small_lake, tmp_path):
    """Issue 11 item 2: `--window X --window X` runs X once (OI and losses not doubled)."""
    out = tmp_path / "dup"
    assert main(["run", "--window", "2022-10", "--window", "2022-10", "--market", "BTC", "--market", "btc",
                 "--venue", "binance", "--accounts", "200", "--lake", str(small_lake), "--out", str(out)]) == 0
    res = load_results(out)
    assert [w["id"] for w in res.summary["windows"]] == ["2022-10"]
    assert len(res.rows) == 1 and len(res.summary["rows"]) == 1


def _one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.startswith("liqreplay ")]
    assert len(lines) == 1, err
    return lines[0]


def test_empty_lake_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    """Issue 11 item 4: an empty lake directory is not a run that ran."""
    lake = tmp_path / "empty-lake"
    lake.mkdir()
    out = tmp_path / "out"
    assert main(["run", "--all", "--lake", str(lake), "--out", str(out)]) == 2
    assert "empty" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_lake_that_is_a_file_exits_nonzero(tmp_path, capsys):
    lake = tmp_path / "lake.txt"
    lake.write_text("not a lake")
    out = tmp_path / "out"
    assert main(["run", "--all", "--lake", str(lake), "--out", str(out)]) == 2
    assert "is a file" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_every_series_failing_exits_nonzero_and_writes_nothing(small_lake, tmp_path, capsys):
    """A parameter every series rejects: nothing ran, one line, no results directory."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[population]\nlong_share = 1.5\n")
    out = tmp_path / "out"
    code = main(["run", "--window", "2022-10", "--market", "BTC", "--accounts", "200", "--params", str(bad),
                 "--lake", str(small_lake), "--out", str(out)])
    assert code != 0
    line = _one_line(capsys.readouterr().err)
    assert "long_share" in line
    assert not out.exists()


def test_report_refuses_results_without_rows(tmp_path, capsys):
    """Issue 11 item 4: `liqreplay report` on results with no rows says so in one line."""
    from backtest.results import write_results
    d = tmp_path / "norows"
    write_results(d, meta={"run_id": "x"}, windows=[{"id": "2022-10", "status": "skipped", "reason": "no data"}],
                  rows=[])
    assert main(["report", str(d)]) == 2
    assert "no result rows" in _one_line(capsys.readouterr().err)
    assert not (d / "report.html").exists()
