"""The event-driven replay package: both venue engines on the same intra-bar path (MODEL.md 1, 3-5, 7).

Cost grows with bars + events, not bars x accounts:
- every account's trigger price is computed once (Binance: the liquidation price; FTX: the
  mark at which MF reaches MMF, via ftx.price_at_margin_fraction) and held in a
  `TriggerBook` per side: longs sorted by trigger descending, shorts ascending, with a
  pointer walked per bar, plus a heap for accounts whose trigger was recomputed (partial
  liquidation, ADL, overflow close-out);
- the next bar that can hold an event is found with block minima/maxima of lows/highs;
- Binance events of a bar are solved in closed form (first crossing on the path) and
  settled vectorised; FTX accounts that crossed MMF are processed tick by tick (step 1 /
  step 2) only while they are in step 1/2, then go back to the book with a fresh trigger;
- funding times re-price wallets and rebuild the books.

`backtest/reference.py` is the naive oracle (every account, every tick) that the parity
tests hold this against. The shared per-event arithmetic (settlement, step 1/2, BLP book)
lives here and is called by both, so a parity test checks the event machinery.
"""

from backtest.replay.binance import BinanceState, run_binance
from backtest.replay.ftx import FtxState, run_ftx
from backtest.replay.inputs import BLOCK, PathInput
from backtest.replay.recorder import MECHS, Recorder, SeriesResult, _finish
from backtest.replay.runner import path_input, run_series, series_rng
from backtest.replay.triggers import TriggerBook

__all__ = ["BLOCK", "MECHS", "BinanceState", "FtxState", "PathInput", "Recorder", "SeriesResult", "TriggerBook",
           "_finish", "path_input", "run_binance", "run_ftx", "run_series", "series_rng"]
