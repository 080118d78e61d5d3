"""FTX replay: MMF triggers, step 1 / step 2 tick processing, BLP book and hedge, overflow (MODEL.md 3)."""
from __future__ import annotations

import numpy as np

from backtest import execution
from backtest.params import Params
from backtest.path import CollateralPath, first_cross, tick_prices
from backtest.population import Population
from backtest.replay.inputs import PathInput
from backtest.replay.recorder import Recorder, SeriesResult, _finish
from backtest.replay.triggers import TriggerBook
from backtest.venues import ftx


class FtxState:
    """FTX accounts: cross-margined, one position in this market; USD + same-coin collateral
    tracked exactly, other coins' weighted value folded into USD and revalued at each step of
    their price paths (`collateral`; without a path a coin keeps its window-start price)."""

    def __init__(self, pop: Population, inp: PathInput, params: Params, *, symbol: str, date,
                 rng: np.random.Generator | None, hedge: PathInput | None,
                 collateral: dict[str, CollateralPath] | None = None):
        self.p = params
        self.inp = inp
        self.hedge = hedge or inp
        self.rng = rng
        self.coin = ftx.coin_of(symbol)
        self.side = pop.side.astype(np.int64)
        self.qty = pop.qty_coin.astype(float).copy()
        self.entry = pop.entry_price.astype(float).copy()
        self.exempt = pop.exempt.astype(bool)
        n = len(self.qty)
        other = np.zeros(n)
        # other coins' collateral (MODEL.md 3.2): its weighted value is folded into `usd` and
        # revalued at each step of the coin's price path (revalue()); `ocoll` holds, per coin,
        # the balances, effective weights (fixed: they depend on the balance only), the value
        # currently folded in, the current price and the holders
        self.ocoll: dict[str, dict] = {}
        self.cpaths = {c: cp for c, cp in (collateral or {}).items() if c != self.coin}
        for c, bal in pop.collateral.items():
            if c == self.coin or c == "USD":
                continue
            w, _, f = ftx.collateral_weights(c, params)
            price = pop.collateral_prices.get(c)
            if price is None or not np.isfinite(price) or price <= 0:
                continue
            bal = np.asarray(bal, float).copy()
            w_eff = np.asarray(ftx.effective_weight(bal, w, f), float).reshape(-1) if n else np.zeros(0)
            val = bal * float(price) * w_eff
            other += val
            cp = self.cpaths.get(c)
            self.ocoll[c] = {"bal": bal, "w_eff": w_eff, "val": val, "price": float(price),
                             "volume": np.nan,     # before the first step: the market's bar volume
                             "holders": np.nonzero(bal != 0)[0]}
        self.usd = pop.wallet_usd.astype(float).copy() + other + \
            np.asarray(pop.collateral.get("USD", np.zeros(n)), float)
        # revaluation schedule: engine bar -> [(coin, step index)]
        sched: dict[int, list] = {}
        for c, cp in self.cpaths.items():
            if c not in self.ocoll:
                continue
            bars, steps = cp.steps_by_bar(inp.ts_s)
            for b_, i_ in zip(bars.tolist(), steps.tolist()):
                sched.setdefault(b_, []).append((c, i_))
        self.reval_bars = np.asarray(sorted(sched), np.int64)
        self._reval = sched
        self.revaluations = 0
        self.coin_bal = np.asarray(pop.collateral.get(self.coin, np.zeros(n)), float).copy()
        w, _, f = ftx.collateral_weights(self.coin, params)
        self.coin_w_eff = np.asarray(ftx.effective_weight(self.coin_bal, w, f), float).reshape(-1) \
            if n else np.zeros(0)
        lev_set = pop.account_leverage if pop.account_leverage is not None else pop.leverage
        self.lev_set = np.asarray(lev_set, float)
        self.imf_factor = ftx.imf_factor_for(symbol, params)
        self.mmf = np.zeros(n)
        self.acmf = np.zeros(n)
        if n:
            self._requalify(np.arange(n))
        self.changed_by_overflow: list = []
        self._pool = {1: None, -1: None}      # top opposing accounts per side (overflow)
        self.alive = self.qty > 0
        self.liquidated = np.zeros(n, dtype=bool)
        self.prob = float(params.get("ftx.step1.probability"))
        self.next_fire = -1
        self.in_step2 = False
        self.fund = float(params.get("ftx.insurance_fund_start_usd"))
        self.fund_start = self.fund
        self.fund_min = self.fund
        self.budget = ftx.step1_budget_usd(inp.adv_usd, params)
        self.eta = float(params.get("execution.eta.ftx"))
        self.fee = float(params.get("execution.taker_fee.ftx"))
        self.max_slip = float(params.get("execution.max_slippage"))
        self.top_n = int(params.get("ftx.overflow_top_n"))
        self.cap_min = float(params.get("ftx.blp.capacity_per_minute_usd"))
        self.used_min, self.used_hour, self.cur_min, self.cur_hour = 0.0, 0.0, -1, -1
        # BLP lots
        self.lots: dict[str, list] = {k: [] for k in ("t_s", "side", "qty", "price", "mark")}
        self.blp_collateral_usd = 0.0
        self.blp_collateral_bar = np.zeros(inp.n_bars)
        self.blp_collateral_other_usd = 0.0
        self.counterparty_usd = 0.0
        self.takeover_usd = 0.0

    # other coins' collateral ------------------------------------------------------------
    def revalue(self, bar: int) -> np.ndarray:
        """Apply the collateral price steps that take effect at the start of `bar`: each
        holder's folded value moves to the new price (O(holders) per step). Returns the
        accounts whose USD-equivalent changed (their triggers must be recomputed)."""
        steps = self._reval.get(int(bar))
        if not steps:
            return np.zeros(0, np.int64)
        changed = []
        for c, i in steps:
            oc, cp = self.ocoll[c], self.cpaths[c]
            oc["price"] = float(cp.price[i])
            oc["volume"] = float(cp.volume_quote[i])
            h = oc["holders"]
            if h.size == 0:
                continue
            new = oc["bal"][h] * oc["price"] * oc["w_eff"][h]
            self.usd[h] += new - oc["val"][h]
            oc["val"][h] = new
            changed.append(h)
            self.revaluations += 1
        if not changed:
            return np.zeros(0, np.int64)
        if len(changed) == 1:
            return changed[0]                      # holders: sorted, unique (np.nonzero)
        m = np.zeros(len(self.qty), dtype=bool)    # union without a sort
        for h in changed:
            m[h] = True
        return np.nonzero(m)[0]

    def _transfer_other(self, bar: int, a: np.ndarray, cf: np.ndarray) -> None:
        """Step 2: the fraction `cf` of each other-coin balance passes to the BLP at the coin's
        current price with the USD debt that offsets its weighted value; the BLP sells it
        (execution.collateral_sale on the coin's own bar volume; the market's bar volume
        stands in where the coin has no price path) and books haircut - impact - fee."""
        for c, oc in self.ocoll.items():
            bal = oc["bal"][a]
            if not np.any(bal > 0):
                continue
            price = oc["price"]
            tr = ftx.collateral_transfer(np.maximum(bal, 0.0), price, oc["w_eff"][a], cf)
            oc["bal"][a] = bal - tr["coin_qty"]
            new = oc["bal"][a] * price * oc["w_eff"][a]
            self.usd[a] += tr["blp_pays_usd"] - (oc["val"][a] - new)
            oc["val"][a] = new
            cp = self.cpaths.get(c)
            if cp is not None:
                vol, sig, bm = oc["volume"], cp.sigma_1m, cp.bar_minutes
            else:
                vol, sig, bm = self.inp.volume_quote[bar], self.inp.sigma_1m, self.inp.bar_minutes
            if not np.isfinite(vol):
                vol = self.inp.volume_quote[bar]
            sale = execution.collateral_sale(tr["coin_qty"], price, vol, sig, self.eta, bm, self.fee,
                                             max_slippage=self.max_slip)
            gain = float(np.sum(tr["blp_gain_usd"] - sale["impact_usd"] - sale["fee_usd"]))
            self.blp_collateral_usd += gain
            self.blp_collateral_bar[bar] += gain
            self.blp_collateral_other_usd += gain

    # thresholds ----------------------------------------------------------------------
    def _requalify(self, idx):
        """Recompute MMF/ACMF of accounts whose size changed (IMF depends on the size)."""
        if idx.size == 0:
            return
        _, mmf, acmf = ftx.margin_thresholds(self.lev_set[idx], self.imf_factor, self.qty[idx], params=self.p)
        self.mmf[idx] = np.asarray(mmf, float).reshape(-1)
        self.acmf[idx] = np.asarray(acmf, float).reshape(-1)

    def thresholds(self, idx):
        return self.mmf[idx], self.acmf[idx]

    def trigger(self, idx) -> np.ndarray:
        """Mark at which MF == MMF (the step-1 entry)."""
        if idx.size == 0:
            return np.zeros(0)
        mmf, _ = self.thresholds(idx)
        live = self.qty[idx] > 0
        out = np.full(idx.size, np.nan)
        if live.any():
            out[live] = self.price_at_mf(idx[live], mmf[live])
        return out

    def price_at_mf(self, idx, target) -> np.ndarray:
        """Mark at which MF == target (ftx.price_at_margin_fraction; inline on the fast path,
        same operations in the same order)."""
        if self.oracle:
            return np.asarray(ftx.price_at_margin_fraction(
                self.side[idx], self.qty[idx], self.entry[idx], self.usd[idx], self.coin_bal[idx],
                self.coin_w_eff[idx], target), float).reshape(-1)
        s, q = self.side[idx], self.qty[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            num = s * q * self.entry[idx] - self.usd[idx]
            den = self.coin_bal[idx] * self.coin_w_eff[idx] + s * q - target * q
            m = num / den
        return np.where(np.isfinite(m) & (m > 0) & (q > 0), m, np.nan)

    def trig_dir(self, idx) -> np.ndarray:
        """Which way the price must move for the account's MF to fall: -1 down (MF rises
        with the price: a long, or a short whose same-coin collateral outweighs it with a
        USD debt), +1 up. MF(m) = (usd - side*q*entry)/(q*m) + const."""
        return np.where(self.usd[idx] - self.side[idx] * self.qty[idx] * self.entry[idx] < 0, -1, 1)

    def tav_mf(self, idx, price):
        """(TAV, MF) at `price`. The oracle asks the engine (ftx.account_tav_mf); the fast path
        evaluates the same expression inline (bit-identical: same operations in the same
        order; the parity tests hold the two together)."""
        cv = self.coin_bal[idx] * price * self.coin_w_eff[idx]
        if self.oracle:
            tav, mf = ftx.account_tav_mf(self.side[idx], self.qty[idx], self.entry[idx], price, self.usd[idx], cv)
            return np.asarray(tav, float).reshape(-1), np.asarray(mf, float).reshape(-1)
        q = self.qty[idx]
        tav = self.usd[idx] + cv + self.side[idx] * q * (price - self.entry[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            mf = np.where(q > 0, tav / (q * price), np.inf)
        return tav, mf

    def fires(self, j: int) -> bool:
        """Does the market's step-1 engine fire at absolute tick j? Deterministic mode: always
        (expected values). Otherwise a Bernoulli(ftx.step1.probability) clock per market,
        drawn as geometric gaps (memoryless, so a clock left behind is redrawn from j)."""
        if self.rng is None:
            return True
        if self.next_fire < j:
            self.next_fire = j + int(self.rng.geometric(self.prob)) - 1
        return self.next_fire == j

    def tick(self, rec: Recorder, bar: int, k: int, price: float, acc: np.ndarray) -> np.ndarray:
        """Apply the FTX state machine at one tick to `acc` (accounts with MF < MMF or about to
        be checked). Returns the accounts that are in step 1/2 after the tick (still active);
        `self.in_step2` says whether any of them is in step 2."""
        self.in_step2 = False
        if acc.size == 0:
            return acc
        inp = self.inp
        t_s = float(inp.tick_time_s(bar, k))
        tav, mf = self.tav_mf(acc, price)
        mmf, acmf = self.thresholds(acc)
        st = np.asarray(ftx.state(mf, np.full(acc.size, np.inf), mmf, acmf)).reshape(-1)
        s2 = acc[st >= ftx.STEP2]
        if s2.size:
            i2 = st >= ftx.STEP2
            self._step2(rec, bar, t_s, price, s2, mf[i2], acmf[i2], tav[i2])
        s1 = acc[st == ftx.STEP1]
        if s1.size and self.fires(bar * inp.n_ticks + k):
            self._step1(rec, bar, t_s, price, s1)
        # still in step 1/2?
        live = acc[self.qty[acc] > 0]
        if live.size == 0:
            return live
        _, mf2 = self.tav_mf(live, price)
        mmf2, acmf2 = self.thresholds(live)
        self.in_step2 = bool(np.any(mf2 < acmf2))
        return live[mf2 < mmf2]

    def quiet_until(self, acc: np.ndarray, prices: np.ndarray, k_from: int, k_to: int) -> int:
        """First tick in [k_from, k_to) at which an account of `acc` (all in step 1) may change
        state on price alone (recover above MMF or fall below ACMF); k_to if none."""
        if k_from >= k_to or acc.size == 0:
            return k_from
        up = self.price_at_mf(acc, self.mmf[acc])
        dn = self.price_at_mf(acc, self.acmf[acc])
        dirs = self.trig_dir(acc)
        lg, sh = dirs == -1, dirs == 1
        lo_hit, hi_hit = -np.inf, np.inf     # price <= lo_hit or >= hi_hit changes a state
        if lg.any():   # MF rises with price: recovers at price >= up, step 2 at price < dn
            hi_hit = min(hi_hit, float(np.nan_to_num(up[lg], nan=np.inf).min()))
            lo_hit = max(lo_hit, float(np.nan_to_num(dn[lg], nan=-np.inf).max()))
        if sh.any():   # MF falls with price: recovers at price <= up, step 2 at price > dn
            lo_hit = max(lo_hit, float(np.nan_to_num(up[sh], nan=-np.inf).max()))
            hi_hit = min(hi_hit, float(np.nan_to_num(dn[sh], nan=np.inf).min()))
        k = k_from
        while k < k_to:                       # scan in chunks: the stop is usually near
            e = min(k_to, k + 2048)
            seg = prices[k:e]
            hit = (seg <= lo_hit) | (seg >= hi_hit)
            if hit.any():
                return k + int(np.argmax(hit))
            k = e
        return k_to

    def _step1(self, rec, bar, t_s, price, acc):
        q, _left = ftx.step1_order_qty(self.qty[acc], price, self.budget, self.p,
                                       rng=None if self.rng is None else _Fired(self.rng))
        q = np.asarray(q, float)
        m = q > 0
        if not m.any():
            return
        a, q = acc[m], q[m]
        s = self.side[a]
        slip = np.asarray(execution.sqrt_impact(q * price, self.inp.volume_quote[bar], self.inp.sigma_1m, self.eta,
                                                self.inp.bar_minutes, max_slippage=self.max_slip), float)
        fill = np.asarray(ftx.step1_fill_price(s, np.full(a.size, price), slip, self.p, rng=self.rng), float)
        out = ftx.step1_outcome(s, q, np.full(a.size, price), fill, self.fee)
        self.usd[a] += s * q * (fill - self.entry[a]) - out["fee_usd"]
        self.qty[a] -= q
        self._close_out(a)
        self._requalify(a[self.qty[a] > 0])
        rec.add(bar, "step1", t_s, a, s, q, fill, price, out["notional_usd"], -out["user_pnl_usd"], 0.0)

    def _step2(self, rec, bar, t_s, price, acc, mf, acmf, tav):
        s = self.side[acc]
        out = ftx.step2_takeover(s, self.qty[acc], np.full(acc.size, price), mf, acmf, tav, self.p)
        cq = out["close_qty"]
        m = cq > 0
        if not m.any():
            return
        a, cq, s = acc[m], cq[m], s[m]
        zp, blp, cf = out["zero_price"][m], out["blp_price"][m], out["close_fraction"][m]
        # account closes at its zero price; same-coin collateral passes to the BLP with its debt
        self.usd[a] += s * cq * (zp - self.entry[a])
        tr = ftx.collateral_transfer(self.coin_bal[a], price, self.coin_w_eff[a], cf)
        self.usd[a] += tr["blp_pays_usd"]
        self.coin_bal[a] -= tr["coin_qty"]
        if np.any(tr["coin_qty"] > 0):
            sale = execution.collateral_sale(tr["coin_qty"], price, self.inp.volume_quote[bar], self.inp.sigma_1m,
                                             self.eta, self.inp.bar_minutes, self.fee, max_slippage=self.max_slip)
            gain = float(np.sum(tr["blp_gain_usd"] - sale["impact_usd"] - sale["fee_usd"]))
            self.blp_collateral_usd += gain
            self.blp_collateral_bar[bar] += gain
        if self.ocoll:
            self._transfer_other(bar, a, cf)
        self.qty[a] -= cq
        self.fund += float(np.sum(out["fund_delta_usd"][m]))
        self.fund_min = min(self.fund_min, self.fund)
        # BLP capacity (aggregate per minute / hour), rest to the top-n opposing accounts
        minute, hour = int(t_s // 60), int(t_s // 3600)
        if minute != self.cur_min:
            self.cur_min, self.used_min = minute, 0.0
        if hour != self.cur_hour:
            self.cur_hour, self.used_hour = hour, 0.0
        notional = cq * price
        taken, over = ftx.blp_take(notional, self.used_min, self.used_hour, self.p)
        taken, over = np.asarray(taken, float).reshape(-1), np.asarray(over, float).reshape(-1)
        self.used_min += float(taken.sum())
        self.used_hour += float(taken.sum())
        tq = cq * np.where(notional > 0, taken / np.where(notional > 0, notional, 1), 0)
        oq = cq - tq
        fd = out["fund_delta_usd"][m]
        ul = out["user_loss_usd"][m]
        tk = tq > 0
        if tk.any():
            for key, v in (("t_s", np.full(tk.sum(), t_s)), ("side", s[tk]), ("qty", tq[tk]),
                           ("price", blp[tk]), ("mark", np.full(tk.sum(), price))):
                self.lots[key].append(v)
            self.takeover_usd += float((tq[tk] * price).sum())
            w = tq[tk] / cq[tk]
            rec.add(bar, "step2_blp", t_s, a[tk], s[tk], tq[tk], blp[tk], price, tq[tk] * price,
                    ul[tk] * w, fd[tk] * w)
        ov = oq > 0
        if ov.any():
            w = oq[ov] / cq[ov]
            rec.add(bar, "overflow", t_s, a[ov], s[ov], oq[ov], blp[ov], price, oq[ov] * price,
                    ul[ov] * w, fd[ov] * w)
            for sd in (1, -1):
                m = s[ov] == sd
                if m.any():
                    qq = oq[ov][m]
                    avg = float(np.sum(qq * blp[ov][m]) / np.sum(qq))
                    self._overflow(sd, float(np.sum(qq)), avg, price)
        self._close_out(a)
        self._requalify(a[self.qty[a] > 0])

    oracle = False   # the oracle sets True: engine calls everywhere, overflow over every account

    def _opposing_pool(self, side: int, need: float) -> np.ndarray:
        """The largest opposing accounts, enough to serve `need` exactly as overflow_allocate
        over all of them would (their sizes only shrink, so a pool stays exact while every
        member is at least as large as the largest account left outside it)."""
        opp_side = -side
        if self.oracle:
            return np.nonzero(self.alive & (self.side == opp_side) & (self.qty > 0))[0]
        pool = self._pool[opp_side]
        if pool is not None:
            idx, outside_max = pool
            idx = idx[self.alive[idx] & (self.qty[idx] > 0)]
            if idx.size and self.qty[idx].min() >= outside_max and self.qty[idx].sum() >= need:
                self._pool[opp_side] = (idx, outside_max)
                return idx
        cand = np.nonzero(self.alive & (self.side == opp_side) & (self.qty > 0))[0]
        K = max(64, 8 * self.top_n)
        while True:
            if cand.size <= K:
                idx, outside_max = cand, 0.0
            else:
                part = np.argpartition(-self.qty[cand], K)
                idx = np.sort(cand[part[:K]])
                outside_max = float(self.qty[cand[part[K:]]].max())
            if idx.size == cand.size or self.qty[idx].sum() >= need * 1.5:
                break
            K *= 4
        self._pool[opp_side] = (idx, outside_max)
        return idx

    def _overflow(self, side, qty, price_close, mark):
        """Close `qty` (the tick's overflow of one side, at its qty-weighted BLP price) against
        the top-n largest opposing accounts, pro rata (ftx.overflow_allocate)."""
        opp = self._opposing_pool(side, qty)
        if opp.size == 0:
            return
        take = ftx.overflow_allocate(self.qty[opp], float(qty), self.top_n)
        hit = take > 0
        o, q = opp[hit], take[hit]
        so = self.side[o]
        self.usd[o] += so * q * (price_close - self.entry[o])
        self.qty[o] -= q
        # their gain vs mark (negative: they are forced out at a price worse than mark)
        self.counterparty_usd += float(np.sum(so * q * (price_close - mark)))
        self.changed_by_overflow.extend(o.tolist())
        self._close_out(o)
        self._requalify(o[self.qty[o] > 0])

    def _close_out(self, a):
        gone = a[self.qty[a] <= 1e-12]
        if gone.size:
            self.qty[gone] = 0.0
            self.alive[gone] = False
            self.liquidated[gone] = True

    def blp_pnl(self) -> tuple[float, float]:
        """(BLP P&L marked to market at the end, takeover notional)."""
        if not self.lots["t_s"]:
            return self.blp_collateral_usd, self.takeover_usd
        L = {k: np.concatenate(v) for k, v in self.lots.items()}
        lat = float(self.p.get("ftx.blp.hedge_latency_s"))
        h = float(self.p.get("ftx.blp.hedge_ratio"))
        hp = self.hedge
        t_fill = L["t_s"] + lat
        hedge_fill = hp.price_at_time(t_fill)
        b = np.clip(np.searchsorted(hp.ts_s, t_fill, side="right") - 1, 0, hp.n_bars - 1)
        slip = np.asarray(execution.sqrt_impact(h * L["qty"] * hedge_fill, hp.volume_quote[b], hp.sigma_1m,
                                                float(self.p.get("execution.eta.binance")), hp.bar_minutes,
                                                max_slippage=self.max_slip), float)
        # a takeover price at or below 0 (a short whose equity was below minus its notional)
        # is outside hedge_pnl's domain: price at a floor and add the linear difference back
        floor = 1e-9 * L["mark"]
        tp = np.maximum(L["price"], floor)
        correction = float(np.sum(L["side"] * L["qty"] * (tp - L["price"])))
        out = execution.hedge_pnl(L["side"], L["qty"], tp, L["mark"], hedge_fill,
                                  self.inp.close[-1], hp.close[-1], hedge_ratio=h, slippage_frac=slip,
                                  fee_rate=float(self.p.get("execution.taker_fee.binance")))
        self._blp_lots_priced = (L, tp, hedge_fill, t_fill, out, h)
        return float(np.sum(out["total_usd"])) + correction + self.blp_collateral_usd, self.takeover_usd

    def blp_pnl_by_bar(self) -> np.ndarray:
        """The BLP book's cumulative P&L marked to market at each bar's close (FTX path for the
        positions taken over; the hedge venue's path for hedges filled by then)."""
        inp, hp = self.inp, self.hedge
        out = np.cumsum(self.blp_collateral_bar)
        if not self.lots["t_s"]:
            return out
        L, tp, hedge_fill, t_fill, res, h = self._blp_lots_priced
        close_t = inp.ts_s + inp.bar_seconds                  # bar close times
        hedge_close = hp.price_at_time(close_t - 1e-6)
        s, q = L["side"], L["qty"]
        lot_bar = np.searchsorted(close_t, L["t_s"], side="right")      # first bar whose close is after the lot
        fill_bar = np.searchsorted(close_t, t_fill, side="right")
        nb = inp.n_bars
        def cum(values, at):
            return np.cumsum(np.bincount(np.minimum(at, nb), weights=values, minlength=nb + 1)[:nb])
        pos = inp.close * cum(s * q, lot_bar) - cum(s * q * tp, lot_bar)
        hedge = -hedge_close * cum(s * h * q, fill_bar) + cum(s * h * q * hedge_fill, fill_bar) \
            + cum(res["hedge_cost_usd"], fill_bar)
        return out + pos + hedge

    def exempt_deficit(self) -> float:
        ex = np.nonzero(self.exempt & (self.qty > 0))[0]
        if ex.size == 0:
            return 0.0
        tav, _ = self.tav_mf(ex, self.inp.close[-1])
        return float(np.asarray(ftx.exempt_deficit_usd(tav)).sum())


class _Fired:
    """The market already fired this tick (FtxState.fires): random() says so; the order and
    jitter draws come from the series' generator."""

    def __init__(self, rng):
        self._rng = rng

    def random(self, *a, **kw):
        return 0.0

    def __getattr__(self, name):
        return getattr(self._rng, name)


def run_ftx(inp: PathInput, pop: Population, params: Params, *, symbol: str, date,
            rng: np.random.Generator | None = None, hedge: PathInput | None = None,
            collateral: dict[str, CollateralPath] | None = None) -> SeriesResult:
    """Fast event-driven FTX replay over one path (rng None = deterministic step 1).
    `collateral`: price paths of other collateral coins; at the start of each bar where one
    steps, the holders' collateral is revalued and their triggers recomputed."""
    st = FtxState(pop, inp, params, symbol=symbol, date=date, rng=rng, hedge=hedge, collateral=collateral)
    st.changed_by_overflow = []
    rec = Recorder(inp.n_bars)
    n = len(st.qty)

    def build(exclude=None):
        bk = {}
        ok = st.alive & ~st.exempt
        if exclude is not None and exclude.size:
            ok[exclude] = False
        cand = np.nonzero(ok)[0]
        dirs = st.trig_dir(cand)
        for d in (-1, 1):
            idx = cand[dirs == d]
            bk[d] = TriggerBook(idx, st.trigger(idx), d, n)
        return bk

    books = build()
    active = np.zeros(0, np.int64)
    nb = inp.n_bars
    rv_bars = st.reval_bars
    ri = 0
    b = 0
    while b < nb:
        while ri < rv_bars.size and rv_bars[ri] < b:
            ri += 1
        if active.size == 0:
            lt, stp = books[-1].top(), books[1].top()
            b = inp.next_bar(b, lt if lt == lt else -np.inf, stp if stp == stp else np.inf)
            if ri < rv_bars.size and rv_bars[ri] < b:
                b = int(rv_bars[ri])
            if b >= nb:
                break
        if ri < rv_bars.size and rv_bars[ri] == b:
            # collateral price step(s) at this bar's start: holders get fresh triggers (the
            # direction may flip with the folded value); accounts in step 1/2 stay active
            ri += 1
            ch = st.revalue(b)
            if ch.size * 4 > n:
                books = build(exclude=active)       # most accounts moved: one vectorised rebuild
            elif ch.size:
                for d in (-1, 1):
                    books[d].remove(ch)
                ch = ch[st.alive[ch] & ~st.exempt[ch]]
                ch = np.setdiff1d(ch, active)
                if ch.size:
                    cdir = st.trig_dir(ch)
                    for d in (-1, 1):
                        cs = ch[cdir == d]
                        if cs.size:
                            books[d].put(cs, st.trigger(cs))
        # pending entries of this bar: (tick, account)
        acc_l, trig_l = books[-1].take(inp._lo[b])
        acc_s, trig_s = books[1].take(inp._hi[b])
        pend_a = np.concatenate([acc_l, acc_s])
        pend_k = np.concatenate([first_cross(inp.paths, np.full(acc_l.size, b), trig_l, -1),
                                 first_cross(inp.paths, np.full(acc_s.size, b), trig_s, +1)]).astype(np.int64)
        prices = None
        k = 0 if active.size else (int(pend_k.min()) if pend_k.size else inp.n_ticks)
        while k < inp.n_ticks:
            if pend_k.size:
                due = pend_k <= k
                if due.any():
                    active = np.union1d(active, pend_a[due])
                    pend_a, pend_k = pend_a[~due], pend_k[~due]
            if active.size == 0:
                if not pend_k.size:
                    break
                k = int(pend_k.min())
                continue
            if prices is None:
                prices = tick_prices(inp.paths, b)
                suffix = {-1: np.minimum.accumulate(prices[::-1])[::-1],
                          1: np.maximum.accumulate(prices[::-1])[::-1]}
            price = float(prices[k])
            before = active
            active = st.tick(rec, b, k, price, active)
            # accounts that left step 1/2 (or whose position changed by overflow) get a fresh trigger
            left = np.setdiff1d(before, active, assume_unique=True)
            if st.changed_by_overflow:
                ch = np.unique(np.asarray(st.changed_by_overflow, np.int64))
                st.changed_by_overflow = []
                ch = np.setdiff1d(ch, active)
                left = np.union1d(left, ch)
                # an account re-queued by overflow may still be pending this bar
                keep = ~np.isin(pend_a, ch)
                pend_a, pend_k = pend_a[keep], pend_k[keep]
            if left.size:
                live = left[st.alive[left]]
                live = live[~st.exempt[live]]
                ldir = st.trig_dir(live)
                for d in (-1, 1):
                    books[d].remove(left)
                    ls = live[ldir == d]
                    if not ls.size:
                        continue
                    trig = st.trigger(ls)
                    kk = _next_cross(inp, b, prices, suffix, k + 1, trig, d)
                    now = kk >= 0
                    if now.any():
                        pend_a = np.concatenate([pend_a, ls[now]])
                        pend_k = np.concatenate([pend_k, kk[now]])
                    books[d].put(ls[~now], trig[~now])
            k += 1
            # random mode: skip ticks where nothing can happen (all active accounts in step 1,
            # the market not firing, no state change on price, no new entry)
            if st.rng is not None and active.size and not st.in_step2 and k < inp.n_ticks:
                j0 = b * inp.n_ticks
                if st.next_fire < j0 + k:
                    st.fires(j0 + k)   # draws the next firing tick from here
                stop = min(inp.n_ticks, st.next_fire - j0, int(pend_k.min()) if pend_k.size else inp.n_ticks)
                if stop > k:
                    k = st.quiet_until(active, prices, k, stop)
        rec.bar_fund[b] = st.fund
        b += 1
    return _finish(st, rec, inp, "ftx", params)


def _next_cross(inp: PathInput, bar: int, prices, suffix, k_from: int, trig, d: int) -> np.ndarray:
    """First tick >= k_from of this bar where the path reaches `trig` (direction d), -1 if
    never; nan triggers never fire. Same answer as path.first_cross on the same prices."""
    out = np.full(trig.size, -1, dtype=np.int64)
    if k_from >= inp.n_ticks or trig.size == 0:
        return out
    ok = np.isfinite(trig)
    ext = suffix[d][k_from]
    reach = ok & ((trig >= ext) if d == -1 else (trig <= ext))
    if not reach.any():
        return out
    t = trig[reach]
    seg = prices[k_from:]
    if t.size * seg.size <= 200_000:
        hit = (seg[None, :] <= t[:, None]) if d == -1 else (seg[None, :] >= t[:, None])
        out[reach] = k_from + np.argmax(hit, axis=1)
    else:
        out[reach] = first_cross(inp.paths, np.full(t.size, bar), t, d, k_from)
    return out


