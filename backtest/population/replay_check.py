"""Measurement aid (not part of a run): the Binance replay on a v2 book, one cohort at a time.

Until the replay honours open_s / close_s itself, this runs `backtest.replay.binance.run_binance`
per cohort on the bars from the cohort's open (or the window start) to its last close, at one
real account's size (per_real_account: brackets and caps at the real size), drops events at or
after an account's close_s, scales notional by its weight and applies the disclosure on the
real account count. Funding, the fund and ADL are per cohort, so only liquidated notional is
meaningful here. Import it explicitly (the population package does not, to keep the replay ->
population import one way).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from backtest.disclosure import reported_for_params
from backtest.params import Params
from backtest.population import Population, per_real_account


def replay_book_cohorts(sd, pop: Population, params: Params) -> pd.DataFrame:
    """Events of the Binance replay on `pop` (a v2 book of `sd`): t_s, side, mechanism,
    notional_usd (x weight), weight, reported_usd."""
    from backtest.replay.binance import run_binance
    from backtest.replay.inputs import PathInput

    bars = sd.bars.reset_index(drop=True)
    ts_s = ((pd.to_datetime(bars["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy()
    start_s = int(ts_s[0])
    real = per_real_account(pop)
    out = []
    for c in np.unique(pop.cohort[pop.cohort >= 0]):
        idx = np.nonzero(pop.cohort == c)[0]
        o = max(int(pop.open_s[idx].min()), start_s)
        e = int(min(pop.close_s[idx].max(), ts_s[-1] + sd.bar_seconds))
        b0, b1 = np.searchsorted(ts_s, o), np.searchsorted(ts_s, e, side="right")
        if b1 <= b0:
            continue
        sub = Population(side=real.side[idx], qty_coin=real.qty_coin[idx], entry_price=real.entry_price[idx],
                         leverage=real.leverage[idx], wallet_usd=real.wallet_usd[idx], collateral={},
                         isolated=real.isolated[idx], exempt=real.exempt[idx],
                         account_leverage=real.account_leverage[idx], venue="binance", symbol=sd.symbol)
        inp = PathInput.from_bars(bars.iloc[b0:b1].reset_index(drop=True), sd.bar_seconds, tick_s=1.0,
                                  sigma_1m=sd.sigma_1m, adv_usd=sd.adv_usd)
        ev = run_binance(inp, sub, params, symbol=sd.symbol, date=pd.Timestamp(o, unit="s").date()).events
        if len(ev) == 0:
            continue
        acc = ev["account"].to_numpy()
        keep = (ev["t_s"].to_numpy() < pop.close_s[idx][acc]) & (ev["mechanism"].to_numpy() != "adl")
        w = pop.weight[idx][acc[keep]]
        out.append(pd.DataFrame({"t_s": ev["t_s"].to_numpy()[keep], "side": ev["side"].to_numpy()[keep],
                                 "mechanism": ev["mechanism"].to_numpy()[keep],
                                 "notional_usd": ev["notional_usd"].to_numpy()[keep] * w, "weight": w,
                                 "count_weight": pop.count_weight[idx][acc[keep]]}))
    if not out:
        return pd.DataFrame(columns=["t_s", "side", "mechanism", "notional_usd", "weight", "count_weight",
                                     "reported_usd"])
    ev = pd.concat(out, ignore_index=True).sort_values("t_s").reset_index(drop=True)
    ev["reported_usd"] = reported_for_params(ev["t_s"].to_numpy(float), ev["notional_usd"].to_numpy(),
                                             ev["count_weight"].to_numpy(), ev["side"].to_numpy(), params)
    return ev
