"""FTX replay (MODEL.md 3) as a package: `state` holds the per-account state and the per-event
arithmetic; `run_ftx` is the event-driven replay."""
from backtest.replay.ftx.state import FtxState, run_ftx

__all__ = ["FtxState", "run_ftx"]
