"""Figure builders: pure frames -> plotly.js dicts."""
from __future__ import annotations

import base64

import numpy as np
import pandas as pd

from reports import figures as F


def _series(venue_steps: dict[tuple[str, str], str], start="2022-05-05", end="2022-05-16", zero=()):
    parts = []
    for (venue, market), step in venue_steps.items():
        ts = pd.date_range(start, end, freq=step, inclusive="left", tz="UTC")
        n = len(ts)
        flow = np.zeros(n) if (venue, market) in zero else np.linspace(1, 2, n) * 1e6
        parts.append(pd.DataFrame({
            "window": "w", "venue": venue, "market": market, "ts": ts, "price": np.linspace(100, 90, n),
            "liquidated_step1_usd": flow, "liquidated_ioc_usd": flow / 2, "reported_liquidated_usd": flow / 3,
            "fund_balance_usd": 1e6 - np.cumsum(flow) / 10, "adl_usd": np.zeros(n)}))
    return pd.concat(parts, ignore_index=True)


def _decode(a: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(a["bdata"]), dtype="<f8")


def test_bars_never_finer_than_the_coarsest_series():
    s = _series({("ftx", "BTC"): "1D", ("binance", "BTC"): "1h"})
    assert F.native_step(s) == pd.Timedelta("1D")
    bars, bucket = F.bucket_series(s, 240, F.native_step(s))
    assert bucket == "1D"
    lines, line_bucket = F.bucket_series(s, 900)
    assert pd.Timedelta(line_bucket) <= pd.Timedelta("1h")  # lines keep the finer series detail
    fig = F.liquidations_figure(bars, "t", bucket)
    widths = {t["width"] for t in fig["data"] if t["type"] == "bar"}
    assert widths == {86_400_000.0} and all(t["offset"] == 0 for t in fig["data"] if t["type"] == "bar")
    total = sum(_decode(t["y"]).sum() for t in fig["data"] if t["type"] == "bar")
    assert total == np.float64(s["liquidated_step1_usd"].sum() + s["liquidated_ioc_usd"].sum())


def test_empty_panel_keeps_axes_and_range():
    s = _series({("ftx", "BTC"): "1h", ("binance", "BTC"): "1h"}, zero={("binance", "BTC")})
    fig = F.liquidations_figure(s, "t", "1h")
    lay = fig["layout"]
    assert lay["xaxis"]["range"][0].startswith("2022-05-05")
    assert lay["xaxis2"]["matches"] == "x"
    notes = [a["text"] for a in lay["annotations"]]
    assert "no liquidations" in notes
    zero = [t for t in fig["data"] if t.get("name") == "zero"]
    assert len(zero) == 1 and zero[0]["xaxis"] == "x"  # binance sorts first: panel 1


def test_house_figure_says_when_a_mechanism_is_unused():
    s = _series({("ftx", "BTC"): "1h"})
    fig = F.house_figure(s, "t")
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert "Insurance fund balance (USD)" in titles and "Cumulative ADL notional (USD)" in titles
    assert any("zero throughout" in t for t in titles)


def test_labels_from_data_are_escaped():
    s = _series({("ftx", "<b>X</b>"): "1h"})
    fig = F.price_figure(s, {("ftx", "<b>X</b>"): "substituted: <i>y</i>"}, F.esc("w <script>"))
    text = str(fig)
    assert "<b>X</b>" not in text and "&lt;b&gt;X&lt;/b&gt;" in text
    assert "&lt;i&gt;y&lt;/i&gt;" in text and fig["layout"]["title"]["text"] == "w &lt;script&gt;"
    assert fig["data"][0]["line"]["dash"] == "dot"


def test_empty_series_gives_a_message_not_an_error():
    fig = F.reported_figure(pd.DataFrame(), "t")
    assert fig["data"] == [] and "no reported" in fig["layout"]["annotations"][0]["text"]


# ---------------------------------------------------------------- issue 11 item 17: report polish
def test_legend_sits_below_the_axis_labels_never_on_them():
    s = _series({("ftx", "BTC"): "1h", ("binance", "BTC"): "1h"})
    for fig in (F.price_figure(s, {("ftx", "BTC"): "own", ("binance", "BTC"): "own"}, "t"),
                F.liquidations_figure(s, "t", "1h"), F.house_figure(s, "t")):
        lay = fig["layout"]
        leg = lay["legend"]
        assert (leg["yref"], leg["y"], leg["yanchor"]) == ("container", 0, "bottom")
        rows = F.legend_rows(fig["data"])
        assert rows >= 1
        # the bottom margin holds the axis labels AND the legend rows below them
        assert lay["margin"]["b"] >= F.AXIS_LABELS_PX + rows * F.LEGEND_ROW_PX


def test_many_legend_entries_take_more_rows_and_more_margin():
    data = [{"name": f"a rather long legend entry number {i}"} for i in range(12)]
    assert F.legend_rows(data) >= 3
    few = F.figure(data[:1], {}, "t", 300)["layout"]
    many = F.figure(data, {}, "t", 300)["layout"]
    assert many["margin"]["b"] > few["margin"]["b"] and many["height"] > few["height"]


def test_charts_with_nothing_to_show_are_one_line():
    import pandas as pd

    answer = pd.DataFrame({"window": ["2022-05"], "ftx_house_loss_usd": [0.0], "binance_house_loss_usd": [0.0],
                           "ftx_house_loss_per_1b_oi": [0.0], "binance_house_loss_per_1b_oi": [0.0]})
    assert F.empty_message(F.answer_figure(answer)).startswith("The answer: house loss per window")
    tornado = pd.DataFrame({"venue": ["ftx"], "param": ["p"], "low_delta_usd": [0.0], "high_delta_usd": [0.0],
                            "swing_usd": [0.0]})
    assert "no parameter moved" in F.empty_message(F.tornado_figure(tornado, "T <b>"))
    assert F.empty_message(F.tornado_figure(tornado, "T &lt;b&gt;")).startswith("T <b>:")  # plain text
    q = pd.DataFrame({"window": ["w"], "venue": ["ftx"], "market": ["BTC"], "metric": ["house_loss_usd"],
                      "q05": [0.0], "q50": [0.0], "q95": [0.0]})
    central = pd.DataFrame({"window": ["w"], "venue": ["ftx"], "market": ["BTC"], "house_loss_usd": [0.0]})
    assert "zero in every sweep sample" in F.empty_message(F.fan_figure(q, central, "house_loss_usd", "Fan"))
    q.loc[0, "q95"] = 5.0
    assert F.empty_message(F.fan_figure(q, central, "house_loss_usd", "Fan")) is None


def test_substituted_and_proxy_paths_are_labelled_apart():
    s = _series({("ftx", "BTC"): "1h", ("binance", "BTC"): "1h"})
    fig = F.price_figure(s, {("ftx", "BTC"): "substituted: binance perp BTCUSDT",
                             ("binance", "BTC"): "proxy: binance spot BTCUSDT"}, "t")
    by_name = {t["name"]: t for t in fig["data"]}
    sub = next(t for n, t in by_name.items() if "substituted" in n)
    prox = next(t for n, t in by_name.items() if "proxy" in n)
    assert sub["line"]["dash"] == "dot" and prox["line"]["dash"] != "dot"
    tags = [a["text"] for a in fig["layout"]["annotations"] if a.get("xshift") == 4]
    assert "FTX (substituted)" in tags and "Binance (proxy)" in tags
