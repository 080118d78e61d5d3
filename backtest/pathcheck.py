"""How well the intra-bar path reproduces what finer bars show (MODEL.md 1; the source of
`path.near_first_prob`, `path.vol_scale` and `path.time_jitter` in params.toml).

Real 1-minute bars grouped into coarser bars (15m, 1h) are a path whose inside we know: the
check builds the model's path through each coarse bar at 1-minute ticks and compares it with
the real minute closes: the share of bars whose extreme nearer the open comes first, the
deciles of the extremes' times inside the bar, and the 90/99/99.9th percentiles of the
|1 min| and |5 min| moves (mean |log ratio| model/real is the fit's error).

    python -m backtest.pathcheck --lake /tmp/lake [--coin BTC] [--params FILE]

Pure functions over bar frames (ts, open, high, low, close); `main` reads the lake.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from backtest import paths as P
from backtest.catalog import Catalog
from backtest.params import load_params
from backtest.scenarios import load_scenarios

QUANTILES = (90.0, 99.0, 99.9)
DECILES = (0.1, 0.25, 0.5, 0.75, 0.9)
MIN_RUN = 1440            # a window's 1m run is used from one day of bars


def group_bars(fine: pd.DataFrame, agg: int) -> tuple[np.ndarray, ...]:
    """Consecutive runs of `agg` fine bars as coarse bars: (o, h, l, c, ts_s, fine_high,
    fine_low, fine_close), the last three (m, agg). Assumes a gap-free, sorted frame."""
    n = len(fine) // agg * agg
    f = fine.iloc[:n]
    hi = f["high"].to_numpy(float).reshape(-1, agg)
    lo = f["low"].to_numpy(float).reshape(-1, agg)
    cl = f["close"].to_numpy(float).reshape(-1, agg)
    o = f["open"].to_numpy(float)[::agg]
    ts = (pd.to_datetime(f["ts"], utc=True).astype("int64") // 10**9).to_numpy()[::agg]
    return o, hi.max(1), lo.min(1), cl[:, -1], ts, hi, lo, cl


def near_first_share(fine: pd.DataFrame, agg: int) -> tuple[float, int]:
    """(share of coarse bars whose extreme nearer the open comes first, bars counted); bars
    whose high and low fall in the same fine bar are left out."""
    o, h, low, _, _, hi, lo, _ = group_bars(fine, agg)
    ih, il = hi.argmax(1), lo.argmin(1)
    ok = (ih != il) & (h > low)
    near_high = (h - o) < (o - low)
    first = np.where(near_high, ih < il, il < ih)
    return float(first[ok].mean()) if ok.any() else float("nan"), int(ok.sum())


def real_extreme_times(fine: pd.DataFrame, agg: int) -> np.ndarray:
    _, _, _, _, _, hi, lo, _ = group_bars(fine, agg)
    return np.r_[hi.argmax(1), lo.argmin(1)] / (agg - 1)


def model_paths(fine: pd.DataFrame, agg: int, mode: int, key: int, settings: dict) -> np.ndarray:
    o, h, low, c, ts, *_ = group_bars(fine, agg)
    return P.fill_series(o, h, low, c, agg, mode, key, ts, settings["near_first_prob"], settings["vol_scale"],
                         settings["time_jitter"])


def move_quantiles(x: np.ndarray, lag: int) -> np.ndarray:
    x = np.asarray(x, float).ravel()
    return np.percentile(np.abs(np.log(x[lag:] / x[:-lag])) * 1e4, QUANTILES)


def check(fines: list[pd.DataFrame], agg: int, settings: dict, key: int) -> dict:
    """The comparison for coarse bars of `agg` fine bars over several gap-free series."""
    share = [near_first_share(f, agg) for f in fines]
    n = sum(s[1] for s in share)
    out = {"agg": agg, "bars": n,
           "near_first_real": sum(s[0] * s[1] for s in share if s[1]) / max(n, 1),
           "times_real": np.quantile(np.concatenate([real_extreme_times(f, agg) for f in fines]), DECILES)}
    model = {m: [model_paths(f, agg, m, key, settings) for f in fines] for m in (P.MODE_LINEAR, P.MODE_BRIDGE)}
    br = model[P.MODE_BRIDGE]
    out["times_model"] = np.quantile(np.concatenate([np.r_[x.argmax(1), x.argmin(1)] / (agg - 1) for x in br]),
                                     DECILES)
    errs = []
    for lag in (1, 5):
        real = move_quantiles(np.concatenate([f["close"].to_numpy(float)[: len(f) // agg * agg] for f in fines]), lag)
        out[f"real_{lag}"] = real
        for m, name in ((P.MODE_LINEAR, "linear"), (P.MODE_BRIDGE, "bridge")):
            q = np.mean([move_quantiles(x, lag) for x in model[m]], axis=0)
            out[f"{name}_{lag}"] = q
            if m == P.MODE_BRIDGE:
                errs.append(np.abs(np.log(q / real)).mean())
    out["bridge_error"] = float(np.mean(errs))
    return out


def format_check(r: dict) -> str:
    f = lambda a: " / ".join(f"{v:.1f}" for v in a)  # noqa: E731
    t = lambda a: " / ".join(f"{v:.2f}" for v in a)  # noqa: E731
    lines = [f"{r['agg']}-minute bars from 1m bars ({r['bars']} bars): nearer extreme first {r['near_first_real']:.3f}",
             f"  extreme times (deciles {', '.join(map(str, DECILES))}): real {t(r['times_real'])}, "
             f"bridge {t(r['times_model'])}"]
    for lag in (1, 5):
        lines.append(f"  |{lag} min move| bp pct {'/'.join(map(str, QUANTILES))}: real {f(r[f'real_{lag}'])}, "
                     f"linear {f(r[f'linear_{lag}'])}, bridge {f(r[f'bridge_{lag}'])}")
    lines.append(f"  bridge error (mean |log ratio| of those percentiles): {r['bridge_error']:.3f}")
    return "\n".join(lines)


def _fine_series(catalog, scenarios, coin: str) -> list[pd.DataFrame]:
    """Per scenario window, the longest gap-free run (at least a day) of Binance {coin}USDT
    1m bars inside it (spot, else perp)."""
    out = []
    for w in scenarios.windows:
        if w.whole_year:
            continue
        for market in ("spot", "perp"):
            df = catalog.bars("binance", market, f"{coin}USDT", w.start, w.end, timeframe="1m")
            if len(df) < MIN_RUN:
                continue
            df = df.sort_values("ts").reset_index(drop=True)
            run = (pd.to_datetime(df["ts"], utc=True).diff() != pd.Timedelta(minutes=1)).cumsum()
            best = run.value_counts().idxmax()           # the longest run without gaps
            if (run == best).sum() >= MIN_RUN:
                out.append(df[run == best].reset_index(drop=True))
                break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backtest.pathcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake", required=True, help="lake directory (liqreplay import ... --lake DIR)")
    ap.add_argument("--coin", default="BTC")
    ap.add_argument("--params", default=None, help="parameter file (default backtest/params.toml)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    settings = P.path_settings(load_params(a.params))
    fines = _fine_series(Catalog(a.lake), load_scenarios(), a.coin)
    if not fines:
        print(f"pathcheck: the lake {a.lake} has no Binance {a.coin}USDT 1m bars covering a window; "
              f"import them first (liqreplay import /work/shared/data --lake DIR)", file=sys.stderr)
        return 2
    print(f"Binance {a.coin}USDT 1m: {len(fines)} windows, {sum(map(len, fines))} bars; path settings {settings}")
    for agg in (15, 60):
        print(format_check(check(fines, agg, settings, P.path_key(a.seed, a.coin))))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
