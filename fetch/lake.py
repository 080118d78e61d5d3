"""The Parquet lake: paths, atomic idempotent writes, and the coverage manifest.

Layout (hive partitions, readable by DuckDB `read_parquet(..., hive_partitioning=true)`):

    <root>/<dataset>/venue=<v>/market=<m>/symbol=<s>[/timeframe=<tf>][/price_type=<pt>]/period=<P>/data.parquet
    <root>/<dataset>/.../symbol=<s>[...]/_coverage.json        (one manifest per series)

- ohlcv partitions: venue, market, symbol, timeframe, price_type, period;
  funding: venue, market, symbol, period; open_interest and liquidations: venue, market,
  symbol, timeframe, period (liquidation single orders have timeframe "", i.e. `timeframe=`).
- `period` is the time partition: `YYYY-MM` (a UTC month) for intraday series and single
  orders, `YYYY` (a UTC year) for daily-or-coarser series and funding, which would
  otherwise make a file of ~30 rows per month (see `period_of`).
- Partition values are percent-encoded (every byte outside `A-Z a-z 0-9 - .`, so `/`, `_`
  and `%` too): `BTC/USDT:USDT` -> `BTC%2FUSDT%3AUSDT`, `../x` -> `..%2Fx`, `a/b` -> `a%2Fb`,
  `a_b` -> `a%5Fb`. No value can escape the lake or collide with another, and DuckDB
  decodes the values back to the original symbol when it reads the hive columns.
- Data files hold only the non-partition columns (ts and values), sorted by the row key.
- A write merges with what is stored, dedupes on the row key (the later value wins, so
  late corrections land), writes `.<name>.<random>.tmp` beside the target and `os.replace`s
  it in. A crash leaves the old file or the new one, never a partial one; leftover `.tmp`
  files are ignored by readers (they do not end in `.parquet`) and removed by the next
  write into that folder. A write that changes nothing touches no file.
- The manifest `_coverage.json` of a series records its files (rows, first/last ts,
  bytes, sha256), the intervals marked complete, and the gaps found at write time, so
  `missing()`, `coverage()` and `snapshot_id` read no data. Data files are fsynced before
  the rename; manifests are replaced atomically but not fsynced: a manifest lost or torn
  by a power cut is rebuilt from the data files (`rebuild_manifest`; its complete
  intervals are then empty, so the next refresh fetches those ranges again).
- One writer per lake at a time: refresh, fetch and import hold the lake's writer lock
  (fetch/lock.py, an OS file lock); readers never see a partial file.
- The manifests are the single source of truth for readers: the catalog reads only the
  files a manifest lists, checked against their recorded size and quick hash
  (`checked_files`), so a file an interrupted import left without a manifest entry is
  invisible and a damaged one is refused, naming the file and the fix. `verify()` checks
  every file against its manifest (full sha256, Parquet footer); `snapshot_id()` covers the
  files as they are on disk (size + quick hash), so a damaged file changes the id.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fetch import atomic, timerange
from fetch import schema as S
from fetch.errors import EnvironmentFault, UserError
from fetch.validate import ValidationReport, find_gaps, series_codes, validate

log = logging.getLogger(__name__)

LAKE_ENV = "LIQREPLAY_LAKE"
DEFAULT_LAKE = "lake"
MANIFEST_NAME = "_coverage.json"
DATA_NAME = "data.parquet"
PERIOD_FORMATS = {"month": "%Y-%m", "year": "%Y"}
IMPORT_MARKER = "_import_in_progress.json"  # present while an import writes; left by an interrupted one
QUICK_CHUNK = 64 * 1024
_PERIOD_RE = re.compile(r"\d{4}(-(0[1-9]|1[0-2]))?")
_SAFE = "-."  # besides ASCII letters and digits, the only bytes left unencoded


def resolve_lake(arg: str | os.PathLike | None = None) -> Path:
    """The lake root: `arg` (the `--lake` option), else $LIQREPLAY_LAKE, else ./lake.
    A path that exists and is not a folder is refused (UserError naming it)."""
    if arg:
        root = Path(arg).expanduser()
    else:
        env = os.environ.get(LAKE_ENV)
        root = Path(env).expanduser() if env else Path(DEFAULT_LAKE)
    if root.exists() and not root.is_dir():
        raise UserError(f"the lake {root} is a file, not a folder: pass --lake DIR (a folder, "
                        f"created on the first import) or set ${LAKE_ENV}")
    return root


class LakeDamaged(EnvironmentFault):
    """A lake file that does not match its manifest or does not read (exit 1); the message
    names the file and the fix."""

    def __init__(self, path: Path, reason: str, root: Path | None = None):
        self.path, self.reason = Path(path), reason
        lake = f" --lake {root}" if root is not None else ""
        super().__init__(f"lake file {path} is damaged ({reason}): run `liqreplay data verify "
                         f"--repair{lake}`, then import or fetch it again")


def quick_hash(path: Path) -> str:
    """Cheap content hash: size + the first and last 64 KiB (the whole file when smaller);
    a Parquet file's footer (its schema and row groups) is in the last bytes."""
    h = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        if size <= 2 * QUICK_CHUNK:
            h.update(fh.read())
        else:
            h.update(fh.read(QUICK_CHUNK))
            fh.seek(size - QUICK_CHUNK)
            h.update(fh.read(QUICK_CHUNK))
    return h.hexdigest()


@dataclass(frozen=True)
class FileProblem:
    """One finding of `Lake.verify`: kind is missing | size | hash | unreadable | rows |
    orphan (a data file no manifest lists) | manifest (a manifest of the wrong shape)."""

    kind: str
    path: Path
    detail: str
    key: "SeriesKey | None" = None
    period: str = ""

    def line(self) -> str:
        return f"{self.kind:<10} {self.path}: {self.detail}"


def period_of(key: "SeriesKey") -> str:
    """Time partition of a series: "year" for funding and timeframes of a day or more,
    else "month"."""
    if key.dataset == "funding":
        return "year"
    if key.timeframe and timerange.timeframe_delta(key.timeframe) >= timedelta(days=1):
        return "year"
    return "month"


def encode_part(value: str) -> str:
    """Path-safe, reversible, collision-free encoding of one partition value."""
    if value == "":
        return ""
    enc = quote(value, safe=_SAFE)
    return enc.replace("_", "%5F")


def decode_part(text: str) -> str:
    """Inverse of `encode_part`."""
    return unquote(text)


@dataclass(frozen=True)
class SeriesKey:
    """One series of the lake. Fields a dataset does not partition on are normalised:
    funding has timeframe "" and price_type ""; open_interest and liquidations have
    price_type "" (liquidation single orders: timeframe "")."""

    dataset: str
    venue: str
    market: str
    symbol: str
    timeframe: str = ""
    price_type: str = "trade"

    def __post_init__(self) -> None:
        S.schema_for(self.dataset)  # raises SchemaError for an unknown dataset
        cols = S.SERIES_COLUMNS[self.dataset]
        if "timeframe" not in cols:
            object.__setattr__(self, "timeframe", "")
        if "price_type" not in cols:
            object.__setattr__(self, "price_type", "")
        for name in ("venue", "market", "symbol"):
            if not getattr(self, name):
                raise ValueError(f"SeriesKey.{name} must not be empty")
        if "timeframe" in cols and self.dataset != "liquidations" and not self.timeframe:
            raise ValueError(f"SeriesKey.timeframe must be set for {self.dataset}")

    def partitions(self) -> list[tuple[str, str]]:
        """(hive column, value) pairs of the series, outermost first."""
        return [(c, getattr(self, c)) for c in S.SERIES_COLUMNS[self.dataset]]

    def relpath(self) -> Path:
        """Folder of the series relative to the lake root."""
        p = Path(self.dataset)
        for col, val in self.partitions():
            p = p / f"{col}={encode_part(val)}"
        return p

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class WriteResult:
    """What one `Lake.write` did. rows_written = rows_new + rows_updated."""

    dataset: str
    rows_in: int = 0
    rows_written: int = 0
    rows_new: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_dropped: int = 0  # invalid rows the validator removed
    files: list[Path] = field(default_factory=list)  # files (re)written
    series: list[SeriesKey] = field(default_factory=list)  # series the frame touched
    report: ValidationReport | None = None

    def __iadd__(self, other: "WriteResult") -> "WriteResult":
        for name in ("rows_in", "rows_written", "rows_new", "rows_updated", "rows_unchanged", "rows_dropped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.files += other.files
        self.series += [s for s in other.series if s not in self.series]
        return self


def _iso(ts) -> str:
    return pd.Timestamp(timerange.utc(ts)).isoformat()


def _merge_intervals(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for s, e in sorted(i for i in intervals if i[1] > i[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _dump_json(path: Path, obj) -> bool:
    """Write JSON atomically; returns False (and touches nothing) when the content is unchanged."""
    text = json.dumps(obj, indent=1, sort_keys=True) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    atomic.write_text(path, text)  # no fsync: a lost or torn manifest is rebuilt from the files
    return True


class Lake:
    """A lake rooted at `root` (created on first write). The lake never calls the network."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._manifest_index: dict[str, list[dict]] | None = None  # manifests by dataset (readers)
        self._checked: dict[Path, str] = {}  # path -> "" fine, else why it is damaged

    # ---------------------------------------------------------------- paths
    def series_dir(self, key: SeriesKey) -> Path:
        """Folder of a series; always inside the root (values are percent-encoded)."""
        path = self.root / key.relpath()
        if self.root.resolve() not in path.resolve().parents:  # cannot happen: values are encoded
            raise ValueError(f"series path {path} escapes the lake {self.root}")
        return path

    def _manifest_path(self, key: SeriesKey) -> Path:
        return self.series_dir(key) / MANIFEST_NAME

    def _read_manifest(self, key: SeriesKey) -> dict:
        path = self._manifest_path(key)
        if path.exists():
            try:
                m = json.loads(path.read_text())
                problem = manifest_problem(m)
                if problem is None:
                    return m
                log.warning("manifest %s has the wrong shape (%s): rebuilding it from the data files",
                            path, problem)
            except (ValueError, UnicodeDecodeError):
                log.warning("unreadable manifest %s: rebuilding it from the data files", path)
        return {"key": key.as_dict(), "files": {}, "complete": [], "gaps": [], "gap_rows": 0,
                "expected_rows": 0}

    def _save_manifest(self, key: SeriesKey, manifest: dict) -> None:
        self._manifest_index = None
        self._checked.clear()
        _dump_json(self._manifest_path(key), manifest)

    def series_files(self, key: SeriesKey) -> list[Path]:
        """The series' data files, time order (temp files excluded)."""
        return sorted(self.series_dir(key).glob(f"period=*/{DATA_NAME}"))

    # ---------------------------------------------------------------- write
    def write(self, dataset: str, frame: pd.DataFrame | pa.Table, *, source: str,
              bad_row_threshold: float = 0.5) -> WriteResult:
        """Validate, conform and merge `frame` into the lake.

        `frame` carries the canonical columns of `dataset` (see fetch/schema.py), any number
        of series. Invalid rows (non-finite or non-positive prices, OHLC inconsistency, null
        keys) are dropped and reported; more than `bad_row_threshold` bad rows refuses the
        whole frame (fetch.validate.ValidationError, nothing written). Rows are merged with
        the stored month files, deduped on the row key (this frame's values win), written
        to a temp file and `os.replace`d in. Files whose content would not change are left
        untouched (bytes and mtime). `source` is recorded in the manifest of each file.
        """
        table = S.to_canonical(frame, dataset)
        result = WriteResult(dataset=dataset, rows_in=table.num_rows)
        table, report = validate(table, dataset, bad_row_threshold=bad_row_threshold)
        result.report = report
        result.rows_dropped = report.rows_dropped
        if table.num_rows == 0:
            return result
        series_cols = list(S.SERIES_COLUMNS[dataset])
        codes = series_codes(table, series_cols)
        order = np.argsort(codes, kind="stable")  # stable: later rows still win inside a series
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        for a, b in itertools.pairwise([*starts, len(order)]):
            part = table.take(pa.array(order[a:b]))
            combo = {c: part[c][0].as_py() for c in series_cols}
            if "price_type" not in combo:
                combo["price_type"] = ""
            result += self._write_series(SeriesKey(dataset=dataset, **combo), part, source)
        return result

    def _write_series(self, key: SeriesKey, table: pa.Table, source: str) -> WriteResult:
        res = WriteResult(dataset=key.dataset, series=[key])
        sdir = self.series_dir(key)
        keycols = list(S.row_key(key.dataset, key.timeframe))
        data_cols = [f.name for f in S.schema_for(key.dataset) if f.name not in S.SERIES_COLUMNS[key.dataset]]
        file_schema = pa.schema([S.schema_for(key.dataset).field(c) for c in data_cols])
        table = table.select(data_cols)
        unit = "M" if period_of(key) == "month" else "Y"
        periods = np.asarray(table["ts"].to_numpy().astype("datetime64[us]").astype(f"datetime64[{unit}]"))
        period_names = {p: str(p) for p in np.unique(periods)}
        manifest = self._read_manifest(key)
        manifest["key"] = key.as_dict()
        changed_manifest = False
        known_ts: dict[str, pa.Table] = {}
        for pval, month in sorted(period_names.items(), key=lambda kv: kv[1]):
            mdir = sdir / f"period={month}"
            final = mdir / DATA_NAME
            self._clean_temp(mdir)
            incoming = table.filter(pa.array(periods == pval))
            incoming = _dedupe(incoming, keycols)
            info = manifest["files"].get(month)
            old = self._read_stored(final, info, file_schema)
            if old is None:  # damaged: the incoming rows replace it, its complete marks go
                old = file_schema.empty_table()
                info = None
                manifest["files"].pop(month, None)
                _drop_complete(manifest, month)
            merged = _dedupe(pa.concat_tables([old, incoming]), keycols)
            merged = merged.sort_by([(c, "ascending") for c in keycols])
            n_new = merged.num_rows - old.num_rows
            n_diff = 0 if merged.equals(old) else _count_not_in(merged, old)
            n_upd = n_diff - n_new
            res.rows_new += n_new
            res.rows_updated += n_upd
            res.rows_unchanged += incoming.num_rows - n_new - n_upd
            if n_diff == 0 and final.exists() and info is not None:
                continue
            if n_diff:
                self._atomic_write(merged, final)
                res.files.append(final)
            known_ts[month] = merged
            kept_source = source if n_diff else (info or {}).get("source", source)
            manifest["files"][month] = _file_info(final, merged, kept_source)
            changed_manifest = True
        res.rows_written = res.rows_new + res.rows_updated
        if changed_manifest:
            self._refresh_series_stats(key, manifest, known_ts)
            self._save_manifest(key, manifest)
        return res

    def _read_stored(self, final: Path, info: dict | None, file_schema: pa.Schema) -> pa.Table | None:
        """The stored rows of a period file (empty if none); None when the file is damaged
        (not the bytes its manifest recorded, or not readable Parquet): it is then healed."""
        if not final.exists():
            return file_schema.empty_table()
        data = final.read_bytes()
        if info is not None and info.get("sha256") and hashlib.sha256(data).hexdigest() != info["sha256"]:
            log.warning("%s does not match its manifest (damaged): replacing it with the rows written now", final)
            return None
        try:
            return pq.read_table(pa.BufferReader(data), schema=file_schema)
        except (pa.ArrowException, OSError, ValueError) as exc:
            log.warning("%s does not read (%s): replacing it with the rows written now", final, exc)
            return None

    @staticmethod
    def _clean_temp(folder: Path) -> None:
        if folder.exists():
            for tmp in folder.glob(".*.tmp"):
                log.info("removing leftover temp file %s", tmp)
                tmp.unlink(missing_ok=True)

    def _atomic_write(self, table: pa.Table, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
            self._commit(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _commit(self, tmp: Path, final: Path) -> None:
        """Move a fully written temp file into place (one rename: atomic)."""
        os.replace(tmp, final)

    def _refresh_series_stats(self, key: SeriesKey, manifest: dict,
                              known_ts: dict[str, pa.Table] | None = None) -> None:
        """Recompute rows, first/last ts and gaps of a series from its files' ts column
        (`known_ts`: the tables of periods just written, so they are not read back).
        Funding gaps: a settlement missing where the next one comes later than the longer
        of the two rows' interval_hours (+1 minute: Binance stamps settlements a few ms late)."""
        known_ts = known_ts or {}
        files = self.series_files(key)
        # drop manifest entries whose file vanished, add ones written by a crashed run
        present = {f.parent.name.split("=", 1)[1]: f for f in files}
        for month in list(manifest["files"]):
            if month not in present:
                del manifest["files"][month]
        cols = ["ts", "interval_hours"] if key.dataset == "funding" else ["ts"]
        ts_parts = []
        for month, f in present.items():
            if month in known_ts and month in manifest["files"]:
                ts_parts.append(known_ts[month].select(cols))
                continue
            try:
                t = pq.read_table(f, columns=cols)
            except (pa.ArrowException, OSError, ValueError) as exc:
                log.warning("%s does not read (%s): left out of the manifest; "
                            "`liqreplay data verify --repair` removes it", f, exc)
                manifest["files"].pop(month, None)
                continue
            if month not in manifest["files"]:
                manifest["files"][month] = _file_info(f, t, "unknown")
            ts_parts.append(t)
        if not ts_parts:
            return
        allts = pa.concat_tables(ts_parts).sort_by("ts")
        ts_np = np.unique(allts["ts"].to_numpy().astype("datetime64[us]"))
        manifest["rows"] = int(sum(v["rows"] for v in manifest["files"].values()))
        manifest["first_ts"] = _iso(pd.Timestamp(ts_np[0], tz="UTC"))
        manifest["last_ts"] = _iso(pd.Timestamp(ts_np[-1], tz="UTC"))
        step = timerange.timeframe_delta(key.timeframe) if key.timeframe else None
        if key.dataset == "funding":
            step = None
        if step is not None:
            gaps, missing_rows, expected = find_gaps(ts_np, step)
            manifest["gaps"] = [[_iso(a), _iso(b)] for a, b in gaps]
            manifest["gap_rows"] = int(missing_rows)
            manifest["expected_rows"] = int(expected)
        elif key.dataset == "funding" and len(ts_np) > 1:
            t_us = allts["ts"].to_numpy().astype("datetime64[us]").astype("int64")
            iv_us = (allts["interval_hours"].to_numpy(zero_copy_only=False) * 3_600_000_000).astype("int64")
            diff = np.diff(t_us)
            # an interval change (8h -> 2h -> 8h) is not a gap: compare with the longer of the two
            late = np.flatnonzero(diff > np.maximum(iv_us[:-1], iv_us[1:]) + 60_000_000)
            missing = [max(1, int(round(diff[i] / iv_us[i])) - 1) for i in late]
            manifest["gaps"] = [[_iso(pd.Timestamp(t_us[i] + iv_us[i], unit="us", tz="UTC")),
                                 _iso(pd.Timestamp(t_us[i + 1], unit="us", tz="UTC"))] for i in late]
            manifest["gap_rows"] = int(sum(missing))
            manifest["expected_rows"] = int(len(ts_np) + sum(missing))
        else:
            manifest["gaps"], manifest["gap_rows"], manifest["expected_rows"] = [], 0, int(len(ts_np))

    # ---------------------------------------------------------------- coverage
    def mark_complete(self, dataset: str, key: SeriesKey, start: datetime, end: datetime) -> None:
        """Record in the manifest that [start, end) of the series is complete."""
        self.mark_complete_many(dataset, key, [(start, end)])

    def mark_complete_many(self, dataset: str, key: SeriesKey, intervals) -> None:
        """`mark_complete` for several [start, end) intervals in one manifest update."""
        if key.dataset != dataset:
            raise ValueError(f"key is for {key.dataset}, not {dataset}")
        new = [(timerange.utc(a), timerange.utc(b)) for a, b in intervals]
        new = [(a, b) for a, b in new if b > a]
        if not new:
            return
        manifest = self._read_manifest(key)
        ivs = [(timerange.utc(a), timerange.utc(b)) for a, b in manifest.get("complete", [])]
        merged = _merge_intervals(ivs + new)
        manifest["complete"] = [[_iso(a), _iso(b)] for a, b in merged]
        self._save_manifest(key, manifest)

    def complete(self, key: SeriesKey) -> list[tuple[datetime, datetime]]:
        """The intervals marked complete for a series (manifest only)."""
        return [(timerange.utc(a), timerange.utc(b)) for a, b in self._read_manifest(key).get("complete", [])]

    def missing(self, dataset: str, key: SeriesKey, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """Parts of [start, end) not marked complete, in order. Reads only the manifest."""
        if key.dataset != dataset:
            raise ValueError(f"key is for {key.dataset}, not {dataset}")
        s, e = timerange.utc(start), timerange.utc(end)
        out: list[tuple[datetime, datetime]] = []
        cursor = s
        for a, b in self.complete(key):
            if b <= cursor:
                continue
            if a >= e:
                break
            if a > cursor:
                out.append((cursor, min(a, e)))
            cursor = max(cursor, b)
            if cursor >= e:
                break
        if cursor < e:
            out.append((cursor, e))
        return out

    def manifests(self) -> list[dict]:
        """Every series manifest in the lake (sorted by path)."""
        if not self.root.exists():
            return []
        out = []
        for path in sorted(self.root.glob(f"*/**/{MANIFEST_NAME}")):
            try:
                m = json.loads(path.read_text())
                problem = manifest_problem(m)
            except (ValueError, UnicodeDecodeError):
                m, problem = None, "not valid JSON"
            if problem is not None:
                log.warning("manifest %s is unusable (%s): rebuilding it from the data files", path, problem)
                try:
                    m = self.rebuild_manifest(self.key_from_dir(path.parent))
                except (ValueError, S.SchemaError) as exc:
                    log.warning("skipping %s: its folder is not a series of this lake (%s)", path, exc)
                    continue
            m["_path"] = str(path.parent.relative_to(self.root))
            out.append(m)
        return out

    # ---------------------------------------------------------------- integrity
    def listed_files(self, manifest: dict) -> list[tuple[str, Path, dict]]:
        """(period, path, file info) of every file a manifest lists."""
        sdir = self.root / manifest["_path"] if "_path" in manifest else \
            self.series_dir(SeriesKey(**manifest["key"]))
        return [(period, sdir / f"period={period}" / DATA_NAME, info)
                for period, info in sorted(manifest.get("files", {}).items())]

    def check_file(self, path: Path, info: dict) -> str | None:
        """Cheap check of one listed file: exists, size and quick hash as recorded (files
        written before quick hashes were recorded: size only). The reason, or None if fine."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "missing"
        if info.get("bytes") is not None and size != info["bytes"]:
            return f"{size} bytes, the manifest recorded {info['bytes']}"
        if info.get("quick") and quick_hash(path) != info["quick"]:
            return "content differs from what was written"
        return None

    def checked_files(self, dataset: str, span: tuple | None = None, **fixed: str) -> list[Path]:
        """The data files the manifests list for the series matching `fixed` partition values
        (venue=, market=, symbol=, timeframe=, price_type=) whose period overlaps `span`
        ([start, end), None: all), each checked (`check_file`); raises LakeDamaged naming
        the first damaged one. Files no manifest lists are never returned (an interrupted
        import's leftovers)."""
        try:
            return self._checked_files(dataset, span, fixed)
        except LakeDamaged:
            # the manifests may have changed since they were cached (a write since): re-read once
            self._manifest_index = None
            self._checked.clear()
            return self._checked_files(dataset, span, fixed)

    def _checked_files(self, dataset: str, span, fixed: dict) -> list[Path]:
        out = []
        lo, hi = (timerange.utc(span[0]), timerange.utc(span[1])) if span is not None else (None, None)
        for m in self._index().get(dataset, []):
            if any(m["key"].get(c) != v for c, v in fixed.items()):
                continue
            for period, path, info in self.listed_files(m):
                if lo is not None:
                    a, b = _period_bounds(period)
                    if b <= lo or a >= hi:
                        continue
                cached = self._checked.get(path)
                if cached is None:
                    cached = self._checked[path] = self.check_file(path, info) or ""
                if cached:
                    raise LakeDamaged(path, cached, self.root)
                out.append(path)
        return out

    def _index(self) -> dict[str, list[dict]]:
        if self._manifest_index is None:
            idx: dict[str, list[dict]] = {}
            for m in self.manifests():
                idx.setdefault(m["key"]["dataset"], []).append(m)
            self._manifest_index = idx
        return self._manifest_index

    def verify(self) -> list[FileProblem]:
        """Every file against its manifest: present, size, full sha256, readable Parquet
        with the recorded row count; data files no manifest lists (orphans). Reads all data."""
        problems: list[FileProblem] = []
        listed: set[Path] = set()
        for m in self.manifests():
            key = SeriesKey(**m["key"])
            for period, path, info in self.listed_files(m):
                listed.add(path.resolve())
                fp = self._verify_file(path, info)
                if fp is not None:
                    problems.append(FileProblem(fp[0], path, fp[1], key, period))
        if self.root.exists():
            for path in sorted(self.root.glob(f"*/**/period=*/{DATA_NAME}")):
                if path.resolve() not in listed:
                    problems.append(FileProblem("orphan", path, "no manifest lists it (an interrupted "
                                                "write or import left it)"))
        return problems

    @staticmethod
    def _verify_file(path: Path, info: dict) -> tuple[str, str] | None:
        if not path.exists():
            return "missing", "listed in the manifest but absent"
        data = path.read_bytes()
        if info.get("bytes") is not None and len(data) != info["bytes"]:
            return "size", f"{len(data)} bytes, the manifest recorded {info['bytes']}"
        if info.get("sha256") and hashlib.sha256(data).hexdigest() != info["sha256"]:
            return "hash", "sha256 differs from the one recorded when it was written"
        try:
            n = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:
            return "unreadable", f"not readable Parquet ({exc})"
        if info.get("rows") is not None and n != info["rows"]:
            return "rows", f"{n} rows, the manifest recorded {info['rows']}"
        return None

    def repair(self, problems: list[FileProblem]) -> list[Path]:
        """Drop what `verify` found broken: the file, its manifest entry and the complete
        marks of its period (so the next import, fetch or refresh writes it again); orphans
        are deleted. Returns the files removed."""
        removed: list[Path] = []
        by_series: dict[SeriesKey, list[FileProblem]] = {}
        for p in problems:
            if p.kind == "orphan" or p.key is None:
                p.path.unlink(missing_ok=True)
                removed.append(p.path)
            else:
                by_series.setdefault(p.key, []).append(p)
        for key, probs in by_series.items():
            manifest = self._read_manifest(key)
            for p in probs:
                p.path.unlink(missing_ok=True)
                removed.append(p.path)
                manifest["files"].pop(p.period, None)
                _drop_complete(manifest, p.period)
            self._refresh_series_stats(key, manifest)
            if not manifest["files"]:
                self._manifest_path(key).unlink(missing_ok=True)
            else:
                self._save_manifest(key, manifest)
        self._manifest_index = None
        self._checked.clear()
        return removed

    # ---------------------------------------------------------------- interrupted imports
    def begin_import(self, source: str) -> None:
        """Mark that an import is writing (removed by `end_import`; a marker found later
        means an import was interrupted)."""
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic.write_text(self.root / IMPORT_MARKER,
                          json.dumps({"source": source, "pid": os.getpid(), "started_utc": started}))

    def end_import(self) -> None:
        (self.root / IMPORT_MARKER).unlink(missing_ok=True)

    def interrupted_import(self) -> str | None:
        """A one-line notice when an import into this lake was interrupted, else None."""
        marker = self.root / IMPORT_MARKER
        if not marker.exists():
            return None
        try:
            info = json.loads(marker.read_text())
            src = info.get("source", "?")
        except (ValueError, OSError):
            src = "?"
        return (f"an import of {src} into {self.root} was interrupted: the series it finished are in "
                f"the lake, the rest are not; run `liqreplay import {src} --lake {self.root}` again "
                f"to complete it")

    def key_from_dir(self, folder: Path) -> SeriesKey:
        """The SeriesKey of a series folder (inverse of `series_dir`)."""
        rel = Path(folder).relative_to(self.root)
        fields = {"dataset": rel.parts[0]}
        for part in rel.parts[1:]:
            col, _, val = part.partition("=")
            fields[col] = decode_part(val)
        if "price_type" not in fields:
            fields["price_type"] = ""
        return SeriesKey(**fields)

    def rebuild_manifest(self, key: SeriesKey) -> dict:
        """Recreate a series manifest from its data files (complete intervals are lost:
        they will be fetched again). Used when a manifest is unreadable."""
        log.warning("rebuilding the manifest of %s from its files", key)
        manifest = {"key": key.as_dict(), "files": {}, "complete": [], "gaps": [], "gap_rows": 0,
                    "expected_rows": 0}
        self._refresh_series_stats(key, manifest)
        self._save_manifest(key, manifest)
        return manifest

    def series(self) -> list[SeriesKey]:
        return [SeriesKey(**m["key"]) for m in self.manifests()]

    def coverage(self) -> pd.DataFrame:
        """One row per series: dataset, venue, market, symbol, timeframe, price_type, rows,
        first_ts, last_ts, files, complete (intervals), gaps (ranges of missing bars: each
        (first missing bar open, next present bar open)), gap_pct (missing / expected bars
        between first and last). Reads only the manifests."""
        rows = []
        for m in self.manifests():
            k = m["key"]
            expected = m.get("expected_rows") or 0
            rows.append({
                **{c: k[c] for c in ("dataset", "venue", "market", "symbol", "timeframe", "price_type")},
                "rows": int(m.get("rows", 0)),
                "first_ts": pd.Timestamp(m["first_ts"]) if m.get("first_ts") else pd.NaT,
                "last_ts": pd.Timestamp(m["last_ts"]) if m.get("last_ts") else pd.NaT,
                "files": len(m.get("files", {})),
                "complete": [(timerange.utc(a), timerange.utc(b)) for a, b in m.get("complete", [])],
                "gaps": [(timerange.utc(a), timerange.utc(b)) for a, b in m.get("gaps", [])],
                "gap_pct": 100.0 * m.get("gap_rows", 0) / expected if expected else 0.0,
            })
        cols = ["dataset", "venue", "market", "symbol", "timeframe", "price_type", "rows", "first_ts",
                "last_ts", "files", "complete", "gaps", "gap_pct"]
        return pd.DataFrame(rows, columns=cols)

    def snapshot_id(self) -> str:
        """Stable hash of every manifest (files' sha256, complete intervals) and of every
        listed file as it is on disk (size + quick hash): equal lakes, equal ids; a damaged
        or replaced file changes the id."""
        h = hashlib.sha256()
        for m in self.manifests():
            body = {k: m.get(k) for k in ("key", "files", "complete")}
            for info in body["files"].values():
                info.pop("source", None)
            disk = {}
            for period, path, _info in self.listed_files(m):
                disk[period] = quick_hash(path) if path.exists() else "missing"
            h.update(json.dumps([body, disk], sort_keys=True).encode())
        return h.hexdigest()[:16]


def _file_info(path: Path, table: pa.Table, source: str) -> dict:
    ts = table["ts"]
    return {
        "rows": table.num_rows,
        "first_ts": _iso(pc.min(ts).as_py()) if table.num_rows else None,
        "last_ts": _iso(pc.max(ts).as_py()) if table.num_rows else None,
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "quick": quick_hash(path),
        "source": source,
    }


def manifest_problem(m) -> str | None:
    """Why a parsed `_coverage.json` is not a manifest (None when its shape is right)."""
    if not isinstance(m, dict):
        return f"a {type(m).__name__}, not an object"
    if not isinstance(m.get("key"), dict) or not {"dataset", "venue", "market", "symbol"} <= set(m["key"]):
        return "no series key"
    files = m.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, dict) and "rows" in v for v in files.values()):
        return "files is not a table of file records"
    bad = [p for p in files if not _PERIOD_RE.fullmatch(str(p))]
    if bad:
        return f"file period {bad[0]!r} is neither YYYY nor YYYY-MM"
    comp = m.get("complete", [])
    if not isinstance(comp, list) or not all(isinstance(c, list) and len(c) == 2 for c in comp):
        return "complete is not a list of [start, end] pairs"
    for name in ("gaps",):
        if not isinstance(m.get(name, []), list):
            return f"{name} is not a list"
    try:
        SeriesKey(**m["key"])
    except (TypeError, ValueError, S.SchemaError) as exc:
        return f"bad series key ({exc})"
    return None


def _period_bounds(period: str) -> tuple[datetime, datetime]:
    start = timerange.utc(pd.Timestamp(period + ("-01" if len(period) == 7 else "-01-01")))
    end = timerange.utc(pd.Timestamp(start) + (pd.DateOffset(months=1) if len(period) == 7 else pd.DateOffset(years=1)))
    return start, end


def _drop_complete(manifest: dict, period: str) -> None:
    """Remove [period start, period end) from the manifest's complete intervals."""
    a, b = _period_bounds(period)
    out = []
    for s_, e_ in manifest.get("complete", []):
        s, e = timerange.utc(s_), timerange.utc(e_)
        if e <= a or s >= b:
            out.append((s, e))
            continue
        if s < a:
            out.append((s, a))
        if e > b:
            out.append((b, e))
    manifest["complete"] = [[_iso(x), _iso(y)] for x, y in out]


def _dedupe(table: pa.Table, keycols: list[str]) -> pa.Table:
    """Keep the last row of each key (later rows win)."""
    if table.num_rows <= 1:
        return table
    idx = pa.array(np.arange(table.num_rows, dtype=np.int64))
    t = table.append_column("__row", idx)
    g = t.group_by(keycols, use_threads=False).aggregate([("__row", "max")])
    keep = pc.sort_indices(g["__row_max"])
    return table.take(pc.take(g["__row_max"], keep))


def _count_not_in(new: pa.Table, old: pa.Table) -> int:
    """Rows of `new` that have no identical row in `old` (NaN/null equal to themselves)."""
    if old.num_rows == 0:
        return new.num_rows
    a = new.to_pandas()
    b = old.to_pandas().drop_duplicates()
    m = a.merge(b, how="left", indicator=True, on=list(a.columns))
    return int((m["_merge"] == "left_only").sum())
