"""The event-driven replay package: both venue engines on the same intra-bar path (MODEL.md 1, 3-5, 7).

Cost grows with bars + events, not bars x accounts:
- Binance (binance.py + the compiled binance_kernel.py): one numba kernel call per series
  walks the bars; trigger books per side and bracket tier with lazy funding, a bar's ticks
  generated only where its range reaches a trigger, accounts opening and closing mid-run
  (see binance_kernel's docstring);
- FTX (ftx.py): every account's trigger (the mark at which MF reaches MMF, via
  ftx.price_at_margin_fraction) held in a `TriggerBook` per side (sorted, a pointer walked
  per bar, plus a heap for recomputed triggers); the next bar that can hold an event found
  with block minima/maxima; accounts that crossed MMF processed tick by tick (step 1 /
  step 2) only while they are in step 1/2.

`backtest/reference.py` is the naive oracle (every account, every tick) that the parity
tests hold this against (Binance: numpy venue arithmetic in `BinanceState`, independent of
the kernel's; FTX: the shared per-event arithmetic of ftx.py). recorder.py turns a venue
state into the series result: totals with the house-loss parts (`loss_accounting`), the
reported notional per event (`reported_usd`, the one place the disclosure rule is applied),
the per-bar series and the model's open interest per day.
"""

from backtest.replay.binance import BinanceState, run_binance
from backtest.replay.ftx import FtxState, run_ftx
from backtest.replay.inputs import BLOCK, PathInput
from backtest.replay.recorder import MECHS, Recorder, SeriesResult, _finish
from backtest.replay.runner import path_input, run_series, series_rng
from backtest.replay.triggers import TriggerBook

__all__ = ["BLOCK", "MECHS", "BinanceState", "FtxState", "PathInput", "Recorder", "SeriesResult", "TriggerBook",
           "_finish", "path_input", "run_binance", "run_ftx", "run_series", "series_rng"]
