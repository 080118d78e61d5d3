"""What drives house loss, and what it would take (MODEL.md 8): pure functions over sweep rows.

    totals = sample_totals(rows, dims, year_ids)   # one row per sample: each venue's 2022 house loss
    sens = sensitivity(totals, dims, seed=1)        # Spearman (bootstrap 90% CI) + RBD-FAST S1 (SALib)
    front = frontier(totals, dims)                  # least implausible sampled settings reaching $1B, $8B

A venue's **2022 house loss** of a sample is the larger of its whole-year run (hourly bars)
and the sum of its crash windows (finer bars), summed over markets: the windows lie inside
the year, so adding the two would count the same days twice. Implausibility is the distance
from the sourced defaults in units of each range (log scale for log-drawn ranges): the
Euclidean norm of the per-parameter distances |u - u_default|.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm, spearmanr

from backtest.fmt import money

TARGETS_USD = (1e9, 8e9)
OUTPUTS = ("ftx_2022", "binance_2022", "ftx_binance_ratio")
RATIO_FLOOR_USD = 1e3     # the ratio's denominator floor: a Binance house loss of 0 gives a finite ratio
BOOTSTRAP = 200
MIN_RBD = 30              # RBD-FAST needs enough points for its harmonics


def _venue_2022(rows: pd.DataFrame, venue: str, year_ids: set[str]) -> pd.Series:
    ok = rows[(rows["venue"] == venue)]
    if "error" in ok:
        ok = ok[ok["error"].isna()]
    if ok.empty or "house_loss_usd" not in ok:
        return pd.Series(dtype="float64")
    is_year = ok["window"].astype(str).isin(year_ids)
    win = ok[~is_year].groupby("sample")["house_loss_usd"].sum(min_count=1)
    yr = ok[is_year].groupby("sample")["house_loss_usd"].sum(min_count=1)
    both = pd.concat([win.rename("w"), yr.rename("y")], axis=1)
    return both.max(axis=1, skipna=True)


def ftx_2022(rows: pd.DataFrame, year_ids: set[str]) -> float:
    """FTX's 2022 house loss of one sample's rows (NaN when FTX did not run)."""
    s = _venue_2022(rows, "ftx", year_ids)
    return float(s.iloc[0]) if len(s) else math.nan


def sample_totals(rows: pd.DataFrame, dims, year_ids: set[str]) -> pd.DataFrame:
    """One row per sample without errors: the parameters, ftx_2022, binance_2022, the ratio."""
    if rows.empty:
        return pd.DataFrame(columns=["sample", *[d.key for d in dims], *OUTPUTS])
    bad = set(rows.loc[rows["error"].notna(), "sample"]) if "error" in rows else set()
    good = rows[~rows["sample"].isin(bad)]
    params = good.groupby("sample")[[d.key for d in dims]].first()
    t = params.assign(ftx_2022=_venue_2022(good, "ftx", year_ids),
                      binance_2022=_venue_2022(good, "binance", year_ids))
    t["ftx_binance_ratio"] = t["ftx_2022"] / np.maximum(t["binance_2022"], RATIO_FLOOR_USD)
    return t.reset_index()


def distribution(totals: pd.DataFrame) -> dict:
    out = {}
    for col in ("ftx_2022", "binance_2022", "ftx_binance_ratio"):
        x = totals[col].astype(float).dropna() if col in totals else pd.Series(dtype=float)
        if len(x):
            q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
            out[col] = {"n": int(len(x)), "min": float(x.min()), "q05": float(q[0]), "q25": float(q[1]),
                        "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4]), "max": float(x.max()),
                        "mean": float(x.mean())}
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def sensitivity(totals: pd.DataFrame, dims, *, seed: int, bootstrap: int = BOOTSTRAP) -> dict:
    """Per output and parameter: Spearman's rho with a bootstrap 90% interval and, with at
    least MIN_RBD samples, the first-order variance share S1 (RBD-FAST, SALib) with its
    confidence half-width. Parameters are ranked by |rho|."""
    res = {"method": "spearman rank correlation (bootstrap 90% CI); RBD-FAST first-order index S1 (SALib)",
           "samples": int(len(totals)), "bootstrap": int(bootstrap), "outputs": {},
           "distribution": distribution(totals)}
    keys = [d.key for d in dims]
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E75]))
    for out in OUTPUTS:
        if out not in totals:
            continue
        t = totals[[*keys, out]].dropna(subset=[out])
        y = t[out].to_numpy(float)
        n = len(y)
        entries = []
        if n >= 3:
            X = t[keys].to_numpy(float)
            idx = gen.integers(0, n, size=(bootstrap, n))
            s1 = _rbd_fast(X, y, dims, seed) if n >= MIN_RBD else None
            for j, k in enumerate(keys):
                rho = _spearman(X[:, j], y)
                boots = np.array([_spearman(X[b, j], y[b]) for b in idx])
                boots = boots[np.isfinite(boots)]
                lo, hi = (np.quantile(boots, [0.05, 0.95]) if len(boots) else (math.nan, math.nan))
                e = {"param": k, "rho": rho, "rho_lo": float(lo), "rho_hi": float(hi)}
                if s1 is not None:
                    e["S1"], e["S1_conf"] = float(s1[0][j]), float(s1[1][j])
                entries.append(e)
            entries.sort(key=lambda e: -abs(e["rho"]) if np.isfinite(e["rho"]) else 0.0)
        res["outputs"][out] = {"n": int(n), "params": entries}
    return res


def _rbd_fast(X: np.ndarray, y: np.ndarray, dims, seed: int):
    """(S1, S1_conf) arrays, or None when SALib cannot say (constant output, too few points)."""
    try:
        from SALib.analyze import rbd_fast
    except ImportError:
        return None
    if np.ptp(y) == 0:
        return None
    problem = {"num_vars": len(dims), "names": [d.key for d in dims],
               "bounds": [[d.lo, d.hi] if d.hi > d.lo else [d.lo, d.lo + 1.0] for d in dims]}
    M = max(1, min(10, (len(y) - 1) // 4))
    try:
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a resample with no variance: NaN, said as such
            r = rbd_fast.analyze(problem, X, y, M=M, num_resamples=100, conf_level=0.90, seed=int(seed) % (2**32))
    except Exception:   # SALib raises on degenerate inputs; the rank correlations still stand
        return None
    return np.asarray(r["S1"], float), np.asarray(r["S1_conf"], float)


# --------------------------------------------------------------------------- the frontier
def unit_default(dims) -> np.ndarray:
    return np.clip(np.array([d.unit(d.default) for d in dims], float), 0.0, 1.0)


def unit_points(totals: pd.DataFrame, dims) -> np.ndarray:
    X = totals[[d.key for d in dims]].to_numpy(float)
    return np.array([[d.unit(x) for d, x in zip(dims, row, strict=True)] for row in X])


def describe_setting(u: np.ndarray, dims, *, top: int | None = None) -> list[dict]:
    """Per parameter: value, default, distance in range units; largest distances first."""
    u0 = unit_default(dims)
    recs = [{"param": d.key, "value": d.value(float(x)), "default": d.default,
             "distance": float(abs(float(x) - u0[j])), "direction": "up" if x > u0[j] else "down"}
            for j, (d, x) in enumerate(zip(dims, u, strict=True))]
    recs.sort(key=lambda r: -r["distance"])
    return recs[:top] if top else recs


def scope_of(window_ids, year_ids) -> str:
    """How the sentences name what was summed: "in 2022" with the whole-year run, else the windows."""
    if set(year_ids) & set(window_ids):
        return "in 2022"
    ids = list(window_ids)
    return f"over the window{'s' if len(ids) != 1 else ''} {', '.join(ids)}" if ids else "in the swept windows"


def frontier(totals: pd.DataFrame, dims, targets=TARGETS_USD, *, scope: str = "in 2022") -> dict:
    """From the sampled points alone: per target, how many samples reach it and the least
    implausible one (smallest distance from the defaults)."""
    u0 = unit_default(dims)
    y = totals["ftx_2022"].astype(float).to_numpy() if len(totals) else np.zeros(0)
    U = unit_points(totals, dims) if len(totals) else np.zeros((0, len(dims)))
    dist = np.sqrt(((U - u0) ** 2).sum(axis=1)) if len(U) else np.zeros(0)
    out = {"measure": "FTX 2022 house loss: max(whole-year run, sum of crash windows), over markets",
           "distance": "Euclidean norm of |u - u_default| per parameter, u = position in the range (0..1)",
           "scope": scope, "samples": int(len(totals)),
           "max_usd": float(np.nanmax(y)) if len(y) and np.isfinite(y).any() else None,
           "targets": []}
    for T in targets:
        reach = np.isfinite(y) & (y >= T)
        item = {"target_usd": float(T), "reached_by": int(reach.sum()), "share": float(reach.mean()) if len(y) else 0.0}
        if reach.any():
            i = int(np.flatnonzero(reach)[np.argmin(dist[reach])])
            item["nearest_sample"] = {"sample": int(totals["sample"].iloc[i]), "ftx_2022_usd": float(y[i]),
                                      "distance": float(dist[i]), "u": U[i].tolist(),
                                      "setting": describe_setting(U[i], dims)}
        out["targets"].append(item)
    return out


def raising_corner(totals: pd.DataFrame, dims, *, alpha: float = 0.05) -> dict:
    """Which parameters clearly raise FTX's loss, from the sampled design alone.

    With enough samples (n >= parameters + 10): least squares of log(1 + loss) on the unit
    positions of all parameters at once, so a parameter that only rides along with a real
    driver is not picked; a parameter counts when |t| clears the Bonferroni bound for
    `alpha` over all parameters. With fewer samples: each parameter's Spearman correlation,
    the same bound on its Fisher z. All-zero losses move nothing. Returns the corner
    (unit point: moved parameters at the end that raises the loss, the others at their
    defaults), the moved keys and the method."""
    u0 = unit_default(dims)
    k = len(dims)
    crit = float(norm.ppf(1.0 - alpha / (2.0 * max(k, 1))))
    out = {"corner": u0.copy(), "moved": [], "criterion": f"|t| >= {crit:.2f} (Bonferroni, alpha {alpha})"}
    if not len(totals) or not k:
        out["method"] = "no samples"
        return out
    y = np.log1p(np.maximum(totals["ftx_2022"].astype(float).to_numpy(), 0.0))
    U = unit_points(totals, dims)
    ok = np.isfinite(y) & np.isfinite(U).all(axis=1)
    y, U = y[ok], U[ok]
    n = len(y)
    if n < 4 or float(np.ptp(y)) == 0.0:
        out["method"] = "no variation in FTX's loss across the samples"
        return out
    if n >= k + 10:
        X = np.column_stack([np.ones(n), U - 0.5])
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ beta
        s2 = float(resid @ resid) / (n - k - 1)
        cov = s2 * np.linalg.pinv(X.T @ X)
        se = np.sqrt(np.maximum(np.diag(cov), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(se > 0, beta / se, 0.0)
        eff, stat = beta[1:], t[1:]
        out["method"] = f"least squares of log(1 + FTX loss) on all {k} parameters ({n} samples)"
    else:
        eff = np.array([spearmanr(U[:, j], y).statistic if np.ptp(U[:, j]) > 0 else 0.0 for j in range(k)])
        eff = np.nan_to_num(eff)
        stat = np.arctanh(np.clip(eff, -0.999999, 0.999999)) * math.sqrt(max(n - 3, 1))
        out["method"] = f"Spearman correlation per parameter ({n} samples, fewer than parameters + 10)"
    for j, d in enumerate(dims):
        if abs(stat[j]) >= crit:
            out["corner"][j] = 1.0 if eff[j] > 0 else 0.0
            out["moved"].append(d.key)
    return out


def search_frontier(front: dict, totals: pd.DataFrame, sens: dict, dims,
                    evaluate: Callable[[list[np.ndarray], int], list[float]], *, budget: int, seed: int) -> dict:
    """Refine the frontier where the sampled design is too coarse, with model runs:
    1. three runs at one seed: the defaults; the worst corner (`raising_corner`: the
       parameters that clearly raise FTX's loss at the end of their range, the others at
       their defaults); the largest-loss sample again (its loss came with its own seed);
    2. one more: the largest-loss sample with the clearly raising parameters pushed to
       their ends (a climb from the worst point known);
    3. per target, a root search (scipy.optimize.brentq) on the segment from the defaults to
       the nearest point known to reach it: where the loss crosses the target, nearer the
       defaults.
    The largest loss found (samples and runs) is kept, so "nothing reaches $1B" says how
    far off the worst setting found is. `evaluate(points, seed)` runs the model at unit
    points and returns FTX's 2022 loss. `sens` is kept for the signature (the sweep's
    marginal rank correlations); the corner uses the joint fit."""
    u0 = unit_default(dims)
    run_seed = int(np.random.SeedSequence([int(seed), 0xF407]).generate_state(1, np.uint32)[0])
    evals = [0]
    cache: dict[tuple, float] = {}

    def f(points):
        todo = list({tuple(np.round(p, 12)): p for p in points if tuple(np.round(p, 12)) not in cache}.values())
        if todo:
            if evals[0] + len(todo) > budget:
                raise _Budget()
            vals = evaluate(todo, run_seed)
            evals[0] += len(todo)
            for p, v in zip(todo, vals, strict=True):
                cache[tuple(np.round(p, 12))] = float(v)
        return [cache[tuple(np.round(p, 12))] for p in points]

    rc = raising_corner(totals, dims)
    corner, moved = rc["corner"], rc["moved"]
    y = totals["ftx_2022"].astype(float).to_numpy() if len(totals) else np.zeros(0)
    has_best = bool(len(y)) and np.isfinite(y).any()
    u_best = unit_points(totals, dims)[int(np.nanargmax(y))] if has_best else u0.copy()
    climb = u_best.copy()
    for j, d in enumerate(dims):
        if d.key in moved:
            climb[j] = corner[j]
    search = {"method": "worst corner of the clearly raising parameters, the largest-loss sample and a climb "
                        "from it, then brentq on the line from the defaults",
              "corner_method": rc["method"], "corner_criterion": rc["criterion"],
              "seed": run_seed, "budget": int(budget)}
    largest = {"ftx_2022_usd": float(np.nanmax(y)) if has_best else math.nan, "source": "sample",
               "distance": float(np.sqrt(((u_best - u0) ** 2).sum())), "u": u_best}
    points = {"defaults": u0, "corner": corner, "largest_sample": u_best, "climb": climb}
    try:
        at_default, at_corner = f([u0, corner])
        search["default_usd"] = at_default
        search["corner"] = {"moved": moved, "ftx_2022_usd": at_corner,
                            "distance": float(np.sqrt(((corner - u0) ** 2).sum())),
                            "setting": describe_setting(corner, dims)}
        known = {"defaults": at_default, "corner": at_corner}
        if has_best:
            (known["largest_sample"],) = f([u_best])
            if moved:
                (known["climb"],) = f([climb])
                search["climb"] = {"from_sample": int(totals["sample"].iloc[int(np.nanargmax(y))]),
                                   "ftx_2022_usd": known["climb"],
                                   "distance": float(np.sqrt(((climb - u0) ** 2).sum()))}
        for name, v in known.items():
            if np.isfinite(v) and not (v <= largest["ftx_2022_usd"]):
                u = points[name]
                largest = {"ftx_2022_usd": float(v), "source": f"search run ({name})",
                           "distance": float(np.sqrt(((u - u0) ** 2).sum())), "u": u}
        for item in front["targets"]:
            T = item["target_usd"]
            if at_default >= T:
                item["searched"] = {"ftx_2022_usd": at_default, "distance": 0.0, "at_defaults": True,
                                    "setting": describe_setting(u0, dims)}
                continue
            ends = [np.asarray(item["nearest_sample"]["u"], float)] if "nearest_sample" in item else []
            ends += [points[name] for name, v in known.items() if v >= T and name != "defaults"]
            best = None
            for u1 in ends:
                (v1,) = f([u1])
                if not v1 >= T:     # the nearest sample's loss came with its own seed; this seed may fall short
                    continue

                def g(t, u1=u1, T=T):
                    return f([u0 + t * (u1 - u0)])[0] - T
                try:
                    t = brentq(g, 0.0, 1.0, xtol=0.02, maxiter=8)
                except (_Budget, ValueError, RuntimeError):
                    t = 1.0
                u = u0 + t * (u1 - u0)
                (v,) = f([u])
                if v < T:
                    u, v = u1, v1
                dist = float(np.sqrt(((u - u0) ** 2).sum()))
                if best is None or dist < best["distance"]:
                    best = {"ftx_2022_usd": v, "distance": dist, "at_defaults": False,
                            "setting": describe_setting(u, dims)}
            item["searched"] = best
    except _Budget:
        search["note"] = f"stopped at the budget of {budget} model runs"
    search["evals"] = evals[0]
    if np.isfinite(largest["ftx_2022_usd"]):
        u = largest.pop("u")
        largest["setting"] = describe_setting(u, dims)
        search["largest_found"] = largest
    front["search"] = search
    return front


class _Budget(Exception):
    pass


def plain_words(front: dict, top: int = 4) -> list[str]:
    """One sentence per target, e.g. "FTX's house loses $1B in 2022 only if ..."."""
    lines = []
    scope = front.get("scope") or "in 2022"
    for item in front.get("targets", []):
        T = money(item["target_usd"])
        best = item.get("searched") or item.get("nearest_sample")
        if item.get("searched") and item.get("nearest_sample"):
            best = min((item["searched"], item["nearest_sample"]), key=lambda b: b["distance"])
        if not best:
            mx = front.get("max_usd")
            search = front.get("search") or {}
            found = search.get("largest_found")
            if found:
                moved = [s for s in found["setting"] if s["distance"] >= 0.05][:top]
                at = "; ".join(f"{s['param']} {_fmt(s['value'])} (default {_fmt(s['default'])})" for s in moved)
                corner = search.get("corner") or {}
                why = ("" if corner.get("moved") else
                       "; no parameter clearly raises it at this sample size, so the worst corner is the defaults")
                lines.append(f"No setting found makes FTX's house lose {T} {scope}: the largest loss found is "
                             f"{money(found['ftx_2022_usd'])} ({found['source']}, distance "
                             f"{found['distance']:.2f} from the defaults" + (f": {at}" if at else "") + ")"
                             + why + ".")
                continue
            lines.append(f"No sampled setting makes FTX's house lose {T} {scope} (the largest sampled loss is "
                         f"{money(mx) if mx is not None else 'n/a'}).")
            continue
        if best.get("at_defaults"):
            lines.append(f"FTX's house loses {T} {scope} at the sourced defaults.")
            continue
        moved = [s for s in best["setting"] if s["distance"] >= 0.05][:top]
        parts = [f"{s['param']} is {_fmt(s['value'])} (default {_fmt(s['default'])}, {s['distance']:.0%} of its range "
                 f"{s['direction']})" for s in moved]
        lines.append(f"FTX's house loses {T} {scope} only if " + "; ".join(parts or ["(no parameter moves much)"])
                     + f" — distance {best['distance']:.2f} from the defaults, {item['reached_by']} of "
                       f"{front.get('samples', 0)} samples reach it.")
    return lines


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if abs(v) >= 1e6:
        return money(v)
    return f"{v:.4g}"
