"""The sweep's part of the answer: each venue's 2022 house-loss distribution, what drives it,
and the frontier in plain words (MODEL.md 8).

Reads what `liqreplay sweep` wrote beside the results (sweep.json, sensitivity.json,
frontier.json); where only sweep.parquet is there (a results directory written by an
older `run --sweep`), computes the distribution, rank correlations and the sampled
frontier from it with the same functions (backtest/sensitivity.py), without the search.

The tables built from it are in reports/tables.py, the charts in reports/figures.py.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pandas as pd

from backtest import sensitivity as S
from backtest.fmt import money
from backtest.sweep import Dimension
from reports.inputs import ReportInput

log = logging.getLogger(__name__)


@dataclass
class SweepAnswer:
    samples: int
    seed: object
    accounts: object
    params: list[str]
    scope: str
    totals: pd.DataFrame
    sensitivity: dict
    frontier: dict
    words: list[str]
    failed: int = 0
    notes: list[str] = field(default_factory=list)


def _read_json(inp: ReportInput, name: str):
    p = inp.directory / name
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s is not readable (%s): recomputed from sweep.parquet", p, exc)
        return None


def _dims(inp: ReportInput, meta: dict | None) -> list[Dimension]:
    if meta and meta.get("dimensions"):
        return [Dimension(d["key"], float(d["lo"]), float(d["hi"]), d["kind"], float(d["default"]))
                for d in meta["dimensions"]]
    s = inp.summary
    ranges = s.get("param_ranges") or {}
    values = s.get("params") or {}
    dims = []
    for key in (s.get("sweep") or {}).get("params") or []:
        rng = ranges.get(key)
        if key not in inp.sweep or not rng or not isinstance(values.get(key), (int, float)):
            continue
        lo, hi = float(rng[0]), float(rng[1])
        kind = "log" if lo > 0 and hi / lo > 10 else "float"
        dims.append(Dimension(key, lo, hi, kind, float(values[key])))
    return dims


def sweep_answer(inp: ReportInput, year_ids: set[str]) -> SweepAnswer | None:
    """The sweep's answer, computed once per ReportInput (`year_ids`: the whole-year windows
    when sweep.json does not say)."""
    if "sweep_answer" not in inp.cache:
        inp.cache["sweep_answer"] = _compute(inp, year_ids)
    return inp.cache["sweep_answer"]


def _compute(inp: ReportInput, year_ids: set[str]) -> SweepAnswer | None:
    sw = inp.sweep
    if sw is None or sw.empty or "sample" not in sw or "house_loss_usd" not in sw:
        return None
    meta = _read_json(inp, "sweep.json")
    dims = _dims(inp, meta)
    if meta and meta.get("windows"):
        year_ids = {str(w["id"]) for w in meta["windows"] if w.get("whole_year")}
        window_ids = [str(w["id"]) for w in meta["windows"]]
    else:
        window_ids = [str(w) for w in dict.fromkeys(sw["window"].dropna().astype(str))]
    scope = S.scope_of(window_ids, year_ids)
    totals = S.sample_totals(sw, dims, year_ids)
    seed = (meta or {}).get("seed", inp.summary.get("seed"))
    sens = _read_json(inp, "sensitivity.json")
    front = _read_json(inp, "frontier.json")
    notes = []
    if sens is None:
        sens = S.sensitivity(totals, dims, seed=int(seed or 0), bootstrap=100)
    if front is None:
        front = S.frontier(totals, dims, scope=scope)
        notes.append("frontier from the sampled points only (no search runs recorded)")
    failed = int(sw.loc[sw["error"].notna(), "sample"].nunique()) if "error" in sw else 0
    return SweepAnswer(samples=int(sw["sample"].nunique()), seed=seed, accounts=(meta or {}).get("accounts"),
                       params=[d.key for d in dims], scope=front.get("scope") or scope, totals=totals,
                       sensitivity=sens, frontier=front,
                       words=S.plain_words(front), failed=failed, notes=notes)


def distribution_sentence(a: SweepAnswer) -> str:
    d = a.sensitivity.get("distribution") or S.distribution(a.totals)
    parts = []
    for col, label in (("ftx_2022", "FTX's"), ("binance_2022", "Binance's")):
        x = d.get(col)
        if x:
            parts.append(f"{label} house loss {a.scope} has median {money(x['median'])} "
                         f"(5–95%: {money(x['q05'])} to {money(x['q95'])}, max {money(x['max'])})")
    r = d.get("ftx_binance_ratio")
    if r and parts:
        parts.append(f"the FTX ÷ Binance ratio has median ×{r['median']:,.3g} (5–95%: ×{r['q05']:,.3g} to "
                     f"×{r['q95']:,.3g}; Binance floored at $1k)")
    size = (f"Across {a.samples} sweep samples (seed {a.seed}"
            + (f", {a.accounts} accounts per series" if a.accounts else "") + f", {len(a.params)} parameters)")
    if not parts:
        return size + " no sample produced a house loss to summarise."
    return size + ", " + "; ".join(parts) + "."
