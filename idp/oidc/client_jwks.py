"""The public keys of ``private_key_jwt`` clients registered by ``jwks_uri`` (OIDC Registration §2, RFC 7523).

A client that registered a ``jwks_uri`` publishes its JWK Set there, and rotates its keys by
changing what it serves. ``ClientKeySets`` fetches the set when a client first authenticates,
reuses it for ``ttl``, and fetches it again early when an assertion names a ``kid`` the set does
not hold (the client rotated). Every fetch of one client's set is at least ``refetch_interval``
after the last one, failed or not, so assertions with made-up key ids, or a client server that is
down, cost that server one request per interval per portal process, never one per request.

The fetch is a GET with a short timeout, no redirects (the operator registered this URL, not
where it points to) and a size cap; the body must be a JWK Set with at least one public signature
key (``idp.oidc.clients.signing_keys_of``). Anything else raises ``KeysUnavailable``, which the
token and PAR endpoints answer as ``invalid_client``.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import requests
from joserfc.jwk import KeySet

from idp.clock import Clock
from idp.oidc.clients import InvalidClientMetadata, signing_keys_of

__all__ = [
    "MAX_JWKS_BYTES",
    "ClientKeySets",
    "HttpJwksFetcher",
    "JwksFetcher",
    "KeysUnavailable",
    "Reason",
]

MAX_JWKS_BYTES = 64 * 1024
"""The largest JWK Set read from a client: a few keys take a few kilobytes."""

logger = logging.getLogger("idp.oidc")


class Reason(enum.StrEnum):
    """Why a client's keys could not be used (the ``reason`` of ``client_keys.unavailable``)."""

    UNREACHABLE = "unreachable"
    """The URL could not be fetched: no connection, TLS failure, timeout, redirect or not 200."""
    TOO_LARGE = "too_large"
    """The body is larger than ``MAX_JWKS_BYTES``."""
    NOT_JSON = "not_json"
    """The body is not JSON."""
    NOT_A_KEY_SET = "not_a_key_set"
    """The JSON is not a JWK Set with a public signature key, or it holds a private key."""
    THROTTLED = "throttled"
    """The set was fetched (or failed) less than ``refetch_interval`` ago; not asked again yet."""


class KeysUnavailable(Exception):
    """The client's keys cannot be had now; ``reason`` says why (for the log, never the client)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class JwksFetcher(Protocol):
    """The network, as ``ClientKeySets`` needs it."""

    def fetch(self, url: str) -> bytes:
        """The body at ``url``. Raises KeysUnavailable (UNREACHABLE or TOO_LARGE)."""
        ...


class HttpJwksFetcher:
    """``JwksFetcher`` over HTTP(S) with ``requests``: bounded in time and size, no redirects."""

    def __init__(self, *, timeout: timedelta, session: requests.Session | None = None) -> None:
        self._timeout = timeout.total_seconds()
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"HttpJwksFetcher(timeout={self._timeout}s)"

    def fetch(self, url: str) -> bytes:
        """GET ``url`` (RFC 7517 §8.5: ``application/jwk-set+json``, plain JSON accepted)."""
        headers = {"Accept": "application/jwk-set+json, application/json"}
        try:
            with self._session.get(
                url, headers=headers, timeout=self._timeout, stream=True, allow_redirects=False,
            ) as response:
                if response.status_code != requests.codes.ok:
                    raise KeysUnavailable(Reason.UNREACHABLE, f"{url} answered HTTP {response.status_code}")
                # Read one byte past the cap: a longer body is refused, not cut and parsed.
                body = response.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise KeysUnavailable(Reason.UNREACHABLE, f"{url} cannot be fetched: {type(exc).__name__}") from exc
        if len(body) > MAX_JWKS_BYTES:
            raise KeysUnavailable(Reason.TOO_LARGE, f"{url} answered more than {MAX_JWKS_BYTES} bytes")
        return bytes(body)


@dataclass(slots=True)
class _Entry:
    """One client's fetched set; its lock makes concurrent requests wait for one fetch."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: KeySet | None = None
    fetched_at: datetime | None = None
    """When ``keys`` were fetched."""
    attempted_at: datetime | None = None
    """When the last fetch was tried, whatever its outcome."""


class ClientKeySets:
    """The key sets of ``jwks_uri`` clients, per process, fetched and refreshed as the module says."""

    def __init__(
        self, fetcher: JwksFetcher, *, ttl: timedelta, refetch_interval: timedelta, clock: Clock,
    ) -> None:
        self._fetcher = fetcher
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._entries_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClientKeySets(ttl={self._ttl}, refetch_interval={self._refetch_interval})"

    def key_set(self, *, client_id: str, jwks_uri: str, kid: str | None) -> KeySet:
        """The client's keys, holding ``kid`` when the client serves it. Raises KeysUnavailable.

        A set that lacks ``kid`` is returned when it cannot be refreshed yet: the signature check
        then fails for want of the key, as it must.
        """
        entry = self._entry(client_id, jwks_uri)
        with entry.lock:
            try:
                return self._current(entry, jwks_uri, kid)
            except KeysUnavailable as exc:
                logger.warning("client_keys.unavailable reason=%s client=%s", exc.reason.value, client_id)
                raise

    def _current(self, entry: _Entry, jwks_uri: str, kid: str | None) -> KeySet:
        """The entry's keys, fetched first when they are missing, stale or lack ``kid`` (lock held)."""
        now = self._clock.now()
        fresh = entry.keys if entry.fetched_at is not None and now < entry.fetched_at + self._ttl else None
        if fresh is not None and _holds(fresh, kid):
            return fresh
        if entry.attempted_at is not None and now < entry.attempted_at + self._refetch_interval:
            if fresh is not None:
                return fresh  # an unknown kid again too soon: no second fetch
            raise KeysUnavailable(Reason.THROTTLED, f"{jwks_uri} was tried less than a refetch interval ago")
        entry.attempted_at = now
        try:
            keys = _parse(self._fetcher.fetch(jwks_uri), jwks_uri)
        except KeysUnavailable:
            if fresh is None:  # a stale set is never used in place of a fresh one
                entry.keys, entry.fetched_at = None, None
            # A fresh set stays: one assertion with a made-up kid, sent while the client's server
            # is failing, must not lock out the client's good assertions for a refetch interval.
            raise
        entry.keys, entry.fetched_at = keys, now
        return keys

    def _entry(self, client_id: str, jwks_uri: str) -> _Entry:
        with self._entries_lock:
            return self._entries.setdefault((client_id, jwks_uri), _Entry())


def _holds(keys: KeySet, kid: str | None) -> bool:
    return kid is None or any(key.kid == kid for key in keys.keys)


def _parse(body: bytes, url: str) -> KeySet:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise KeysUnavailable(Reason.NOT_JSON, f"{url} did not answer JSON") from exc
    try:
        return signing_keys_of(document)
    except InvalidClientMetadata as exc:
        raise KeysUnavailable(Reason.NOT_A_KEY_SET, f"{url}: {exc.message}") from exc
