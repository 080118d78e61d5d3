"""Fixtures of the backtest tests."""
from __future__ import annotations

import csv
import shutil

import pytest

from backtest.console import main

FILES = (
    "binance_freqtrade_MoonEyes/binance_usdm_BTCUSDT_1h.parquet",
    "coinalyze_binance_daily_hmb2662/binance_usdm_open_interest_1d_coinalyze.parquet",
    "binance_um_funding_pierre-cheneau/binance_um_funding_rates_2021H2_2023Jan.parquet",
)


@pytest.fixture(scope="session")
def small_lake(shared_data, tmp_path_factory):
    """A lake with Binance BTCUSDT perp 1h, Coinalyze OI and funding (no FTX bars at all)."""
    src = tmp_path_factory.mktemp("seed")
    with open(shared_data / "datasets.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["file"] in FILES]
    assert len(rows) == len(FILES)
    for r in rows:
        dst = src / r["file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / r["file"], dst)   # a tmp copy (the importer refuses links out of DIR)
    with open(src / "datasets.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lake = tmp_path_factory.mktemp("lake")
    assert main(["import", str(src), "--lake", str(lake), "--no-progress"]) == 0
    return lake
