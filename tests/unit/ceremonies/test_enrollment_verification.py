"""verify_enrollment: one valid ceremony made by the simulators, then one change per attack."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from enrollment_world import (
    HANAKO,
    NOW,
    ORIGIN,
    RP_ID,
    SIGN_PIN,
    Ceremony,
    SeVendor,
    attestation_certificate,
    make_ceremony,
    new_card,
    new_jlis,
    reattest,
)

from idp.ceremonies.enrollment import (
    EnrollmentRejected,
    PendingEnrollment,
    Reason,
    RevocationInfo,
    VerifiedEnrollment,
    start_enrollment,
    verify_enrollment,
)
from idp.pki.attributes import Sex
from smartphone.card import CardKey
from smartphone.jlis import ROOT
from smartphone.portal_client import binding_digest as phone_binding
from smartphone.webauthn_data import b64url, b64url_decode, client_data_json


@pytest.fixture(scope="module")
def vendor() -> SeVendor:
    return SeVendor.create()


@pytest.fixture
def jlis(tmp_path):
    return new_jlis(tmp_path)


@pytest.fixture
def ceremony(jlis, vendor) -> Ceremony:
    return make_ceremony(jlis, vendor)


def rejected_reason(ceremony: Ceremony, **changes) -> EnrollmentRejected:
    with pytest.raises(EnrollmentRejected) as rejected:
        verify_enrollment(**ceremony.inputs(**changes))
    return rejected.value


def test_valid_enrollment_is_verified_with_the_card_attributes(ceremony):
    verified = verify_enrollment(**ceremony.inputs())
    assert isinstance(verified, VerifiedEnrollment)
    assert verified.attributes.name == "山田　太郎"
    assert verified.attributes.sex is Sex.MALE
    assert verified.auth.credential_id == b64url_decode(ceremony.auth_response["rawId"])
    assert verified.sign.credential_id == b64url_decode(ceremony.sign_response["rawId"])
    assert verified.auth.sign_count == 0
    assert verified.card_auth.leaf == ceremony.card.certificates.auth
    assert verified.card_sign.path[0] == ceremony.jlis.root.certificate


def test_pending_enrollment_survives_the_ephemeral_store(ceremony):
    pending = ceremony.pending
    assert PendingEnrollment.from_json(pending.to_json()) == pending
    assert pending.expires_at == NOW + timedelta(minutes=5)


def test_creation_options_ask_for_an_attested_user_verifying_platform_key():
    pending = start_enrollment(rp_id=RP_ID, origin=ORIGIN, ttl=timedelta(minutes=5), now=NOW)
    for options, challenge in ((pending.auth_options, pending.auth_challenge),
                               (pending.sign_options, pending.sign_challenge)):
        assert options["rp"]["id"] == RP_ID
        assert options["attestation"] == "direct"
        assert options["pubKeyCredParams"] == [{"type": "public-key", "alg": -7}]
        assert options["authenticatorSelection"] == {
            "authenticatorAttachment": "platform", "residentKey": "discouraged",
            "requireResidentKey": False, "userVerification": "required",
        }
        assert b64url_decode(options["challenge"]) == challenge
    assert len({pending.auth_challenge, pending.sign_challenge, pending.card_challenge}) == 3
    assert len(pending.card_challenge) == 32


# --- the attestations -------------------------------------------------------------------------


def test_none_attestation_is_refused(ceremony, vendor):
    none = reattest(ceremony.auth_response, signer=vendor.key, fmt="none", att_stmt={})
    assert rejected_reason(ceremony, auth_attestation=none).reason is Reason.ATTESTATION_FORMAT_REFUSED


def test_self_attestation_is_refused(ceremony, vendor):
    self_attested = reattest(ceremony.sign_response, signer=vendor.key, att_stmt={"alg": -7, "sig": b"\x30\x00"})
    rejected = rejected_reason(ceremony, sign_attestation=self_attested)
    assert rejected.reason is Reason.SELF_ATTESTATION_REFUSED
    assert rejected.subject == "sign credential"


def test_attestation_chaining_to_another_vendor_is_untrusted(jlis, vendor):
    ceremony = make_ceremony(jlis, vendor, element=SeVendor.create("Other Silicon").element())
    assert rejected_reason(ceremony).reason is Reason.ATTESTATION_UNTRUSTED


def test_attestation_without_configured_roots_is_untrusted(ceremony):
    assert rejected_reason(ceremony, trust=ceremony.trust(attestation_roots=())).reason is Reason.ATTESTATION_UNTRUSTED


@pytest.mark.parametrize(("fault", "reason"), [
    ({"ou": None}, Reason.ATTESTATION_CERTIFICATE_PROFILE),
    ({"ou": "Platform Attestation"}, Reason.ATTESTATION_CERTIFICATE_PROFILE),
    ({"ca": True}, Reason.ATTESTATION_CERTIFICATE_IS_CA),
    ({"aaguid": None}, Reason.AAGUID_MISMATCH),
    ({"aaguid": uuid.UUID(int=7)}, Reason.AAGUID_MISMATCH),
])
def test_attestation_certificate_breaking_webauthn_rules_is_refused(ceremony, vendor, fault, reason):
    faulty = attestation_certificate(vendor.root, vendor.key, **fault)
    response = reattest(ceremony.auth_response, signer=vendor.key, x5c=[faulty])
    assert rejected_reason(ceremony, auth_attestation=response).reason is reason


def test_attestation_with_a_bad_signature_is_invalid(ceremony, vendor):
    other_key = SeVendor.create().key
    response = reattest(ceremony.auth_response, signer=other_key)
    assert rejected_reason(ceremony, auth_attestation=response).reason is Reason.ATTESTATION_INVALID


def test_key_made_without_user_verification_is_refused(jlis, vendor):
    ceremony = make_ceremony(jlis, vendor, presence_only=True)
    assert rejected_reason(ceremony).reason is Reason.USER_NOT_VERIFIED


def test_backup_eligible_key_is_refused(ceremony, vendor):
    synced = reattest(ceremony.sign_response, signer=vendor.key, flags_set=0x08)
    assert rejected_reason(ceremony, sign_attestation=synced).reason is Reason.BACKUP_ELIGIBLE


def test_key_made_for_another_challenge_is_refused(jlis, vendor):
    ceremony = make_ceremony(jlis, vendor)
    other = start_enrollment(rp_id=RP_ID, origin=ORIGIN, ttl=timedelta(minutes=5), now=NOW)
    pending = dataclasses.replace(ceremony.pending, auth_challenge=other.auth_challenge)
    assert rejected_reason(ceremony, pending=pending).reason is Reason.CHALLENGE_MISMATCH


def test_key_made_for_another_origin_is_refused(jlis, vendor):
    ceremony = make_ceremony(jlis, vendor, origin="https://evil.example")
    assert rejected_reason(ceremony).reason is Reason.ORIGIN_MISMATCH


def test_key_made_for_another_rp_id_is_refused(jlis, vendor):
    ceremony = make_ceremony(jlis, vendor, rp_id="evil.example")
    assert rejected_reason(ceremony).reason is Reason.RP_ID_MISMATCH


def test_assertion_client_data_is_not_a_registration(ceremony, vendor):
    data = client_data_json(ceremony="webauthn.get", challenge=ceremony.pending.auth_challenge, origin=ORIGIN)
    response = reattest(ceremony.auth_response, signer=vendor.key, client_data=data)
    assert rejected_reason(ceremony, auth_attestation=response).reason is Reason.WRONG_CEREMONY


def test_unreadable_attestation_object_is_malformed(ceremony):
    response = {**ceremony.auth_response, "response": {**ceremony.auth_response["response"],
                                                         "attestationObject": b64url(b"\xff\x00")}}
    assert rejected_reason(ceremony, auth_attestation=response).reason is Reason.MALFORMED_ATTESTATION


def test_one_key_registered_as_both_is_refused(ceremony):
    pending = dataclasses.replace(ceremony.pending, sign_challenge=ceremony.pending.auth_challenge)
    rejected = rejected_reason(ceremony, pending=pending, sign_attestation=ceremony.auth_response)
    assert rejected.reason is Reason.SAME_KEY_TWICE


# --- the card ---------------------------------------------------------------------------------


def test_revoked_card_is_refused_by_its_crl(ceremony):
    ceremony.jlis.revoke_card(ceremony.card.certificates, reason=x509.ReasonFlags.key_compromise,
                              now=NOW - timedelta(hours=1))
    rejected = rejected_reason(ceremony, revocation=RevocationInfo(crls=ceremony.crls()))
    assert rejected.reason is Reason.CARD_CERTIFICATE_REVOKED
    assert rejected.subject == "card auth certificate"


def test_revoked_card_is_refused_by_ocsp(ceremony):
    ceremony.jlis.revoke_card(ceremony.card.certificates, reason=x509.ReasonFlags.key_compromise,
                              now=NOW - timedelta(hours=1))
    answers = []
    for certificate, issuer in ((ceremony.card.certificates.auth, ceremony.jlis.auth_ca.certificate),
                                (ceremony.card.certificates.sign, ceremony.jlis.sign_ca.certificate)):
        request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256()).build()
        request_der = request.public_bytes(serialization.Encoding.DER)
        answers.append(ceremony.jlis.ocsp(request_der, now=NOW - timedelta(minutes=1)))
    root_crl = ceremony.jlis.crl(ROOT, now=NOW - timedelta(minutes=1)).public_bytes(serialization.Encoding.DER)
    revocation = RevocationInfo(crls=(root_crl,), ocsp_responses=tuple(answers))
    assert rejected_reason(ceremony, revocation=revocation).reason is Reason.CARD_CERTIFICATE_REVOKED


def test_card_without_revocation_information_is_refused(ceremony):
    rejected = rejected_reason(ceremony, revocation=RevocationInfo())
    assert rejected.reason is Reason.CARD_REVOCATION_UNAVAILABLE


def test_expired_card_certificate_is_refused(jlis, vendor):
    card = new_card(jlis, now=NOW - timedelta(days=40), card_expiry=(NOW - timedelta(days=20)).date())
    ceremony = make_ceremony(jlis, vendor, card=card)
    assert rejected_reason(ceremony).reason is Reason.CARD_CERTIFICATE_EXPIRED


def test_card_from_an_untrusted_jlis_is_refused(tmp_path, jlis, vendor):
    impostor = new_jlis(tmp_path, "impostor")
    ceremony = make_ceremony(jlis, vendor, card=new_card(impostor))
    assert rejected_reason(ceremony).reason is Reason.CARD_CERTIFICATE_UNTRUSTED


def test_card_auth_certificate_offered_as_the_sign_certificate_is_refused(ceremony):
    rejected = rejected_reason(ceremony, card_sign_certificate=ceremony.card.certificates.auth)
    assert rejected.reason is Reason.CARD_CERTIFICATE_WRONG_PURPOSE
    assert rejected.subject == "card sign certificate"


def test_card_signature_over_another_binding_is_refused(ceremony):
    signature = ceremony.card.sign_digest(CardKey.SIGN, bytes(32), pin=SIGN_PIN)
    rejected = rejected_reason(ceremony, card_sign_signature=signature)
    assert rejected.reason is Reason.CARD_SIGNATURE_INVALID
    assert rejected.subject == "card sign signature"


def test_signature_by_another_cards_key_is_refused(ceremony):
    other = new_card(ceremony.jlis)
    signature = other.sign_digest(CardKey.AUTH, ceremony.binding, pin="1234")
    rejected = rejected_reason(ceremony, card_auth_signature=signature)
    assert rejected.reason is Reason.CARD_SIGNATURE_INVALID
    assert rejected.subject == "card auth signature"


def test_certificates_of_two_peoples_cards_are_refused(ceremony):
    other = new_card(ceremony.jlis, HANAKO)
    signature = other.sign_digest(CardKey.SIGN, ceremony.binding, pin=SIGN_PIN)
    rejected = rejected_reason(ceremony, card_sign_certificate=other.certificates.sign, card_sign_signature=signature)
    assert rejected.reason is Reason.CARD_CERTIFICATES_UNRELATED


def test_rejection_names_reason_and_subject(ceremony):
    rejected = rejected_reason(ceremony, revocation=RevocationInfo())
    assert str(rejected).startswith("card auth certificate: card_revocation_unavailable")
    assert json.dumps(rejected.reason) == '"card_revocation_unavailable"'


def test_the_phone_computes_the_binding_the_portal_checks(ceremony):
    auth = ceremony.element.public_key(b64url_decode(ceremony.auth_response["rawId"]))
    sign = ceremony.element.public_key(b64url_decode(ceremony.sign_response["rawId"]))
    phone = phone_binding(challenge=ceremony.pending.card_challenge, auth_public_key=auth, sign_public_key=sign)
    assert phone == ceremony.binding
