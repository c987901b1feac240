"""The signer's status at signing time, from the portal's own OCSP responder: each way an answer is refused."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from idp.pki.profiles import SMARTPHONE_SIGN, KeyAlgorithm, build_certificate, generate_key
from idp.signing import PendingPades, Reason, SigningRejected
from idp.signing.status import ocsp_request, read_status
from smartphone.card import CardKey


def test_good_certificate_reads_good(world, phone):
    status = world.service.status(phone.sign_certificate)
    assert (status.state, status.revoked_at) == ("good", None)
    assert status.this_update == world.clock.now()


def test_revoked_certificate_reads_revoked_with_reason(world, fresh_phone):
    phone = fresh_phone()
    world.pki.revoke(phone.sign_certificate.serial_number, x509.ReasonFlags.affiliation_changed)
    status = world.service.status(phone.sign_certificate)
    assert (status.state, status.revocation_reason) == ("revoked", x509.ReasonFlags.affiliation_changed)


def test_unsuccessful_answer_is_revocation_unavailable(world, phone):
    unsuccessful = ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    ).public_bytes(serialization.Encoding.DER)
    with pytest.raises(SigningRejected) as rejected:
        read_status(unsuccessful, certificate=phone.sign_certificate, issuer=world.pki.authority.certificate)
    assert rejected.value.reason is Reason.REVOCATION_UNAVAILABLE


def test_unreadable_answer_is_revocation_unavailable(world, phone):
    with pytest.raises(SigningRejected) as rejected:
        read_status(b"junk", certificate=phone.sign_certificate, issuer=world.pki.authority.certificate)
    assert rejected.value.reason is Reason.REVOCATION_UNAVAILABLE


def test_answer_about_another_certificate_is_revocation_unavailable(world, phone, fresh_phone):
    other = fresh_phone()
    answer = world.service.status(other.sign_certificate).response
    with pytest.raises(SigningRejected) as rejected:
        read_status(answer, certificate=phone.sign_certificate, issuer=world.pki.authority.certificate)
    assert rejected.value.reason is Reason.REVOCATION_UNAVAILABLE


def test_answer_not_signed_by_the_issuer_is_revocation_unavailable(world, phone):
    answer = world.service.status(phone.sign_certificate).response
    with pytest.raises(SigningRejected) as rejected:
        read_status(answer, certificate=phone.sign_certificate, issuer=world.pki.root)
    assert rejected.value.reason is Reason.REVOCATION_UNAVAILABLE


def test_certificate_the_portal_never_issued_is_unknown_at_signing(world, phone):
    # Signed with the smartphone CA's key but never recorded: the responder answers unknown.
    from idp.pki import attributes  # noqa: PLC0415

    key = generate_key(KeyAlgorithm.EC_P256)
    stray = build_certificate(
        profile=SMARTPHONE_SIGN, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stray")]),
        public_key=key.public_key(), issuer=world.pki.authority.issuer,
        not_before=world.clock.now() - timedelta(days=1), not_after=world.clock.now() + timedelta(days=30),
        alternative_names=attributes.encode(attributes.decode(phone.sign_certificate)), crl_url="http://127.0.0.1:8000/pki/crl/smartphone-ca.crl",
        ocsp_url="http://127.0.0.1:8000/pki/ocsp",
    )
    assert world.service.status(stray).state == "unknown"
    pending = world.service.prepare_cades(document_digest=hashlib.sha256(b"d").digest(), certificate=stray)
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    with pytest.raises(SigningRejected) as rejected:
        world.service.finish_cades(pending, key.sign(pending.signed_attributes, ec.ECDSA(hashes.SHA256())))
    assert rejected.value.reason is Reason.UNKNOWN_CERTIFICATE


def test_request_names_the_certificate(world, phone):
    request = ocsp.load_der_ocsp_request(ocsp_request(phone.sign_certificate, world.pki.authority.certificate))
    assert request.serial_number == phone.sign_certificate.serial_number


@pytest.mark.parametrize("stored", [b"", b"{}", b'{"format": "pades/1"}'], ids=["empty", "{}", "fields"])
def test_unreadable_pending_pdf_is_malformed(stored):
    with pytest.raises(SigningRejected) as rejected:
        PendingPades.from_bytes(stored)
    assert rejected.value.reason is Reason.MALFORMED


def test_card_certificate_is_not_a_signature_certificate(world):
    with pytest.raises(SigningRejected) as rejected:
        world.service.prepare_cades(
            document_digest=hashlib.sha256(b"d").digest(), certificate=world.card.certificate(CardKey.SIGN),
        )
    assert rejected.value.reason is Reason.NOT_SIGNATURE_CERTIFICATE
