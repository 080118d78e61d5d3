"""`liqreplay run` and `liqreplay bench` (see backtest/console.py).

    liqreplay run [--window ID ... | --all] [--venue V ...] [--market M ...] [--params FILE]
                  [--seed N] [--sweep [N]] [--accounts N] [--out DIR] [--lake DIR]
    liqreplay bench [--sizes 10000,100000,1000000] [--days 365] [--oracle-accounts N]

`run` replays each window on the lake's data and writes results/<run-id>/ (Contract 3); the
orchestration is backtest.api.run_windows, this module parses and prints.
A window whose data cannot load is reported and skipped; the others still run. Finished
windows are kept in <out>/.parts and reused when the same parameters, seed, data snapshot
and population size are asked for again (resume after an interruption).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from backtest.fmt import money
from backtest.params import load_params
from fetch.cmdline import add_lake_option, non_negative_int, positive_int
from fetch.errors import UserError
from fetch.progress import progress_bar

log = logging.getLogger(__name__)

DEFAULT_SEED = 20221108   # the same as backtest.api.DEFAULT_SEED (not imported: keeps `--help` free of numba)


def register(subparsers) -> None:
    """Add this stage's subcommands to the `liqreplay` parser."""
    p = subparsers.add_parser("run", help="replay crash windows through both liquidation engines",
                              description="Replay the 2022 windows (and the whole year) on the lake's data.")
    p.add_argument("--window", action="append", metavar="ID",
                   help=f"window id (repeatable): {_window_ids()}")
    p.add_argument("--all", action="store_true", help="every window plus the whole-year run")
    p.add_argument("--venue", action="append", choices=("ftx", "binance"), help="venue (repeatable; default both)")
    p.add_argument("--market", action="append", metavar="COIN", help="market coin (repeatable; default BTC ETH)")
    p.add_argument("--params", metavar="FILE", help="parameter file (a subset of backtest/params.toml)")
    p.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument("--sweep", nargs="?", type=non_negative_int, const=20, default=0, metavar="N",
                   help="then `liqreplay sweep --samples N` (default 20) over the same windows, in this process, "
                        "into the same directory")
    p.add_argument("--sweep-accounts", type=positive_int, default=20000, metavar="N",
                   help="accounts per series in each sweep sample (default 20000)")
    p.add_argument("--accounts", type=positive_int, metavar="N",
                   help="accounts per series (default population.n_accounts)")
    p.add_argument("--deterministic", action="store_true", help="FTX step 1 in expected-value mode (no draws)")
    p.add_argument("--out", metavar="DIR", help="output directory (default results/<run-id>)")
    add_lake_option(p)
    p.add_argument("--scenarios", metavar="FILE", help="scenario file (default backtest/scenarios.toml)")
    p.add_argument("--no-resume", action="store_true", help="recompute windows already in <out>/.parts")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="processes replaying windows at once, or with one window, threads replaying its series "
                        "(default: one per core, at most 4; results are the same whatever the count)")
    p.set_defaults(func=cmd_run)

    b = subparsers.add_parser("bench", help="time the replay on a synthetic year (and the oracle)",
                              description="Synthetic 1-minute year, 2 venues x 2 markets; prints a scaling table.")
    b.add_argument("--sizes", default="10000,100000,1000000", help="accounts per venue-market, comma separated")
    b.add_argument("--days", type=_positive_float, default=365.0,
                   help="length of the synthetic path in days (default 365)")
    b.add_argument("--oracle-accounts", type=positive_int, default=200, help="accounts for the oracle comparison")
    b.add_argument("--oracle-bars", type=positive_int, default=240, help="1-minute bars for the oracle comparison")
    b.add_argument("--seed", type=non_negative_int, default=7)
    b.add_argument("--venue", action="append", choices=["ftx", "binance"],
                   help="time only this venue's series (repeatable; default both)")
    b.add_argument("--threads", type=positive_int, metavar="N",
                   help="series replayed at once (default: one per core, at most 4; 1 times them one by one)")
    b.set_defaults(func=cmd_bench)


def _window_ids() -> str:
    """The default scenario file's window ids with their labels, for `run --help`."""
    from backtest.scenarios import load_scenarios  # pandas: not paid by `liqreplay --help` of other commands
    try:
        sc = load_scenarios()
    except Exception as exc:  # noqa: BLE001 (help must render even with a broken scenario file)
        return f"see backtest/scenarios.toml ({exc})"
    return ", ".join(w.id for w in sc.windows).replace("%", "%%") + \
        " (labels and dates: `liqreplay data status`)"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------
class SeriesProgress:
    """on_progress for run_windows: a tqdm bar on a terminal, one log line per finished series otherwise."""

    def __init__(self, prefix: str = "run"):
        self.prefix = prefix
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.skipped: list[str] = []

    def __call__(self, ev: dict) -> None:
        if ev["kind"] == "window":
            if ev["status"] == "skipped":   # said after the run: a run where nothing ran says one line
                self.skipped.append(f"liqreplay {self.prefix}: window {ev['window']} skipped: {ev['reason']}")
            return
        label = f"{ev['window']} {ev['venue']} {ev['market']}"
        if self.tty:
            if self.bar is None:
                self.bar = progress_bar(total=ev["total"], desc=self.prefix, unit="series", enabled=True)
            self.bar.set_postfix_str(f"{label} {ev['status']}")
            self.bar.update(1)
        else:  # a log or a pipe: one line per finished series, no carriage returns
            log.info("[%d/%d] %s %s (%.1fs elapsed)", ev["done"], ev["total"], label, ev["status"], ev["elapsed_s"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_run(args) -> int:
    from backtest.api import run_windows  # numba kernels, pandas: paid by `run` only
    from backtest.results import load_results

    if not args.all and not args.window:
        raise UserError("say which windows: --window ID (repeatable) or --all")
    t0 = time.time()
    params = load_params(args.params)
    out = Path(args.out) if args.out else Path("results") / (
        f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{params.hash()[:8]}-s{args.seed}")
    prog = SeriesProgress("run")
    try:
        res = run_windows("all" if args.all else args.window, lake=args.lake, params=params,
                          seed=args.seed, accounts=args.accounts, venues=args.venue, markets=args.market, out=out,
                          resume=not args.no_resume, on_progress=prog, scenarios=args.scenarios,
                          deterministic=bool(args.deterministic), workers=args.workers,
                          command="liqreplay run " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []))
    finally:
        prog.close()
    for line in prog.skipped:
        print(line, file=sys.stderr)
    if args.sweep:
        # thin alias of `liqreplay sweep` over the same windows, in this process, into the same directory
        from backtest.cli_sweep import SweepProgress  # a cycle: cli_sweep imports DEFAULT_SEED from here
        from backtest.sweep import run_sweep  # Dask: paid by --sweep only
        sp = SweepProgress()
        try:
            run_sweep([w["id"] for w in res.summary["windows"]], lake=args.lake, params=params,
                      seed=args.seed, samples=int(args.sweep), accounts=int(args.sweep_accounts),
                      venues=args.venue, markets=args.market, out=out, scenarios=args.scenarios,
                      deterministic=bool(args.deterministic), workers=0, on_progress=sp, search=False)
        finally:
            sp.close()
        res = load_results(out)
    _print_summary(out, res.summary["windows"], res.summary["rows"], time.time() - t0)
    return 0


def _print_summary(out: Path, wins, rows, wall) -> None:
    print(f"results: {out}  ({wall:.1f}s)")
    for w in wins:
        if w["status"] == "skipped":
            print(f"  {w['id']:<10} skipped: {w['reason']}")
            continue
        for r in (x for x in rows if x["window"] == w["id"]):   # write_results added the per-$1B-OI fields
            print(f"  {w['id']:<10} {r['venue']:<8} {r['market']:<4} liquidated {money(r['liquidated_usd']):>9}"
                  f"  house loss {money(r['house_loss_usd']):>9} ({money(r['house_loss_usd_per_1b_oi'])}/$1B OI)"
                  f"  {r['timeframe']:>3} {r['price_source']}")
        if w.get("reason"):
            print(f"  {'':<10} not run: {w['reason']}")


# --------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    from backtest.bench import run_bench  # numba kernels: paid by `bench` only
    try:
        sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    except ValueError:
        raise UserError("--sizes takes comma-separated integers, e.g. 10000,100000") from None
    if not sizes or min(sizes) < 2:
        raise UserError("--sizes needs population sizes of at least 2")
    return run_bench(sizes, days=args.days, oracle_accounts=args.oracle_accounts, oracle_bars=args.oracle_bars,
                     seed=args.seed, venues=args.venue, threads=args.threads)
