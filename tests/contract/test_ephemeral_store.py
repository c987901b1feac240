"""One behaviour suite for both ephemeral stores (in-process and Redis), as style.md §7 asks."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import redis

from idp.store.ephemeral import (
    EphemeralStoreError,
    EphemeralStoreUnavailable,
    MemoryEphemeralStore,
    RedisEphemeralStore,
    open_ephemeral_store,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from idp.clock import FixedClock
    from idp.store.ephemeral import EphemeralStore

TTL = timedelta(seconds=1)
"""Short enough that the Redis run really waits it out in the two expiry tests."""
PAST_TTL = timedelta(seconds=1.1)
TAKERS = 50


# --- key-value -------------------------------------------------------------------------------


def test_put_then_get_returns_the_value(ephemeral_store: EphemeralStore):
    ephemeral_store.put("transaction", b"\x00state\xff", ttl=TTL)

    assert ephemeral_store.get("transaction") == b"\x00state\xff"
    assert ephemeral_store.get("transaction") == b"\x00state\xff"


def test_get_of_an_absent_key_is_none(ephemeral_store: EphemeralStore):
    assert ephemeral_store.get("never-stored") is None


def test_get_many_returns_the_values_in_order_none_for_absent(ephemeral_store: EphemeralStore):
    ephemeral_store.put("first", b"\x00one", ttl=TTL)
    ephemeral_store.put("third", b"three\xff", ttl=TTL)

    values = ephemeral_store.get_many(["third", "second", "first", "third"])

    assert values == [b"three\xff", None, b"\x00one", b"three\xff"]
    assert ephemeral_store.get_many([]) == []


def test_get_many_misses_expired_values(ephemeral_store: EphemeralStore, elapse: Callable[[timedelta], None]):
    ephemeral_store.put("short", b"state", ttl=TTL)
    ephemeral_store.put("long", b"state", ttl=timedelta(minutes=1))

    elapse(PAST_TTL)

    assert ephemeral_store.get_many(["short", "long"]) == [None, b"state"]


def test_put_replaces_the_value(ephemeral_store: EphemeralStore):
    ephemeral_store.put("transaction", b"first", ttl=TTL)
    ephemeral_store.put("transaction", b"second", ttl=TTL)

    assert ephemeral_store.get("transaction") == b"second"


def test_delete_removes_the_key_once(ephemeral_store: EphemeralStore):
    ephemeral_store.put("transaction", b"state", ttl=TTL)

    assert ephemeral_store.delete("transaction") is True
    assert ephemeral_store.get("transaction") is None
    assert ephemeral_store.delete("transaction") is False


def test_value_expires_after_its_ttl(ephemeral_store: EphemeralStore, elapse: Callable[[timedelta], None]):
    ephemeral_store.put("transaction", b"state", ttl=TTL)
    assert ephemeral_store.put_new("code", b"one-time", ttl=TTL) is True
    ephemeral_store.put("renewed", b"state", ttl=TTL)
    ephemeral_store.put("renewed", b"renewed state", ttl=timedelta(minutes=1))

    elapse(PAST_TTL)

    assert ephemeral_store.get("transaction") is None
    assert ephemeral_store.get("renewed") == b"renewed state"
    assert ephemeral_store.take("code") is None
    assert ephemeral_store.put_new("code", b"reissued", ttl=TTL) is True


# --- one-time --------------------------------------------------------------------------------


def test_put_new_refuses_an_existing_key(ephemeral_store: EphemeralStore):
    assert ephemeral_store.put_new("jti", b"first", ttl=TTL) is True

    assert ephemeral_store.put_new("jti", b"replayed", ttl=TTL) is False
    assert ephemeral_store.get("jti") == b"first"


def test_take_returns_the_value_once(ephemeral_store: EphemeralStore):
    ephemeral_store.put_new("code", b"grant", ttl=TTL)

    assert ephemeral_store.take("code") == b"grant"
    assert ephemeral_store.take("code") is None


def test_one_of_fifty_concurrent_takers_gets_the_value(ephemeral_store: EphemeralStore):
    ephemeral_store.put_new("code", b"grant", ttl=timedelta(minutes=1))
    start = threading.Barrier(TAKERS)

    def take() -> bytes | None:
        start.wait()
        return ephemeral_store.take("code")

    with ThreadPoolExecutor(max_workers=TAKERS) as pool:
        results = list(pool.map(lambda _: take(), range(TAKERS)))

    assert results.count(b"grant") == 1
    assert results.count(None) == TAKERS - 1


def test_take_marking_takes_once_and_recognises_the_second_use(ephemeral_store: EphemeralStore):
    ephemeral_store.put_new("code", b"grant", ttl=TTL)

    assert ephemeral_store.take_marking("code", marker="used", ttl=TTL) == (True, b"grant")
    assert ephemeral_store.take_marking("code", marker="used", ttl=TTL) == (False, None)
    assert ephemeral_store.get("code") is None


def test_take_marking_of_an_absent_key_still_leaves_the_marker(ephemeral_store: EphemeralStore):
    assert ephemeral_store.take_marking("never-issued", marker="used", ttl=TTL) == (True, None)
    assert ephemeral_store.take_marking("never-issued", marker="used", ttl=TTL) == (False, None)


def test_take_marking_marker_expires(ephemeral_store: EphemeralStore, elapse: Callable[[timedelta], None]):
    ephemeral_store.take_marking("code", marker="used", ttl=timedelta(seconds=1))
    elapse(timedelta(seconds=1.1))

    assert ephemeral_store.take_marking("code", marker="used", ttl=TTL) == (True, None)


def test_one_of_fifty_concurrent_markers_is_first(ephemeral_store: EphemeralStore):
    ephemeral_store.put_new("code", b"grant", ttl=timedelta(minutes=1))
    start = threading.Barrier(TAKERS)

    def take() -> tuple[bool, bytes | None]:
        start.wait()
        return ephemeral_store.take_marking("code", marker="used", ttl=TTL)

    with ThreadPoolExecutor(max_workers=TAKERS) as pool:
        results = list(pool.map(lambda _: take(), range(TAKERS)))

    assert results.count((True, b"grant")) == 1
    assert results.count((False, None)) == TAKERS - 1


# --- counters --------------------------------------------------------------------------------


def test_increment_counts_from_the_amount(ephemeral_store: EphemeralStore):
    assert ephemeral_store.increment("attempts", ttl=TTL) == 1
    assert ephemeral_store.increment("attempts", ttl=TTL) == 2
    assert ephemeral_store.increment("attempts", ttl=TTL, amount=5) == 7
    assert ephemeral_store.get("attempts") == b"7"


def test_increment_keeps_the_first_ttl(ephemeral_store: EphemeralStore, elapse: Callable[[timedelta], None]):
    ephemeral_store.increment("attempts", ttl=TTL)
    elapse(TTL / 2)
    ephemeral_store.increment("attempts", ttl=TTL)

    elapse(PAST_TTL - TTL / 2)

    assert ephemeral_store.get("attempts") is None
    assert ephemeral_store.increment("attempts", ttl=TTL) == 1


def test_increment_of_a_value_that_is_no_counter_is_refused(ephemeral_store: EphemeralStore):
    ephemeral_store.put("transaction", b"state", ttl=TTL)

    with pytest.raises(EphemeralStoreError):
        ephemeral_store.increment("transaction", ttl=TTL)
    assert ephemeral_store.get("transaction") == b"state"


def test_increment_past_64_bits_is_refused(ephemeral_store: EphemeralStore):
    ephemeral_store.increment("attempts", ttl=TTL, amount=2**63 - 1)

    with pytest.raises(EphemeralStoreError):
        ephemeral_store.increment("attempts", ttl=TTL)
    assert ephemeral_store.get("attempts") == str(2**63 - 1).encode()


# --- TTLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1)], ids=["zero", "negative"])
@pytest.mark.parametrize(
    "operation",
    [
        lambda store, ttl: store.put("key", b"value", ttl=ttl),
        lambda store, ttl: store.put_new("key", b"value", ttl=ttl),
        lambda store, ttl: store.increment("key", ttl=ttl),
        lambda store, ttl: store.take_marking("other", marker="key", ttl=ttl),
    ],
    ids=["put", "put_new", "increment", "take_marking"],
)
def test_non_positive_ttl_is_refused(ephemeral_store: EphemeralStore, operation, ttl: timedelta):
    with pytest.raises(ValueError, match="ttl must be positive"):
        operation(ephemeral_store, ttl)
    assert ephemeral_store.get("key") is None


# --- the in-process store --------------------------------------------------------------------


def test_memory_store_refuses_a_forked_process(fixed_clock: FixedClock):
    store = MemoryEphemeralStore(fixed_clock)
    store.put("transaction", b"state", ttl=TTL)
    operations = (
        lambda: store.put("key", b"value", ttl=TTL),
        lambda: store.put_new("key", b"value", ttl=TTL),
        lambda: store.take("transaction"),
        lambda: store.get("transaction"),
        lambda: store.delete("transaction"),
        lambda: store.increment("key", ttl=TTL),
    )
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report each refusal's message, then leave without pytest's teardown
        status = 1
        try:
            os.close(reader)
            with os.fdopen(writer, "w") as report:
                for operation in operations:
                    try:
                        operation()
                    except EphemeralStoreError as refused:
                        report.write(f"{refused}\n")
                    else:
                        report.write("served\n")
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader) as report:
        lines = report.read().splitlines()
    _, wait_status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert len(lines) == len(operations)
    assert all("serves one process only" in line and "REDIS_URL" in line for line in lines)
    assert store.get("transaction") == b"state"


def test_open_without_a_url_is_the_memory_store():
    store = open_ephemeral_store("")

    assert isinstance(store, MemoryEphemeralStore)
    assert repr(store) == f"MemoryEphemeralStore(pid={os.getpid()})"


# --- the Redis store -------------------------------------------------------------------------


@pytest.mark.redis
def test_open_with_a_url_is_a_working_redis_store(redis_url: str, redis_prefix: str):
    store = open_ephemeral_store(redis_url)
    assert isinstance(store, RedisEphemeralStore)

    store.put(f"{redis_prefix}transaction", b"state", ttl=TTL)

    assert store.take(f"{redis_prefix}transaction") == b"state"


@pytest.mark.redis
def test_redis_keys_carry_the_prefix_and_a_millisecond_ttl(redis_client: redis.Redis, redis_prefix: str):
    store = RedisEphemeralStore(redis_client, prefix=redis_prefix)

    store.put("transaction", b"state", ttl=timedelta(milliseconds=1500))
    store.increment("attempts", ttl=timedelta(seconds=30))
    store.increment("attempts", ttl=timedelta(hours=1))

    assert 0 < redis_client.pttl(f"{redis_prefix}transaction") <= 1500
    assert 0 < redis_client.pttl(f"{redis_prefix}attempts") <= 30_000


def test_redis_store_repr_shows_no_credentials():
    store = open_ephemeral_store("redis://:s3cret-password@127.0.0.1:6379/0")

    assert repr(store) == "RedisEphemeralStore(prefix='myna:')"


def test_redis_client_returning_text_is_refused():
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)

    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisEphemeralStore(client)


@pytest.mark.parametrize(
    "operation",
    [
        lambda store: store.put("key", b"value", ttl=TTL),
        lambda store: store.put_new("key", b"value", ttl=TTL),
        lambda store: store.take("key"),
        lambda store: store.take_marking("key", marker="used", ttl=TTL),
        lambda store: store.get("key"),
        lambda store: store.get_many(["key", "other"]),
        lambda store: store.delete("key"),
        lambda store: store.increment("key", ttl=TTL),
    ],
    ids=["put", "put_new", "take", "take_marking", "get", "get_many", "delete", "increment"],
)
def test_unreachable_redis_is_unavailable(operation):
    store = open_ephemeral_store("redis://127.0.0.1:1/0")

    with pytest.raises(EphemeralStoreUnavailable, match="Redis is unavailable"):
        operation(store)
