"""The signer certificate's status at signing time, from the portal's own OCSP responder (RFC 6960).

A signature is only worth something years later if it carries proof that its certificate was
good when it was made, so the portal asks its own responder (``PortalPki.ocsp_response``, the
same code that answers ``/pki/ocsp``) and embeds the signed answer. Here: the request for one
certificate, and the reading of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from idp.signing.errors import Reason, SigningRejected

__all__ = ["SignerStatus", "ocsp_request", "read_status"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerStatus:
    """An OCSP answer about the signer certificate, and what it says."""

    response: bytes
    """The DER OCSPResponse, as embedded in the signature."""
    state: str
    """``good``, ``revoked`` or ``unknown`` (RFC 6960 §2.2)."""
    this_update: datetime
    revoked_at: datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A DER OCSPRequest about ``certificate`` (CertID with SHA-256, RFC 6960 §4.1.1)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256())
    return builder.build().public_bytes(serialization.Encoding.DER)


def read_status(response_der: bytes, *, certificate: x509.Certificate, issuer: x509.Certificate) -> SignerStatus:
    """What an OCSP response says about ``certificate``.

    Raises SigningRejected(REVOCATION_UNAVAILABLE) when the response is unsuccessful, about
    another certificate, or not signed by ``issuer`` (the portal's CAs sign their own answers).
    """
    try:
        response = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        raise SigningRejected(Reason.REVOCATION_UNAVAILABLE, "the OCSP response cannot be read") from exc
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise SigningRejected(
            Reason.REVOCATION_UNAVAILABLE, f"the OCSP responder answered {response.response_status.name}",
        )
    if response.serial_number != certificate.serial_number:
        raise SigningRejected(Reason.REVOCATION_UNAVAILABLE, "the OCSP response is about another certificate")
    _check_signed_by(response, issuer)
    state = {
        ocsp.OCSPCertStatus.GOOD: "good",
        ocsp.OCSPCertStatus.REVOKED: "revoked",
        ocsp.OCSPCertStatus.UNKNOWN: "unknown",
    }[response.certificate_status]
    return SignerStatus(
        response=response_der,
        state=state,
        this_update=response.this_update_utc,
        revoked_at=response.revocation_time_utc,
        revocation_reason=response.revocation_reason,
    )


def _check_signed_by(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """RFC 6960 §3.2: the response must be signed by the CA (our CAs are ECDSA P-256)."""
    key = issuer.public_key()
    algorithm = response.signature_hash_algorithm
    unsigned = SigningRejected(Reason.REVOCATION_UNAVAILABLE, "the OCSP response is not signed by the CA")
    if not isinstance(key, ec.EllipticCurvePublicKey) or algorithm is None:
        raise unsigned
    try:
        key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
    except InvalidSignature as exc:
        raise unsigned from exc
