"""The OAuth client registry in SQL: one row per registered relying party (RFC 7591 §2 metadata).

A client's redirect URIs, allowed scopes and inline JSON Web Key Set are JSON columns: they are
read whole with the client and matched exactly in Python, never searched in SQL. The client
secret is kept only as its SHA-256 digest: it is a 256-bit random value shown once at
registration, so a plain hash is enough (nothing to brute-force) and a leaked table reveals no
secret. ``idp.oidc.clients`` validates every value before a row is written; the check
constraints below are the database's last word on the combinations that must never be stored.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from idp.store.database import Base

__all__ = ["AuthMethod", "Client", "IdTokenAlgorithm"]


class AuthMethod(enum.StrEnum):
    """How a client authenticates at the token endpoint (RFC 7591 §2 ``token_endpoint_auth_method``)."""

    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name, not a secret
    """RFC 6749 §2.3.1: the client secret in an HTTP Basic header."""
    PRIVATE_KEY_JWT = "private_key_jwt"
    """OIDC Core §9: a JWT signed with a key from the client's registered JWK Set (RFC 7523)."""


class IdTokenAlgorithm(enum.StrEnum):
    """The JWS algorithm of the client's ID tokens (OIDC Registration §2 ``id_token_signed_response_alg``)."""

    ES256 = "ES256"
    RS256 = "RS256"


def _in(column: str, values: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(member.value) for member in values)})"


class Client(Base):
    """One registered relying party."""

    __tablename__ = "oidc_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Random (``secrets``), URL-safe; never derived from the name."""
    name: Mapped[str] = mapped_column(String(100))
    """The RP's registered name, shown on the login page and on the phone."""
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    """Exact redirect URIs (RFC 6749 §3.1.2), in registration order."""
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    client_secret_sha256: Mapped[bytes | None] = mapped_column(LargeBinary)
    """SHA-256 of the client secret, for ``client_secret_basic`` only."""
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    """The client's public JWK Set, inline, for ``private_key_jwt`` (or ``jwks_uri``, never both)."""
    jwks_uri: Mapped[str | None] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    """The scopes this client may request; always includes ``openid``."""
    require_pushed_authorization_requests: Mapped[bool]
    """RFC 9126 §6: the client must push its authorization requests."""
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(8))
    sector_identifier: Mapped[str] = mapped_column(String(253))
    """The host that pairwise ``sub`` values are computed for (OIDC Core §8.1)."""
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, server_default=text("'[]'"))
    """Where RP-initiated logout may send the browser back to (RP-Initiated Logout 1.0 §3.1), exact URIs."""
    created_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(_in("token_endpoint_auth_method", AuthMethod), name="auth_method"),
        CheckConstraint(_in("id_token_signed_response_alg", IdTokenAlgorithm), name="id_token_alg"),
        CheckConstraint(
            "(token_endpoint_auth_method = 'client_secret_basic'"
            " AND client_secret_sha256 IS NOT NULL AND jwks IS NULL AND jwks_uri IS NULL)"
            " OR (token_endpoint_auth_method = 'private_key_jwt'"
            " AND client_secret_sha256 IS NULL AND (jwks IS NULL) <> (jwks_uri IS NULL))",
            name="credentials",
        ),
    )
