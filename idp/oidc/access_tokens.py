"""Opaque access tokens (RFC 6750) in the ephemeral store, under their hash, revocable by grant.

An access token is 256 random bits; the store keeps ``at:<hash>`` → the grant it belongs to and
what userinfo needs, expiring with the token. Whether the grant still stands is the database's
word, not this store's: whoever honours a token reads its grant there (``OidcProvider.released_claims``
raises GrantRevoked), so revoking a grant, by any process, stops its access tokens at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from idp.oidc.codes import code_hash
from idp.store.ephemeral import KeyValueStore

__all__ = ["AccessTokenInfo", "AccessTokenStore"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessTokenInfo:
    """What an access token lets its bearer read."""

    grant_id: str
    client_id: str
    subject: str
    scope: tuple[str, ...]


class AccessTokenStore:
    """Stores, reads and revokes access tokens."""

    def __init__(self, store: KeyValueStore, *, ttl: timedelta) -> None:
        self._store = store
        self._ttl = ttl

    def __repr__(self) -> str:
        return f"AccessTokenStore(ttl={self._ttl})"

    @property
    def ttl(self) -> timedelta:
        """How long an access token lives."""
        return self._ttl

    def store(self, token: str, info: AccessTokenInfo) -> None:
        """Remember ``token`` (by its hash) for its lifetime."""
        data: dict[str, Any] = {name: getattr(info, name) for name in AccessTokenInfo.__slots__}
        self._store.put(f"at:{code_hash(token)}", json.dumps(data).encode(), ttl=self._ttl)

    def read(self, token: str) -> AccessTokenInfo | None:
        """The token's grant, or None when unknown or expired (the grant's standing is not checked)."""
        raw = self._store.get(f"at:{code_hash(token)}")
        if raw is None:
            return None
        data = json.loads(raw)
        data["scope"] = tuple(data["scope"])
        return AccessTokenInfo(**data)
