"""What `liqreplay calibrate` fits and its options (no pandas, numba or scipy: the command's
parser reads the defaults here, so `liqreplay --help` stays light). The fit is backtest/calibrate.py."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CALIBRATION_CSV", "FIT_KEYS", "FTX_FIT_KEYS", "CalibrateOptions"]

# stage 1: parameters both venues share (only those present in params.toml with a range are fitted)
FIT_KEYS = (
    "population.leverage_low_share", "population.leverage_scale", "population.holding_days",
    "population.holding_tail_ratio", "population.notional_sigma", "population.real_accounts_per_market.BTC",
    "population.real_accounts_per_market.ETH", "population.binance_isolated_share",
    "population.binance_legacy_share", "disclosure.bandwidth_real_orders", "population.cohort_hours",
)
# stage 2: FTX's own parameters
FTX_FIT_KEYS = ("ftx.oi_ratio_to_binance.BTC", "ftx.oi_ratio_to_binance.ETH", "population.ftx_collateral_share.USD")
CALIBRATION_CSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "calibration.csv"


@dataclass
class CalibrateOptions:
    out: Path = Path("results/calibration")
    params_path: str | None = None
    params_out: str | None = None        # None: write into the parameter file read (backtest/params.toml)
    write_params: bool = True
    oct25_out: str | None = "backtest/scenarios/oct25.toml"
    accounts: int = 100000               # the run's default (population.n_accounts): fit at the N results are shown at
    seed: int = 20221108
    method: str = "powell"
    max_evals: int = 160                 # Powell: about one pass of line searches over the 11 keys
    ftx_evals: int = 24
    long_share_weight: float = 1.0       # + the monthly long-share MAE (issue 8's one-sidedness target)
    keys: tuple[str, ...] = FIT_KEYS
    ftx_keys: tuple[str, ...] = FTX_FIT_KEYS
    year_window: str = "2022-year"
    book: str = "run"                    # "run": run_series as it is; "v2": build_population + disclosure
    progress: bool = True
    calibration_csv: Path = CALIBRATION_CSV
