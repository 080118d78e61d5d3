"""Read a results directory (Contract 3) into the one object the report works from.

The report reads only what `liqreplay run` wrote: summary.json, summary.parquet,
series.parquet, sweep.parquet (optional), through `backtest.results.load_results`, and for
the calibration section daily.parquet, observed_daily.parquet and calibration.json (each
optional: the section says what is missing).
Anything missing or malformed ends in `fetch.errors.UserError` (one line naming the fix).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from backtest.results import load_results
from fetch.errors import UserError

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("run_id", "windows", "rows")
ROW_KEYS = ("window", "venue", "market", "house_loss_usd", "liquidated_usd")
SERIES_KEYS = ("window", "venue", "market", "ts", "price")


@dataclass
class ReportInput:
    """Everything the report shows, already validated."""

    directory: Path
    summary: dict
    rows: pd.DataFrame
    series: pd.DataFrame
    sweep: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)  # what was missing, said on the page
    daily: pd.DataFrame | None = None         # the model's (window, venue, market, date, side) frame
    observed: pd.DataFrame | None = None      # Coinalyze per window/day/side/market (held_out marked)
    calibration: dict | None = None           # calibration.json: metrics with targets
    cache: dict = field(default_factory=dict, repr=False)  # derived once per input (the sweep's answer)

    @property
    def windows(self) -> list[dict]:
        return list(self.summary.get("windows") or [])


def _attr(obj, *names):
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


def _read(directory: Path):
    """(summary, rows, series, sweep) through the replay's own loader."""

    if not (directory / "summary.json").exists():
        if (directory / "sweep.json").exists():
            raise UserError(f"{directory} holds a sweep but no run: `liqreplay run --out {directory}` over the same "
                            "windows adds the run the report is built on (the sweep is kept)")
        raise UserError(f"{directory} has no summary.json: not a results directory "
                        "(make one with `liqreplay run --out DIR`)")
    try:
        res = load_results(directory)
    except ValueError as exc:  # json.JSONDecodeError is one
        raise UserError(f"{directory}/summary.json or its tables are not valid ({exc}); "
                        "re-run `liqreplay run --out DIR`") from exc
    except (OSError, ImportError) as exc:  # unreadable file, or a Parquet engine problem
        raise UserError(f"{directory} cannot be read ({type(exc).__name__}: {exc}); "
                        "re-run `liqreplay run --out DIR`") from exc
    except Exception as exc:  # pyarrow's own errors: still one line
        raise UserError(f"{directory} is not a readable results directory ({type(exc).__name__}: {exc}); "
                        "re-run `liqreplay run --out DIR`") from exc
    return (_attr(res, "summary"), _attr(res, "rows"), _attr(res, "series"), _attr(res, "sweep"))


def load(directory: Path | str) -> ReportInput:
    """Validate and load a results directory; raise UserError naming the fix."""
    directory = Path(directory)
    if not directory.exists():
        raise UserError(f"results directory {directory} does not exist "
                        "(make one with `liqreplay run --out DIR`)")
    if not directory.is_dir():
        raise UserError(f"{directory} is a file, not a results directory")
    summary, rows, series, sweep = _read(directory)
    if not isinstance(summary, dict):
        raise UserError(f"{directory}/summary.json does not hold an object; re-run `liqreplay run`")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise UserError(f"{directory}/summary.json lacks {', '.join(missing)}: "
                        "written by an older or foreign tool; re-run `liqreplay run`")
    notes: list[str] = []
    if rows is None or len(rows) == 0:
        rows = pd.DataFrame(summary.get("rows") or [])
    if len(rows) == 0:
        raise UserError(f"{directory} holds no result rows (nothing ran): re-run `liqreplay run` on a lake "
                        "with data for the windows")
    if len(rows):
        absent = [k for k in ROW_KEYS if k not in rows.columns]
        if absent:
            raise UserError(f"{directory}: result rows lack {', '.join(absent)}; re-run `liqreplay run`")
    if series is None or (len(series) == 0 and "ts" not in series.columns):
        notes.append("series.parquet is absent: no time-series charts.")
        series = pd.DataFrame(columns=list(SERIES_KEYS))
    else:
        absent = [k for k in SERIES_KEYS if k not in series.columns]
        if absent:
            raise UserError(f"{directory}/series.parquet lacks {', '.join(absent)}; re-run `liqreplay run`")
        if len(series) and "blp_pnl_cum_usd" not in series.columns:
                notes.append("series.parquet has no blp_pnl_cum_usd: the BLP cumulative P&L charts are missing; "
                         "each window's end-of-window BLP P&L is in the tables (blp_pnl_usd).")
    if summary.get("sweep") is None:
        sweep = None
    daily, observed, calibration = _read_calibration(directory)
    return ReportInput(directory=directory, summary=summary, rows=rows.reset_index(drop=True),
                       series=series, sweep=sweep, notes=notes, daily=daily, observed=observed,
                       calibration=calibration)


DAILY_KEYS = ("window", "venue", "market", "date", "side", "reported_usd")
OBSERVED_KEYS = ("market", "date", "side", "observed_usd")


def _read_calibration(directory: Path):
    """(daily, observed, calibration) or None for each file that is absent."""

    def parquet(name, keys):
        path = directory / name
        if not path.exists():
            return None
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: one line
            raise UserError(f"{path} cannot be read ({type(exc).__name__}: {exc}); "
                            "re-run `liqreplay run --out DIR`") from exc
        absent = [k for k in keys if k not in df.columns]
        if absent:
            raise UserError(f"{path} lacks {', '.join(absent)}; re-run `liqreplay run --out DIR`")
        df["date"] = pd.to_datetime(df["date"], utc=True)
        return df

    daily = parquet("daily.parquet", DAILY_KEYS)
    observed = parquet("observed_daily.parquet", OBSERVED_KEYS)
    cal = None
    path = directory / "calibration.json"
    if path.exists():
        try:
            cal = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); re-run `liqreplay run --out DIR`") from exc
        if not isinstance(cal, dict):
            raise UserError(f"{path} does not hold an object; re-run `liqreplay run --out DIR`")
    return daily, observed, cal
