"""`liqreplay run` and `liqreplay bench` (see backtest/console.py).

    liqreplay run [--window ID ... | --all] [--venue V ...] [--market M ...] [--params FILE]
                  [--seed N] [--sweep [N]] [--accounts N] [--out DIR] [--lake DIR]
    liqreplay bench [--sizes 10000,100000,1000000] [--days 365] [--oracle-accounts N]

`run` replays each window on the lake's data and writes results/<run-id>/ (Contract 3).
A window whose data cannot load is reported and skipped; the others still run. Finished
windows are kept in <out>/.parts and reused when the same parameters, seed, data snapshot
and population size are asked for again (resume after an interruption).
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from fetch.cmdline import non_negative_int, positive_int

log = logging.getLogger(__name__)

SWEEP_KEYS = (
    "ftx.blp.hedge_latency_s", "execution.eta.ftx", "execution.eta.binance",
    "ftx.blp.capacity_per_minute_usd", "ftx.blp.capacity_per_hour_usd",
    "ftx.insurance_fund_start_usd", "binance.insurance_fund_start_usd",
    "binance.liq_fee_rate", "population.leverage_scale",
)
SWEEP_METRICS = ("house_loss_usd", "house_loss_usd_per_1b_oi", "liquidated_usd", "reported_liquidated_usd",
                 "blp_pnl_usd", "fund_end_usd", "adl_usd", "user_loss_usd")
DEFAULT_SEED = 20221108
RESULTS_VERSION = 2   # bump when a code change alters results: finished windows in .parts are recomputed


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
                   help="also sample the uncertain parameters N times (default 20) and report quantiles")
    p.add_argument("--sweep-accounts", type=positive_int, default=20000, metavar="N",
                   help="accounts per series in each sweep sample (default 20000)")
    p.add_argument("--accounts", type=positive_int, metavar="N", help="accounts per series (default population.n_accounts)")
    p.add_argument("--deterministic", action="store_true", help="FTX step 1 in expected-value mode (no draws)")
    p.add_argument("--out", metavar="DIR", help="output directory (default results/<run-id>)")
    p.add_argument("--lake", metavar="DIR", help="lake root (default $LIQREPLAY_LAKE, else ./lake)")
    p.add_argument("--scenarios", metavar="FILE", help="scenario file (default backtest/scenarios.toml)")
    p.add_argument("--no-resume", action="store_true", help="recompute windows already in <out>/.parts")
    p.set_defaults(func=cmd_run)

    b = subparsers.add_parser("bench", help="time the replay on a synthetic year (and the oracle)",
                              description="Synthetic 1-minute year, 2 venues x 2 markets; prints a scaling table.")
    b.add_argument("--sizes", default="10000,100000,1000000", help="accounts per venue-market, comma separated")
    b.add_argument("--days", type=_positive_float, default=365.0, help="length of the synthetic path in days (default 365)")
    b.add_argument("--oracle-accounts", type=positive_int, default=200, help="accounts for the oracle comparison")
    b.add_argument("--oracle-bars", type=positive_int, default=240, help="1-minute bars for the oracle comparison")
    b.add_argument("--seed", type=non_negative_int, default=7)
    b.add_argument("--venue", action="append", choices=["ftx", "binance"],
                   help="time only this venue's series (repeatable; default both)")
    b.set_defaults(func=cmd_bench)


def _window_ids() -> str:
    """The default scenario file's window ids with their labels, for `run --help`."""
    from backtest.scenarios import load_scenarios
    try:
        sc = load_scenarios()
    except Exception as exc:  # noqa: BLE001 (help must render even with a broken scenario file)
        return f"see backtest/scenarios.toml ({exc})"
    return ", ".join(w.id for w in sc.windows).replace("%", "%%") + \
        " (labels and dates: `liqreplay data status`)"


def _positive_float(text: str) -> float:
    import argparse
    import math
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
class _Progress:
    def __init__(self, total: int):
        self.total, self.done, self.tty = total, 0, sys.stderr.isatty()
        self.t0 = time.time()

    def step(self, label: str) -> None:
        self.done += 1
        if self.tty:
            sys.stderr.write(f"\r[{self.done}/{self.total}] {label[:60]:<60} {time.time() - self.t0:6.1f}s")
            sys.stderr.flush()
        else:  # a log or a pipe: one line per step as it starts, no carriage returns
            log.info("[%d/%d] %s (%.1fs elapsed)", self.done, self.total, label, time.time() - self.t0)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def cmd_run(args) -> int:
    from fetch.errors import UserError
    from backtest.params import load_params
    from backtest.scenarios import COINS, VENUES, load_scenarios

    if not args.all and not args.window:
        raise UserError("say which windows: --window ID (repeatable) or --all")
    params = load_params(args.params)
    if args.accounts is not None:
        if args.accounts < 2:
            raise UserError("--accounts must be at least 2")
        params = params.with_overrides({"population.n_accounts": int(args.accounts)})
    try:
        sc = load_scenarios(args.scenarios)
    except FileNotFoundError:
        raise UserError(f"scenario file not found: {args.scenarios}") from None
    if args.all:
        windows = list(sc.windows)
    else:
        windows = []
        for wid in args.window:
            try:
                windows.append(sc.window(wid))
            except KeyError as exc:
                raise UserError(str(exc.args[0])) from None
    venues = tuple(dict.fromkeys(args.venue or VENUES))
    coins = tuple(dict.fromkeys(c.upper() for c in (args.market or COINS)))
    for c in coins:
        if c not in sc.markets:
            raise UserError(f"unknown market {c!r}: add it to the scenario file or use one of {sorted(sc.markets)}")

    from fetch.lake import resolve_lake
    lake = resolve_lake(args.lake)
    if not Path(lake).exists():
        raise UserError(f"no lake at {lake}: run `liqreplay import ../shared/data` (or pass --lake DIR)")
    from backtest.catalog import Catalog
    catalog = Catalog(lake)
    snapshot = catalog.snapshot_id()

    n_accounts = int(params.get("population.n_accounts"))
    run_id = (Path(args.out).name if args.out else
              f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{params.hash()[:8]}-s{args.seed}")
    out = Path(args.out) if args.out else Path("results") / run_id
    parts = _make_out_dir(out) / ".parts"
    resume_key = {"version": RESULTS_VERSION, "params_hash": params.hash(), "seed": args.seed, "data_snapshot": snapshot,
                  "n_accounts": n_accounts, "venues": list(venues), "markets": list(coins),
                  "deterministic": bool(args.deterministic), "scenarios": _file_hash(sc.source_file)}

    from backtest.scenarios import SeriesLoader
    loader = SeriesLoader(catalog, sc, lookback_days=float(params.get("population.entry_lookback_days")), params=params)
    prog = _Progress(len(windows) * len(venues) * len(coins))
    win_entries, rows, series, events, coverage, daily = [], [], [], [], [], []
    loaded: dict[str, dict] = {}
    t0 = time.time()
    for w in windows:
        part = _load_part(parts, w.id, resume_key) if not args.no_resume else None
        if part is None:
            part = _run_window(loader, w, venues, coins, params, args.seed, bool(args.deterministic), prog, loaded)
            _save_part(parts, w.id, resume_key, part)
        else:
            log.info("window %s: reusing finished results in %s", w.id, parts)
            for _ in range(len(venues) * len(coins)):
                prog.step(f"{w.id} (resumed)")
        win_entries.append(part["window"])
        rows += part["rows"]
        coverage += part["coverage"]
        series.append(part["series"])
        events.append(part["events"])
        daily.append(part.get("daily", pd.DataFrame()))
    prog.close()

    sweep_frame, sweep_q = None, None
    if args.sweep:
        sweep_frame, sweep_q = _run_sweep(loader, windows, venues, coins, params, args, loaded, win_entries)

    meta = {"run_id": run_id, "data_snapshot": snapshot, "params_hash": params.hash(),
            "params_file": str(Path(args.params).resolve()) if args.params else params.path,
            "seed": args.seed, "params": params.to_dict(), "param_sources": params.sources(),
            "param_ranges": params.sweep_ranges(), "n_accounts": n_accounts, "lake": str(lake),
            "command": "liqreplay run " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []),
            "sweep_params": [k for k in SWEEP_KEYS if k in params.sweep_ranges()],
            "sweep_samples": int(args.sweep or 0)}
    write_kw = dict(meta=meta, windows=win_entries, rows=rows, series=series, events=events, daily=daily,
                    sweep=sweep_frame, sweep_quantiles=sweep_q, coverage=coverage)
    from backtest.results import write_results
    write_results(out, **write_kw)
    _print_summary(out, win_entries, rows, time.time() - t0)
    return 0


def _make_out_dir(out: Path) -> Path:
    """Create the results folder (and its .parts) or say in one line why it cannot be."""
    from fetch.errors import UserError
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


def _file_hash(path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def _run_window(loader, w, venues, coins, params, seed, deterministic, prog, loaded) -> dict:
    from backtest.replay import path_input, run_series
    from backtest.scenarios import load_window_series
    sds, problems = load_window_series(loader, w, venues, coins)
    notes = list(problems)
    for sd in sds.values():
        notes += sd.notes
    for p in problems:
        log.warning("skipped: %s", p)
    rows, series, events, coverage, daily = [], [], [], [], []
    cprices = loader.coin_prices(w) if "ftx" in venues and sds else {}
    cpaths, cnotes = loader.collateral_paths(w, sorted(cprices)) if cprices else ({}, [])
    notes += cnotes
    for cp in cpaths.values():
        notes.append(f"window {w.id}: collateral {cp.coin} revalued at {cp.t_s.size} steps ({cp.source} closes)")
    ran = []
    for v in venues:
        for c in coins:
            sd = sds.get((v, c))
            prog.step(f"{w.id} {v} {c}")
            if sd is None:
                continue
            hedge_sd = sds.get(("binance", c)) if v == "ftx" else None
            hedge = path_input(hedge_sd, params) if hedge_sd is not None else None
            try:
                row, se, ev, da = run_series(sd, params, seed, hedge=hedge, collateral_prices={**cprices, c: sd.start_price},
                                         deterministic=deterministic, collateral_paths=cpaths)
            except (ValueError, KeyError) as exc:
                msg = f"window {w.id}, venue {v}, market {c}: cannot run: {exc}"
                log.warning(msg)
                notes.append(msg)
                continue
            if hedge is None and v == "ftx":
                row["hedge_source"] = "own path (no binance series loaded)"
            elif v == "ftx":
                row["hedge_source"] = f"binance {hedge_sd.source.market} {hedge_sd.source.symbol} ({hedge_sd.timeframe})"
            rows.append(row)
            series.append(se)
            events.append(ev)
            daily.append(da)
            coverage.append({"window": w.id, "venue": v, "market": c, "timeframe": sd.timeframe,
                             "rows": sd.rows, "gaps_pct": sd.gaps_pct, "price_source": sd.price_source})
            ran.append(f"{v} {c}")
    loaded[w.id] = {"series": sds, "cprices": cprices, "cpaths": cpaths}
    status = "ran" if rows else "skipped"
    reason = "" if not problems else "; ".join(problems)
    if not rows and not reason:
        reason = "no series could run: " + "; ".join(notes)
    entry = {"id": w.id, "label": w.label, "start": w.start.isoformat(), "end": w.end.isoformat(),
             "status": status, "reason": reason, "series_ran": ran, "notes": notes}
    if status == "skipped":
        print(f"liqreplay run: window {w.id} skipped: {reason}", file=sys.stderr)
    return {"window": entry, "rows": rows, "coverage": coverage,
            "series": pd.concat(series, ignore_index=True) if series else pd.DataFrame(),
            "events": pd.concat(events, ignore_index=True) if events else pd.DataFrame(),
            "daily": pd.concat(daily, ignore_index=True) if daily else pd.DataFrame()}


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
        da = pd.read_parquet(parts / f"{wid}.daily.parquet")
    except (OSError, ValueError):
        return None
    return {"window": saved["window"], "rows": saved["rows"], "coverage": saved["coverage"], "series": se,
            "events": ev, "daily": da}


def _save_part(parts: Path, wid: str, key: dict, part: dict) -> None:
    from backtest.results import _jsonable
    part["series"].to_parquet(parts / f"{wid}.series.parquet", index=False)
    part["events"].to_parquet(parts / f"{wid}.events.parquet", index=False)
    part["daily"].to_parquet(parts / f"{wid}.daily.parquet", index=False)
    blob = {"key": key, "window": part["window"], "rows": part["rows"], "coverage": part["coverage"]}
    tmp = parts / f".{wid}.json.tmp"
    tmp.write_text(json.dumps(_jsonable(blob)))
    tmp.replace(parts / f"{wid}.json")


def sample_overrides(params, n: int, seed: int) -> list[dict]:
    """n draws of the uncertain parameters (SWEEP_KEYS within Params.sweep_ranges()):
    log-uniform where the range spans more than a factor 10 with a positive low, else uniform."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EE9]))
    ranges = params.sweep_ranges()
    keys = [k for k in SWEEP_KEYS if k in ranges]
    out = []
    for _ in range(n):
        d = {}
        for k in keys:
            lo, hi = ranges[k]
            if lo > 0 and hi / lo > 10:
                v = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            else:
                v = float(rng.uniform(lo, hi))
            if isinstance(params.get(k), int) and not isinstance(params.get(k), bool):
                v = int(round(v))
            d[k] = v
        out.append(d)
    return out


def _run_sweep(loader, windows, venues, coins, params, args, loaded, win_entries):
    from backtest.replay import path_input, run_series
    from backtest.results import add_per_1b
    samples = sample_overrides(params, int(args.sweep), args.seed)
    n_acc = min(int(params.get("population.n_accounts")), int(args.sweep_accounts))
    rows = []
    ran = {e["id"] for e in win_entries if e["status"] == "ran"}
    prog = _Progress(len(samples) * len(windows))
    for si, ov in enumerate(samples):
        p = params.with_overrides(ov)
        for w in windows:
            prog.step(f"sweep {si + 1}/{len(samples)} {w.id}")
            if w.id not in ran:
                continue
            if w.id not in loaded:
                from backtest.scenarios import load_window_series
                sds, _ = load_window_series(loader, w, venues, coins)
                cpr_ = loader.coin_prices(w) if sds else {}
                loaded[w.id] = {"series": sds, "cprices": cpr_,
                                "cpaths": loader.collateral_paths(w, sorted(cpr_))[0] if cpr_ else {}}
            sds, cpr = loaded[w.id]["series"], loaded[w.id]["cprices"]
            cpaths = loaded[w.id].get("cpaths", {})
            for (v, c), sd in sds.items():
                hedge_sd = sds.get(("binance", c)) if v == "ftx" else None
                hedge = path_input(hedge_sd, p) if hedge_sd is not None else None
                try:
                    row, *_ = run_series(sd, p, args.seed, hedge=hedge, n_accounts=n_acc,
                                           collateral_prices={**cpr, c: sd.start_price},
                                           deterministic=bool(args.deterministic), collateral_paths=cpaths)
                except (ValueError, KeyError) as exc:
                    log.warning("sweep sample %d, window %s %s %s: %s", si, w.id, v, c, exc)
                    continue
                row = add_per_1b(row)
                rows.append({"sample": si, **{k: row.get(k) for k in ("window", "venue", "market")},
                             **{m: row.get(m) for m in SWEEP_METRICS}, **ov, "accounts": n_acc})
    prog.close()
    frame = pd.DataFrame(rows)
    quant = []
    if len(frame):
        for (w, v, m), g in frame.groupby(["window", "venue", "market"], sort=True):
            for metric in SWEEP_METRICS:
                x = g[metric].astype(float).dropna()
                if len(x):
                    q = np.quantile(x, [0.05, 0.5, 0.95])
                    quant.append({"window": w, "venue": v, "market": m, "metric": metric,
                                  "q05": float(q[0]), "q50": float(q[1]), "q95": float(q[2]), "n": int(len(x))})
    return frame, quant


def _fmt_usd(x) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    a = abs(x)
    if a >= 1e9:
        return f"${x / 1e9:.2f}B"
    if a >= 1e6:
        return f"${x / 1e6:.1f}M"
    if a >= 1e3:
        return f"${x / 1e3:.0f}k"
    return f"${x:.0f}"


def _print_summary(out: Path, wins, rows, wall) -> None:
    from backtest.results import add_per_1b
    print(f"results: {out}  ({wall:.1f}s)")
    for w in wins:
        if w["status"] == "skipped":
            print(f"  {w['id']:<10} skipped: {w['reason']}")
            continue
        for r in (add_per_1b(dict(x)) for x in rows if x["window"] == w["id"]):
            print(f"  {w['id']:<10} {r['venue']:<8} {r['market']:<4} liquidated {_fmt_usd(r['liquidated_usd']):>9}"
                  f"  house loss {_fmt_usd(r['house_loss_usd']):>9} ({_fmt_usd(r['house_loss_usd_per_1b_oi'])}/$1B OI)"
                  f"  {r['timeframe']:>3} {r['price_source']}")
        if w.get("reason"):
            print(f"  {'':<10} not run: {w['reason']}")


# --------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    from backtest.bench import run_bench
    from fetch.errors import UserError
    try:
        sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    except ValueError:
        raise UserError("--sizes takes comma-separated integers, e.g. 10000,100000") from None
    if not sizes or min(sizes) < 2:
        raise UserError("--sizes needs population sizes of at least 2")
    return run_bench(sizes, days=args.days, oracle_accounts=args.oracle_accounts, oracle_bars=args.oracle_bars,
                     seed=args.seed, venues=args.venue)
