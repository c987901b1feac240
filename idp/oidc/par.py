"""Pushed authorization requests (RFC 9126).

``POST /par``: an authenticated client pushes its authorization request; the portal checks it
with the same ordered checks as the authorization endpoint (``idp.oidc.authorization``) and
answers 201 with a ``request_uri`` to send the browser with. The request is stored under the
pushing client's id and the hash of the ``request_uri``, and the authorization endpoint *takes*
it (GETDEL): one use, only by the same client — another client's ``client_id`` finds nothing,
and does not burn it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict
from datetime import timedelta

from idp.ceremonies.transactions import AuthorizationRequest
from idp.oidc.codes import code_hash
from idp.store.ephemeral import OneTimeStore

__all__ = ["REQUEST_URI_PREFIX", "PushedRequests"]

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
"""RFC 9126 §2.2: the request_uri is a URN; its random part must be unguessable (§7.1)."""


class PushedRequests:
    """Stores pushed requests and hands each out once."""

    def __init__(self, store: OneTimeStore, *, ttl: timedelta) -> None:
        self._store = store
        self._ttl = ttl

    def __repr__(self) -> str:
        return f"PushedRequests(ttl={self._ttl})"

    @property
    def ttl(self) -> timedelta:
        """How long a request_uri may be used (``expires_in``)."""
        return self._ttl

    def push(self, request: AuthorizationRequest) -> str:
        """Store the checked request; its new request_uri."""
        request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(32)
        stored = self._store.put_new(
            _key(request.client_id, request_uri), json.dumps(asdict(request)).encode(), ttl=self._ttl,
        )
        if not stored:
            raise RuntimeError("request_uri collision")  # 256 random bits: never in practice
        return request_uri

    def take(self, request_uri: str, *, client_id: str) -> AuthorizationRequest | None:
        """The pushed request, once, for the client that pushed it; None otherwise."""
        if not request_uri.startswith(REQUEST_URI_PREFIX):
            return None
        raw = self._store.take(_key(client_id, request_uri))
        if raw is None:
            return None
        data = json.loads(raw)
        for name in ("scope", "prompt", "acr_values", "ui_locales", "requested_attributes"):
            data[name] = tuple(data[name])
        return AuthorizationRequest(**data)


def _key(client_id: str, request_uri: str) -> str:
    return f"par:{code_hash(client_id)}:{code_hash(request_uri)}"
