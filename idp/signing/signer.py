"""The checks on the phone's part of a signature, shared by CAdES and PAdES.

Before the portal assembles anything it knows three things: the certificate offered is a
smartphone *signature* certificate (never the authentication one), the phone's ECDSA signature
verifies with that certificate's key (and, when it does not, whether the authentication key made
it), and the certificate was valid and not revoked at that moment, by the portal's own OCSP
answer and the root's CRL (``idp.pki.validation`` in ``require`` mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from idp.pki import oids
from idp.pki.validation import CertificateRejected, Purpose, RejectionReason, validate_certificate
from idp.signing.errors import Reason, SigningRejected
from idp.signing.status import read_status

__all__ = [
    "SignerChain",
    "asn1_certificate",
    "check_phone_signature",
    "check_signature_certificate",
    "check_signer_status",
    "rejection_reason",
]

_REJECTIONS = {
    RejectionReason.EXPIRED: Reason.CERTIFICATE_EXPIRED,
    RejectionReason.NOT_YET_VALID: Reason.CERTIFICATE_EXPIRED,
    RejectionReason.REVOKED: Reason.CERTIFICATE_REVOKED,
    RejectionReason.UNTRUSTED: Reason.UNKNOWN_CERTIFICATE,
    RejectionReason.WRONG_PURPOSE: Reason.NOT_SIGNATURE_CERTIFICATE,
    RejectionReason.REVOCATION_UNAVAILABLE: Reason.REVOCATION_UNAVAILABLE,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerChain:
    """The signer certificate and the CA certificates above it, leaf first, root last."""

    leaf: x509.Certificate
    issuer: x509.Certificate
    """The smartphone CA that issued ``leaf``."""
    root: x509.Certificate

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """Leaf first."""
        return (self.leaf, self.issuer, self.root)

    def to_der(self) -> list[bytes]:
        """The chain as DER, leaf first (a pending signature stores it so)."""
        return [certificate.public_bytes(serialization.Encoding.DER) for certificate in self.certificates]

    @classmethod
    def from_der(cls, chain: Sequence[bytes]) -> SignerChain:
        """Inverse of ``to_der``; raises SigningRejected(MALFORMED)."""
        try:
            leaf, issuer, root = (x509.load_der_x509_certificate(der) for der in chain)
        except ValueError as exc:
            raise SigningRejected(Reason.MALFORMED, "the signer chain is three DER certificates, leaf first") from exc
        return cls(leaf=leaf, issuer=issuer, root=root)


def asn1_certificate(certificate: x509.Certificate) -> asn1_x509.Certificate:
    """The certificate as asn1crypto (and so pyHanko) reads it."""
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def check_signature_certificate(certificate: x509.Certificate) -> None:
    """Refuse anything but a smartphone signature certificate: its policy and nonRepudiation.

    The authentication certificate "proves it is me" and carries no attributes; it never signs a
    document. Raises SigningRejected(NOT_SIGNATURE_CERTIFICATE).
    """
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise SigningRejected(Reason.NOT_SIGNATURE_CERTIFICATE, "the certificate lacks a policy or key usage") from exc
    if oids.SMARTPHONE_SIGN_POLICY not in {policy.policy_identifier for policy in policies}:
        raise SigningRejected(Reason.NOT_SIGNATURE_CERTIFICATE, "the certificate is not a smartphone signature one")
    if not usage.content_commitment:
        raise SigningRejected(Reason.NOT_SIGNATURE_CERTIFICATE, "the certificate does not allow nonRepudiation")


def check_phone_signature(
    *,
    signature: bytes,
    signed_data: bytes,
    certificate: x509.Certificate,
    authentication_key: ec.EllipticCurvePublicKey | None,
) -> None:
    """The phone's ECDSA P-256 signature (DER) over SHA-256(``signed_data``) must verify with the
    signature certificate's key.

    Raises SigningRejected(AUTHENTICATION_KEY) when it verifies with the phone's authentication
    key instead, SigningRejected(BAD_SIGNATURE) otherwise.
    """
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningRejected(Reason.NOT_SIGNATURE_CERTIFICATE, "the signature certificate's key is not ECDSA")
    if _verifies(key, signature, signed_data):
        return
    if authentication_key is not None and _verifies(authentication_key, signature, signed_data):
        raise SigningRejected(Reason.AUTHENTICATION_KEY, "the authentication key signed a document")
    raise SigningRejected(Reason.BAD_SIGNATURE, "the signature does not verify with the signature key")


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def check_signer_status(
    chain: SignerChain,
    *,
    ocsp_response: bytes,
    crls: Sequence[bytes],
    now: datetime,
) -> None:
    """The signer certificate is valid at ``now``: path to the root, the smartphone signature
    purpose, and revocation information for each certificate (the leaf's OCSP answer, the
    root's CRL for the CA). Raises SigningRejected with the matching reason.
    """
    status = read_status(ocsp_response, certificate=chain.leaf, issuer=chain.issuer)
    if status.state == "unknown":
        raise SigningRejected(Reason.UNKNOWN_CERTIFICATE, "the portal never issued this certificate")
    try:
        validate_certificate(
            chain.leaf,
            purpose=Purpose.SMARTPHONE_SIGN,
            trust_roots=[chain.root],
            intermediates=[chain.issuer],
            crls=crls,
            ocsp_responses=[ocsp_response],
            now=now,
        )
    except CertificateRejected as rejected:
        raise SigningRejected(rejection_reason(rejected), rejected.detail) from rejected


def rejection_reason(rejected: CertificateRejected) -> Reason:
    """Our reason code for a certificate validation failure."""
    return _REJECTIONS[rejected.reason]
