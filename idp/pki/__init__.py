"""Certificates: profiles, the issuing authority, revocation (CRL, OCSP) and path validation.

The names below need neither the database nor Flask, so the simulators may use them too. The
portal's own CAs (``idp.pki.service``), their SQL records (``idp.pki.records``) and the
``/pki`` endpoints (``idp.pki.http``) are imported from their modules by the application.
"""

from idp.pki.authority import CertificateAuthority
from idp.pki.ocsp import MalformedOcspRequest, request_from_get, respond
from idp.pki.profiles import CertificateProfile, Issuer, ProfileError, build_certificate
from idp.pki.registry import (
    AlreadyRevoked,
    CertificateRef,
    CertificateRegistry,
    CertificateState,
    CertificateStatus,
    RegistryError,
    UnknownCertificate,
)
from idp.pki.validation import (
    CertificateRejected,
    Purpose,
    RejectionReason,
    ValidatedCertificate,
    validate_certificate,
)

__all__ = [
    "AlreadyRevoked",
    "CertificateAuthority",
    "CertificateProfile",
    "CertificateRef",
    "CertificateRegistry",
    "CertificateRejected",
    "CertificateState",
    "CertificateStatus",
    "Issuer",
    "MalformedOcspRequest",
    "ProfileError",
    "Purpose",
    "RegistryError",
    "RejectionReason",
    "UnknownCertificate",
    "ValidatedCertificate",
    "build_certificate",
    "request_from_get",
    "respond",
    "validate_certificate",
]
