"""Certificate path validation with revocation required (RFC 5280 §6), through pyhanko-certvalidator.

``validate_certificate`` builds and checks the path from a certificate to one of the given trust
roots, requires a CRL or OCSP response for every certificate of the path (pyhanko-certvalidator's
``"require"`` mode: its default ``"soft-fail"`` would accept a certificate nobody can vouch
for), checks the key usage and the certificate policy the purpose needs, and otherwise raises
``CertificateRejected`` with a reason. It fetches nothing: the caller passes the revocation
information it holds, and the time (``now``).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InsufficientRevinfoError,
    InvalidCertificateError,
    NotYetValidError,
    PathBuildingError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.validate import validate_usage

from idp.pki.profiles import CARD_AUTH, CARD_SIGN, SMARTPHONE_AUTH, SMARTPHONE_SIGN, CertificateProfile

__all__ = [
    "CertificateRejected",
    "Purpose",
    "RejectionReason",
    "ValidatedCertificate",
    "validate_certificate",
]

# RFC 5280 §4.2.1.3 names as pyhanko-certvalidator spells them (content_commitment is nonRepudiation).
_KEY_USAGE_NAMES = {"content_commitment": "non_repudiation"}


class Purpose(enum.Enum):
    """What a certificate is offered for; each names its profile's key usage and policy."""

    CARD_AUTH = CARD_AUTH.name
    CARD_SIGN = CARD_SIGN.name
    SMARTPHONE_AUTH = SMARTPHONE_AUTH.name
    SMARTPHONE_SIGN = SMARTPHONE_SIGN.name

    @property
    def profile(self) -> CertificateProfile:
        """The certificate profile this purpose asks for."""
        return _PROFILES[self]

    @property
    def key_usage(self) -> frozenset[str]:
        """The keyUsage bits the certificate must have, in pyhanko-certvalidator's names."""
        return frozenset(_KEY_USAGE_NAMES.get(flag, flag) for flag in self.profile.key_usage)

    @property
    def policy(self) -> x509.ObjectIdentifier:
        """The certificate policy the certificate must assert (RFC 5280 §4.2.1.4)."""
        return self.profile.policies[0]


_PROFILES = {
    Purpose.CARD_AUTH: CARD_AUTH,
    Purpose.CARD_SIGN: CARD_SIGN,
    Purpose.SMARTPHONE_AUTH: SMARTPHONE_AUTH,
    Purpose.SMARTPHONE_SIGN: SMARTPHONE_SIGN,
}


class RejectionReason(enum.Enum):
    """Why a certificate was not accepted."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    UNTRUSTED = "untrusted"
    """No path to a trust root: unknown issuer, bad signature, or an issuer not allowed to issue it."""
    WRONG_PURPOSE = "wrong_purpose"
    REVOCATION_UNAVAILABLE = "revocation_unavailable"
    """No CRL or OCSP response covers a certificate of the path, or the one there is stale."""


_SENTENCES = {
    RejectionReason.EXPIRED: "The certificate, or one that vouches for it, has expired.",
    RejectionReason.NOT_YET_VALID: "The certificate, or one that vouches for it, is not valid yet.",
    RejectionReason.REVOKED: "The certificate, or one that vouches for it, has been revoked.",
    RejectionReason.UNTRUSTED: "The certificate was not issued by an authority we trust.",
    RejectionReason.WRONG_PURPOSE: "The certificate is not meant for this use.",
    RejectionReason.REVOCATION_UNAVAILABLE: "Nobody could confirm that the certificate has not been revoked.",
}


class CertificateRejected(Exception):
    """A certificate failed validation; ``reason`` says why, ``detail`` says where.

    For REVOKED, ``revocation_reason`` and ``revoked_at`` say how and when (certificateHold for a
    suspended certificate).
    """

    def __init__(
        self,
        reason: RejectionReason,
        detail: str,
        *,
        revocation_reason: x509.ReasonFlags | None = None,
        revoked_at: datetime | None = None,
    ) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
        self.revocation_reason = revocation_reason
        self.revoked_at = revoked_at

    def __str__(self) -> str:
        return f"{_SENTENCES[self.reason]} {self.detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedCertificate:
    """A certificate that passed ``validate_certificate``, and the path that vouches for it."""

    leaf: x509.Certificate
    path: tuple[x509.Certificate, ...]
    """From the trust root to the leaf."""
    purpose: Purpose


def validate_certificate(
    certificate: x509.Certificate,
    *,
    purpose: Purpose,
    trust_roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    crls: Sequence[bytes],
    ocsp_responses: Sequence[bytes],
    now: datetime,
) -> ValidatedCertificate:
    """Validate ``certificate`` for ``purpose`` at ``now`` (RFC 5280 §6.1, RFC 6960, RFC 5280 §6.3).

    The path must end at one of ``trust_roots``; ``intermediates`` may help build it. Every
    certificate of the path below the root needs revocation information from ``crls`` (DER) or
    ``ocsp_responses`` (DER) that is current at ``now``. Raises CertificateRejected.
    """
    if not trust_roots:
        raise CertificateRejected(RejectionReason.UNTRUSTED, "No trust root was configured for this check.")
    context = ValidationContext(
        trust_roots=[_asn1(root) for root in trust_roots],
        other_certs=[_asn1(other) for other in intermediates],
        crls=[_load_crl(der) for der in crls],
        ocsps=[_load_ocsp(der) for der in ocsp_responses],
        moment=now,
        allow_fetching=False,
        revocation_mode="require",
    )
    leaf = _asn1(certificate)
    path = _validated_path(CertificateValidator(leaf, validation_context=context))
    try:
        # RFC 5280 §4.2.1.3; no extended key usage is asked for, as none is in JPKI's profile.
        validate_usage(leaf, set(purpose.key_usage), set(), extended_optional=True)
    except InvalidCertificateError as exc:
        raise CertificateRejected(RejectionReason.WRONG_PURPOSE, exc.failure_msg) from exc
    if purpose.policy not in _policies(certificate):
        raise CertificateRejected(
            RejectionReason.WRONG_PURPOSE,
            f"It does not assert the {purpose.value} certificate policy {purpose.policy.dotted_string}.",
        )
    return ValidatedCertificate(
        leaf=certificate,
        path=tuple(
            x509.load_der_x509_certificate(entry.dump()) for entry in path.iter_certs(include_root=True)
        ),
        purpose=purpose,
    )


def _validated_path(validator: CertificateValidator) -> ValidationPath:
    """The validated path, or CertificateRejected mapped from pyhanko-certvalidator's errors.

    The subclasses come first: RevokedError, ExpiredError, NotYetValidError and
    InsufficientRevinfoError are all PathValidationErrors, which otherwise mean the path is
    broken (bad signature, an issuer that is no CA, a path too long): UNTRUSTED.
    """
    try:
        return asyncio.run(validator.async_validate_path())
    except RevokedError as exc:
        reason = x509.ReasonFlags[exc.reason.native]
        raise CertificateRejected(
            RejectionReason.REVOKED, exc.failure_msg, revocation_reason=reason, revoked_at=exc.revocation_dt,
        ) from exc
    except ExpiredError as exc:
        raise CertificateRejected(RejectionReason.EXPIRED, exc.failure_msg) from exc
    except NotYetValidError as exc:
        raise CertificateRejected(RejectionReason.NOT_YET_VALID, exc.failure_msg) from exc
    except InsufficientRevinfoError as exc:
        raise CertificateRejected(RejectionReason.REVOCATION_UNAVAILABLE, exc.failure_msg) from exc
    except PathBuildingError as exc:
        raise CertificateRejected(RejectionReason.UNTRUSTED, str(exc)) from exc
    except ValidationError as exc:  # PathValidationError, InvalidCertificateError (self-signed leaf)
        raise CertificateRejected(RejectionReason.UNTRUSTED, exc.failure_msg) from exc


def _policies(certificate: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return set()
    return {policy.policy_identifier for policy in policies}


def _asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def _load_crl(der: bytes) -> asn1_crl.CertificateList:
    try:
        parsed = asn1_crl.CertificateList.load(der, strict=True)
        _ = parsed.native  # parse it all now: asn1crypto parses lazily
    except (ValueError, TypeError) as exc:
        raise CertificateRejected(RejectionReason.REVOCATION_UNAVAILABLE, "A CRL given could not be read.") from exc
    return parsed


def _load_ocsp(der: bytes) -> asn1_ocsp.OCSPResponse:
    try:
        parsed = asn1_ocsp.OCSPResponse.load(der, strict=True)
        _ = parsed.native
    except (ValueError, TypeError) as exc:
        raise CertificateRejected(
            RejectionReason.REVOCATION_UNAVAILABLE, "An OCSP response given could not be read.",
        ) from exc
    return parsed
