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
                     r"oracle_speedup=([\d.]+|nan) compile_s=[\d.]+ threads=\d+", last)
    assert m, last


def test_bench_rejects_bad_sizes(capsys):
    assert main(["bench", "--sizes", "ten"]) == 2
    assert "--sizes" in capsys.readouterr().err


def test_bench_one_venue(capsys):
    assert main(["bench", "--sizes", "200", "--days", "0.05", "--oracle-accounts", "40", "--oracle-bars", "20",
                 "--venue", "binance"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("bench: accounts=200 series=2 bars=72 ")


def test_workload_in_threads_gives_the_sequential_results():
    """bench --threads: the 4 series replayed at once in threads give the same events."""
    import numpy as np

    from backtest.bench import _inputs, run_workload
    from backtest.params import load_params
    params = load_params()
    data = _inputs(600, 7, params, slice_from=30 * 1440 - 200)     # around the first crash
    one = run_workload(data, 300, params, 7, threads=1)
    two = run_workload(data, 300, params, 7, threads=2)
    assert one.events > 0 and one.events == two.events
    for (va, ca, ra), (vb, cb, rb) in zip(one.results, two.results, strict=True):
        assert (va, ca) == (vb, cb)
        assert ra.events.equals(rb.events) and ra.totals == rb.totals
        assert np.array_equal(ra.final_qty, rb.final_qty)
