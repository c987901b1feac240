"""Durable OAuth grants: what a redeemed authorization code granted, its refresh tokens, consents.

A *grant* is one redemption of an authorization code: the person, the client, the scopes and
the authentication facts the ID tokens repeat. Its refresh tokens are rows keyed by the
SHA-256 of the token (never the token), rotated on every use: a rotated token presented again
revokes the whole grant (RFC 9700 §4.14.2). A *consent* records the identity attributes a
person approved for a client on the phone; it is revoked by setting ``revoked_at``.

Certificate serials are decimal strings, as in ``idp.pki.records``: up to 159 bits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.store.database import Base

__all__ = ["Consent", "Grant", "RefreshToken"]


class Grant(Base):
    """One redeemed authorization code and what it granted."""

    __tablename__ = "oidc_grants"

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), ForeignKey("oidc_clients.client_id", ondelete="CASCADE"))
    person_id: Mapped[str] = mapped_column(String(64))
    """The portal's internal person id; never released (the RP sees the pairwise ``sub``)."""
    scope: Mapped[list[str]] = mapped_column(JSON)
    claims: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    """The ``claims`` request parameter (OIDC Core §5.5), honoured at userinfo."""
    auth_time: Mapped[datetime]
    amr: Mapped[list[str]] = mapped_column(JSON)
    acr: Mapped[str | None] = mapped_column(String(128))
    consented_attributes: Mapped[list[str]] = mapped_column(JSON)
    signature_certificate_serial: Mapped[str | None] = mapped_column(String(48))
    """The smartphone signature certificate the attributes are read from (portal-internal)."""
    device_id: Mapped[str | None] = mapped_column(String(32))
    """The device that approved the login (``devices.id``); revoking it revokes the grant."""
    sid: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_oidc_grants_person_id_client_id", "person_id", "client_id"),
        Index("ix_oidc_grants_device_id", "device_id"),
    )


class RefreshToken(Base):
    """A refresh token of a grant, stored under its SHA-256."""

    __tablename__ = "oidc_refresh_tokens"

    token_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    grant_id: Mapped[str] = mapped_column(String(64), ForeignKey("oidc_grants.grant_id", ondelete="CASCADE"))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]
    """Set when the token was exchanged for its successor; presenting it again is reuse."""

    __table_args__ = (Index("ix_oidc_refresh_tokens_grant_id", "grant_id"),)


class Consent(Base):
    """Identity attributes a person approved for a client, on the phone, with the signature key."""

    __tablename__ = "oidc_consents"

    consent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64), ForeignKey("oidc_clients.client_id", ondelete="CASCADE"))
    attributes: Mapped[list[str]] = mapped_column(JSON)
    granted_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_oidc_consents_person_id_client_id", "person_id", "client_id"),)
