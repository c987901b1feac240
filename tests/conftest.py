"""Fixtures shared by every test: the real servers (Redis, PostgreSQL) and fresh stores on them.

No mocks: a test that needs Redis or PostgreSQL gets the real server. When one is not running
the test is skipped with the command that starts it, except in CI (``CI=true``), where a missing
server is a failure.
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from idp.clock import FixedClock
from idp.store.ephemeral import EphemeralStore, MemoryEphemeralStore, RedisEphemeralStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
START_REDIS = "redis-server --daemonize yes --port 6379 --save ''"
START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
EPOCH = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)


def server_missing(message: str) -> None:
    """Skip the test, or fail it in CI, where every server must be up."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis (``TEST_REDIS_URL``), checked to answer."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        server_missing(f"Redis is not running on 127.0.0.1:6379: start it with `{START_REDIS}` ({exc})")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL database (``TEST_DATABASE_URL``), checked to answer."""
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the same to the test run
        server_missing(f"PostgreSQL is not running on 127.0.0.1:5432: start it with `{START_POSTGRES}` ({exc})")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"test_{secrets.token_hex(6)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def sqlite_database(tmp_path: Path) -> str:
    """The URL of a new SQLite file."""
    return f"sqlite:///{tmp_path / 'idp.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A new, empty database on each supported backend in turn."""
    fixture = "sqlite_database" if request.param == "sqlite" else "postgres_database"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test Redis returning bytes."""
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"test:{secrets.token_hex(8)}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def fixed_clock() -> FixedClock:
    """A clock standing at ``EPOCH`` until a test moves it."""
    return FixedClock(EPOCH)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def ephemeral_store(request: pytest.FixtureRequest, fixed_clock: FixedClock) -> EphemeralStore:
    """Each ephemeral store in turn: in-process on ``fixed_clock``, and Redis under a fresh prefix."""
    if request.param == "memory":
        return MemoryEphemeralStore(fixed_clock)
    client: redis.Redis = request.getfixturevalue("redis_client")
    return RedisEphemeralStore(client, prefix=request.getfixturevalue("redis_prefix"))


@pytest.fixture
def elapse(ephemeral_store: EphemeralStore, fixed_clock: FixedClock) -> Callable[[timedelta], None]:
    """Let time pass for ``ephemeral_store``: move the fixed clock, or really wait for Redis."""
    if isinstance(ephemeral_store, MemoryEphemeralStore):
        return fixed_clock.advance

    def wait(delta: timedelta) -> None:
        time.sleep(delta.total_seconds())

    return wait
