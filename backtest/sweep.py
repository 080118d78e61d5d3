"""Parameter sweeps on Dask: the distribution of house loss over everything we do not know.

    res = run_sweep(["2022-10"], lake="lake", samples=256, seed=1, accounts=20000, out="sw")
    res.rows                   # sweep.parquet: one row per (sample, window, venue, market)

Every parameter of params.toml with a `range` is a dimension (discovered, not listed: bool
defaults are drawn as switches, ints rounded, ranges wider than a factor 10 with a positive
low drawn log-uniformly). The design is a scrambled Sobol sequence (scipy.stats.qmc), seeded
from the sweep seed, so the first n points of a larger sweep are the n points of a smaller
one; sample i runs with the seed `SeedSequence(seed).spawn(N)[i]` (which also draws its
intra-bar paths). Each sample is one pure task `(parameters, seed) -> rows`: on a
`distributed.LocalCluster` (`workers` processes, one thread each), on a user's scheduler
(`scheduler="tcp://host:port"`), or in this process (`workers=0`). The loaded series go to
the workers once (scattered); rows come back through the scheduler; each sample's daily
frames (bulky) are written by the worker to `<out>/.sweep/<key>/daily/` (a remote cluster
needs `out` on a filesystem the workers share for those; the rows do not).

Resume: each finished sample's rows are one Parquet partition `<out>/.sweep/<key>/rows/`
written atomically (temp file + os.replace), so Ctrl-C leaves no half-written partition and a
rerun with the same key (parameters, seed, windows, data snapshot, accounts) skips them.

Outputs in `out`: sweep.parquet, sweep.json (design, seed, size, quantiles), sensitivity.json
and frontier.json (backtest/sensitivity.py); when `out` is also a `liqreplay run` results
directory its summary.json gains the sweep block the report reads.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from backtest import api, rng
from backtest import sensitivity as S
from backtest.params import Params, ParamsError
from backtest.replay import warmup
from backtest.results import _jsonable, add_per_1b
from backtest.series_loader import SeriesLoader
from fetch import atomic
from fetch.errors import TemporaryFailure, UserError

log = logging.getLogger(__name__)

SWEEP_VERSION = 1     # bump when a code change alters sweep rows: finished partitions are recomputed
ID_COLUMNS = ("sample", "seed", "window", "venue", "market", "error")
QUANTILE_METRICS = ("house_loss_usd", "house_loss_usd_per_1b_oi", "liquidated_usd", "reported_liquidated_usd",
                    "blp_pnl_usd", "fund_drawdown_usd", "fund_end_usd", "adl_usd", "user_loss_usd")


class SchedulerUnreachable(TemporaryFailure):
    """The Dask scheduler at the given address did not answer (one line, exit 75)."""


# --------------------------------------------------------------------------- the design
@dataclass(frozen=True)
class Dimension:
    """One swept parameter: its range, how it is drawn, and its sourced default."""

    key: str
    lo: float
    hi: float
    kind: str          # "float", "log", "int", "bool"
    default: float

    def value(self, u: float):
        if self.kind == "bool":
            return bool(u >= 0.5)
        if self.kind == "log":
            x = math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        else:
            x = self.lo + u * (self.hi - self.lo)
        x = min(max(x, self.lo), self.hi)      # exp(log(lo)) can land a hair outside the range
        if self.kind == "int":
            return int(round(x))
        return float(x)

    def unit(self, x: float) -> float:
        """Where x sits in the range, 0 at lo and 1 at hi (log scale for log dimensions)."""
        x = float(x)
        if self.hi == self.lo:
            return 0.5
        if self.kind == "log":
            return (math.log(max(x, 1e-300)) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        return (x - self.lo) / (self.hi - self.lo)


def dimensions(params: Params) -> list[Dimension]:
    """Every parameter with a range (a numeric or boolean default), in key order."""
    dims = []
    for key, (lo, hi) in sorted(params.sweep_ranges().items()):
        d = params.get(key)
        if isinstance(d, bool):
            kind = "bool"
        elif isinstance(d, int):
            kind = "int"
        elif isinstance(d, float):
            kind = "log" if (lo > 0 and hi / lo > 10) else "float"
        else:   # a dated or string value: no number to sweep
            log.info("sweep: %s has a range but a %s value; not swept", key, type(d).__name__)
            continue
        dims.append(Dimension(key, float(lo), float(hi), kind, float(d)))
    return dims


def design(dims: list[Dimension], n: int, seed: int) -> np.ndarray:
    """n x d points in [0, 1): a scrambled Sobol sequence (prefix-stable in n)."""
    from scipy.stats import qmc
    if not dims:
        return np.zeros((n, 0))
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), rng.SWEEP]))
    sob = qmc.Sobol(len(dims), scramble=True, rng=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # n need not be a power of 2
        return sob.random(n)


def sample_seeds(seed: int, n: int) -> list[int]:
    return [int(c.generate_state(1, np.uint32)[0]) for c in np.random.SeedSequence(int(seed)).spawn(n)]


def overrides_of(dims: list[Dimension], u: np.ndarray) -> dict:
    return {d.key: d.value(float(x)) for d, x in zip(dims, u, strict=True)}


# --------------------------------------------------------------------------- one sample (pure task)
def sample_task(data: dict, sample, overrides: dict, seed: int, cfg: dict) -> list[dict]:
    """Run one sample over every loaded window: rows of numbers (or one row per error).

    `data` = {"params": base Params, "windows": [LoadedWindow, ...]} (scattered once);
    `cfg` = accounts, venues, coins, deterministic, daily_dir (None: daily frames not kept)."""
    head = {"sample": sample, "seed": int(seed), **overrides}
    try:
        params = data["params"].with_overrides(overrides)
        check = getattr(params, "validate", None)   # the hardening's domain checks, where present
        if callable(check):
            check()
    except (ParamsError, ValueError, TypeError) as exc:
        return [{**head, "window": None, "venue": None, "market": None,
                 "error": f"parameters: {type(exc).__name__}: {exc}"}]
    rows, daily = [], []
    for lw in data["windows"]:
        part = api.run_loaded(lw, cfg["venues"], cfg["coins"], params, seed, n_accounts=cfg["accounts"],
                              deterministic=cfg["deterministic"])
        for r in part["rows"]:
            r = add_per_1b(dict(r))
            nums = {k: (float(v) if v is not None else math.nan) for k, v in r.items()
                    if k not in ID_COLUMNS and (v is None or isinstance(v, (int, float, np.integer, np.floating)))
                    and not isinstance(v, bool) and k not in overrides}
            rows.append({**head, "window": r["window"], "venue": r["venue"], "market": r["market"],
                         "error": None, **nums})
        for f in part["failures"]:
            rows.append({**head, **f})
        if part.get("daily") is not None and len(part["daily"]):
            daily.append(part["daily"])
    if daily and cfg.get("daily_dir") and isinstance(sample, int):
        try:
            with atomic.atomic_path(Path(cfg["daily_dir"]) / f"sample-{sample:06d}.parquet") as tmp:
                pd.concat(daily, ignore_index=True).assign(sample=sample).to_parquet(tmp, index=False)
        except OSError as exc:
            log.warning("sample %s: daily frames not written (%s)", sample, exc)
    return rows


# --------------------------------------------------------------------------- executors
class _InProcess:
    """workers=0: the tasks one after another in this process (no Dask)."""

    def __init__(self):
        self.data = None

    def load(self, data):
        self.data = data

    def run(self, jobs, fn):
        for job_id, args in jobs:
            yield job_id, fn(self.data, *args)

    def close(self):
        pass


class _Dask:
    def __init__(self, *, scheduler: str | None, workers: int, connect_timeout: float, processes: bool):
        from distributed import Client, LocalCluster
        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout=connect_timeout)
            except ValueError as exc:   # "missing port number", "unknown address scheme"
                raise UserError(f"--scheduler {scheduler}: {exc}; give an address such as tcp://HOST:8786") from None
            except (OSError, TimeoutError) as exc:
                raise SchedulerUnreachable(
                    f"no Dask scheduler answers at {scheduler} (within {connect_timeout:.0f} s): start one "
                    f"(`dask scheduler`) or leave out --scheduler to use a local cluster") from exc
        else:
            # threads in one process talk in-process; the dashboard on a free local port
            net = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"} if processes else {
                "dashboard_address": ":0"}
            self.cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=processes, **net)
            self.client = Client(self.cluster)
        try:
            log.info("sweep: Dask dashboard at %s", self.client.dashboard_link)
        except Exception:   # no dashboard (bokeh absent): nothing to say
            pass
        self.data = None

    def load(self, data):
        """The loaded series to every worker, once: one future for the whole input (a dict would be
        scattered under its own keys, which a shared cluster's other users could collide with)."""
        self.data = self.client.scatter([data], broadcast=True, hash=False)[0]

    def run(self, jobs, fn):
        from distributed import as_completed
        futs = {}
        for job_id, args in jobs:
            f = self.client.submit(fn, self.data, *args, pure=False, key=f"liqreplay-sweep-{job_id}-{_token()}")
            futs[f] = job_id
        try:
            for f in as_completed(futs):
                yield futs[f], f.result()
        finally:
            for f in futs:
                f.cancel()

    def close(self):
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _token() -> str:
    return hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:8]


def open_executor(*, workers: int | None = None, scheduler: str | None = None,
                  connect_timeout: float = 10.0, processes: bool = True):
    if scheduler:
        return _Dask(scheduler=scheduler, workers=0, connect_timeout=connect_timeout, processes=processes)
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, 8))
    if int(workers) <= 0:
        return _InProcess()
    return _Dask(scheduler=None, workers=int(workers), connect_timeout=connect_timeout, processes=processes)


# --------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    out: Path
    rows: pd.DataFrame
    meta: dict
    sensitivity: dict
    frontier: dict


def sweep_key(**parts) -> str:
    blob = json.dumps(_jsonable(parts), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_sweep(windows, *, lake, params=None, seed: int = api.DEFAULT_SEED, samples: int, accounts: int = 20000,
              venues=None, markets=None, out, scenarios=None, deterministic: bool = False,
              workers: int | None = None, scheduler: str | None = None, connect_timeout: float = 10.0,
              processes: bool = True, on_progress: Callable[[dict], None] | None = None,
              search: bool = True, search_evals: int = 12, executor=None) -> SweepResult:
    """Sweep `samples` points of the ranged parameters over `windows`; write the outputs in `out`.

    `on_progress(event)`: kind "start" (total, resumed), "sample" (done, total, sample, failed),
    "search" (evals). Raises UserError for bad inputs, SchedulerUnreachable when `scheduler`
    does not answer."""
    if int(samples) < 1:
        raise UserError("--samples must be at least 1")
    if int(accounts) < 2:
        raise UserError("--accounts must be at least 2")
    params = api.as_params(params)
    sc = api.as_scenarios(scenarios)
    wins = api.resolve_windows(sc, windows)
    vs, cs = api.resolve_venues_markets(sc, venues, markets)
    dims = dimensions(params)
    if not dims:
        raise UserError("no parameter has a `range` in the parameter file: nothing to sweep")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the sweep (it is created)")
    catalog = api.open_catalog(lake)
    snapshot = catalog.snapshot_id()
    # local workers on a cold numba cache would each compile every kernel at once: compile them
    # here first (a tiny series per venue; nothing when the cache has them), then they load it
    if executor is None and scheduler is None and (workers is None or int(workers) > 1):
        if not all(warmup.kernel_cached(v) for v in vs):
            warmup.warm(vs, params)
    # connect first: a scheduler that does not answer is said within connect_timeout, before any loading
    ex = executor or open_executor(workers=workers, scheduler=scheduler, connect_timeout=connect_timeout,
                                   processes=processes)
    try:
        return _sweep(ex, wins, vs, cs, dims, params, sc, catalog, snapshot, seed=seed, samples=samples,
                      accounts=accounts, out=out, deterministic=deterministic, on_progress=on_progress,
                      search=search, search_evals=search_evals)
    finally:
        ex.close()


def _sweep(ex, wins, vs, cs, dims, params, sc, catalog, snapshot, *, seed, samples, accounts, out, deterministic,
           on_progress, search, search_evals) -> SweepResult:
    loader = SeriesLoader(catalog, sc, lookback_days=params.population.entry_lookback_days,
                          params=params)
    loaded, skipped = [], []
    for w in wins:
        lw = api.load_window(loader, w, vs, cs)
        if lw.series:
            loaded.append(lw)
        else:
            skipped.append({"id": w.id, "reason": "; ".join(lw.problems) or "no series loaded"})
    if not loaded:
        raise api.NothingRan("nothing to sweep: no window has data in the lake: "
                             + "; ".join(f"{s['id']}: {s['reason']}" for s in skipped))

    n = int(samples)
    U = design(dims, n, seed)
    seeds = sample_seeds(seed, n)
    key = sweep_key(version=SWEEP_VERSION, results=api.RESULTS_VERSION, params=params.hash(), seed=int(seed),
                    dims=[(d.key, d.lo, d.hi, d.kind) for d in dims], windows=[lw.window.id for lw in loaded],
                    venues=vs, markets=cs, accounts=int(accounts), snapshot=snapshot,
                    deterministic=bool(deterministic), scenarios=api.file_hash(sc.source_file))
    base = out / ".sweep" / key
    rows_dir, daily_dir = base / "rows", base / "daily"
    try:
        rows_dir.mkdir(parents=True, exist_ok=True)
        daily_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write --out {out}: {exc.strerror or exc}") from None

    def part(i):
        return rows_dir / f"sample-{i:06d}.parquet"

    todo = [i for i in range(n) if not part(i).exists()]
    cfg = {"accounts": int(accounts), "venues": vs, "coins": cs, "deterministic": bool(deterministic),
           "daily_dir": str(daily_dir)}
    data = {"params": params, "windows": loaded}
    if on_progress:
        on_progress({"kind": "start", "total": n, "resumed": n - len(todo)})
    t0 = time.time()
    ex.load(data)
    done, failed = n - len(todo), 0
    jobs = [(i, (i, overrides_of(dims, U[i]), seeds[i], cfg)) for i in todo]
    for i, rows in ex.run(jobs, sample_task):
        frame = pd.DataFrame(rows)
        with atomic.atomic_path(part(i)) as tmp:
            frame.to_parquet(tmp, index=False)
        done += 1
        bad = bool(frame["error"].notna().any()) if "error" in frame else False
        failed += bad
        if on_progress:
            on_progress({"kind": "sample", "sample": i, "done": done, "total": n, "failed": failed,
                         "elapsed_s": time.time() - t0, "ran_now": done - (n - len(todo))})

    frame = pd.concat([pd.read_parquet(part(i)) for i in range(n)], ignore_index=True)
    frame = _order_columns(frame, dims)
    year_ids = {lw.window.id for lw in loaded if lw.window.whole_year}
    totals = S.sample_totals(frame, dims, year_ids)
    sens = S.sensitivity(totals, dims, seed=int(seed))
    front = S.frontier(totals, dims, scope=S.scope_of([lw.window.id for lw in loaded], year_ids))
    if search and search_evals > 0 and "ftx" in vs and len(totals):
        def evaluate(u_points: list[np.ndarray], seed_: int) -> list[float]:
            jobs_ = [(f"search-{k}", (f"search-{k}", overrides_of(dims, u), seed_, {**cfg, "daily_dir": None}))
                     for k, u in enumerate(u_points)]
            got = dict(ex.run(jobs_, sample_task))
            vals = []
            for k in range(len(u_points)):
                f = pd.DataFrame(got[f"search-{k}"])
                vals.append(S.ftx_2022(f, year_ids))
            if on_progress:
                on_progress({"kind": "search", "evals": len(u_points)})
            return vals
        front = S.search_frontier(front, totals, sens, dims, evaluate, budget=int(search_evals),
                                  seed=int(seed))

    quant = quantiles(frame)
    meta = {"samples": n, "seed": int(seed), "accounts": int(accounts), "design": "sobol (scrambled)",
            "params": [d.key for d in dims],
            "dimensions": [{"key": d.key, "lo": d.lo, "hi": d.hi, "kind": d.kind, "default": d.default}
                           for d in dims],
            "windows": [{"id": lw.window.id, "whole_year": lw.window.whole_year} for lw in loaded],
            "skipped_windows": skipped, "venues": list(vs), "markets": list(cs), "key": key,
            "data_snapshot": snapshot, "params_hash": params.hash(),
            "params_file": api.params_path(params),
            "failed_samples": int(frame.loc[frame["error"].notna(), "sample"].nunique()) if "error" in frame else 0,
            "daily_dir": str(daily_dir.relative_to(out)) if any(daily_dir.iterdir()) else None,
            "quantiles": quant}
    write_outputs(out, frame, meta, sens, front)
    return SweepResult(out, frame, meta, sens, front)


def _order_columns(frame: pd.DataFrame, dims) -> pd.DataFrame:
    first = [c for c in ("sample", "seed", "window", "venue", "market") if c in frame]
    pcols = [d.key for d in dims if d.key in frame]
    rest = [c for c in frame.columns if c not in first and c not in pcols and c != "error"]
    cols = first + pcols + rest + (["error"] if "error" in frame else [])
    frame = frame[cols]
    if "error" in frame:
        frame = frame.astype({"error": "object"})
    return frame


def quantiles(frame: pd.DataFrame) -> list[dict]:
    ok = frame[frame["error"].isna()] if "error" in frame else frame
    out = []
    if ok.empty:
        return out
    for (w, v, m), g in ok.groupby(["window", "venue", "market"], sort=True):
        for metric in QUANTILE_METRICS:
            if metric not in g:
                continue
            x = g[metric].astype(float).dropna()
            if len(x):
                q = np.quantile(x, [0.05, 0.5, 0.95])
                out.append({"window": w, "venue": v, "market": m, "metric": metric,
                            "q05": float(q[0]), "q50": float(q[1]), "q95": float(q[2]), "n": int(len(x))})
    return out


def write_outputs(out: Path, frame: pd.DataFrame, meta: dict, sens: dict, front: dict) -> None:
    """sweep.parquet, sensitivity.json, frontier.json, sweep.json (last: marks a complete write);
    then the sweep block of summary.json when `out` is a results directory."""
    with atomic.atomic_path(out / "sweep.parquet") as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd")
    atomic.write_text(out / "sensitivity.json", json.dumps(_jsonable(sens), indent=2, allow_nan=False))
    atomic.write_text(out / "frontier.json", json.dumps(_jsonable(front), indent=2, allow_nan=False))
    atomic.write_text(out / "sweep.json", json.dumps(_jsonable(meta), indent=2, allow_nan=False))
    summary = out / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        s["sweep"] = {"params": meta["params"], "samples": meta["samples"], "seed": meta["seed"],
                      "accounts": meta["accounts"], "quantiles": meta["quantiles"]}
        atomic.write_text(summary, json.dumps(_jsonable(s), indent=2, allow_nan=False))
