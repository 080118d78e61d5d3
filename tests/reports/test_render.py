"""The HTML report: contents, escaping, self-containment, table files, CLI behaviour."""
from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from backtest.console import UserError, main
from reports import render as R
from reports.inputs import load
from reports.tables import all_tables, is_year, load_calibration

SHARED_CALIBRATION = Path(__file__).resolve().parents[3] / "shared" / "reference" / "calibration.csv"


class _Tags(HTMLParser):
    """Collect tags, their attributes and the text outside <script>/<style>."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in.append(tag)

    def handle_endtag(self, tag):
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data):
        if not self._in:
            self.text.append(data)


@pytest.fixture(scope="module")
def page(results_dir) -> str:
    return R.render(load(results_dir))


@pytest.fixture(scope="module")
def parsed(page) -> _Tags:
    p = _Tags()
    p.feed(page)
    return p


def _figures(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', page, re.S)
    assert m, "figure data block missing"
    return json.loads(m.group(1))


def test_page_is_self_contained(page, parsed):
    # plotly.js inlined exactly once; no tag loads anything from anywhere
    assert page.count("plotly.js v") >= 1
    assert len(re.findall(r"<script\b", page)) == 3  # plotly.js, figure JSON, the page's own JS
    for tag, attrs in parsed.tags:
        assert tag not in ("link", "img", "iframe", "object", "embed", "base"), tag
        for name in ("src", "href", "srcset", "action", "poster"):
            v = attrs.get(name)
            if v is not None:
                assert not re.match(r"^\s*(https?:|//|ftp:)", v), (tag, name, v)
    assert "MathJax.Hub" not in page.split('id="report-figures"')[1]
    csp = next(a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp


def test_markup_from_data_is_text_not_tags(page, parsed, evil):
    assert evil not in page
    assert "<img" not in page.split("<script>")[0]  # the evil parameter source stays text
    text = "".join(parsed.text)
    assert evil in text  # shown, as text, in headings/tables
    assert '<img src="x" onerror="alert(2)"> & co' in text
    assert not any(t == "img" for t, _ in parsed.tags)
    # in figure JSON, markup arrives HTML-escaped so plotly draws it as literal text
    figs = json.dumps(_figures(page))
    assert evil not in figs
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in figs


def test_script_json_escapes_breakouts():
    s = R.script_json({"a": "</script><b>&\u2028\u2029"})
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in s
    assert json.loads(s) == {"a": "</script><b>&\u2028\u2029"}


def test_answer_first_with_year_and_who_bore(page, results_dir):
    inp = load(results_dir)
    answer = all_tables(inp)["answer"].frame
    crash = answer[~answer["whole_year"]]
    rows = inp.rows
    ran = set(crash["window"])
    ftx = rows[(rows.venue == "ftx") & rows.window.isin(ran)]["house_loss_usd"].sum()
    assert crash["ftx_house_loss_usd"].sum() == pytest.approx(ftx)
    one = answer.iloc[0]
    r = rows[(rows.window == one.window) & (rows.venue == "binance")]
    assert one["binance_house_loss_per_1b_oi"] == pytest.approx(
        r.house_loss_usd.sum() / r.open_interest_usd.sum() * 1e9)
    assert answer["whole_year"].iloc[-1] and not answer["whole_year"].iloc[:-1].any()
    # the answer section comes before the per-window section and states both numbers
    head = page[page.index('id="answer"'):page.index('id="windows"')]
    assert R.F.money(crash["ftx_house_loss_usd"].sum()) in head
    assert R.F.money(crash["binance_house_loss_usd"].sum()) in head
    assert "Whole year 2022 (24/7)" in head
    assert "Who bore" in head and "BLPs" in head and "insurance fund" in head and "opposing traders" in head


def test_sections_present(page):
    for anchor in ("answer", "windows", "sensitivity", "calibration", "parameters", "coverage", "limitations"):
        assert f'id="{anchor}"' in page
    for needle in ("Exogenous prices", "Synthetic populations", "Mark-price proxy", "Substituted paths",
                   "Skipped windows", "no bars for ftx perp BTC-PERP &lt;1h&gt; in the lake",
                   "Substituted price path", "@media print", "table class=\"sortable\""):
        assert needle in page, needle


def test_every_window_has_its_four_charts(page, results_dir):
    figs = {f["id"]: f for f in _figures(page)["figures"]}
    inp = load(results_dir)
    ran = [w for w in inp.windows if w["status"] == "ran"]
    for i in range(len(ran)):
        for kind in ("price", "liq", "rep", "house"):
            f = figs[f"fig-w{i}-{kind}"]
            assert f["data"], f"fig-w{i}-{kind} has no trace"
    assert "fig-fan" in figs and "fig-tornado" in figs
    # a substituted FTX path is dotted and named as substituted
    subs = [t for f in figs.values() for t in f["data"] if "substituted" in t.get("name", "")]
    assert subs and all(t["line"]["dash"] == "dot" for t in subs)


def test_tables_written_as_csv_and_json(results_dir, tmp_path):
    inp = load(results_dir)
    out = tmp_path / "out" / "report.html"
    html_path, tables_dir = R.write_report(inp, out)
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    names = set(all_tables(inp))
    assert {"answer", "who_bore", "calibration", "parameters", "coverage", "sweep_quantiles",
            "tornado", "liquidations", "windows", "results", "cross_venue"} <= names
    for name in names:
        with open(tables_dir / f"{name}.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        doc = json.loads((tables_dir / f"{name}.json").read_text(encoding="utf-8"))
        assert len(doc["rows"]) == len(rows) == len(all_tables(inp)[name].frame)
    ans = pd.read_csv(tables_dir / "answer.csv")
    assert ans["ftx_house_loss_usd"].sum() == pytest.approx(
        all_tables(inp)["answer"].frame["ftx_house_loss_usd"].sum())
    assert not list(out.parent.glob(".*.tmp")) and not list(tables_dir.glob(".*.tmp"))


def test_without_sweep_says_so(no_sweep_dir):
    inp = load(no_sweep_dir)
    assert inp.sweep is None
    page = R.render(inp)
    assert "run without a sweep" in page
    ids = {f["id"] for f in _figures(page)["figures"]}
    assert "fig-fan" not in ids and "fig-tornado" not in ids
    assert "Skipped windows" not in page  # nothing skipped in this one


def test_calibration_table_is_the_shared_reference_and_compares(results_dir):
    ref = load_calibration()
    assert len(ref) and ref["source"].str.len().gt(0).all()
    if SHARED_CALIBRATION.exists():
        with open(SHARED_CALIBRATION, newline="", encoding="utf-8") as fh:
            shared = list(csv.DictReader(fh))
        mine = ref.to_dict("records")
        for row in shared:
            assert row in mine, row
    cal = all_tables(load(results_dir))["calibration"].frame
    # Oct 25-26 FTX: the fixture's 2022-10 window covers it, so the model has a figure
    oct_ftx = cal[(cal.date_from == "2022-10-25") & (cal.venue == "ftx") & (cal.metric == "liquidated_24h")]
    assert oct_ftx["model_actual"].iloc[0] > 0 and "window 2022-10" in oct_ftx["model_basis"].iloc[0]
    okx = cal[cal.venue == "okx"]
    assert okx["model_basis"].str.contains("not modelled").all()
    assert cal["source"].str.len().gt(0).all()


def test_bucketing_keeps_totals_and_marks_bucket(results_dir):
    inp = load(results_dir)
    sub = inp.series[inp.series.window == "2022-05"]
    part, bucket = R.F.bucket_series(sub, 100)
    assert pd.Timedelta(bucket) >= (sub.ts.max() - sub.ts.min()) / 100
    for col in ("liquidated_step1_usd", "reported_liquidated_usd", "adl_usd"):
        assert part[col].sum() == pytest.approx(sub[col].sum())
    assert part.groupby(["venue", "market"]).size().max() <= 101
    last = sub.sort_values("ts").groupby(["venue", "market"])["fund_balance_usd"].last()
    assert part.sort_values("ts").groupby(["venue", "market"])["fund_balance_usd"].last().to_dict() == \
        pytest.approx(last.to_dict())


def test_money_format():
    assert R.F.money(1_234_000_000) == "$1.23B"
    assert R.F.money(-45_600_000) == "−$45.6M"
    assert R.F.money(999) == "$999"
    assert R.F.money(float("nan")) == "—"


def test_year_detection():
    assert is_year({"id": "x", "start": "2022-01-01", "end": "2023-01-01"})
    assert not is_year({"id": "x", "start": "2022-05-05", "end": "2022-05-16"})
    assert is_year({"id": "x", "whole_year": True, "start": "2022-05-05", "end": "2022-05-06"})


# ---- CLI ---------------------------------------------------------------------------

def test_cli_default_out_prints_path(results_dir, tmp_path, capsys):
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(results_dir, d)
    assert main(["report", str(d)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(d / "report.html") and Path(out).stat().st_size > 1_000_000
    assert (d / "report_tables" / "answer.csv").exists()


def test_cli_custom_out(results_dir, tmp_path, capsys):
    target = tmp_path / "out" / "r.html"
    assert main(["report", str(results_dir), "--out", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert (tmp_path / "out" / "r_tables" / "calibration.json").exists()


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "nope", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no summary.json"),
    (lambda d: (d / "bad").mkdir() or (d / "bad" / "summary.json").write_text("{oops") and d / "bad",
     "summary.json or its tables are not valid"),
    (lambda d: (d / "old").mkdir() or (d / "old" / "summary.json").write_text('{"a": 1}') and d / "old",
     "lacks run_id"),
])
def test_cli_bad_results_dir_is_one_line_exit_2(tmp_path, capsys, make, needle):
    d = make(tmp_path)
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and err.startswith("liqreplay report:")
    assert not (Path(d) / "report.html").exists()


def test_nothing_half_written_on_failure(results_dir, tmp_path, monkeypatch):
    out = tmp_path / "o" / "report.html"

    def boom(*a, **k):
        raise RuntimeError("render failed")

    monkeypatch.setattr(R, "render", boom)
    with pytest.raises(RuntimeError):
        R.write_report(load(results_dir), out)
    assert not out.exists() and not (tmp_path / "o" / "report_tables").exists()


def test_load_rejects_series_without_columns(results_dir, tmp_path):
    import shutil
    d = tmp_path / "r"
    shutil.copytree(results_dir, d)
    pd.DataFrame({"window": ["x"]}).to_parquet(d / "series.parquet")
    with pytest.raises(UserError, match="series.parquet lacks"):
        load(d)


def test_missing_blp_series_is_said_on_the_page(results_dir, tmp_path):
    import shutil
    d = tmp_path / "r"
    shutil.copytree(results_dir, d)
    s = pd.read_parquet(d / "series.parquet").drop(columns=["blp_pnl_cum_usd"])
    s.to_parquet(d / "series.parquet")
    page = R.render(load(d))
    assert "no blp_pnl_cum_usd" in page
    assert "BLP cumulative P&amp;L (USD)" not in page.split('id="report-figures"')[1].split("</script>")[0]


def test_no_table_repeats_a_column_header(results_dir):
    from reports.inputs import load
    from reports.render import table_view
    from reports.tables import all_tables

    for name, t in all_tables(load(results_dir)).items():
        heads = [h for _, _, h in table_view(t, "x").columns]
        assert len(heads) == len(set(heads)), (name, heads)


def test_calibration_text_cells_wrap(results_dir, tmp_path):
    from reports.inputs import load
    from reports.render import write_report

    html_path, _ = write_report(load(results_dir), tmp_path / "r.html")
    page = html_path.read_text()
    assert "td.text { max-width: 24rem; white-space: normal; overflow-wrap: anywhere; }" in page
    cal = page[page.index('id="t-calibration"'):]
    cal = cal[:cal.index("</table>")]
    assert '<td class="text"' in cal  # its long notes and sources are text cells, which wrap
