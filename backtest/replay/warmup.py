"""Compile a venue's kernels ahead, in a child process, on a cold numba cache.

numba compiles a kernel on its first call and keeps it in the on-disk cache (`cache=True`);
a clean clone pays every compile once, one after another, in the first run (~1.5 min on
this 2-core machine). `run_series` calls `prefetch(venue)` on its first series: when the
other venues' replay kernels are not in the cache yet, one child process (a fresh
interpreter) replays a tiny synthetic series of each of them (compiling their kernels into
the cache) while this
process compiles and runs its own venue; `wait(venue)` before the first series of such a
venue joins the child, after which the kernels load from the cache. Nothing is computed
for the results there: the child's output is thrown away. It does nothing with a warm
cache, in a daemonic process (a pool worker), without an idle core (1-minute load average
above cores - 1) or with LIQREPLAY_PREFETCH=0; LIQREPLAY_PREFETCH=1 skips the load check.
"""
from __future__ import annotations

import datetime as dt
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from backtest import rng as R
from backtest.params import Params
from backtest.paths import path_key
from backtest.population import BookBars, build_book
from backtest.replay.binance import run_binance
from backtest.replay.binance_kernel import replay_kernel
from backtest.replay.ftx import run_ftx
from backtest.replay.ftx.loop import run_kernel
from backtest.replay.inputs import PathInput

log = logging.getLogger(__name__)

_VENUES = ("ftx", "binance")
_started = False
_pending: dict[str, object] = {}
_lock = threading.Lock()       # series may run in threads (api.run_loaded)


def kernel_cached(venue: str) -> bool:
    """True when the venue's main kernel has a compiled overload in the on-disk cache (a
    private numba interface: anything unexpected counts as cached, i.e. no prefetch)."""
    try:
        k = replay_kernel if venue == "binance" else run_kernel
        cache = getattr(k, "_cache", None)
        if cache is None or not hasattr(cache, "_cache_file"):
            return True
        return bool(cache._cache_file._load_index())
    except Exception:   # noqa: BLE001 - a heuristic only
        return True


def _idle_core() -> bool:
    """A core to spare: on a busy machine the child only slows this process down (measured:
    a cold `run --all` under a load of 3-4 on 2 cores took 289 s with the child, 251 s without)."""
    try:
        return os.getloadavg()[0] <= (os.cpu_count() or 1) - 1.0
    except OSError:
        return False


def tiny_series(venue: str, params: Params):
    """(PathInput, Population, params, symbol, date) of a small synthetic series: the array
    types of a real run, so its compiled kernels are the ones a real run uses."""
    n = 240
    ts = pd.date_range("2022-05-09", periods=n, freq="1min", tz="UTC")
    r = np.random.default_rng(0).normal(0.0, 0.004, n)
    c = 30000.0 * np.exp(np.cumsum(r))
    o = np.r_[30000.0, c[:-1]]
    bars = pd.DataFrame({"ts": ts, "open": o, "high": np.maximum(o, c) * 1.002, "low": np.minimum(o, c) * 0.998,
                         "close": c, "volume_quote": np.full(n, 1e7)})
    funding = pd.DataFrame({"ts": ts[::120], "rate": np.full(len(ts[::120]), 1e-4)}) if venue == "binance" else None
    inp = PathInput.from_bars(bars, 60, tick_s=params.ftx.tick_s, sigma_1m=0.002, adv_usd=1e10,
                              funding=funding)
    inp.path_mode, inp.path_key = 1, int(path_key(1, "BTC"))
    t0 = int(inp.ts_s[0])
    bb = BookBars(np.r_[inp.ts_s - 86400, inp.ts_s], np.full(2 * n, 60, np.int64), np.r_[inp.open, inp.open],
                  np.r_[inp.high, inp.high], np.r_[inp.low, inp.low], np.r_[inp.close, inp.close],
                  np.r_[inp.volume_quote, inp.volume_quote])
    symbol = "BTC-PERP" if venue == "ftx" else "BTCUSDT"
    pop = build_book(venue, symbol, "BTC", bb, oi_asof_s=np.array([t0 - 86400, t0 + 3600], np.int64),
                     oi_coin=np.array([1000.0, 1200.0]), window_start_s=t0, window_end_s=t0 + 60 * n, params=params,
                     key=1, n_accounts=200, collateral_prices={"BTC": 30000.0, "ETH": 2000.0})
    return inp, pop, params, symbol, dt.date(2022, 5, 9)


def warm(venues, params: Params) -> None:
    """Replay a tiny series of each venue (compiles its kernels into the cache)."""
    R.uniforms(np.uint64(1), np.arange(2, dtype=np.int64))    # the book's pro-rata draws
    for v in venues:
        inp, pop, _, symbol, date = tiny_series(v, params)
        if v == "binance":
            run_binance(inp, pop, params, symbol=symbol, date=date)
        else:
            run_ftx(inp, pop, params, symbol=symbol, date=date, rng=np.random.default_rng(0), hedge=inp)


def prefetch(first_venue: str) -> None:
    """Once per process: compile the other venues' kernels in a child process if they are not
    cached (see the module docstring)."""
    with _lock:
        _prefetch(first_venue)


def _prefetch(first_venue: str) -> None:
    global _started
    if _started:
        return
    _started = True
    mode = os.environ.get("LIQREPLAY_PREFETCH", "auto")
    if mode == "0" or mp.current_process().daemon:
        return
    if mode != "1" and not _idle_core():
        return
    others = [v for v in _VENUES if v != first_venue and not kernel_cached(v)]
    if not others:
        return
    root = str(Path(__file__).resolve().parents[2])      # the directory holding this `backtest`
    env = {**os.environ, "LIQREPLAY_PREFETCH": "0",
           "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    # the child compiles (array types, not values, decide what): the default parameters do
    code = ("from backtest.params import load_params; from backtest.replay.warmup import warm; "
            f"warm({others!r}, load_params())")
    try:
        p = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        log.debug("kernel prefetch not started: %s", exc)
        return
    for v in others:
        _pending[v] = p


def wait(venue: str) -> None:
    """Wait for the child compiling this venue's kernels, if any (its failure only means this
    process compiles them itself)."""
    with _lock:
        p = _pending.pop(venue, None)
    if p is not None:
        p.wait()
        with _lock:
            for v in [k for k, q in _pending.items() if q is p]:
                _pending.pop(v)
