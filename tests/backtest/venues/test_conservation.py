"""Money conservation: a randomized population liquidated through both engines.

A small driver keeps explicit balance sheets (cash, signed position, coin balances) for every
party: the accounts, the BLP, the insurance fund and "the market" (order-book counterparties
and the venue's fee account). Every event moves cash and positions from the engines' outputs
only; the test then checks on EVERY event that
- each party's change of real wealth at the mark equals what the engine reports for it
  (user loss, fund delta, BLP discount, ADL / overflow counterparties, market impact + fees);
- the changes sum to zero (money is neither created nor destroyed);
- a fully closed account ends with nothing (its equity went to zero);
and at the end that total cash, positions and coins are unchanged.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from backtest import execution as ex
from backtest.params import load_params
from backtest.population import make_population
from backtest.venues import binance, ftx

D = dt.date(2022, 6, 13)
P0 = 22_000.0
FTT = 25.0
TOL = 1e-6


def crash_path(n=240, seed=3, gap_at=150):
    """22,000 -> about 15,500 with a 9% gap at tick `gap_at`, then a bounce."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(-0.0015, 0.004, n)
    steps[gap_at] = -0.09
    steps[200:] = np.abs(steps[200:]) + 0.002
    return P0 * np.exp(np.cumsum(steps))


def bars():
    rng = np.random.default_rng(11)
    return pd.DataFrame({"close": np.linspace(26_000, 21_000, 300), "volume_quote": rng.uniform(1e6, 5e6, 300)})


class Book:
    """Balance sheets. Parties: accounts 0..n-1, then BLP, FUND, MARKET."""

    def __init__(self, n, coins):
        self.n = n
        self.BLP, self.FUND, self.MARKET = n, n + 1, n + 2
        self.cash = np.zeros(n + 3)
        self.pos = np.zeros(n + 3)
        self.coins = {c: np.zeros(n + 3) for c in coins}

    def wealth(self, mark, prices):
        w = self.cash + self.pos * mark
        for c, b in self.coins.items():
            w = w + b * prices[c]
        return w

    def trade(self, who, signed_qty, price):
        """`who` buys signed_qty (sells if < 0) at price."""
        self.pos[who] += signed_qty
        self.cash[who] -= signed_qty * price

    def pay(self, frm, to, usd):
        self.cash[frm] -= usd
        self.cash[to] += usd


def _check(before, after, expected: dict[int, float]):
    """Every party's wealth change equals `expected` (others unchanged) and they sum to 0."""
    delta = after - before
    exp = np.zeros_like(delta)
    for who, v in expected.items():
        exp[who] += v
    scale = max(1.0, float(np.abs(before).max()) * 1e-12)
    assert np.allclose(delta, exp, atol=TOL * scale + 1e-6), (delta[np.abs(delta - exp) > 1e-6], expected)
    assert abs(delta.sum()) < TOL * scale + 1e-6


def test_ftx_engine_conserves_money_on_every_event():
    params = load_params(overrides={
        "population.n_accounts": 300, "population.leverage_scale": 1.6,
        "population.exempt_account": True, "population.exempt_notional_share": 0.05,
        "ftx.blp.capacity_per_minute_usd": 2e6, "ftx.blp.capacity_per_hour_usd": 2e7,
        "ftx.negative_equity_blp_share": 0.5})
    rng = np.random.default_rng(5)
    pop = make_population("ftx", "BTC-PERP", oi_usd=5e7, entry_bars=bars(), date=D, params=params, rng=rng,
                          start_price=P0, collateral_prices={"FTT": FTT, "ETH": 1_200.0, "SOL": 30.0})
    n = len(pop)
    prices = {"BTC": P0, "FTT": FTT, "ETH": 1_200.0, "SOL": 30.0}
    book = Book(n, pop.collateral.keys())
    book.cash[:n] = pop.wallet_usd
    # positions opened at entry against the market, then marked; make the market flat overall
    for i in range(n):
        book.trade(i, pop.side[i] * pop.qty_coin[i], pop.entry_price[i])
    book.trade(book.MARKET, -book.pos[:n].sum(), P0)
    for c, b in pop.collateral.items():
        book.coins[c][:n] = b
    start_cash, start_coins = book.cash.sum(), {c: b.sum() for c, b in book.coins.items()}
    fac = ftx.imf_factor_for("BTC-PERP", params)
    weights = {c: ftx.collateral_weights(c, params) for c in pop.collateral}
    fund = float(params.get("ftx.insurance_fund_start_usd"))
    book.cash[book.FUND] = fund
    start_cash += fund
    hedges = []  # (due tick, signed qty the BLP must trade)
    latency = 3
    used_min = used_hour = 0.0
    events = {"step1": 0, "step2": 0, "overflow": 0, "full_close": 0, "hedge": 0, "sale": 0, "negative": 0}
    path = crash_path()
    for t, m in enumerate(path):
        prices["BTC"] = m
        prices["FTT"] = FTT * (m / P0) ** 2  # FTT falls faster than BTC
        if t % 60 == 0:
            used_min = 0.0
        qty = np.abs(book.pos[:n])
        side = np.sign(book.pos[:n]).astype(int)
        active = (qty > 1e-12) & ~pop.exempt
        coll = np.zeros(n)
        for c, b in book.coins.items():
            w, _, f = weights[c]
            coll += np.asarray(ftx.collateral_value(b[:n], prices[c], w, f), float)
        usd = book.cash[:n]
        tav = usd + coll + book.pos[:n] * m
        with np.errstate(divide="ignore", invalid="ignore"):
            mf = np.where(qty > 0, tav / (qty * m), np.inf)
        imf, mmf, acmf = ftx.margin_thresholds(pop.account_leverage, fac, qty, params=params)
        st = np.where(active, ftx.state(mf, imf, mmf, acmf), ftx.NORMAL)
        # ---- step 1
        idx = np.flatnonzero(st == ftx.STEP1)
        if idx.size:
            q1, _ = ftx.step1_order_qty(qty[idx], m, ftx.step1_budget_usd(5e8, params), params, rng=rng)
            for i, q in zip(idx, q1, strict=True):
                if q <= 0:
                    continue
                slip = ex.sqrt_impact(q * m, 2e6, 0.002, 1.0)
                fill = ftx.step1_fill_price(side[i], m, slip, params=params, rng=rng)
                out = ftx.step1_outcome(side[i], q, m, fill, 0.0007)
                before = book.wealth(m, prices)
                book.trade(i, -side[i] * q, fill)
                book.trade(book.MARKET, side[i] * q, fill)
                book.pay(i, book.MARKET, out["fee_usd"])
                _check(before, book.wealth(m, prices),
                       {i: out["user_pnl_usd"], book.MARKET: out["market_usd"] + out["fee_usd"]})
                events["step1"] += 1
        # ---- step 2
        idx = np.flatnonzero((st == ftx.STEP2) | (st == ftx.CLOSE_ALL))
        for i in idx:
            q_i = abs(book.pos[i])
            out = ftx.step2_takeover(side[i], q_i, m, mf[i], acmf[i], tav[i], params)
            cq, zp, bp = out["close_qty"][0], out["zero_price"][0], out["blp_price"][0]
            if cq <= 0:
                continue
            before = book.wealth(m, prices)
            s = side[i]
            book.trade(i, -s * cq, zp)                       # the account closes at ZP
            taken, over = ftx.blp_take(cq * m, used_min, used_hour, params)
            used_min += taken
            used_hour += taken
            q_blp = cq * taken / (cq * m)
            q_over = cq - q_blp
            book.trade(book.BLP, s * q_blp, bp)              # the BLP takes its part at the BLP price
            expected = {i: -out["user_loss_usd"][0], book.FUND: out["fund_delta_usd"][0],
                        book.BLP: out["blp_discount_usd"][0] * q_blp / cq}
            if q_over > 0:
                opp = np.where((side == -s) & active & (np.arange(n) != i), np.abs(book.pos[:n]), 0.0)
                alloc = ftx.overflow_allocate(opp, q_over, int(params.get("ftx.overflow_top_n")))
                assert alloc.sum() == pytest.approx(q_over)
                assert np.count_nonzero(alloc) <= 10 or opp[alloc > 0].sum() <= q_over * (1 + 1e-9)
                cp_gain = 0.0
                for j in np.flatnonzero(alloc):
                    book.trade(j, s * alloc[j], bp)          # counterparty close-out at the same price
                    expected[j] = expected.get(j, 0.0) + s * alloc[j] * (m - bp)
                    cp_gain += s * alloc[j] * (m - bp)
                # the counterparties get the BLP's discount on the overflow part
                assert cp_gain == pytest.approx(out["blp_discount_usd"][0] * q_over / cq, rel=1e-9, abs=1e-9)
                events["overflow"] += 1
            # the account received side*cq*ZP, the BLP and counterparties paid side*cq*BLP price:
            # the difference is the fund's share (1/3 E in, or its part of a deficit out)
            assert s * cq * (bp - zp) == pytest.approx(out["fund_delta_usd"][0], rel=1e-9, abs=1e-9)
            book.cash[book.FUND] += out["fund_delta_usd"][0]
            # collateral passes to the BLP with the position
            cf = out["close_fraction"][0]
            for c in book.coins:
                bal = book.coins[c][i]
                if bal == 0:
                    continue
                w, _, f = weights[c]
                eff = ftx.effective_weight(bal, w, f)
                tr = ftx.collateral_transfer(bal, prices[c], eff, cf)
                book.coins[c][i] -= tr["coin_qty"]
                book.coins[c][book.BLP] += tr["coin_qty"]
                book.pay(book.BLP, i, tr["blp_pays_usd"])
                expected[i] -= tr["user_loss_usd"]
                expected[book.BLP] += tr["blp_gain_usd"]
            _check(before, book.wealth(m, prices), expected)
            events["step2"] += 1
            events["negative"] += int(mf[i] < 0)
            if cf >= 1.0:
                events["full_close"] += 1
                assert abs(book.pos[i]) < 1e-12 and all(abs(b[i]) < 1e-9 for b in book.coins.values())
                assert abs(book.cash[i]) < 1e-6 * max(1.0, q_i * m)  # equity went to zero
            if q_blp > 0:
                hedges.append((t + latency, -s * q_blp))
        # ---- BLP hedges due now, and collateral sales
        for _due, hq in [h for h in hedges if h[0] == t]:
            slip = ex.sqrt_impact(abs(hq) * m, 2e6, 0.002, 1.0)
            b = ex.fill_breakdown(int(np.sign(hq)), abs(hq), m, slip, 0.0004)
            before = book.wealth(m, prices)
            book.trade(book.BLP, hq, b["exec_price"])
            book.trade(book.MARKET, -hq, b["exec_price"])
            book.pay(book.BLP, book.MARKET, b["fee_usd"])
            _check(before, book.wealth(m, prices), {book.BLP: -(b["impact_usd"] + b["fee_usd"]),
                                                    book.MARKET: b["impact_usd"] + b["fee_usd"]})
            events["hedge"] += 1
        for c in book.coins:
            q = book.coins[c][book.BLP]
            if q > 0:
                s_ = ex.collateral_sale(q, prices[c], 1e6, 0.003, 1.0, 1.0, 0.0007)
                before = book.wealth(m, prices)
                book.coins[c][book.BLP] -= q
                book.coins[c][book.MARKET] += q
                book.pay(book.MARKET, book.BLP, s_["proceeds_usd"])
                _check(before, book.wealth(m, prices), {book.BLP: -(s_["impact_usd"] + s_["fee_usd"]),
                                                        book.MARKET: s_["impact_usd"] + s_["fee_usd"]})
                events["sale"] += 1
    # the randomized run exercised every mechanism
    assert events["step1"] > 5 and events["step2"] > 5 and events["full_close"] > 0
    assert events["overflow"] > 0 and events["hedge"] > 0 and events["sale"] > 0 and events["negative"] > 0
    # global: nothing created or destroyed
    assert book.cash.sum() == pytest.approx(start_cash, rel=1e-12, abs=1e-3)
    assert abs(book.pos.sum()) < 1e-9
    for c, b in book.coins.items():
        assert b.sum() == pytest.approx(start_coins[c], rel=1e-12)
    # the exempt account is never touched and may be under water
    ex_i = int(np.flatnonzero(pop.exempt)[0])
    assert book.pos[ex_i] == pytest.approx(pop.side[ex_i] * pop.qty_coin[ex_i])


def test_binance_engine_conserves_money_on_every_event():
    params = load_params(overrides={"population.n_accounts": 300, "population.leverage_scale": 1.8})
    rng = np.random.default_rng(9)
    pop = make_population("binance", "BTCUSDT", oi_usd=5e7, entry_bars=bars(), date=D, params=params,
                          rng=rng, start_price=P0)
    n = len(pop)
    br = binance.brackets_for("BTCUSDT", D, params)
    book = Book(n, [])
    book.cash[:n] = pop.wallet_usd
    for i in range(n):
        book.trade(i, pop.side[i] * pop.qty_coin[i], pop.entry_price[i])
    book.trade(book.MARKET, -book.pos[:n].sum(), P0)
    fund = 500.0  # small: the early gap must exhaust it and trigger ADL
    book.cash[book.FUND] = fund
    start_cash = book.cash.sum()
    entry = pop.entry_price.copy()
    wallet = pop.wallet_usd.copy()
    fee_rate = float(params.get("binance.liq_fee_rate"))
    ts, counts = [], {"liq": 0, "adl": 0, "deficit": 0}
    for t, m in enumerate(crash_path(gap_at=3)):
        qty = np.abs(book.pos[:n])
        side = np.where(book.pos[:n] >= 0, 1, -1)
        live = qty > 1e-12
        liq = np.zeros(n, dtype=bool)
        liq[live] = binance.is_liquidatable(side[live], qty[live], entry[live], wallet[live], m, br)
        for i in np.flatnonzero(liq):
            q = abs(book.pos[i])
            if q <= 1e-12:
                continue
            s = side[i]
            slip = ex.sqrt_impact(q * m, 2e6, 0.002, 1.0)
            fill = ex.fill_price(-s, m, slip, 0.0)
            out = binance.liquidation_outcome(s, q, entry[i], wallet[i], fill, fee_rate, mark=m,
                                              fund_balance_usd=book.cash[book.FUND])
            bp = out["bankruptcy_price"][0]
            q_mkt, q_adl = out["qty_market"][0], out["qty_adl"][0]
            before = book.wealth(m, {})
            book.trade(i, -s * q_mkt, fill)
            book.trade(book.MARKET, s * q_mkt, fill)
            expected = {i: -out["user_loss_usd"][0], book.FUND: out["fund_delta_usd"][0],
                        book.MARKET: out["market_usd"][0]}
            if q_adl > 0:
                opp = (side == -s) & live & ~liq
                upnl = -s * qty * (m - entry)
                mm = np.asarray(binance.maintenance_margin(qty * m, br), float)
                sc = np.where(opp, binance.adl_scores(upnl, wallet, mm), -1.0)
                alloc = binance.adl_allocate(sc, np.where(opp, qty, 0.0), q_adl)
                assert alloc.sum() == pytest.approx(q_adl)
                book.trade(i, -s * q_adl, bp)
                gain = 0.0
                for j in np.flatnonzero(alloc):
                    book.trade(j, s * alloc[j], bp)
                    expected[j] = s * alloc[j] * (m - bp)
                    gain += expected[j]
                    # the ADL'd account's remaining position keeps its wallet and entry
                    wallet[j] += -s * alloc[j] * (bp - entry[j])
                assert gain == pytest.approx(out["adl_counterparty_usd"][0])
                counts["adl"] += 1
            # the surplus above bankruptcy (or the deficit) moves between the user and the fund
            book.pay(i, book.FUND, out["fund_delta_usd"][0])
            _check(before, book.wealth(m, {}), expected)
            assert abs(book.cash[i]) < 1e-6 * max(1.0, q * m) and abs(book.pos[i]) < 1e-12  # user: nothing left
            assert book.cash[book.FUND] >= -1e-6  # ADL keeps the fund solvent
            counts["liq"] += 1
            counts["deficit"] += int(out["fund_delta_usd"][0] < 0)
            ts.append(t)
    assert counts["liq"] > 10 and counts["adl"] > 0 and counts["deficit"] > 0
    assert book.cash.sum() == pytest.approx(start_cash, rel=1e-12, abs=1e-3)
    assert abs(book.pos.sum()) < 1e-9
    rep = binance.reported_mask(np.array(ts))
    assert rep.sum() == len(set(ts)) < len(ts)
