"""Certificate profiles (RFC 5280 §4.2) of every certificate in the system, and the one builder.

A profile fixes what a certificate may be used for: basic constraints, key usage, extended key
usage, certificate policies, the key algorithm and whether it carries revocation pointers.
The J-LIS profiles reproduce what real My Number Card certificates show (``jpki-profile.md``);
the smartphone profiles are ours, where JPKI publishes nothing (``docs/pki-profile.md``).
Both the portal's CA and the simulated J-LIS and SE vendor build certificates with
``build_certificate``, so a profile is written once.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from uuid import UUID

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from idp.pki import oids

__all__ = [
    "ATTESTATION",
    "CARD_AUTH",
    "CARD_SIGN",
    "JLIS_AUTH_CA",
    "JLIS_LINKING_SIGNER",
    "JLIS_ROOT",
    "JLIS_SIGN_CA",
    "LINKING_DATA_SIGNING",
    "PORTAL_ROOT",
    "PROFILES",
    "SMARTPHONE_AUTH",
    "SMARTPHONE_CA",
    "SMARTPHONE_SIGN",
    "TIMESTAMPING",
    "VENDOR_ROOT",
    "CertificateProfile",
    "Issuer",
    "KeyAlgorithm",
    "PrivateKey",
    "ProfileError",
    "PublicKey",
    "attestation_subject",
    "build_certificate",
    "card_auth_subject",
    "card_certificate_expiry",
    "card_sign_subject",
    "generate_key",
    "jlis_name",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

RSA_BITS = 2048


class ProfileError(ValueError):
    """A certificate request does not fit its profile (wrong key type, missing subject data)."""


class KeyAlgorithm(enum.Enum):
    """The key a profile requires: RSA-2048 on the card, ECDSA P-256 in the SE and our CAs."""

    RSA_2048 = "rsa-2048"
    EC_P256 = "ec-p256"

    def accepts(self, key: PublicKey) -> bool:
        """Whether ``key`` is of this algorithm and size."""
        if self is KeyAlgorithm.RSA_2048:
            return isinstance(key, rsa.RSAPublicKey) and key.key_size == RSA_BITS
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def generate_key(algorithm: KeyAlgorithm) -> PrivateKey:
    """A fresh private key of ``algorithm`` (RSA with e = 65537, as on the card)."""
    if algorithm is KeyAlgorithm.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


_KEY_USAGE_FLAGS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateProfile:
    """What one kind of certificate says about itself."""

    name: str
    key_algorithm: KeyAlgorithm
    key_usage: frozenset[str]
    """Flags of ``x509.KeyUsage`` (``content_commitment`` is nonRepudiation); always critical."""
    ca: bool = False
    path_length: int | None = None
    extended_key_usage: tuple[x509.ObjectIdentifier, ...] = ()
    critical_extended_key_usage: bool = False
    """Whether the extended key usage is critical (the TSA's must be, RFC 3161 §2.3)."""
    policies: tuple[x509.ObjectIdentifier, ...] = ()
    revocation_pointers: bool = True
    """CRL distribution point and OCSP URL; every certificate but a root and an attestation."""
    carries_attributes: bool = False
    """Whether the four basic attributes must be in its subjectAltName."""

    def critical_extensions(self) -> list[x509.ExtensionType]:
        """Basic constraints, key usage and, when the profile makes it critical, extended key usage."""
        extensions: list[x509.ExtensionType] = [
            x509.BasicConstraints(ca=self.ca, path_length=self.path_length), self.key_usage_extension(),
        ]
        if self.extended_key_usage and self.critical_extended_key_usage:
            extensions.append(x509.ExtendedKeyUsage(self.extended_key_usage))
        return extensions

    def key_usage_extension(self) -> x509.KeyUsage:
        """The critical keyUsage extension of this profile."""
        flags = {flag: flag in self.key_usage for flag in _KEY_USAGE_FLAGS}
        return x509.KeyUsage(**flags, encipher_only=False, decipher_only=False)


_CA_USAGE = frozenset({"key_cert_sign", "crl_sign"})

JLIS_ROOT = CertificateProfile(
    name="jlis-root", key_algorithm=KeyAlgorithm.RSA_2048, key_usage=_CA_USAGE, ca=True,
    revocation_pointers=False,
)
JLIS_AUTH_CA = CertificateProfile(
    name="jlis-auth-ca", key_algorithm=KeyAlgorithm.RSA_2048, key_usage=_CA_USAGE, ca=True, path_length=0,
)
JLIS_SIGN_CA = CertificateProfile(
    name="jlis-sign-ca", key_algorithm=KeyAlgorithm.RSA_2048, key_usage=_CA_USAGE, ca=True, path_length=0,
)
CARD_AUTH = CertificateProfile(
    name="card-auth", key_algorithm=KeyAlgorithm.RSA_2048, key_usage=frozenset({"digital_signature"}),
    policies=(oids.CARD_AUTH_POLICY,),
)
CARD_SIGN = CertificateProfile(
    name="card-sign", key_algorithm=KeyAlgorithm.RSA_2048,
    key_usage=frozenset({"digital_signature", "content_commitment"}),
    policies=(oids.CARD_SIGN_POLICY,), carries_attributes=True,
)
LINKING_DATA_SIGNING = x509.ObjectIdentifier(f"{oids.MYNA_ARC}.2.1")
"""**Ours**: the extended key usage of the J-LIS key that signs linking-data feed pages; a J-LIS
certificate without it (a CA, a card) cannot sign the feed, and this one can sign nothing else."""
JLIS_LINKING_SIGNER = CertificateProfile(
    name="jlis-linking-signer", key_algorithm=KeyAlgorithm.RSA_2048, key_usage=frozenset({"digital_signature"}),
    extended_key_usage=(LINKING_DATA_SIGNING,),
)
"""The J-LIS linking-data signer, issued by the J-LIS root (``docs/linking.md``)."""
PORTAL_ROOT = CertificateProfile(
    name="portal-root", key_algorithm=KeyAlgorithm.EC_P256, key_usage=_CA_USAGE, ca=True,
    revocation_pointers=False,
)
SMARTPHONE_CA = CertificateProfile(
    name="smartphone-ca", key_algorithm=KeyAlgorithm.EC_P256, key_usage=_CA_USAGE, ca=True, path_length=0,
)
SMARTPHONE_AUTH = CertificateProfile(
    name="smartphone-auth", key_algorithm=KeyAlgorithm.EC_P256, key_usage=frozenset({"digital_signature"}),
    policies=(oids.SMARTPHONE_AUTH_POLICY,),
)
SMARTPHONE_SIGN = CertificateProfile(
    name="smartphone-sign", key_algorithm=KeyAlgorithm.EC_P256,
    key_usage=frozenset({"digital_signature", "content_commitment"}),
    policies=(oids.SMARTPHONE_SIGN_POLICY,), carries_attributes=True,
)
VENDOR_ROOT = CertificateProfile(
    name="vendor-root", key_algorithm=KeyAlgorithm.EC_P256, key_usage=_CA_USAGE, ca=True,
    revocation_pointers=False,
)
ATTESTATION = CertificateProfile(
    name="attestation", key_algorithm=KeyAlgorithm.EC_P256, key_usage=frozenset({"digital_signature"}),
    revocation_pointers=False,
)
"""WebAuthn L3 §8.2.1 packed attestation certificate: v3, OU "Authenticator Attestation",
basicConstraints CA=false, and the AAGUID extension. Attestation trust is the configured list
of vendor roots (as FIDO metadata works), so it carries no revocation pointers."""

TIMESTAMPING = CertificateProfile(
    name="timestamping", key_algorithm=KeyAlgorithm.EC_P256, key_usage=frozenset({"digital_signature"}),
    extended_key_usage=(ExtendedKeyUsageOID.TIME_STAMPING,), critical_extended_key_usage=True,
)
"""The portal's RFC 3161 timestamping unit, issued by the portal root: RFC 3161 §2.3 "The TSA
MUST sign each time-stamp message with a key reserved specifically for that purpose" and its
certificate "MUST contain only one instance of the extended key usage field extension ... with
KeyPurposeID having value: id-kp-timeStamping. This extension MUST be critical."
"""

PROFILES = {profile.name: profile for profile in (
    JLIS_ROOT, JLIS_AUTH_CA, JLIS_SIGN_CA, CARD_AUTH, CARD_SIGN, PORTAL_ROOT, SMARTPHONE_CA,
    SMARTPHONE_AUTH, SMARTPHONE_SIGN, VENDOR_ROOT, ATTESTATION, JLIS_LINKING_SIGNER, TIMESTAMPING,
)}


@dataclass(frozen=True, slots=True)
class Issuer:
    """The certificate and key that sign a new certificate."""

    certificate: x509.Certificate
    private_key: PrivateKey

    def __repr__(self) -> str:
        return f"Issuer({self.certificate.subject.rfc4514_string()!r})"


def build_certificate(
    *,
    profile: CertificateProfile,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: Issuer | None,
    not_before: datetime,
    not_after: datetime,
    signing_key: PrivateKey | None = None,
    serial_number: int | None = None,
    alternative_names: Sequence[x509.GeneralName] = (),
    crl_url: str | None = None,
    ocsp_url: str | None = None,
    aaguid: UUID | None = None,
) -> x509.Certificate:
    """Build and sign a certificate of ``profile``.

    ``issuer`` None means self-signed by ``signing_key`` (a root). Raises ProfileError when the
    key or the data does not fit the profile.
    """
    if not profile.key_algorithm.accepts(public_key):
        raise ProfileError(f"a {profile.name} certificate needs an {profile.key_algorithm.value} key")
    if not_after <= not_before:
        raise ProfileError("not_after must be later than not_before")
    if profile.carries_attributes and not alternative_names:
        raise ProfileError(f"a {profile.name} certificate must carry the four basic attributes")
    if (profile is ATTESTATION) != (aaguid is not None):
        raise ProfileError("an AAGUID belongs in an attestation certificate and nowhere else")
    if issuer is None:
        if signing_key is None:
            raise ProfileError("a self-signed certificate needs its signing key")
        issuer_name, key = subject, signing_key
    else:
        if issuer.certificate.not_valid_after_utc < not_after:
            raise ProfileError("a certificate must not outlive its issuer")
        issuer_name, key = issuer.certificate.subject, issuer.private_key

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial_number or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    identifiers: list[x509.ExtensionType] = [x509.SubjectKeyIdentifier.from_public_key(public_key)]
    if issuer is not None:
        identifiers.append(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()))
    critical = profile.critical_extensions()
    optional = _optional_extensions(profile, alternative_names, crl_url, ocsp_url, aaguid)
    for extension in (*critical, *identifiers, *optional):
        builder = builder.add_extension(extension, critical=extension in critical)
    return builder.sign(key, hashes.SHA256())


def _optional_extensions(
    profile: CertificateProfile,
    alternative_names: Sequence[x509.GeneralName],
    crl_url: str | None,
    ocsp_url: str | None,
    aaguid: UUID | None,
) -> list[x509.ExtensionType]:
    """The non-critical extensions after the key identifiers, in RFC 5280 §4.2 order (a critical
    extended key usage goes in with the other critical ones)."""
    extensions: list[x509.ExtensionType] = []
    if profile.extended_key_usage and not profile.critical_extended_key_usage:
        extensions.append(x509.ExtendedKeyUsage(profile.extended_key_usage))
    if profile.policies:
        extensions.append(x509.CertificatePolicies([x509.PolicyInformation(oid, None) for oid in profile.policies]))
    if alternative_names:
        extensions.append(x509.SubjectAlternativeName(alternative_names))
    if profile.revocation_pointers:
        if not (crl_url and ocsp_url):
            raise ProfileError(f"a {profile.name} certificate must carry its CRL and OCSP URLs")
        extensions.append(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None, reasons=None, crl_issuer=None,
        )]))
        extensions.append(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)),
        ]))
    if aaguid is not None:
        extensions.append(x509.UnrecognizedExtension(oids.FIDO_AAGUID, core.OctetString(aaguid.bytes).dump()))
    return extensions


def attestation_subject(*, vendor: str, model: str) -> x509.Name:
    """The subject WebAuthn requires of a packed attestation certificate (§8.2.1)."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, vendor),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
        x509.NameAttribute(NameOID.COMMON_NAME, model),
    ])


JLIS_AGENCY = "Japan Agency for Local Authority Information Systems"


def jlis_name(unit: str, *, organization: str = "JPKI-TEST") -> x509.Name:
    """A J-LIS CA name: ``C=JP, O=JPKI-TEST, OU=<unit>, OU=Japan Agency for ...``."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, JLIS_AGENCY),
    ])


def card_auth_subject(issuance_id: str) -> x509.Name:
    """A card user-authentication certificate's subject: ``C=JP, CN=<opaque id>``, no name."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.COMMON_NAME, issuance_id),
    ])


def card_sign_subject(issuance_id: str, *, prefecture: str, city: str) -> x509.Name:
    """A card signature certificate's subject: ``C=JP, L=<prefecture>, L=<city>, CN=<opaque id>``."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, prefecture),
        x509.NameAttribute(NameOID.LOCALITY_NAME, city),
        x509.NameAttribute(NameOID.COMMON_NAME, issuance_id),
    ])


RENEWAL_WINDOW = timedelta(days=92)
"""Three months: a certificate issued this close before a birthday runs to the 6th birthday."""


def card_certificate_expiry(*, date_of_birth: date, issued_on: date, card_expiry: date) -> date:
    """The last day of a card certificate issued on ``issued_on`` (JPKI validity rule).

    It runs to the holder's 5th birthday after issue, or the 6th when issued within the three
    months before a birthday (early renewal), and never past the card's own expiry.
    """
    birthdays: list[date] = []
    year = issued_on.year
    while len(birthdays) < 6:  # noqa: PLR2004 - at most the 6th birthday
        birthday = _birthday_in(date_of_birth, year)
        if birthday > issued_on:
            birthdays.append(birthday)
        year += 1
    in_window = birthdays[0] - issued_on <= RENEWAL_WINDOW
    expiry = birthdays[5] if in_window else birthdays[4]
    return min(expiry, card_expiry)


def _birthday_in(date_of_birth: date, year: int) -> date:
    """The birthday in ``year``; 29 February falls on 28 February in common years."""
    try:
        return date_of_birth.replace(year=year)
    except ValueError:
        return date(year, 2, 28)
