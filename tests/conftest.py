"""Shared test fixtures. No test may open a socket outside 127.0.0.1."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LIQREPLAY_SEED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch, request):
    """Refuse any connection that would leave the machine (live tests excepted)."""
    if request.node.get_closest_marker("live"):
        return
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (
            host.startswith("127.") or host in ("localhost", "::1") or self.family == socket.AF_UNIX
        ):
            raise OSError(f"test tried to reach {host!r}: tests are loopback-only")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real 2022 bars in ../shared/data (read-only; never copied into the repo)."""
    if not (SHARED_DATA / "datasets.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
