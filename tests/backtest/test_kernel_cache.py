"""backtest.kernel_cache: a module's numba cache entries go when a file it compiles from changes."""
from __future__ import annotations

from backtest.kernel_cache import drop_stale


def test_cache_entries_are_dropped_when_a_dependency_changes_and_kept_otherwise(tmp_path):
    mod, dep = tmp_path / "kern.py", tmp_path / "helper.py"
    mod.write_text("x = 1\n")
    dep.write_text("y = 1\n")
    cache = tmp_path / "__pycache__"
    drop_stale(mod, [dep])                       # first call: stamps (nothing to delete)
    entries = [cache / "kern.f-10.py311.nbi", cache / "kern.f-10.py311.1.nbc"]
    other = cache / "other.g-3.py311.nbi"        # another module's entry is never touched
    for f in [*entries, other]:
        f.write_bytes(b"compiled")
    drop_stale(mod, [dep])                       # nothing changed: kept
    assert all(f.exists() for f in [*entries, other])
    dep.write_text("y = 2\n")                    # a helper changed: this module's entries go
    drop_stale(mod, [dep])
    assert not any(f.exists() for f in entries) and other.exists()
    for f in entries:
        f.write_bytes(b"compiled again")
    drop_stale(mod, [dep])                       # recompiled against the new helper: kept
    assert all(f.exists() for f in entries)
