"""`liqreplay sweep`: the same rows in this process and on a Dask cluster, resume, reported
failures, an unreachable scheduler; on the small lake imported from real files (test_cli_run)."""
from __future__ import annotations

import json
import math
import socket

import numpy as np
import pandas as pd
import pytest

from backtest import sensitivity as S
from backtest.console import main
from backtest.params import load_params
from backtest.sweep import Dimension, design, dimensions, run_sweep, sample_seeds

KW = dict(seed=11, samples=4, accounts=150, markets=["BTC"], search=False)


@pytest.fixture(scope="module")
def local_sweep(small_lake, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep-local")
    return run_sweep(["2022-10"], lake=small_lake, out=out, workers=0, **KW)


def test_rows_identical_in_process_and_on_a_local_cluster(local_sweep, small_lake, tmp_path):
    res = run_sweep(["2022-10"], lake=small_lake, out=tmp_path / "cl", workers=2, processes=True, **KW)
    pd.testing.assert_frame_equal(res.rows, local_sweep.rows)
    rows = local_sweep.rows
    # one row per (sample, window, venue, market), every sampled parameter a column, the outcomes numbers
    assert len(rows) == 4 * 2 and sorted(rows["sample"].unique()) == [0, 1, 2, 3]
    assert set(rows["venue"]) == {"ftx", "binance"}
    params = load_params()
    for key, (lo, hi) in params.sweep_ranges().items():
        assert key in rows.columns
        assert rows[key].between(lo, hi).all(), key
    assert rows["binance.liq_fee_rate"].nunique() == 4            # the design moves every parameter
    for col in ("house_loss_usd", "liquidated_usd", "reported_liquidated_usd", "blp_pnl_usd"):
        assert np.issubdtype(rows[col].dtype, np.floating)
    assert rows["error"].isna().all()
    assert rows.groupby("sample")["seed"].nunique().eq(1).all() and rows["seed"].nunique() == 4
    on_disk = pd.read_parquet(tmp_path / "cl" / "sweep.parquet")
    pd.testing.assert_frame_equal(on_disk, res.rows)
    meta = json.loads((tmp_path / "cl" / "sweep.json").read_text())
    assert meta["samples"] == 4 and meta["seed"] == 11 and meta["accounts"] == 150
    for name in ("sensitivity.json", "frontier.json"):
        assert json.loads((tmp_path / "cl" / name).read_text())


def test_resume_after_a_killed_sweep(local_sweep, small_lake, tmp_path):
    out = tmp_path / "killed"

    def kill_after_two(ev):
        if ev["kind"] == "sample" and ev["done"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(["2022-10"], lake=small_lake, out=out, workers=0, on_progress=kill_after_two, **KW)
    parts = sorted(out.glob(".sweep/*/rows/*.parquet"))
    assert len(parts) == 2
    assert not list(out.rglob("*.tmp")) and not (out / "sweep.parquet").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in parts}
    events = []
    res = run_sweep(["2022-10"], lake=small_lake, out=out, workers=0, on_progress=events.append, **KW)
    assert events[0] == {"kind": "start", "total": 4, "resumed": 2}
    assert sum(e["kind"] == "sample" for e in events) == 2
    assert {p: p.stat().st_mtime_ns for p in parts} == mtimes
    pd.testing.assert_frame_equal(res.rows, local_sweep.rows)


def test_a_sample_whose_parameters_fail_is_reported(small_lake, tmp_path):
    bad = tmp_path / "wide.toml"   # leverage_low_min above leverage_low_max (5) fails the parameter checks
    bad.write_text('[population.leverage_low_min]\nvalue = 1.0\nrange = [1.0, 9.0]\nsource = "test: past 5 fails"\n')
    res = run_sweep(["2022-10"], lake=small_lake, params=bad, out=tmp_path / "o", workers=0,
                    **{**KW, "samples": 6})
    rows = res.rows
    assert sorted(rows["sample"].unique()) == list(range(6))          # nothing silently dropped
    failed = rows[rows["error"].notna()]
    assert len(failed) and failed["error"].str.contains("leverage_low_min").all()
    assert (failed["population.leverage_low_min"] > 5.0).all()
    fine = rows[rows["population.leverage_low_min"] <= 5.0]
    assert len(fine) and fine["error"].isna().all()
    assert res.meta["failed_samples"] == failed["sample"].nunique()
    assert res.sensitivity["samples"] == 6 - failed["sample"].nunique()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_one_line_and_exit_75(small_lake, tmp_path, capsys):
    code = main(["sweep", "--window", "2022-10", "--market", "BTC", "--samples", "2", "--accounts", "100",
                 "--lake", str(small_lake), "--out", str(tmp_path / "o"), "--connect-timeout", "2",
                 "--scheduler", f"tcp://127.0.0.1:{_free_port()}"])
    assert code == 75
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("liqreplay")]
    assert len(err) == 1 and "no Dask scheduler answers" in err[0]
    assert not (tmp_path / "o" / "sweep.parquet").exists()


def test_cli_sweep_prints_the_answer(small_lake, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["sweep", "--window", "2022-10", "--window", "2022-10", "--market", "BTC", "--samples", "3",
                 "--accounts", "100", "--workers", "0", "--search-evals", "3", "--lake", str(small_lake),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 samples x 1 window(s)" in text and "FTX's house" in text
    front = json.loads((out / "frontier.json").read_text())
    assert [t["target_usd"] for t in front["targets"]] == [1e9, 8e9]
    assert front["search"]["evals"] <= 3


# ----------------------------------------------------------------------------- design and analysis
def test_design_is_prefix_stable_and_discovers_every_ranged_key():
    p = load_params()
    dims = dimensions(p)
    assert [d.key for d in dims] == sorted(p.sweep_ranges())
    assert design(dims, 16, 3)[:5].tolist() == design(dims, 5, 3).tolist()
    assert sample_seeds(3, 8)[:4] == sample_seeds(3, 4)
    cap = next(d for d in dims if d.key == "ftx.blp.capacity_per_minute_usd")
    assert cap.kind == "log" and cap.value(0.0) == pytest.approx(cap.lo) and cap.value(1.0) == pytest.approx(cap.hi)
    days = next(d for d in dims if d.key == "population.entry_lookback_days")
    assert days.kind == "int" and isinstance(days.value(0.3), int)
    switch = Dimension("impact.feedback", 0.0, 1.0, "bool", 0.0)
    assert switch.value(0.2) is False and switch.value(0.7) is True


def test_sensitivity_finds_the_driver_and_frontier_the_nearest_setting():
    """A synthetic sweep where FTX's loss is 10B * a: `a` drives it, b does not; the
    least implausible setting reaching $1B has a near 0.1."""
    dims = [Dimension("a", 0.0, 1.0, "float", 0.0), Dimension("b", 0.0, 1.0, "float", 0.5)]
    u = design(dims, 64, 1)
    rows = []
    for i, (a, b) in enumerate(u):
        rows.append({"sample": i, "window": "w", "venue": "ftx", "market": "BTC", "a": a, "b": b,
                     "house_loss_usd": 1e10 * a, "error": None})
        rows.append({"sample": i, "window": "w", "venue": "binance", "market": "BTC", "a": a, "b": b,
                     "house_loss_usd": 1e6, "error": None})
    totals = S.sample_totals(pd.DataFrame(rows), dims, set())
    sens = S.sensitivity(totals, dims, seed=1, bootstrap=50)
    top = sens["outputs"]["ftx_2022"]["params"]
    assert top[0]["param"] == "a" and top[0]["rho"] > 0.99 and top[0]["rho_lo"] > 0.9
    assert abs(top[1]["rho"]) < 0.5 and top[1]["rho_lo"] < 0 < top[1]["rho_hi"]
    assert top[0]["S1"] > top[1]["S1"]
    front = S.frontier(totals, dims)
    t1 = front["targets"][0]
    assert t1["reached_by"] == int((u[:, 0] >= 0.1).sum())
    # a line search toward the frontier: model = the same formula
    front = S.search_frontier(front, totals, sens, dims, lambda pts, seed: [1e10 * p[0] for p in pts],
                              budget=30, seed=1)
    near = t1["searched"]["setting"][0]
    assert near["param"] == "a" and near["value"] == pytest.approx(0.1, abs=0.03)
    assert front["search"]["corner"]["moved"] == ["a"]
    words = S.plain_words(front)
    assert words[0].startswith("FTX's house loses $1.00B in 2022 only if a is")
    assert S.plain_words({"targets": [{"target_usd": 8e9, "reached_by": 0}], "max_usd": 5e8})[0].startswith(
        "No sampled setting makes FTX's house lose $8.00B")


def test_a_malformed_scheduler_address_is_a_user_error(small_lake, tmp_path, capsys):
    assert main(["sweep", "--window", "2022-10", "--market", "BTC", "--samples", "1", "--accounts", "100",
                 "--lake", str(small_lake), "--out", str(tmp_path / "o"), "--scheduler", "localhost"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("liqreplay sweep: --scheduler localhost:") and "tcp://HOST:8786" in err[-1]


def test_a_sweep_where_every_sample_fails_exits_1_with_the_reason(small_lake, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[population.leverage_low_min]\nvalue = 1.0\nrange = [6.0, 9.0]\nsource = "test: all fail"\n')
    out = tmp_path / "o"
    assert main(["sweep", "--window", "2022-10", "--market", "BTC", "--samples", "2", "--accounts", "100",
                 "--workers", "0", "--params", str(bad), "--lake", str(small_lake), "--out", str(out)]) == 1
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("liqreplay")]
    assert len(err) == 1 and "every sample failed" in err[0] and "leverage_low_min" in err[0]
    assert pd.read_parquet(out / "sweep.parquet")["error"].notna().all()
    assert main(["report", str(out)]) == 2
    assert "holds a sweep but no run" in capsys.readouterr().err


def _noise_sweep(n: int, k: int, loss):
    dims = [Dimension(f"p{j}", 0.0, 1.0, "float", 0.5) for j in range(k)]
    u = design(dims, n, 7)
    rows = []
    for i, x in enumerate(u):
        rows.append({"sample": i, "window": "w", "venue": "ftx", "market": "BTC",
                     **{d.key: v for d, v in zip(dims, x, strict=True)}, "house_loss_usd": loss(x, i), "error": None})
    return dims, S.sample_totals(pd.DataFrame(rows), dims, set())


def test_the_worst_corner_moves_only_the_real_driver_among_many_parameters():
    """20 parameters, FTX's loss depends on p3 only (plus noise): the joint fit moves p3 up and
    nothing else, and the corner run is then the largest loss found."""
    rng_ = np.random.default_rng(5)
    noise = rng_.normal(0, 0.3, 256)
    dims, totals = _noise_sweep(256, 20, lambda x, i: 1e8 * math.exp(3 * x[3] + noise[i]))
    rc = S.raising_corner(totals, dims)
    assert rc["moved"] == ["p3"] and rc["corner"][3] == 1.0 and rc["method"].startswith("least squares")
    front = S.search_frontier(S.frontier(totals, dims), totals, {}, dims,
                              lambda pts, seed: [1e8 * math.exp(3 * p[3]) for p in pts], budget=12, seed=1)
    found = front["search"]["largest_found"]
    assert found["ftx_2022_usd"] == pytest.approx(max(1e8 * math.exp(3), totals["ftx_2022"].max()))
    assert front["search"]["corner"]["ftx_2022_usd"] == pytest.approx(1e8 * math.exp(3))


def test_few_samples_of_pure_noise_move_no_parameter_and_the_answer_says_so():
    """16 samples, 28 parameters, a loss unrelated to them (mostly $0): nothing is 'clearly'
    raising, the corner is the defaults, and the sentence names the largest loss found."""
    rng_ = np.random.default_rng(11)
    draws = np.where(rng_.random(16) < 0.6, 0.0, rng_.lognormal(16, 2, 16))
    dims, totals = _noise_sweep(16, 28, lambda x, i: float(draws[i]))
    rc = S.raising_corner(totals, dims)
    assert rc["moved"] == [] and rc["method"].startswith("Spearman")
    front = S.search_frontier(S.frontier(totals, dims), totals, {}, dims,
                              lambda pts, seed: [0.0 for _ in pts], budget=12, seed=1)
    assert front["search"]["evals"] == 2       # defaults + largest sample (the corner is the defaults)
    assert front["search"]["largest_found"]["ftx_2022_usd"] == pytest.approx(draws.max())
    words = S.plain_words(front)
    assert words[0].startswith("No setting found makes FTX's house lose $1.00B in 2022: the largest loss found is")
    assert "no parameter clearly raises it" in words[0]
