"""Keep numba's on-disk cache honest about the files a kernel compiles from.

numba invalidates a cached function when its *own* source file changes, not when a helper it
inlines from another file does (a kernel calling backtest/rng.py or backtest/execution.py
would keep stale machine code after those change). `drop_stale(module_file, deps)` stamps the
module's cache entries with a hash of the module and its dependencies and deletes them when
that hash changes. Call it at the top of a module that defines `@njit(cache=True)` functions,
before they are first called (import time is enough: numba reads the cache at the first call).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

BACKTEST = Path(__file__).resolve().parent


def drop_stale(module_file: str | Path, deps: list[str | Path]) -> None:
    """Delete `module_file`'s numba cache entries (its `__pycache__/<stem>.*.nbi/.nbc`) when
    the module or one of `deps` (paths, relative ones under backtest/) changed since they were
    written. A read-only install is left to numba's own rules."""
    here = Path(module_file).resolve()
    srcs = [here] + sorted({(BACKTEST / d).resolve() if not Path(d).is_absolute() else Path(d) for d in deps})
    try:
        digest = hashlib.sha1(b"".join(p.read_bytes() for p in srcs)).hexdigest()
        cache = here.parent / "__pycache__"
        stamp = cache / f"{here.stem}.deps.sha1"
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for f in list(cache.glob(f"{here.stem}.*.nbi")) + list(cache.glob(f"{here.stem}.*.nbc")):
            f.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass
