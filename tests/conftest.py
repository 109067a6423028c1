"""Shared fixtures: the default CarePath loaded once per test session."""

from __future__ import annotations

import pytest

from cds_server.carepath_store import DEFAULT_CAREPATHS, load_carepath
from cds_server.engine import CarePath


@pytest.fixture(scope="session")
def neck_pain() -> CarePath:
    """The Neck Pain CarePath as shipped."""
    return load_carepath(DEFAULT_CAREPATHS[0])
