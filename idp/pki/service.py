"""The portal's own certificate authorities: a root and the smartphone issuing CA (RFC 5280).

``init_pki`` makes them once, into the instance directory (``<instance>/pki/<name>.key.pem``,
mode 0600, and ``<name>.crt.pem``), and beside them the key and certificate of the portal's
timestamping unit (RFC 3161), issued by the root, in ``<instance>/tsa/``. With a key-encryption
key (``idp.store.key_files``) each key is sealed instead (``<name>.key.sealed``, its place
``pki/<name>.key`` as associated data); ``seal_pki_keys`` (``idp keys encrypt``) seals the keys
of an instance made without one. ``PortalPki`` loads
them once per application and offers what the rest of the portal needs: issuing and revoking
smartphone certificates, the published CRL of each CA (RFC 5280 §5), OCSP answers (RFC 6960)
for both, and the timestamping unit's key for ``idp.signing``.

The root also publishes a CRL and answers OCSP for the smartphone CA certificate, so that a
relying party requiring revocation information for every certificate of the path (pyhanko-
certvalidator's ``require`` mode, ``openssl verify -crl_check_all``) finds it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session, sessionmaker

from idp.clock import Clock
from idp.pki import attributes as basic_attributes
from idp.pki.authority import CertificateAuthority
from idp.pki.ocsp import respond
from idp.pki.profiles import (
    PORTAL_ROOT,
    SMARTPHONE_AUTH,
    SMARTPHONE_CA,
    SMARTPHONE_SIGN,
    TIMESTAMPING,
    CertificateProfile,
    Issuer,
    KeyAlgorithm,
    ProfileError,
    PublicKey,
    build_certificate,
    generate_key,
)
from idp.pki.records import PublishedCrlRecord, SqlCertificateRegistry
from idp.pki.registry import CertificateRef, CertificateStatus, RegistryError
from idp.settings import Settings
from idp.store import key_files

__all__ = [
    "CA_LIFETIME",
    "ROOT_LIFETIME",
    "ROOT_NAME",
    "SMARTPHONE_CA_NAME",
    "TSA_LIFETIME",
    "TSA_NAME",
    "PkiNotInitialised",
    "PkiSetupError",
    "PortalPki",
    "UnknownAuthority",
    "crl_url",
    "init_pki",
    "ocsp_url",
    "open_pki_keys",
    "seal_pki_keys",
]

ROOT_NAME = PORTAL_ROOT.name
SMARTPHONE_CA_NAME = SMARTPHONE_CA.name
ROOT_LIFETIME = timedelta(days=20 * 365 + 5)
"""About twenty years."""
CA_LIFETIME = timedelta(days=10 * 365 + 2)
"""About ten years: room for a five-year smartphone certificate issued late in its life."""
TSA_NAME = "timestamping"
TSA_LIFETIME = timedelta(days=10 * 365 + 2)
"""About ten years: a timestamp stays verifiable while the TSA certificate is valid."""
_ORGANIZATION = "Myna Gateway"
_SUBJECTS = {
    ROOT_NAME: "Myna Gateway Root CA",
    SMARTPHONE_CA_NAME: "Myna Gateway Smartphone CA",
    TSA_NAME: "Myna Gateway Timestamping Unit",
}


class PkiSetupError(RuntimeError):
    """The instance's CA files are inconsistent: one half of a pair, or a key that fits no certificate."""


class PkiNotInitialised(PkiSetupError):
    """The instance has no portal CAs: run ``idp init``."""


class UnknownAuthority(LookupError):
    """No portal CA has that name."""


def crl_url(issuer_url: str, name: str) -> str:
    """Where the portal publishes the CRL of CA ``name``."""
    return f"{issuer_url}/pki/crl/{name}.crl"


def ocsp_url(issuer_url: str) -> str:
    """The portal's OCSP responder, for both of its CAs."""
    return f"{issuer_url}/pki/ocsp"


def init_pki(instance: Path, *, issuer_url: str, now: datetime, kek: bytes | None = None) -> bool:
    """Create the portal root and the smartphone CA in ``instance/pki``, and the timestamping
    unit in ``instance/tsa``, where they are missing; each new key sealed under ``kek`` if given.

    Idempotent: a pair whose key and certificate are both present is kept as it is. Returns whether
    anything was created. Raises PkiSetupError when only one file of a pair is present (it is
    never overwritten), when a key does not fit its certificate, or when the smartphone CA or the
    timestamping unit would need a new root while its own files exist; KeyEncryptionKeyError
    when a sealed key does not open with ``kek``.
    """
    directory = instance / "pki"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tsa_directory = instance / "tsa"
    tsa_directory.mkdir(mode=0o700, exist_ok=True)
    root = _load_pair(directory, ROOT_NAME, kek=kek)
    ca = _load_pair(directory, SMARTPHONE_CA_NAME, kek=kek)
    tsa = _load_pair(tsa_directory, TSA_NAME, kek=kek)
    if root is None and ca is not None:
        raise PkiSetupError("the smartphone CA exists but the portal root does not; restore the root's files")
    if root is None and tsa is not None:
        raise PkiSetupError("the timestamping unit exists but the portal root does not; restore the root's files")
    created = False
    if root is None:
        key = generate_key(KeyAlgorithm.EC_P256)
        certificate = build_certificate(
            profile=PORTAL_ROOT,
            subject=_subject(ROOT_NAME),
            public_key=key.public_key(),
            issuer=None,
            signing_key=key,
            not_before=now,
            not_after=now + ROOT_LIFETIME,
        )
        root = Issuer(certificate, key)
        _store_pair(directory, ROOT_NAME, root, kek=kek)
        created = True
    if ca is None:
        key = generate_key(KeyAlgorithm.EC_P256)
        certificate = build_certificate(
            profile=SMARTPHONE_CA,
            subject=_subject(SMARTPHONE_CA_NAME),
            public_key=key.public_key(),
            issuer=root,
            not_before=now,
            not_after=min(now + CA_LIFETIME, root.certificate.not_valid_after_utc),
            crl_url=crl_url(issuer_url, ROOT_NAME),
            ocsp_url=ocsp_url(issuer_url),
        )
        _store_pair(directory, SMARTPHONE_CA_NAME, Issuer(certificate, key), kek=kek)
        created = True
    if tsa is None:
        _store_pair(tsa_directory, TSA_NAME, _new_timestamping_unit(root, issuer_url=issuer_url, now=now), kek=kek)
        created = True
    return created


def open_pki_keys(instance: Path, *, kek: bytes | None) -> tuple[Issuer, Issuer, Issuer]:
    """The portal root, the smartphone CA and the timestamping unit, keys opened with ``kek``.

    Raises PkiNotInitialised when one is missing, PkiSetupError when its files are inconsistent,
    KeyEncryptionKeyError (naming the file) when a sealed key does not open with ``kek``.
    """
    directory = instance / "pki"
    root = _load_pair(directory, ROOT_NAME, kek=kek)
    ca = _load_pair(directory, SMARTPHONE_CA_NAME, kek=kek)
    if root is None or ca is None:
        raise PkiNotInitialised(f"{directory} holds no portal CAs: run `idp init`")
    timestamping = _load_pair(instance / "tsa", TSA_NAME, kek=kek)
    if timestamping is None:
        raise PkiNotInitialised(f"{instance / 'tsa'} holds no timestamping unit: run `idp init`")
    return root, ca, timestamping


def seal_pki_keys(instance: Path, *, kek: bytes) -> list[str]:
    """Seal the plain keys of the portal's CAs and timestamping unit under ``kek`` (``idp keys
    encrypt``); returns the plain files sealed, relative to the instance.

    Each key is checked first to open and fit its certificate (``open_pki_keys``), then sealed
    atomically (``key_files.seal_key_file``); idempotent. Raises as ``open_pki_keys``.
    """
    open_pki_keys(instance, kek=kek)
    sealed = []
    for directory, name in ((instance / "pki", ROOT_NAME), (instance / "pki", SMARTPHONE_CA_NAME),
                            (instance / "tsa", TSA_NAME)):
        key_path, _ = _paths(directory, name)
        if key_files.seal_key_file(key_path, purpose=_purpose(key_path), kek=kek) is not None:
            sealed.append(f"{directory.name}/{key_path.name}")
    return sealed


def _new_timestamping_unit(root: Issuer, *, issuer_url: str, now: datetime) -> Issuer:
    """A fresh key reserved for timestamps (RFC 3161 §2.3) and its certificate from the root."""
    key = generate_key(KeyAlgorithm.EC_P256)
    certificate = build_certificate(
        profile=TIMESTAMPING,
        subject=_subject(TSA_NAME),
        public_key=key.public_key(),
        issuer=root,
        not_before=now,
        not_after=min(now + TSA_LIFETIME, root.certificate.not_valid_after_utc),
        crl_url=crl_url(issuer_url, ROOT_NAME),
        ocsp_url=ocsp_url(issuer_url),
    )
    return Issuer(certificate, key)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Published:
    """A CA as the HTTP endpoints serve it: its certificate in DER."""

    authority: CertificateAuthority
    certificate_der: bytes


class PortalPki:
    """The portal's two CAs, their records, CRLs and OCSP responder. One per application.

    Certificates and keys are read from the instance directory once, here (sealed keys opened
    with ``kek``, by default the environment's: a wrong or missing KEK raises
    KeyEncryptionKeyError naming the file); records, CRLs and statuses are read from the
    database on each call, so every worker sees every revocation.
    """

    def __init__(
        self, *, settings: Settings, sessions: sessionmaker[Session], clock: Clock, kek: bytes | None = None,
    ) -> None:
        opened_with = kek if kek is not None else key_files.kek_from_environment()
        root, ca, timestamping = open_pki_keys(settings.instance, kek=opened_with)
        self.timestamping = timestamping
        """The timestamping unit's key and certificate (issued by the root, which answers for it)."""
        self._settings = settings
        self._clock = clock
        self.root_authority = CertificateAuthority(
            name=ROOT_NAME,
            issuer=root,
            registry=SqlCertificateRegistry(sessions, ROOT_NAME),
            crl_url=crl_url(settings.issuer, ROOT_NAME),
            ocsp_url=ocsp_url(settings.issuer),
            profiles=frozenset({SMARTPHONE_CA.name, TIMESTAMPING.name}),
        )
        """The root, as the authority that issued the smartphone CA and timestamping certificates."""
        self._registry = SqlCertificateRegistry(sessions, SMARTPHONE_CA_NAME)
        self.authority = CertificateAuthority(
            name=SMARTPHONE_CA_NAME,
            issuer=ca,
            registry=self._registry,
            crl_url=crl_url(settings.issuer, SMARTPHONE_CA_NAME),
            ocsp_url=ocsp_url(settings.issuer),
            profiles=frozenset({SMARTPHONE_AUTH.name, SMARTPHONE_SIGN.name}),
        )
        """The smartphone CA, which issues the smartphone user-auth and signature certificates."""
        self._published = {
            authority.name: _Published(
                authority=authority,
                certificate_der=authority.certificate.public_bytes(serialization.Encoding.DER),
            )
            for authority in (self.root_authority, self.authority)
        }
        self._root_recorded = threading.Event()
        self._root_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PortalPki({self._settings.instance!s})"

    @property
    def clock(self) -> Clock:
        """The clock every step here reads."""
        return self._clock

    @property
    def ocsp_lifetime(self) -> timedelta:
        """How long an OCSP answer is fresh (``pki.ocsp_lifetime``)."""
        return self._settings.pki.ocsp_lifetime

    @property
    def root(self) -> x509.Certificate:
        """The portal root certificate, the trust anchor of every smartphone certificate."""
        return self.root_authority.certificate

    @property
    def authorities(self) -> tuple[CertificateAuthority, ...]:
        """Both CAs: the smartphone CA and the root."""
        return (self.authority, self.root_authority)

    def ca_certificate_der(self, name: str) -> bytes:
        """The DER certificate of CA ``name``; raises UnknownAuthority."""
        return self._published_ca(name).certificate_der

    def issue_smartphone_certificate(
        self,
        *,
        profile: CertificateProfile,
        subject: x509.Name,
        public_key: PublicKey,
        card_certificates: Sequence[x509.Certificate],
        attributes: basic_attributes.BasicAttributes | None = None,
    ) -> x509.Certificate:
        """Issue a smartphone user-auth or signature certificate and record its card sources.

        It is valid for ``pki.smartphone_certificate_lifetime`` and never past any of the
        ``card_certificates`` it comes from (verified by the caller). A signature certificate
        carries ``attributes``; a user-auth certificate carries no personal data. Raises
        ProfileError when the profile, the key or the attributes do not fit.
        """
        if profile not in {SMARTPHONE_AUTH, SMARTPHONE_SIGN}:
            raise ProfileError(f"the smartphone CA does not issue {profile.name} certificates")
        if not card_certificates:
            raise ProfileError("a smartphone certificate is issued from the card certificates; none were given")
        if profile.carries_attributes != (attributes is not None):
            raise ProfileError(
                f"a {profile.name} certificate "
                f"{'must carry' if profile.carries_attributes else 'carries no'} basic attributes",
            )
        now = self._clock.now()
        not_after = min(
            now + self._settings.pki.smartphone_certificate_lifetime,
            *(card.not_valid_after_utc for card in card_certificates),
        )
        return self.authority.issue(
            profile=profile,
            subject=subject,
            public_key=public_key,
            now=now,
            not_after=not_after,
            alternative_names=basic_attributes.encode(attributes) if attributes is not None else (),
            issued_from=[CertificateRef.of(card) for card in card_certificates],
        )

    def status(self, serial_number: int) -> CertificateStatus | None:
        """The record of a smartphone certificate, or None when the portal never issued it."""
        return self._registry.status(serial_number)

    def issued_from(self, card: CertificateRef) -> list[CertificateStatus]:
        """The smartphone certificates issued from the card certificate ``card``."""
        return self._registry.issued_from(card)

    def revoke(self, serial_number: int, reason: x509.ReasonFlags) -> CertificateStatus:
        """Revoke (or, with certificateHold, suspend) a smartphone certificate; republish the CRL.

        Raises UnknownCertificate or AlreadyRevoked; nothing is published then.
        """
        status = self.authority.revoke(serial_number, reason=reason, now=self._clock.now())
        self._publish(self.authority)
        return status

    def resume(self, serial_number: int) -> CertificateStatus:
        """Take a suspended smartphone certificate off hold; republish the CRL.

        Raises UnknownCertificate, or AlreadyRevoked unless it is on hold.
        """
        status = self.authority.resume(serial_number)
        self._publish(self.authority)
        return status

    def published_crl(self, name: str = SMARTPHONE_CA_NAME) -> PublishedCrlRecord:
        """The CRL that CA ``name`` publishes, signing a new one when there is none or it is past
        the half-life of its validity (so a relying party never holds one about to expire).

        Raises UnknownAuthority.
        """
        authority = self._published_ca(name).authority
        registry = _sql_registry(authority)
        published = registry.published_crl()
        now = self._clock.now()
        if published is None or now >= published.this_update + (published.next_update - published.this_update) / 2:
            self._publish(authority)
            published = registry.published_crl()
        if published is None:  # pragma: no cover - _publish always leaves a CRL
            raise RegistryError(f"{name} published no CRL")
        return published

    def current_crl(self, name: str = SMARTPHONE_CA_NAME) -> bytes:
        """The DER of the CRL that CA ``name`` publishes (see ``published_crl``)."""
        return self.published_crl(name).der

    def ocsp_response(self, request_der: bytes) -> bytes:
        """Answer an OCSP request about a certificate of either CA (RFC 6960)."""
        self._record_ca_certificate()
        return respond(
            request_der,
            authorities=self.authorities,
            now=self._clock.now(),
            lifetime=self._settings.pki.ocsp_lifetime,
        )

    def _published_ca(self, name: str) -> _Published:
        try:
            return self._published[name]
        except KeyError:
            raise UnknownAuthority(f"the portal has no CA named {name!r}") from None

    def _publish(self, authority: CertificateAuthority) -> None:
        if authority is self.root_authority:
            self._record_ca_certificate()
        crl = authority.build_crl(now=self._clock.now(), lifetime=self._settings.pki.crl_lifetime)
        _sql_registry(authority).publish_crl(crl)

    def _record_ca_certificate(self) -> None:
        """Record the smartphone CA and timestamping certificates in the root's registry, once per
        database, so that the root's CRL and OCSP answer for them.

        ``init_pki`` makes the certificates before any database may exist, so the records are
        written on first use; a concurrent writer's record is as good as ours.
        """
        if self._root_recorded.is_set():
            return
        with self._root_lock:
            registry = self.root_authority.registry
            issued = (
                (self.authority.certificate, SMARTPHONE_CA.name),
                (self.timestamping.certificate, TIMESTAMPING.name),
            )
            for certificate, profile in issued:
                if registry.status(certificate.serial_number) is None:
                    # RegistryError here means a concurrent first use recorded it a moment ago.
                    with contextlib.suppress(RegistryError):
                        registry.record(certificate, profile=profile)
            self._root_recorded.set()


def _sql_registry(authority: CertificateAuthority) -> SqlCertificateRegistry:
    registry = authority.registry
    if not isinstance(registry, SqlCertificateRegistry):  # pragma: no cover - PortalPki builds both
        raise TypeError(f"{authority.name} does not keep its records in SQL")
    return registry


def _subject(name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, _SUBJECTS[name]),
    ])


def _paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.key.pem", directory / f"{name}.crt.pem"


def _purpose(key_path: Path) -> str:
    """A CA key's associated data when sealed: its place in the instance, ``pki/portal-root.key``."""
    return f"{key_path.parent.name}/{key_path.name.removesuffix('.pem')}"


def _load_pair(directory: Path, name: str, *, kek: bytes | None) -> Issuer | None:
    """The CA ``name`` from its files (the key sealed or plain); None when neither file exists.

    Raises KeyEncryptionKeyError, naming the file, when a sealed key does not open with ``kek``.
    """
    key_path, certificate_path = _paths(directory, name)
    present = [key_files.key_file_exists(key_path), certificate_path.exists()]
    if not any(present):
        return None
    if not all(present):
        missing = certificate_path if present[0] else key_path
        raise PkiSetupError(f"{missing} is missing while its pair is present; restore it, it is never recreated")
    try:
        opened = key_files.read_key_file(key_path, purpose=_purpose(key_path), kek=kek)
        key_path = opened.path
        key = serialization.load_pem_private_key(opened.data, password=None)
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
    except key_files.KeyEncryptionKeyError:
        raise
    except (OSError, ValueError, TypeError, key_files.KeyFileError) as exc:
        raise PkiSetupError(f"cannot read the {name} key or certificate in {directory}: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PkiSetupError(f"{key_path} holds neither an RSA nor an EC key")
    ours = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    if ours != theirs:
        raise PkiSetupError(f"{key_path} does not belong to the certificate {certificate_path}")
    return Issuer(certificate, key)


def _store_pair(directory: Path, name: str, issuer: Issuer, *, kek: bytes | None) -> None:
    """Write key (mode 0600, sealed under ``kek`` if given) and certificate, each created new: an
    existing file is never replaced."""
    key_path, certificate_path = _paths(directory, name)
    key_pem = issuer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )
    key_files.write_key_file(key_path, key_pem, purpose=_purpose(key_path), kek=kek)
    key_files.write_new(certificate_path, issuer.certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
