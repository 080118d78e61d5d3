"""Run orchestration as a library: the windows, the lake, the parameters in; Results out.

    from backtest.api import run_windows
    res = run_windows(["2022-10"], lake="lake", params=None, seed=1, accounts=2000)
    res.rows            # one row per (window, venue, market), as load_results returns

`run_windows` walks params -> scenarios -> lake -> catalog -> series -> run_series ->
results, with resume from `<out>/.parts` (a finished window is reused when the same
parameters, seed, data snapshot and population size are asked for again). The CLI
(`liqreplay run`, backtest/cli.py) only parses and prints; the sweep (backtest/sweep.py)
reuses `load_window` / `run_loaded` on every sample.

A run in which nothing ran (an empty lake, every series failing) raises `NothingRan`
(a UserError: one line, exit 2) and writes no results directory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from backtest.calibrate import write_run_calibration
from backtest.catalog import Catalog
from backtest.params import Params, load_params
from backtest.replay import path_input, run_series, warmup
from backtest.results import Results, _jsonable, load_results, write_results
from backtest.scenarios import COINS, VENUES, Scenarios, Window, load_scenarios
from backtest.series_loader import SeriesLoader, load_window_series
from fetch import atomic
from fetch.errors import UserError
from fetch.lake import resolve_lake

log = logging.getLogger(__name__)

DEFAULT_SEED = 20221108
RESULTS_VERSION = 3   # bump when a code change alters results: finished windows in .parts are recomputed
# what a series may raise on bad inputs or parameters (reported per series, the others still run)
SERIES_ERRORS = (ValueError, KeyError, ZeroDivisionError, FloatingPointError)
# a Binance series whose liquidated notional comes this much from accounts wider than the disclosure
# bandwidth gets a warning (run_loaded): its reported figure moves with --accounts
# (measured: the year at 20k accounts 0.78-0.85, reported 1.5-1.8x the 200k figure; at 100k 0.65-0.72, 1.05-1.09x)
UNRESOLVED_WARN = 0.75

Progress = Callable[[dict], None]


class NothingRan(UserError):
    """Every series of every window was skipped or failed: no results to write."""


@dataclass
class LoadedWindow:
    """One window's loaded series and what FTX's collateral needs; picklable (Dask scatters it)."""

    window: Window
    series: dict            # (venue, coin) -> SeriesData
    problems: list[str]
    cprices: dict
    cpaths: dict
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs
def as_params(params) -> Params:
    """A Params, a parameter file path, or None (the defaults)."""
    if isinstance(params, Params):
        return params
    return load_params(params)


def as_scenarios(scenarios) -> Scenarios:
    if isinstance(scenarios, Scenarios):
        return scenarios
    try:
        return load_scenarios(scenarios)
    except FileNotFoundError:
        raise UserError(f"scenario file not found: {scenarios}") from None


def resolve_windows(sc: Scenarios, windows) -> list[Window]:
    """Window ids or Window objects (or "all"), de-duplicated in first-seen order."""
    if windows == "all" or windows is None:
        return list(sc.windows)
    if isinstance(windows, (str, Window)):
        windows = [windows]
    out: dict[str, Window] = {}
    for w in windows:
        if isinstance(w, Window):
            out.setdefault(w.id, w)
            continue
        try:
            out.setdefault(str(w), sc.window(str(w)))
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from None
    if not out:
        raise UserError("say which windows: --window ID (repeatable) or --all")
    return list(out.values())


def resolve_venues_markets(sc: Scenarios, venues=None, markets=None) -> tuple[tuple, tuple]:
    vs = tuple(dict.fromkeys(venues or VENUES))
    for v in vs:
        if v not in VENUES:
            raise UserError(f"unknown venue {v!r}: use one of {', '.join(VENUES)}")
    cs = tuple(dict.fromkeys(str(c).upper() for c in (markets or COINS)))
    for c in cs:
        if c not in sc.markets:
            raise UserError(f"unknown market {c!r}: add it to the scenario file or use one of {sorted(sc.markets)}")
    return vs, cs


def open_catalog(lake):
    """The lake's Catalog; one line naming the fix when the path is missing, a file, or empty."""

    root = resolve_lake(lake)      # refuses a path that is a file
    if not root.exists():
        raise UserError(f"no lake at {root}: run `liqreplay import ../shared/data` (or pass --lake DIR)")
    catalog = Catalog(root)
    try:
        empty = catalog.series().empty
    except Exception:  # an unreadable manifest is the data layer's to report; let the run say what loads
        empty = False
    if empty:
        raise UserError(f"the lake at {root} is empty: run `liqreplay import ../shared/data --lake {root}`")
    return catalog


def make_out_dir(out: Path) -> Path:
    """Create the results folder (and its .parts) or say in one line why it cannot be."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the results (it is created)")
    try:
        (out / ".parts").mkdir(parents=True, exist_ok=True)
        probe = out / ".parts" / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write the results to {out}: {exc.strerror or exc}; "
                        f"pass --out DIR on a writable disk") from None
    return out


def params_path(params: Params) -> str:
    try:
        return str(Path(params.path).resolve())
    except OSError:
        return str(params.path)


def file_hash(path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except (OSError, TypeError):
        return ""


# --------------------------------------------------------------------------- one window
def load_window(loader, w: Window, venues, coins) -> LoadedWindow:
    sds, problems = load_window_series(loader, w, venues, coins)
    notes = list(problems)
    for sd in sds.values():
        notes += sd.notes
    cprices = loader.coin_prices(w) if "ftx" in venues and sds else {}
    cpaths, cnotes = loader.collateral_paths(w, sorted(cprices)) if cprices else ({}, [])
    notes += cnotes
    for cp in cpaths.values():
        notes.append(f"window {w.id}: collateral {cp.coin} revalued at {cp.t_s.size} steps ({cp.source} closes)")
    return LoadedWindow(w, sds, list(problems), cprices, cpaths, notes)


def unpack_series_result(res) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """run_series returns (row, series, events) and, once the kernels land, a 4th `daily` frame."""
    if len(res) == 4:
        return res[0], res[1], res[2], res[3]
    row, se, ev = res
    return row, se, ev, None


def run_loaded(lw: LoadedWindow, venues, coins, params: Params, seed: int, *, n_accounts: int | None = None,
               deterministic: bool = False, on_series: Callable[[str, str, str], None] | None = None,
               run_order: Iterable[str] | None = None, threads: int = 1) -> dict:
    """Replay every loaded series of one window. Returns the window entry, rows, coverage,
    series/events/daily frames and `failures` (one dict per series that raised), in the order
    of `venues` x `coins` whatever `run_order` (the venues' order of running: a process that
    starts with another venue than its neighbour compiles other kernels on a cold cache) and
    `threads` (series replayed at once in threads: the compiled kernels release the GIL, and
    each series' draws are its own, so the results are the same)."""
    w = lw.window
    venues = list(venues)
    order = [v for v in (run_order or ()) if v in venues]
    order += [v for v in venues if v not in order]
    done: dict[tuple[str, str], tuple] = {}
    failures = []

    def one(v, c, sd):
        hedge_sd = lw.series.get(("binance", c)) if v == "ftx" else None
        try:
            hedge = path_input(hedge_sd, params, seed) if hedge_sd is not None else None
            res = run_series(sd, params, seed, hedge=hedge, n_accounts=n_accounts,
                             collateral_prices={**lw.cprices, c: sd.start_price},
                             deterministic=deterministic, collateral_paths=lw.cpaths)
        except SERIES_ERRORS as exc:
            msg = f"window {w.id}, venue {v}, market {c}: cannot run: {exc}"
            log.warning(msg)
            return ([msg], None), {"window": w.id, "venue": v, "market": c, "error": f"{type(exc).__name__}: {exc}"}
        row, se, ev, dy = unpack_series_result(res)
        if v == "ftx" and hedge_sd is None:
            row["hedge_source"] = "own path (no binance series loaded)"
        elif v == "ftx":
            src = hedge_sd.source
            row["hedge_source"] = f"binance {src.market} {src.symbol} ({hedge_sd.timeframe})"
        msgs = []
        if row.get("reported_unresolved_share", 0.0) > UNRESOLVED_WARN:
            msg = (f"window {w.id}, binance {c}: {row['reported_unresolved_share']:.0%} of the liquidated notional "
                   f"comes from simulated accounts standing for more real orders than "
                   f"disclosure.bandwidth_real_orders: the reported figure moves with --accounts; raise it")
            log.warning(msg)
            msgs.append(msg)
        cov = {"window": w.id, "venue": v, "market": c, "timeframe": sd.timeframe,
               "rows": sd.rows, "gaps_pct": sd.gaps_pct, "price_source": sd.price_source}
        return (msgs, (row, se, ev, dy, cov)), None

    def finished(v, c, out, failure):
        done[(v, c)] = out
        if failure is not None:
            failures.append(failure)
        if on_series:
            on_series(v, c, "failed" if failure is not None else "ran")

    todo = []
    for v in order:
        for c in coins:
            sd = lw.series.get((v, c))
            if sd is None:
                if on_series:
                    on_series(v, c, "skipped")
                continue
            todo.append((v, c, sd))
    if threads > 1 and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=min(int(threads), len(todo))) as ex:
            futures = {ex.submit(one, v, c, sd): (v, c) for v, c, sd in todo}
            for fut in as_completed(futures):
                finished(*futures[fut], *fut.result())
    else:
        for v, c, sd in todo:
            finished(v, c, *one(v, c, sd))
    notes = list(lw.notes)
    rows, series, events, daily, coverage, ran = [], [], [], [], [], []
    for v in venues:
        for c in coins:
            msgs, res = done.get((v, c), ([], None))
            notes += msgs
            if res is None:
                continue
            row, se, ev, dy, cov = res
            rows.append(row)
            series.append(se)
            events.append(ev)
            if dy is not None:
                daily.append(dy)
            coverage.append(cov)
            ran.append(f"{v} {c}")
    failures.sort(key=lambda f: (venues.index(f["venue"]), list(coins).index(f["market"])))
    status = "ran" if rows else "skipped"
    reason = "; ".join(lw.problems)
    if not rows and failures:
        by_error: dict[str, list[str]] = {}
        for f in failures:
            by_error.setdefault(f["error"].split(": ", 1)[-1], []).append(f"{f['venue']} {f['market']}")
        reason = "; ".join([reason] * bool(reason) + [f"{', '.join(who)} cannot run: {err}"
                                                      for err, who in by_error.items()])
    elif not rows and not reason:
        reason = "no series could run: " + "; ".join(notes)
    entry = {"id": w.id, "label": w.label, "start": w.start.isoformat(), "end": w.end.isoformat(),
             "status": status, "reason": reason, "series_ran": ran, "notes": notes}
    return {"window": entry, "rows": rows, "coverage": coverage, "failures": failures,
            "series": _concat(series), "events": _concat(events), "daily": _concat(daily) if daily else None}


# --------------------------------------------------------------------------- windows in parallel
MAX_AUTO_WORKERS = 4    # a whole-year part holds ~1 GB while it runs


def resolve_workers(workers: int | None, n_windows: int) -> int:
    """Processes for `n_windows` windows: `workers`, or one per core (at most MAX_AUTO_WORKERS);
    never more than the windows, and 1 inside a daemonic process (a Dask or pool worker cannot
    start its own)."""
    if n_windows <= 1 or mp.current_process().daemon:
        return 1
    n = int(workers) if workers is not None else min(os.cpu_count() or 1, MAX_AUTO_WORKERS)
    return max(1, min(n, n_windows))


def resolve_threads(workers: int | None, n_windows: int, n_series: int) -> int:
    """Threads for one window's series when that window is the only one to run (several windows
    run in processes instead, one window each): `workers`, or one per core (at most
    MAX_AUTO_WORKERS); never more than the series, and 1 inside a daemonic process."""
    if n_windows != 1 or n_series <= 1 or mp.current_process().daemon:
        return 1
    n = int(workers) if workers is not None else min(os.cpu_count() or 1, MAX_AUTO_WORKERS)
    return max(1, min(n, n_series))


def series_threads(workers: int | None, n_windows: int, venues, coins) -> int:
    """resolve_threads, but one thread while a venue's kernels are not in the numba cache yet:
    compiling is what a cold run spends its time on, and threads only queue on numba's compiler
    lock (measured, `run --window 2022-10` on an empty cache: 57 s sequential, 86 s on 2 threads)."""
    n = resolve_threads(workers, n_windows, len(venues) * len(coins))
    if n > 1 and not all(warmup.kernel_cached(v) for v in venues):
        return 1
    return n


def _worker_init() -> None:
    # the pool itself spreads the venues' first compiles (run_parallel's run_order): no prefetch child
    os.environ["LIQREPLAY_PREFETCH"] = "0"


def run_parallel(todo, loader, venues, coins, params: Params, seed: int, deterministic: bool, n_workers: int):
    """Yield (window id, part) as each window finishes in a pool of `n_workers` processes. This
    process loads each window (DuckDB) and submits it, the longest first (the whole year, then by
    length); the second job runs its venues in reverse order, so that on a cold numba cache the
    two processes compile different venues' kernels and then load each other's from the cache."""
    order = sorted(todo, key=lambda w: (not getattr(w, "whole_year", False), -(w.end - w.start).total_seconds()))
    ctx = mp.get_context("spawn")     # no fork of a process holding DuckDB's and numba's threads
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_worker_init) as ex:
        futures = {}
        try:
            for i, w in enumerate(order):
                lw = load_window(loader, w, venues, coins)
                for p in lw.problems:
                    log.warning("skipped: %s", p)
                run_order = list(reversed(list(venues))) if i % 2 == 1 else None
                futures[ex.submit(run_loaded, lw, venues, coins, params, seed, deterministic=deterministic,
                                  run_order=run_order)] = w.id
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def series_statuses(part: dict, venues, coins):
    """(venue, coin, "ran" | "failed" | "skipped") of a finished window part, in order."""
    ran = set(part["window"].get("series_ran", []))
    failed = {(f["venue"], f["market"]) for f in part.get("failures", [])}
    for v in venues:
        for c in coins:
            yield v, c, "ran" if f"{v} {c}" in ran else ("failed" if (v, c) in failed else "skipped")


def _concat(frames: list) -> pd.DataFrame:
    frames = [f for f in frames if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------- resume parts
def _load_part(parts: Path, wid: str, key: dict):
    meta = parts / f"{wid}.json"
    if not meta.exists():
        return None
    try:
        saved = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("key") != key:
        return None
    try:
        se = pd.read_parquet(parts / f"{wid}.series.parquet")
        ev = pd.read_parquet(parts / f"{wid}.events.parquet")
        dy = pd.read_parquet(parts / f"{wid}.daily.parquet") if saved.get("daily") else None
    except (OSError, ValueError):
        return None
    return {"window": saved["window"], "rows": saved["rows"], "coverage": saved["coverage"], "series": se,
            "events": ev, "daily": dy, "failures": saved.get("failures", [])}


def _save_part(parts: Path, wid: str, key: dict, part: dict) -> None:
    for name in ("series", "events", "daily"):
        df = part.get(name)
        if df is not None:
            with atomic.atomic_path(parts / f"{wid}.{name}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
    blob = {"key": key, "window": part["window"], "rows": part["rows"], "coverage": part["coverage"],
            "failures": part.get("failures", []), "daily": part.get("daily") is not None}
    # the .json marks the part complete: written last
    atomic.write_text(parts / f"{wid}.json", json.dumps(_jsonable(blob)))


# --------------------------------------------------------------------------- the run
def run_windows(windows, *, lake, params=None, seed: int = DEFAULT_SEED, accounts: int | None = None,
                venues=None, markets=None, out=None, resume: bool = True, on_progress: Progress | None = None,
                scenarios=None, deterministic: bool = False, command: str | None = None,
                workers: int | None = 1) -> Results:
    """Replay `windows` (ids, Window objects or "all") on the lake's data and return the
    Results (as `backtest.results.load_results` returns them).

    `out`: the results directory (written, and resumed from `<out>/.parts`); None keeps
    nothing on disk. `on_progress(event)` gets one dict per series: kind ("series"), done,
    total, window, venue, market, status ("ran", "skipped", "failed", "resumed"), elapsed_s.
    `workers`: processes replaying windows at once (None: one per core, at most
    MAX_AUTO_WORKERS and one per window to run); with a single window to run, threads
    replaying its series at once instead. Each window's results are the same whatever runs
    where (every draw is keyed by seed, window, venue and market).
    Raises UserError (one line) for bad inputs and NothingRan when no series ran.
    """
    params = as_params(params)
    if workers is not None and int(workers) < 1:
        raise UserError("--workers must be at least 1")
    if accounts is not None:
        if int(accounts) < 2:
            raise UserError("--accounts must be at least 2")
        params = params.with_overrides({"population.n_accounts": int(accounts)})
    sc = as_scenarios(scenarios)
    wins = resolve_windows(sc, windows)
    vs, cs = resolve_venues_markets(sc, venues, markets)
    catalog = open_catalog(lake)
    snapshot = catalog.snapshot_id()
    n_accounts = params.population.n_accounts

    tmpdir = None
    if out is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="liqreplay-run-")
        out_dir, resume = Path(tmpdir.name) / "run", False
    else:
        out_dir = Path(out)
    created = not out_dir.exists()
    parts = make_out_dir(out_dir) / ".parts"
    run_id = out_dir.name if out is not None else (
        f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{params.hash()[:8]}-s{seed}")
    resume_key = {"version": RESULTS_VERSION, "params_hash": params.hash(), "seed": int(seed),
                  "data_snapshot": snapshot, "n_accounts": n_accounts, "venues": list(vs), "markets": list(cs),
                  "deterministic": bool(deterministic), "scenarios": file_hash(sc.source_file)}

    loader = SeriesLoader(catalog, sc, lookback_days=params.population.entry_lookback_days, params=params)
    total = len(wins) * len(vs) * len(cs)
    done = [0]
    t0 = time.time()

    def emit(wid, v, c, status):
        done[0] += 1
        if on_progress:
            on_progress({"kind": "series", "done": done[0], "total": total, "window": wid, "venue": v,
                         "market": c, "status": status, "elapsed_s": time.time() - t0})

    win_entries, rows, series, events, daily, coverage = [], [], [], [], [], []
    try:
        done_parts: dict[str, dict] = {}
        for w in wins:
            part = _load_part(parts, w.id, resume_key) if resume else None
            if part is not None:
                log.info("window %s: reusing finished results in %s", w.id, parts)
                done_parts[w.id] = part
                for v in vs:
                    for c in cs:
                        emit(w.id, v, c, "resumed")
        todo = [w for w in wins if w.id not in done_parts]
        n_workers = resolve_workers(workers, len(todo))
        if n_workers <= 1:
            for w in todo:
                lw = load_window(loader, w, vs, cs)
                for p in lw.problems:
                    log.warning("skipped: %s", p)
                part = run_loaded(lw, vs, cs, params, seed, deterministic=deterministic,
                                  on_series=lambda v, c, st, wid=w.id: emit(wid, v, c, st),
                                  threads=series_threads(workers, len(todo), vs, cs))
                _save_part(parts, w.id, resume_key, part)
                done_parts[w.id] = part
        else:
            for wid, part in run_parallel(todo, loader, vs, cs, params, seed, deterministic, n_workers):
                _save_part(parts, wid, resume_key, part)
                done_parts[wid] = part
                for v, c, st in series_statuses(part, vs, cs):
                    emit(wid, v, c, st)
        for w in wins:
            part = done_parts[w.id]
            win_entries.append(part["window"])
            if on_progress:
                e = part["window"]
                on_progress({"kind": "window", "window": w.id, "status": e["status"], "reason": e.get("reason", "")})
            rows += part["rows"]
            coverage += part["coverage"]
            series.append(part["series"])
            events.append(part["events"])
            if part.get("daily") is not None:
                daily.append(part["daily"])
        if not rows:
            reasons = "; ".join(e["reason"] for e in win_entries if e.get("reason")) or "no series loaded"
            raise NothingRan(f"nothing ran, no results written: {reasons}")
    except BaseException:
        if created and out is not None:
            # nothing of a new results directory is kept when the run did not finish
            has_parts = any(parts.glob("*.json"))
            if not rows or not has_parts:
                shutil.rmtree(out_dir, ignore_errors=True)
        if tmpdir is not None:
            tmpdir.cleanup()
        raise

    meta = {"run_id": run_id, "data_snapshot": snapshot, "params_hash": params.hash(),
            "params_file": params_path(params), "seed": int(seed), "params": params.to_dict(),
            "param_sources": params.sources(),
            "param_ranges": params.sweep_ranges(), "n_accounts": n_accounts, "lake": str(catalog.root),
            "command": command or "", "sweep_params": [], "sweep_samples": 0}
    try:
        write_results(out_dir, meta=meta, windows=win_entries, rows=rows, series=series, events=events,
                      coverage=coverage, daily=daily or None)
        # the model's daily figures against Coinalyze's (observed_daily.parquet, calibration.json),
        # so the report holds the model to the data without reading the lake
        ran = {e["id"] for e in win_entries if e.get("status") == "ran"}
        write_run_calibration(out_dir, catalog=catalog, daily=pd.concat(daily, ignore_index=True) if daily else None,
                              windows=[w for w in wins if w.id in ran])
        return load_results(out_dir)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()


def command_line(argv: Iterable[str] | None = None) -> str:
    args = list(argv if argv is not None else sys.argv[1:])
    return "liqreplay " + " ".join(args)
