"""The kernel prefetch on a cold numba cache (backtest/replay/warmup.py) and the one array type
per PathInput field that lets it compile the kernels a real run uses."""
from __future__ import annotations

import numpy as np
import pandas as pd

from backtest.params import default_params
from backtest.replay import PathInput, warmup


def test_path_input_owns_writable_arrays_of_one_dtype():
    o = np.linspace(100.0, 101.0, 5)
    o.setflags(write=False)
    bars = pd.DataFrame({"ts": pd.date_range("2022-01-01", periods=5, freq="1min", tz="UTC"), "open": o,
                         "high": o + 1, "low": o - 1, "close": o, "volume_quote": np.arange(5)})   # int volume
    inp = PathInput.from_bars(bars, 60)
    for name in ("open", "high", "low", "close", "volume_quote", "funding_rate"):
        a = getattr(inp, name)
        assert a.dtype == np.float64 and a.flags.writeable and a.flags.c_contiguous, name
    assert inp.ts_s.dtype == np.int64 and inp.ts_s.flags.writeable and inp.funding_bar.dtype == np.int64
    np.testing.assert_array_equal(inp.open, o)
    w = np.linspace(1.0, 2.0, 5)
    assert np.shares_memory(PathInput(inp.ts_s, w, w, w, w, w, 60).open, w)     # already fine: not copied


def test_tiny_series_replays_on_both_venues():
    p = default_params()
    for v in ("binance", "ftx"):
        inp, pop, params, symbol, date = warmup.tiny_series(v, p)
        assert len(pop) > 10 and inp.n_bars == 240 and (pop.open_s > pop.open_s.min()).any()
    warmup.warm(["binance", "ftx"], p)


def test_prefetch_is_off_with_the_switch_and_once_per_process(monkeypatch):
    started = []
    monkeypatch.setattr(warmup, "_started", False)
    monkeypatch.setattr(warmup.subprocess, "Popen", lambda *a, **k: started.append(a) or None)
    monkeypatch.setattr(warmup, "kernel_cached", lambda v: False)
    monkeypatch.setenv("LIQREPLAY_PREFETCH", "0")
    warmup.prefetch("ftx")
    assert not started and not warmup._pending
    monkeypatch.setattr(warmup, "_started", False)
    monkeypatch.setenv("LIQREPLAY_PREFETCH", "auto")
    monkeypatch.setattr(warmup, "_idle_core", lambda: False)       # a busy machine: no child
    warmup.prefetch("ftx")
    assert not started
    monkeypatch.setattr(warmup, "_started", False)
    monkeypatch.setenv("LIQREPLAY_PREFETCH", "1")
    warmup.prefetch("ftx")
    warmup.prefetch("ftx")
    assert len(started) == 1 and "binance" in started[0][0][-1] and "ftx" not in started[0][0][-1]
    monkeypatch.setattr(warmup, "_pending", {})
