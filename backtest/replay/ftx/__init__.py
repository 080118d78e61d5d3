"""FTX replay (MODEL.md 3) as compiled kernels over structure-of-arrays.

- accounts.py: the arrays, margin thresholds, TAV/MF, trigger prices;
- collateral.py: other coins' revaluation along their paths and the step-2 transfer to the BLP;
- blp.py: BLP capacity, overflow to the top-n opposing accounts, the BLP book's accounting;
- engine.py: one engine tick (step 2 then step 1, counter-based draws), shared with the oracle;
- loop.py: the event-driven tick kernel (trigger trees, quiet-tick skipping) and the oracle loop;
- state.py: Python in/out (prepare, replay, the post-run FtxState `_finish` reads, oi_daily).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backtest.kernel_cache import drop_stale

# the package's kernels inline each other and rng/paths/execution: each module's numba cache is
# stamped with all of them (backtest/kernel_cache.py)
_HERE = Path(__file__).resolve().parent
for _module in sorted(_HERE.glob("*.py")):
    drop_stale(_module, [*sorted(_HERE.glob("*.py")), "rng.py", "paths.py", "execution.py"])

from backtest.params import Params  # noqa: E402
from backtest.path import CollateralPath  # noqa: E402
from backtest.population import Population  # noqa: E402
from backtest.replay.ftx.state import FtxState, replay  # noqa: E402
from backtest.replay.inputs import PathInput  # noqa: E402
from backtest.replay.recorder import SeriesResult  # noqa: E402


def resolve_seed(seed: int | None, deterministic: bool | None, rng) -> tuple[int, bool]:
    """(seed, deterministic). deterministic None: expected values unless a seed (or, for old
    callers, a numpy Generator `rng`, from which one seed is drawn) is given."""
    if seed is None and rng is not None:
        seed = int(rng.integers(0, 2 ** 63 - 1))
    if deterministic is None:
        deterministic = seed is None
    return int(seed or 0), bool(deterministic)


def run_ftx(inp: PathInput, pop: Population, params: Params, *, symbol: str, date=None, seed: int | None = None,
            deterministic: bool | None = None, hedge: PathInput | None = None,
            collateral: dict[str, CollateralPath] | None = None, rng: np.random.Generator | None = None
            ) -> SeriesResult:
    """Event-driven FTX replay over one path. `seed`: the counter-based draws of step 1 (firing
    clock, order, size jitter, limit offset, keyed by seed, market, absolute tick, account);
    deterministic=True: expected values, no draws. `hedge`: the hedge venue's path (None: the
    FTX path itself). `collateral`: price paths of other collateral coins. `rng` is accepted
    for old callers (one seed drawn from it)."""
    seed, det = resolve_seed(seed, deterministic, rng)
    return replay(inp, pop, params, symbol=symbol, seed=seed, deterministic=det, hedge=hedge, collateral=collateral)


__all__ = ["FtxState", "resolve_seed", "run_ftx"]
