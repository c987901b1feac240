"""An OCSP responder (RFC 6960) for the certificates an authority issued.

Shared by the portal's CAs and the simulated J-LIS: ``respond`` takes a DER OCSPRequest and the
authorities this responder serves, and returns a DER OCSPResponse signed by the authority that
issued the certificate asked about (RFC 6960 §2.6: the CA itself may sign its responses), so no
delegated responder certificate is needed. Requests and responses are parsed and built with
``cryptography.x509.ocsp``; no ASN.1 is written by hand here.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta
from urllib.parse import unquote

from asn1crypto import keys
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from idp.pki.authority import CertificateAuthority
from idp.pki.registry import CertificateState, CertificateStatus

__all__ = [
    "MAX_GET_REQUEST_LENGTH",
    "MalformedOcspRequest",
    "request_from_get",
    "respond",
]

MAX_GET_REQUEST_LENGTH = 4096
"""Longest encoded GET request accepted; a single-certificate request is under 200 characters."""


class MalformedOcspRequest(ValueError):
    """The OCSP request cannot be read (RFC 6960 §2.3 malformedRequest)."""


def request_from_get(encoded: str) -> bytes:
    """The DER OCSPRequest carried in a GET URL's last path segment (RFC 6960 Appendix A.1).

    The segment is "the URL-encoding of the base64 encoding of the DER encoding of the
    OCSPRequest". Raises MalformedOcspRequest when it is empty, too long or not base64.
    """
    text = unquote(encoded).strip()
    if not text:
        raise MalformedOcspRequest("the GET request carries no OCSP request")
    if len(text) > MAX_GET_REQUEST_LENGTH:
        raise MalformedOcspRequest(f"the GET request is longer than {MAX_GET_REQUEST_LENGTH} characters")
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedOcspRequest("the GET request is not base64") from exc
    return der


def respond(
    request_der: bytes,
    *,
    authorities: Sequence[CertificateAuthority],
    now: datetime,
    lifetime: timedelta,
) -> bytes:
    """Answer one OCSP request (RFC 6960 §2.2, §4.2) as a DER OCSPResponse.

    The certificate is good, revoked (with its reason and time; a suspended one is revoked with
    reason certificateHold, §2.2) or unknown (the authority never issued that serial). The
    response is signed by the issuing authority, names it by key hash, says thisUpdate ``now``
    and nextUpdate ``now + lifetime``, and echoes the request's nonce (§4.4.1). A request that
    cannot be parsed gets malformedRequest; one about an issuer not in ``authorities`` gets
    unauthorized (§2.3).
    """
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        algorithm = request.hash_algorithm
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        serial_number = request.serial_number
        nonce = _nonce(request)
    except (ValueError, NotImplementedError, UnsupportedAlgorithm, x509.DuplicateExtension):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    authority = _authority_for(authorities, algorithm=algorithm, name_hash=name_hash, key_hash=key_hash)
    if authority is None:
        # §2.3 unauthorized: "the client is not authorized to make this query to this server",
        # which is what a responder answers for an issuer it does not serve.
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    status = authority.registry.status(serial_number)
    builder = _with_status(
        ocsp.OCSPResponseBuilder(),
        status,
        name_hash=name_hash,
        key_hash=key_hash,
        serial_number=serial_number,
        algorithm=algorithm,
        now=now,
        lifetime=lifetime,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, authority.certificate)
    if nonce is not None:
        # §4.4.1: the nonce "cryptographically binds a request and a response".
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(authority.issuer.private_key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _with_status(
    builder: ocsp.OCSPResponseBuilder,
    status: CertificateStatus | None,
    *,
    name_hash: bytes,
    key_hash: bytes,
    serial_number: int,
    algorithm: hashes.HashAlgorithm,
    now: datetime,
    lifetime: timedelta,
) -> ocsp.OCSPResponseBuilder:
    cert_status = ocsp.OCSPCertStatus.UNKNOWN
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None
    if status is not None and status.state is CertificateState.GOOD:
        cert_status = ocsp.OCSPCertStatus.GOOD
    elif status is not None:
        cert_status = ocsp.OCSPCertStatus.REVOKED
        revoked_at = status.revoked_at
        reason = x509.ReasonFlags.certificate_hold if status.state is CertificateState.ON_HOLD else status.reason
    return builder.add_response_by_hash(
        issuer_name_hash=name_hash,
        issuer_key_hash=key_hash,
        serial_number=serial_number,
        algorithm=algorithm,
        cert_status=cert_status,
        this_update=now,
        next_update=now + lifetime,
        revocation_time=revoked_at,
        revocation_reason=reason,
    )


def _authority_for(
    authorities: Sequence[CertificateAuthority],
    *,
    algorithm: hashes.HashAlgorithm,
    name_hash: bytes,
    key_hash: bytes,
) -> CertificateAuthority | None:
    """The authority whose name and key hash as the CertID says (§4.1.1), or None."""
    for authority in authorities:
        certificate = authority.certificate
        ours_name = _digest(algorithm, certificate.subject.public_bytes())
        ours_key = _digest(algorithm, _public_key_bits(certificate))
        if hmac.compare_digest(ours_name, name_hash) and hmac.compare_digest(ours_key, key_hash):
            return authority
    return None


def _public_key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value, which issuerKeyHash hashes (§4.1.1)."""
    info = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    bits: bytes = keys.PublicKeyInfo.load(info)["public_key"].cast(keys.OctetBitString).native
    return bits


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
