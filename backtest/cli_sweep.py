"""`liqreplay sweep` (see backtest/console.py; the library is backtest/sweep.py).

    liqreplay sweep [--window ID ... | --all] [--venue V ...] [--market M ...] --samples N
                    [--accounts N] [--seed S] [--params FILE] [--out DIR]
                    [--scheduler tcp://HOST:PORT] [--workers K] [--bench]

Samples every ranged parameter of params.toml N times (scrambled Sobol), runs each sample as
one task on a local Dask cluster (K worker processes) or a user's scheduler, and writes
sweep.parquet, sweep.json, sensitivity.json and frontier.json into DIR. Rerunning with the
same arguments skips the finished samples. `--out` may be a `liqreplay run` results
directory: its report then shows the sweep.

`--bench`: samples per second on one window at --accounts per series with 1 and 2 local
workers (a printed figure, nothing kept).
"""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backtest.cli import DEFAULT_SEED
from backtest.fmt import money
from fetch.cmdline import add_lake_option, non_negative_int, positive_int
from fetch.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="sample the uncertain parameters on Dask: distribution, drivers, frontier",
                              description="Sweep every parameter with a range in params.toml (quasi-random) over "
                                          "the windows, on a local Dask cluster or a user's scheduler.")
    p.add_argument("--window", action="append", metavar="ID", help="window id (repeatable), e.g. 2022-10")
    p.add_argument("--all", action="store_true", help="every window plus the whole-year run")
    p.add_argument("--venue", action="append", choices=("ftx", "binance"), help="venue (repeatable; default both)")
    p.add_argument("--market", action="append", metavar="COIN", help="market coin (repeatable; default BTC ETH)")
    p.add_argument("--samples", type=positive_int, required=True, metavar="N", help="number of parameter samples")
    p.add_argument("--accounts", type=positive_int, default=20000, metavar="N",
                   help="accounts per series (default 20000)")
    p.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED, help=f"sweep seed (default {DEFAULT_SEED})")
    p.add_argument("--params", metavar="FILE", help="parameter file (its ranges are what is swept)")
    p.add_argument("--out", metavar="DIR", help="output directory (default results/sweep-s<seed>)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                                                          "(default: a local cluster)")
    p.add_argument("--workers", type=non_negative_int, metavar="K", help="local worker processes (default: the cores; "
                                                            "0 runs in this process without Dask)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for --scheduler to answer (default 10; then exit 75)")
    p.add_argument("--search-evals", type=non_negative_int, default=12, metavar="N",
                   help="model runs for the frontier search after the sweep (default 12; 0: none)")
    p.add_argument("--deterministic", action="store_true", help="FTX step 1 in expected-value mode (no draws)")
    add_lake_option(p)
    p.add_argument("--scenarios", metavar="FILE", help="scenario file (default backtest/scenarios.toml)")
    p.add_argument("--bench", action="store_true",
                   help="print samples per second with 1 and 2 local workers (--samples per measurement)")
    p.set_defaults(func=cmd_sweep)


class SweepProgress:
    """A tqdm bar on a terminal (done, rate, time left); one log line per finished batch otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.total = 0
        self.batch = 1
        self.t0 = time.time()

    def __call__(self, ev: dict) -> None:
        if ev["kind"] == "start":
            self.total = ev["total"]
            self.batch = max(1, self.total // 20)
            self.t0 = time.time()
            if ev["resumed"]:
                log.info("sweep: %d of %d samples already finished (resumed)", ev["resumed"], self.total)
            if self.tty:
                from fetch.progress import progress_bar
                self.bar = progress_bar(total=self.total, desc="sweep", unit="sample", enabled=True,
                                        initial=ev["resumed"])
        elif ev["kind"] == "sample":
            if self.bar is not None:
                self.bar.update(1)
                if ev["failed"]:
                    self.bar.set_postfix_str(f"{ev['failed']} failed")
            elif ev["done"] % self.batch == 0 or ev["done"] == ev["total"]:
                rate = ev["ran_now"] / max(ev["elapsed_s"], 1e-9)
                left = (ev["total"] - ev["done"]) / rate if rate > 0 else float("nan")
                log.info("sweep: %d/%d samples (%d failed), %.2f samples/s, %.0fs left",
                         ev["done"], ev["total"], ev["failed"], rate, left)
        elif ev["kind"] == "search":
            log.info("sweep: frontier search ran %d model run(s)", ev["evals"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def quiet_dask() -> None:
    """Dask's cluster start/stop chatter is not the user's business (here and in the workers)."""
    import dask
    import distributed  # noqa: F401  (configures its loggers on import; set the levels after)
    dask.config.set({"logging.distributed": "warning"})
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_sweep(args) -> int:
    from backtest import sensitivity as S  # scipy, SALib, Dask: paid by `sweep` only
    from backtest.sweep import run_sweep

    if not args.all and not args.window:
        raise UserError("say which windows: --window ID (repeatable) or --all")
    if args.bench:
        if not args.verbose:
            quiet_dask()
        return _bench(args)
    if not args.verbose:
        quiet_dask()
    out = Path(args.out) if args.out else Path("results") / f"sweep-s{args.seed}"
    prog = SweepProgress()
    t0 = time.time()
    try:   # SchedulerUnreachable is a TemporaryFailure: the console says it in one line, exit 75
        res = run_sweep("all" if args.all else args.window, lake=args.lake, params=args.params, seed=args.seed,
                        samples=args.samples, accounts=args.accounts, venues=args.venue, markets=args.market,
                        out=out, scenarios=args.scenarios, deterministic=bool(args.deterministic),
                        workers=args.workers, scheduler=args.scheduler, connect_timeout=args.connect_timeout,
                        on_progress=prog,
                        search=args.search_evals > 0, search_evals=args.search_evals)
    finally:
        prog.close()
    m = res.meta
    print(f"sweep: {out}  ({m['samples']} samples x {len(m['windows'])} window(s), seed {m['seed']}, "
          f"{m['accounts']} accounts, {time.time() - t0:.1f}s)")
    if m["failed_samples"]:
        first = res.rows.loc[res.rows["error"].notna(), "error"].iloc[0]
        if m["failed_samples"] == m["samples"]:
            print(f"liqreplay sweep: every sample failed (rows with the errors in {out / 'sweep.parquet'}), "
                  f"e.g.: {first}", file=sys.stderr)
            return 1
        print(f"  {m['failed_samples']} sample(s) failed, e.g.: {first}")
    dist = res.sensitivity.get("distribution", {})
    for col, label in (("ftx_2022", "FTX house loss"), ("binance_2022", "Binance house loss")):
        d = dist.get(col)
        if d:
            print(f"  {label:<20} median {money(d['median']):>9}  5-95% {money(d['q05'])} - {money(d['q95'])}")
    for col in ("ftx_2022", "ftx_binance_ratio"):
        ent = [e for e in (res.sensitivity["outputs"].get(col) or {}).get("params", [])
               if e.get("rho") is not None and np.isfinite(e["rho"])][:3]
        if ent:
            print(f"  drivers of {col}: " + ", ".join(f"{e['param']} (rho {e['rho']:+.2f})" for e in ent))
    for line in S.plain_words(res.frontier):
        print("  " + line)
    return 0


def _bench(args) -> int:
    """Samples per second at --accounts on the first window with 1 and 2 local workers."""
    from backtest.sweep import run_sweep  # Dask: paid by `sweep --bench` only
    wins = ["all"] if args.all else args.window[:1]
    print(f"sweep bench: window {wins[0]}, {args.accounts} accounts per series, {args.samples} samples per run")
    for k in (1, 2):
        tmp = tempfile.mkdtemp(prefix="liqreplay-sweep-bench-")
        try:
            t0 = time.time()
            run_sweep(wins if wins != ["all"] else "all", lake=args.lake, params=args.params, seed=args.seed,
                      samples=args.samples, accounts=args.accounts, venues=args.venue, markets=args.market,
                      out=tmp, scenarios=args.scenarios, workers=k, search=False)
            wall = time.time() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"  {k} worker(s): {args.samples / wall:.3f} samples/s ({wall:.1f}s wall, cluster start included)")
    return 0
