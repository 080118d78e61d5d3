"""Option values outside their domain are refused in one line, exit 2 (issue 11 items 3, 11)."""
import pytest

from backtest import console


@pytest.mark.parametrize("argv, text", [
    (["run", "--window", "2022-10", "--seed", "-1"], "argument --seed: -1 is below 0"),
    (["run", "--window", "2022-10", "--sweep", "-3"], "argument --sweep: -3 is below 0"),
    (["run", "--window", "2022-10", "--accounts", "0"], "argument --accounts: 0 is below 1"),
    (["run", "--window", "2022-10", "--sweep-accounts", "-2"], "argument --sweep-accounts: -2 is below 1"),
    (["bench", "--days", "0"], "argument --days: 0 must be a positive number"),
    (["bench", "--oracle-accounts", "-4"], "argument --oracle-accounts: -4 is below 1"),
])
def test_out_of_domain_options_are_one_line(argv, text, capsys):
    with pytest.raises(SystemExit) as exc:
        console.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and text in err[0], err


def test_bench_refuses_non_positive_sizes(capsys):
    assert console.main(["bench", "--sizes", "0,-5"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "liqreplay bench: --sizes needs population sizes of at least 2"]


def test_run_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, capsys, imported_lake_small):
    f = tmp_path / "results.txt"
    f.write_text("x")
    assert console.main(["run", "--window", "2022-10", "--lake", str(imported_lake_small), "--out", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"liqreplay run: --out {f} is a file: give a folder for the results (it is created)"]
    assert console.main(["run", "--window", "2022-10", "--lake", str(imported_lake_small),
                         "--out", str(f / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write the results to {f / 'sub'}" in err[0]


@pytest.fixture
def imported_lake_small(tmp_path):
    """A lake folder with one imported series (enough for run to get past its lake check)."""
    import pandas as pd

    from fetch.lake import Lake
    ts = pd.date_range("2022-10-24", periods=4, freq="1h", tz="UTC")
    Lake(tmp_path / "lake").write("ohlcv", pd.DataFrame({
        "venue": "binance", "market": "perp", "symbol": "BTCUSDT", "timeframe": "1h", "price_type": "trade",
        "ts": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume_base": 1.0}), source="t")
    return tmp_path / "lake"
