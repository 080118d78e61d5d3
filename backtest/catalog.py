"""The lake as DuckDB views, and small named queries returning pandas frames (Contract 1).

One view per dataset (`ohlcv`, `funding`, `open_interest`, `liquidations`) over the lake's
hive-partitioned Parquet files. Every query filters on the hive columns (venue, market,
symbol, timeframe, price_type, period) so DuckDB opens only the files of one series and
the months/years that overlap the window (partition pruning). Symbols come back as the
exchange ids they were written with (the lake percent-encodes them in paths; DuckDB
decodes the hive values).

Only the files the lake's manifests list are read, each checked against its recorded size
and quick hash first (fetch.lake.Lake.checked_files): a damaged file raises
fetch.lake.LakeDamaged naming it and the fix instead of silently changing the answer, and
files an interrupted import left without a manifest entry are not read.

Time conventions: every `ts` is UTC; a bar's `ts` is its OPEN and windows are half-open
[start, end) on `ts`. A daily open-interest sample stamped at the day open (Coinalyze's
end-of-day value) is only known at the bar's close: `open_interest(at)` returns the latest
sample whose close (`ts + timeframe`) is at or before `at`, never a later one.
"""
from __future__ import annotations

import itertools
import logging
import math
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from backtest.bars import MIN_COVERAGE, expected_bars
from fetch import schema as S
from fetch.lake import Lake
from fetch.timerange import timeframe_delta, to_utc

PARTITION_COLUMNS: dict[str, tuple[str, ...]] = {ds: S.SERIES_COLUMNS[ds] + ("period",) for ds in S.SCHEMAS}
BAR_COLUMNS = ["ts", "open", "high", "low", "close", "volume_base", "volume_quote"]


def _tf_sort_key(tf: str) -> float:
    try:
        return timeframe_delta(tf).total_seconds()
    except ValueError:
        return math.inf


class Catalog:
    """Read-only queries over a lake. Holds one in-memory DuckDB connection."""

    def __init__(self, lake_root: Path | str):
        self.root = Path(lake_root)
        self.lake = Lake(self.root)
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        self._views: set[str] = set()  # created on first `sql()`; named queries read files directly
        notice = self.lake.interrupted_import()
        if notice:
            logging.getLogger(__name__).warning(notice)

    # ------------------------------------------------------------ views
    @staticmethod
    def _read_parquet(dataset: str, files) -> str:
        paths = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        hive_types = ", ".join(f"'{c}': VARCHAR" for c in PARTITION_COLUMNS[dataset])
        # no union_by_name: it would open every file's footer at bind time
        return f"read_parquet([{paths}], hive_partitioning = true, hive_types = {{{hive_types}}})"

    def _ensure_views(self) -> None:
        for ds in S.SCHEMAS:
            if ds in self._views:
                continue
            files = self.lake.checked_files(ds)
            if not files:
                continue
            self.con.sql(f"CREATE OR REPLACE VIEW {ds} AS SELECT * FROM {self._read_parquet(ds, files)}")
            self._views.add(ds)

    def _has(self, dataset: str) -> bool:
        if dataset not in self._views:
            self._ensure_views()
        return dataset in self._views

    def _src(self, dataset: str, span=None, **fixed: str) -> str | None:
        """A read_parquet() over only the manifest-listed files of the series matching the
        fixed partitions whose period overlaps `span` = (start, end) (partition pruning;
        None: every period), each checked (LakeDamaged if one is damaged); None when none
        matches."""
        files = self.lake.checked_files(dataset, span=span, **fixed)
        if not files:
            return None
        return self._read_parquet(dataset, files)

    def _query(self, sql: str, params: list) -> pd.DataFrame:
        return self.con.sql(sql, params=params).to_arrow_table().to_pandas()

    def sql(self, query: str, params: list | None = None) -> pd.DataFrame:
        """Ad-hoc SQL over the views (ohlcv, funding, open_interest, liquidations)."""
        self._ensure_views()
        return self._query(query, params or [])

    @staticmethod
    def _period_filter(start, end) -> tuple[str, list]:
        """Prune time partitions: months `YYYY-MM` and years `YYYY` overlapping [start, end)."""
        s = to_utc(start)
        e = to_utc(end) - timedelta(microseconds=1)
        sql = "(period >= ? OR (length(period) = 4 AND period >= ?)) AND period <= ?"
        return sql, [s.strftime("%Y-%m"), s.strftime("%Y"), e.strftime("%Y-%m")]

    # ------------------------------------------------------------ ohlcv
    def timeframes(self, venue, market, symbol, start, end, *, price_type="trade") -> list[tuple[str, int]]:
        """(timeframe, rows in [start, end)) for every timeframe with rows there, finest first."""
        src = self._src("ohlcv", (start, end), venue=venue, market=market, symbol=symbol, price_type=price_type)
        if src is None:
            return []
        pf, pp = self._period_filter(start, end)
        df = self._query(
            f"SELECT timeframe, count(*) AS n FROM {src} WHERE venue = ? AND market = ? AND symbol = ? "
            f"AND price_type = ? AND {pf} AND ts >= ? AND ts < ? GROUP BY timeframe",
            [venue, market, symbol, price_type, *pp, to_utc(start), to_utc(end)],
        )
        out = [(str(r.timeframe), int(r.n)) for r in df.itertuples()]
        return sorted(out, key=lambda x: _tf_sort_key(x[0]))

    def bars(self, venue, market, symbol, start, end, *, timeframe=None, price_type="trade",
             min_coverage: float = MIN_COVERAGE) -> pd.DataFrame:
        """Bars with open in [start, end), sorted: ts (datetime64[us, UTC]), open, high, low,
        close, volume_base, volume_quote.

        timeframe=None picks the finest timeframe whose rows are >= `min_coverage` of the
        bars expected in the window; if none does, the finest timeframe with any rows.
        attrs: "timeframe" (the one used, None if no data), "coverage" (rows / expected
        bars, 0..1), "rows", "expected_rows", "venue", "market", "symbol", "price_type".
        """
        chosen = timeframe
        if chosen is None:
            tfs = self.timeframes(venue, market, symbol, start, end, price_type=price_type)
            for tf, n in tfs:
                exp = expected_bars(start, end, tf)
                if exp and n / exp >= min_coverage:
                    chosen = tf
                    break
            else:
                chosen = tfs[0][0] if tfs else None
        src = None if chosen is None else self._src(
            "ohlcv", (start, end), venue=venue, market=market, symbol=symbol, timeframe=chosen, price_type=price_type)
        if src is None:
            df = _empty(BAR_COLUMNS)
        else:
            pf, pp = self._period_filter(start, end)
            df = self._query(
                f"SELECT {', '.join(BAR_COLUMNS)} FROM {src} WHERE venue = ? AND market = ? AND symbol = ? "
                f"AND timeframe = ? AND price_type = ? AND {pf} AND ts >= ? AND ts < ? ORDER BY ts",
                [venue, market, symbol, chosen, price_type, *pp, to_utc(start), to_utc(end)],
            )
        exp = expected_bars(start, end, chosen) if chosen else 0
        df.attrs.update({
            "venue": venue, "market": market, "symbol": symbol, "price_type": price_type,
            "timeframe": chosen, "rows": len(df), "expected_rows": exp,
            "coverage": (min(1.0, len(df) / exp) if exp else 0.0),
        })
        return df

    def gaps(self, venue, market, symbol, timeframe, start, end, *,
             price_type="trade") -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """Missing bars of one series inside [start, end) as (first missing open, next
        present open or `end`), including a hole before the first and after the last bar."""
        df = self.bars(venue, market, symbol, start, end, timeframe=timeframe, price_type=price_type)
        step = pd.Timedelta(timeframe_delta(timeframe))
        s, e = pd.Timestamp(to_utc(start)), pd.Timestamp(to_utc(end))
        first = s.ceil(step) if s != s.floor(step) else s  # first grid point >= start
        points = [first - step] + list(df["ts"]) + [e]
        out = []
        for a, b in itertools.pairwise(points):
            lo = a + step
            if b > lo and lo < e:
                out.append((lo, min(b, e)))
        return out

    def adv_usd(self, venue, market, symbol, before, days=30, *, price_type="trade") -> float | None:
        """Mean daily quote volume (USD/USDT taken as USD) over [before - days, before).

        Uses the timeframe with the best coverage of that window (ties: the coarser one);
        with missing bars the mean is over the time covered (sum / (rows x bar length)).
        None when the window has no bars.
        """
        start = to_utc(before) - timedelta(days=days)
        tfs = self.timeframes(venue, market, symbol, start, before, price_type=price_type)
        if not tfs:
            return None
        best = max(tfs, key=lambda x: (min(1.0, x[1] / max(1, expected_bars(start, before, x[0]))),
                                       _tf_sort_key(x[0])))
        tf, n = best
        src = self._src("ohlcv", (start, before), venue=venue, market=market, symbol=symbol, timeframe=tf,
                        price_type=price_type)
        pf, pp = self._period_filter(start, before)
        # the column, summed exactly here: DuckDB's parallel sum() rounds differently from run to
        # run, and its last bits reached the fills (bar volumes are scaled by an ADV ratio)
        vq = self.con.sql(
            f"SELECT volume_quote FROM {src} WHERE venue = ? AND market = ? AND symbol = ? "
            f"AND timeframe = ? AND price_type = ? AND {pf} AND ts >= ? AND ts < ?",
            params=[venue, market, symbol, tf, price_type, *pp, start, to_utc(before)],
        ).fetchnumpy()["volume_quote"]
        if len(vq) == 0:
            return None
        vals = np.ma.getdata(vq)[~np.ma.getmaskarray(vq)] if np.ma.isMaskedArray(vq) else np.asarray(vq)
        vals = np.asarray(vals, float)
        vals = vals[np.isfinite(vals)]
        if len(vals) == 0:
            return None
        covered_days = len(vq) * timeframe_delta(tf).total_seconds() / 86400.0
        return math.fsum(vals) / covered_days

    # ------------------------------------------------------------ derivatives data
    def open_interest(self, venue, symbol, at, *, market="perp") -> dict | None:
        """Latest open interest known at `at`: of the samples whose close (ts + timeframe)
        is <= `at`, the one with the latest close, any timeframe. dict: ts, as_of (= ts + timeframe), timeframe,
        oi_base, oi_usd (None if unknown), source. None when there is none."""
        src = self._src("open_interest", venue=venue, market=market, symbol=symbol)
        if src is None:
            return None
        at = to_utc(at)
        tfs = self._query(f"SELECT DISTINCT timeframe FROM {src} WHERE venue = ? AND market = ? AND symbol = ?",
                          [venue, market, symbol])["timeframe"]
        best = None
        for tf in tfs:
            step = timeframe_delta(tf) if tf else timedelta(0)
            df = self._query(
                f"SELECT ts, timeframe, oi_base, oi_usd, source FROM {src} WHERE venue = ? AND market = ? "
                f"AND symbol = ? AND timeframe = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
                [venue, market, symbol, tf, at - step],
            )
            if df.empty:
                continue
            r = df.iloc[0]
            as_of = r["ts"] + step
            if best is None or as_of > best["as_of"]:
                best = {
                    "ts": r["ts"], "as_of": as_of, "timeframe": r["timeframe"], "oi_base": float(r["oi_base"]),
                    "oi_usd": None if pd.isna(r["oi_usd"]) else float(r["oi_usd"]), "source": r["source"],
                }
        return best

    def open_interest_path(self, venue, symbol, start, end, *, market="perp") -> pd.DataFrame:
        """Every open-interest sample known in (start, end]: ts (as stamped), timeframe, as_of
        (= ts + timeframe: when the value is known; Coinalyze's daily value stamped at the day
        open is that day's close), oi_base (coins), oi_usd (None if unknown), source; sorted
        by as_of. A value known after `end` is never returned (no look-ahead)."""
        cols = ["ts", "timeframe", "as_of", "oi_base", "oi_usd", "source"]
        src = self._src("open_interest", venue=venue, market=market, symbol=symbol)
        if src is None:
            return _empty(cols)
        s, e = to_utc(start), to_utc(end)
        df = self._query(
            f"SELECT ts, timeframe, oi_base, oi_usd, source FROM {src} WHERE venue = ? AND market = ? "
            f"AND symbol = ? AND ts <= ? AND ts >= ? ORDER BY ts",
            [venue, market, symbol, e, s - timedelta(days=2)],
        )
        if df.empty:
            return _empty(cols)
        step = df["timeframe"].map(lambda tf: pd.Timedelta(timeframe_delta(tf)) if tf else pd.Timedelta(0))
        df["as_of"] = pd.to_datetime(df["ts"], utc=True) + step
        df = df[(df["as_of"] > pd.Timestamp(s)) & (df["as_of"] <= pd.Timestamp(e))]
        return df[cols].sort_values(["as_of", "ts"]).reset_index(drop=True)

    def funding(self, venue, symbol, start, end, *, market="perp") -> pd.DataFrame:
        """Funding settlements with ts in [start, end): ts (as stamped: Binance is a few ms
        after the hour), rate (fraction per interval), interval_hours, mark_price."""
        cols = ["ts", "rate", "interval_hours", "mark_price"]
        src = self._src("funding", (start, end), venue=venue, market=market, symbol=symbol)
        if src is None:
            return _empty(cols)
        pf, pp = self._period_filter(start, end)
        return self._query(
            f"SELECT {', '.join(cols)} FROM {src} WHERE venue = ? AND market = ? AND symbol = ? AND {pf} "
            f"AND ts >= ? AND ts < ? ORDER BY ts",
            [venue, market, symbol, *pp, to_utc(start), to_utc(end)],
        )

    def liquidations(self, venue, symbol, start, end, *, market="perp", timeframe=None) -> pd.DataFrame:
        """Liquidations with ts in [start, end): ts, timeframe ("" single orders, "1d"
        aggregates), side (long/short = the liquidated position), qty (coins), price,
        notional_usd, source. `timeframe` restricts to one kind."""
        cols = ["ts", "timeframe", "side", "qty", "price", "notional_usd", "source"]
        src = self._src("liquidations", (start, end), venue=venue, market=market, symbol=symbol)
        if src is None:
            return _empty(cols)
        pf, pp = self._period_filter(start, end)
        tf_sql, tf_p = ("AND timeframe = ?", [timeframe]) if timeframe is not None else ("", [])
        return self._query(
            f"SELECT {', '.join(cols)} FROM {src} WHERE venue = ? AND market = ? AND symbol = ? {tf_sql} "
            f"AND {pf} AND ts >= ? AND ts < ? ORDER BY ts, side",
            [venue, market, symbol, *tf_p, *pp, to_utc(start), to_utc(end)],
        )

    def daily_liquidations(self, venue, start, end, *, symbols=None, market="perp") -> pd.DataFrame:
        """Observed daily liquidation aggregates (timeframe "1d", e.g. Coinalyze) with ts in
        [start, end), every symbol the lake holds for the venue or only `symbols`:
        symbol, ts (day open, UTC), side (the liquidated position), qty, price, notional_usd, source.
        Empty frame when the lake has none (calibration then has nothing to compare)."""
        cols = ["symbol", "ts", "side", "qty", "price", "notional_usd", "source"]
        src = self._src("liquidations", venue=venue, market=market, timeframe="1d")
        if src is None:
            out = _empty(cols)
            out["symbol"] = pd.Series(dtype=object)
            return out
        pf, pp = self._period_filter(start, end)
        sym_sql, sym_p = "", []
        if symbols is not None:
            symbols = list(symbols)
            if not symbols:
                return self.daily_liquidations(venue, start, start, market=market)
            sym_sql = f"AND symbol IN ({', '.join('?' * len(symbols))})"
            sym_p = symbols
        return self._query(
            f"SELECT {', '.join(cols)} FROM {src} WHERE venue = ? AND market = ? AND timeframe = '1d' {sym_sql} "
            f"AND {pf} AND ts >= ? AND ts < ? ORDER BY symbol, ts, side",
            [venue, market, *sym_p, *pp, to_utc(start), to_utc(end)],
        )

    # ------------------------------------------------------------ lake-level
    def series(self) -> pd.DataFrame:
        """What the lake holds (from the manifests, no data read): dataset, venue, market,
        symbol, timeframe, price_type, rows, first_ts, last_ts, gap_pct."""
        cov = self.lake.coverage()
        return cov[["dataset", "venue", "market", "symbol", "timeframe", "price_type", "rows",
                    "first_ts", "last_ts", "gap_pct"]].reset_index(drop=True)

    def snapshot_id(self) -> str:
        """Stable hash of the lake's manifests (file hashes, complete intervals)."""
        return self.lake.snapshot_id()

    def close(self) -> None:
        self.con.close()


def _empty(cols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    df["ts"] = pd.Series(dtype="datetime64[us, UTC]")
    return df
