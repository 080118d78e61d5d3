"""Fixtures for the report tests: synthetic Contract 3 results directories."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture_results import EVIL, write_fixture  # noqa: E402


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory) -> Path:
    """Five windows + the year, one skipped, with a sweep, and markup in labels and a parameter."""
    return write_fixture(tmp_path_factory.mktemp("results") / "run", label_suffix=f" {EVIL}",
                         evil_param=True)


@pytest.fixture(scope="session")
def no_sweep_dir(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("results") / "nosweep", with_sweep=False, skip=())


@pytest.fixture
def evil() -> str:
    return EVIL
