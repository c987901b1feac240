"""Durable records of enrollment: persons, the card certificates that identify them, their devices,
and the J-LIS CRLs the portal has fetched.

A person is a random internal id, never the My Number nor a certificate serial. The link from a
card to a person is ``person_card_certificates``: one row per card certificate (by its issuer's
key identifier and serial, never by name), so that J-LIS linking data can later attach a
successor certificate (renewal, a move, a reissued card) to the same person with one more row.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.store.database import Base

__all__ = [
    "CardCertificateKind",
    "DeviceRecord",
    "DeviceStatus",
    "ExternalCrl",
    "LinkSource",
    "PersonCardCertificate",
    "PersonRecord",
]


class CardCertificateKind(enum.StrEnum):
    """Which card certificate a link row names."""

    AUTH = "auth"
    SIGN = "sign"


class LinkSource(enum.StrEnum):
    """What tied a card certificate to a person."""

    ENROLLMENT = "enrollment"
    """The certificate was presented, with a signature by its key, at an enrollment."""
    JLIS_LINKING = "jlis_linking"
    """J-LIS linking data says it succeeds a certificate of this person (a later issue)."""


class DeviceStatus(enum.StrEnum):
    """Where a device stands."""

    ACTIVE = "active"
    REVOKED = "revoked"


class PersonRecord(Base):
    """A person known to the portal: nothing but a random id and when it was made."""

    __tablename__ = "persons"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Random (``secrets``), internal: relying parties see pairwise ``sub`` values derived from it."""
    created_at: Mapped[datetime]


class PersonCardCertificate(Base):
    """A card certificate that identifies a person."""

    __tablename__ = "person_card_certificates"

    issuer_key_id: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    """The card certificate's authorityKeyIdentifier: its J-LIS CA, by key."""
    serial: Mapped[str] = mapped_column(String(48), primary_key=True)
    """The card certificate's serial number in decimal."""
    person_id: Mapped[str] = mapped_column(String(32), ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    not_after: Mapped[datetime]
    linked_by: Mapped[str] = mapped_column(String(16))
    linked_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("kind IN ('auth', 'sign')", name="kind"),
        CheckConstraint("linked_by IN ('enrollment', 'jlis_linking')", name="linked_by"),
    )


class DeviceRecord(Base):
    """A phone enrolled for a person: its two SE credentials and the certificates issued for them."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(32), ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    aaguid: Mapped[str] = mapped_column(String(36))
    """The SE model's AAGUID, from its verified attestation."""
    auth_credential_id: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    """The WebAuthn credential id of the authentication key."""
    auth_public_key: Mapped[bytes] = mapped_column(LargeBinary)
    """The authentication key as a COSE_Key, as the attestation carried it."""
    auth_sign_count: Mapped[int] = mapped_column(BigInteger)
    """The authentication key's signature counter as last seen (WebAuthn L3 §6.1.1)."""
    sign_credential_id: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    sign_public_key: Mapped[bytes] = mapped_column(LargeBinary)
    """The signature key as a COSE_Key."""
    auth_certificate_serial: Mapped[str] = mapped_column(String(48))
    """The smartphone user-authentication certificate's serial (decimal), issued by the smartphone CA."""
    sign_certificate_serial: Mapped[str] = mapped_column(String(48))
    """The smartphone signature certificate's serial (decimal)."""

    __table_args__ = (
        CheckConstraint("status IN ('active', 'revoked')", name="status"),
        CheckConstraint("(status = 'active') = (revoked_at IS NULL)", name="revocation"),
    )


class ExternalCrl(Base):
    """The newest CRL fetched from J-LIS for one of its authorities (``idp pki sync-revocations``)."""

    __tablename__ = "jlis_crls"

    issuer_key_id: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    """The subjectKeyIdentifier of the CA whose signature on the CRL was verified."""
    issuer_name: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    number: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[datetime]
    next_update: Mapped[datetime]
    fetched_at: Mapped[datetime]
    der: Mapped[bytes] = mapped_column(LargeBinary)
