"""Results -> one self-contained HTML string (and the tables as CSV/JSON files).

The page carries plotly.js once, inlined from the installed plotly package, the figure
data as one JSON block, and a few lines of its own JS (draw the figures, sort tables).
It makes no network request: no CDN, no web fonts, no MathJax, no external image; a
Content-Security-Policy meta tag forbids any. All text is escaped by Jinja2's autoescape;
JSON inside <script> additionally escapes <, >, & and U+2028/2029.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import plotly.io as pio
import plotly.offline

from fetch import atomic
from reports import figures as F
from reports.inputs import ReportInput
from reports.sweep_answer import distribution_sentence
from reports.tables import (
    Table,
    all_tables,
    calibration_compare,
    calibration_metrics,
    is_year,
    ran_windows,
    sweep_of,
    window_labels,
)

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'")
MAX_POINTS = 900  # per line trace; the CSV/JSON tables keep full values
MAX_BARS = 240  # per bar trace (bars cost far more to draw than line points)
LIMITATIONS = [
    ("Exogenous prices", "The historical price path is fixed: modelled liquidations, BLP hedges and "
     "collateral sales pay impact against it but do not move it. The real prices already contain the "
     "real liquidations, so cascades are not re-simulated."),
    ("Synthetic populations", "Accounts are drawn (seeded) so that long and short notional each equal "
     "the open interest; leverage, size and entry-price distributions are parameters, not observed books."),
    ("Mark-price proxy", "Mark price is approximated by the perpetual's own trade bars; intra-bar paths "
     "are O → nearer extreme → other extreme → C, linear in between."),
    ("Substituted paths", "Where a venue has no bars for a window (FTX after 2022-08) another venue's path "
     "stands in and is marked as substituted; FTX-specific dislocations in those windows are missing."),
    ("Open interest", "Open interest at window start comes from the lake where present, else from a "
     "scenario default with its source (see the oi_source column); FTX's is derived, not observed."),
    ("Unknown parameters", "BLP capacities, insurance-fund balances, fee rates and hedge latency in 2022 "
     "are unpublished: they are parameters with ranges, and the sensitivity section shows how the answer moves."),
    ("Aggregator figures", "Published liquidation totals cover every market of a venue and a rolling 24 h; "
     "the model replays a few markets, so calibration compares orders of magnitude, not exact values."),
]


def script_json(obj) -> str:
    """JSON safe to place inside a <script> element."""
    text = obj if isinstance(obj, str) else json.dumps(obj, allow_nan=False, default=_default)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (pd.Timestamp,)):
        return o.isoformat()
    return str(o)


def figure_payload(fig) -> dict:
    """A figure as a plain dict (figures.py builds dicts; a go.Figure is converted)."""
    if not isinstance(fig, dict):
        fig = json.loads(pio.to_json(fig, validate=False))
    fig.get("layout", {}).pop("template", None)
    return fig


@lru_cache(maxsize=1)
def plotly_js() -> str:
    js = plotly.offline.get_plotlyjs()
    if "</script" in js.lower():  # would end the inline <script> early
        raise RuntimeError("the installed plotly.js contains '</script': cannot inline it")
    return js


@lru_cache(maxsize=1)
def _template_layout() -> dict:
    return pio.templates["plotly_white"].to_plotly_json()


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


# ---- cell formatting ---------------------------------------------------------------

def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def fmt_cell(kind: str, v) -> tuple[str, str]:
    """(display text, sort key) for one cell."""
    if _is_missing(v):
        return "—", ""
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), str(int(v))
    if kind in ("usd", "num", "int", "ratio", "pct"):
        try:
            x = float(v)
        except (TypeError, ValueError):
            return str(v), str(v)
        if math.isinf(x):
            return ("∞" if x > 0 else "−∞"), repr(x)
        if not math.isfinite(x):
            return "—", ""
        key = repr(x)
        if kind == "usd":
            return F.money(x), key
        if kind == "int":
            return f"{x:,.0f}", key
        if kind == "ratio":
            return f"×{x:,.3g}", key
        if kind == "pct":
            return f"{x * 100:,.1f}%", key
        return (f"{x:,.6g}" if abs(x) < 1e6 else f"{x:,.0f}"), key
    return str(v), str(v)


HEADERS = {
    "window_label": "window", "ftx_house_loss_usd": "FTX house loss", "binance_house_loss_usd":
    "Binance house loss", "ratio_ftx_to_binance": "FTX ÷ Binance", "ftx_house_loss_per_1b_oi":
    "FTX per $1B OI", "binance_house_loss_per_1b_oi": "Binance per $1B OI", "ftx_price_path":
    "FTX price path", "users_usd": "users", "blp_loss_usd": "BLPs",
    "house_loss_usd": "house loss", "adl_usd": "ADL notional", "fund_deficit_usd": "fund deficit",
    "fund_paid_usd": "fund paid", "blp_loss_gross_usd": "BLPs gross", "fund_income_usd": "fund income",
    "fund_payouts_usd": "fund payouts", "fund_net_payout_usd": "fund net payout", "fund_drawdown_usd": "fund drawdown",
    "house_loss_gross_usd": "house loss gross", "counterparty_loss_usd": "opposing traders",
    "closeout_usd": "close-out notional",
    "exempt_deficit_usd": "exempt-account deficit", "liquidated_usd": "liquidated",
    "reported_liquidated_usd": "reported", "reported_share": "reported share",
}


def header(column: str) -> str:
    if column in HEADERS:
        return HEADERS[column]
    text = column.replace("_per_1b_oi", " per $1B OI")
    text = text[:-4] if text.endswith("_usd") else text
    return text.replace("_", " ")


def unique_headers(cols: list[str]) -> list[str]:
    """Header texts of these columns, none repeated: columns whose short headers collide
    (window and window_label both read "window") show their own names instead."""
    texts = [header(c) for c in cols]
    return [c.replace("_", " ") if texts.count(t) > 1 else t for c, t in zip(cols, texts, strict=True)]


@dataclass
class TableView:
    name: str
    title: str
    note: str
    columns: list[tuple[str, str, str]]   # (column, kind, header text)
    rows: list[list[tuple[str, str, str]]]  # (display, sort key, kind)
    csv: str
    json: str

    @property
    def empty(self) -> bool:
        return not self.rows


def table_view(t: Table, tables_href: str, columns: list[str] | None = None,
               where: pd.Series | None = None) -> TableView:
    frame = t.frame if where is None else t.frame[where]
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    kinds = [(c, t.kind(c), text) for c, text in zip(cols, unique_headers(cols), strict=True)]
    rows = []
    for rec in frame[cols].itertuples(index=False, name=None):
        rows.append([(*fmt_cell(k, v), k) for (c, k, _), v in zip(kinds, rec, strict=True)])
    return TableView(t.name, t.title, t.note, kinds, rows,
                     f"{tables_href}/{t.name}.csv", f"{tables_href}/{t.name}.json")


# ---- the page ----------------------------------------------------------------------

def _headline(answer: pd.DataFrame, who: pd.DataFrame) -> dict:
    crash = answer[~answer["whole_year"].astype(bool)]
    year = answer[answer["whole_year"].astype(bool)]
    h = {"n_crash": len(crash), "cards": [], "sentences": []}
    if len(crash):
        f, b = crash["ftx_house_loss_usd"].sum(min_count=1), crash["binance_house_loss_usd"].sum(min_count=1)
        h["cards"].append(("FTX house loss, crash windows", F.money(f)))
        h["cards"].append(("Binance house loss, crash windows", F.money(b)))
        ratio = f / b if b and np.isfinite(b) and b > 0 else np.nan
        h["cards"].append(("FTX ÷ Binance", fmt_cell("ratio", ratio)[0]))
        text = (f"Summed over {len(crash)} crash window{'s' if len(crash) != 1 else ''}, the modelled FTX house "
                f"(BLPs + insurance fund) lost {F.money(f)} against Binance's {F.money(b)}. ")
        per = crash["ftx_house_loss_per_1b_oi"].astype("float64")
        if per.notna().any() and per.max() > 0:
            worst = crash.loc[per.idxmax()]
            text += (f"Per $1B of open interest FTX's worst window was {worst['window_label']} at "
                     f"{F.money(worst['ftx_house_loss_per_1b_oi'])} "
                     f"(Binance: {F.money(worst['binance_house_loss_per_1b_oi'])}).")
        elif not (f or b):
            text += "No crash window left the house of either venue with a loss at these parameters."
        h["sentences"].append(text)
    if len(year):
        y = year.iloc[0]
        h["cards"].append(("Whole year 2022 (24/7): FTX vs Binance",
                           f"{F.money(y['ftx_house_loss_usd'])} vs {F.money(y['binance_house_loss_usd'])}"))
        h["sentences"].append(
            f"Run through all of 2022 ({y['window_label']}), FTX's house lost {F.money(y['ftx_house_loss_usd'])} "
            f"({F.money(y['ftx_house_loss_per_1b_oi'])} per $1B OI) and Binance's "
            f"{F.money(y['binance_house_loss_usd'])} ({F.money(y['binance_house_loss_per_1b_oi'])} per $1B OI).")
    else:
        h["sentences"].append("The whole-year (24/7) run is not in these results.")
    if len(who):
        cw = who[~who["window"].isin(set(year["window"]))]
        parts = []
        for venue in ("ftx", "binance"):
            v = cw[cw["venue"] == venue]
            if len(v):
                parts.append(
                    f"on {F.venue_style(venue)['label']}: liquidated users {F.money(v['users_usd'].sum())}, "
                    f"BLPs {F.money(v['blp_loss_usd'].sum())} net ({F.money(v['blp_loss_gross_usd'].sum())} gross), "
                    f"insurance fund paid {F.money(v['fund_payouts_usd'].sum())} against "
                    f"{F.money(v['fund_income_usd'].sum())} of income, exempt account "
                    f"{F.money(v['exempt_deficit_usd'].sum())}, opposing traders "
                    f"{F.money(v['counterparty_loss_usd'].sum())} via ADL / close-out "
                    f"({F.money(v['adl_usd'].sum() + v['closeout_usd'].sum())} notional)")
        if parts:
            h["sentences"].append("Who bore it in the crash windows — " + "; ".join(parts) + ".")
    return h


def build_context(inp: ReportInput, tables: dict[str, Table], tables_href: str = "report_tables") -> dict:
    s = inp.summary
    labels = window_labels(inp)
    figs: list[dict] = []

    def add(fig_id: str, fig, caption: str = "") -> dict:
        payload = figure_payload(fig)
        empty = F.empty_message(payload)
        if empty is not None:  # nothing to show: one line in the page, no empty frame
            return {"id": fig_id, "caption": "", "empty": empty}
        figs.append({"id": fig_id, "caption": caption, "figure": payload})
        return {"id": fig_id, "caption": caption}

    answer, who = tables["answer"].frame, tables["who_bore"].frame
    ctx: dict = {
        "title": f"liqreplay report — {s.get('run_id', '')}",
        "meta": [(k, s.get(k)) for k in ("run_id", "created_utc", "data_snapshot", "params_hash",
                                         "params_file", "seed")],
        "headline": _headline(answer, who),
        "notes": list(inp.notes),
        "answer_table": table_view(tables["answer"], tables_href, [
            "window_label", "ftx_house_loss_usd", "binance_house_loss_usd", "ratio_ftx_to_binance",
            "ftx_house_loss_per_1b_oi", "binance_house_loss_per_1b_oi", "ftx_price_path"]),
        "who_table": table_view(tables["who_bore"], tables_href, [
            "window_label", "venue", "users_usd", "blp_loss_usd", "blp_loss_gross_usd", "fund_income_usd",
            "fund_payouts_usd", "fund_net_payout_usd", "fund_drawdown_usd", "exempt_deficit_usd", "house_loss_usd",
            "house_loss_gross_usd", "counterparty_loss_usd", "adl_usd", "closeout_usd"]),
        "blp_parts_table": table_view(tables["blp_parts"], tables_href),
        "answer_fig": add("fig-answer", F.answer_figure(answer)) if len(answer) else None,
        "who_fig": add("fig-who", F.who_bore_figure(who)) if len(who) else None,
        "skipped": [w for w in inp.windows if w.get("status", "ran") != "ran"],
    }
    # per window
    series = inp.series
    rows = inp.rows
    win_views = []
    mech = tables["liquidations"]
    by_window = dict(tuple(series.groupby(series["window"].astype(str), sort=False))) if len(series) else {}
    for i, w in enumerate(ran_windows(inp)):
        wid = str(w["id"])
        sub = by_window.get(wid, series.iloc[0:0])
        part, bucket = F.bucket_series(sub, MAX_POINTS)
        # bars: one width for all panels, never finer than the coarsest series' bars
        bars, bar_bucket = F.bucket_series(part, MAX_BARS, F.native_step(sub))  # buckets nest
        r = rows[rows["window"].astype(str) == wid]
        sources = {(v, m): str(p) for v, m, p in zip(
            r["venue"], r["market"], r.get("price_source", pd.Series("own", index=r.index)), strict=True)}
        subs = sorted({f"{F.venue_style(v)['label']} {m}: {p}" for (v, m), p in sources.items()
                       if F.path_kind(p) == "substituted"})
        proxies = sorted({f"{F.venue_style(v)['label']} {m}: {p}" for (v, m), p in sources.items()
                          if F.path_kind(p) == "proxy"})
        lab = labels.get(wid, wid)
        win_views.append({
            "id": wid, "anchor": f"w{i}", "label": lab, "start": w.get("start"), "end": w.get("end"),
            "whole_year": is_year(w), "bucket": bucket, "substitutions": subs, "proxies": proxies,
            "notes": [str(n) for n in (w.get("notes") or [])],
            "timeframes": sorted({f"{F.venue_style(v)['label']} {m}: {t}" for v, m, t in zip(
                r["venue"], r["market"], r.get("timeframe", pd.Series("?", index=r.index)), strict=True)}),
            "figs": [
                add(f"fig-w{i}-price", F.price_figure(part, sources, F.esc(f"{lab}: price paths")),
                    "Both venues' paths, one panel per market. Dotted, named 'substituted': another venue's "
                    "bars standing in where the venue had none. Thin, named 'proxy': the venue's own spot "
                    "bars standing in for its coarser perp bars."),
                add(f"fig-w{i}-liq",
                    F.liquidations_figure(bars, F.esc(f"{lab}: liquidations by mechanism"), bar_bucket),
                    f"Liquidated notional per {bar_bucket}, stacked by mechanism (patterns distinguish mechanisms)."),
                add(f"fig-w{i}-rep", F.reported_figure(part, F.esc(f"{lab}: actual vs reported"))),
                add(f"fig-w{i}-house", F.house_figure(part, F.esc(f"{lab}: BLP P&L, insurance fund, ADL"))),
            ],
            "table": table_view(mech, tables_href, where=mech.frame["window"].astype(str) == wid),
        })
    ctx["windows"] = win_views
    # sensitivity
    sweep = s.get("sweep")
    ctx["has_sweep"] = bool(sweep)
    if sweep:
        q = tables["sweep_quantiles"].frame
        central = rows.assign(window_label=rows["window"].astype(str).map(labels).fillna(rows["window"].astype(str)))
        ctx["fan_fig"] = add("fig-fan", F.fan_figure(q, central, "house_loss_usd",
                                                     "House loss across the sweep (5–95%)"),
                             "Dot: sweep median; bar: 5th–95th percentile; hollow marker: the main run.")
        torn = tables["tornado"]
        ctx["tornado_fig"] = (add("fig-tornado", F.tornado_figure(torn.frame, "Which parameters move the answer"),
                                  torn.note) if not torn.frame.empty else None)
        ctx["tornado_note"] = torn.note
        ctx["sweep_params"] = list(sweep.get("params") or [])
    ctx["sweep_answer"] = _sweep_context(inp, tables, tables_href, add)
    ctx["cal"] = _calibration_context(inp, tables, tables_href, add)
    ctx["sweep_table"] = table_view(tables["sweep_quantiles"], tables_href)
    ctx["tornado_table"] = table_view(tables["tornado"], tables_href)
    for name in ("calibration", "parameters", "coverage", "windows", "cross_venue", "results"):
        ctx[f"{name}_table"] = table_view(tables[name], tables_href)
    if s.get("command"):
        ctx["meta"].append(("command", s.get("command")))
    subs_all = sorted({f"{wv['label']} — {x}" for wv in win_views for x in wv["substitutions"]})
    ctx["limitations"] = LIMITATIONS
    ctx["substitutions"] = subs_all
    ctx["proxies"] = sorted({f"{wv['label']} — {x}" for wv in win_views for x in wv["proxies"]})
    ctx["oi_sources"] = sorted({str(x) for x in rows.get("oi_source", pd.Series(dtype=str)).dropna()})
    ctx["figures_json"] = script_json({"template": _template_layout(), "figures": [
        {"id": f["id"], "data": f["figure"].get("data", []), "layout": f["figure"].get("layout", {})}
        for f in figs]})
    ctx["n_figures"] = len(figs)
    ctx["plotly_js"] = plotly_js()
    ctx["csp"] = CSP
    ctx["tables_href"] = tables_href
    return ctx


def _sweep_context(inp: ReportInput, tables: dict[str, Table], tables_href: str, add) -> dict | None:
    """The sweep's answer: distribution per venue, frontier in words, drivers (reports/sweep_answer.py)."""
    a = sweep_of(inp)
    if a is None:
        return None
    dist = F.sweep_distribution_figure(a.totals, f"House loss {a.scope} across the sweep, per venue")
    sens = F.sensitivity_figure(a.sensitivity, "What drives the house loss (rank correlation, 90% interval)")
    view = {
        "sentence": distribution_sentence(a), "words": a.words, "notes": list(a.notes),
        "size": f"{a.samples} samples, seed {a.seed}" + (f", {a.accounts} accounts per series" if a.accounts else ""),
        "failed": a.failed,
        "dist_fig": add("fig-sweep-dist", dist, "Each point is one sweep sample; the box spans its quartiles. "
                        "With the whole-year run swept, a sample's 2022 loss is the larger of the year run and the "
                        "sum of the crash windows (they overlap); without it, the sum of the windows swept.")
        if dist else None,
        "dist_note": None if dist else "The sweep's house loss is zero (or missing) in every sample: "
                                       "no distribution to draw.",
        "sens_fig": add("fig-sensitivity", sens, "Spearman rank correlation of each parameter with the 2022 "
                        "house loss across the samples; bars: bootstrap 90% interval.") if sens else None,
        "sens_note": None if sens else "No output varies across the sweep: no parameter to rank.",
    }
    for name in ("sweep_distribution", "sensitivity", "frontier"):
        view[f"{name}_table"] = table_view(tables[name], tables_href) if name in tables else None
    return view


def _calibration_context(inp: ReportInput, tables: dict[str, Table], tables_href: str, add) -> dict:
    """Model vs Coinalyze per day (series and scatter, training and held-out days marked),
    the monthly year totals and the fit's metrics with the targets."""
    c = calibration_compare(inp)
    cal = calibration_metrics(inp) or {}
    missing = [name + ("" if v is None else " (empty)")
               for name, v in (("daily.parquet", inp.daily), ("observed_daily.parquet", inp.observed))
               if v is None or len(v) == 0]
    n_held = int(c["held_out"].astype(bool).sum()) if len(c) else 0
    out = {
        "missing": missing,
        "kind": cal.get("kind"),
        "summary": (f"{len(c):,} day-sides compared ({n_held:,} on held-out window days, "
                    f"{len(c) - n_held:,} on training days)" if len(c) else ""),
        "fit_table": table_view(tables["calibration_fit"], tables_href),
        "months_table": table_view(tables["calibration_months"], tables_href),
        "daily_fig": add("fig-cal-daily",
                         F.calibration_daily_figure(c, "Binance daily liquidations: model vs Coinalyze"),
                         "Solid: the model's reported figure (one order per symbol-second); dotted: Coinalyze. "
                         "Shaded: held-out window days (never used by the fit); the rest are training days. "
                         "Log scale; a model zero is drawn at $0.1M."),
        "scatter_fig": add("fig-cal-scatter", F.calibration_scatter_figure(c, "Model vs Coinalyze per day and side"),
                           "Filled diamonds: held-out window days; open circles: training days. Solid line: equal; "
                           "dotted: 0.5× and 2×."),
        "months_fig": add("fig-cal-months", F.calibration_months_figure(
            tables["calibration_months"].frame, "Whole year: monthly totals, Binance BTC+ETH"),
            "The model's monthly total over Coinalyze's written on each month; target 0.5–2×."),
    }
    return out


def render(inp: ReportInput, tables: dict[str, Table] | None = None, *, tables_href: str = "report_tables") -> str:
    """The whole report as one HTML string."""
    tables = all_tables(inp) if tables is None else tables
    return _env().get_template("report.html.j2").render(**build_context(inp, tables, tables_href))


# ---- files -------------------------------------------------------------------------

def _atomic_write(path: Path, data: str) -> None:
    atomic.write_text(path, data)


def table_files(tables: dict[str, Table]) -> dict[str, str]:
    """File name -> content for every table (CSV with raw values, JSON records)."""
    out = {}
    for t in tables.values():
        frame = t.frame.copy()
        for c in frame.columns:
            if isinstance(frame[c].dtype, pd.DatetimeTZDtype):
                frame[c] = frame[c].map(lambda x: x.isoformat())
        out[f"{t.name}.csv"] = frame.to_csv(index=False, lineterminator="\n")
        records = json.loads(frame.to_json(orient="records", double_precision=15, date_format="iso"))
        out[f"{t.name}.json"] = json.dumps({"name": t.name, "title": t.title, "note": t.note,
                                            "rows": records}, indent=1, ensure_ascii=False) + "\n"
    return out


def write_report(inp: ReportInput, out: Path) -> tuple[Path, Path]:
    """Write the HTML and, in `<stem>_tables/` beside it, every table as CSV and JSON.

    Everything is rendered in memory first; each file is then written to a temp file and
    moved into place, so an error never leaves a half-written report.
    """
    out = Path(out)
    tables = all_tables(inp)
    tables_dir = out.parent / f"{out.stem}_tables"
    page = render(inp, tables, tables_href=tables_dir.name)
    files = table_files(tables)
    for name, content in files.items():
        _atomic_write(tables_dir / name, content)
    _atomic_write(out, page)
    return out, tables_dir
