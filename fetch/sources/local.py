"""Local files -> the lake: `liqreplay import DIR`.

Two layouts are recognised (both may appear under one DIR):

1. A `datasets.csv` manifest (the format of ../shared/data/datasets.csv). Raw schema:
   `file` (path relative to DIR: .parquet, .csv, .feather or freqtrade .json),
   `kind` (ohlcv | funding | open_interest | liquidations), `venue`, `market`
   (spot | perp | future | mixed), `symbol` (exchange id, or `*` = per-row from
   `symbol_column`), `timeframe`, `volume_unit` (base | quote), `symbol_column`;
   optional `rows` (expected row count, checked and reported) and `source`.
   Columns of the data files, by kind:
   - ohlcv: `ts` (bar open; else `open_time` epoch ms), open, high, low, close, `volume`
     (in `volume_unit`), optional `quote_volume` (quote). The missing one of base/quote
     volume is derived (quote = base * close, base = quote / close).
     market `mixed` (the FTX daily file): the `symbol_column` holds FTX market names;
     `BTC-PERP` -> market perp, symbol `BTC-PERP`; `BTC-USD` / `BTC/USD` -> market spot,
     symbol `BTC/USD`; dated futures (`BTC-0930`) -> market future.
   - funding: `symbol`, `ts` (else `calc_time` ms), `last_funding_rate` (fraction per
     interval), `funding_interval_hours`. The REAL settlement time is kept: Binance
     stamps it a few ms after the hour (08:00:00.005); floor to the minute before joining.
   - open_interest (Coinalyze daily export): `symbol`, `ts`, `open_interest` (in
     `volume_unit`; base = coins), `close` -> oi_usd = oi_base * close (or oi_base =
     oi_usd / close for quote units).
   - liquidations (Coinalyze daily export): `symbol`, `ts`, `long_liquidations`,
     `short_liquidations` (in `volume_unit`), `close` -> two lake rows per input row
     (side long and side short), qty in coins, price = close, notional_usd = qty * close.
     Zero days are kept as zero rows.
2. freqtrade data folders: `<exchange>/<BASE>_<QUOTE>-<tf>.json` (spot) and
   `<exchange>/futures/<BASE>_<QUOTE>[_<SETTLE>]-<tf>-<candle>.json` with candle
   `futures` (trade price, perp), `mark`, `index` (price types) or `funding_rate` (rate in
   the open column). JSON is `[[ms, open, high, low, close, volume], ...]`; `.feather`
   (columns date, open, high, low, close, volume) too. Venue and symbol follow Contract 1:
   binance/binanceusdm -> venue binance, symbol BASEQUOTE; ftx -> spot `BASE/QUOTE`,
   perp `BASE-PERP`. Volume is base units except on FTX, whose candles (through ccxt)
   carry quote (USD) volume.

All files are read first, then written per dataset in one merge (files later in the
manifest win on the same key), so overlapping files give the same lake on every run and
a re-import writes nothing. Complete intervals (runs without gaps) are marked in the
coverage manifest.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

from fetch import schema as S
from fetch import timerange
from fetch.lake import Lake, SeriesKey, WriteResult
from fetch.lock import RunLock, lake_lock_path
from fetch.progress import progress_bar
from fetch.validate import ValidationError, find_gaps, series_codes, validate

log = logging.getLogger(__name__)

MANIFEST = "datasets.csv"
MANIFEST_COLUMNS = ("file", "kind", "venue", "market", "symbol", "timeframe", "volume_unit", "symbol_column")
KINDS = tuple(S.SCHEMAS)
VENUE_ALIASES = {"binanceusdm": "binance", "binancecoinm": "binance", "binanceus": "binanceus", "ftx": "ftx"}
QUOTE_VOLUME_VENUES = {"ftx"}  # freqtrade/ccxt FTX candles carry USD volume

_FT_RE = re.compile(
    r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)(?:_(?P<settle>[A-Za-z0-9]+))?"
    r"-(?P<tf>\d+[smhdwM])(?:-(?P<candle>futures|mark|index|funding_rate|premiumIndex|spot))?"
    r"\.(?P<ext>json|feather)$"
)


class ImportError_(ValueError):
    """A file or manifest that cannot be imported; the message names the file and the fix."""


# what reading or converting a damaged or malformed file raises (turned into ImportError_)
READ_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, OverflowError, UnicodeDecodeError,
               IndexError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError, S.SchemaError)


LocalImportError = ImportError_


@dataclass
class FileImport:
    """One source file: rows read, and the row count the manifest expected (if given)."""

    file: str
    dataset: str
    rows: int
    expected_rows: int | None = None
    series: int = 0
    issues: str = ""  # validation findings (bad rows dropped, duplicates, order), "" if clean

    @property
    def matches(self) -> bool | None:
        return None if self.expected_rows is None else self.rows == self.expected_rows


@dataclass
class ImportSummary:
    files: list[FileImport] = field(default_factory=list)
    rows_read: int = 0
    rows_written: int = 0
    rows_new: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_dropped: int = 0
    files_written: int = 0
    series: int = 0
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"imported {len(self.files)} files, {self.rows_read:,} rows read, {self.rows_written:,} written "
            f"({self.rows_new:,} new, {self.rows_updated:,} updated, {self.rows_unchanged:,} unchanged, "
            f"{self.rows_dropped:,} invalid dropped) into {self.series} series, {self.files_written} lake files; "
            f"{self.seconds:.1f} s, {self.rows_per_s:,.0f} rows/s"
        )


# ------------------------------------------------------------------ symbol mapping
def venue_id(exchange: str) -> str:
    """ccxt exchange id -> Contract 1 venue (binanceusdm -> binance)."""
    ex = exchange.lower()
    return VENUE_ALIASES.get(ex, ex)


def ftx_market(name: str) -> tuple[str, str]:
    """FTX market name -> (market, symbol): BTC-PERP -> perp; BTC-0930 -> future;
    BTC-USD, BTC/USD -> spot BTC/USD."""
    n = name.strip().upper()
    if n.endswith("-PERP"):
        return "perp", n
    m = re.match(r"^([A-Z0-9]+)[-/](USD|USDT|BTC|EUR|BRZ|TRYB|DOGE)$", n)
    if m:
        return "spot", f"{m.group(1)}/{m.group(2)}"
    if re.match(r"^[A-Z0-9]+-(\d{4}|\d{8})$", n):
        return "future", n
    if "/" in n:
        return "spot", n
    return "future", n


def freqtrade_symbol(venue: str, market: str, base: str, quote: str) -> str:
    base, quote = base.upper(), quote.upper()
    if venue == "ftx":
        return f"{base}-PERP" if market == "perp" else f"{base}/{quote}"
    return f"{base}{quote}"


# ------------------------------------------------------------------ readers
def _read_any(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix == ".feather":

        return feather.read_table(path)
    if suffix in (".csv", ".gz"):

        return pacsv.read_csv(path)
    if suffix == ".json":
        return _read_freqtrade_json(path)
    raise ImportError_(f"{path}: unsupported file type {suffix!r}: use .parquet, .csv, .feather or .json")


def _read_freqtrade_json(path: Path) -> pa.Table:
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ImportError_(f"{path}: not valid JSON ({exc}); "
                           "expected [[ms, open, high, low, close, volume], ...]") from None
    if not isinstance(rows, list) or (rows and (not isinstance(rows[0], list) or len(rows[0]) < 6)):
        raise ImportError_(f"{path}: expected freqtrade JSON [[ms, open, high, low, close, volume], ...]")
    arr = np.asarray(rows, dtype="float64").reshape(-1, 6) if rows else np.zeros((0, 6))
    return pa.table({
        "open_time": pa.array(arr[:, 0].astype("int64")),
        "open": arr[:, 1], "high": arr[:, 2], "low": arr[:, 3], "close": arr[:, 4], "volume": arr[:, 5],
    })


def _ts_column(t: pa.Table, path) -> pa.ChunkedArray:
    for name in ("ts", "open_time", "calc_time", "date", "timestamp", "time"):
        if name in t.column_names:
            return S._ts_array(t[name])
    raise ImportError_(f"{path}: no timestamp column (ts, open_time, calc_time, date or timestamp)")


def _col(t: pa.Table, path, *names: str) -> pa.ChunkedArray:
    for n in names:
        if n in t.column_names:
            return pc.cast(t[n], pa.float64())
    raise ImportError_(f"{path}: missing column {' or '.join(names)} (has {', '.join(t.column_names)})")


def _const(n: int, value: str) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _symbols(t: pa.Table, entry: dict, path) -> pa.ChunkedArray | pa.Array:
    sym = (entry.get("symbol") or "").strip()
    if sym and sym != "*":
        return _const(t.num_rows, sym)
    col = (entry.get("symbol_column") or "").strip() or "symbol"
    if col not in t.column_names:
        raise ImportError_(f"{path}: symbol is '*' but column {col!r} is absent: set symbol_column in {MANIFEST}")
    return pc.cast(t[col], pa.string())


def convert(t: pa.Table, entry: dict, path: Path | str, source: str) -> pa.Table:
    """A raw table + its manifest entry -> a canonical table (see the module docstring)."""
    kind = entry["kind"]
    n = t.num_rows
    venue = venue_id(entry["venue"])
    market = entry["market"]
    tf = (entry.get("timeframe") or "").strip()
    unit = (entry.get("volume_unit") or "base").strip() or "base"
    if unit not in ("base", "quote"):
        raise ImportError_(f"{path}: volume_unit {unit!r}: use base or quote")
    ts = _ts_column(t, path)
    symbols = _symbols(t, entry, path)
    if kind == "ohlcv":
        if market == "mixed":
            pairs = [ftx_market(s) if venue == "ftx" else ("spot", s) for s in symbols.to_pylist()]
            markets = pa.array([p[0] for p in pairs], pa.string())
            symbols = pa.array([p[1] for p in pairs], pa.string())
        else:
            markets = _const(n, market)
        vol = _col(t, path, "volume")
        close = _col(t, path, "close")
        vq = pc.cast(t["quote_volume"], pa.float64()) if "quote_volume" in t.column_names else None
        vb = None
        if unit == "base":
            vb = vol
        else:
            vq = vol
        data = {
            "venue": _const(n, venue), "market": markets, "symbol": symbols,
            "timeframe": _const(n, tf), "price_type": _const(n, entry.get("price_type") or "trade"), "ts": ts,
            "open": _col(t, path, "open"), "high": _col(t, path, "high"), "low": _col(t, path, "low"),
            "close": close,
        }
        if vb is not None:
            data["volume_base"] = vb
        if vq is not None:
            data["volume_quote"] = vq
        return S.to_canonical(pa.table(data), "ohlcv")
    if kind == "funding":
        data = {
            "venue": _const(n, venue), "market": _const(n, market), "symbol": symbols, "ts": ts,
            "rate": _col(t, path, "last_funding_rate", "funding_rate", "rate", "fundingRate", "open"),
        }
        if any(c in t.column_names for c in ("funding_interval_hours", "interval_hours")):
            data["interval_hours"] = _col(t, path, "funding_interval_hours", "interval_hours")
        else:
            hours = timerange.timeframe_delta(tf).total_seconds() / 3600 if tf else 8.0
            data["interval_hours"] = pa.array(np.full(n, hours))
        if "mark_price" in t.column_names:
            data["mark_price"] = _col(t, path, "mark_price")
        return S.to_canonical(pa.table(data), "funding")
    if kind == "open_interest":
        value = _col(t, path, "open_interest", "oi", "sum_open_interest")
        close = _col(t, path, "close") if "close" in t.column_names else None
        if unit == "base":
            oi_base, oi_usd = value, (pc.multiply(value, close) if close is not None else pa.nulls(n, pa.float64()))
        else:
            if close is None:
                raise ImportError_(f"{path}: open interest in quote units needs a close column to get coins")
            oi_base, oi_usd = pc.divide(value, close), value
        return S.to_canonical(pa.table({
            "venue": _const(n, venue), "market": _const(n, market), "symbol": symbols, "timeframe": _const(n, tf),
            "ts": ts, "oi_base": oi_base, "oi_usd": oi_usd, "source": _const(n, source),
        }), "open_interest")
    if kind == "liquidations":
        if "side" in t.column_names:  # already one row per order/side
            qty = _col(t, path, "qty", "amount", "quantity")
            price = _col(t, path, "price")
            return S.to_canonical(pa.table({
                "venue": _const(n, venue), "market": _const(n, market), "symbol": symbols,
                "timeframe": _const(n, tf), "ts": ts, "side": pc.cast(t["side"], pa.string()),
                "qty": qty, "price": price, "notional_usd": pc.multiply(qty, price), "source": _const(n, source),
            }), "liquidations")
        close = _col(t, path, "close")
        parts = []
        for side, col in (("long", "long_liquidations"), ("short", "short_liquidations")):
            v = _col(t, path, col)
            qty = v if unit == "base" else pc.divide(v, close)
            usd = pc.multiply(v, close) if unit == "base" else v
            parts.append(pa.table({
                "venue": _const(n, venue), "market": _const(n, market), "symbol": symbols,
                "timeframe": _const(n, tf), "ts": ts, "side": _const(n, side), "qty": qty, "price": close,
                "notional_usd": usd, "source": _const(n, source),
            }))
        return S.to_canonical(pa.concat_tables(parts), "liquidations")
    raise ImportError_(f"{path}: kind {kind!r} unknown: use one of {', '.join(KINDS)}")


# ------------------------------------------------------------------ discovery
def read_manifest(directory: Path) -> list[dict]:
    """The rows of DIR/datasets.csv as dicts (strings; empty cells ''), checked."""
    path = Path(directory) / MANIFEST
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ImportError_(f"{path} is empty: it needs a header line ({', '.join(MANIFEST_COLUMNS)}) "
                           f"and one line per file") from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        raise ImportError_(f"{path} is not a readable CSV ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                           f"it must be UTF-8 text with the columns {', '.join(MANIFEST_COLUMNS)}") from None
    if df.empty:
        raise ImportError_(f"{path} lists no files: add one line per file under its header")
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ImportError_(f"{path}: missing columns {', '.join(missing)} (need {', '.join(MANIFEST_COLUMNS)})")
    entries = df.to_dict("records")
    root = Path(directory).resolve()
    for i, e in enumerate(entries, start=2):
        if e["kind"] not in KINDS:
            raise ImportError_(f"{path} line {i}: kind {e['kind']!r}: use one of {', '.join(KINDS)}")
        if e["market"] not in S.MARKETS + ("mixed",):
            raise ImportError_(f"{path} line {i}: market {e['market']!r}: use spot, perp, future or mixed")
        f = (root / e["file"]).resolve()
        if root not in f.parents:
            raise ImportError_(f"{path} line {i}: file {e['file']!r} is outside {directory}")
        if not f.exists():
            raise ImportError_(f"{path} line {i}: file {e['file']!r} not found in {directory}")
        if not f.is_file():
            raise ImportError_(f"{path} line {i}: {e['file']!r} is not a file")
        for col in ("venue",):
            if not e[col].strip():
                raise ImportError_(f"{path} line {i}: {col} is empty")
        if not e["symbol"].strip() and not e["symbol_column"].strip():
            raise ImportError_(f"{path} line {i}: give a symbol, or '*' with a symbol_column")
        tf = e["timeframe"].strip()
        if tf:
            try:
                timerange.timeframe_delta(tf)
            except (timerange.TimeRangeError, ValueError):
                raise ImportError_(f"{path} line {i}: timeframe {tf!r} is not a fixed interval "
                                   f"such as 1m, 5m, 1h, 1d") from None
        elif e["kind"] in ("ohlcv", "open_interest"):
            raise ImportError_(f"{path} line {i}: {e['kind']} needs a timeframe such as 1m or 1d")
        if e["volume_unit"].strip() not in ("", "base", "quote"):
            raise ImportError_(f"{path} line {i}: volume_unit {e['volume_unit']!r}: use base or quote")
        rows = str(e.get("rows", "") or "").strip()
        if rows and not (rows.isdigit()):
            raise ImportError_(f"{path} line {i}: rows {rows!r} is not a whole number (leave it empty if unknown)")
    return entries


def scan_freqtrade(directory: Path) -> list[tuple[Path, dict]]:
    """freqtrade data files under DIR as (path, manifest-like entry) pairs."""
    out = []
    for path in sorted(Path(directory).rglob("*")):
        m = _FT_RE.match(path.name)
        if not m or not path.is_file():
            continue
        candle = m.group("candle") or "spot"
        in_futures = path.parent.name == "futures"
        exchange = path.parent.parent.name if in_futures else path.parent.name
        venue = venue_id(exchange)
        if candle in ("premiumIndex",):
            log.info("skipping %s: candle type %s is not stored", path, candle)
            continue
        market = "perp" if (in_futures or candle in ("futures", "mark", "index", "funding_rate")) else "spot"
        tf = m.group("tf")
        try:
            timerange.timeframe_delta(tf)
        except timerange.TimeRangeError:
            log.warning("skipping %s: timeframe %s has no fixed length", path, tf)
            continue
        entry = {
            "kind": "funding" if candle == "funding_rate" else "ohlcv",
            "venue": venue, "market": market,
            "symbol": freqtrade_symbol(venue, market, m.group("base"), m.group("quote")),
            "timeframe": tf, "volume_unit": "quote" if venue in QUOTE_VOLUME_VENUES else "base",
            "symbol_column": "", "price_type": {"mark": "mark", "index": "index"}.get(candle, "trade"),
            "file": str(path.relative_to(directory)),
        }
        out.append((path, entry))
    return out


def _source_name(entry: dict) -> str:
    if entry.get("source"):
        return entry["source"]
    first = Path(entry["file"]).parts[0] if len(Path(entry["file"]).parts) > 1 else Path(entry["file"]).stem
    return first.split("_")[0] or "local"


# ------------------------------------------------------------------ import
def import_dir(directory: Path | str, lake: Lake, *, progress: bool | None = None,
               bad_row_threshold: float = 0.5, lock: bool = True) -> ImportSummary:
    """Import every file DIR's datasets.csv lists, plus freqtrade-style data files.

    Idempotent: a second run writes nothing and leaves the lake's files unchanged; a lake
    file that is damaged is rewritten from the imported rows (healed).
    Raises ImportError_ (bad manifest or file) or fetch.validate.ValidationError (a file
    that is mostly bad) before anything is written. Holds the lake's writer lock (the one
    refresh takes; fetch.lock.LockHeld, exit 75, when another writer has it); while it
    writes, a marker in the lake says an import is under way, so an interrupted one is
    reported by the next command.
    """
    show = progress
    directory = Path(directory)
    if not directory.is_dir():
        raise ImportError_(f"{directory} is not a folder: give the folder that holds {MANIFEST} or freqtrade data")
    t0 = time.perf_counter()
    jobs: list[tuple[Path, dict]] = []
    if (directory / MANIFEST).exists():
        jobs += [(directory / e["file"], e) for e in read_manifest(directory)]
    listed = {p.resolve() for p, _ in jobs}
    jobs += [(p, e) for p, e in scan_freqtrade(directory) if p.resolve() not in listed]
    if not jobs:
        raise ImportError_(f"nothing to import in {directory}: add a {MANIFEST} manifest or freqtrade files "
                           f"(<exchange>/<BASE>_<QUOTE>-<tf>.json)")
    summary = ImportSummary()
    tables: dict[str, list[pa.Table]] = {}
    created = not lake.root.exists()
    lock = RunLock(lake_lock_path(lake.root), "import") if lock else None
    if lock is not None:
        lock.acquire()
    wrote = False
    try:
        notice = lake.interrupted_import()
        if notice:
            log.warning("%s: this import completes it", notice.split(";")[0])
        _read_all(jobs, summary, tables, show, bad_row_threshold)
        lake.root.mkdir(parents=True, exist_ok=True)
        wrote = True
        lake.begin_import(str(directory))
        _write_all(directory, lake, summary, tables, show, bad_row_threshold)
        lake.end_import()  # only after every write: an interrupted import leaves the marker
    finally:
        if lock is not None:
            lock.release()
        if created and not wrote:  # refused before writing: leave no empty lake behind
            _remove_empty_tree(lake.root)
    summary.seconds = time.perf_counter() - t0
    return summary


def _remove_empty_tree(root: Path) -> None:
    """Remove `root` if it holds nothing but empty folders (what taking the lock created)."""
    if not root.is_dir() or any(p.is_file() for p in root.rglob("*")):
        return
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    root.rmdir()


def _read_all(jobs, summary: ImportSummary, tables: dict, show: bool | None, bad_row_threshold: float) -> None:
    """Read, convert and validate every file; nothing is written (errors name the file)."""
    bar = progress_bar(total=len(jobs), desc="reading", unit="file", enabled=show)
    for path, entry in jobs:
        try:
            raw = _read_any(path)
            if raw.num_rows == 0:
                raise ImportError_(f"{path}: holds no rows; fix or replace the file, or drop its line "
                                   f"from {MANIFEST}")
            table = convert(raw, entry, path, _source_name(entry))
            # a mostly-bad file is refused here, before anything is written
            _, report = validate(table, entry["kind"], bad_row_threshold=bad_row_threshold)
        except (ImportError_, ValidationError):
            raise
        except READ_ERRORS as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ImportError_(f"{path}: cannot import it ({reason}); fix or replace the file, or drop its "
                               f"line from {MANIFEST}") from None
        expected = entry.get("rows")
        series_cols = list(S.SERIES_COLUMNS[entry["kind"]])
        nser = table.select(series_cols).group_by(series_cols).aggregate([]).num_rows
        summary.files.append(FileImport(
            file=entry["file"], dataset=entry["kind"], rows=raw.num_rows,
            expected_rows=int(expected) if expected not in (None, "") else None, series=nser,
            issues="" if report.ok else report.summary()))
        summary.rows_read += raw.num_rows
        tables.setdefault(entry["kind"], []).append(table)
        bar.set_postfix_str(entry["file"][-40:], refresh=False)
        bar.update()
    bar.close()
    for f in summary.files:
        if f.matches is False:
            log.warning("%s: read %d rows, the manifest says %d", f.file, f.rows, f.expected_rows)


def _write_all(directory: Path, lake: Lake, summary: ImportSummary, tables: dict, show: bool | None,
               bad_row_threshold: float) -> None:
    for dataset, parts in tables.items():
        table = pa.concat_tables(parts)
        series_cols = list(S.SERIES_COLUMNS[dataset])
        # one write per series; files later in the list win on the same key
        codes = series_codes(table, series_cols)
        idx = np.argsort(codes, kind="stable")  # stable: file order kept inside a series
        table = table.take(pa.array(idx))
        sorted_codes = codes[idx]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if table.num_rows \
            else np.array([], dtype=int)
        bounds = list(starts) + [table.num_rows]
        bar = progress_bar(total=len(starts), desc=f"writing {dataset}", unit="series", enabled=show)
        for a, b in itertools.pairwise(bounds):
            part = table.slice(a, b - a)
            res = lake.write(dataset, part, source=f"import:{directory.name}", bad_row_threshold=bad_row_threshold)
            _accumulate(summary, res)
            for key in res.series:
                _mark_runs(lake, key, part)
            summary.series += len(res.series)
            bar.set_postfix_str(str(res.series[0].symbol if res.series else ""), refresh=False)
            bar.update()
        bar.close()


def _accumulate(summary: ImportSummary, res: WriteResult) -> None:
    summary.rows_written += res.rows_written
    summary.rows_new += res.rows_new
    summary.rows_updated += res.rows_updated
    summary.rows_unchanged += res.rows_unchanged
    summary.rows_dropped += res.rows_dropped
    summary.files_written += len(res.files)


def _mark_runs(lake: Lake, key: SeriesKey, table: pa.Table) -> None:
    """Mark the gap-free runs of the imported rows complete: [run start, last bar + step)."""
    ts = np.unique(table["ts"].to_numpy().astype("datetime64[us]"))
    if ts.size == 0:
        return
    first, last = pd.Timestamp(ts[0], tz="UTC"), pd.Timestamp(ts[-1], tz="UTC")
    if key.dataset == "funding":
        iv = table["interval_hours"].to_numpy()
        step = pd.Timedelta(hours=float(np.nanmax(iv)) if iv.size else 8.0)
        lake.mark_complete(key.dataset, key, first.floor("h"), last.floor("h") + step)
        return
    if not key.timeframe:  # single orders: the span they cover
        lake.mark_complete(key.dataset, key, first, last)
        return
    step = timerange.timeframe_delta(key.timeframe)
    gaps, _, _ = find_gaps(ts, step)
    runs, start = [], first
    for gap_start, gap_end in gaps:
        runs.append((start, gap_start))
        start = gap_end
    runs.append((start, last + step))
    lake.mark_complete_many(key.dataset, key, runs)
