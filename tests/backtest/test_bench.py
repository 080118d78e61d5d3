"""`liqreplay bench` runs end to end on a tiny workload (figures are printed, never asserted)."""
from __future__ import annotations

import re

from backtest.console import main


def test_bench_tiny(capsys):
    assert main(["bench", "--sizes", "200,400", "--days", "0.05", "--oracle-accounts", "40",
                 "--oracle-bars", "20"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("scaling:") for line in out)
    assert any(line.startswith("compile:") for line in out)
    assert any(line.startswith("oracle:") and "(same)" in line for line in out)
    last = out[-1]
    m = re.fullmatch(r"bench: accounts=400 series=4 bars=72 wall_s=[\d.]+ peak_mb=\d+ events_per_s=(\d+|nan) "
                     r"oracle_speedup=([\d.]+|nan) compile_s=[\d.]+", last)
    assert m, last


def test_bench_rejects_bad_sizes(capsys):
    assert main(["bench", "--sizes", "ten"]) == 2
    assert "--sizes" in capsys.readouterr().err


def test_bench_one_venue(capsys):
    assert main(["bench", "--sizes", "200", "--days", "0.05", "--oracle-accounts", "40", "--oracle-bars", "20",
                 "--venue", "binance"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("bench: accounts=200 series=2 bars=72 ")
