"""The ephemeral store: short-lived values that expire on their own (Redis, or in-process).

Transactions, pending signatures, one-time codes and rate counters live here, never in the
durable store. Each consumer asks for the narrowest interface it needs: ``OneTimeStore`` for
what must be used once (taken, never read then deleted), ``KeyValueStore`` for state that is
read many times, ``CounterStore`` for rate limits. ``EphemeralStore`` is all three.

Two implementations pass one contract suite (``tests/contract/test_ephemeral_store.py``):
``RedisEphemeralStore`` for production (Redis 7.0 or newer: GETDEL, EXPIRE NX), and
``MemoryEphemeralStore``, the embedded default, which serves one process only and refuses to run
in a second one (a forked gunicorn worker), since two workers would each see half the state.
"""

from __future__ import annotations

import heapq
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import redis
import redis.exceptions

from idp.clock import Clock, SystemClock

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "CounterStore",
    "EphemeralStore",
    "EphemeralStoreError",
    "EphemeralStoreUnavailable",
    "KeyValueStore",
    "MemoryEphemeralStore",
    "OneTimeStore",
    "RedisEphemeralStore",
    "open_ephemeral_store",
]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_REDIS_INTEGER = re.compile(rb"0|-?[1-9][0-9]*")  # what Redis's string2ll accepts
_UNAVAILABLE = (
    redis.exceptions.ConnectionError,  # refused, reset, authentication failed, still loading
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica after failover
    redis.exceptions.OutOfMemoryError,
)


class EphemeralStoreError(Exception):
    """The ephemeral store cannot do what was asked."""


class EphemeralStoreUnavailable(EphemeralStoreError):
    """The ephemeral store cannot be reached now; the request may be retried (HTTP 503)."""


class OneTimeStore(Protocol):
    """Values that are created once and used once (jti replay cache, one-time codes)."""

    def put_new(self, key: str, value: bytes, *, ttl: timedelta) -> bool:
        """Store ``value`` unless ``key`` exists (SET NX PX); False when it does."""
        ...

    def take(self, key: str) -> bytes | None:
        """Remove and return the value (GETDEL); of concurrent takers exactly one gets it."""
        ...

    def take_marking(self, key: str, *, marker: str, ttl: timedelta) -> tuple[bool, bytes | None]:
        """Take ``key``'s value and leave ``marker`` behind for ``ttl``, as one atomic step.

        Returns whether the marker is new (False: someone took before, within ``ttl``) and the
        value taken. For one-time codes whose second use must be recognised: one round trip.
        """
        ...


class KeyValueStore(Protocol):
    """State read more than once before it expires (login and signing transactions)."""

    def put(self, key: str, value: bytes, *, ttl: timedelta) -> None:
        """Store ``value``, replacing any value and its time to live."""
        ...

    def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""
        ...

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` in their order, None for each absent or expired one.

        One read of them all (MGET): a request that needs several keys pays one round trip.
        """
        ...

    def delete(self, key: str) -> bool:
        """Remove the key; False when it was absent."""
        ...


class CounterStore(Protocol):
    """Counters over a fixed window (rate limits)."""

    def increment(self, key: str, *, ttl: timedelta, amount: int = 1) -> int:
        """Add ``amount`` and return the new count (INCRBY).

        The window starts at the first increment and is not extended by later ones
        (PEXPIRE NX): a client retrying steadily cannot keep its own counter alive forever.
        """
        ...


class EphemeralStore(OneTimeStore, KeyValueStore, CounterStore, Protocol):
    """All ephemeral interfaces; for wiring, not for consumers."""


class RedisEphemeralStore:
    """The ephemeral store on Redis 7.0 or newer; one round trip per call.

    Keys are prefixed with ``prefix``. Redis errors surface as EphemeralStoreUnavailable when
    the server cannot be reached or cannot write now, as EphemeralStoreError otherwise.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "myna:") -> None:
        """Wrap ``client``, which must return bytes (``decode_responses=False``)."""
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the ephemeral store stores bytes: open the Redis client with decode_responses=False")
        self._client = client
        self._prefix = prefix

    def __repr__(self) -> str:
        """Show the key prefix, never the connection's credentials."""
        return f"RedisEphemeralStore(prefix={self._prefix!r})"

    def put_new(self, key: str, value: bytes, *, ttl: timedelta) -> bool:
        """SET key value PX ttl NX."""
        milliseconds = _milliseconds(ttl)
        with _translated_errors():
            return bool(self._client.set(self._prefix + key, value, px=milliseconds, nx=True))

    def take(self, key: str) -> bytes | None:
        """GETDEL key: atomic, so one taker wins."""
        with _translated_errors():
            return _bytes_or_none(self._client.getdel(self._prefix + key))

    def take_marking(self, key: str, *, marker: str, ttl: timedelta) -> tuple[bool, bytes | None]:
        """MULTI; SET marker 1 PX ttl NX; GETDEL key; EXEC."""
        milliseconds = _milliseconds(ttl)
        with _translated_errors():
            pipeline = self._client.pipeline(transaction=True)
            pipeline.set(self._prefix + marker, b"1", px=milliseconds, nx=True)
            pipeline.getdel(self._prefix + key)
            marked, value = pipeline.execute()
        return bool(marked), _bytes_or_none(value)

    def put(self, key: str, value: bytes, *, ttl: timedelta) -> None:
        """SET key value PX ttl."""
        milliseconds = _milliseconds(ttl)
        with _translated_errors():
            self._client.set(self._prefix + key, value, px=milliseconds)

    def get(self, key: str) -> bytes | None:
        """GET key."""
        with _translated_errors():
            return _bytes_or_none(self._client.get(self._prefix + key))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """MGET key [key ...]."""
        if not keys:
            return []
        with _translated_errors():
            values = self._client.mget([self._prefix + key for key in keys])
        return [_bytes_or_none(value) for value in values]

    def delete(self, key: str) -> bool:
        """DEL key."""
        with _translated_errors():
            return bool(self._client.delete(self._prefix + key))

    def increment(self, key: str, *, ttl: timedelta, amount: int = 1) -> int:
        """MULTI, INCRBY key amount, PEXPIRE key ttl NX, EXEC: one round trip, one transaction."""
        milliseconds = _milliseconds(ttl)
        name = self._prefix + key
        with _translated_errors(), self._client.pipeline(transaction=True) as pipeline:
            pipeline.incrby(name, amount)
            pipeline.pexpire(name, milliseconds, nx=True)
            count, _expiry_set = pipeline.execute()
        return int(count)


class MemoryEphemeralStore:
    """The in-process ephemeral store: a dictionary behind a lock, expired lazily by ``clock``.

    It serves the process that created it and no other: every method raises
    EphemeralStoreError in a forked child, so a second gunicorn worker fails at its first
    request instead of silently keeping state of its own.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        """An empty store whose entries expire by ``clock`` (the system clock by default)."""
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[bytes, datetime]] = {}
        self._expiries: list[tuple[datetime, str]] = []  # heap; an entry may be stale

    def __repr__(self) -> str:
        """Name the process the store serves."""
        return f"MemoryEphemeralStore(pid={self._pid})"

    def put_new(self, key: str, value: bytes, *, ttl: timedelta) -> bool:
        """Store ``value`` unless ``key`` holds an unexpired value."""
        _require_positive(ttl)
        with self._locked() as now:
            if key in self._entries:
                return False
            self._store(key, bytes(value), now + ttl)
            return True

    def take(self, key: str) -> bytes | None:
        """Remove and return the value under the lock."""
        with self._locked():
            entry = self._entries.pop(key, None)
            return None if entry is None else entry[0]

    def take_marking(self, key: str, *, marker: str, ttl: timedelta) -> tuple[bool, bytes | None]:
        """Set the marker unless present, and take the value, under one lock."""
        _require_positive(ttl)
        with self._locked() as now:
            marked = marker not in self._entries
            if marked:
                self._store(marker, b"1", now + ttl)
            entry = self._entries.pop(key, None)
            return marked, None if entry is None else entry[0]

    def put(self, key: str, value: bytes, *, ttl: timedelta) -> None:
        """Store ``value`` with a new time to live."""
        _require_positive(ttl)
        with self._locked() as now:
            self._store(key, bytes(value), now + ttl)

    def get(self, key: str) -> bytes | None:
        """The unexpired value, or None."""
        with self._locked():
            entry = self._entries.get(key)
            return None if entry is None else entry[0]

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The unexpired values, read under one lock."""
        with self._locked():
            found = [self._entries.get(key) for key in keys]
        return [None if entry is None else entry[0] for entry in found]

    def delete(self, key: str) -> bool:
        """Remove the key; False when it was absent or expired."""
        with self._locked():
            return self._entries.pop(key, None) is not None

    def increment(self, key: str, *, ttl: timedelta, amount: int = 1) -> int:
        """Add ``amount``; a new counter expires ``ttl`` from now, an existing one keeps its expiry.

        The count is stored as Redis stores it (ASCII decimal), so ``get`` reads the same on both.
        """
        _require_positive(ttl)
        with self._locked() as now:
            entry = self._entries.get(key)
            if entry is None:
                count, expires_at = amount, now + ttl
            else:
                count, expires_at = _parse_counter(entry[0]) + amount, entry[1]
            if not _INT64_MIN <= count <= _INT64_MAX:
                raise EphemeralStoreError("increment would overflow a 64-bit counter")
            self._store(key, str(count).encode("ascii"), expires_at)
            return count

    @contextmanager
    def _locked(self) -> Iterator[datetime]:
        """Hold the lock with expired entries gone; yield the time they were judged by."""
        # Checked before taking the lock: a fork may have copied it held by another thread.
        if os.getpid() != self._pid:
            raise EphemeralStoreError(
                "the in-process ephemeral store serves one process only "
                f"(created in process {self._pid}, used in {os.getpid()}): "
                "set REDIS_URL so that every worker shares one Redis"
            )
        with self._lock:
            now = self._clock.now()
            self._expire(now)
            yield now

    def _store(self, key: str, value: bytes, expires_at: datetime) -> None:
        previous = self._entries.get(key)
        self._entries[key] = (value, expires_at)
        if previous is None or previous[1] != expires_at:
            heapq.heappush(self._expiries, (expires_at, key))

    def _expire(self, now: datetime) -> None:
        # A key lives for [stored, stored + ttl). Heap entries left by an overwrite are skipped.
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            if entry is not None and entry[1] == expires_at:
                del self._entries[key]


def open_ephemeral_store(redis_url: str, *, prefix: str = "myna:", clock: Clock | None = None) -> EphemeralStore:
    """Redis when ``redis_url`` is set (``Settings.redis_url``), else the in-process store.

    Nothing is contacted here: an unreachable Redis surfaces as EphemeralStoreUnavailable from
    the first call. ``clock`` drives the in-process store's expiry; Redis keeps its own time.
    """
    if redis_url:
        return RedisEphemeralStore(redis.Redis.from_url(redis_url, decode_responses=False), prefix=prefix)
    return MemoryEphemeralStore(clock)


def _require_positive(ttl: timedelta) -> None:
    if ttl <= timedelta(0):
        raise ValueError(f"ttl must be positive, not {ttl}")


def _milliseconds(ttl: timedelta) -> int:
    """The TTL in whole milliseconds, rounded up so that a positive TTL never becomes zero."""
    _require_positive(ttl)
    return -(-ttl // timedelta(milliseconds=1))


def _parse_counter(value: bytes) -> int:
    if _REDIS_INTEGER.fullmatch(value) is None:
        raise EphemeralStoreError("the key holds a value that is not a counter")
    return int(value)


def _bytes_or_none(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise EphemeralStoreError(f"Redis returned {type(value).__name__}, not bytes")


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Let no redis-py exception reach a caller: they handle the store's two errors only."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise EphemeralStoreUnavailable(f"Redis is unavailable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise EphemeralStoreError(f"Redis refused the command: {exc}") from exc
