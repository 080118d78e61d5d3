"""One progress display for every stage (import, fetch, refresh, run, sweep): tqdm.

Bottom layer, so backtest/ (run, sweep) uses it too. A bar only on a terminal (or when
`enabled=True`); elsewhere tqdm is disabled and costs nothing, and the commands log their
own one-line summaries instead (DESIGN.md: progress bars only on a terminal).
"""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", *,
                 enabled: bool | None = None, file=None, **kw) -> tqdm:
    """A tqdm bar on stderr: shown when `enabled` is True, or on a terminal when None.
    Use `.update()`, `.set_postfix_str()`, `.close()` (or as a context manager)."""
    out = file or sys.stderr
    show = (out.isatty() if hasattr(out, "isatty") else False) if enabled is None else enabled
    return tqdm(total=total, desc=desc, unit=unit, file=out, disable=not show, dynamic_ncols=True,
                leave=False, **kw)
