"""Authorization codes (RFC 6749 §4.1.2): one-time, short-lived, stored under their hash.

A code is 256 random bits given to the browser; the ephemeral store keeps only its SHA-256
(``code:<hash>``) with what the login established. Redemption is atomic and detects replay
(RFC 6749 §4.1.2: "If an authorization code is used more than once, the authorization server
MUST deny the request and SHOULD revoke ... all tokens previously issued based on that
authorization code"):

1. ``put_new("code-used:<hash>")`` — of all redemptions of one code exactly one wins this;
   every later one is a replay, even one racing the first.
2. the winner ``take``s the code (GETDEL), never reads then deletes it.

The grant a code creates is named after the code's hash (``grant_id``), so a replay knows which
grant to revoke without any lookup.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from idp.ceremonies.transactions import AuthorizationRequest
from idp.store.ephemeral import OneTimeStore

__all__ = ["CodeStore", "IssuedCode", "Redemption", "code_hash"]

CODE_BYTES = 32


def code_hash(value: str) -> str:
    """SHA-256 of a code or token, base64url: the only form the portal stores."""
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCode:
    """What an authorization code stands for: the request and what the login established."""

    request: AuthorizationRequest
    person_id: str
    auth_time: datetime
    amr: tuple[str, ...]
    acr: str | None
    consented_attributes: tuple[str, ...]
    signature_certificate_serial: int | None
    device_id: str | None = None
    """The device that approved the login; None only for codes minted before grants recorded it."""
    sid: str
    """The login session id the ID token carries (OIDC Front/Back-Channel Logout)."""
    grant_id: str = ""
    """Set on redemption: the hash of the code."""

    # Authlib's AuthorizationCodeMixin / OIDC AuthorizationCodeMixin
    def get_redirect_uri(self) -> str:
        """The redirect URI the code was issued for (RFC 6749 §4.1.3 compares it)."""
        return self.request.redirect_uri

    def get_scope(self) -> str:
        """The granted scope, space-separated."""
        return " ".join(self.request.scope)

    def get_nonce(self) -> str | None:
        """The request's nonce, repeated in the ID token."""
        return self.request.nonce

    def get_auth_time(self) -> int:
        """When the person approved on the phone, in seconds since the epoch."""
        return int(self.auth_time.timestamp())

    def get_acr(self) -> str | None:
        """The authentication context class reached."""
        return self.acr

    def get_amr(self) -> list[str]:
        """The authentication methods used."""
        return list(self.amr)

    def to_json(self) -> bytes:
        """Serialise for the ephemeral store."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _CODE_FIELDS}
        data["request"] = self.request.to_dict()
        data["auth_time"] = self.auth_time.isoformat()
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, *, grant_id: str) -> IssuedCode:
        """The inverse of ``to_json``, naming the grant."""
        data = json.loads(raw)
        data["request"] = AuthorizationRequest.from_dict(data["request"])
        data["auth_time"] = datetime.fromisoformat(data["auth_time"])
        data["amr"] = tuple(data["amr"])
        data["consented_attributes"] = tuple(data["consented_attributes"])
        data["grant_id"] = grant_id
        return cls(**data)


_CODE_FIELDS = tuple(name for name in IssuedCode.__slots__ if name != "grant_id")
"""What a stored code keeps; ``grant_id`` is derived from the code at redemption."""


class Redemption(enum.Enum):
    """Why a code gave nothing."""

    UNKNOWN = "unknown"
    """Never issued, expired, or another client's."""
    REPLAYED = "replayed"
    """Redeemed before: its grant must be revoked."""


class CodeStore:
    """Mints and redeems authorization codes in the ephemeral store."""

    def __init__(self, store: OneTimeStore, *, ttl: timedelta, replay_window: timedelta) -> None:
        """``replay_window``: how long a redeemed code is remembered to detect its replay."""
        self._store = store
        self._ttl = ttl
        self._replay_window = max(ttl, replay_window)

    def __repr__(self) -> str:
        return f"CodeStore(ttl={self._ttl})"

    def mint(self, issued: IssuedCode) -> str:
        """A new code for ``issued``; the store keeps its hash only."""
        code = secrets.token_urlsafe(CODE_BYTES)
        if not self._store.put_new(f"code:{code_hash(code)}", issued.to_json(), ttl=self._ttl):
            raise RuntimeError("authorization code collision")  # 256 random bits: never in practice
        return code

    def redeem(self, code: str, *, client_id: str) -> IssuedCode | Redemption:
        """Take the code once for ``client_id``; a second redemption is ``REPLAYED``."""
        hashed = code_hash(code)
        first, raw = self._store.take_marking(f"code:{hashed}", marker=f"code-used:{hashed}", ttl=self._replay_window)
        if not first:
            return Redemption.REPLAYED
        if raw is None:
            return Redemption.UNKNOWN
        issued = IssuedCode.from_json(raw, grant_id=hashed)
        # RFC 6749 §4.1.3: "ensure that the authorization code was issued to the authenticated
        # confidential client". Taken anyway: a code presented by another client is burnt.
        if issued.request.client_id != client_id:
            return Redemption.UNKNOWN
        return issued
