"""The data each replay series needs, from the lake: `SeriesLoader.load(window, venue, coin)`
asks the Catalog for one (window, venue, market): the finest bars it holds (or a reference
venue's bars standing in, recorded in `price_source`), ADV over the 30 days before, open
interest and funding where present, else the scenario defaults with their source, and the
mark-price bars for the triggers where the lake has them (`mark_bars`, `trigger_source`). A
series that cannot run raises `DataUnavailable` naming the window, venue and market.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backtest.bars import (
    MIN_COVERAGE,
    MIN_USABLE_COVERAGE,
    TIMEFRAME_MINUTES,
    expected_bars,
    fill_gaps,
    normalise_bars,
    resample_bars,
    sigma_1m_of,
    tf_minutes,
)
from backtest.params import Params
from backtest.path import CollateralPath
from backtest.scenarios import DataUnavailable, PriceSource, Scenarios, Window
from fetch.lake import LakeDamaged

log = logging.getLogger(__name__)


@dataclass
class SeriesData:
    """Everything one (window, venue, market) replay needs, as plain arrays/frames."""

    window: Window
    venue: str
    coin: str
    symbol: str
    bars: pd.DataFrame            # ts, open, high, low, close, volume_quote (gaps filled flat)
    timeframe: str
    price_source: str             # "own" or "substituted: binance perp BTCUSDT"
    source: PriceSource
    rows: int                     # bars actually in the lake
    gaps_pct: float               # share of the window's bars missing (filled flat)
    adv_usd: float
    adv_source: str
    oi_coin: float
    oi_usd: float
    oi_source: str
    funding: pd.DataFrame         # ts (floored to the minute), rate
    entry_bars: pd.DataFrame      # ts, close, volume_quote of the lookback before the window
    sigma_1m: float
    notes: list[str] = field(default_factory=list)
    # MODEL.md 1 "Mark vs last": mark-price bars on the grid of `bars` (ts, open, high, low,
    # close) for the triggers where the lake has them (fills and impact keep `bars`), else None;
    # `trigger_source` says which: "mark" (the venue's own perp), "mark: <series> (the
    # stand-in's)" or "trade bars: <why>" (kernels: mark bars iff it starts with "mark").
    mark_bars: pd.DataFrame | None = None
    trigger_source: str = "trade bars: no mark bars in the lake"
    # v2 book (MODEL.md 2; backtest/population/book.py). oi_path: the lake's OI samples known
    # up to the window end (columns ts, as_of = when the value is known, oi_coin), for FTX
    # without its own OI Binance's path, to be scaled by params[oi_scale_key]; warmup_bars:
    # the bars (ts, open, high, low, close, volume_quote) of the warm-up before the window
    # at the finest timeframe covering it (warmup_timeframe); long_share_path: the lake's
    # daily long account share (ts, as_of, long_account_share) where present.
    oi_path: pd.DataFrame | None = None
    oi_path_source: str = ""
    oi_scale_key: str | None = None
    warmup_bars: pd.DataFrame | None = None
    warmup_timeframe: str | None = None
    long_share_path: pd.DataFrame | None = None

    @property
    def warmup_bar_seconds(self) -> int:
        return TIMEFRAME_MINUTES[self.warmup_timeframe] * 60 if self.warmup_timeframe else self.bar_seconds

    @property
    def bar_seconds(self) -> int:
        return TIMEFRAME_MINUTES[self.timeframe] * 60

    @property
    def start_price(self) -> float:
        return float(self.bars["open"].iloc[0])


class SeriesLoader:
    """Queries the Catalog for a window's series. Holds the choices made (for `coverage`)."""

    def __init__(self, catalog, scenarios: Scenarios, *, params: Params, lookback_days: float = 14.0,
                 warmup_days: float | None = None):
        self.catalog = catalog
        self.sc = scenarios
        self.lookback_days = lookback_days
        self.params = params
        # the warm-up bars cover the largest warm-up the parameter ranges allow plus the entry
        # lookback, so a sweep over warmup_days needs no reload
        if warmup_days is None:
            pop = params.population
            r = params.sweep_ranges().get("population.warmup_days")
            warmup_days = max(pop.warmup_days, r[1] if r else 0.0) + pop.entry_lookback_days
        self.warmup_days = float(warmup_days)

    # -- bars -------------------------------------------------------------------------
    def _best_timeframe(self, src: PriceSource, start, end) -> tuple[str, int, float] | None:
        """(timeframe, rows, coverage) of the finest complete timeframe, else the best partial."""
        try:
            tfs = self.catalog.timeframes(src.venue, src.market, src.symbol, start, end)
        except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
            raise
        except Exception as exc:  # noqa: BLE001 — a catalog without the series
            log.debug("timeframes(%s) failed: %s", src, exc)
            return None
        best = None
        for tf, rows in tfs:
            if tf not in TIMEFRAME_MINUTES or rows <= 0:
                continue
            cov = min(1.0, rows / max(1, expected_bars(start, end, tf)))
            if cov >= MIN_COVERAGE:
                return tf, int(rows), cov
            if best is None or cov > best[2]:
                best = (tf, int(rows), cov)
        return best

    def choose_source(self, window: Window, venue: str, coin: str) -> tuple[PriceSource, str, int, float]:
        """The price series for (window, venue, coin).

        The venue's own series first (its perp, then its spot proxies): the finest usable one
        wins, the perp on a tie. Without any, a stand-in: the series the `reference_follows`
        venue itself runs on when set (both engines then see one path), else the first usable
        entry of `reference`.
        """
        tried: list[str] = []

        def usable(src: PriceSource):
            best = self._best_timeframe(src, window.start, window.end)
            if best is None or best[2] < MIN_USABLE_COVERAGE:
                tried.append(f"{src.label()} ({0.0 if best is None else best[2]:.0%} of the window)")
                return None
            return src, best[0], best[1], best[2]

        own = [(tf_minutes(c[1]), i, c) for i, src in enumerate(self.sc.own_sources(venue, coin))
               if (c := usable(src)) is not None]
        if own:
            return min(own)[2]
        follows = self.sc.venues[venue].get("reference_follows")
        if follows and follows != venue:
            try:
                return self.choose_source(window, follows, coin)
            except DataUnavailable as exc:
                tried.append(f"{follows}'s own series ({exc.reason})")
        else:
            for ref in self.sc.venues[venue].get("reference", []):
                src = PriceSource(ref["venue"], ref["market"], ref["symbol_format"].format(coin=coin))
                if (c := usable(src)) is not None:
                    return c
        raise DataUnavailable(window.id, venue, coin,
                              "no usable bars in the lake; tried " + ", ".join(tried)
                              + " (import or fetch them: `liqreplay import` / `liqreplay fetch`)")

    def bars(self, src: PriceSource, start, end, tf: str) -> pd.DataFrame:
        df = self.catalog.bars(src.venue, src.market, src.symbol, start, end, timeframe=tf)
        return normalise_bars(df) if len(df) else normalise_bars(pd.DataFrame(
            columns=["ts", "open", "high", "low", "close", "volume_base", "volume_quote"]))

    def bars_at(self, src: PriceSource, start, end, tf: str) -> pd.DataFrame:
        """Bars at `tf`, resampled from the finest stored timeframe finer than tf if needed."""
        df = self.bars(src, start, end, tf)
        if len(df) >= MIN_COVERAGE * expected_bars(start, end, tf):
            return df
        try:
            tfs = self.catalog.timeframes(src.venue, src.market, src.symbol, start, end)
        except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
            raise
        except Exception:  # noqa: BLE001
            tfs = []
        best = None   # the finer timeframe covering most of the window (coarser on a tie)
        for finer, rows in tfs:
            if finer in TIMEFRAME_MINUTES and tf_minutes(finer) < tf_minutes(tf) and \
                    tf_minutes(tf) % tf_minutes(finer) == 0 and rows > 0:
                cov = rows * tf_minutes(finer)
                if best is None or cov > best[1] or (cov == best[1] and tf_minutes(finer) > tf_minutes(best[0])):
                    best = (finer, cov)
        if best is not None:
            res = resample_bars(self.bars(src, start, end, best[0]), tf)
            if len(res) > len(df):
                df = res
        return df

    def coin_prices(self, window: Window, coins=("BTC", "ETH", "FTT", "SOL", "BNB")) -> dict[str, float]:
        """Last close before the window start of each coin (Binance spot, else perp), for
        valuing FTX collateral; coins the lake lacks are left out."""
        out: dict[str, float] = {}
        start = window.start - pd.Timedelta(days=3)
        for coin in coins:
            for market in ("spot", "perp"):
                try:
                    df = self.catalog.bars("binance", market, f"{coin}USDT", start, window.start)
                except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
                    raise
                except Exception:  # noqa: BLE001
                    continue
                if len(df):
                    out[coin] = float(df.sort_values("ts")["close"].iloc[-1])
                    break
        return out

    def collateral_paths(self, window: Window, coins) -> tuple[dict, list[str]]:
        """Per collateral coin, its price path through the window (MODEL.md 3.2): Binance spot
        {COIN}USDT bar closes at the finest timeframe stored there, each stepping in at its
        bar's CLOSE time (a bar's close is never used before it). A coin without bars keeps
        its window-start price (coin_prices); a note says so. Returns (paths, notes)."""
        paths: dict = {}
        notes: list[str] = []
        for coin in coins:
            sym = f"{coin}USDT"
            try:
                tfs = [(tf, n) for tf, n in self.catalog.timeframes("binance", "spot", sym, window.start, window.end)
                       if tf in TIMEFRAME_MINUTES and n > 0]
            except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
                raise
            except Exception:  # noqa: BLE001
                tfs = []
            # the finest timeframe that covers the window; else the one covering most of it
            span_min = (window.end - window.start) / pd.Timedelta(minutes=1)
            full = [x for x in tfs if x[1] * tf_minutes(x[0]) >= MIN_COVERAGE * span_min]
            tfs = sorted(full, key=lambda x: tf_minutes(x[0])) if full else \
                sorted(tfs, key=lambda x: (-x[1] * tf_minutes(x[0]), tf_minutes(x[0])))
            df = None
            for tf, _ in tfs:
                try:
                    raw = self.catalog.bars("binance", "spot", sym, window.start, window.end, timeframe=tf)
                except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
                    raise
                except Exception:  # noqa: BLE001
                    continue
                if len(raw):
                    df = normalise_bars(raw)
                    break
            if df is None or not len(df):
                notes.append(f"window {window.id}: collateral {coin} has no binance spot {sym} bars in the lake; "
                             f"FTX accounts hold it at its window-start price throughout")
                continue
            ts = pd.to_datetime(df["ts"], utc=True)
            ts_s = ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy().astype(np.int64)
            paths[coin] = CollateralPath.from_bars(coin, ts_s, df["close"].to_numpy(float),
                                                   df["volume_quote"].to_numpy(float), tf_minutes(tf) * 60,
                                                   source=f"binance spot {sym} {tf}")
        return paths, notes

    # -- everything for one series ----------------------------------------------------
    def load(self, window: Window, venue: str, coin: str, *, timeframe: str | None = None,
             source: tuple[PriceSource, str, int, float] | None = None) -> SeriesData:
        own_symbol = self.sc.symbol(venue, coin)
        src, tf, rows, cov = source or self.choose_source(window, venue, coin)
        notes: list[str] = []
        if timeframe is not None and timeframe != tf:
            tf = timeframe
        raw = self.bars_at(src, window.start, window.end, tf)
        if raw.empty:
            raise DataUnavailable(window.id, venue, coin, f"{src.label()} has no {tf} bars in the window")
        bars, missing = fill_gaps(raw, window.start, window.end, tf)
        n_exp = len(bars)
        gaps_pct = 100.0 * missing / max(1, n_exp)
        if missing:
            msg = (f"window {window.id}, venue {venue}, market {coin}: {missing} of {n_exp} {tf} bars "
                   f"missing in {src.label()} ({gaps_pct:.1f}%), filled flat at the last close")
            log.warning(msg)
            notes.append(msg)
        if bars["close"].isna().any() or (bars[["open", "high", "low", "close"]] <= 0).any().any():
            raise DataUnavailable(window.id, venue, coin, f"{src.label()} has non-positive or missing prices")
        substituted = (src.venue, src.market) != (venue, self.sc.venues[venue]["lake_market"]) or \
            src.symbol != own_symbol
        proxy = substituted and src.venue == venue   # the venue's own spot bars, finer than its perp's
        if proxy:
            price_source = f"proxy: {src.label()}"
            notes.append(f"window {window.id}, venue {venue}, market {coin}: {src.label()} {tf} bars "
                         f"stand in for the coarser {own_symbol} bars as the mark-price path")
        elif substituted:
            price_source = f"substituted: {src.label()}"
            notes.append(f"window {window.id}, venue {venue}, market {coin}: no {venue} bars; "
                         f"{src.label()} stands in")
        else:
            price_source = "own"

        # ADV (own venue first; a stand-in's ADV otherwise, scaled to the venue default if any)
        lake_market = self.sc.venues[venue]["lake_market"]
        adv, adv_source = self._adv(venue, lake_market, own_symbol, window.start)
        if adv is None:
            adv, adv_source = self.sc.default_adv(venue, coin)
        ref_adv, _ = self._adv(src.venue, src.market, src.symbol, window.start) if substituted else (None, "")
        if adv is None:
            adv = ref_adv if ref_adv is not None else float(raw["volume_quote"].sum() / max(window.days, 1e-9))
            adv_source = (f"lake: 30-day ADV of {src.label()}" if ref_adv is not None
                          else "window's own mean daily volume")
        if substituted and ref_adv and ref_adv > 0 and adv != ref_adv:
            # bar volumes come from the stand-in venue: scale them to this venue's liquidity
            bars["volume_quote"] = bars["volume_quote"] * (adv / ref_adv)
            notes.append(f"bar volumes scaled by {adv / ref_adv:.3f} (ADV {venue} / ADV {src.label()})")

        start_price = float(bars["open"].iloc[0])
        oi_coin, oi_source = self._oi(window, venue, coin, own_symbol)
        funding = self._funding(venue, lake_market, own_symbol, window) if not substituted else empty_funding()
        if substituted and venue == "binance":
            funding = self._funding(venue, lake_market, own_symbol, window)
        entry = self._entry_bars(src, window, tf)
        mark, trigger_source, mark_notes = self.mark_bars(window, venue, coin, src, tf, bars)
        notes.extend(mark_notes)
        oi_path, oi_path_source, oi_scale_key = self._oi_path(window, venue, coin, own_symbol)
        if oi_path is None:
            notes.append(f"window {window.id}, venue {venue}, market {coin}: no open-interest path in the lake "
                         f"(the v2 book cannot be built; v1 uses {oi_source})")
        warm, warm_tf = self._warmup_bars(src, window, venue, coin)
        return SeriesData(
            window=window, venue=venue, coin=coin, symbol=own_symbol, bars=bars, timeframe=tf,
            price_source=price_source, source=src, rows=int(len(raw)), gaps_pct=gaps_pct,
            adv_usd=float(adv), adv_source=adv_source, oi_coin=oi_coin, oi_usd=oi_coin * start_price,
            oi_source=oi_source, funding=funding, entry_bars=entry,
            sigma_1m=sigma_1m_of(bars, tf), notes=notes, mark_bars=mark, trigger_source=trigger_source,
            oi_path=oi_path, oi_path_source=oi_path_source, oi_scale_key=oi_scale_key, warmup_bars=warm,
            warmup_timeframe=warm_tf,
        )

    # -- mark-price bars (MODEL.md 1 "Mark vs last") ---------------------------------------
    def mark_bars(self, window: Window, venue: str, coin: str, src: PriceSource, tf: str,
                  bars: pd.DataFrame) -> tuple[pd.DataFrame | None, str, list[str]]:
        """Mark-price bars (lake `price_type=mark`: Binance markPriceKlines, tardis
        derivative_ticker) for the triggers of (window, venue, coin), on the grid of `bars`
        (the trade bars at `tf`). The venue's own perp first, then the series standing in for
        it (a stand-in's triggers follow the stand-in's mark). Stored at `tf` or resampled from
        a finer timeframe dividing it; usable from MIN_USABLE_COVERAGE of the window, missing
        bars then taken from the trade bars (a note counts them). Returns (mark bars or None,
        trigger_source, notes)."""
        own = PriceSource(venue, self.sc.venues[venue]["lake_market"], self.sc.symbol(venue, coin))
        cands = [own] + ([src] if (src.venue, src.market, src.symbol) != (own.venue, own.market, own.symbol) else [])
        why: list[str] = []
        for i, ms in enumerate(cands):
            df, cov, got_tf = self._mark_at(ms, window.start, window.end, tf)
            if df is None:
                if got_tf:
                    why.append(f"{ms.label()} has mark bars only at {got_tf}, coarser than the {tf} trade bars")
                continue
            if cov < MIN_USABLE_COVERAGE:
                why.append(f"{ms.label()} mark bars cover {cov:.0%} of the window")
                continue
            grid = bars[["ts", "open", "high", "low", "close"]].set_index("ts")
            m = df.set_index("ts")[["open", "high", "low", "close"]].reindex(grid.index)
            missing = int(m["close"].isna().sum())
            m = m.fillna(grid)
            m.index.name = "ts"
            label = "mark" if i == 0 else f"mark: {ms.label()} (the stand-in's)"
            notes = []
            if missing:
                notes.append(f"window {window.id}, venue {venue}, market {coin}: {missing} of {len(m)} {tf} mark "
                             f"bars missing in {ms.label()}; triggers use the trade bars there")
            return m.reset_index(), label, notes
        reason = "; ".join(why) if why else "no mark bars in the lake"
        return None, f"trade bars: {reason}", []

    def _mark_at(self, ms: PriceSource, start, end, tf: str) -> tuple[pd.DataFrame | None, float, str]:
        """(bars, coverage, "") of ms's mark bars at tf (resampled from the finest stored
        timeframe dividing tf when tf itself is not stored in full); (None, 0, coarser tf) when
        only coarser ones exist; (None, 0, "") when there are none."""
        try:
            tfs = [(t, n) for t, n in self.catalog.timeframes(ms.venue, ms.market, ms.symbol, start, end,
                                                              price_type="mark")
                   if t in TIMEFRAME_MINUTES and n > 0]
        except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
            raise
        except Exception as exc:  # noqa: BLE001 — a lake or catalog without mark bars
            log.debug("mark timeframes(%s) failed: %s", ms, exc)
            return None, 0.0, ""
        usable = sorted((t for t, _ in tfs if tf_minutes(tf) % tf_minutes(t) == 0),
                        key=lambda t: -tf_minutes(t))           # tf itself first, then finer
        if not usable:
            return None, 0.0, (min((t for t, _ in tfs), key=tf_minutes) if tfs else "")
        exp = max(1, expected_bars(start, end, tf))
        best: tuple[pd.DataFrame | None, float] = (None, 0.0)
        for t in usable:
            try:
                raw = self.catalog.bars(ms.venue, ms.market, ms.symbol, start, end, timeframe=t, price_type="mark")
            except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
                raise
            except Exception as exc:  # noqa: BLE001
                log.debug("mark bars(%s %s) failed: %s", ms, t, exc)
                continue
            if not len(raw):
                continue
            df = normalise_bars(raw)
            if t != tf:
                df = resample_bars(df, tf)
            df = df[(df.ts >= start) & (df.ts < end)]
            cov = min(1.0, len(df) / exp)
            if cov > best[1]:
                best = (df.reset_index(drop=True), cov)
            if cov >= MIN_COVERAGE:
                break
        return best[0], best[1], ""

    # -- v2 book inputs -----------------------------------------------------------------
    def _lake_oi_path(self, venue: str, symbol: str, start, end) -> pd.DataFrame | None:
        q = getattr(self.catalog, "open_interest_path", None)
        if q is None:
            return None
        try:
            df = q(venue, symbol, start, end)
        except LakeDamaged:
            raise
        except Exception as exc:  # noqa: BLE001 — a catalog without the series
            log.debug("open_interest_path(%s %s) failed: %s", venue, symbol, exc)
            return None
        if df is None or len(df) == 0:
            return None
        df = df[np.isfinite(df["oi_base"].astype(float)) & (df["oi_base"].astype(float) > 0)]
        if df.empty:
            return None
        return pd.DataFrame({"ts": pd.to_datetime(df["ts"], utc=True), "as_of": pd.to_datetime(df["as_of"], utc=True),
                             "oi_coin": df["oi_base"].astype(float).to_numpy(),
                             "source": df["source"].astype(str).to_numpy()}).reset_index(drop=True)

    def _oi_path(self, window: Window, venue: str, coin: str, symbol: str
                 ) -> tuple[pd.DataFrame | None, str, str | None]:
        """The OI path for the v2 book: every lake sample known in (warm-up start, window end]
        (never one known later). FTX without its own OI: Binance's path, to be scaled by
        `ftx.oi_ratio_to_binance.<COIN>` (the key returned), the source says so."""
        start = window.start - pd.Timedelta(days=self.warmup_days)
        df = self._lake_oi_path(venue, symbol, start, window.end)
        if df is not None:
            first = df["as_of"].iloc[0]
            return df[["ts", "as_of", "oi_coin"]], (f"lake: {venue} {symbol} OI ({df['source'].iloc[0]}), first known "
                                                    f"{first:%Y-%m-%d %H:%M} UTC"), None
        if venue == "binance":
            return None, "", None
        bsym = self.sc.symbol("binance", coin)
        df = self._lake_oi_path("binance", bsym, start, window.end)
        if df is None:
            return None, "", None
        key, _ = self._oi_ratio(coin)
        first = df["as_of"].iloc[0]
        return df[["ts", "as_of", "oi_coin"]], (f"lake: binance {bsym} OI ({df['source'].iloc[0]}, first known "
                                                f"{first:%Y-%m-%d %H:%M} UTC)"), key

    def _warmup_bars(self, src: PriceSource, window: Window, venue: str | None = None,
                     coin: str | None = None) -> tuple[pd.DataFrame | None, str | None]:
        """Bars of [window start - warm-up - entry lookback, window start) for the book: from
        the series the window runs on, else another series of the venue (its sources in
        order: own perp, spot proxies, stand-ins), the finest timeframe covering >= 90% of the
        default warm-up plus lookback before the start (else the best-covering one); loaded
        from the longest warm-up the parameter range allows, gaps filled flat."""
        start = window.start - pd.Timedelta(days=self.warmup_days)
        end = window.start
        need_days = self.params.population.warmup_days + self.params.population.entry_lookback_days
        need_start = end - pd.Timedelta(days=need_days)
        cands = [src] + ([x for x in self.sc.sources(venue, coin) if x != src] if venue and coin else [])
        best = None        # (coverage, -minutes, src, tf)
        for cand in cands:
            try:
                have = self.catalog.timeframes(cand.venue, cand.market, cand.symbol, need_start, end)
                tfs = [(tf, n) for tf, n in have if tf in TIMEFRAME_MINUTES and n > 0]
            except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
                raise
            except Exception as exc:  # noqa: BLE001
                log.debug("timeframes(%s) failed: %s", cand, exc)
                tfs = []
            covs = [(min(1.0, n / max(1, expected_bars(need_start, end, tf))), tf) for tf, n in tfs]
            good = sorted([c for c in covs if c[0] >= MIN_USABLE_COVERAGE], key=lambda c: tf_minutes(c[1]))
            if good:
                best = (good[0][0], cand, good[0][1])
                break
            for cov, tf in covs:
                if best is None or cov > best[0]:
                    best = (cov, cand, tf)
        if best is None:
            return None, None
        _, cand, tf = best
        raw = self.bars(cand, start, end, tf)
        if raw.empty:
            return None, None
        bars, _ = fill_gaps(raw, raw["ts"].iloc[0], end, tf)
        return bars, tf

    def _adv(self, venue, market, symbol, before) -> tuple[float | None, str]:
        try:
            v = self.catalog.adv_usd(venue, market, symbol, before, days=30)
        except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
            raise
        except Exception as exc:  # noqa: BLE001
            log.debug("adv_usd(%s %s %s) failed: %s", venue, market, symbol, exc)
            v = None
        if v is None or not np.isfinite(v) or v <= 0:
            return None, ""
        return float(v), f"lake: 30-day ADV of {venue} {market} {symbol}"

    def _oi_ratio(self, coin: str) -> tuple[str, float]:
        """(the parameter key, FTX OI / Binance OI) of `coin`: its own entry, else the default."""
        table = self.params.ftx.oi_ratio_to_binance
        name = coin.upper() if coin.upper() in table else "default"
        return f"{table.key}.{name}", table[name]

    def _oi(self, window: Window, venue: str, coin: str, symbol: str) -> tuple[float, str]:
        rec = None
        try:
            rec = self.catalog.open_interest(venue, symbol, window.start.to_pydatetime())
        except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
            raise
        except Exception as exc:  # noqa: BLE001
            log.debug("open_interest(%s %s) failed: %s", venue, symbol, exc)
        if rec and rec.get("oi_base") and np.isfinite(rec["oi_base"]) and rec["oi_base"] > 0:
            ts = pd.Timestamp(rec["ts"]).tz_convert("UTC") if rec.get("ts") is not None else None
            age = window.start - ts if ts is not None else pd.Timedelta(0)
            if age <= pd.Timedelta(days=3):
                return float(rec["oi_base"]), f"lake: {rec.get('source') or 'open_interest'} {ts.date() if ts else ''}"
        if venue == "ftx":
            bsym = self.sc.symbol("binance", coin)
            try:
                brec = self.catalog.open_interest("binance", bsym, window.start.to_pydatetime())
            except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
                raise
            except Exception:  # noqa: BLE001
                brec = None
            if brec and brec.get("oi_base") and np.isfinite(brec["oi_base"]) and brec["oi_base"] > 0:
                key, ratio = self._oi_ratio(coin)
                return float(brec["oi_base"]) * ratio, (f"lake: binance {bsym} {brec.get('source') or 'open_interest'} "
                                                        f"{pd.Timestamp(brec['ts']).date()} x {key} = {ratio:g}")
        try:
            return self.sc.default_oi_coin(venue, coin, window.id)
        except KeyError as exc:
            raise DataUnavailable(window.id, venue, coin, f"no open interest in the lake and {exc.args[0]}") from None

    def _funding(self, venue, market, symbol, window: Window) -> pd.DataFrame:
        try:
            f = self.catalog.funding(venue, symbol, window.start, window.end, market=market)
        except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
            raise
        except Exception as exc:  # noqa: BLE001
            log.debug("funding(%s %s) failed: %s", venue, symbol, exc)
            return empty_funding()
        if f is None or len(f) == 0:
            return empty_funding()
        out = pd.DataFrame({"ts": pd.to_datetime(f["ts"], utc=True).dt.floor("min"),
                            "rate": f["rate"].astype("float64")})
        out = out[(out.ts >= window.start) & (out.ts < window.end)].dropna()
        return out.sort_values("ts").reset_index(drop=True)

    def _entry_bars(self, src: PriceSource, window: Window, tf: str) -> pd.DataFrame:
        lb_start = window.start - pd.Timedelta(days=self.lookback_days)
        try:
            df = self.catalog.bars(src.venue, src.market, src.symbol, lb_start, window.start)
            df = normalise_bars(df) if len(df) else None
        except LakeDamaged:  # a damaged lake file refuses the run, never a silent stand-in
            raise
        except Exception as exc:  # noqa: BLE001
            log.debug("entry bars failed: %s", exc)
            df = None
        if df is None or df.empty:
            df = self.bars_at(src, window.start, min(window.end, window.start + pd.Timedelta(days=1)), tf)
        return df[["ts", "close", "volume_quote"]].reset_index(drop=True)


def empty_funding() -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.Series([], dtype="datetime64[us, UTC]"), "rate": pd.Series([], dtype="float64")})


def load_window_series(loader: SeriesLoader, window: Window, venues, coins
                       ) -> tuple[dict[tuple[str, str], SeriesData], list[str]]:
    """All (venue, coin) series of a window. The whole-year window runs every series at the
    coarsest common timeframe. Returns (series, problems): a series that cannot load is left
    out with its message in `problems`."""
    problems: list[str] = []
    chosen: dict[tuple[str, str], tuple] = {}
    for v in venues:
        for c in coins:
            try:
                chosen[(v, c)] = loader.choose_source(window, v, c)
            except DataUnavailable as exc:
                problems.append(str(exc))
    common_tf = None
    if window.whole_year and chosen:
        common_tf = max((ch[1] for ch in chosen.values()), key=tf_minutes)
    out: dict[tuple[str, str], SeriesData] = {}
    for key, ch in chosen.items():
        try:
            out[key] = loader.load(window, key[0], key[1], timeframe=common_tf, source=ch)
        except DataUnavailable as exc:
            problems.append(str(exc))
    return out, problems
