"""FTX size terms at one real account's size (MODEL.md 2): a simulated account of weight w is w
identical real accounts, so the IMF size term (and MMF, ACMF), the collateral haircut and
steps 1 and 2's minimum order are evaluated at qty / w, balance / w."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.population import Population
from backtest.reference import reference_ftx
from backtest.replay import PathInput, run_ftx
from tests.backtest._synth import DATE, crash_bars, setup, with_path
from tests.backtest.test_reference_parity import assert_same

# size terms that bite: a large position imfFactor and BTC collateral with a size haircut
BITE = {"ftx.imf_factor.BTC-PERP": 0.02, "population.leverage_scale": 2.0,
        "population.ftx_collateral_share.USD": 0.4, "population.ftx_collateral_share.BTC": 0.6,
        "population.ftx_collateral_share.ETH": 0.0, "population.ftx_collateral_share.FTT": 0.0,
        "population.ftx_collateral_share.SOL": 0.0}


@pytest.mark.parametrize("path, seed", [("linear", None), ("linear", 3), ("bridge", None), ("bridge", 4)])
def test_parity_with_random_weights(path, seed):
    params, pop, inp, sym = setup("ftx", 200, {**BITE, "ftx.blp.capacity_per_minute_usd": 300000.0}, path=path)
    pop.weight = np.random.default_rng(11).uniform(1.0, 300.0, len(pop))
    fast = run_ftx(inp, pop, params, symbol=sym, date=DATE, seed=seed)
    ref = reference_ftx(inp, pop, params, symbol=sym, date=DATE, seed=seed)
    assert_same(fast, ref, min_events=10)
    # the weights matter: the same book read as single real accounts liquidates differently
    pop.weight = np.ones(len(pop))
    one = run_ftx(inp, pop, params, symbol=sym, date=DATE, seed=seed)
    assert one.totals["liquidated_usd"] != pytest.approx(fast.totals["liquidated_usd"], rel=1e-6)


def _replicated(pop: Population, reps: np.ndarray) -> tuple[Population, np.ndarray]:
    """Each account i as reps[i] identical accounts of 1/reps[i] its size, weight 1."""
    idx = np.repeat(np.arange(len(pop)), reps)
    r = reps[idx].astype(float)
    out = Population(side=pop.side[idx], qty_coin=pop.qty_coin[idx] / r, entry_price=pop.entry_price[idx],
                     leverage=pop.leverage[idx], wallet_usd=pop.wallet_usd[idx] / r,
                     collateral={c: b[idx] / r for c, b in pop.collateral.items()}, isolated=pop.isolated[idx],
                     exempt=pop.exempt[idx],
                     account_leverage=None if pop.account_leverage is None else pop.account_leverage[idx],
                     venue=pop.venue, symbol=pop.symbol, date=pop.date, start_price=pop.start_price,
                     collateral_prices=dict(pop.collateral_prices), open_s=pop.open_s[idx], close_s=pop.close_s[idx])
    return out, idx


@pytest.mark.parametrize("path", ["linear", "bridge"])
def test_one_account_of_weight_w_is_w_accounts_of_a_wth_the_size(path):
    """Same coins at the same ticks: every step-1 order, takeover and close-out of an account of
    weight w is the sum of those of its w copies (deterministic mode; budget and BLP capacity
    out of the way, so the copies do not compete with each other for them; no price impact, which
    is concave in an order's size and so rightly sees the copies' orders as one order)."""
    over = {**BITE, "ftx.blp.capacity_per_minute_usd": 1e13, "ftx.blp.capacity_per_hour_usd": 1e14,
            "execution.eta.ftx": 0.0, "execution.eta.binance": 0.0}
    bars = crash_bars(crash=-0.02)
    i = len(bars) // 4 + 2                  # a gap down: accounts straight into step 2
    bars.loc[i, "open"] = bars.loc[i - 1, "close"] * 0.94
    bars.loc[i, "low"] = min(bars.loc[i, "low"], bars.loc[i, "open"])
    bars.loc[i, "high"] = max(bars.loc[i, "high"], bars.loc[i, "open"])
    params, pop, _, sym = setup("ftx", 40, over, bars=bars)
    inp = with_path(PathInput.from_bars(bars, 60, tick_s=1.0, sigma_1m=0.002, adv_usd=1e15), params, path)
    reps = np.random.default_rng(5).integers(1, 6, len(pop))
    pop.weight = reps.astype(float)
    weighted = run_ftx(inp, pop, params, symbol=sym, date=DATE, deterministic=True)
    many, idx = _replicated(pop, reps)
    copies = run_ftx(inp, many, params, symbol=sym, date=DATE, deterministic=True)
    ev_w, ev_c = weighted.events, copies.events.assign(account=idx[copies.events.account.to_numpy()])
    assert len(ev_w) >= 10 and {"step1", "step2_blp"} <= set(ev_w.mechanism)
    keys = ["t_s", "account", "mechanism"]
    cols = ["qty_coin", "notional_usd", "user_loss_usd", "fund_delta_usd"]
    a = ev_w.groupby(keys)[cols].sum().sort_index()
    b = ev_c.groupby(keys)[cols].sum().sort_index()
    pd.testing.assert_index_equal(a.index, b.index)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-6)
    fq = np.bincount(idx, weights=copies.final_qty, minlength=len(pop))
    np.testing.assert_allclose(weighted.final_qty, fq, rtol=1e-9, atol=1e-12)
    for k in ("liquidated_usd", "liquidated_step1_usd", "liquidated_step2_blp_usd", "blp_takeover_usd",
              "blp_pnl_usd", "fund_end_usd", "user_loss_usd"):
        assert weighted.totals[k] == pytest.approx(copies.totals[k], rel=1e-9, abs=1e-6), k
    # without the weight the big accounts' size terms differ: another outcome
    pop.weight = np.ones(len(pop))
    naive = run_ftx(inp, pop, params, symbol=sym, date=DATE, deterministic=True)
    assert naive.totals["liquidated_usd"] != pytest.approx(weighted.totals["liquidated_usd"], rel=1e-6)
