"""Sorted trigger books: longs by trigger descending, shorts ascending, a pointer walked per bar,
plus a heap for accounts whose trigger was recomputed."""
from __future__ import annotations

import heapq

import numpy as np


class TriggerBook:
    """Accounts of one side keyed by trigger price. direction -1 (longs: fire when price <=
    trigger; best = highest), +1 (shorts: fire when price >= trigger; best = lowest)."""

    def __init__(self, idx: np.ndarray, trig: np.ndarray, direction: int, n_total: int):
        self.dir = direction
        ok = np.isfinite(trig) & (trig > 0)
        idx, trig = idx[ok], trig[ok]
        order = np.argsort(trig * direction, kind="stable")      # best first
        self.idx = idx[order]
        self.trig = trig[order]
        self.key = self.trig * direction                          # ascending
        self.ptr = 0
        self.version = np.zeros(n_total, dtype=np.int64)         # bump = stale everywhere
        self.in_fresh = np.zeros(n_total, dtype=bool)
        self.in_fresh[self.idx] = True
        self.heap: list[tuple[float, int, int]] = []             # (key, account, version)

    def _skip(self):
        while self.ptr < len(self.idx) and not self.in_fresh[self.idx[self.ptr]]:
            self.ptr += 1

    def top(self) -> float:
        """Most imminent trigger price (nan if empty)."""
        self._skip()
        best = self.key[self.ptr] if self.ptr < len(self.idx) else np.inf
        while self.heap and self.heap[0][2] != self.version[self.heap[0][1]]:
            heapq.heappop(self.heap)
        if self.heap:
            best = min(best, self.heap[0][0])
        return float(best * self.dir) if np.isfinite(best) else np.nan

    def take(self, extreme: float) -> tuple[np.ndarray, np.ndarray]:
        """Remove and return (accounts, triggers) whose trigger the price `extreme` reaches."""
        lim = extreme * self.dir          # reached when key <= lim
        self._skip()
        end = int(np.searchsorted(self.key, lim, side="right"))
        a, t = np.zeros(0, np.int64), np.zeros(0)
        if end > self.ptr:
            sl = self.idx[self.ptr:end]
            live = self.in_fresh[sl]
            a, t = sl[live], self.trig[self.ptr:end][live]
            self.in_fresh[a] = False
            self.ptr = end
        extra_a, extra_t = [], []
        while self.heap and self.heap[0][0] <= lim:
            key, acc, ver = heapq.heappop(self.heap)
            if ver == self.version[acc]:
                extra_a.append(acc)
                extra_t.append(key * self.dir)
                self.version[acc] += 1
        if extra_a:
            a = np.concatenate([a, np.asarray(extra_a, np.int64)])
            t = np.concatenate([t, np.asarray(extra_t)])
        return a, t

    def remove(self, accounts) -> None:
        accounts = np.atleast_1d(accounts)
        self.in_fresh[accounts] = False
        self.version[accounts] += 1

    def put(self, accounts, trig) -> None:
        """(Re-)insert accounts with new triggers (nan/<=0: never fires)."""
        accounts = np.atleast_1d(accounts)
        trig = np.atleast_1d(trig)
        self.remove(accounts)
        for a, t in zip(accounts.tolist(), trig.tolist(), strict=True):
            if t == t and t > 0:
                heapq.heappush(self.heap, (t * self.dir, a, int(self.version[a])))


