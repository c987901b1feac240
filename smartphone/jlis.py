"""The simulated J-LIS: the card authority that mints My Number Cards and publishes their status.

A root (``JLIS_ROOT``) certifies two issuing CAs, one for user-authentication certificates
(OU "JPKI for user authentication") and one for signature certificates (OU "JPKI for digital
signature"), all RSA-2048 under ``O=JPKI-TEST``. Each is an ``idp.pki.authority``
``CertificateAuthority`` with a JSON-file registry, so CRLs (RFC 5280 §5) and OCSP (RFC 6960,
``idp.pki.ocsp``) come from the same code the portal uses. Card certificates point at
``{base_url}/crl/<ca>.crl`` and ``{base_url}/ocsp``, which ``jlis_server`` serves.

J-LIS also publishes linking data (``jlis_linking``): every issuance says which two certificates
are one person's, and the life events (``renew_card``, ``move_card``, ``reissue_card``) say which
new certificate succeeds which old one, signed by the linking-data signer the root certifies.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from idp.pki import attributes as basic_attributes
from idp.pki.attributes import BasicAttributes
from idp.pki.authority import CertificateAuthority
from idp.pki.ocsp import respond
from idp.pki.profiles import (
    CARD_AUTH,
    CARD_SIGN,
    JLIS_AUTH_CA,
    JLIS_LINKING_SIGNER,
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
from smartphone.jlis_linking import CardRef, LinkingLog, load_or_issue_signer, sign_page
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
    "LifeEventRefused",
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
_ISSUES = {ROOT: frozenset({AUTH_CA, SIGN_CA, JLIS_LINKING_SIGNER.name}), AUTH_CA: frozenset({CARD_AUTH.name}),
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


class LifeEventRefused(ValueError):
    """J-LIS will not renew, move or reissue this card's certificates; the message says why."""


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
    """The J-LIS root, its two issuing CAs, and the linking data with its signer."""

    base_url: str
    root: CertificateAuthority
    auth_ca: CertificateAuthority
    sign_ca: CertificateAuthority
    linking: LinkingLog
    linking_signer: Issuer | None = None
    """Signs the linking-data feed; None for a J-LIS created without a passphrase (``restore`` makes one)."""

    def __repr__(self) -> str:
        return f"JLis({self.base_url!r})"

    @classmethod
    def create(cls, *, base_url: str, now: datetime, registry_dir: Path, passphrase: bytes | None = None) -> JLis:
        """A new J-LIS: fresh RSA-2048 keys, a root and two issuing CAs valid for 20 years.

        Registries and the linking log are JSON files in ``registry_dir``; with ``passphrase`` the
        linking-data signer is issued too and kept there, its key encrypted. Raises ValueError for
        a bad URL.
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
        signer = None
        if passphrase is not None:
            signer = load_or_issue_signer(registry_dir, root=root, passphrase=passphrase, now=now)
        return cls(base_url=base_url, root=root, auth_ca=issuing[AUTH_CA], sign_ca=issuing[SIGN_CA],
                   linking=_linking_log(registry_dir), linking_signer=signer)

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
        self._certify(card, _Holder(attributes, prefecture, city), not_after=_end_of_day_jst(last_day), now=now)
        return card

    # -- life events: each publishes the links that keep the person one person --------------------

    def renew_card(self, card: MyNumberCard, *, now: datetime, card_expiry: date | None = None) -> CardCertificates:
        """Renewal (every five years): new keys made on the card, new certificates for both, the old
        ones revoked with superseded, and the links old → new and new auth ↔ new sign published.

        The validity follows ``card_certificate_expiry`` with ``card_expiry`` (default: as for a
        card issued today). Raises LifeEventRefused (a certificate that is not good) or
        UnknownCertificate before anything changes.
        """
        old = card.certificates
        self._require_good(old)
        holder = _Holder.of(old.sign)
        issued_on = now.astimezone(JST).date()
        if card_expiry is None:
            card_expiry = default_card_expiry(date_of_birth=holder.attributes.date_of_birth, issued_on=issued_on)
        if card_expiry <= issued_on:
            raise LifeEventRefused("the card must expire after the day it is renewed")
        last_day = card_certificate_expiry(
            date_of_birth=holder.attributes.date_of_birth, issued_on=issued_on, card_expiry=card_expiry,
        )
        card.renew_key(CardKey.AUTH)
        card.renew_key(CardKey.SIGN)
        new = self._certify(card, holder, not_after=_end_of_day_jst(last_day), now=now)
        self._supersede(old, new, keys=tuple(CardKey), reason=x509.ReasonFlags.superseded, now=now)
        return new

    def move_card(self, card: MyNumberCard, *, address: str, prefecture: str, city: str,
                  now: datetime) -> CardCertificates:
        """A move: a new signature key and certificate with the new address, the old signature
        certificate revoked with affiliationChanged; the user-authentication certificate stays.

        Publishes old sign → new sign and auth ↔ new sign. Raises LifeEventRefused (a certificate
        that is not good, an empty prefecture or city), MalformedAttributes (a bad address) or
        UnknownCertificate before anything changes.
        """
        if not prefecture.strip() or not city.strip():
            raise LifeEventRefused("the prefecture and the city must not be empty")
        old = card.certificates
        self._require_good(old)
        moved = dataclasses.replace(_Holder.of(old.sign).attributes, address=address, address_substitutes="")
        card.renew_key(CardKey.SIGN)
        new = self._certify(card, _Holder(moved, prefecture, city), not_after=old.auth.not_valid_after_utc,
                            now=now, keep_auth=old.auth)
        self._supersede(old, new, keys=(CardKey.SIGN,), reason=x509.ReasonFlags.affiliation_changed, now=now)
        return new

    def reissue_card(self, old: CardCertificates, *, auth_pin: str, sign_pin: str, now: datetime,
                     card_expiry: date | None = None) -> MyNumberCard:
        """A lost card: a new card (new keys, PINs and certificates) for the same holder, the old
        certificates revoked with keyCompromise (unless already revoked), the links published.

        Raises LifeEventRefused when an old certificate was already replaced (renewed or moved),
        UnknownCertificate, or what ``issue_card`` raises, before anything changes.
        """
        statuses = self.card_status(old)
        for key, status in statuses.items():
            if status.reason in _REPLACED:
                raise LifeEventRefused(f"the {key.label} certificate was already replaced; reissue the current card")
        holder = _Holder.of(old.sign)
        card = self.issue_card(attributes=holder.attributes, prefecture=holder.prefecture, city=holder.city,
                               auth_pin=auth_pin, sign_pin=sign_pin, now=now, card_expiry=card_expiry)
        self._supersede(old, card.certificates, keys=tuple(CardKey), reason=x509.ReasonFlags.key_compromise, now=now)
        return card

    def linking_page(self, *, since: int, limit: int, now: datetime) -> str:
        """The signed feed page of the links after sequence number ``since`` (``jlis_linking.sign_page``)."""
        if self.linking_signer is None:
            raise CorruptState("this J-LIS has no linking-data signer: load it with its passphrase")
        entries, more = self.linking.since(since, limit=limit)
        return sign_page(signer=self.linking_signer, entries=entries, since=since, more=more,
                         issuer_url=f"{self.base_url}/linking", now=now)

    def _certify(self, card: MyNumberCard, holder: _Holder, *, not_after: datetime, now: datetime,
                 keep_auth: x509.Certificate | None = None) -> CardCertificates:
        """Certify the card's keys (the user-authentication one unless ``keep_auth``), write the
        certificates onto it and publish that they are one person's."""
        auth = keep_auth or self.auth_ca.issue(
            profile=CARD_AUTH,
            subject=card_auth_subject(_issuance_id()),
            public_key=card.public_key(CardKey.AUTH),
            now=now,
            not_after=not_after,
        )
        sign = self.sign_ca.issue(
            profile=CARD_SIGN,
            subject=card_sign_subject(_issuance_id(), prefecture=holder.prefecture, city=holder.city),
            public_key=card.public_key(CardKey.SIGN),
            now=now,
            not_after=min(not_after, auth.not_valid_after_utc),
            alternative_names=basic_attributes.encode(holder.attributes),
        )
        card.install_certificates(auth=auth, sign=sign)
        self.linking.same_person(auth=CardRef.of(auth, CardKey.AUTH.value), sign=CardRef.of(sign, CardKey.SIGN.value),
                                 now=now)
        return card.certificates

    def _require_good(self, certificates: CardCertificates) -> None:
        for key, status in self.card_status(certificates).items():
            if status.state is not CertificateState.GOOD:
                raise LifeEventRefused(f"the {key.label} certificate is {status.state.value}")

    def _supersede(self, old: CardCertificates, new: CardCertificates, *, keys: tuple[CardKey, ...],
                   reason: x509.ReasonFlags, now: datetime) -> None:
        """Revoke each old certificate still good or held, then publish old → new for each key."""
        for key in keys:
            authority = self.auth_ca if key is CardKey.AUTH else self.sign_ca
            if self._status_of(authority, old[key]).state is not CertificateState.REVOKED:
                authority.revoke(old[key].serial_number, reason=reason, now=now)
            self.linking.successor(old=CardRef.of(old[key], key.value), new=CardRef.of(new[key], key.value),
                                   reason=reason, now=now)

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
        now: datetime | None = None,
    ) -> JLis:
        """A J-LIS from stored certificates and keys, with its linking-data signer (issued at ``now``,
        default the current time, if there is none yet or it expired). Raises WrongPassphrase or CorruptState."""
        authorities = {}
        for name in CA_NAMES:
            key = _rsa(unseal_key(wrapped_keys[name], passphrase))
            if certificates[name].public_key() != key.public_key():
                raise CorruptState(f"the stored {name} key does not match its certificate")
            authorities[name] = _authority(name, Issuer(certificates[name], key), base_url, registry_dir)
        signer = load_or_issue_signer(
            registry_dir, root=authorities[ROOT], passphrase=passphrase, now=now or datetime.now(UTC),
        )
        return cls(base_url=base_url, root=authorities[ROOT], auth_ca=authorities[AUTH_CA],
                   sign_ca=authorities[SIGN_CA], linking=_linking_log(registry_dir), linking_signer=signer)

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


_REPLACED = frozenset({x509.ReasonFlags.superseded, x509.ReasonFlags.affiliation_changed})
"""Revocation reasons that mean J-LIS already issued a successor."""


@dataclass(frozen=True, slots=True)
class _Holder:
    """What a card's signature certificate says of its holder: the attributes and the subject's locality."""

    attributes: BasicAttributes
    prefecture: str
    city: str

    @classmethod
    def of(cls, sign: x509.Certificate) -> _Holder:
        localities = [str(attribute.value) for attribute in sign.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)]
        if len(localities) != 2:  # noqa: PLR2004 - the prefecture and the city
            raise CorruptState("a card signature certificate names its prefecture and city")
        return cls(basic_attributes.decode(sign), localities[0], localities[1])


def _linking_log(registry_dir: Path) -> LinkingLog:
    return LinkingLog(registry_dir / "linking.json")


def _authority(name: str, issuer: Issuer, base_url: str, registry_dir: Path) -> CertificateAuthority:
    return CertificateAuthority(
        name=name,
        issuer=issuer,
        registry=JsonFileRegistry(registry_dir / f"{name}.json"),
        crl_url=f"{base_url}/crl/{name}.crl",
        ocsp_url=f"{base_url}/ocsp",
        profiles=_ISSUES[name],
    )

