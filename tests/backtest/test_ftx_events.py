"""The FTX kernels' event sink (chunks of rows) and the recorder's event frame."""
from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from backtest.replay.ftx.accounts import NI
from backtest.replay.ftx.events import EV_CHUNK, ev_add, event_columns, new_sink
from backtest.replay.recorder import FLOAT_COLS, MECHS, Recorder, distinct


@njit(cache=False)
def _fill(n, per_tick):
    """n events, per_tick to a tick, each tick's accounts in descending order (a kernel emits a
    tick's events in serving order); every field a function of the emission index r."""
    ints = np.zeros(NI, np.int64)
    evs = new_sink(ints)
    for r in range(n):
        tick = r // per_tick
        acc = 10 * tick + (per_tick - 1 - r % per_tick)
        ev_add(evs, ints, float(tick), float(acc), 1.0 if r % 2 else -1.0, float(r % 3), r + 0.5, 2.0 * r,
               3.0 * r, 4.0 * r, -r - 0.25, r * 0.125, float(tick // 7))
    return len(evs), event_columns(evs, ints)


def test_sink_across_chunks_in_time_account_order():
    n, per = 2 * EV_CHUNK + 5, 3
    nchunks, (blk, acc, side, mech, bar) = _fill(n, per)
    assert nchunks == 3
    assert blk.shape == (len(FLOAT_COLS), n) and blk.flags.c_contiguous
    assert acc.dtype == np.int64 and bar.dtype == np.int64 and side.dtype == np.int8 and mech.dtype == np.int8
    t = blk[0]
    assert np.all((np.diff(t) > 0) | ((np.diff(t) == 0) & (np.diff(acc) > 0)))
    r = (blk[1] - 0.5).astype(np.int64)         # the emission index of each output row
    assert sorted(r.tolist()) == list(range(n))
    np.testing.assert_array_equal(t, r // per)
    np.testing.assert_array_equal(acc, 10 * (r // per) + (per - 1 - r % per))
    np.testing.assert_array_equal(side, np.where(r % 2 == 1, 1, -1))
    np.testing.assert_array_equal(mech, r % 3)
    np.testing.assert_array_equal(blk[2:], np.vstack([2.0 * r, 3.0 * r, 4.0 * r, -r - 0.25, r * 0.125]))
    np.testing.assert_array_equal(bar, (r // per) // 7)


def test_empty_sink():
    nchunks, (blk, acc, side, mech, bar) = _fill(0, 1)
    assert nchunks == 1 and blk.shape == (len(FLOAT_COLS), 0) and acc.size == 0


def _events(n, seed):
    rng = np.random.default_rng(seed)
    blk = rng.normal(size=(len(FLOAT_COLS), n))
    blk[0] = rng.integers(0, n // 4 + 1, n).astype(float)
    return blk, rng.integers(0, 50, n), rng.choice([-1, 1], n), rng.integers(0, len(MECHS), n)


def test_frame_from_block_matches_frame_from_adds():
    blk, acc, side, mech = _events(400, 1)
    a = Recorder(3)
    a.set_block(blk, acc, side, mech)
    fa = a.events_frame()
    b = Recorder(3)
    for j in range(blk.shape[1]):
        b.add(0, MECHS[mech[j]], blk[0, j], acc[j], side[j], *blk[1:5, j], blk[5, j], blk[6, j])
    fb = b.events_frame()
    assert list(fa.columns) == ["t_s", "account", "side", "mechanism", *FLOAT_COLS[1:]]
    pd.testing.assert_frame_equal(fa, fb)
    # sorted by (time, account), stably; the codes follow the rows
    o = np.lexsort((acc, blk[0]))
    np.testing.assert_array_equal(fa["qty_coin"].to_numpy(), blk[1][o])
    assert list(fa["mechanism"]) == [MECHS[m] for m in mech[o]]
    np.testing.assert_array_equal(a.codes, mech[o])
    assert fa["mechanism"].dtype == pd.Series(["step1"]).dtype


def test_frame_on_an_ordered_block_is_not_a_copy():
    blk, acc, side, mech = _events(200, 2)
    o = np.lexsort((acc, blk[0]))
    blk = np.ascontiguousarray(blk[:, o])
    r = Recorder(1)
    r.set_block(blk, acc[o], side[o], mech[o])
    f = r.events_frame()
    assert np.shares_memory(f["price"].to_numpy(), blk)


def test_distinct():
    assert distinct(np.zeros(0, np.int64)) == 0
    assert distinct(np.array([3, 3, 0, 7])) == 3
    assert distinct(np.array([-1, 5, 5, 10**12])) == 3
