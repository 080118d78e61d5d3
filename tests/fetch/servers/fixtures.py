"""pytest fixtures for the loopback servers; import them into a test module by name."""
from __future__ import annotations

import pytest

from tests.fetch.servers.fapi import BarBook, FapiServer
from tests.fetch.servers.tardis import TardisServer
from tests.fetch.servers.vision import VisionServer


@pytest.fixture
def book() -> BarBook:
    """Synthetic 1m BTCUSDT bars, 2022-10-30 .. 2022-11-10 (deterministic)."""
    return BarBook().add_synthetic("BTCUSDT", "2022-10-30", "2022-11-10")


@pytest.fixture
def fapi(book):
    with FapiServer(book, extra_listed=("ETHUSDT",)) as srv:
        yield srv


@pytest.fixture
def vision():
    with VisionServer() as srv:
        yield srv


@pytest.fixture
def tardis_server():
    with TardisServer(api_key="test-key") as srv:
        yield srv


class Sleeps(list):
    """A sleep() that records the delays instead of waiting."""

    def __call__(self, s: float) -> None:
        self.append(s)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()
