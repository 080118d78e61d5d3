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
