"""Pure figure builders: frames in, plotly figure dicts out (no file, clock or network).

Figures are plain dicts in plotly.js's JSON form (built directly: plotly's Python
validation costs seconds per report); numeric arrays travel as base64 typed arrays.
Every chart stays readable without colour: venues differ by dash style and marker symbol,
liquidation mechanisms and loss bearers by bar pattern, and lines carry direct labels at
their right end. Any text that comes from a results file (window labels, symbols,
parameter names) is HTML-escaped here before it reaches plotly, whose labels understand a
few HTML tags: a label such as ``<script>`` is then drawn as the literal text.
"""
from __future__ import annotations

import base64
import html
import re

import numpy as np
import pandas as pd

MECHANISMS = {  # column suffix -> (legend label, pattern shape)
    "step1": ("FTX step 1: order-book", ""),
    "step2_blp": ("FTX step 2: BLP takeover", "/"),
    "overflow": ("FTX overflow close-out", "x"),
    "ioc": ("Binance IOC at bankruptcy", "."),
    "fund": ("Insurance-fund takeover", "\\"),
    "adl": ("Binance ADL (opposing traders)", "-"),
}
VENUE_STYLE = {
    "ftx": {"dash": "solid", "symbol": "circle", "color": "#1b5e9e", "pattern": "", "label": "FTX"},
    "binance": {"dash": "dash", "symbol": "diamond", "color": "#b26b00", "pattern": "/", "label": "Binance"},
}
_FALLBACK = [("dot", "square", "#555555", "x"), ("dashdot", "triangle-up", "#7a3d99", "+")]
MARKET_SYMBOLS = ["circle-open", "square-open", "triangle-up-open", "x-thin-open", "star-open"]
MECH_COLORS = {"step1": "#4c78a8", "step2_blp": "#e45756", "overflow": "#72b7b2",
               "ioc": "#f58518", "fund": "#54a24b", "adl": "#7a3d99"}
LOSS_PARTS = [  # who bore it: (column, label, pattern, colour)
    ("users_usd", "Liquidated users", "", "#9c9c9c"),
    ("blp_loss_usd", "BLPs", "/", "#e45756"),
    ("fund_net_payout_usd", "Insurance fund (payouts beyond income)", "\\", "#54a24b"),
    ("exempt_deficit_usd", "Exempt account (Alameda scenario)", ".", "#b279a2"),
    ("counterparty_loss_usd", "Opposing traders (ADL / close-out)", "x", "#7a3d99"),
]
BUCKETS = ["1min", "5min", "15min", "30min", "1h", "2h", "6h", "12h", "1D", "7D"]  # each a multiple of the last
FLOW_RE = re.compile(r"^liquidated_(.+)_usd$")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"
AXIS = {"showgrid": True, "gridcolor": "#eee", "linecolor": "#888", "zerolinecolor": "#bbb",
        "showline": True, "automargin": True}


def esc(value) -> str:
    """Text from data, made safe for plotly labels (which parse a little HTML)."""
    return html.escape("" if value is None else str(value), quote=False)


def venue_style(venue: str) -> dict:
    if venue in VENUE_STYLE:
        return VENUE_STYLE[venue]
    dash, symbol, color, pattern = _FALLBACK[hash(venue) % len(_FALLBACK)]
    return {"dash": dash, "symbol": symbol, "color": color, "pattern": pattern, "label": venue}


def money(x: float | None) -> str:
    """$1.23B / $45.6M / $7.8k; None/NaN as an em dash."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    sign = "−" if x < 0 else ""
    a = abs(float(x))
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{sign}${a / div:,.3g}{unit}" if a / div < 1000 else f"{sign}${a / div:,.0f}{unit}"
    return f"{sign}${a:,.0f}"


def _ms(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as float epoch milliseconds (plotly date axes accept them)."""
    t = pd.to_datetime(ts, utc=True)
    return ((t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(milliseconds=1)).to_numpy(dtype="float64")


def flow_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if FLOW_RE.match(c) and c != "reported_liquidated_usd"]


def choose_bucket(start, end, max_points: int, min_step: pd.Timedelta | None = None) -> str:
    span = pd.Timestamp(end) - pd.Timestamp(start)
    for b in BUCKETS:
        if span / pd.Timedelta(b) <= max_points and (min_step is None or pd.Timedelta(b) >= min_step):
            return b
    return BUCKETS[-1]


def native_step(frame: pd.DataFrame) -> pd.Timedelta | None:
    """The coarsest bar spacing among the window's series (e.g. FTX 1d next to Binance 1h)."""
    if frame.empty:
        return None
    steps = []
    for _, g in frame.groupby(["venue", "market"], sort=False, observed=True):
        d = pd.to_datetime(g["ts"], utc=True).sort_values().diff().dropna()
        d = d[d > pd.Timedelta(0)]
        if len(d):
            steps.append(d.median())
    return max(steps) if steps else None


def bucket_series(frame: pd.DataFrame, max_points: int = 1200,
                  min_step: pd.Timedelta | None = None) -> tuple[pd.DataFrame, str]:
    """Down-sample one window's series for drawing: flows summed, levels last, per bucket.

    Cumulative charts stay exact at bucket ends (the sum of the flows is unchanged); the
    fund's in-bucket minimum is kept as `fund_low_usd` so a dip is not hidden. Buckets are
    multiples of each other, so a bucketed frame can be bucketed again more coarsely.
    """
    if frame.empty:
        return frame, "1min"
    ts = pd.to_datetime(frame["ts"], utc=True)
    bucket = choose_bucket(ts.min(), ts.max(), max_points, min_step)
    ns = ts.to_numpy(dtype="datetime64[ns]").view("int64")
    step = pd.Timedelta(bucket).value
    flows = flow_columns(frame) + [c for c in ("reported_liquidated_usd", "adl_usd") if c in frame]
    levels = [c for c in ("price", "blp_pnl_cum_usd", "fund_balance_usd") if c in frame]
    order = np.argsort(ns, kind="stable")
    work = pd.DataFrame({
        "venue": pd.Categorical(frame["venue"].to_numpy()[order]),
        "market": pd.Categorical(frame["market"].to_numpy()[order]),
        "_b": (ns[order] // step) * step,
        **{c: frame[c].to_numpy(dtype="float64")[order] for c in flows + levels}})
    agg = {c: "sum" for c in flows} | {c: "last" for c in levels}
    if "fund_balance_usd" in frame:
        work["fund_low_usd"] = work["fund_balance_usd"]
        agg["fund_low_usd"] = "min"
    out = work.groupby(["venue", "market", "_b"], sort=True, observed=True).agg(agg).reset_index()
    out.insert(2, "ts", pd.to_datetime(out.pop("_b").to_numpy(), unit="ns", utc=True))
    out["venue"] = out["venue"].astype(str)
    out["market"] = out["market"].astype(str)
    return out, bucket


def arr(values) -> dict:
    """A float array as plotly.js's base64 typed-array spec (NaN shows as a gap)."""
    a = np.ascontiguousarray(np.asarray(values, dtype="<f8"))
    return {"dtype": "f8", "bdata": base64.b64encode(a.tobytes()).decode("ascii")}


def _ax(kind: str, k: int) -> str:
    """Layout key of the k-th axis: xaxis, xaxis2, ..."""
    return f"{kind}axis" if k == 1 else f"{kind}axis{k}"


def _ref(kind: str, k: int) -> str:
    return kind if k == 1 else f"{kind}{k}"


def _iso(ms: float) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")


def time_range(series: pd.DataFrame) -> tuple[str, str] | None:
    """The x range of a window's charts: set explicitly so an empty panel cannot stretch it."""
    if series.empty:
        return None
    x = _ms(series["ts"])
    return _iso(np.nanmin(x)), _iso(np.nanmax(x))


def grid(rows: int, cols: int = 1, *, titles=(), vspace=0.08, hspace=0.12, col_widths=None,
         shared_x=True, shared_y=False, date_x=True, x_range=None) -> dict:
    """A layout with a rows x cols grid of axes (axis k = (row-1)*cols + col), like make_subplots."""
    layout: dict = {"annotations": []}
    h = (1 - vspace * (rows - 1)) / rows
    widths = col_widths or [1 / cols] * cols
    scale = (1 - hspace * (cols - 1)) / sum(widths)
    lefts, x0 = [], 0.0
    for w in widths:
        lefts.append((x0, x0 + w * scale))
        x0 += w * scale + hspace
    for i in range(1, rows + 1):
        top = 1 - (i - 1) * (h + vspace)
        for j in range(1, cols + 1):
            k = (i - 1) * cols + j
            xa = {**AXIS, "domain": list(lefts[j - 1]), "anchor": _ref("y", k)}
            ya = {**AXIS, "domain": [max(0.0, top - h), top], "anchor": _ref("x", k)}
            if date_x:
                xa["type"] = "date"
                if x_range:
                    xa["range"] = list(x_range)
            if shared_x and rows > 1 and k > cols:
                xa["matches"] = _ref("x", j)
            if shared_x and rows > 1 and i < rows:
                xa["showticklabels"] = False
            if shared_y and j > 1:
                ya["matches"] = _ref("y", (i - 1) * cols + 1)
                ya["showticklabels"] = False
            layout[_ax("x", k)] = xa
            layout[_ax("y", k)] = ya
            t = titles[k - 1] if k - 1 < len(titles) else ""
            if t:
                layout["annotations"].append({
                    "text": t, "x": sum(lefts[j - 1]) / 2, "y": top, "xref": "paper", "yref": "paper",
                    "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 13}})
    return layout


LEGEND_ROW_PX = 22       # one row of a horizontal legend
AXIS_LABELS_PX = 62      # tick labels and an axis title below the bottom axis
LEGEND_WIDTH_PX = 1000   # the legend's usable width (the page is at most 1200 px wide)


def legend_rows(data: list) -> int:
    """Rows a horizontal legend of these traces takes (0: no legend entry)."""
    names = []
    for t in data:
        if t.get("showlegend", True) and t.get("name") and t.get("name") not in names:
            names.append(t["name"])
    if not names:
        return 0
    rows, used = 1, 0
    for n in names:
        w = 40 + 7 * len(html.unescape(str(n)))  # symbol + text at ~7 px a character
        if used and used + w > LEGEND_WIDTH_PX:
            rows, used = rows + 1, 0
        used += w
    return rows


def figure(data: list, layout: dict, title: str, height: int, **extra) -> dict:
    """Finish a figure dict: shared look, title (already escaped), height.

    The legend sits at the very bottom of the figure (container coordinates), below a
    bottom margin that holds the axis tick labels and title, so it never covers them; the
    figure grows by the legend's height."""
    base = {"font": {"family": FONT, "size": 12}, "margin": {"l": 70, "r": 150, "t": 50, "b": 40},
            "plot_bgcolor": "white", "paper_bgcolor": "white", "hovermode": "x unified",
            "title": {"text": title, "x": 0.01}, "height": int(height)}
    out = {**base, **layout, **extra}
    rows = legend_rows(data)
    if rows:
        legend_h = rows * LEGEND_ROW_PX + 6
        out["legend"] = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom",
                         "x": 0, "xanchor": "left", **{k: v for k, v in out.get("legend", {}).items()
                                                       if k in ("traceorder", "font")}}
        margin = dict(out["margin"])
        margin["b"] = max(int(margin.get("b", 40)), AXIS_LABELS_PX) + legend_h
        out["margin"] = margin
        out["height"] = int(out["height"]) + legend_h
    else:
        out["showlegend"] = False
    return {"data": data, "layout": out}


def _label_end(labels: list, x, y, text, k: int = 1):
    """A direct label at the line's last point in axis pair k (the chart reads without the legend).

    Labels in one panel are staggered vertically so lines that end together stay legible.
    """
    if len(x) == 0 or not np.isfinite(y[-1]):
        return
    n = sum(1 for a in labels if a["yref"] == _ref("y", k))
    labels.append({"x": float(x[-1]), "y": float(y[-1]), "text": text, "xanchor": "left",
                   "yanchor": "middle", "showarrow": False, "font": {"size": 10}, "xshift": 4,
                   "yshift": (0, 12, -12, 24, -24)[n % 5], "xref": _ref("x", k), "yref": _ref("y", k)})


def _zero_line(k: int, x_range) -> dict:
    """A flat zero line for a panel with nothing to draw (its axes then still show)."""
    return {"type": "scatter", "mode": "lines", "x": list(x_range or ()), "y": [0, 0],
            "xaxis": _ref("x", k), "yaxis": _ref("y", k), "showlegend": False, "hoverinfo": "skip",
            "name": "zero", "line": {"color": "#999", "width": 1, "dash": "dot"}}


def _note(k: int, text: str) -> dict:
    """A centred message inside panel k (e.g. 'no liquidations')."""
    return {"text": text, "x": 0.5, "y": 0.5, "xref": f"{_ref('x', k)} domain",
            "yref": f"{_ref('y', k)} domain", "showarrow": False, "font": {"color": "#5f6368"}}


def path_kind(price_source) -> str:
    """own | proxy (the venue's own spot bars) | substituted (another venue's bars)."""
    src = str(price_source or "own")
    if src == "own":
        return "own"
    return "proxy" if src.startswith("proxy") else "substituted"


def _groups(frame):
    return [(v, m, g) for (v, m), g in frame.groupby(["venue", "market"], sort=True, observed=True)]


def empty_figure(title: str, message: str, height: int = 220) -> dict:
    """A chart with nothing to show. The report prints it as one line ("title: message",
    `empty_message`) instead of drawing an empty frame."""
    layout = {"xaxis": {"visible": False}, "yaxis": {"visible": False},
              "annotations": [{"text": esc(message), "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper",
                               "showarrow": False}],
              "meta": {"empty": esc(message)}}
    return figure([], layout, title, height)


def empty_message(fig: dict) -> str | None:
    """'title: message' of a figure with nothing to show, else None."""
    lay = fig.get("layout", {}) if isinstance(fig, dict) else {}
    meta = lay.get("meta") if isinstance(lay.get("meta"), dict) else {}
    if "empty" not in meta:
        return None
    title = html.unescape((lay.get("title") or {}).get("text", ""))  # plain text: the page escapes it
    msg = html.unescape(meta["empty"])
    return f"{title}: {msg}" if title else msg


def _all_zero(*frames_cols) -> bool:
    """True when every value of the given (frame, columns) is zero or missing."""
    for frame, cols in frames_cols:
        vals = frame[[c for c in cols if c in frame]].astype("float64").to_numpy()
        if vals.size and np.nan_to_num(vals).any():
            return False
    return True


def _line(x, y, name, k, *, dash, color, symbol, width=1.6, **kw) -> dict:
    return {"type": "scatter", "mode": "lines+markers", "x": arr(x), "y": arr(y), "name": name,
            "xaxis": _ref("x", k), "yaxis": _ref("y", k),
            "line": {"dash": dash, "color": color, "width": width},
            "marker": {"symbol": symbol, "maxdisplayed": 10, "size": 7}, **kw}


def price_figure(series: pd.DataFrame, price_sources: dict[tuple[str, str], str], title: str) -> dict:
    """Both venues' price paths, one panel per market; a substituted path dotted and named."""
    if series.empty:
        return empty_figure(title, "no price series for this window")
    markets = sorted(series["market"].unique())
    layout = grid(len(markets), titles=[esc(m) for m in markets], x_range=time_range(series))
    data, labels = [], []
    for k, market in enumerate(markets, start=1):
        for venue, g in series[series["market"] == market].groupby("venue", sort=True):
            st = venue_style(venue)
            src = price_sources.get((venue, market), "own")
            kind = path_kind(src)
            name = f"{st['label']} {market}" + ("" if kind == "own" else f" ({src})")
            x, y = _ms(g["ts"]), g["price"].to_numpy(dtype="float64")
            # another venue's bars: dotted; the venue's own spot bars (proxy): its dash, thinner
            data.append(_line(x, y, esc(name), k, dash="dot" if kind == "substituted" else st["dash"],
                              color=st["color"], symbol=st["symbol"], legendgroup=esc(venue),
                              width=1.0 if kind == "proxy" else 1.6, hovertemplate="%{y:,.2f}"))
            tag = "" if kind == "own" else f" ({kind})"
            _label_end(labels, x, y, esc(f"{st['label']}{tag}"), k)
        layout[_ax("y", k)]["title"] = {"text": "price (quote)"}
    layout["annotations"] += labels
    return figure(data, layout, title, 260 * len(markets) + 60)


def liquidations_figure(series: pd.DataFrame, title: str, bucket: str) -> dict:
    """Liquidated notional per bucket, stacked by mechanism, one panel per venue x market."""
    groups = _groups(series) if not series.empty else []
    mechs = flow_columns(series) if groups else []
    if not groups or not mechs:
        return empty_figure(title, "no liquidation series for this window")
    names = [f"{venue_style(v)['label']} {m}" for v, m, _ in groups]
    width_ms = pd.Timedelta(bucket) / pd.Timedelta(milliseconds=1)
    x_all = _ms(series["ts"])
    layout = grid(len(groups), titles=[esc(n) for n in names], vspace=0.06,
                  x_range=(_iso(np.nanmin(x_all)), _iso(np.nanmax(x_all) + width_ms)))
    data, shown = [], set()
    for k, (_venue, _market, g) in enumerate(groups, start=1):
        x = _ms(g["ts"])
        drawn = False
        for col in mechs:
            y = g[col].to_numpy(dtype="float64")
            if not np.any(y):
                continue
            key = FLOW_RE.match(col).group(1)
            label, pattern = MECHANISMS.get(key, (key, "+"))
            data.append({"type": "bar", "x": arr(x), "y": arr(y), "name": esc(label), "legendgroup": esc(key),
                         "showlegend": key not in shown, "xaxis": _ref("x", k), "yaxis": _ref("y", k),
                         "offset": 0, "width": width_ms,  # a bar spans its bucket [start, start + width)
                         "marker": {"color": MECH_COLORS.get(key, "#777"), "pattern": {"shape": pattern},
                                    "line": {"width": 0}},
                         "hovertemplate": "%{y:$,.3s}"})
            shown.add(key)
            drawn = True
        if not drawn:
            layout["annotations"].append(_note(k, "no liquidations"))
            data.append(_zero_line(k, layout["xaxis"].get("range")))
        layout[_ax("y", k)]["title"] = {"text": f"USD per {bucket}"}
    return figure(data, layout, title, 170 * len(groups) + 110, barmode="stack", bargap=0)


def reported_figure(series: pd.DataFrame, title: str) -> dict:
    """Cumulative liquidated notional: actual vs what an aggregator would have reported."""
    if series.empty or "reported_liquidated_usd" not in series:
        return empty_figure(title, "no reported-vs-actual series for this window")
    venues = sorted(series["venue"].unique())
    mechs = flow_columns(series)
    layout = grid(len(venues), titles=[esc(venue_style(v)["label"]) for v in venues], vspace=0.1,
                  x_range=time_range(series))
    markets = sorted(series["market"].unique())
    data, labels = [], []
    for k, venue in enumerate(venues, start=1):
        st = venue_style(venue)
        for j, market in enumerate(markets):
            g = series[(series["venue"] == venue) & (series["market"] == market)]
            if g.empty:
                continue
            x = _ms(g["ts"])
            actual = g[mechs].sum(axis=1).cumsum().to_numpy(dtype="float64")
            reported = g["reported_liquidated_usd"].cumsum().to_numpy(dtype="float64")
            sym = MARKET_SYMBOLS[j % len(MARKET_SYMBOLS)]
            for y, kind, dash in ((actual, "actual", "solid"), (reported, "reported", "dot")):
                data.append(_line(x, y, esc(f"{st['label']} {market} {kind}"), k, dash=dash, color=st["color"],
                                  symbol=sym, width=2 if kind == "actual" else 1.5,
                                  hovertemplate="%{y:$,.3s}"))
                _label_end(labels, x, y, esc(f"{market} {kind} {money(y[-1])}"), k)
        layout[_ax("y", k)]["title"] = {"text": "cumulative USD"}
    layout["annotations"] += labels
    return figure(data, layout, title, 230 * len(venues) + 90)


def house_figure(series: pd.DataFrame, title: str) -> dict:
    """BLP cumulative P&L, insurance-fund balance and cumulative ADL, per venue x market."""
    panels = [("blp_pnl_cum_usd", "BLP cumulative P&L (USD)", False),
              ("fund_balance_usd", "Insurance fund balance (USD)", False),
              ("adl_usd", "Cumulative ADL notional (USD)", True)]
    panels = [p for p in panels if p[0] in series.columns]
    if series.empty or not panels:
        return empty_figure(title, "no BLP / fund / ADL series for this window")
    layout = grid(len(panels), titles=[t for _, t, _ in panels], x_range=time_range(series))
    markets = sorted(series["market"].unique())
    data, labels, in_legend = [], [], set()
    for k, (col, _, cumulative) in enumerate(panels, start=1):
        drawn = False
        for venue, market, g in _groups(series):
            y = g[col].to_numpy(dtype="float64")
            if cumulative:
                y = np.cumsum(y)
            if col != "fund_balance_usd" and not np.any(y):
                continue  # e.g. Binance has no BLPs, FTX no ADL: said in the panel, nothing drawn
            st = venue_style(venue)
            x = _ms(g["ts"])
            name = esc(f"{st['label']} {market}")
            data.append(_line(x, y, name, k, dash=st["dash"], color=st["color"],
                              symbol=MARKET_SYMBOLS[markets.index(market) % len(MARKET_SYMBOLS)],
                              legendgroup=esc(f"{venue}/{market}"), showlegend=name not in in_legend,
                              hovertemplate="%{y:$,.3s}"))
            _label_end(labels, x, y, esc(f"{st['label']} {market} {money(y[-1])}"), k)
            in_legend.add(name)
            drawn = True
        if not drawn:
            layout["annotations"].append(_note(k, "zero throughout (no venue used this mechanism)"))
            data.append(_zero_line(k, layout["xaxis"].get("range")))
    layout["annotations"] += labels
    return figure(data, layout, title, 220 * len(panels) + 90)


def _hbar(y, x, name, k=1, **kw) -> dict:
    return {"type": "bar", "orientation": "h", "y": list(y), "x": arr(x), "name": name,
            "xaxis": _ref("x", k), "yaxis": _ref("y", k), **kw}


def _cat_axes(layout: dict, n: int) -> None:
    for k in range(1, n + 1):
        layout[_ax("y", k)].update(type="category", autorange="reversed")
        layout[_ax("x", k)]["type"] = "linear"


def answer_figure(answer: pd.DataFrame) -> dict:
    """House loss per window, FTX vs Binance: absolute and per $1B of open interest."""
    title = "The answer: house loss per window (the whole year last)"
    if answer.empty:
        return empty_figure(title, "no window ran")
    cols = [f"{v}_house_loss_{unit}" for unit in ("usd", "per_1b_oi") for v in ("ftx", "binance")]
    if _all_zero((answer, cols)):
        return empty_figure(title, "no house loss on either venue in any window: no bars to draw")
    layout = grid(1, 2, hspace=0.16, date_x=False, shared_y=True,
                  titles=["House loss (BLPs + insurance fund), USD", "House loss per $1B of open interest, USD"])
    _cat_axes(layout, 2)
    y = [esc(w) for w in answer["window"]]
    data = []
    for venue in ("ftx", "binance"):
        st = venue_style(venue)
        for k, col in enumerate((f"{venue}_house_loss_usd", f"{venue}_house_loss_per_1b_oi"), start=1):
            vals = answer[col].astype("float64").to_numpy()
            data.append(_hbar(y, vals, st["label"], k, legendgroup=venue, showlegend=k == 1,
                              marker={"color": st["color"], "pattern": {"shape": st["pattern"]}},
                              text=[f"{st['label']} {money(v)}" for v in vals], textposition="outside",
                              cliponaxis=False, hovertemplate="%{x:$,.3s}"))
    return figure(data, layout, title, 120 + 70 * len(answer), barmode="group", hovermode="closest",
                  margin={"l": 90, "r": 110, "t": 60, "b": 40})


def who_bore_figure(who: pd.DataFrame) -> dict:
    """Who bore the losses per window x venue (stacked), and notional forced on opposing traders."""
    title = "Who bore the losses"
    if who.empty:
        return empty_figure(title, "no window ran")
    y = [esc(f"{w} · {venue_style(v)['label']}") for w, v in zip(who["window"], who["venue"], strict=True)]
    layout = grid(1, 2, hspace=0.12, col_widths=[0.6, 0.4], shared_y=True, date_x=False,
                  titles=["Loss borne (USD)", "Closed against opposing traders (notional)"])
    _cat_axes(layout, 2)
    data = []
    parts = [p for p in LOSS_PARTS if p[0] in who]
    for col, label, pattern, color in parts:
        data.append(_hbar(y, who[col].astype("float64").to_numpy(), label, 1,
                          marker={"color": color, "pattern": {"shape": pattern}},
                          hovertemplate=label + " %{x:$,.3s}<extra></extra>"))
    for col, label, pattern, color in (("adl_usd", "ADL", "x", "#7a3d99"),
                                       ("closeout_usd", "FTX overflow close-out", "+", "#72b7b2")):
        vals = who[col].astype("float64").to_numpy()
        data.append(_hbar(y, vals, label, 2, marker={"color": color, "pattern": {"shape": pattern}},
                          text=[money(v) if v else "" for v in vals], textposition="outside", cliponaxis=False,
                          hovertemplate=label + " %{x:$,.3s}<extra></extra>"))
    totals = np.nan_to_num(who[[c for c, *_ in parts]].astype("float64").sum(axis=1).to_numpy())
    for yy, t in zip(y, totals, strict=True):
        layout["annotations"].append({"x": float(t), "y": yy, "text": money(t), "xanchor": "left",
                                      "showarrow": False, "xshift": 4, "font": {"size": 10},
                                      "xref": "x", "yref": "y"})
    return figure(data, layout, title, 130 + 34 * len(who), barmode="stack", hovermode="closest",
                  margin={"l": 140, "r": 90, "t": 60, "b": 40})


def fan_figure(quantiles: pd.DataFrame, central: pd.DataFrame, metric: str, title: str) -> dict:
    """Sweep spread per window x market: median with the 5-95% range; the main run hollow."""
    q = quantiles[quantiles["metric"] == metric] if not quantiles.empty else quantiles
    if q.empty:
        return empty_figure(title, f"the sweep has no quantiles for {metric}")
    c0 = central[central["venue"].isin(q["venue"])] if not central.empty and "venue" in central else central
    if _all_zero((q, ["q05", "q50", "q95"]), (c0, [metric])):
        return empty_figure(title, f"{metric.replace('_', ' ')} is zero in every sweep sample: nothing to draw")
    layout = grid(1, 1, date_x=False)
    _cat_axes(layout, 1)
    layout["xaxis"]["title"] = {"text": "USD"}
    data, cats = [], 0
    for venue, g in q.groupby("venue", sort=True):
        st = venue_style(venue)
        y = [esc(f"{w} · {m} · {st['label']}") for w, m in zip(g["window"], g["market"], strict=True)]
        cats += len(y)
        data.append({"type": "scatter", "mode": "markers", "x": arr(g["q50"]), "y": y,
                     "name": esc(f"{st['label']} median (5–95% bar)"),
                     "marker": {"symbol": st["symbol"], "size": 10, "color": st["color"]},
                     "error_x": {"type": "data", "symmetric": False, "array": arr(g["q95"] - g["q50"]),
                                 "arrayminus": arr(g["q50"] - g["q05"]), "color": st["color"], "width": 6},
                     "hovertemplate": "median %{x:$,.3s}<extra></extra>"})
        c = central[central["venue"] == venue] if not central.empty else central
        if not c.empty and metric in c:
            yc = [esc(f"{w} · {m} · {st['label']}") for w, m in zip(c["window"], c["market"], strict=True)]
            data.append({"type": "scatter", "mode": "markers", "x": arr(c[metric]), "y": yc,
                         "name": esc(f"{st['label']} main run"),
                         "marker": {"symbol": st["symbol"] + "-open", "size": 13, "color": "black"},
                         "hovertemplate": "main run %{x:$,.3s}<extra></extra>"})
    return figure(data, layout, title, 130 + 26 * cats, hovermode="closest",
                  margin={"l": 170, "r": 40, "t": 50, "b": 40})


def tornado_figure(tornado: pd.DataFrame, title: str) -> dict:
    """Per venue, how far the crash-window house loss moves between low and high draws of each parameter."""
    if tornado.empty:
        return empty_figure(title, "no sweep samples to rank parameters")
    if _all_zero((tornado, ["low_delta_usd", "high_delta_usd"])):
        return empty_figure(title, "no parameter moved the house loss in the sweep: nothing to rank")
    venues = sorted(tornado["venue"].unique())
    layout = grid(1, len(venues), hspace=0.3, date_x=False, shared_x=False,
                  titles=[esc(venue_style(v)["label"]) for v in venues])
    data = []
    for k, venue in enumerate(venues, start=1):
        layout[_ax("y", k)]["type"] = "category"
        layout[_ax("x", k)].update(type="linear", title={"text": "change in median house loss (USD)"})
        t = tornado[tornado["venue"] == venue].sort_values("swing_usd", ascending=True)
        y = [esc(p) for p in t["param"]]
        for col, label, pattern, color in (("low_delta_usd", "low third of the range", "/", "#8fb3d9"),
                                           ("high_delta_usd", "high third of the range", "", "#1b5e9e")):
            word = "low" if col.startswith("low") else "high"
            data.append(_hbar(y, t[col].astype("float64").to_numpy(), label, k, legendgroup=col,
                              showlegend=k == 1, marker={"color": color, "pattern": {"shape": pattern}},
                              text=[word] * len(t), textposition="inside", insidetextanchor="middle",
                              hovertemplate=label + ": %{x:$,.3s} vs median<extra></extra>"))
    return figure(data, layout, title, 180 + 44 * tornado["param"].nunique(), barmode="group", bargap=0.25,
                  hovermode="closest", margin={"l": 230, "r": 40, "t": 90, "b": 50})


def sweep_distribution_figure(totals: pd.DataFrame, title: str) -> dict | None:
    """Each venue's 2022 house loss across the sweep samples (box with every sample as a point).
    None when there is nothing to draw (the caller says so in one line)."""
    data, hi = [], 0.0
    for venue, col in (("ftx", "ftx_2022"), ("binance", "binance_2022")):
        if col not in totals:
            continue
        x = totals[col].astype("float64").dropna()
        if x.empty:
            continue
        hi = max(hi, float(x.max()))
        st = venue_style(venue)
        data.append({"type": "box", "orientation": "h", "x": [float(v) for v in x], "name": esc(st["label"]),
                     "boxpoints": "all", "jitter": 0.5, "pointpos": 0, "marker": {"color": st["color"], "size": 4},
                     "line": {"color": st["color"]}, "hovertemplate": "%{x:$,.3s}<extra></extra>"})
    if not data or hi <= 0:
        return None
    layout = {"xaxis": {"title": {"text": "house loss per sample, USD"}, "rangemode": "tozero"},
              "yaxis": {"type": "category"}, "shapes": [], "annotations": []}
    for target in (1e9, 8e9):
        if hi >= 0.2 * target:
            layout["shapes"].append({"type": "line", "x0": target, "x1": target, "y0": 0, "y1": 1, "yref": "paper",
                                     "line": {"dash": "dash", "color": "#555", "width": 1}})
            layout["annotations"].append({"x": target, "y": 1, "yref": "paper", "text": money(target),
                                          "showarrow": False, "yanchor": "bottom", "font": {"size": 10}})
    return figure(data, layout, title, 120 + 80 * len(data), hovermode="closest", showlegend=False,
                  margin={"l": 90, "r": 40, "t": 50, "b": 50})


def sensitivity_figure(sens: dict, title: str, top: int = 10) -> dict | None:
    """Spearman's rho with its bootstrap 90% interval, the top parameters per output.
    None when no output varies across the sweep."""
    names = {"ftx_2022": "FTX house loss", "binance_2022": "Binance house loss",
             "ftx_binance_ratio": "FTX ÷ Binance"}
    panels = []
    for out, label in names.items():
        ent = [e for e in ((sens.get("outputs") or {}).get(out) or {}).get("params", [])
               if e.get("rho") is not None and np.isfinite(e["rho"])]
        if ent:
            panels.append((label, ent[:top]))
    if not panels:
        return None
    layout = grid(len(panels), 1, vspace=0.12, date_x=False, shared_x=False, titles=[esc(p[0]) for p in panels])
    data = []
    for k, (_, ent) in enumerate(panels, start=1):
        ent = list(reversed(ent))
        layout[_ax("y", k)]["type"] = "category"
        layout[_ax("x", k)].update(type="linear", range=[-1.05, 1.05], zeroline=True,
                                   title={"text": "rank correlation (rho)"})
        rho = np.array([e["rho"] for e in ent], float)
        lo = np.array([e.get("rho_lo", np.nan) if e.get("rho_lo") is not None else np.nan for e in ent], float)
        hi = np.array([e.get("rho_hi", np.nan) if e.get("rho_hi") is not None else np.nan for e in ent], float)
        data.append({"type": "scatter", "mode": "markers", "x": arr(rho), "y": [esc(e["param"]) for e in ent],
                     "xaxis": _ref("x", k), "yaxis": _ref("y", k), "name": "rho (90% bootstrap interval)",
                     "showlegend": k == 1, "marker": {"color": "#1b5e9e", "size": 9},
                     "error_x": {"type": "data", "symmetric": False, "array": arr(np.nan_to_num(hi - rho)),
                                 "arrayminus": arr(np.nan_to_num(rho - lo)), "color": "#1b5e9e"},
                     "hovertemplate": "%{y}: rho %{x:.2f}<extra></extra>"})
    n = sum(len(p[1]) for p in panels)
    return figure(data, layout, title, 140 + 26 * n + 60 * len(panels), hovermode="closest",
                  margin={"l": 260, "r": 30, "t": 70, "b": 50},
                  legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"})


# ---- calibration against Coinalyze ---------------------------------------------------
CAL_FLOOR_USD = 1e5  # a model zero is drawn at the metrics' $0.1M floor (log axes cannot show 0)
SIDE_STYLE = {"long": {"color": "#1b7837", "symbol": "triangle-down"},
              "short": {"color": "#762a83", "symbol": "triangle-up"}}


def _held_out_spans(dates: pd.Series, held: pd.Series) -> list[tuple[float, float]]:
    """Contiguous runs of held-out days as (start ms, end ms) with the end at the next midnight."""
    d = pd.DataFrame({"d": pd.to_datetime(dates, utc=True), "h": held.astype(bool).to_numpy()})
    days = sorted(set(d.loc[d["h"], "d"]))
    spans, one = [], pd.Timedelta(days=1)
    for day in days:
        if spans and day - spans[-1][1] <= pd.Timedelta(0):
            spans[-1][1] = day + one
        else:
            spans.append([day, day + one])
    ms = lambda t: float((t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(milliseconds=1))  # noqa: E731
    return [(ms(a), ms(b)) for a, b in spans]


def calibration_daily_figure(c: pd.DataFrame, title: str) -> dict:
    """Model (reported) vs Coinalyze per day and side, one panel per market, log y; held-out
    (window) days shaded."""
    if c is None or c.empty:
        return empty_figure(title, "no daily model or Coinalyze data in these results: nothing to compare")
    markets = sorted(c["market"].unique())
    layout = grid(len(markets), titles=[esc(m) for m in markets], vspace=0.1)
    data, labels = [], []
    for k, market in enumerate(markets, start=1):
        g = c[c["market"] == market]
        for side in ("long", "short"):
            s = g[g["side"] == side].sort_values("date")
            if s.empty:
                continue
            st = SIDE_STYLE[side]
            x = _ms(s["date"])
            model = np.maximum(s["model_usd"].to_numpy(dtype="float64"), CAL_FLOOR_USD)
            obs = np.maximum(s["observed_usd"].to_numpy(dtype="float64"), CAL_FLOOR_USD)
            data.append({**_line(x, obs, esc(f"{market} {side}s liquidated: Coinalyze"), k, dash="dot",
                                 color=st["color"], symbol=st["symbol"] + "-open", width=1.2,
                                 hovertemplate="%{y:$,.3s}"), "legendgroup": f"{side}-obs", "showlegend": k == 1})
            data.append({**_line(x, model, esc(f"{market} {side}s liquidated: model (reported)"), k, dash="solid",
                                 color=st["color"], symbol=st["symbol"], width=1.8,
                                 hovertemplate="%{y:$,.3s}"), "legendgroup": f"{side}-model", "showlegend": k == 1})
        layout[_ax("y", k)].update(type="log", title={"text": "USD per day"})
    spans = _held_out_spans(c["date"], c["held_out"])
    layout["shapes"] = [{"type": "rect", "xref": "x", "yref": "paper", "x0": a, "x1": b, "y0": 0, "y1": 1,
                         "fillcolor": "#f2c14e", "opacity": 0.18, "line": {"width": 0}, "layer": "below"}
                        for a, b in spans]
    layout["annotations"] += labels
    return figure(data, layout, title, 260 * len(markets) + 110)


def calibration_scatter_figure(c: pd.DataFrame, title: str) -> dict:
    """Model vs Coinalyze per day-side on log axes; training and held-out days apart, with the
    1x line and the 0.5x / 2x band."""
    if c is None or c.empty:
        return empty_figure(title, "no daily model or Coinalyze data in these results: nothing to compare")
    data = []
    for held, name, symbol in ((False, "training days", "circle-open"), (True, "held-out window days", "diamond")):
        for side in ("long", "short"):
            s = c[(c["held_out"].astype(bool) == held) & (c["side"] == side)]
            if s.empty:
                continue
            data.append({"type": "scatter", "mode": "markers", "name": esc(f"{name}, {side}s"),
                         "x": arr(np.maximum(s["observed_usd"].to_numpy(dtype="float64"), CAL_FLOOR_USD)),
                         "y": arr(np.maximum(s["model_usd"].to_numpy(dtype="float64"), CAL_FLOOR_USD)),
                         "text": [esc(f"{m} {d:%Y-%m-%d}")
                                  for m, d in zip(s["market"], pd.to_datetime(s["date"]), strict=True)],
                         "marker": {"symbol": symbol, "color": SIDE_STYLE[side]["color"], "size": 7 if held else 5,
                                    "opacity": 0.9 if held else 0.45},
                         "hovertemplate": "%{text}: Coinalyze %{x:$,.3s}, model %{y:$,.3s}<extra></extra>"})
    lo = CAL_FLOOR_USD
    hi = float(max(c["observed_usd"].max(), c["model_usd"].max(), lo * 10)) * 1.5
    for f, dash, name in ((1.0, "solid", "model = Coinalyze"), (0.5, "dot", "0.5×"), (2.0, "dot", "2×")):
        data.append({"type": "scatter", "mode": "lines", "x": [lo, hi], "y": [lo * f, hi * f], "name": name,
                     "line": {"color": "#777", "dash": dash, "width": 1}, "hoverinfo": "skip"})
    layout = {"xaxis": {**AXIS, "type": "log", "title": {"text": "Coinalyze, USD per day"}},
              "yaxis": {**AXIS, "type": "log", "title": {"text": "model (reported), USD per day"}},
              "annotations": [{"text": f"a model zero is drawn at the ${lo / 1e6:.1f}M floor", "x": 0.99, "y": 0.01,
                               "xref": "paper", "yref": "paper", "xanchor": "right", "yanchor": "bottom",
                               "showarrow": False, "font": {"size": 10, "color": "#5f6368"}}]}
    return figure(data, layout, title, 520, hovermode="closest")


def calibration_months_figure(months: pd.DataFrame, title: str) -> dict:
    """Monthly totals of the whole-year run vs Coinalyze, with the ratio written on each month."""
    if months is None or months.empty:
        return empty_figure(title, "no whole-year run in these results: no monthly totals")
    x = [esc(m) for m in months["month"]]
    model = months["model_usd"].astype("float64").to_numpy()
    obs = months["observed_usd"].astype("float64").to_numpy()
    ratio = pd.to_numeric(months["ratio"], errors="coerce").to_numpy(dtype="float64")
    data = [
        {"type": "bar", "x": x, "y": arr(obs), "name": "Coinalyze", "marker": {"color": "#9c9c9c",
                                                                               "pattern": {"shape": "/"}},
         "hovertemplate": "%{y:$,.3s}"},
        {"type": "bar", "x": x, "y": arr(model), "name": "model (reported)", "marker": {"color": "#b26b00"},
         "text": [("×" + f"{r:.2g}") if np.isfinite(r) else "—" for r in ratio], "textposition": "outside",
         "cliponaxis": False, "hovertemplate": "%{y:$,.3s}"},
    ]
    layout = {"xaxis": {**AXIS, "type": "category"}, "yaxis": {**AXIS, "title": {"text": "USD per month"}}}
    return figure(data, layout, title, 380, barmode="group", hovermode="closest")
