"""The nightly refresh: keep the lake's configured series complete up to each source's lag.

A TOML config (see fetch/refresh.example.toml; read by fetch/refresh_config.py) lists jobs; each job expands to series
(symbol × timeframe × price type). For each series the job asks the lake what is missing
(`Lake.missing`, manifest only), fetches exactly those chunks (a day, or a month for
coarse timeframes), writes them (`Lake.write`: validate, merge, temp file + os.replace) and
only then marks each chunk complete (`Lake.mark_complete`). A run killed anywhere leaves
complete chunks marked and the rest missing, so the next run resumes; a second run with
nothing missing makes no request at all.

Publication lags: a REST bar is final once it has closed (plus `lag`, default 2 minutes);
a data.binance.vision daily file appears the day after (default lag 8 hours after the day
ends), monthly files a few days after the month ends (the fetcher falls back to daily
files); tardis.dev datasets the day after (default 6 hours). `tail = "ccxt"` on an archive
job fills the days the archive lacks (the recent tail) from the exchange's REST API.

Exit codes: 0 everything requested is complete; 75 (EX_TEMPFAIL) temporary failure
(network, rate limit, timeout, archive not published yet, another run holds the lock):
retry later; 1 a person must look (bad config, unknown symbol, exchange error, data refused
by validation).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from fetch import atomic, timerange
from fetch.lake import Lake, SeriesKey, resolve_lake
from fetch.lock import LockHeld, RunLock, lake_lock_path
from fetch.progress import progress_bar
from fetch.refresh_config import DEFAULT_LAG, ConfigError, Job, RefreshConfig, load_config, venue_market
from fetch.schema import SchemaError
from fetch.sources.binance_vision import BinanceVision
from fetch.sources.ccxt_source import (
    CcxtSource,
    RetryPolicy,
    SourceError,
    utc,
)
from fetch.sources.tardis import TardisSource
from fetch.validate import ValidationError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_PERSON, EXIT_TEMPFAIL = 0, 1, 75
UTC = timezone.utc
REST_OI_DAYS = 30  # Binance's openInterestHist serves only the last month
ARCHIVE_LATE_DAYS = 3  # an archive day missing longer than this is not "late" but absent


# ---------------------------------------------------------------------------- chunks
def floor_to(t: datetime, step: timedelta) -> datetime:
    t = utc(t)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((t - epoch) // step) * step


def horizon(job: Job, key: SeriesKey, now: datetime) -> datetime:
    """The end of what the source has published (and will not change) at `now`."""
    lag = timerange.timeframe_delta(job.lag or DEFAULT_LAG[job.source])
    if job.source == "ccxt":
        step = (timerange.timeframe_delta(key.timeframe) if key.timeframe
                else timedelta(hours=1))
        return floor_to(now - lag, step)
    return floor_to(now - lag, timedelta(days=1))  # archives: whole days


def chunks(a: datetime, b: datetime, key: SeriesKey) -> list[tuple[datetime, datetime]]:
    """Split [a, b) at UTC days (fine timeframes) or months (1h and coarser, funding)."""
    fine = key.timeframe and timerange.timeframe_delta(key.timeframe) < timedelta(hours=1)
    out = []
    cur = a
    while cur < b:
        if fine or key.dataset == "liquidations":
            nxt = floor_to(cur, timedelta(days=1)) + timedelta(days=1)
        else:
            nxt = timerange.next_month(cur)
        out.append((cur, min(nxt, b)))
        cur = min(nxt, b)
    return out


# ---------------------------------------------------------------------------- fetching
@dataclass
class TaskResult:
    job: str
    dataset: str
    venue: str
    market: str
    symbol: str
    timeframe: str
    price_type: str
    source: str
    missing: list[list[str]] = field(default_factory=list)
    chunks_done: int = 0
    rows_written: int = 0
    rows_new: int = 0
    rows_dropped: int = 0
    bad_rows: int = 0
    status: str = "ok"  # ok | up_to_date | skipped | temporary_failure | failed
    error: str = ""
    not_in_archive: list[str] = field(default_factory=list)


class Fetchers:
    """Creates (lazily, once per run) the source objects a job needs."""

    def __init__(self, retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 rate_limit_ms: int | None = None, now: datetime | None = None):
        self.retry, self.sleep, self.rate_limit_ms, self.now = retry, sleep, rate_limit_ms, now
        self._cache: dict[tuple, Any] = {}

    def ccxt(self, exchange: str, api_url: str, timeout_s: float) -> CcxtSource:
        k = ("ccxt", exchange, api_url)
        if k not in self._cache:
            self._cache[k] = CcxtSource(exchange, api_url=api_url or None, timeout_s=timeout_s,
                                        retry=self.retry, sleep=self.sleep,
                                        rate_limit_ms=self.rate_limit_ms)
        return self._cache[k]

    def vision(self, api_url: str, timeout_s: float, verify_checksum: bool = True) -> BinanceVision:
        k = ("vision", api_url, verify_checksum)
        if k not in self._cache:
            self._cache[k] = BinanceVision(api_url or None, timeout_s=timeout_s, retry=self.retry,
                                           sleep=self.sleep,
                                           today=(self.now.date() if self.now else None),
                                           require_checksum=verify_checksum)
        return self._cache[k]

    def tardis(self, api_url: str) -> TardisSource:
        k = ("tardis", api_url)
        if k not in self._cache:
            self._cache[k] = TardisSource(api_url=api_url or None)
        return self._cache[k]

    def requests(self) -> int:
        return sum(getattr(s, "requests", 0) for s in self._cache.values())


def fetch_chunk(job: Job, key: SeriesKey, a: datetime, b: datetime,
                fx: Fetchers) -> pd.DataFrame:
    """Fetch one chunk for one series: a canonical frame (attrs: missing_days, bad_rows)."""
    if job.source == "ccxt":
        src = fx.ccxt(job.exchange, job.api_url, job.timeout_s)
        if key.dataset == "ohlcv":
            return src.fetch_ohlcv(key.symbol, key.timeframe, a, b, price_type=key.price_type)
        if key.dataset == "funding":
            return src.fetch_funding(key.symbol, a, b)
        if key.dataset == "open_interest":
            return src.fetch_open_interest(key.symbol, key.timeframe, a, b)
        raise SourceError("ccxt has no liquidation history: use binance_vision "
                          "(local copies) or tardis", temporary=False)
    if job.source == "binance_vision":
        bv = fx.vision(job.api_url, job.timeout_s, job.verify_checksum)
        if key.dataset == "ohlcv":
            df = bv.fetch_klines(key.symbol, key.timeframe, a, b, market=key.market,
                                 price_type=key.price_type)
        elif key.dataset == "funding":
            df = bv.fetch_funding(key.symbol, a, b)
        elif key.dataset == "open_interest":
            df = bv.fetch_open_interest(key.symbol, a, b)
        else:
            df = bv.fetch_liquidations(key.symbol, a, b)
        return df
    ts = fx.tardis(job.api_url)
    return ts.fetch(job.exchange, key.dataset, key.symbol, a, b, timeframe=key.timeframe,
                    price_type=key.price_type)


def _tail_fill(job: Job, key: SeriesKey, days: list, fx: Fetchers) -> list[pd.DataFrame]:
    """REST for the days the archive lacks (ccxt, same symbol)."""
    src = fx.ccxt("binance" if key.market == "spot" else "binanceusdm",
                  job.tail_api_url or "", job.timeout_s)
    out = []
    for d in days:
        a = datetime(d.year, d.month, d.day, tzinfo=UTC)
        b = a + timedelta(days=1)
        if key.dataset == "ohlcv":
            out.append(src.fetch_ohlcv(key.symbol, key.timeframe, a, b, price_type=key.price_type))
        elif key.dataset == "funding":
            out.append(src.fetch_funding(key.symbol, a, b))
        elif key.dataset == "open_interest":
            out.append(src.fetch_open_interest(key.symbol, "5m", a, b))
    return out


def refresh(lake: Lake, jobs: tuple[Job, ...] | list[Job], *, now: datetime | None = None,
            fetchers: Fetchers | None = None, force: bool = False,
            window: tuple[datetime, datetime] | None = None) -> list[TaskResult]:
    """Fill what is missing for every series of `jobs`. Returns one result per series.

    `window` (fetch --timerange) clamps each series' range; `force` refetches it whole.
    """
    now = utc(now or datetime.now(UTC))
    fx = fetchers or Fetchers(now=now)
    plan: list[tuple[Job, SeriesKey, TaskResult, list]] = []
    for job in jobs:
        for key in job.series_keys():
            res = TaskResult(job.name, key.dataset, key.venue, key.market, key.symbol,
                             key.timeframe, key.price_type, job.source)
            if job.requires_env and not os.environ.get(job.requires_env):
                res.status = "skipped"
                res.error = f"skipped: ${job.requires_env} is not set"
                plan.append((job, key, res, []))
                continue
            start = utc(job.start)
            end = horizon(job, key, now)
            if job.end:
                end = min(end, utc(job.end))
            if window:
                start, end = max(start, utc(window[0])), min(end, utc(window[1]))
            if end <= start:
                res.status = "up_to_date"
                plan.append((job, key, res, []))
                continue
            miss = [(start, end)] if force else lake.missing(key.dataset, key, start, end)
            res.missing = [[a.isoformat(), b.isoformat()] for a, b in miss]
            todo = [c for a, b in miss for c in chunks(a, b, key)]
            if not todo:
                res.status = "up_to_date"
            plan.append((job, key, res, todo))
    progress = progress_bar(total=sum(len(t) for *_, t in plan), desc="fetching", unit="chunk")
    down: dict[tuple[str, str], str] = {}  # source endpoint -> why it failed (this run)
    for job, key, res, todo in plan:
        endpoint = (job.source + (":" + job.exchange if job.source != "binance_vision" else ""),
                    job.api_url)
        if todo and endpoint in down:
            res.status = "temporary_failure"
            res.error = f"not tried: the source failed earlier in this run ({down[endpoint]})"
            continue
        for a, b in todo:
            progress.set_postfix_str(f"{key.symbol} {key.dataset} {key.timeframe} {key.price_type} {a:%Y-%m-%d}",
                                     refresh=False)
            progress.update()
            try:
                df = fetch_chunk(job, key, a, b, fx)
                if (job.source == "ccxt" and key.dataset == "open_interest" and not len(df)
                        and a < now - timedelta(days=REST_OI_DAYS)):
                    raise SourceError(
                        f"{job.exchange} returned no open interest for {key.symbol} "
                        f"{a:%Y-%m-%d}: Binance's REST keeps only ~{REST_OI_DAYS} days of it; "
                        f"use source = \"binance_vision\" (daily metrics files) for older "
                        f"dates", temporary=False)
                missing_days = list(df.attrs.get("missing_days", []))
                res.bad_rows += int(df.attrs.get("bad_rows", 0))
                frames = [df]
                if missing_days and job.tail == "ccxt" and key.dataset != "liquidations":
                    frames += _tail_fill(job, key, missing_days, fx)
                    missing_days = []
                frames = [f for f in frames if len(f)]
                if frames:
                    data = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
                    wr = lake.write(key.dataset, data, source=_source_name(job))
                    res.rows_written += wr.rows_written
                    res.rows_new += wr.rows_new
                    res.rows_dropped += wr.rows_dropped
                if missing_days:
                    # the archive has not published these days (yet): complete up to the first
                    res.not_in_archive += [d.isoformat() for d in missing_days]
                    first = datetime(missing_days[0].year, missing_days[0].month,
                                     missing_days[0].day, tzinfo=UTC)
                    if first > a:
                        lake.mark_complete(key.dataset, key, a, min(first, b))
                    span = f"{missing_days[0]}" + (
                        f" … {missing_days[-1]}" if len(missing_days) > 1 else "")
                    if first < now - timedelta(days=ARCHIVE_LATE_DAYS):
                        res.status = "failed"  # long published: the file will not come
                        res.error = (f"the archive has no file for {key.symbol} {span}: check "
                                     f"the symbol and the job's start date (listing date)")
                    else:
                        res.status = "temporary_failure"
                        res.error = (f"not in the archive yet: {span} (set tail = \"ccxt\" "
                                     f"to take recent days from REST)")
                    break
                lake.mark_complete(key.dataset, key, a, b)
                res.chunks_done += 1
            except SourceError as exc:
                res.status = "temporary_failure" if exc.temporary else "failed"
                res.error = str(exc)
                log.error("%s", exc)
                if exc.temporary:  # network down, rate limited: spare the other series
                    down[endpoint] = str(exc)[:200]
                break
            except (ValidationError, SchemaError) as exc:  # refused data: a person must look
                res.status = "failed"
                res.error = f"{type(exc).__name__}: {exc}"
                log.error("%s %s: %s", key.symbol, key.dataset, res.error)
                break
    progress.close()
    return [r for _, _, r, _ in plan]


def _source_name(job: Job) -> str:
    if job.source == "ccxt":
        return f"ccxt:{job.exchange}"
    return job.source.replace("_", "-") + ("+ccxt" if job.tail else "")


def exit_code(results: list[TaskResult]) -> int:
    if any(r.status == "failed" for r in results):
        return EXIT_PERSON
    if any(r.status == "temporary_failure" for r in results):
        return EXIT_TEMPFAIL
    return EXIT_OK


STATUS_WORD = {EXIT_OK: "ok", EXIT_TEMPFAIL: "temporary failure: retry later",
               EXIT_PERSON: "needs a person"}


def run(config_path: str | Path, lake_dir: str | None = None, *, now: datetime | None = None,
        summary_path: str | Path | None = None, fetchers: Fetchers | None = None,
        out=None) -> int:
    """The `liqreplay refresh` job: lock, refresh, one-line summary, JSON summary, exit code."""
    out = out or sys.stdout
    t0 = time.monotonic()
    started = datetime.now(UTC)
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"refresh: {exc}", file=sys.stderr)
        return EXIT_PERSON
    root = resolve_lake(lake_dir or cfg.lake or None)
    lake = Lake(root)
    state = root / "_refresh"
    summary_file = Path(summary_path or cfg.summary or state / "summary.json")
    lock = RunLock(lake_lock_path(root), "refresh")
    try:
        lock.acquire()
    except LockHeld as exc:
        print(f"refresh: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    fx = fetchers or Fetchers(now=now)
    try:
        results = refresh(lake, cfg.jobs, now=now, fetchers=fx)
    except Exception as exc:  # a bug or the disk: say so in one line, keep the traceback in the log
        log.debug("refresh crashed", exc_info=True)
        print(f"refresh: needs a person: {type(exc).__name__}: {exc} (run with -v for the "
              f"traceback)", file=sys.stderr)
        return EXIT_PERSON
    finally:
        lock.release()
    code = exit_code(results)
    elapsed = time.monotonic() - t0
    n_fetch = sum(r.chunks_done for r in results)
    rows = sum(r.rows_written for r in results)
    bad = [r for r in results if r.status in ("failed", "temporary_failure")]
    summary = {
        "started_utc": started.isoformat(), "elapsed_s": round(elapsed, 3),
        "config": str(config_path), "lake": str(root), "exit_code": code,
        "status": STATUS_WORD[code], "series": len(results), "chunks_fetched": n_fetch,
        "rows_written": rows, "rows_new": sum(r.rows_new for r in results),
        "requests": fx.requests(), "tasks": [asdict(r) for r in results]}
    atomic.write_text(summary_file, json.dumps(summary, indent=2, default=str))
    line = (f"refresh: {STATUS_WORD[code]}: {len(results)} series, {n_fetch} chunks fetched, "
            f"{rows} rows written, {fx.requests()} requests, {len(bad)} with problems, "
            f"{elapsed:.1f}s (summary: {summary_file})")
    print(line, file=out)
    skipped: dict[str, list[str]] = {}
    for r in results:
        if r.status == "skipped" and r.job not in skipped.get(r.error, []):
            skipped.setdefault(r.error, []).append(r.job)
    for why, names in skipped.items():
        print(f"  {len(names)} job(s) {why}: {', '.join(names)}", file=sys.stderr)
    not_tried = [r for r in bad if r.error.startswith("not tried")]
    for r in bad:
        if r not in not_tried:
            print(f"  {r.status}: {r.symbol} {r.dataset} {r.timeframe} {r.price_type}: "
                  f"{r.error}", file=sys.stderr)
    if not_tried:
        print(f"  {len(not_tried)} more series not tried: their source failed earlier in this "
              f"run (details in {summary_file})", file=sys.stderr)
    return code


# Job, RefreshConfig, ConfigError, load_config (fetch/refresh_config.py) and RunLock, LockHeld
# (fetch/lock.py) are re-exported: the refresh's public names in one place
__all__ = ["Job", "RefreshConfig", "ConfigError", "load_config", "venue_market", "RunLock", "LockHeld",
           "refresh", "run", "exit_code", "Fetchers", "TaskResult", "horizon", "chunks",
           "EXIT_OK", "EXIT_PERSON", "EXIT_TEMPFAIL"]
