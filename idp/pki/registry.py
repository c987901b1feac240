"""What a certificate authority remembers of what it issued: the certificate registry.

The portal keeps its registry in SQL (``idp.pki.records``); the simulated J-LIS keeps one in a
JSON file. Both implement ``CertificateRegistry``, so the authority, its CRL and its OCSP
responder are written once.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509

__all__ = [
    "AlreadyRevoked",
    "CertificateRef",
    "CertificateRegistry",
    "CertificateState",
    "CertificateStatus",
    "RegistryError",
    "UnknownCertificate",
]


class CertificateState(enum.Enum):
    """Where a certificate stands (RFC 6960 §2.2 good / revoked, with hold kept apart)."""

    GOOD = "good"
    REVOKED = "revoked"
    ON_HOLD = "on_hold"
    """Revoked with reason certificateHold: listed on the CRL until resumed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRef:
    """Names one certificate by its issuer's key identifier and serial, never by DN alone."""

    issuer_key_id: bytes
    serial_number: int

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateRef:
        """The reference of ``certificate``, from its authorityKeyIdentifier."""
        try:
            aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound as exc:
            raise ValueError("the certificate has no authorityKeyIdentifier") from exc
        if aki.key_identifier is None:
            raise ValueError("the certificate's authorityKeyIdentifier has no key identifier")
        return cls(issuer_key_id=aki.key_identifier, serial_number=certificate.serial_number)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateStatus:
    """One issued certificate's record, as the CRL and OCSP need it."""

    serial_number: int
    profile: str
    not_after: datetime
    state: CertificateState = CertificateState.GOOD
    reason: x509.ReasonFlags | None = None
    revoked_at: datetime | None = None
    issued_from: tuple[CertificateRef, ...] = ()
    """For a smartphone certificate: the card certificates it was issued from."""


class RegistryError(Exception):
    """A registry operation was refused."""


class UnknownCertificate(RegistryError):
    """No certificate with that serial was issued by this authority."""


class AlreadyRevoked(RegistryError):
    """The certificate is revoked for good; it cannot be revoked or held again."""


class CertificateRegistry(Protocol):
    """The records of one issuing authority."""

    def record(
        self,
        certificate: x509.Certificate,
        *,
        profile: str,
        issued_from: Sequence[CertificateRef] = (),
    ) -> None:
        """Remember a newly issued certificate as good."""

    def status(self, serial_number: int) -> CertificateStatus | None:
        """The certificate's record, or None when this authority never issued it."""

    def revoke(self, serial_number: int, *, reason: x509.ReasonFlags, at: datetime) -> CertificateStatus:
        """Mark revoked (or on hold, for certificateHold).

        Raises UnknownCertificate, or AlreadyRevoked for a certificate already revoked for good
        (a held certificate may be revoked for good).
        """

    def resume(self, serial_number: int) -> CertificateStatus:
        """Take a held certificate off hold (RFC 5280 removeFromCRL).

        Raises UnknownCertificate, or AlreadyRevoked unless the certificate is on hold.
        """

    def listed(self) -> list[CertificateStatus]:
        """Every revoked or held certificate: the CRL's entries.

        Expired ones stay listed; RFC 5280 §3.3 lets a CA drop them, never requires it.
        """

    def next_crl_number(self) -> int:
        """A CRL number greater than any this registry handed out before (RFC 5280 §5.2.3)."""
