"""One retry helper for every network source (ccxt, data.binance.vision, tardis.dev).

The shape of freqtrade's `exchange/common.py` retrier: the wrapped call raises `Retryable`
for a failure worth another try (network, timeout, HTTP 429/418/5xx) and anything else for
a permanent one; the helper logs one line per retry, backs off exponentially (a larger
Retry-After wins, capped), and gives up after `attempts` tries or once `deadline_s` of
waiting would be exceeded, raising `SourceError(temporary=True)` ("retry later": exit 75).
`sleep` is injectable so tests run the backoff without waiting.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class SourceError(Exception):
    """A fetch failed. `temporary` says whether retrying later may help."""

    def __init__(self, message: str, *, temporary: bool):
        super().__init__(message)
        self.temporary = temporary


class Retryable(Exception):
    """Raised inside a retried call: worth another attempt (optionally after Retry-After)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: base * 2**attempt, capped; Retry-After wins when larger.
    `deadline_s`: give up rather than wait past this many seconds in total (None: no bound)."""

    attempts: int = 6
    base_s: float = 1.0
    cap_s: float = 60.0
    retry_after_cap_s: float = 300.0
    deadline_s: float | None = None

    def delay(self, attempt: int, retry_after: float | None) -> float:
        d = min(self.cap_s, self.base_s * (2 ** attempt))
        if retry_after is not None:
            d = max(d, min(retry_after, self.retry_after_cap_s))
        return d


def call_with_retry(fn: Callable[[], T], *, what: str, policy: RetryPolicy,
                    sleep: Callable[[float], None] = time.sleep,
                    on_attempt: Callable[[], None] | None = None) -> T:
    """Run `fn()`; on `Retryable` wait and try again as `policy` says (one log line per
    retry); after the last attempt raise SourceError(temporary=True) naming `what`."""
    attempt = 0
    waited = 0.0
    while True:
        if on_attempt is not None:
            on_attempt()
        try:
            return fn()
        except Retryable as exc:
            delay = policy.delay(attempt, exc.retry_after)
            out_of_time = policy.deadline_s is not None and waited + delay > policy.deadline_s
            if attempt + 1 >= policy.attempts or out_of_time:
                raise SourceError(f"{what}: gave up after {attempt + 1} attempts: {exc}",
                                  temporary=True) from None
            log.warning("%s: %s; retry %d/%d in %.2fs", what, exc, attempt + 1, policy.attempts - 1, delay)
            sleep(delay)
            waited += delay
            attempt += 1
