"""The naive oracle: every account, every tick (MODEL.md 3-4), for the parity tests.

No trigger prices, no sorting, no event search: at each engine tick of each bar it asks the
venue engine, for every live account, whether the account is in trouble at that tick's
path price (Binance: `binance.is_liquidatable`, MM >= WB + uPnL; FTX: MF < MMF from
`ftx.account_tav_mf` / `ftx.margin_thresholds`), and settles those: Binance through
`BinanceState` (numpy arithmetic of backtest/venues/binance.py, independent of the compiled
kernel's own per-scalar arithmetic, its trigger books and its lazy funding); FTX with the same
engine tick as the fast kernel (compiled loop over every account at every tick, overflow over
all opposing accounts, the same counter-based draws). Cost: bars x ticks x accounts.
Small populations only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from backtest.params import Params
from backtest.population import Population
from backtest.replay import BinanceState, PathInput, Recorder, SeriesResult, _finish
from backtest.replay.ftx import resolve_seed
from backtest.replay.ftx.state import replay as ftx_replay
from backtest.venues import binance


def reference_binance(inp: PathInput, pop: Population, params: Params, *, symbol: str, date) -> SeriesResult:
    """Every tick of every bar, every live account: liquidatable (MM >= WB + uPnL at the tick's
    price) -> settled. Accounts exist in [open_s, close_s): the close is applied at its tick, at
    that tick's price, before the check. Funding at a funding bar's open, ADL at each bar's end.
    The model's open interest is summed over the live accounts at each UTC day's last tick."""
    br = binance.brackets_for(symbol, date, params)
    st = BinanceState(pop, inp, params, br, symbol=symbol)
    rec = Recorder(inp.n_bars)
    fund_at = dict(zip(inp.funding_bar.tolist(), inp.funding_rate.tolist(), strict=True))
    n = inp.n_ticks
    day = inp.ts_s // 86400
    oi_rows = []
    for b in range(inp.n_bars):
        prices = inp.bar_ticks(b)
        g0 = b * n
        st.close_voluntary(g0, float(prices[0]))
        if b in fund_at:
            st.apply_funding(b, fund_at[b])
        for k in range(n):
            if k:
                st.close_voluntary(g0 + k, float(prices[k]))
            cand = np.nonzero(st.live(g0 + k) & ~st.exempt)[0]
            if cand.size == 0:
                continue
            # feedback (MODEL.md 5): the triggers and fills see the path moved by the offset
            # the flows before this tick left
            p_k = float(prices[k]) * (1.0 + st.feedback_offset(float(inp.tick_time_s(b, k))))
            w = st.wt[cand]      # brackets at one real account's size (MODEL.md 2)
            hit = np.asarray(binance.is_liquidatable(st.side[cand], st.qty[cand] / w, st.entry[cand],
                                                     st.wallet[cand] / w, np.full(cand.size, p_k), br)).reshape(-1)
            acc = cand[hit]
            if acc.size:
                st.settle(rec, b, acc, np.full(acc.size, k, dtype=np.int64), mark=np.full(acc.size, p_k))
        st.run_adl(b)
        rec.bar_fund[b] = st.fund
        if b == inp.n_bars - 1 or day[b + 1] != day[b]:
            live = st.live(g0 + n - 1)
            for s_, name in ((1, "long"), (-1, "short")):
                q = float(st.qty[live & (st.side == s_)].sum())
                oi_rows.append({"date": pd.Timestamp(int(day[b]) * 86400, unit="s", tz="UTC"), "side": name,
                                "oi_usd": q * float(inp.close[b])})
    st.oi_daily = _oi_frame(inp, oi_rows)
    return _finish(st, rec, inp, "binance", params)


def _oi_frame(inp: PathInput, rows: list[dict]) -> pd.DataFrame:
    """Days without a bar carry the previous day's quantity at that day's (previous) close."""
    df = pd.DataFrame(rows)
    df["date"] = df["date"].astype("datetime64[ns, UTC]")
    days = pd.date_range(df["date"].min(), df["date"].max(), freq="D")
    out = []
    for name in ("long", "short"):
        sub = df[df.side == name].set_index("date")["oi_usd"].reindex(days).ffill()
        out.append(pd.DataFrame({"date": days.astype("datetime64[ns, UTC]"), "side": name, "oi_usd": sub.to_numpy()}))
    return pd.concat(out, ignore_index=True)


def reference_ftx(inp: PathInput, pop: Population, params: Params, *, symbol: str, date=None,
                  seed: int | None = None, deterministic: bool | None = None, hedge: PathInput | None = None,
                  collateral=None, rng: np.random.Generator | None = None) -> SeriesResult:
    """Every bar, every tick, every open account's MF against its MMF (ftx loop.run_oracle): no
    trigger prices, no trees, no skipping, overflow over all opposing accounts; the same engine
    tick and the same counter-based draws as the fast kernel."""
    seed, det = resolve_seed(seed, deterministic, rng)
    return ftx_replay(inp, pop, params, symbol=symbol, seed=seed, deterministic=det, hedge=hedge,
                      collateral=collateral, oracle=True)
