"""Fixtures shared by the functional tests that run a portal and a J-LIS over real HTTP."""

import pytest
from enrollment_portal import simulated_world


@pytest.fixture
def world(tmp_path):
    """The simulated J-LIS (served on loopback) with card ``taro`` and phone ``pixel``."""
    with simulated_world(tmp_path / "sim") as world:
        yield world


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.redis])])
def stores(request) -> dict[str, str]:
    """The portal's stores: SQLite with the in-process store, or PostgreSQL with Redis."""
    if request.param == "sqlite":
        return {}
    database = request.getfixturevalue("postgres_database")
    redis_url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")  # this test's keys only, deleted afterwards
    return {"database_url": database, "redis_url": redis_url, "redis_prefix": prefix}
