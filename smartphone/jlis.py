"""The simulated J-LIS: the card authority that mints My Number Cards and publishes their status.

A root (``JLIS_ROOT``) certifies two issuing CAs, one for user-authentication certificates
(OU "JPKI for user authentication") and one for signature certificates (OU "JPKI for digital
signature"), all RSA-2048 under ``O=JPKI-TEST``. Each is an ``idp.pki.authority``
``CertificateAuthority`` with a JSON-file registry, so CRLs (RFC 5280 §5) and OCSP (RFC 6960,
``idp.pki.ocsp``) come from the same code the portal uses. Card certificates point at
``{base_url}/crl/<ca>.crl`` and ``{base_url}/ocsp``, which ``jlis_server`` serves.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from idp.pki import attributes as basic_attributes
from idp.pki.attributes import BasicAttributes
from idp.pki.authority import CertificateAuthority
from idp.pki.ocsp import respond
from idp.pki.profiles import (
    CARD_AUTH,
    CARD_SIGN,
    JLIS_AUTH_CA,
    JLIS_ROOT,
    JLIS_SIGN_CA,
    Issuer,
    KeyAlgorithm,
    build_certificate,
    card_auth_subject,
    card_certificate_expiry,
    card_sign_subject,
    generate_key,
    jlis_name,
)
from idp.pki.registry import (
    AlreadyRevoked,
    CertificateRef,
    CertificateState,
    CertificateStatus,
    UnknownCertificate,
)
from smartphone.card import CardCertificates, CardKey, MyNumberCard
from smartphone.files import CorruptState
from smartphone.keys import seal_key, unseal_key
from smartphone.registry import JsonFileRegistry

__all__ = [
    "AUTH_CA",
    "CARD_REVOCATION_REASONS",
    "CA_NAMES",
    "CRL_LIFETIME",
    "JST",
    "OCSP_LIFETIME",
    "ROOT",
    "SIGN_CA",
    "JLis",
    "UnknownAuthority",
    "default_card_expiry",
    "normalise_base_url",
]

ROOT, AUTH_CA, SIGN_CA = JLIS_ROOT.name, JLIS_AUTH_CA.name, JLIS_SIGN_CA.name
CA_NAMES = (ROOT, AUTH_CA, SIGN_CA)
"""The authorities' short names, as in ``/crl/<name>.crl`` and ``/ca/<name>.crt``."""

_UNITS = {
    ROOT: "JPKI Root CA",
    AUTH_CA: "JPKI for user authentication",
    SIGN_CA: "JPKI for digital signature",
}
_ISSUES = {ROOT: frozenset({AUTH_CA, SIGN_CA}), AUTH_CA: frozenset({CARD_AUTH.name}),
           SIGN_CA: frozenset({CARD_SIGN.name})}

CA_VALIDITY = timedelta(days=20 * 365)
CRL_LIFETIME = timedelta(days=1)
"""J-LIS publishes its CRLs daily."""
OCSP_LIFETIME = timedelta(minutes=15)
"""J-LIS updates OCSP every 15 minutes."""

JST = timezone(timedelta(hours=9), "JST")
"""Card certificates end at 23:59:59 Japan time on their last day."""

CARD_REVOCATION_REASONS = frozenset({
    x509.ReasonFlags.unspecified,
    x509.ReasonFlags.key_compromise,
    x509.ReasonFlags.ca_compromise,
    x509.ReasonFlags.affiliation_changed,
    x509.ReasonFlags.superseded,
    x509.ReasonFlags.cessation_of_operation,
    x509.ReasonFlags.certificate_hold,
})
"""The reasons J-LIS uses for card certificates (``jpki-profile.md``)."""

_ADULT_AGE = 18


class UnknownAuthority(LookupError):
    """No J-LIS authority has that name."""


def normalise_base_url(url: str) -> str:
    """``url`` without a trailing slash, if it is an http(s) URL with a host and nothing after
    the path. Raises ValueError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("the J-LIS URL must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("the J-LIS URL must not carry a query, a fragment or credentials")
    return url.strip().rstrip("/")


def _nth_birthday_after(date_of_birth: date, day: date, n: int) -> date:
    year, found = day.year, 0
    while True:
        try:
            birthday = date_of_birth.replace(year=year)
        except ValueError:  # 29 February in a common year
            birthday = date(year, 2, 28)
        if birthday > day:
            found += 1
            if found == n:
                return birthday
        year += 1


def default_card_expiry(*, date_of_birth: date, issued_on: date) -> date:
    """The card's own expiry: the 10th birthday after issue, the 5th for a holder under 18."""
    before_birthday = (issued_on.month, issued_on.day) < (date_of_birth.month, date_of_birth.day)
    age = issued_on.year - date_of_birth.year - before_birthday
    return _nth_birthday_after(date_of_birth, issued_on, 10 if age >= _ADULT_AGE else 5)


def _end_of_day_jst(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=JST).astimezone(UTC)


def _issuance_id() -> str:
    """An opaque identifier for a card certificate's CN: random, never derived from the person."""
    return secrets.token_hex(12).upper()


def _rsa(key: object) -> rsa.RSAPrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CorruptState("a J-LIS key must be an RSA key")
    return key


@dataclass(frozen=True, slots=True, kw_only=True)
class JLis:
    """The J-LIS root and its two issuing CAs."""

    base_url: str
    root: CertificateAuthority
    auth_ca: CertificateAuthority
    sign_ca: CertificateAuthority

    def __repr__(self) -> str:
        return f"JLis({self.base_url!r})"

    @classmethod
    def create(cls, *, base_url: str, now: datetime, registry_dir: Path) -> JLis:
        """A new J-LIS: fresh RSA-2048 keys, a root and two issuing CAs valid for 20 years.

        Registries are JSON files in ``registry_dir``. Raises ValueError for a bad URL.
        """
        base_url = normalise_base_url(base_url)
        root_key = _rsa(generate_key(KeyAlgorithm.RSA_2048))
        root_certificate = build_certificate(
            profile=JLIS_ROOT,
            subject=jlis_name(_UNITS[ROOT]),
            public_key=root_key.public_key(),
            issuer=None,
            signing_key=root_key,
            not_before=now,
            not_after=now + CA_VALIDITY,
        )
        root = _authority(ROOT, Issuer(root_certificate, root_key), base_url, registry_dir)
        issuing = {}
        for name, profile in ((AUTH_CA, JLIS_AUTH_CA), (SIGN_CA, JLIS_SIGN_CA)):
            key = _rsa(generate_key(KeyAlgorithm.RSA_2048))
            certificate = root.issue(
                profile=profile, subject=jlis_name(_UNITS[name]), public_key=key.public_key(),
                now=now, not_after=now + CA_VALIDITY,
            )
            issuing[name] = _authority(name, Issuer(certificate, key), base_url, registry_dir)
        return cls(base_url=base_url, root=root, auth_ca=issuing[AUTH_CA], sign_ca=issuing[SIGN_CA])

    @property
    def authorities(self) -> tuple[CertificateAuthority, ...]:
        """Root, user-authentication CA, signature CA."""
        return (self.root, self.auth_ca, self.sign_ca)

    def authority(self, name: str) -> CertificateAuthority:
        """The authority called ``name``. Raises UnknownAuthority."""
        for authority in self.authorities:
            if authority.name == name:
                return authority
        raise UnknownAuthority(f"J-LIS has no authority called {name!r}")

    def issue_card(
        self,
        *,
        attributes: BasicAttributes,
        prefecture: str,
        city: str,
        auth_pin: str,
        sign_pin: str,
        now: datetime,
        card_expiry: date | None = None,
    ) -> MyNumberCard:
        """Mint a card for ``attributes``: it makes its keys, J-LIS certifies and writes them.

        The user-authentication certificate carries no personal data; the signature
        certificate carries the four attributes and the prefecture and city in its subject.
        Both run to ``card_certificate_expiry`` (23:59:59 JST), the signature certificate
        capped at the user-authentication one. Every check comes before the first issuance:
        raises ValueError (empty prefecture or city, a date of birth after today, a card expiry
        not after today) or InvalidPin, and then nothing is recorded.
        """
        if not prefecture.strip() or not city.strip():
            raise ValueError("the prefecture and the city must not be empty")
        issued_on = now.astimezone(JST).date()
        if attributes.date_of_birth > issued_on:
            raise ValueError("the date of birth must not be in the future")
        if card_expiry is None:
            card_expiry = default_card_expiry(date_of_birth=attributes.date_of_birth, issued_on=issued_on)
        if card_expiry <= issued_on:
            raise ValueError("the card must expire after the day it is issued")
        card = MyNumberCard.manufacture(auth_pin=auth_pin, sign_pin=sign_pin)
        last_day = card_certificate_expiry(
            date_of_birth=attributes.date_of_birth, issued_on=issued_on, card_expiry=card_expiry,
        )
        auth = self.auth_ca.issue(
            profile=CARD_AUTH,
            subject=card_auth_subject(_issuance_id()),
            public_key=card.public_key(CardKey.AUTH),
            now=now,
            not_after=_end_of_day_jst(last_day),
        )
        sign = self.sign_ca.issue(
            profile=CARD_SIGN,
            subject=card_sign_subject(_issuance_id(), prefecture=prefecture, city=city),
            public_key=card.public_key(CardKey.SIGN),
            now=now,
            not_after=min(_end_of_day_jst(last_day), auth.not_valid_after_utc),
            alternative_names=basic_attributes.encode(attributes),
        )
        card.install_certificates(auth=auth, sign=sign)
        return card

    def revoke_card(
        self, certificates: CardCertificates, *, reason: x509.ReasonFlags, now: datetime,
    ) -> tuple[CertificateStatus, ...]:
        """Revoke both certificates of a card (a lost card, a death, a hold); returns the new
        records of those that changed.

        A certificate already revoked for good (the signature certificate after a move) keeps
        its reason. Both are checked before either changes: raises ValueError for a reason
        J-LIS does not use, UnknownCertificate for a certificate it did not issue, and
        AlreadyRevoked when there is nothing left to revoke.
        """
        if reason not in CARD_REVOCATION_REASONS:
            raise ValueError(f"{reason.value} is not a reason J-LIS revokes a card for")
        pending = []
        for authority, certificate in ((self.auth_ca, certificates.auth), (self.sign_ca, certificates.sign)):
            status = self._status_of(authority, certificate)
            held_again = status.state is CertificateState.ON_HOLD and reason is x509.ReasonFlags.certificate_hold
            if status.state is not CertificateState.REVOKED and not held_again:
                pending.append((authority, certificate.serial_number))
        if not pending:
            raise AlreadyRevoked("the card's certificates are already revoked")
        return tuple(authority.revoke(serial, reason=reason, now=now) for authority, serial in pending)

    def card_status(self, certificates: CardCertificates) -> dict[CardKey, CertificateStatus]:
        """Both certificates' records. Raises UnknownCertificate."""
        return {
            CardKey.AUTH: self._status_of(self.auth_ca, certificates.auth),
            CardKey.SIGN: self._status_of(self.sign_ca, certificates.sign),
        }

    def crl(self, ca_name: str, *, now: datetime) -> x509.CertificateRevocationList:
        """The current CRL of ``ca_name``, valid for a day. Raises UnknownAuthority."""
        return self.authority(ca_name).build_crl(now=now, lifetime=CRL_LIFETIME)

    def ocsp(self, request_der: bytes, *, now: datetime) -> bytes:
        """The DER OCSPResponse to ``request_der``, valid for 15 minutes (malformed and
        unauthorized requests get their error statuses, RFC 6960 §2.3)."""
        return respond(request_der, authorities=self.authorities, now=now, lifetime=OCSP_LIFETIME)

    def wrap_keys(self, passphrase: bytes) -> dict[str, bytes]:
        """The three CA keys as PKCS#8 PEM encrypted under ``passphrase``, by authority name."""
        return {authority.name: seal_key(authority.issuer.private_key, passphrase) for authority in self.authorities}

    @classmethod
    def restore(
        cls,
        *,
        base_url: str,
        certificates: Mapping[str, x509.Certificate],
        wrapped_keys: Mapping[str, bytes],
        passphrase: bytes,
        registry_dir: Path,
    ) -> JLis:
        """A J-LIS from stored certificates and keys. Raises WrongPassphrase or CorruptState."""
        authorities = {}
        for name in CA_NAMES:
            key = _rsa(unseal_key(wrapped_keys[name], passphrase))
            if certificates[name].public_key() != key.public_key():
                raise CorruptState(f"the stored {name} key does not match its certificate")
            authorities[name] = _authority(name, Issuer(certificates[name], key), base_url, registry_dir)
        return cls(base_url=base_url, root=authorities[ROOT], auth_ca=authorities[AUTH_CA],
                   sign_ca=authorities[SIGN_CA])

    @staticmethod
    def _status_of(authority: CertificateAuthority, certificate: x509.Certificate) -> CertificateStatus:
        try:
            issued_here = CertificateRef.of(certificate).issuer_key_id == authority.key_id
        except ValueError:
            issued_here = False
        status = authority.registry.status(certificate.serial_number) if issued_here else None
        if status is None:
            raise UnknownCertificate(f"{authority.name} did not issue certificate {certificate.serial_number:x}")
        return status


def _authority(name: str, issuer: Issuer, base_url: str, registry_dir: Path) -> CertificateAuthority:
    return CertificateAuthority(
        name=name,
        issuer=issuer,
        registry=JsonFileRegistry(registry_dir / f"{name}.json"),
        crl_url=f"{base_url}/crl/{name}.crl",
        ocsp_url=f"{base_url}/ocsp",
        profiles=_ISSUES[name],
    )

