"""The test PKI's parts and the helpers that mint them; ``conftest.py`` assembles them per session.

Every CA is an ``idp.pki.authority.CertificateAuthority`` whose registry is the SQL one, so the
unit tests run the code the portal runs.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from idp.pki import attributes
from idp.pki.authority import CertificateAuthority
from idp.pki.profiles import (
    CertificateProfile,
    Issuer,
    PrivateKey,
    build_certificate,
    generate_key,
)
from idp.pki.records import SqlCertificateRegistry
from idp.pki.registry import CertificateRef

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

NOW = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
"""The fixed time of the unit tests; every certificate here is valid then."""
BASE = "http://127.0.0.1:8000"
YEAR = timedelta(days=365)

TARO = attributes.BasicAttributes(
    name="山田　太郎",
    address="東京都千代田区千代田１－１",
    date_of_birth=date(1990, 5, 15),
    sex=attributes.Sex.MALE,
)
"""The card holder's four attributes, known so that tests can read them back."""
AAGUID = uuid.UUID("6a1f3e2c-7d44-4b5e-9a1e-2f0c8d7b6a51")


@dataclass(frozen=True, kw_only=True)
class KeyAndCertificate:
    """An end-entity certificate with its private key."""

    key: PrivateKey
    certificate: x509.Certificate

    @property
    def ref(self) -> CertificateRef:
        return CertificateRef.of(self.certificate)


@dataclass(frozen=True, kw_only=True)
class TestPki:
    """Everything the session mints."""

    __test__ = False  # not a test class, whatever its name

    sessions: sessionmaker[Session]
    jlis_root: CertificateAuthority
    jlis_auth_ca: CertificateAuthority
    jlis_sign_ca: CertificateAuthority
    card_auth: KeyAndCertificate
    card_sign: KeyAndCertificate
    portal_root: CertificateAuthority
    smartphone_ca: CertificateAuthority
    smartphone_auth: KeyAndCertificate
    smartphone_sign: KeyAndCertificate
    vendor_root: Issuer
    attestation: KeyAndCertificate

    @property
    def authorities(self) -> tuple[CertificateAuthority, ...]:
        return (
            self.jlis_root, self.jlis_auth_ca, self.jlis_sign_ca, self.portal_root, self.smartphone_ca,
        )

    def crls(self, now: datetime = NOW, *, lifetime: timedelta = timedelta(days=1)) -> list[bytes]:
        """A fresh CRL of every CA, signed at ``now``."""
        return [
            authority.build_crl(now=now, lifetime=lifetime).public_bytes(serialization.Encoding.DER)
            for authority in self.authorities
        ]


def name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Myna Gateway Test"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_root(
    profile: CertificateProfile, subject: x509.Name, *, not_before: datetime = NOW - YEAR,
    lifetime: timedelta = 20 * YEAR,
) -> Issuer:
    """A self-signed root of ``profile``."""
    key = generate_key(profile.key_algorithm)
    certificate = build_certificate(
        profile=profile, subject=subject, public_key=key.public_key(), issuer=None, signing_key=key,
        not_before=not_before, not_after=not_before + lifetime,
    )
    return Issuer(certificate, key)


def make_authority(
    sessions: sessionmaker[Session],
    *,
    name_: str,
    issuer: Issuer,
    profiles: frozenset[str],
) -> CertificateAuthority:
    """A CA on ``issuer`` with a fresh SQL registry (its own name, so tests never share records)."""
    registry_name = f"{name_}-{secrets.token_hex(4)}"
    return CertificateAuthority(
        name=name_,
        issuer=issuer,
        registry=SqlCertificateRegistry(sessions, registry_name),
        crl_url=f"{BASE}/pki/crl/{name_}.crl",
        ocsp_url=f"{BASE}/pki/ocsp",
        profiles=profiles,
    )


def make_intermediate(
    parent: CertificateAuthority,
    sessions: sessionmaker[Session],
    *,
    profile: CertificateProfile,
    subject: x509.Name,
    issues: frozenset[str],
    not_before: datetime = NOW - YEAR,
    lifetime: timedelta = 10 * YEAR,
) -> CertificateAuthority:
    """An issuing CA whose certificate ``parent`` issued (and recorded)."""
    key = generate_key(profile.key_algorithm)
    certificate = parent.issue(
        profile=profile, subject=subject, public_key=key.public_key(), now=not_before,
        not_after=not_before + lifetime,
    )
    return make_authority(sessions, name_=profile.name, issuer=Issuer(certificate, key), profiles=issues)


def issue(
    authority: CertificateAuthority,
    profile: CertificateProfile,
    *,
    subject: x509.Name | None = None,
    now: datetime = NOW - timedelta(days=30),
    lifetime: timedelta = 2 * YEAR,
    alternative_names: list[x509.GeneralName] | None = None,
    issued_from: tuple[CertificateRef, ...] = (),
) -> KeyAndCertificate:
    """A new end-entity certificate of ``profile`` from ``authority``, with a fresh key."""
    key = generate_key(profile.key_algorithm)
    certificate = authority.issue(
        profile=profile,
        subject=subject or name(f"{profile.name} {secrets.token_hex(4)}"),
        public_key=key.public_key(),
        now=now,
        not_after=now + lifetime,
        alternative_names=alternative_names or [],
        issued_from=issued_from,
    )
    return KeyAndCertificate(key=key, certificate=certificate)


