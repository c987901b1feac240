"""Opaque access tokens (RFC 6750) in the ephemeral store, under their hash, revocable by grant.

An access token is 256 random bits; the store keeps ``at:<hash>`` → the grant it belongs to and
what userinfo needs, expiring with the token. Revoking a grant (a replayed code, a reused
refresh token) writes ``grant-revoked:<grant id>`` for as long as any access token of it may
live; ``read`` checks both, so revocation takes effect at once without listing the tokens.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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
        data: dict[str, Any] = asdict(info)
        self._store.put(f"at:{code_hash(token)}", json.dumps(data).encode(), ttl=self._ttl)

    def read(self, token: str) -> AccessTokenInfo | None:
        """The token's grant, or None when unknown, expired or its grant was revoked."""
        raw = self._store.get(f"at:{code_hash(token)}")
        if raw is None:
            return None
        data = json.loads(raw)
        if self._store.get(f"grant-revoked:{data['grant_id']}") is not None:
            return None
        data["scope"] = tuple(data["scope"])
        return AccessTokenInfo(**data)

    def revoke_grant(self, grant_id: str) -> None:
        """Make every access token of ``grant_id`` stop working now."""
        self._store.put(f"grant-revoked:{grant_id}", b"1", ttl=self._ttl)
