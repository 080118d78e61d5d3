"""The sweep's part of the report: distribution per venue, the frontier in words, drivers."""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd

from reports import render as R
from reports.inputs import load
from reports.tables import all_tables


def _figure_ids(page: str) -> set[str]:
    m = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', page, re.S)
    return {f["id"] for f in json.loads(m.group(1))["figures"]}


def test_answer_shows_the_distribution_frontier_and_drivers(results_dir):
    inp = load(results_dir)
    page = R.render(inp)
    assert "Across the sweep (24 samples, seed 7" in page
    assert "No sampled setting makes FTX&#39;s house lose $1.00B in 2022" in page
    assert {"fig-sweep-dist", "fig-sensitivity"} <= _figure_ids(page)
    tables = all_tables(inp)
    dist = tables["sweep_distribution"].frame.set_index("measure")
    assert dist.loc["ftx_2022", "n"] == 24 and dist.loc["ftx_2022", "q05"] <= dist.loc["ftx_2022", "q95"]
    sens = tables["sensitivity"].frame
    # the fixture makes FTX's loss grow with hedge latency and Binance's fall with its fee
    assert sens[sens.output == "ftx_2022"].iloc[0]["param"] == "ftx.blp.hedge_latency_s"
    top_b = sens[sens.output == "binance_2022"].iloc[0]
    assert top_b["param"] == "binance.liq_fee_rate" and top_b["rho"] < 0 and top_b["rho_hi"] < 0


def test_frontier_file_from_the_sweep_is_said_in_plain_words(results_dir, tmp_path):
    d = tmp_path / "r"
    shutil.copytree(results_dir, d)
    setting = [{"param": "ftx.blp.hedge_latency_s", "value": 45.0, "default": 5.0, "distance": 0.68,
                "direction": "up"},
               {"param": "ftx.blp.hedge_ratio", "value": 0.98, "default": 1.0, "distance": 0.02,
                "direction": "down"}]
    front = {"samples": 24, "max_usd": 1.3e9, "targets": [
        {"target_usd": 1e9, "reached_by": 2, "share": 0.08,
         "nearest_sample": {"sample": 3, "ftx_2022_usd": 1.1e9, "distance": 0.68, "u": [0.7, 0.98],
                            "setting": setting}},
        {"target_usd": 8e9, "reached_by": 0, "share": 0.0}]}
    (d / "frontier.json").write_text(json.dumps(front))
    page = R.render(load(d))
    assert ("FTX&#39;s house loses $1.00B in 2022 only if ftx.blp.hedge_latency_s is 45 (default 5, 68% of its "
            "range up)") in page
    assert "hedge_ratio is" not in page        # a parameter that hardly moves is not named
    assert "No sampled setting makes FTX&#39;s house lose $8.00B" in page


def test_a_sweep_without_losses_says_so_in_one_line(results_dir, tmp_path):
    d = tmp_path / "zero"
    shutil.copytree(results_dir, d)
    sw = pd.read_parquet(d / "sweep.parquet")
    sw["house_loss_usd"] = 0.0
    sw.to_parquet(d / "sweep.parquet", index=False)
    page = R.render(load(d))
    assert "no distribution to draw" in page and "no parameter to rank" in page
    ids = _figure_ids(page)
    assert "fig-sweep-dist" not in ids and "fig-sensitivity" not in ids
