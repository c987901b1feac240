"""The OCSP responder (RFC 6960): good, revoked, unknown, malformed, unauthorized, nonce."""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from pki_material import NOW, KeyAndCertificate, TestPki, make_root, name

from idp.pki.ocsp import MAX_GET_REQUEST_LENGTH, MalformedOcspRequest, request_from_get, respond
from idp.pki.profiles import PORTAL_ROOT, SMARTPHONE_AUTH, KeyAlgorithm, build_certificate, generate_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from idp.pki.authority import CertificateAuthority

LIFETIME = timedelta(minutes=15)
SHA1 = hashes.SHA1()  # noqa: S303 - OCSP CertIDs use SHA-1 by default (RFC 6960 §4.1.1); not a signature


def request_for(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    algorithm: hashes.HashAlgorithm | None = None,
    nonce: bytes | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, algorithm or SHA1)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def ask(pki: TestPki, certificate: x509.Certificate, **kwargs: object) -> ocsp.OCSPResponse:
    request = request_for(certificate, pki.smartphone_ca.certificate, **kwargs)  # type: ignore[arg-type]
    der = respond(request, authorities=[pki.smartphone_ca, pki.portal_root], now=NOW, lifetime=LIFETIME)
    return ocsp.load_der_ocsp_response(der)


def test_good_certificate_is_good(pki: TestPki) -> None:
    response = ask(pki, pki.smartphone_auth.certificate)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == pki.smartphone_auth.certificate.serial_number


def test_response_is_signed_by_the_issuing_ca_named_by_key_hash(pki: TestPki) -> None:
    response = ask(pki, pki.smartphone_auth.certificate)
    public_key = pki.smartphone_ca.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    assert response.responder_key_hash == pki.smartphone_ca.key_id
    assert response.responder_name is None


def test_response_is_fresh_for_its_lifetime(pki: TestPki) -> None:
    response = ask(pki, pki.smartphone_auth.certificate)
    assert (response.this_update_utc, response.next_update_utc) == (NOW, NOW + LIFETIME)


def test_revoked_certificate_is_revoked_with_reason_and_time(
    pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate],
) -> None:
    leaf = issue_smartphone().certificate
    pki.smartphone_ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW - timedelta(hours=1))
    response = ask(pki, leaf)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    assert response.revocation_time_utc == NOW - timedelta(hours=1)


def test_held_certificate_is_revoked_with_reason_certificate_hold(
    pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate],
) -> None:
    leaf = issue_smartphone().certificate
    pki.smartphone_ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.certificate_hold, now=NOW)
    response = ask(pki, leaf)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.certificate_hold


def test_held_then_resumed_certificate_is_good_again(
    pki: TestPki, issue_smartphone: Callable[..., KeyAndCertificate],
) -> None:
    leaf = issue_smartphone().certificate
    pki.smartphone_ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.certificate_hold, now=NOW)
    pki.smartphone_ca.resume(leaf.serial_number)
    assert ask(pki, leaf).certificate_status is ocsp.OCSPCertStatus.GOOD


def request_by_hash(authority: CertificateAuthority, serial_number: int) -> bytes:
    """A request naming ``authority`` as issuer of ``serial_number``, by SHA-1 hashes."""
    return ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        issuer_name_hash=_sha1(authority.certificate.subject.public_bytes()),
        issuer_key_hash=authority.key_id,  # the SHA-1 key identifier is the SHA-1 key hash
        serial_number=serial_number,
        algorithm=SHA1,
    ).build().public_bytes(serialization.Encoding.DER)


def test_serial_never_issued_is_unknown(pki: TestPki) -> None:
    request = request_by_hash(pki.smartphone_ca, 424242)
    response = ocsp.load_der_ocsp_response(
        respond(request, authorities=[pki.smartphone_ca], now=NOW, lifetime=LIFETIME),
    )
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert response.serial_number == 424242


def test_sha256_cert_id_is_answered_with_sha256(pki: TestPki) -> None:
    response = ask(pki, pki.smartphone_auth.certificate, algorithm=hashes.SHA256())
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert isinstance(response.hash_algorithm, hashes.SHA256)
    assert len(response.issuer_key_hash) == 32


def test_the_right_authority_answers_among_several(pki: TestPki) -> None:
    request = request_for(pki.smartphone_ca.certificate, pki.portal_root.certificate)
    response = ocsp.load_der_ocsp_response(
        respond(request, authorities=[pki.smartphone_ca, pki.portal_root], now=NOW, lifetime=LIFETIME),
    )
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.responder_key_hash == pki.portal_root.key_id


def test_rsa_authority_answers_too(pki: TestPki) -> None:
    request = request_for(pki.card_auth.certificate, pki.jlis_auth_ca.certificate)
    response = ocsp.load_der_ocsp_response(
        respond(request, authorities=[pki.jlis_auth_ca], now=NOW, lifetime=LIFETIME),
    )
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.responder_key_hash == pki.jlis_auth_ca.key_id


def test_nonce_is_echoed(pki: TestPki) -> None:
    nonce = os.urandom(16)
    response = ask(pki, pki.smartphone_auth.certificate, nonce=nonce)
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_no_nonce_is_invented(pki: TestPki) -> None:
    response = ask(pki, pki.smartphone_auth.certificate)
    with pytest.raises(x509.ExtensionNotFound):
        response.extensions.get_extension_for_class(x509.OCSPNonce)


@pytest.mark.parametrize(
    "request_der",
    [b"", b"\x30\x03\x02\x01\x01", b"not an ocsp request", b"\x30" + b"\xff" * 10],
    ids=["empty", "wrong-structure", "text", "bad-length"],
)
def test_malformed_request_gets_malformed_request(pki: TestPki, request_der: bytes) -> None:
    response = ocsp.load_der_ocsp_response(
        respond(request_der, authorities=[pki.smartphone_ca], now=NOW, lifetime=LIFETIME),
    )
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_request_for_two_certificates_gets_malformed_request(pki: TestPki) -> None:
    # cryptography reads one CertID per request; two are refused rather than half-answered.
    single = request_for(pki.smartphone_auth.certificate, pki.smartphone_ca.certificate)
    parsed = asn1_ocsp.OCSPRequest.load(single)
    requests = parsed["tbs_request"]["request_list"]
    requests.append(requests[0].copy())
    double = parsed.dump(force=True)
    response = ocsp.load_der_ocsp_response(
        respond(double, authorities=[pki.smartphone_ca], now=NOW, lifetime=LIFETIME),
    )
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_issuer_not_served_gets_unauthorized(pki: TestPki) -> None:
    response = ocsp.load_der_ocsp_response(
        respond(
            request_for(pki.card_auth.certificate, pki.jlis_auth_ca.certificate),
            authorities=[pki.smartphone_ca, pki.portal_root],
            now=NOW,
            lifetime=LIFETIME,
        ),
    )
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_issuer_with_our_name_but_another_key_gets_unauthorized(pki: TestPki) -> None:
    impostor = make_root(PORTAL_ROOT, pki.smartphone_ca.certificate.subject)
    response = ocsp.load_der_ocsp_response(
        respond(
            request_for(pki.smartphone_auth.certificate, impostor.certificate),
            authorities=[pki.smartphone_ca],
            now=NOW,
            lifetime=LIFETIME,
        ),
    )
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_serial_of_another_ca_is_unknown_to_this_one(pki: TestPki, fresh_ca: CertificateAuthority) -> None:
    request = request_by_hash(fresh_ca, pki.smartphone_auth.certificate.serial_number)
    response = ocsp.load_der_ocsp_response(respond(request, authorities=[fresh_ca], now=NOW, lifetime=LIFETIME))
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_get_form_decodes_url_encoded_base64(pki: TestPki) -> None:
    der = request_for(pki.smartphone_auth.certificate, pki.smartphone_ca.certificate, nonce=b"\xfb\xff" * 8)
    encoded = quote(base64.b64encode(der).decode(), safe="")
    assert request_from_get(encoded) == der


def test_get_form_accepts_already_decoded_base64(pki: TestPki) -> None:
    der = request_for(pki.smartphone_auth.certificate, pki.smartphone_ca.certificate)
    assert request_from_get(base64.b64encode(der).decode()) == der


@pytest.mark.parametrize(
    "encoded",
    ["", "   ", "not base64!", "TWFu=extra", "A" * (MAX_GET_REQUEST_LENGTH + 4), "===="],
    ids=["empty", "blank", "not-base64", "garbage-after-padding", "too-long", "only-padding"],
)
def test_get_form_that_is_not_base64_is_malformed(encoded: str) -> None:
    with pytest.raises(MalformedOcspRequest):
        request_from_get(encoded)


def test_unissued_smartphone_profile_is_unknown_not_good(pki: TestPki) -> None:
    # A certificate built with the CA's key but never recorded (e.g. from a stolen key) is unknown.
    key = generate_key(KeyAlgorithm.EC_P256)
    unrecorded = build_certificate(
        profile=SMARTPHONE_AUTH, subject=name("never recorded"), public_key=key.public_key(),
        issuer=pki.smartphone_ca.issuer, not_before=NOW, not_after=NOW + timedelta(days=1),
        crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    )
    assert ask(pki, unrecorded).certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def _sha1(data: bytes) -> bytes:
    digest = hashes.Hash(SHA1)
    digest.update(data)
    return digest.finalize()
