"""The report in a real headless Chromium (Debian's, driven by Playwright's Python client).

Never downloads a browser: uses /usr/bin/chromium (`make chromium` installs it). Without it
the tests skip, unless LIQREPLAY_REQUIRE_BROWSER=1 (CI), where a missing browser fails.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reports.inputs import load
from reports.render import write_report

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DRAW_TIMEOUT_MS = 180_000  # 2 shared cores, ~25 charts


def _chromium() -> str:
    path = os.environ.get("LIQREPLAY_CHROMIUM") or "/usr/bin/chromium"
    if not Path(path).exists():
        path = shutil.which("chromium") or ""
    reason = None
    if not path:
        reason = "chromium not found at /usr/bin/chromium (install it with `make chromium`)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright Python package is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get("LIQREPLAY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LIQREPLAY_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def loaded(results_dir, tmp_path_factory):
    """Open the report once; record console messages, page errors, dialogs and every request."""
    exe = _chromium()  # skips (or fails under LIQREPLAY_REQUIRE_BROWSER=1) without chromium or playwright
    from playwright.sync_api import sync_playwright
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(load(results_dir), out)
    url = out.resolve().as_uri()
    log = {"console": [], "errors": [], "requests": [], "blocked": [], "dialogs": [], "sockets": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

        def gate(route):
            if route.request.url == url:
                route.continue_()
            else:
                log["blocked"].append(route.request.url)
                route.abort()

        context.route("**/*", gate)
        page = context.new_page()
        page.on("console", lambda m: log["console"].append((m.type, m.text)))
        page.on("pageerror", lambda e: log["errors"].append(str(e)))
        page.on("request", lambda r: log["requests"].append(r.url))
        page.on("websocket", lambda w: log["sockets"].append(w.url))

        def on_dialog(d):
            log["dialogs"].append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        page.goto(url)
        page.wait_for_selector("body[data-figures-drawn]", state="attached", timeout=DRAW_TIMEOUT_MS)
        yield page, log, out
        context.close()
        browser.close()


def test_loads_without_console_error_or_network(loaded):
    page, log, out = loaded
    assert log["errors"] == []
    assert [m for m in log["console"] if m[0] in ("error", "warning")] == []
    assert log["requests"] == [out.resolve().as_uri()]
    assert log["blocked"] == [] and log["sockets"] == []
    assert page.evaluate("document.scripts.length") == 3


def test_every_chart_draws(loaded):
    page, _, _ = loaded
    stats = page.evaluate("""() => Array.from(document.querySelectorAll('.plot')).map(el => ({
        id: el.id, drawn: el.getAttribute('data-drawn') === '1',
        svgs: el.querySelectorAll('.main-svg').length,
        traces: el.querySelectorAll('.scatterlayer .trace, .barlayer .trace, .boxlayer .trace').length,
        marks: el.querySelectorAll('.scatterlayer path.js-line, .scatterlayer .point, .barlayer .point, '
                                   + '.boxlayer path.box, .boxlayer .point').length,
        height: el.getBoundingClientRect().height}))""")
    assert len(stats) >= 20  # answer, who bore, 4 per window x 5, fan, tornado
    for s in stats:
        assert s["drawn"] and s["svgs"] >= 1 and s["traces"] >= 1 and s["marks"] >= 1 and s["height"] > 150, s


def test_screenshot_written(loaded, tmp_path):
    page, _, _ = loaded
    top = tmp_path / "report-top.png"
    page.screenshot(path=str(top))
    chart = tmp_path / "chart-answer.png"
    page.locator("#fig-answer").screenshot(path=str(chart))
    assert top.stat().st_size > 20_000 and chart.stat().st_size > 10_000
    print(f"screenshots: {top} {chart}")


def test_script_label_renders_as_text(loaded, evil):
    page, log, _ = loaded
    assert log["dialogs"] == []  # nothing ran
    headings = page.locator("h3", has_text=evil)
    assert headings.count() >= 1 and evil in headings.first.text_content()
    # inside plotly's SVG too: the chart title shows the characters, not a tag
    titles = page.evaluate("""() => Array.from(document.querySelectorAll('.plot .gtitle'))
        .map(t => t.textContent)""")
    assert any(evil in t for t in titles)
    assert page.evaluate("document.querySelectorAll('svg script, .plot script').length") == 0
    cells = page.locator("td", has_text=f"evil.{evil}")
    assert cells.count() >= 1


def test_tables_sort_by_value(loaded):
    page, _, _ = loaded
    table = page.locator("#t-answer table")
    header = table.locator("th", has_text="FTX house loss").first
    col = table.locator("th").evaluate_all(
        "(ths, h) => ths.findIndex(t => t.title === 'ftx_house_loss_usd')", None)
    assert col >= 0

    def values():
        return table.locator(f"tbody tr td:nth-child({col + 1})").evaluate_all(
            "tds => tds.map(td => td.getAttribute('data-v'))")

    header.locator("button").click()
    up = [float(v) for v in values() if v]
    assert up == sorted(up) and header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    down = [float(v) for v in values() if v]
    assert down == sorted(down, reverse=True) and len(down) >= 4


def test_print_stylesheet_hides_navigation(loaded):
    page, _, _ = loaded
    page.emulate_media(media="print")
    try:
        assert page.evaluate("getComputedStyle(document.querySelector('nav')).display") == "none"
    finally:
        page.emulate_media(media="screen")
