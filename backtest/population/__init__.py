"""Account populations (MODEL.md 2).

- `Population`: accounts as parallel arrays (accounts.py);
- `make_population`: v1, one static book drawn at the window start (kept for tests and parity
  fixtures);
- `build_population(sd, params, seed, n_accounts)`: v2, the cohort book driven by the lake's
  open-interest path with its warm-up (book.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from backtest import rng as R
from backtest.params import Params
from backtest.population.accounts import (  # noqa: F401
    NEVER,
    OPEN_ALWAYS,
    VENUES,
    Population,
    _balance_for_value,
    account_terms,
    make_population,
)
from backtest.population.book import BookBars, book_start_s, build_book, density_accounts, model_oi_coin  # noqa: F401

__all__ = ["Population", "make_population", "build_population", "model_oi_coin", "OPEN_ALWAYS", "NEVER",
           "oi_path_arrays", "expected_liquidations", "per_real_account"]


def _epoch_s(ts) -> np.ndarray:
    t = pd.to_datetime(ts, utc=True)
    return ((t - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy().astype(np.int64)


def oi_path_arrays(sd, params: Params) -> tuple[np.ndarray, np.ndarray, str]:
    """(as_of epoch seconds, OI in coins, source) of a series: the lake's path, scaled by
    `sd.oi_scale_key` (FTX on Binance's path: ftx.oi_ratio_to_binance.<COIN>) where set."""
    path = getattr(sd, "oi_path", None)
    if path is None or len(path) == 0:
        raise ValueError(f"window {sd.window.id}, venue {sd.venue}, market {sd.coin}: no open-interest path "
                         f"in the lake for the v2 book (import Coinalyze OI: `liqreplay import`)")
    scale = 1.0
    src = getattr(sd, "oi_path_source", "") or sd.oi_source
    key = getattr(sd, "oi_scale_key", None)
    if key:
        scale = float(params.get(key))
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"{key} must be > 0")
        src = f"{src} x {key} = {scale:g}"
    return _epoch_s(path["as_of"]), path["oi_coin"].to_numpy(float) * scale, src


def build_population(sd, params: Params, seed: int, n_accounts: int | None = None, *,
                     collateral_prices: dict[str, float] | None = None) -> Population:
    """The v2 book of one loaded series (backtest.series_loader.SeriesData): cohorts opened from
    the lake's OI path every `population.cohort_hours` over `population.warmup_days` before
    the window and through it (book.py). n_accounts (default `population.n_accounts`): the
    expected number of simulated accounts in the book (a Binance book longer than
    `population.accounts_reference_days` gets proportionally more: book.density_accounts);
    each stands for `weight` real ones.
    Draws are keyed by (seed, venue, market, window, account), so a book is reproducible."""
    n = int(params.population.n_accounts if n_accounts is None else n_accounts)
    asof, oi, src = oi_path_arrays(sd, params)
    frames = []
    wb = getattr(sd, "warmup_bars", None)
    if wb is not None and len(wb):
        frames.append((wb, int(sd.warmup_bar_seconds)))
    frames.append((sd.bars, int(sd.bar_seconds)))
    bars = BookBars.from_frames(frames)
    lsp = getattr(sd, "long_share_path", None)
    ls_asof = ls_val = None
    if lsp is not None and len(lsp):
        ls_asof, ls_val = _epoch_s(lsp["as_of"]), lsp["long_account_share"].to_numpy(float)
    key = R.series_key(seed, R.POPULATION, sd.window.id, sd.venue, sd.coin)
    start_s = int(_epoch_s([sd.window.start])[0])
    end_s = int(_epoch_s([sd.window.end])[0])
    first_oi = int(asof[np.isfinite(oi) & (oi > 0)].min()) if np.any(np.isfinite(oi) & (oi > 0)) else start_s
    book_from = book_start_s(start_s, params.population.warmup_days, first_oi, int(bars.ts_s[0] + bars.dur_s[0]))
    n = density_accounts(sd.venue, n, (end_s - book_from) / 86400.0, params)
    pop = build_book(sd.venue, sd.symbol, sd.coin, bars, oi_asof_s=asof, oi_coin=oi, window_start_s=start_s,
                     window_end_s=end_s, params=params, key=key, n_accounts=n,
                     collateral_prices=collateral_prices, long_share_asof_s=ls_asof, long_share=ls_val,
                     oi_source=src)
    return pop


def expected_liquidations(pop: Population, start_s: int | None = None) -> pd.DataFrame:
    """The book's own expected liquidations (its bookkeeping: the first crossing of each
    account's trigger on the bars' linear path, before its close): t_s, account, side,
    notional_usd (qty x trigger), weight. A fast proxy of the replay's liquidations (no
    engine: no partial liquidations, funding or FTX steps), e.g. for calibration."""
    liq = pop.meta.get("expected_liq_s")
    if liq is None:
        raise ValueError("not a v2 book: no expected liquidations")
    ok = liq < NEVER
    if start_s is not None:
        ok &= liq >= int(start_s)
    idx = np.nonzero(ok)[0]
    out = pd.DataFrame({"t_s": liq[idx], "account": idx, "side": pop.side[idx].astype(np.int64),
                        "notional_usd": pop.qty_coin[idx] * pop.meta["trigger"][idx], "weight": pop.weight[idx]})
    return out.sort_values(["t_s", "account"]).reset_index(drop=True)


def per_real_account(pop: Population) -> Population:
    """The book at the size of one real account: qty, wallet and collateral divided by weight
    (the exempt account kept whole). Binance brackets, leverage caps and FTX's size IMF and
    collateral haircut depend on position size, so an engine must evaluate them at this size
    (the book's triggers are); multiply each resulting notional by the account's weight."""
    w = np.where(pop.exempt, 1.0, np.maximum(pop.weight, 1e-12))
    return Population(side=pop.side, qty_coin=pop.qty_coin / w, entry_price=pop.entry_price, leverage=pop.leverage,
                      wallet_usd=pop.wallet_usd / w, collateral={c: b / w for c, b in pop.collateral.items()},
                      isolated=pop.isolated, exempt=pop.exempt, account_leverage=pop.account_leverage,
                      venue=pop.venue, symbol=pop.symbol, date=pop.date, start_price=pop.start_price,
                      collateral_prices=dict(pop.collateral_prices), meta=dict(pop.meta, per_real_account=True),
                      open_s=pop.open_s, close_s=pop.close_s, weight=pop.weight, cohort=pop.cohort,
                      count_weight=pop.count_weight)
