"""`liqreplay bench`: the replay on a synthetic year of 1-minute bars, 2 venues x 2 markets.

Prints, per population size: wall time (population build + replay of the 4 series, run
`--threads` at once: one per core by default, at most 4), the series' own population and
replay seconds summed (they overlap when threads run them), peak memory (the process's max
RSS), liquidation events and events per wall second; then the fast replay against the naive
oracle on the same small workload, one series at a time; the last line is machine-readable:

    bench: accounts=1000000 series=4 bars=525600 wall_s=... peak_mb=... events_per_s=...
           oracle_speedup=... compile_s=... threads=...   (one line)

wall_s is after compilation: the compiled kernels (numba, `cache=True`) are first called on a
tiny workload (the oracle's too), timed apart as compile_s (JIT compilation on a cold cache,
loading the on-disk cache after), so that neither wall_s nor the oracle speedup pays it.
Series run in threads as `liqreplay run` runs one window's series: the kernels release the
GIL (nogil) and every series draws from its own generator, so the results do not depend on
the thread count; `--threads 1` times them one after another.

The synthetic path is a seeded random walk (1-minute volatility 0.08% BTC / 0.11% ETH) with
a crash and a squeeze every two months, so that a large share of the population is
liquidated over the year. Nothing here is asserted by tests: the figures go in the report.
"""
from __future__ import annotations

import datetime as dt
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backtest.params import load_params
from backtest.population import make_population
from backtest.reference import reference_binance, reference_ftx
from backtest.replay import PathInput, run_binance, run_ftx

MARKETS = {"BTC": (40000.0, 0.0008, 2.0e9, 3.0e9), "ETH": (3000.0, 0.0011, 1.0e9, 2.0e9)}  # price, sigma, OI, ADV
VENUES = {"ftx": "{c}-PERP", "binance": "{c}USDT"}
START = pd.Timestamp("2022-01-01", tz="UTC")


def synthetic_bars(coin: str, n_bars: int, seed: int) -> pd.DataFrame:
    p0, sig, _, adv = MARKETS[coin]
    rng = np.random.default_rng([seed, 1 if coin == "BTC" else 2])
    r = rng.normal(0.0, sig, n_bars)
    # a crash (-18% over 45 min) and a squeeze (+12% over 30 min) every ~60 days
    for start in range(30 * 1440, n_bars - 120, 60 * 1440):
        r[start:start + 45] += np.log(0.82) / 45
        r[start + 20 * 1440:start + 20 * 1440 + 30] += np.log(1.12) / 30
    close = p0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[p0], close[:-1]])
    wick = np.abs(rng.normal(0.0, sig * 0.6, (2, n_bars)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    vol = adv / 1440.0 * rng.lognormal(0.0, 0.5, n_bars)
    ts = pd.date_range(START, periods=n_bars, freq="1min")
    return pd.DataFrame({"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume_quote": vol})


def _entry_bars(bars: pd.DataFrame, seed: int) -> pd.DataFrame:
    """14 days of hourly closes before the path (a reflected walk ending at the start price)."""
    rng = np.random.default_rng([seed, 99])
    n = 14 * 24
    p0 = float(bars["open"].iloc[0])
    back = p0 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))[::-1]
    return pd.DataFrame({"ts": pd.date_range(START - pd.Timedelta(hours=n), periods=n, freq="1h"),
                         "close": back, "volume_quote": np.full(n, 1e8)})


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 1024.0 / 1024.0


def run_workload(bars_by_coin: dict, n_accounts: int, params, seed: int, *, oracle: bool = False,
                 deterministic: bool = False, venues=None, threads: int = 1) -> Workload:
    """Run the 4 series, at most `threads` at once (FTX's first: they take longest; the compiled
    kernels release the GIL). FTX step 1 runs in its random mode (the production mode) unless
    `deterministic`. Each series draws from its own generator, so the results do not depend on
    `threads`."""
    date = dt.date(2022, 1, 1)
    jobs = [(coin, venue) for coin in bars_by_coin for venue in VENUES if not venues or venue in venues]

    def one(job):
        coin, venue = job
        bars, inp, eb = bars_by_coin[coin]
        sym = VENUES[venue].format(c=coin)
        rng = np.random.default_rng([seed, len(venue), len(coin), ord(coin[0])])
        t0 = time.perf_counter()
        pop = make_population(venue, sym, oi_usd=MARKETS[coin][2], entry_bars=eb, date=date, params=params,
                              rng=rng, start_price=float(bars["open"].iloc[0]), n_accounts=n_accounts,
                              collateral_prices={"BTC": 40000.0, "ETH": 3000.0, "FTT": 30.0, "SOL": 100.0})
        t1 = time.perf_counter()
        if venue == "binance":
            f = reference_binance if oracle else run_binance
            res = f(inp, pop, params, symbol=sym, date=date)
        else:
            f = reference_ftx if oracle else run_ftx
            res = f(inp, pop, params, symbol=sym, date=date,
                    rng=None if deterministic else np.random.default_rng([seed, 5]))
        return t1 - t0, time.perf_counter() - t1, res

    t0 = time.perf_counter()
    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(jobs))) as ex:
            futs = {j: ex.submit(one, j) for j in sorted(jobs, key=lambda j: j[1] != "ftx")}
            outs = [futs[j].result() for j in jobs]
    else:
        outs = [one(j) for j in jobs]
    wall = time.perf_counter() - t0
    per_venue = {v: 0.0 for v in VENUES}
    for (_coin, venue), (_, rep, _) in zip(jobs, outs, strict=True):
        per_venue[venue] += rep
    return Workload(wall_s=wall, population_s=sum(o[0] for o in outs), replay_s=sum(o[1] for o in outs),
                    per_venue=per_venue, events=sum(len(o[2].events) for o in outs),
                    liquidated=sum(o[2].totals["accounts_liquidated"] for o in outs),
                    results=[(venue, coin, o[2]) for (coin, venue), o in zip(jobs, outs, strict=True)])


@dataclass
class Workload:
    """One run of the series: wall clock, the series' own seconds summed (population build,
    replay; per venue), events, liquidated accounts, and (venue, coin, SeriesResult) each."""

    wall_s: float
    population_s: float
    replay_s: float
    per_venue: dict
    events: int
    liquidated: int
    results: list


def default_threads() -> int:
    """Series at once: one per core, at most 4 (the 4 series)."""
    return max(1, min(os.cpu_count() or 1, 4))


def _inputs(n_bars: int, seed: int, params, slice_from: int = 0) -> dict:
    out = {}
    for coin in MARKETS:
        bars = synthetic_bars(coin, slice_from + n_bars, seed).iloc[slice_from:].reset_index(drop=True)
        inp = PathInput.from_bars(bars, 60, tick_s=params.ftx.tick_s, sigma_1m=MARKETS[coin][1],
                                  adv_usd=MARKETS[coin][3])
        out[coin] = (bars, inp, _entry_bars(bars, seed))
    return out


def run_bench(sizes: list[int], *, days: float = 365.0, oracle_accounts: int = 200, oracle_bars: int = 240,
              seed: int = 7, venues=None, threads: int | None = None) -> int:
    """venues: only these venues' series (default both); the bench line then counts those series.
    threads: series replayed at once (default one per core, at most 4)."""
    params = load_params()
    threads = default_threads() if threads is None else int(threads)
    n_bars = int(round(days * 1440))
    t0 = time.perf_counter()
    data = _inputs(n_bars, seed, params)
    print(f"synthetic path: {len(MARKETS)} markets x {len(VENUES)} venues, {n_bars:,} one-minute bars each, "
          f"engine tick {params.ftx.tick_s} s ({time.perf_counter() - t0:.1f}s to build)")
    t0 = time.perf_counter()
    tiny = _inputs(30, seed, params)
    run_workload(tiny, 50, params, seed, venues=venues)
    run_workload(tiny, 20, params, seed, oracle=True, deterministic=True, venues=venues)   # (the oracle's loop too)
    compile_s = time.perf_counter() - t0
    print(f"compile: {compile_s:.2f}s for the first call of the kernels (JIT on a cold cache, cache load after)")
    print(f"series run {threads} at once in threads (the kernels release the GIL)" if threads > 1 else
          "series run one after another (--threads 1)")
    print("wall_s is the clock; pop_s and replay_s sum the series' own times (they overlap when threads run them)")
    print(f"{'accounts/series':>15} {'pop_s':>7} {'replay_s':>8} {'(binance':>8} {'ftx)':>7} {'wall_s':>7} "
          f"{'peak_mb':>8} {'events':>10} {'events/s':>10} {'liquidated':>10}")
    results = []
    for n in sizes:
        w = run_workload(data, n, params, seed, venues=venues, threads=threads)
        peak = _maxrss_mb()
        eps = w.events / w.wall_s if w.wall_s > 0 else float("nan")
        results.append((n, w.wall_s, peak, eps))
        pv = w.per_venue
        print(f"{n:>15,} {w.population_s:>7.2f} {w.replay_s:>8.2f} {pv['binance']:>8.2f} {pv['ftx']:>7.2f} "
              f"{w.wall_s:>7.2f} {peak:>8.0f} {w.events:>10,} {eps:>10,.0f} {w.liquidated:>10,}")
        sys.stdout.flush()
        del w
    if len(results) > 1:
        (n0, w0, _, _), (n1, w1, _, _) = results[0], results[-1]
        print(f"scaling: {n1 / n0:.0f}x accounts -> {w1 / w0:.1f}x wall time")

    # the oracle on the same small workload (a slice around the first crash), same run, one series at a time
    crash = 30 * 1440 - oracle_bars // 3
    small = _inputs(oracle_bars, seed, params, slice_from=max(0, min(crash, n_bars - oracle_bars)))
    fast = run_workload(small, oracle_accounts, params, seed, deterministic=True, venues=venues)
    ref = run_workload(small, oracle_accounts, params, seed, oracle=True, deterministic=True, venues=venues)
    same = all(len(a[2].events) == len(b[2].events) for a, b in zip(fast.results, ref.results, strict=True))
    speed = ref.replay_s / fast.replay_s if fast.replay_s > 0 else float("nan")
    n_series = len(MARKETS) * len([v for v in VENUES if not venues or v in venues])
    print(f"oracle: {oracle_accounts} accounts x {n_series} series x {oracle_bars} bars: "
          f"fast {fast.replay_s:.3f}s, oracle {ref.replay_s:.3f}s, "
          f"speedup {speed:.1f}x, events {fast.events} vs {ref.events} ({'same' if same else 'DIFFERENT'})")
    n, wall, peak, eps = results[-1]
    print(f"bench: accounts={n} series={n_series} bars={n_bars} wall_s={wall:.2f} peak_mb={peak:.0f} "
          f"events_per_s={eps:.0f} oracle_speedup={speed:.1f} compile_s={compile_s:.2f} threads={threads}")
    return 0
